//! CLIP's image tower (HF `CLIPVisionTransformer` plus `visual_projection`, as in
//! `CLIPVisionModelWithProjection`).
//!
//! # The forward pass, op by op
//!
//! The ONNX exporter must reproduce exactly this sequence. Shapes for a batch of `N`
//! images of side `S`, patch `P`, grid `G = S / P`, width `D`, `H` heads of `Dh = D / H`,
//! sequence `T = G*G + 1`, projection `E`:
//!
//! 1. `x = Conv2d(pixel_values, vision_model.embeddings.patch_embedding.weight)`, kernel
//!    `P`, stride `P`, no padding, no bias: `[N, 3, S, S] -> [N, D, G, G]`.
//! 2. flatten the grid and transpose: `[N, D, G*G] -> [N, G*G, D]` (row-major patches).
//! 3. concatenate `vision_model.embeddings.class_embedding` (`[D]`, broadcast to
//!    `[N, 1, D]`) in front along the sequence axis: `[N, T, D]`.
//! 4. add `vision_model.embeddings.position_embedding.weight` (`[T, D]`, broadcast).
//! 5. `x = LayerNorm(x)` with `vision_model.pre_layrnorm.{weight,bias}` (HF's spelling).
//! 6. for each layer `i` (prefix `vision_model.encoder.layers.{i}`):
//!    - `h = LayerNorm(x)` with `layer_norm1`;
//!    - `q, k, v = h W^T + b` with `self_attn.{q,k,v}_proj`, each reshaped
//!      `[N, T, H, Dh]` and transposed to `[N, H, T, Dh]`;
//!    - `a = softmax((q k^T) * Dh^-0.5)` over the last axis (no mask), `[N, H, T, T]`;
//!    - `o = a v`, transposed back to `[N, T, H, Dh]` and reshaped `[N, T, D]`;
//!    - `x = x + (o W^T + b)` with `self_attn.out_proj`;
//!    - `h = LayerNorm(x)` with `layer_norm2`;
//!    - `h = h W1^T + b1` with `mlp.fc1` (`[N, T, I]`), then quick_gelu
//!      `h * sigmoid(1.702 * h)`, then `h W2^T + b2` with `mlp.fc2`;
//!    - `x = x + h`.
//! 7. take token 0 (the class token): `[N, D]`.
//! 8. `LayerNorm` with `vision_model.post_layernorm`.
//! 9. `y = x W^T` with `visual_projection.weight` (`[E, D]`, no bias): `[N, E]`. The
//!    output is not normalised.
//!
//! Every LayerNorm is over the last axis with the biased variance and eps
//! `layer_norm_eps` (1e-5): `(x - mean) / sqrt(var + eps) * weight + bias`. Linear weights
//! are stored `[out, in]` as in torch.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder, VarMap};

use super::{
    checkpoint_var_builder, join, push_layer_norm, push_linear, ClipConfig, ClipEncoder,
    ClipVisionConfig, LayerNorm,
};

/// Patch, class and position embeddings (HF `CLIPVisionEmbeddings`); keys under
/// `vision_model.embeddings`.
#[derive(Debug, Clone)]
pub(crate) struct VisionEmbeddings {
    /// `class_embedding`, `[D]`.
    pub(crate) class_embedding: Tensor,
    /// `patch_embedding.weight`, `[D, C, P, P]`.
    pub(crate) patch_embedding: Tensor,
    /// `position_embedding.weight`, `[T, D]`.
    pub(crate) position_embedding: Tensor,
    pub(crate) patch_size: usize,
    pub(crate) image_size: usize,
    pub(crate) num_channels: usize,
}

impl VisionEmbeddings {
    fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            bail!(
                "CLIP vision: image size {} is not a multiple of patch size {}",
                cfg.image_size,
                cfg.patch_size
            )
        }
        // HF: `nn.Parameter(torch.randn(embed_dim))`.
        let class_embedding = vb.get_with_hints(
            d,
            "class_embedding",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let patch_embedding = vb.pp("patch_embedding").get_with_hints(
            (d, cfg.num_channels, cfg.patch_size, cfg.patch_size),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let position_embedding = vb.pp("position_embedding").get_with_hints(
            (cfg.num_positions(), d),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        Ok(Self {
            class_embedding,
            patch_embedding,
            position_embedding,
            patch_size: cfg.patch_size,
            image_size: cfg.image_size,
            num_channels: cfg.num_channels,
        })
    }

    /// Steps 1 to 4 of the module doc: `[N, C, S, S] -> [N, T, D]`.
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = pixel_values.dims4()?;
        if c != self.num_channels || h != self.image_size || w != self.image_size {
            bail!(
                "CLIP vision: input is [{n}, {c}, {h}, {w}], the model expects [N, {}, {s}, {s}]",
                self.num_channels,
                s = self.image_size
            )
        }
        let pixel_values = pixel_values.to_dtype(self.patch_embedding.dtype())?;
        let patches = pixel_values.conv2d(&self.patch_embedding, 0, self.patch_size, 1, 1)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?;
        let d = self.class_embedding.dim(0)?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((n, 1, d))?
            .contiguous()?;
        let xs = Tensor::cat(&[&class, &patches.contiguous()?], 1)?;
        xs.broadcast_add(&self.position_embedding)
    }

    fn named_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((
            join(prefix, "class_embedding"),
            self.class_embedding.clone(),
        ));
        out.push((
            join(prefix, "patch_embedding.weight"),
            self.patch_embedding.clone(),
        ));
        out.push((
            join(prefix, "position_embedding.weight"),
            self.position_embedding.clone(),
        ));
    }
}

