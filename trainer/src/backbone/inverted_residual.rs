//! The network MobileNetV2 and EfficientNet-Lite share: a strided stem convolution,
//! inverted-residual blocks (1x1 expand, k x k depthwise, 1x1 project, a residual add when
//! shape allows), a 1x1 head convolution to 1280 channels, global average pooling, and an
//! ImageNet classifier kept for checks. Each model file ([`super::mobilenet_v2`],
//! [`super::efficientnet_lite0`]) only reads its checkpoint's names and settings into it.
//!
//! BatchNorm runs in inference mode everywhere in linesight (the student is fine-tuned with
//! frozen statistics), so each BatchNorm is folded into the convolution before it at load
//! time: `w' = w * g / sqrt(var + eps)`, `b' = beta - mean * g / sqrt(var + eps)`. The
//! folded weights are the trainable variables, and the ONNX export writes the same folded
//! `Conv` (with explicit pads) + `Clip(0, 6)` nodes, so candle and tract compute one function.
//!
//! Depthwise convolutions and ReLU6 use [`super::cpu_kernels`] rather than candle's grouped
//! `conv2d` (one tiny convolution per channel, an order of magnitude slower on CPU).

use super::cpu_kernels::{self, Pad};
use super::BackboneKind;
use crate::export::onnx::{Attr, GraphBuilder};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use linesight_shared::manifest::PreprocessSpec;
use std::collections::HashMap;
use std::path::Path;

/// Width of the pooled feature vector of both models.
pub const FEATURE_DIM: usize = 1280;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `k / 2` on every side (PyTorch's `padding=k//2`, torchvision's MobileNetV2).
    Symmetric,
    /// TensorFlow's "SAME": the output is `ceil(in / stride)`, and when the padding needed
    /// is odd the extra row and column go at the bottom and right. Models converted from
    /// TensorFlow checkpoints (EfficientNet-Lite) were trained with it.
    TfSame,
}

impl Padding {
    /// The padding of a `k` x `k`, `stride` convolution over an `h` x `w` input.
    pub fn pads(self, k: usize, stride: usize, h: usize, w: usize) -> Pad {
        match self {
            Padding::Symmetric => Pad::uniform(k / 2),
            Padding::TfSame => {
                let same = |i: usize| {
                    let o = i.div_ceil(stride);
                    let total = ((o - 1) * stride + k).saturating_sub(i);
                    (total / 2, total - total / 2)
                };
                let ((top, bottom), (left, right)) = (same(h), same(w));
                Pad {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
        }
    }
}

/// A convolution with its BatchNorm folded in, optionally followed by ReLU6.
pub struct ConvUnit {
    /// Checkpoint prefix of the convolution, e.g. `features.2.conv.1.0`.
    pub name: String,
    pub weight: Var,
    pub bias: Var,
    pub stride: usize,
    pub groups: usize,
    pub relu6: bool,
    pub padding: Padding,
}

impl ConvUnit {
    fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    fn pads(&self, h: usize, w: usize) -> Pad {
        self.padding.pads(self.kernel(), self.stride, h, w)
    }

    /// Output height and width for an `h` x `w` input.
    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let (k, p) = (self.kernel(), self.pads(h, w));
        (
            (h + p.top + p.bottom - k) / self.stride + 1,
            (w + p.left + p.right - k) / self.stride + 1,
        )
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pad = self.pads(h, w);
        let c_out = self.weight.dims()[0];
        let y = if self.groups == 1 {
            if pad == Pad::uniform(pad.top) {
                x.conv2d(self.weight.as_tensor(), pad.top, self.stride, 1, 1)?
            } else {
                x.pad_with_zeros(2, pad.top, pad.bottom)?
                    .pad_with_zeros(3, pad.left, pad.right)?
                    .conv2d(self.weight.as_tensor(), 0, self.stride, 1, 1)?
            }
        } else {
            cpu_kernels::depthwise(x, self.weight.as_tensor(), self.stride, pad)?
        };
        let y = y.broadcast_add(&self.bias.as_tensor().reshape((1, c_out, 1, 1))?)?;
        if self.relu6 {
            cpu_kernels::relu6(&y)
        } else {
            Ok(y)
        }
    }

    /// Appends `Conv` (+ `Clip`) for an `hw` input; returns the output and its size.
    fn export(
        &self,
        g: &mut GraphBuilder,
        x: &str,
        hw: (usize, usize),
        relu6_bounds: (&str, &str),
    ) -> Result<(String, (usize, usize))> {
        let w = g.init_tensor(&format!("{}.weight", self.name), self.weight.as_tensor())?;
        let b = g.init_tensor(&format!("{}.bias", self.name), self.bias.as_tensor())?;
        let k = self.kernel() as i64;
        let p = self.pads(hw.0, hw.1);
        let y = g.node(
            "Conv",
            &[x, &w, &b],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                // ONNX order: begin of each axis, then end of each axis.
                (
                    "pads",
                    Attr::Ints(
                        [p.top, p.left, p.bottom, p.right]
                            .map(|v| v as i64)
                            .to_vec(),
                    ),
                ),
                ("strides", Attr::Ints(vec![self.stride as i64; 2])),
                ("group", Attr::Int(self.groups as i64)),
            ],
        );
        let y = if self.relu6 {
            g.node("Clip", &[&y, relu6_bounds.0, relu6_bounds.1], vec![])
        } else {
            y
        };
        Ok((y, self.out_hw(hw.0, hw.1)))
    }
}

