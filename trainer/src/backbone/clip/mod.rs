//! CLIP (Radford et al. 2021) image and text towers in the Hugging Face `transformers`
//! safetensors layout, written for training: every tensor is a [`candle_core::Var`] in a
//! [`VarMap`], and every op records a gradient.
//!
//! Reference implementation: HF's
//! [`modeling_clip.py`](https://github.com/huggingface/transformers/blob/000f1ffdbf1ce6190cc8863af9a2fff817590937/src/transformers/models/clip/modeling_clip.py)
//! (`CLIPVisionEmbeddings`, `CLIPTextEmbeddings`, `CLIPAttention`, `CLIPMLP`,
//! `CLIPEncoderLayer`, `CLIPEncoder`, `CLIPVisionTransformer`, `CLIPTextTransformer`,
//! `CLIPModel`). Each layer constructor takes a [`VarBuilder`] already pushed into that
//! layer's key prefix, so the struct tree is the tensor-name tree of the checkpoint:
//!
//! - [`vision::ClipVisionTower`]: `vision_model.*` and `visual_projection.weight`;
//! - [`text::ClipTextTower`]: `text_model.*` and `text_projection.weight`;
//! - [`ClipModel`]: both towers and `logit_scale`.
//!
//! Two differences from candle-transformers' CLIP, on purpose:
//! - loading a checkpoint ([`ClipModel::load`], [`load_vars`]) fails on a missing tensor or
//!   a shape mismatch, naming the tensor and the file; nothing falls back to random values;
//! - `class_embedding` is a trainable variable, and [`LayerNorm`] is built from tensor ops
//!   because candle-nn's fused one records no gradient.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use linesight_trainer::backbone::clip::{ClipConfig, ClipModel};
//!
//! let cfg = ClipConfig::tiny();
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = ClipModel::new(vb, &cfg)?;
//! let s = cfg.vision.image_size;
//! let pixels = Tensor::zeros((2, 3, s, s), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.vision().forward(&pixels)?.dims(), &[2, cfg.projection_dim]);
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod export;
pub mod layer_norm;
pub mod text;
pub mod vision;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{bail, DType, Device, Module, Result, Shape, Tensor, Var, D};
use candle_nn::{Init, Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use linesight_shared::manifest::PreprocessSpec;

pub use export::ClipImageEncoder;
pub use layer_norm::LayerNorm;
pub use text::ClipTextTower;
pub use vision::ClipVisionTower;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The MLP's non-linearity (`hidden_act` in HF's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 * x)`, what OpenAI's CLIP checkpoints were trained with.
    QuickGelu,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        }
    }
}

/// The image tower's sizes (HF `CLIPVisionConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    /// Side of the square input image, in pixels.
    pub image_size: usize,
    /// Side of a square patch; `image_size` must be a multiple of it.
    pub patch_size: usize,
    /// Input channels (3, RGB).
    pub num_channels: usize,
    /// Transformer width.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
}

impl ClipVisionConfig {
    /// Patches per side, `image_size / patch_size`.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens in the sequence: one class token plus one per patch.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// The preprocessing the weights expect: see [`preprocess_spec`].
    pub fn preprocess_spec(&self) -> PreprocessSpec {
        PreprocessSpec::clip(self.image_size as u32)
    }

    fn encoder(&self) -> EncoderConfig {
        EncoderConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            layer_norm_eps: self.layer_norm_eps,
            hidden_act: self.hidden_act,
        }
    }
}

/// The text tower's sizes (HF `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    /// Longest token sequence (77 for OpenAI's BPE context).
    pub max_position_embeddings: usize,
    /// Transformer width.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
}

