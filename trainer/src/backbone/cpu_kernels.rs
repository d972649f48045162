//! CPU kernels that candle has only in slow forms, with their gradients: the 3x3
//! depthwise convolution (padding 1, stride 1 or 2) and ReLU6 of MobileNet-style backbones.
//!
//! candle's grouped `conv2d` runs one small convolution per channel (960 of them in
//! MobileNetV2's last blocks), and the same computation as nine shifted tensor ops copies
//! strided views; measured on this 2-core CPU, MobileNetV2 took ~650 ms per image either
//! way. A direct loop over each (image, channel) plane, in parallel over planes, is
//! what the CPU path uses instead; the gradient w.r.t. input and weight are two more such
//! loops, so training through these layers keeps working. On other devices (CUDA) the
//! shifted-ops form is used, which autograd differentiates by itself.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const K: usize = 3;

fn out_size(i: usize, stride: usize) -> usize {
    (i + 2 - K) / stride + 1
}

/// `x` `[N, C, H, W]`, `w` `[C, 1, 3, 3]` -> `[N, C, Ho, Wo]`.
pub fn depthwise3x3(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    if w.dims() != [c, 1, K, K] {
        candle_core::bail!(
            "depthwise: expected a [{c}, 1, 3, 3] kernel, got {:?}",
            w.dims()
        );
    }
    if stride != 1 && stride != 2 {
        candle_core::bail!("depthwise: stride {stride} is not supported (1 or 2)");
    }
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, Forward { stride })
    } else {
        shifted(x, w, stride)
    }
}

/// The same computation as nine shifted multiply-adds (any device; slow on CPU).
pub fn shifted(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    use candle_core::IndexOp;
    let (n, c, h, wd) = x.dims4()?;
    let (ho, wo) = (out_size(h, stride), out_size(wd, stride));
    let xp = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut acc: Option<Tensor> = None;
    for ky in 0..K {
        for kx in 0..K {
            let mut v =
                xp.narrow(2, ky, (ho - 1) * stride + 1)?
                    .narrow(3, kx, (wo - 1) * stride + 1)?;
            if stride == 2 {
                v = v
                    .pad_with_zeros(2, 0, 1)?
                    .pad_with_zeros(3, 0, 1)?
                    .reshape((n, c, ho, 2, wo, 2))?
                    .narrow(3, 0, 1)?
                    .narrow(5, 0, 1)?
                    .reshape((n, c, ho, wo))?;
            }
            let term = v.broadcast_mul(&w.i((.., 0, ky, kx))?.reshape((1, c, 1, 1))?)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("depthwise: empty kernel".into()))
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("depthwise: {what} must be f32");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("depthwise: {what} must be contiguous");
    };
    Ok(&v[a..b])
}

/// The range of output columns `ox` whose input column `ox * stride + kx - 1` is inside
/// `0..w`, so the inner loops run without bounds branches.
#[inline(always)]
fn valid_cols(w: usize, wo: usize, stride: usize, kx: usize) -> (usize, usize) {
    // ix = ox * stride + kx - 1 >= 0  <=>  ox >= (1 - kx) / stride (rounded up)
    let lo = if kx == 0 { 1usize.div_ceil(stride) } else { 0 };
    // ix <= w - 1  <=>  ox <= (w - kx) / stride
    let hi = if w + 1 > kx {
        ((w - kx) / stride + 1).min(wo)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Calls `f(input_row_start, output_row_start, lo, hi, kx)` for every kernel tap (ky, kx)
/// and output row whose input row is inside the image; `lo..hi` are the valid columns.
#[inline(always)]
fn rows(
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    stride: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize),
) {
    for ky in 0..K {
        for oy in 0..ho {
            let iy = (oy * stride + ky) as isize - 1;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..K {
                let (lo, hi) = valid_cols(w, wo, stride, kx);
                f(ky, kx, iy as usize * w, oy * wo, lo, hi);
            }
        }
    }
}

struct Forward {
    stride: usize,
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "depthwise3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (x, k) = (f32_slice(s1, l1, "input")?, f32_slice(s2, l2, "kernel")?);
        let (ho, wo) = (out_size(h, self.stride), out_size(w, self.stride));
        let mut y = vec![0f32; n * c * ho * wo];
        let s = self.stride;
        y.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(plane, out)| {
                let ch = plane % c;
                let inp = &x[plane * h * w..(plane + 1) * h * w];
                let kk = &k[ch * K * K..(ch + 1) * K * K];
                rows(h, w, ho, wo, s, |ky, kx, ri, ro, lo, hi| {
                    let wk = kk[ky * K + kx];
                    let o = &mut out[ro + lo..ro + hi];
                    let start = ri + lo * s + kx - 1;
                    if s == 1 {
                        for (o, i) in o.iter_mut().zip(&inp[start..start + (hi - lo)]) {
                            *o += i * wk;
                        }
                    } else {
                        for (o, i) in o.iter_mut().zip(inp[start..].iter().step_by(s)) {
                            *o += i * wk;
                        }
                    }
                });
            });
        Ok((CpuStorage::F32(y), Shape::from((n, c, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let gx = grad.apply_op2_no_bwd(
            w,
            &GradInput {
                stride: self.stride,
                h,
                w: wd,
            },
        )?;
        let gw = x.apply_op2_no_bwd(
            &grad,
            &GradWeight {
                stride: self.stride,
            },
        )?;
        Ok((Some(gx), Some(gw)))
    }
}

/// d loss / d input: scatter each output gradient back through the kernel.
struct GradInput {
    stride: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "depthwise3x3-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, ho, wo) = l1.shape().dims4()?;
        let (g, k) = (f32_slice(s1, l1, "gradient")?, f32_slice(s2, l2, "kernel")?);
        let (h, w) = (self.h, self.w);
        let mut gx = vec![0f32; n * c * h * w];
        let s = self.stride;
        gx.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(plane, out)| {
                let ch = plane % c;
                let gp = &g[plane * ho * wo..(plane + 1) * ho * wo];
                let kk = &k[ch * K * K..(ch + 1) * K * K];
                rows(h, w, ho, wo, s, |ky, kx, ri, ro, lo, hi| {
                    let wk = kk[ky * K + kx];
                    let start = ri + lo * s + kx - 1;
                    for (j, go) in gp[ro + lo..ro + hi].iter().enumerate() {
                        out[start + j * s] += go * wk;
                    }
                });
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, c, h, w))))
    }
}