/// CLIP's image tower: pixels `[N, C, S, S]` to image embeddings `[N, projection_dim]`.
///
/// Keys: `vision_model.{embeddings, pre_layrnorm, encoder.layers.{i}, post_layernorm}.*`
/// and `visual_projection.weight`. See the module doc for the exact op sequence.
#[derive(Debug, Clone)]
pub struct ClipVisionTower {
    pub(crate) embeddings: VisionEmbeddings,
    pub(crate) pre_layrnorm: LayerNorm,
    pub(crate) encoder: ClipEncoder,
    pub(crate) post_layernorm: LayerNorm,
    /// `visual_projection`, `[projection_dim, D]`, no bias.
    pub(crate) projection: Linear,
    pub(crate) config: ClipVisionConfig,
}

impl ClipVisionTower {
    /// Builds the tower through `vb`, whose prefix must be the checkpoint's root (the tower
    /// spans `vision_model.*` and `visual_projection.*`).
    ///
    /// Fails when the builder cannot provide a tensor, or when `image_size` is not a multiple
    /// of `patch_size` or the width is not a multiple of the number of heads.
    pub fn new(vb: VarBuilder, cfg: &ClipVisionConfig, projection_dim: usize) -> Result<Self> {
        let vbm = vb.pp("vision_model");
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            embeddings: VisionEmbeddings::new(vbm.pp("embeddings"), cfg)?,
            pre_layrnorm: LayerNorm::load(d, eps, vbm.pp("pre_layrnorm"))?,
            encoder: ClipEncoder::new(vbm.pp("encoder"), &cfg.encoder())?,
            post_layernorm: LayerNorm::load(d, eps, vbm.pp("post_layernorm"))?,
            projection: candle_nn::linear_no_bias(d, projection_dim, vb.pp("visual_projection"))?,
            config: cfg.clone(),
        })
    }

    /// Loads only the image tower (`vision_model.*`, `visual_projection.weight`) from an HF
    /// `model.safetensors` into a new [`VarMap`] on `device`, in f32.
    ///
    /// Fails when the file cannot be read, or when a tensor is missing or has another
    /// shape; the error names the tensor and the file.
    pub fn load(path: &Path, cfg: &ClipConfig, device: &Device) -> anyhow::Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let vb = checkpoint_var_builder(path, &varmap, DType::F32, device)?;
        let tower = Self::new(vb, &cfg.vision, cfg.projection_dim)
            .with_context(|| format!("loading the CLIP image tower from `{}`", path.display()))?;
        Ok((tower, varmap))
    }

    /// Width of the output embedding (`projection_dim`).
    pub fn embed_dim(&self) -> usize {
        self.projection.weight().dims()[0]
    }

    /// The configuration the tower was built with.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// The pooled class token after `post_layernorm`, `[N, D]` (steps 1 to 8).
    ///
    /// Fails when `pixel_values` is not `[N, num_channels, image_size, image_size]`.
    pub fn forward_pooled(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let xs = self.embeddings.forward(pixel_values)?;
        let xs = self.pre_layrnorm.forward(&xs)?;
        let xs = self.encoder.forward(&xs, None)?;
        let class = xs.narrow(1, 0, 1)?.squeeze(1)?;
        self.post_layernorm.forward(&class)
    }

    /// Image embeddings `[N, projection_dim]`, not normalised (steps 1 to 9).
    ///
    /// Fails when `pixel_values` is not `[N, num_channels, image_size, image_size]`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.projection.forward(&self.forward_pooled(pixel_values)?)
    }

    /// Every weight under its checkpoint name, in forward order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.embeddings
            .named_tensors("vision_model.embeddings", &mut out);
        push_layer_norm(&mut out, "vision_model.pre_layrnorm", &self.pre_layrnorm);
        self.encoder.named_tensors("vision_model.encoder", &mut out);
        push_layer_norm(
            &mut out,
            "vision_model.post_layernorm",
            &self.post_layernorm,
        );
        push_linear(&mut out, "visual_projection", &self.projection);
        out
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embeddings.patch_embedding.dtype()
    }
}

impl Module for ClipVisionTower {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ClipVisionTower::forward(self, xs)
    }
}
