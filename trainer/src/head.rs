//! The classifier head on top of a backbone: scaled cosine similarity between the
//! L2-normalized embedding and one L2-normalized weight row per class.
//!
//! `logits = scale * normalize(embedding) . normalize(W_c)`. Rows start as class
//! prototypes (mean of a class's normalized embeddings), or from CLIP text embeddings.

use crate::export::onnx::{Attr, GraphBuilder};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};

/// Smallest norm used when normalizing, as torch's `F.normalize` (eps = 1e-12).
pub const NORM_EPS: f32 = 1e-12;
/// Default logit scale for prototype heads: softmax over cosines * 30 separates a
/// clear match (cos ~0.8) from a runner-up (~0.6) with ~0.998 vs 0.002.
pub const DEFAULT_SCALE: f32 = 30.0;

/// A scaled-cosine classifier.
#[derive(Debug, Clone)]
pub struct CosineHead {
    /// `[K, D]`, rows L2-normalized.
    pub weight: Tensor,
    pub scale: f32,
}

/// Rows divided by their L2 norm (floored at [`NORM_EPS`]).
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(NORM_EPS)?;
    x.broadcast_div(&norm)
}

impl CosineHead {
    /// Class prototypes: the mean of each class's L2-normalized embeddings, normalized.
    /// `embeddings` is `[N, D]`; `targets[i]` is the class of row i, in `0..classes`.
    pub fn prototypes(
        embeddings: &Tensor,
        targets: &[usize],
        classes: usize,
        scale: f32,
    ) -> Result<Self> {
        let (n, d) = embeddings.dims2()?;
        if n != targets.len() {
            bail!("{n} embeddings but {} targets", targets.len());
        }
        let e = l2_normalize(&embeddings.to_dtype(DType::F32)?)?.to_vec2::<f32>()?;
        let mut sums = vec![vec![0f32; d]; classes];
        let mut counts = vec![0usize; classes];
        for (row, &t) in e.iter().zip(targets) {
            if t >= classes {
                bail!("target {t} is out of range for {classes} classes");
            }
            counts[t] += 1;
            for (s, v) in sums[t].iter_mut().zip(row) {
                *s += v;
            }
        }
        if let Some(c) = counts.iter().position(|&c| c == 0) {
            bail!("class {c} has no image; every class needs at least one to build a prototype");
        }
        let flat: Vec<f32> = sums.into_iter().flatten().collect();
        let w = Tensor::from_vec(flat, (classes, d), embeddings.device())?;
        Ok(CosineHead {
            weight: l2_normalize(&w)?,
            scale,
        })
    }

    pub fn classes(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `[N, D]` embeddings -> `[N, K]` logits.
    pub fn forward(&self, embeddings: &Tensor) -> candle_core::Result<Tensor> {
        let e = l2_normalize(embeddings)?;
        let w = l2_normalize(&self.weight)?;
        e.matmul(&w.t()?)? * self.scale as f64
    }

    /// Appends `L2 norm -> MatMul(scale * W^T)` to the graph; returns the logits' name.
    /// The scale is folded into the weight initializer.
    pub fn export_onnx(&self, g: &mut GraphBuilder, embedding: &str) -> Result<String> {
        let w = (l2_normalize(&self.weight)? * self.scale as f64)?
            .t()?
            .contiguous()?;
        let norm = g.node(
            "ReduceL2",
            &[embedding],
            vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))],
        );
        let eps = g.init_f32("head.norm_eps", &[], &[NORM_EPS]);
        let norm = g.node("Max", &[&norm, &eps], vec![]);
        let unit = g.node("Div", &[embedding, &norm], vec![]);
        let wt = g.init_tensor("head.weight_t", &w)?;
        Ok(g.node("MatMul", &[&unit, &wt], vec![]))
    }
}

/// A plain linear head (`x W^T + b`), used for the ImageNet check of MobileNetV2.
pub fn export_linear(
    g: &mut GraphBuilder,
    x: &str,
    weight: &Tensor,
    bias: &Tensor,
    name: &str,
) -> Result<String> {
    let wt = g.init_tensor(&format!("{name}.weight_t"), &weight.t()?.contiguous()?)?;
    let b = g.init_tensor(&format!("{name}.bias"), bias)?;
    let y = g.node("MatMul", &[x, &wt], vec![]);
    Ok(g.node("Add", &[&y, &b], vec![]))
}
