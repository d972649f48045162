//! The bundle manifest: the wire types that travel inside every `*.lsb` file.
//!
//! This module is a serialization boundary. Everything here is encoded with postcard and
//! read by runtimes that may be older or newer than the trainer that wrote it, so:
//! - these types are never the trainer's in-memory types; the trainer converts into them;
//! - a field is never reordered or removed within one format version (postcard is
//!   positional); a change means a new [`crate::bundle::FORMAT_VERSION`];
//! - the golden bundle under `shared/tests/fixtures/` must decode forever.
//!
//! Format version 2 adds [`ManifestV2`]: it is encoded right after the version-1 manifest,
//! and only bundles that carry it (int8 bundles with per-class parity) are written as
//! version 2, so f32 bundles stay readable by version-1 runtimes.

use serde::{Deserialize, Serialize};

/// Model settings that travel with the model. Deployment settings (threads, source, sink,
/// ROI) never go here; they live in the edge's own config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stable identifier of the model family, e.g. `cub26-mobilenet-v2`.
    pub model_id: String,
    /// Version of this model within its family, e.g. `2026-11-29.1`.
    pub model_version: String,
    /// Output index -> label name. The order is the order of the logits.
    pub labels: Vec<String>,
    /// How a camera frame or photo becomes the input tensor.
    pub preprocess: PreprocessSpec,
    /// The graph's input (NCHW f32) and output (logits, one row per image).
    pub input: TensorSpec,
    pub output: TensorSpec,
    pub precision: Precision,
    /// sha256 of the ONNX bytes stored in the bundle.
    pub model_sha256: [u8; 32],
    /// The reject rule and per-class thresholds applied to softmax scores.
    pub decision: DecisionRule,
    /// Inputs with their expected outputs, run by `install` before a model goes live.
    pub self_test: Vec<SelfTestVector>,
    /// Figures measured at export: exporter vs. tract, and int8 vs. f32 where quantised.
    pub parity: Parity,
    pub provenance: Provenance,
    /// Oldest `linesight-edge` version that can run this bundle (semver, `major.minor.patch`).
    pub min_runtime_version: String,
    /// Format-version-2 fields, encoded after the fields above (see the module doc); the
    /// default in version-1 bundles.
    #[serde(skip)]
    pub v2: ManifestV2,
}

/// The manifest fields added in bundle format version 2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestV2 {
    /// Per class (same order as `labels`), how the quantised model kept the reference f32
    /// model's top-1 on the parity images; empty for f32 bundles.
    pub parity_per_class: Vec<ClassParity>,
}

impl ManifestV2 {
    /// True when nothing here differs from a version-1 bundle.
    pub fn is_empty(&self) -> bool {
        self.parity_per_class.is_empty()
    }
}

/// One class of the int8-vs-f32 parity check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassParity {
    /// Parity images the f32 model put in this class.
    pub reference: u32,
    /// Of those, how many the int8 model put in this class too.
    pub kept: u32,
}