/// One inverted-residual block.
pub struct Block {
    pub units: Vec<ConvUnit>,
    pub residual: bool,
}

impl Block {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for u in &self.units {
            y = u.forward(&y)?;
        }
        if self.residual {
            x + y
        } else {
            Ok(y)
        }
    }
}

/// Tensors of a checkpoint by name, and how its model folds them.
pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    path: String,
    /// What the file should be, for errors ("torchvision's mobilenet_v2 checkpoint").
    expected: &'static str,
    bn_eps: f64,
    padding: Padding,
}

impl Checkpoint {
    /// Loads a safetensors checkpoint of `kind`; errors name the file and what to run.
    pub fn load(
        path: &Path,
        device: &Device,
        kind: BackboneKind,
        expected: &'static str,
        bn_eps: f64,
        padding: Padding,
    ) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device).with_context(|| {
            format!(
                "cannot load {} weights from `{}`; run scripts/fetch-weights.sh",
                kind.name(),
                path.display()
            )
        })?;
        Ok(Checkpoint {
            tensors,
            path: path.display().to_string(),
            expected,
            bn_eps,
            padding,
        })
    }

    fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).with_context(|| {
            format!(
                "tensor `{name}` is missing from `{}`; is this {}?",
                self.path, self.expected
            )
        })
    }

    /// Whether the file holds a tensor of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The ImageNet classifier `{prefix}.weight` / `.bias`, when the file has it.
    pub fn classifier(&self, prefix: &str) -> Option<(Tensor, Tensor)> {
        match (
            self.tensors.get(&format!("{prefix}.weight")),
            self.tensors.get(&format!("{prefix}.bias")),
        ) {
            (Some(w), Some(b)) => Some((w.clone(), b.clone())),
            _ => None,
        }
    }

    /// Folds BatchNorm `bn` into convolution `conv` and registers the result in `varmap`.
    pub fn fold(
        &self,
        varmap: &VarMap,
        conv: &str,
        bn: &str,
        stride: usize,
        groups: usize,
        relu6: bool,
    ) -> Result<ConvUnit> {
        let w = self.get(&format!("{conv}.weight"))?.to_dtype(DType::F32)?;
        let gamma = self.get(&format!("{bn}.weight"))?.to_dtype(DType::F32)?;
        let beta = self.get(&format!("{bn}.bias"))?.to_dtype(DType::F32)?;
        let mean = self
            .get(&format!("{bn}.running_mean"))?
            .to_dtype(DType::F32)?;
        let var = self
            .get(&format!("{bn}.running_var"))?
            .to_dtype(DType::F32)?;
        let c_out = w.dims()[0];
        for (what, t) in [
            ("weight", &gamma),
            ("bias", &beta),
            ("running_mean", &mean),
            ("running_var", &var),
        ] {
            if t.dims() != [c_out] {
                bail!(
                    "`{bn}.{what}` has shape {:?}, expected [{c_out}] to match `{conv}.weight` in `{}`",
                    t.dims(),
                    self.path
                );
            }
        }
        let inv_std = (var + self.bn_eps)?.sqrt()?.recip()?;
        let scale = (gamma * inv_std)?;
        let w = w.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        let b = (beta - (mean * &scale)?)?;
        let weight = Var::from_tensor(&w)?;
        let bias = Var::from_tensor(&b)?;
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
            data.insert(format!("{conv}.weight"), weight.clone());
            data.insert(format!("{conv}.bias"), bias.clone());
        }
        Ok(ConvUnit {
            name: conv.to_string(),
            weight,
            bias,
            stride,
            groups,
            relu6,
            padding: self.padding,
        })
    }
}

/// An inverted-residual network with folded weights (MobileNetV2, EfficientNet-Lite0).
pub struct InvertedResidualNet {
    /// Which model this is (its name in manifests).
    pub kind: BackboneKind,
    /// The preprocessing its weights were trained with.
    pub preprocess: PreprocessSpec,
    pub stem: ConvUnit,
    pub blocks: Vec<Block>,
    /// The 1x1 convolution to [`FEATURE_DIM`] channels before pooling.
    pub last: ConvUnit,
    /// ImageNet classifier ([1000, 1280], [1000]).
    pub classifier: Option<(Tensor, Tensor)>,
    /// Every trainable variable, by its checkpoint name (`{conv}.weight`, `{conv}.bias`).
    pub varmap: VarMap,
}