impl ClipTextConfig {
    fn encoder(&self) -> EncoderConfig {
        EncoderConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            layer_norm_eps: self.layer_norm_eps,
            hidden_act: self.hidden_act,
        }
    }

    /// The text tower of OpenAI's ViT-B checkpoints (B/16 and B/32).
    fn openai_base() -> Self {
        Self {
            vocab_size: 49408,
            max_position_embeddings: 77,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            layer_norm_eps: 1e-5,
            hidden_act: Activation::QuickGelu,
        }
    }
}

/// Both towers and the shared embedding width (HF `CLIPConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub vision: ClipVisionConfig,
    pub text: ClipTextConfig,
    /// Width of the joint image-text embedding space.
    pub projection_dim: usize,
}

impl ClipConfig {
    /// `openai/clip-vit-base-patch16`.
    pub fn vit_b16() -> Self {
        Self {
            vision: ClipVisionConfig {
                image_size: 224,
                patch_size: 16,
                num_channels: 3,
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                layer_norm_eps: 1e-5,
                hidden_act: Activation::QuickGelu,
            },
            text: ClipTextConfig::openai_base(),
            projection_dim: 512,
        }
    }

    /// `openai/clip-vit-base-patch32`.
    pub fn vit_b32() -> Self {
        let mut cfg = Self::vit_b16();
        cfg.vision.patch_size = 32;
        cfg
    }

    /// `openai/clip-vit-large-patch14` (224 px).
    pub fn vit_l14() -> Self {
        Self {
            vision: ClipVisionConfig {
                image_size: 224,
                patch_size: 14,
                num_channels: 3,
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                layer_norm_eps: 1e-5,
                hidden_act: Activation::QuickGelu,
            },
            text: ClipTextConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_attention_heads: 12,
                ..ClipTextConfig::openai_base()
            },
            projection_dim: 768,
        }
    }

    /// A small configuration for tests with random weights: 32 px images in 8 px patches,
    /// width 32, 2 layers of 4 heads per tower, a 100-token vocabulary, 16 positions, and a
    /// 16-wide joint space.
    pub fn tiny() -> Self {
        Self {
            vision: ClipVisionConfig {
                image_size: 32,
                patch_size: 8,
                num_channels: 3,
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                layer_norm_eps: 1e-5,
                hidden_act: Activation::QuickGelu,
            },
            text: ClipTextConfig {
                vocab_size: 100,
                max_position_embeddings: 16,
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                layer_norm_eps: 1e-5,
                hidden_act: Activation::QuickGelu,
            },
            projection_dim: 16,
        }
    }
}

/// The preprocessing CLIP's weights were trained with: bicubic resize of the shorter side
/// to the input size, a centre crop, and OpenAI's mean and standard deviation.
pub fn preprocess_spec(cfg: &ClipConfig) -> PreprocessSpec {
    cfg.vision.preprocess_spec()
}

// ---------------------------------------------------------------------------------------
// The whole model
// ---------------------------------------------------------------------------------------

/// HF's initial `logit_scale`, `ln(1 / 0.07)`.
const LOGIT_SCALE_INIT: f64 = 2.659_260_036_932_778;

/// Both CLIP towers plus the learned temperature (HF `CLIPModel`).
#[derive(Debug, Clone)]
pub struct ClipModel {
    pub(crate) vision: ClipVisionTower,
    pub(crate) text: ClipTextTower,
    /// `logit_scale`, a scalar (shape `[]`): logits are `exp(logit_scale) * cosine`.
    pub(crate) logit_scale: Tensor,
}

