//! Image backbones: a network that turns a normalized NCHW batch into one embedding per
//! image, in candle for training and as ONNX nodes for export.
//!
//! - [`mobilenet_v2`]: the small ARM student, real ImageNet weights.
//! - [`efficientnet_lite0`]: a second small student (ReLU6, no squeeze-excite, 5x5
//!   depthwise), real ImageNet weights; both are an [`inverted_residual`] network.
//! - [`clip`]: CLIP ViT image and text towers in the Hugging Face layout.

pub mod clip;
pub mod cpu_kernels;
pub mod efficientnet_lite0;
pub mod inverted_residual;
pub mod mobilenet_v2;

use crate::export::onnx::GraphBuilder;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use linesight_shared::manifest::PreprocessSpec;
use std::path::{Path, PathBuf};

/// The backbones a user can name on the command line.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneKind {
    /// MobileNetV2, torchvision ImageNet weights (`models/weights/mobilenet_v2.safetensors`).
    #[value(name = "mobilenet-v2")]
    MobilenetV2,
    /// EfficientNet-Lite0, TensorFlow ImageNet weights
    /// (`models/weights/efficientnet_lite0.safetensors`).
    #[value(name = "efficientnet-lite0")]
    EfficientnetLite0,
    /// CLIP ViT-B/16 image tower (HF `model.safetensors` in `--weights DIR`).
    #[value(name = "clip-vit-b16")]
    ClipVitB16,
    /// CLIP ViT-B/32 image tower.
    #[value(name = "clip-vit-b32")]
    ClipVitB32,
    /// CLIP ViT-L/14 image tower.
    #[value(name = "clip-vit-l14")]
    ClipVitL14,
}

impl BackboneKind {
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::MobilenetV2 => "mobilenet-v2",
            BackboneKind::EfficientnetLite0 => "efficientnet-lite0",
            BackboneKind::ClipVitB16 => "clip-vit-b16",
            BackboneKind::ClipVitB32 => "clip-vit-b32",
            BackboneKind::ClipVitL14 => "clip-vit-l14",
        }
    }

    /// Where the weights are looked for when `--weights` is not given.
    pub fn default_weights(self, weights_dir: &Path) -> PathBuf {
        match self {
            BackboneKind::MobilenetV2 => weights_dir.join("mobilenet_v2.safetensors"),
            BackboneKind::EfficientnetLite0 => weights_dir.join("efficientnet_lite0.safetensors"),
            BackboneKind::ClipVitB16 => weights_dir.join("clip-vit-base-patch16/model.safetensors"),
            BackboneKind::ClipVitB32 => weights_dir.join("clip-vit-base-patch32/model.safetensors"),
            BackboneKind::ClipVitL14 => {
                weights_dir.join("clip-vit-large-patch14/model.safetensors")
            }
        }
    }
}

/// What the rest of the trainer needs from a backbone.
pub trait ImageEncoder {
    /// The backbone's name as written in manifests (`mobilenet-v2`, ...).
    fn name(&self) -> &str;
    /// The preprocessing its weights were trained with.
    fn preprocess(&self) -> PreprocessSpec;
    /// Width of the embedding.
    fn embed_dim(&self) -> usize;
    /// `[N, 3, H, W]` normalized images -> `[N, D]` embeddings (not L2-normalized).
    fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor>;
    /// Appends the same computation to an ONNX graph; returns the `[1, D]` output's name.
    fn export_onnx(&self, g: &mut GraphBuilder, input: &str) -> Result<String>;
}

/// A backbone whose last stages can be fine-tuned (`train --trainable-blocks N`): a frozen
/// trunk that runs once per image (its output is cached), and a trained tail whose
/// variables are the model's own, so the tuned model exports as it trained.
///
/// Invariant: `tail(trunk(x, n), n) == embed(x)` for every `n` in `1..=stages()`.
pub trait TunableEncoder: ImageEncoder {
    /// How many stages can train (the upper bound of `trainable_blocks`).
    fn stages(&self) -> usize;
    /// The frozen part when the last `tail` stages train.
    fn trunk(&self, x: &Tensor, tail: usize) -> candle_core::Result<Tensor>;
    /// The trained part, ending with the pooled embedding.
    fn tail(&self, h: &Tensor, tail: usize) -> candle_core::Result<Tensor>;
    /// The variables of the last `tail` stages, by checkpoint name.
    fn tail_vars(&self, tail: usize) -> Vec<(String, Var)>;
}

impl TunableEncoder for inverted_residual::InvertedResidualNet {
    fn stages(&self) -> usize {
        self.blocks.len() + 1
    }
    fn trunk(&self, x: &Tensor, tail: usize) -> candle_core::Result<Tensor> {
        inverted_residual::InvertedResidualNet::trunk(self, x, tail)
    }
    fn tail(&self, h: &Tensor, tail: usize) -> candle_core::Result<Tensor> {
        inverted_residual::InvertedResidualNet::tail(self, h, tail)
    }
    fn tail_vars(&self, tail: usize) -> Vec<(String, Var)> {
        inverted_residual::InvertedResidualNet::tail_vars(self, tail)
    }
}

/// Loads a backbone that can be fine-tuned; CLIP towers train their head only.
pub fn load_tunable(
    kind: BackboneKind,
    weights: &Path,
    device: &Device,
) -> Result<Box<dyn TunableEncoder>> {
    match kind {
        BackboneKind::MobilenetV2 => Ok(Box::new(mobilenet_v2::load(weights, device)?)),
        BackboneKind::EfficientnetLite0 => Ok(Box::new(efficientnet_lite0::load(weights, device)?)),
        BackboneKind::ClipVitB16 | BackboneKind::ClipVitB32 | BackboneKind::ClipVitL14 => {
            anyhow::bail!(
                "fine-tuning (trainable_blocks > 0) is not implemented for {}; it trains its head only (set trainable_blocks = 0)",
                kind.name()
            )
        }
    }
}

impl ImageEncoder for inverted_residual::InvertedResidualNet {
    fn name(&self) -> &str {
        self.kind.name()
    }
    fn preprocess(&self) -> PreprocessSpec {
        self.preprocess
    }
    fn embed_dim(&self) -> usize {
        inverted_residual::FEATURE_DIM
    }
    fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.features(x)
    }
    fn export_onnx(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        self.export_features(g, input)
    }
}

/// Loads a backbone's real weights.
pub fn load(kind: BackboneKind, weights: &Path, device: &Device) -> Result<Box<dyn ImageEncoder>> {
    match kind {
        BackboneKind::MobilenetV2 => Ok(Box::new(mobilenet_v2::load(weights, device)?)),
        BackboneKind::EfficientnetLite0 => Ok(Box::new(efficientnet_lite0::load(weights, device)?)),
        BackboneKind::ClipVitB16 | BackboneKind::ClipVitB32 | BackboneKind::ClipVitL14 => {
            use anyhow::Context as _;
            let cfg = match kind {
                BackboneKind::ClipVitB32 => clip::ClipConfig::vit_b32(),
                BackboneKind::ClipVitL14 => clip::ClipConfig::vit_l14(),
                _ => clip::ClipConfig::vit_b16(),
            };
            let encoder = clip::ClipImageEncoder::load(weights, cfg, kind.name(), device)
                .with_context(|| {
                    format!("cannot load {} from `{}`", kind.name(), weights.display())
                })?;
            Ok(Box::new(encoder))
        }
    }
}