/// d loss / d kernel: correlate input and output gradient per channel.
struct GradWeight {
    stride: usize,
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "depthwise3x3-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (_, _, ho, wo) = l2.shape().dims4()?;
        let (x, g) = (f32_slice(s1, l1, "input")?, f32_slice(s2, l2, "gradient")?);
        let mut gw = vec![0f32; c * K * K];
        gw.par_chunks_mut(K * K).enumerate().for_each(|(ch, out)| {
            let s = self.stride;
            for img in 0..n {
                let plane = img * c + ch;
                let xp = &x[plane * h * w..(plane + 1) * h * w];
                let gp = &g[plane * ho * wo..(plane + 1) * ho * wo];
                rows(h, w, ho, wo, s, |ky, kx, ri, ro, lo, hi| {
                    let start = ri + lo * s + kx - 1;
                    let mut acc = 0f32;
                    for (j, go) in gp[ro + lo..ro + hi].iter().enumerate() {
                        acc += xp[start + j * s] * go;
                    }
                    out[ky * K + kx] += acc;
                });
            }
        });
        Ok((CpuStorage::F32(gw), Shape::from((c, 1, K, K))))
    }
}

/// `min(max(x, 0), 6)`. candle's `clamp` broadcasts two scalars through strided binary
/// ops (measured 25 ms on a 7.2M-element tensor vs 2 ms for `relu`); this is one pass.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(Relu6)
    } else {
        x.clamp(0f32, 6f32)
    }
}

struct Relu6;

impl CustomOp1 for Relu6 {
    fn name(&self) -> &'static str {
        "relu6"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "input")?;
        let y: Vec<f32> = x.iter().map(|v| v.clamp(0.0, 6.0)).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inside = (x.gt(0f32)?.to_dtype(grad.dtype())? * x.lt(6f32)?.to_dtype(grad.dtype())?)?;
        Ok(Some((grad * inside)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn forward_matches_grouped_conv_and_shifted_form() {
        let dev = Device::Cpu;
        for stride in [1, 2] {
            for (h, w) in [(7, 7), (8, 6), (1, 1), (2, 5)] {
                let x = Tensor::randn(0f32, 1., (2, 5, h, w), &dev).unwrap();
                let k = Tensor::randn(0f32, 1., (5, 1, 3, 3), &dev).unwrap();
                let a = depthwise3x3(&x, &k, stride).unwrap();
                let b = x.conv2d(&k, 1, stride, 1, 5).unwrap();
                let c = shifted(&x, &k, stride).unwrap();
                assert_eq!(a.dims(), b.dims(), "stride {stride} {h}x{w}");
                assert!(max_diff(&a, &b) < 1e-5, "stride {stride} {h}x{w} vs conv2d");
                assert!(
                    max_diff(&a, &c) < 1e-5,
                    "stride {stride} {h}x{w} vs shifted"
                );
            }
        }
    }

    #[test]
    fn relu6_forward_and_gradient() {
        let dev = Device::Cpu;
        let x = Var::new(&[-1f32, 0.5, 3.0, 6.5, 7.0], &dev).unwrap();
        let y = relu6(&x).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0.0, 0.5, 3.0, 6.0, 6.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        // d/dx clamp(x, 0, 6) = 1 inside (0, 6), else 0
        assert_eq!(
            g.get(&x).unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn gradients_match_autograd_of_the_shifted_form() {
        let dev = Device::Cpu;
        for stride in [1, 2] {
            let x = Var::randn(0f32, 1., (2, 4, 7, 6), &dev).unwrap();
            let k = Var::randn(0f32, 1., (4, 1, 3, 3), &dev).unwrap();
            let probe = Tensor::randn(0f32, 1., depthwise3x3(&x, &k, stride).unwrap().dims(), &dev)
                .unwrap();
            let loss_a = (depthwise3x3(&x, &k, stride).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap();
            let loss_b = (shifted(&x, &k, stride).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap();
            let (ga, gb) = (loss_a.backward().unwrap(), loss_b.backward().unwrap());
            for v in [&x, &k] {
                let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                assert!(
                    max_diff(a, b) < 1e-4,
                    "stride {stride}: gradient of {:?}",
                    v.dims()
                );
            }
        }
    }
}