impl ClipModel {
    /// Builds the model through `vb`, whose prefix must be the checkpoint's root.
    ///
    /// With [`VarBuilder::from_varmap`] this is a random initialisation in which every
    /// tensor is a trainable variable. Fails when the builder cannot provide a tensor.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let vision = ClipVisionTower::new(vb.clone(), &cfg.vision, cfg.projection_dim)?;
        let text = ClipTextTower::new(vb.clone(), &cfg.text, cfg.projection_dim)?;
        let logit_scale = vb.get_with_hints((), "logit_scale", Init::Const(LOGIT_SCALE_INIT))?;
        Ok(Self {
            vision,
            text,
            logit_scale,
        })
    }

    /// Loads an HF `model.safetensors` (f32, f16 or bf16; converted to f32) into a new
    /// [`VarMap`] on `device`, returning the model and the map of its trainable variables.
    ///
    /// Fails when the file cannot be read or is not safetensors, or when a tensor the
    /// configuration needs is missing or has another shape; the error names the tensor and
    /// the file. Tensors in the file that the model does not use (such as `position_ids`
    /// buffers) are ignored.
    pub fn load(path: &Path, cfg: &ClipConfig, device: &Device) -> anyhow::Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let vb = checkpoint_var_builder(path, &varmap, DType::F32, device)?;
        let model = Self::new(vb, cfg)
            .with_context(|| format!("loading CLIP weights from `{}`", path.display()))?;
        Ok((model, varmap))
    }

    /// The image tower.
    pub fn vision(&self) -> &ClipVisionTower {
        &self.vision
    }

    /// The text tower.
    pub fn text(&self) -> &ClipTextTower {
        &self.text
    }

    /// The learned log temperature, a scalar tensor.
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// Image embeddings `[N, projection_dim]` (not normalised); see [`ClipVisionTower::forward`].
    pub fn encode_image(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.vision.forward(pixel_values)
    }

    /// Text embeddings `[N, projection_dim]` (not normalised); see [`ClipTextTower::forward`].
    pub fn encode_text(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.text.forward(input_ids)
    }

    /// `logits_per_image` `[N_images, N_texts]`: `exp(logit_scale)` times the cosine
    /// similarity of each image embedding with each text embedding.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let image = l2_normalize(image_embeds)?;
        let text = l2_normalize(text_embeds)?;
        let cosine = image.matmul(&text.t()?)?;
        cosine.broadcast_mul(&self.logit_scale.exp()?)
    }

    /// Every weight under its checkpoint name (the names of the [`VarMap`] it was built in).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = self.vision.named_tensors();
        out.extend(self.text.named_tensors());
        out.push(("logit_scale".to_string(), self.logit_scale.clone()));
        out
    }
}

/// Divides each row by its L2 norm (`x / sqrt(sum(x^2))` over the last axis).
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    xs.broadcast_div(&xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

// ---------------------------------------------------------------------------------------
// Loading a checkpoint into a VarMap
// ---------------------------------------------------------------------------------------

/// A [`VarBuilder`] that creates each requested tensor as a trainable variable in `varmap`,
/// filled from the safetensors file at `path` and converted to `dtype`.
///
/// Use it to build any CLIP part (for example only a [`ClipVisionTower`]) from a
/// checkpoint. A tensor the constructor asks for that the file lacks, or has with another
/// shape, is an error naming the tensor and the file; nothing is initialised at random.
/// Only requested tensors become variables.
///
/// Fails when the file cannot be opened or its safetensors header cannot be parsed.
pub fn checkpoint_var_builder<'a>(
    path: &Path,
    varmap: &VarMap,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<VarBuilder<'a>> {
    let backend = CheckpointBackend::open(path, varmap.clone())?;
    Ok(VarBuilder::from_backend(
        Box::new(backend),
        dtype,
        device.clone(),
    ))
}

/// Overwrites every variable already in `varmap` with the tensor of the same name in the
/// safetensors file at `path` (converted to the variable's dtype).
///
/// Fails when the file cannot be read, or when a variable's tensor is missing from it or
/// has another shape; the error names the tensor and the file. On error, variables before
/// the failing one may already have been overwritten.
pub fn load_vars(varmap: &VarMap, path: &Path) -> anyhow::Result<()> {
    let file = open_safetensors(path)?;
    let names = tensor_names(&file);
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("the variable map's lock is poisoned"))?;
    let mut sorted: Vec<(&String, &Var)> = vars.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, var) in sorted {
        let tensor = read_checked(&file, &names, path, name, var.shape())?;
        let tensor = tensor.to_dtype(var.dtype())?.to_device(var.device())?;
        var.set(&tensor)
            .with_context(|| format!("setting `{name}` from `{}`", path.display()))?;
    }
    Ok(())
}

