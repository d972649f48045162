//! CLIP's image tower as a linesight backbone: the ONNX walk of [`ClipVisionTower`] and the
//! [`ClipImageEncoder`] adapter that implements [`ImageEncoder`].
//!
//! The graph is written from the same tensors the candle forward pass uses (one struct, two
//! walks), node for node in the order of the op list in [`super::vision`]'s module doc, for
//! a batch of one (`[1, 3, S, S]`). ONNX opset 13 has no `LayerNormalization` (opset 17),
//! so each LayerNorm is written out as
//! `ReduceMean, Sub, Mul, ReduceMean, Add(eps), Sqrt, Div, Mul(weight), Add(bias)`.
//!
//! Linear weights are transposed once into initializers named `{checkpoint name}_t`, so
//! each projection is one `MatMul` plus one bias `Add`. The attention scale `Dh^-0.5` is
//! folded into the query projection's weight and bias (`..._t_scaled`, `..._scaled`).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, VarMap};
use linesight_shared::manifest::PreprocessSpec;

use super::{Activation, Attention, ClipConfig, ClipVisionTower, EncoderLayer, LayerNorm, Mlp};
use crate::backbone::ImageEncoder;
use crate::export::onnx::{Attr, GraphBuilder};

/// The constant of `quick_gelu`, `x * sigmoid(1.702 x)`.
const QUICK_GELU_ALPHA: f32 = 1.702;

/// Shape initializers shared by every layer of one export.
struct Shapes {
    /// `[1, T, H, Dh]`: split the width into heads.
    heads: String,
    /// `[1, T, D]`: merge the heads back.
    merged: String,
}

impl ClipVisionTower {
    /// Appends the tower (steps 1 to 9 of [`super::vision`]'s op list) to `g` for an input
    /// `[1, num_channels, image_size, image_size]` named `input`; returns the name of the
    /// `[1, projection_dim]` embedding (not normalised).
    ///
    /// Fails when a weight cannot be copied into an initializer.
    pub fn export_onnx(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let cfg = &self.config;
        let emb = &self.embeddings;
        let d = cfg.hidden_size;
        let p = emb.patch_size as i64;
        let grid = cfg.grid();
        let tokens = cfg.num_positions();
        let (d_i, tokens_i) = (d as i64, tokens as i64);

        // 1. Patchify: [1, C, S, S] -> [1, D, G, G].
        let w = g.init_tensor(
            "vision_model.embeddings.patch_embedding.weight",
            &emb.patch_embedding,
        )?;
        let x = g.node(
            "Conv",
            &[input, &w],
            vec![
                ("kernel_shape", Attr::Ints(vec![p, p])),
                ("strides", Attr::Ints(vec![p, p])),
                ("pads", Attr::Ints(vec![0, 0, 0, 0])),
                ("dilations", Attr::Ints(vec![1, 1])),
                ("group", Attr::Int(1)),
            ],
        );
        // 2. [1, D, G*G] -> [1, G*G, D].
        let flat = g.init_i64("clip.shape.patches", &[3], &[1, d_i, (grid * grid) as i64]);
        let x = g.node("Reshape", &[&x, &flat], vec![]);
        let x = g.node(
            "Transpose",
            &[&x],
            vec![("perm", Attr::Ints(vec![0, 2, 1]))],
        );
        // 3. The class token in front: [1, T, D].
        let class = g.init_tensor(
            "vision_model.embeddings.class_embedding",
            &emb.class_embedding.reshape((1, 1, d))?,
        )?;
        let x = g.node("Concat", &[&class, &x], vec![("axis", Attr::Int(1))]);
        // 4. Position embedding.
        let pos = g.init_tensor(
            "vision_model.embeddings.position_embedding.weight",
            &emb.position_embedding.reshape((1, tokens, d))?,
        )?;
        let x = g.node("Add", &[&x, &pos], vec![]);
        // 5. pre_layrnorm.
        let mut x = export_layer_norm(g, &x, &self.pre_layrnorm, "vision_model.pre_layrnorm", 3)?;

        // 6. The encoder layers.
        let heads = self
            .encoder
            .layers
            .first()
            .map_or(1, |l| l.self_attn.num_heads) as i64;
        let head_dim = self
            .encoder
            .layers
            .first()
            .map_or(d, |l| l.self_attn.head_dim) as i64;
        let shapes = Shapes {
            heads: g.init_i64("clip.shape.heads", &[4], &[1, tokens_i, heads, head_dim]),
            merged: g.init_i64("clip.shape.merged", &[3], &[1, tokens_i, d_i]),
        };
        for (i, layer) in self.encoder.layers.iter().enumerate() {
            x = export_encoder_layer(
                g,
                &x,
                layer,
                &format!("vision_model.encoder.layers.{i}"),
                &shapes,
            )?;
        }

        // 7. The class token: [1, T, D] -> [1, D].
        let zero = g.init_i64("clip.class_token_index", &[], &[0]);
        let x = g.node("Gather", &[&x, &zero], vec![("axis", Attr::Int(1))]);
        // 8. post_layernorm.
        let x = export_layer_norm(
            g,
            &x,
            &self.post_layernorm,
            "vision_model.post_layernorm",
            2,
        )?;
        // 9. visual_projection, no bias: [1, E].
        let wt = g.init_tensor(
            "visual_projection.weight_t",
            &self.projection.weight().t()?.contiguous()?,
        )?;
        Ok(g.node("MatMul", &[&x, &wt], vec![]))
    }
}

