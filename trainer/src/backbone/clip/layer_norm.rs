//! A LayerNorm that autograd can see through.
//!
//! `candle_nn::LayerNorm` and `candle_nn::ops::layer_norm` run a fused kernel that records
//! no backward op, so neither the input nor `weight`/`bias` receive a gradient (candle
//! issues [2977](https://github.com/huggingface/candle/issues/2977),
//! [3011](https://github.com/huggingface/candle/issues/3011) and
//! [3752](https://github.com/huggingface/candle/issues/3752)). This one is written with
//! plain tensor ops (sum / dim, subtract, square, sum / dim, add eps, sqrt, divide, scale,
//! shift), so every step is recorded. It mirrors `torch.nn.LayerNorm(dim, eps)` over the
//! last axis, with the biased variance, as HF's CLIP uses it.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, Module, VarBuilder};

/// LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * weight + bias`, where `mean`
/// and `var` (biased, divided by `dim`) are taken per row.
///
/// Keys under the builder's prefix: `weight` `[dim]` (initialised to 1) and `bias` `[dim]`
/// (initialised to 0).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl LayerNorm {
    /// Builds the layer from existing tensors (`weight` and `bias` of shape `[dim]`).
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    /// Creates or loads `weight` and `bias` of shape `[dim]` through `vb`.
    ///
    /// Fails when the builder cannot provide them (a missing tensor or a shape mismatch when
    /// loading).
    pub fn load(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// The scale, `[dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift, `[dim]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Half-precision inputs are normalised in f32, as torch does.
        let in_dtype = xs.dtype();
        let xs = match in_dtype {
            DType::F16 | DType::BF16 => xs.to_dtype(DType::F32)?,
            _ => xs.clone(),
        };
        // Divide by `dim` rather than multiply by its reciprocal (what `mean_keepdim` does):
        // the mean of a constant row is then exact, and its output exactly `bias`, which
        // matters because `1 / sqrt(eps)` amplifies any residue ~300 times.
        let dim = Tensor::new(xs.dim(D::Minus1)? as f32, xs.device())?.to_dtype(xs.dtype())?;
        let mean = xs.sum_keepdim(D::Minus1)?.broadcast_div(&dim)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.sum_keepdim(D::Minus1)?.broadcast_div(&dim)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let weight = self.weight.to_dtype(normed.dtype())?;
        let bias = self.bias.to_dtype(normed.dtype())?;
        normed
            .broadcast_mul(&weight)?
            .broadcast_add(&bias)?
            .to_dtype(in_dtype)
    }
}
