//! Image backbones: a network that turns a normalized NCHW batch into one embedding per
//! image, in candle for training and as ONNX nodes for export.
//!
//! - [`mobilenet_v2`]: the small ARM student, real ImageNet weights.
//! - [`clip`]: CLIP ViT image and text towers in the Hugging Face layout.

pub mod clip;
pub mod cpu_kernels;
pub mod mobilenet_v2;

use crate::export::onnx::GraphBuilder;
use anyhow::Result;
use candle_core::{Device, Tensor};
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
            BackboneKind::ClipVitB16 => "clip-vit-b16",
            BackboneKind::ClipVitB32 => "clip-vit-b32",
            BackboneKind::ClipVitL14 => "clip-vit-l14",
        }
    }

    /// Where the weights are looked for when `--weights` is not given.
    pub fn default_weights(self, weights_dir: &Path) -> PathBuf {
        match self {
            BackboneKind::MobilenetV2 => weights_dir.join("mobilenet_v2.safetensors"),
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

impl ImageEncoder for mobilenet_v2::MobileNetV2 {
    fn name(&self) -> &str {
        BackboneKind::MobilenetV2.name()
    }
    fn preprocess(&self) -> PreprocessSpec {
        PreprocessSpec::imagenet()
    }
    fn embed_dim(&self) -> usize {
        mobilenet_v2::FEATURE_DIM
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
        BackboneKind::MobilenetV2 => {
            Ok(Box::new(mobilenet_v2::MobileNetV2::load(weights, device)?))
        }
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