/// `LayerNorm` over the last axis of a rank-`rank` value, decomposed for opset 13.
fn export_layer_norm(
    g: &mut GraphBuilder,
    x: &str,
    ln: &LayerNorm,
    name: &str,
    rank: i64,
) -> Result<String> {
    let axes = || {
        vec![
            ("axes", Attr::Ints(vec![rank - 1])),
            ("keepdims", Attr::Int(1)),
        ]
    };
    let mean = g.node("ReduceMean", &[x], axes());
    let centred = g.node("Sub", &[x, &mean], vec![]);
    let sq = g.node("Mul", &[&centred, &centred], vec![]);
    let var = g.node("ReduceMean", &[&sq], axes());
    let eps = g.init_f32(&format!("{name}.eps"), &[], &[ln.eps as f32]);
    let var = g.node("Add", &[&var, &eps], vec![]);
    let std = g.node("Sqrt", &[&var], vec![]);
    let normed = g.node("Div", &[&centred, &std], vec![]);
    let w = g.init_tensor(&format!("{name}.weight"), &ln.weight)?;
    let b = g.init_tensor(&format!("{name}.bias"), &ln.bias)?;
    let y = g.node("Mul", &[&normed, &w], vec![]);
    Ok(g.node("Add", &[&y, &b], vec![]))
}

/// `x W^T (* scale) + b (* scale)` with `W^T` and `b` as initializers.
fn export_linear(
    g: &mut GraphBuilder,
    x: &str,
    linear: &Linear,
    name: &str,
    scale: Option<f64>,
) -> Result<String> {
    let wt = linear.weight().to_dtype(DType::F32)?.t()?.contiguous()?;
    let bias = linear.bias().map(|b| b.to_dtype(DType::F32)).transpose()?;
    let (wt, bias, suffix) = match scale {
        Some(s) => ((wt * s)?, bias.map(|b| b * s).transpose()?, "_scaled"),
        None => (wt, bias, ""),
    };
    let wt = g.init_tensor(&format!("{name}.weight_t{suffix}"), &wt)?;
    let y = g.node("MatMul", &[x, &wt], vec![]);
    match bias {
        Some(b) => {
            let b = g.init_tensor(&format!("{name}.bias{suffix}"), &b)?;
            Ok(g.node("Add", &[&y, &b], vec![]))
        }
        None => Ok(y),
    }
}

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
fn export_encoder_layer(
    g: &mut GraphBuilder,
    x: &str,
    layer: &EncoderLayer,
    name: &str,
    shapes: &Shapes,
) -> Result<String> {
    let h = export_layer_norm(g, x, &layer.layer_norm1, &format!("{name}.layer_norm1"), 3)?;
    let a = export_attention(
        g,
        &h,
        &layer.self_attn,
        &format!("{name}.self_attn"),
        shapes,
    )?;
    let x = g.node("Add", &[x, &a], vec![]);
    let h = export_layer_norm(g, &x, &layer.layer_norm2, &format!("{name}.layer_norm2"), 3)?;
    let m = export_mlp(g, &h, &layer.mlp, &format!("{name}.mlp"))?;
    Ok(g.node("Add", &[&x, &m], vec![]))
}