impl ClassParity {
    /// The int8 model's recall of the f32 model's decisions for this class (1 when the
    /// class had no image).
    pub fn recall(&self) -> f32 {
        if self.reference == 0 {
            1.0
        } else {
            self.kept as f32 / self.reference as f32
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ResizeFilter {
    /// Antialiased bilinear (PIL / torchvision `BILINEAR` on PIL images).
    Bilinear,
    /// Antialiased bicubic (PIL `BICUBIC`; what CLIP's own preprocessing uses).
    Bicubic,
}

/// Preprocessing: RGB, resize the shorter side, center crop, scale to [0, 1], subtract
/// mean, divide by std, NCHW. Implemented once, in [`crate::preprocess`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    /// Length the shorter image side is resized to before cropping.
    pub resize_shorter: u32,
    /// Side of the square center crop; the model input is `crop` x `crop`.
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub filter: ResizeFilter,
}

impl PreprocessSpec {
    /// torchvision's ImageNet evaluation transform: Resize(256), CenterCrop(224),
    /// ImageNet mean/std. MobileNetV2's weights were trained with it.
    pub fn imagenet() -> Self {
        Self {
            resize_shorter: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            filter: ResizeFilter::Bilinear,
        }
    }

    /// EfficientNet-Lite's own transform: Resize(256), CenterCrop(224) as for ImageNet, and
    /// `(x - 127) / 128` on 0..255 pixels, i.e. mean 127/255 and std 128/255 on 0..1. Not
    /// ImageNet's mean/std: the TensorFlow Lite checkpoints were trained on inputs scaled
    /// this way (MEAN_RGB = 127, STDDEV_RGB = 128 in the TPU repo's lite builder), and
    /// features computed with ImageNet statistics are measurably worse (docs/near.md).
    pub fn efficientnet_lite() -> Self {
        Self {
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
            ..Self::imagenet()
        }
    }

    /// OpenAI CLIP's transform: bicubic resize of the shorter side to `size`, center
    /// crop `size`, CLIP's mean/std.
    pub fn clip(size: u32) -> Self {
        Self {
            resize_shorter: size,
            crop: size,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
            filter: ResizeFilter::Bicubic,
        }
    }

    /// The NCHW input shape for one image.
    pub fn input_shape(&self) -> [usize; 4] {
        [1, 3, self.crop as usize, self.crop as usize]
    }

    /// Checks what a bundle's manifest may ask for before anything is allocated from it:
    /// a crop of 1..=[`MAX_CROP`] pixels, a resize of crop..=[`MAX_RESIZE_SHORTER`], a
    /// positive, finite std and a finite mean. Fails with what is wrong (a crafted or
    /// damaged manifest asking for a 100000-pixel crop would otherwise ask for 120 GB).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_CROP).contains(&self.crop) {
            return Err(format!(
                "preprocessing crop {} is out of range 1..={MAX_CROP}",
                self.crop
            ));
        }
        if !(self.crop..=MAX_RESIZE_SHORTER).contains(&self.resize_shorter) {
            return Err(format!(
                "preprocessing resize_shorter {} is out of range {}..={MAX_RESIZE_SHORTER} (at least the crop)",
                self.resize_shorter, self.crop
            ));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(format!(
                "preprocessing mean {:?} / std {:?}: the std must be positive and both finite",
                self.mean, self.std
            ));
        }
        Ok(())
    }
}

/// The largest model input side a manifest may ask for.
pub const MAX_CROP: u32 = 2048;
/// The largest resize of the shorter side a manifest may ask for.
pub const MAX_RESIZE_SHORTER: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    F32,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        })
    }
}

/// Turns logits into a decision: softmax, top-1, then the reject rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRule {
    /// Reject when the top-1 softmax score is below this.
    pub min_score: f32,
    /// Reject when top-1 minus top-2 softmax score is below this.
    pub min_margin: f32,
    /// Per-class minimum score (same order as `labels`); empty means `min_score` for all.
    pub per_class_min_score: Vec<f32>,
}

impl Default for DecisionRule {
    fn default() -> Self {
        Self {
            min_score: 0.0,
            min_margin: 0.0,
            per_class_min_score: Vec::new(),
        }
    }
}

/// One self-test case: an RGB crop (already `crop` x `crop`, HWC, u8) and the logits the
/// exporting trainer's tract run produced for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTestVector {
    pub rgb: Vec<u8>,
    pub expected_logits: Vec<f32>,
    /// Largest accepted absolute difference per logit.
    pub tolerance: f32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parity {
    /// Images compared at export (candle vs. tract, or f32 vs. int8).
    pub images: u32,
    /// Largest absolute logit difference between the trainer's framework and tract.
    pub max_abs_logit_diff: f32,
    /// Share of images whose top-1 agreed, in [0, 1].
    pub top1_agreement: f32,
    /// Mean cosine similarity of the logit vectors.
    pub mean_logit_cosine: f32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub trainer_version: String,
    pub backbone: String,
    /// How the head was made: `prototypes`, `near`, `naive`, ...
    pub method: String,
    /// sha256 over the training inputs (image hashes and their targets).
    pub data_sha256: String,
    pub train_images: u32,
    pub mllm_model: Option<String>,
    pub prompt_sha256: Option<String>,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: sizes a manifest asks for are bounded before anything is allocated.
    #[test]
    fn preprocessing_sizes_are_checked() {
        assert!(PreprocessSpec::imagenet().check().is_ok());
        assert!(PreprocessSpec::clip(224).check().is_ok());
        assert!(PreprocessSpec::efficientnet_lite().check().is_ok());
        let with = |f: fn(&mut PreprocessSpec)| {
            let mut s = PreprocessSpec::imagenet();
            f(&mut s);
            s.check().unwrap_err()
        };
        assert!(with(|s| s.crop = 100_000).contains("crop 100000 is out of range 1..=2048"));
        assert!(with(|s| s.crop = 0).contains("crop 0"));
        assert!(with(|s| s.resize_shorter = 100).contains("resize_shorter 100"));
        assert!(with(|s| s.resize_shorter = u32::MAX).contains("resize_shorter"));
        assert!(with(|s| s.std[1] = 0.0).contains("std"));
        assert!(with(|s| s.mean[0] = f32::NAN).contains("finite"));
    }
}