fn open_safetensors(path: &Path) -> anyhow::Result<MmapedSafetensors> {
    // SAFETY: the file is memory-mapped read-only; it must not be modified while mapped,
    // which holds for checkpoints we only read (the same contract as candle's own
    // `VarBuilder::from_mmaped_safetensors`).
    unsafe { MmapedSafetensors::new(path) }
        .with_context(|| format!("reading safetensors file `{}`", path.display()))
}

fn tensor_names(file: &MmapedSafetensors) -> HashSet<String> {
    file.tensors().into_iter().map(|(name, _)| name).collect()
}

/// Reads `name` from `file` after checking it exists with shape `expected`.
fn read_checked(
    file: &MmapedSafetensors,
    names: &HashSet<String>,
    path: &Path,
    name: &str,
    expected: &Shape,
) -> Result<Tensor> {
    if !names.contains(name) {
        bail!("tensor `{name}` is missing from `{}`", path.display())
    }
    let view = file.get(name)?;
    if view.shape() != expected.dims() {
        bail!(
            "tensor `{name}` in `{}` has shape {:?}, the model expects {:?}",
            path.display(),
            view.shape(),
            expected.dims()
        )
    }
    file.load(name, &Device::Cpu)
}

/// The [`VarBuilder`] backend of [`checkpoint_var_builder`].
struct CheckpointBackend {
    file: MmapedSafetensors,
    names: HashSet<String>,
    path: PathBuf,
    varmap: VarMap,
}

impl CheckpointBackend {
    fn open(path: &Path, varmap: VarMap) -> anyhow::Result<Self> {
        let file = open_safetensors(path)?;
        let names = tensor_names(&file);
        Ok(Self {
            file,
            names,
            path: path.to_path_buf(),
            varmap,
        })
    }

    fn var(&self, name: &str, shape: Option<&Shape>, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars =
            self.varmap.data().lock().map_err(|_| {
                candle_core::Error::Msg("the variable map's lock is poisoned".into())
            })?;
        if let Some(var) = vars.get(name) {
            if let Some(shape) = shape {
                if var.shape() != shape {
                    bail!(
                        "tensor `{name}` is requested with shape {:?} and {:?}",
                        shape.dims(),
                        var.shape().dims()
                    )
                }
            }
            return Ok(var.as_tensor().clone());
        }
        let tensor = match shape {
            Some(shape) => read_checked(&self.file, &self.names, &self.path, name, shape)?,
            None if self.names.contains(name) => self.file.load(name, &Device::Cpu)?,
            None => bail!("tensor `{name}` is missing from `{}`", self.path.display()),
        };
        let var = Var::from_tensor(&tensor.to_dtype(dtype)?.to_device(dev)?)?;
        let out = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(out)
    }
}