/// Multi-head self-attention without a mask on `[1, T, D]`.
fn export_attention(
    g: &mut GraphBuilder,
    h: &str,
    attn: &Attention,
    name: &str,
    shapes: &Shapes,
) -> Result<String> {
    let q = export_linear(
        g,
        h,
        &attn.q_proj,
        &format!("{name}.q_proj"),
        Some(attn.scale),
    )?;
    let k = export_linear(g, h, &attn.k_proj, &format!("{name}.k_proj"), None)?;
    let v = export_linear(g, h, &attn.v_proj, &format!("{name}.v_proj"), None)?;
    let split = |g: &mut GraphBuilder, t: &str, perm: Vec<i64>| {
        let t = g.node("Reshape", &[t, &shapes.heads], vec![]);
        g.node("Transpose", &[&t], vec![("perm", Attr::Ints(perm))])
    };
    // q, v: [1, H, T, Dh]; k: [1, H, Dh, T] (k^T directly).
    let q = split(g, &q, vec![0, 2, 1, 3]);
    let k = split(g, &k, vec![0, 2, 3, 1]);
    let v = split(g, &v, vec![0, 2, 1, 3]);
    let scores = g.node("MatMul", &[&q, &k], vec![]);
    let weights = g.node("Softmax", &[&scores], vec![("axis", Attr::Int(3))]);
    let o = g.node("MatMul", &[&weights, &v], vec![]);
    let o = g.node(
        "Transpose",
        &[&o],
        vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    );
    let o = g.node("Reshape", &[&o, &shapes.merged], vec![]);
    export_linear(g, &o, &attn.out_proj, &format!("{name}.out_proj"), None)
}

/// `fc2(act(fc1(h)))`.
fn export_mlp(g: &mut GraphBuilder, h: &str, mlp: &Mlp, name: &str) -> Result<String> {
    let f = export_linear(g, h, &mlp.fc1, &format!("{name}.fc1"), None)?;
    let f = match mlp.activation {
        Activation::QuickGelu => {
            let alpha = g.init_f32(
                &format!("{name}.quick_gelu_alpha"),
                &[],
                &[QUICK_GELU_ALPHA],
            );
            let z = g.node("Mul", &[&f, &alpha], vec![]);
            let s = g.node("Sigmoid", &[&z], vec![]);
            g.node("Mul", &[&f, &s], vec![])
        }
    };
    export_linear(g, &f, &mlp.fc2, &format!("{name}.fc2"), None)
}

/// A CLIP image tower as a linesight backbone ([`ImageEncoder`]): embeddings are the
/// tower's projected image embeddings (`[N, projection_dim]`, not normalised), the
/// preprocessing is CLIP's ([`PreprocessSpec::clip`]) at the tower's input size.
#[derive(Clone)]
pub struct ClipImageEncoder {
    tower: ClipVisionTower,
    name: String,
    /// The trainable variables, when the tower was loaded from a checkpoint.
    varmap: Option<VarMap>,
}

impl ClipImageEncoder {
    /// Loads the image tower (`vision_model.*`, `visual_projection.weight`) of an HF CLIP
    /// `model.safetensors` in f32 on `device`; `name` is the backbone's manifest name
    /// (`clip-vit-b16`, ...).
    ///
    /// Fails when the file cannot be read, or a tensor `cfg` needs is missing or has another
    /// shape; the error names the tensor and the file.
    pub fn load(path: &Path, cfg: ClipConfig, name: &str, device: &Device) -> Result<Self> {
        let (tower, varmap) = ClipVisionTower::load(path, &cfg, device)?;
        let mut encoder = Self::from_tower(tower, name)?;
        encoder.varmap = Some(varmap);
        Ok(encoder)
    }

    /// Wraps an already built tower (for example a random one for tests).
    ///
    /// Fails when the tower's layers disagree on the number of heads (the export writes one
    /// head split for all of them).
    pub fn from_tower(tower: ClipVisionTower, name: &str) -> Result<Self> {
        let heads: Vec<usize> = tower
            .encoder
            .layers
            .iter()
            .map(|l| l.self_attn.num_heads)
            .collect();
        if heads.windows(2).any(|w| w[0] != w[1]) {
            bail!("CLIP image tower `{name}`: layers have different head counts {heads:?}");
        }
        Ok(Self {
            tower,
            name: name.to_string(),
            varmap: None,
        })
    }

    /// The wrapped tower.
    pub fn tower(&self) -> &ClipVisionTower {
        &self.tower
    }

    /// The variables the tower was loaded into, when it came from [`Self::load`].
    pub fn varmap(&self) -> Option<&VarMap> {
        self.varmap.as_ref()
    }
}

impl std::fmt::Debug for ClipImageEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipImageEncoder")
            .field("name", &self.name)
            .field("config", self.tower.config())
            .field("embed_dim", &self.tower.embed_dim())
            .field("loaded", &self.varmap.is_some())
            .finish()
    }
}

impl ImageEncoder for ClipImageEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn preprocess(&self) -> PreprocessSpec {
        self.tower.config().preprocess_spec()
    }

    fn embed_dim(&self) -> usize {
        self.tower.embed_dim()
    }

    fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.tower.forward(x)?.to_dtype(DType::F32)
    }

    fn export_onnx(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        self.tower
            .export_onnx(g, input)
            .with_context(|| format!("writing the {} image tower as ONNX", self.name))
    }
}