impl InvertedResidualNet {
    /// Pooled 1280-d features of a normalized NCHW batch.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let x = self.last.forward(&x)?;
        x.mean((2, 3))
    }

    /// How many blocks stay frozen when the last `tail` stages train
    /// (the head convolution counts as one stage; the stem never trains).
    fn frozen_blocks(&self, tail: usize) -> usize {
        self.blocks.len() - tail.saturating_sub(1).min(self.blocks.len())
    }

    /// The frozen part of [`features`](Self::features) when the last `tail` stages train:
    /// stem and the first blocks. Its output is what fine-tuning caches per image.
    pub fn trunk(&self, x: &Tensor, tail: usize) -> candle_core::Result<Tensor> {
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks[..self.frozen_blocks(tail)] {
            x = b.forward(&x)?;
        }
        Ok(x)
    }

    /// The trained part: the last `tail - 1` blocks, the head convolution, pooling.
    /// `tail(trunk(x, n), n) == features(x)`.
    pub fn tail(&self, h: &Tensor, tail: usize) -> candle_core::Result<Tensor> {
        let mut x = h.clone();
        for b in &self.blocks[self.frozen_blocks(tail)..] {
            x = b.forward(&x)?;
        }
        let x = self.last.forward(&x)?;
        x.mean((2, 3))
    }

    /// The variables of the last `tail` stages, by name (see [`last_block_var_names`](Self::last_block_var_names)).
    pub fn tail_vars(&self, tail: usize) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        self.last_block_var_names(tail.min(self.blocks.len() + 1))
            .into_iter()
            .filter_map(|n| data.get(&n).map(|v| (n, v.clone())))
            .collect()
    }

    /// ImageNet logits (for checking that weights, padding and preprocessing are right).
    pub fn imagenet_logits(&self, x: &Tensor) -> Result<Tensor> {
        let Some((w, b)) = &self.classifier else {
            bail!(
                "this {} checkpoint has no ImageNet classifier",
                self.kind.name()
            );
        };
        let f = self.features(x)?;
        Ok(f.matmul(&w.t()?)?.broadcast_add(b)?)
    }

    /// Writes the feature extractor into an ONNX graph for the preprocessing's crop;
    /// returns the `[1, 1280]` output.
    pub fn export_features(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let lo = g.init_f32("relu6.min", &[], &[0.0]);
        let hi = g.init_f32("relu6.max", &[], &[6.0]);
        let bounds = (lo.as_str(), hi.as_str());
        let side = self.preprocess.crop as usize;
        let (mut x, mut hw) = self.stem.export(g, input, (side, side), bounds)?;
        for b in &self.blocks {
            let (mut y, mut yhw) = (x.clone(), hw);
            for u in &b.units {
                (y, yhw) = u.export(g, &y, yhw, bounds)?;
            }
            x = if b.residual {
                g.node("Add", &[&x, &y], vec![])
            } else {
                y
            };
            hw = yhw;
        }
        let (x, _) = self.last.export(g, &x, hw, bounds)?;
        let pooled = g.node("GlobalAveragePool", &[&x], vec![]);
        Ok(g.node("Flatten", &[&pooled], vec![("axis", Attr::Int(1))]))
    }

    /// Names of the variables in the last `n` stages (blocks counted from the end, the
    /// head convolution counting as one), for "train the last N blocks".
    pub fn last_block_var_names(&self, n: usize) -> Vec<String> {
        let mut units: Vec<&ConvUnit> = Vec::new();
        if n >= 1 {
            units.push(&self.last);
        }
        for b in self.blocks.iter().rev().take(n.saturating_sub(1)) {
            units.extend(b.units.iter());
        }
        if n > self.blocks.len() + 1 {
            units.push(&self.stem);
        }
        units
            .iter()
            .flat_map(|u| [format!("{}.weight", u.name), format!("{}.bias", u.name)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_padding_puts_the_odd_pixel_at_the_end() {
        // stride 2 on an even input: 3x3 needs 1 (0 before, 1 after), 5x5 needs 3 (1, 2)
        let p = Padding::TfSame.pads(3, 2, 224, 224);
        assert_eq!((p.top, p.bottom, p.left, p.right), (0, 1, 0, 1));
        let p = Padding::TfSame.pads(5, 2, 56, 56);
        assert_eq!((p.top, p.bottom, p.left, p.right), (1, 2, 1, 2));
        // stride 2 on an odd input is symmetric; stride 1 is k / 2 on each side
        assert_eq!(Padding::TfSame.pads(3, 2, 7, 7), Pad::uniform(1));
        assert_eq!(Padding::TfSame.pads(5, 1, 14, 14), Pad::uniform(2));
        assert_eq!(Padding::TfSame.pads(1, 1, 7, 7), Pad::uniform(0));
        // height and width are padded each by its own size
        let p = Padding::TfSame.pads(3, 2, 8, 7);
        assert_eq!((p.top, p.bottom, p.left, p.right), (0, 1, 1, 1));
        assert_eq!(Padding::Symmetric.pads(3, 2, 224, 224), Pad::uniform(1));
    }
}