impl candle_nn::var_builder::SimpleBackend for CheckpointBackend {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.var(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.var(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

// ---------------------------------------------------------------------------------------
// The transformer encoder both towers share
// ---------------------------------------------------------------------------------------

/// What [`ClipEncoder`] needs from either tower's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
}

/// Prefixes `name` with `prefix` and a dot.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

pub(crate) fn push_linear(out: &mut Vec<(String, Tensor)>, prefix: &str, linear: &Linear) {
    out.push((join(prefix, "weight"), linear.weight().clone()));
    if let Some(bias) = linear.bias() {
        out.push((join(prefix, "bias"), bias.clone()));
    }
}

pub(crate) fn push_layer_norm(out: &mut Vec<(String, Tensor)>, prefix: &str, ln: &LayerNorm) {
    out.push((join(prefix, "weight"), ln.weight.clone()));
    out.push((join(prefix, "bias"), ln.bias.clone()));
}

/// Softmax over the last axis, from tensor ops. The row maximum is subtracted (and
/// detached: softmax does not depend on it) so that `exp` cannot overflow; `-inf` entries
/// become exact zeros.
fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let exp = xs.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

/// Multi-head self-attention (HF `CLIPAttention`): keys `{q,k,v,out}_proj.{weight,bias}`.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) out_proj: Linear,
    pub(crate) num_heads: usize,
    pub(crate) head_dim: usize,
    /// `head_dim^-0.5`, applied to `q k^T`.
    pub(crate) scale: f64,
}

impl Attention {
    fn new(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let h = cfg.num_attention_heads;
        if h == 0 || !d.is_multiple_of(h) {
            bail!("CLIP attention: width {d} is not divisible by {h} heads")
        }
        let head_dim = d / h;
        Ok(Self {
            q_proj: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            num_heads: h,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// `xs`: `[N, L, D]`; `mask`: additive, broadcastable to `[N, heads, L, L]`.
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (n, l, d) = xs.dims3()?;
        let heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((n, l, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q_proj.forward(xs)?)?;
        let k = heads(self.k_proj.forward(xs)?)?;
        let v = heads(self.v_proj.forward(xs)?)?;
        let mut scores = (q.matmul(&k.t()?)? * self.scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((n, l, d))?;
        self.out_proj.forward(&out)
    }

    fn named_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        push_linear(out, &join(prefix, "q_proj"), &self.q_proj);
        push_linear(out, &join(prefix, "k_proj"), &self.k_proj);
        push_linear(out, &join(prefix, "v_proj"), &self.v_proj);
        push_linear(out, &join(prefix, "out_proj"), &self.out_proj);
    }
}

/// The feed-forward block (HF `CLIPMLP`): `fc2(act(fc1(x)))`.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
    pub(crate) activation: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: candle_nn::linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            activation: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = self.activation.apply(&self.fc1.forward(xs)?)?;
        self.fc2.forward(&hidden)
    }

    fn named_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        push_linear(out, &join(prefix, "fc1"), &self.fc1);
        push_linear(out, &join(prefix, "fc2"), &self.fc2);
    }
}

/// One pre-norm transformer block (HF `CLIPEncoderLayer`):
/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
    pub(crate) self_attn: Attention,
    pub(crate) layer_norm1: LayerNorm,
    pub(crate) mlp: Mlp,
    pub(crate) layer_norm2: LayerNorm,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(vb.pp("self_attn"), cfg)?,
            layer_norm1: LayerNorm::load(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("layer_norm1"),
            )?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
            layer_norm2: LayerNorm::load(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("layer_norm2"),
            )?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let xs = (xs
            + self
                .self_attn
                .forward(&self.layer_norm1.forward(xs)?, mask)?)?;
        &xs + self.mlp.forward(&self.layer_norm2.forward(&xs)?)?
    }

    fn named_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.self_attn
            .named_tensors(&join(prefix, "self_attn"), out);
        push_layer_norm(out, &join(prefix, "layer_norm1"), &self.layer_norm1);
        self.mlp.named_tensors(&join(prefix, "mlp"), out);
        push_layer_norm(out, &join(prefix, "layer_norm2"), &self.layer_norm2);
    }
}

/// The stack of blocks (HF `CLIPEncoder`): keys `layers.{i}.*`.
#[derive(Debug, Clone)]
pub(crate) struct ClipEncoder {
    pub(crate) layers: Vec<EncoderLayer>,
}

impl ClipEncoder {
    pub(crate) fn new(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp(i.to_string()), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub(crate) fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }

    pub(crate) fn named_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        for (i, layer) in self.layers.iter().enumerate() {
            layer.named_tensors(&join(prefix, &format!("layers.{i}")), out);
        }
    }
}
