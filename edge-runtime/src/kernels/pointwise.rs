//! Pointwise (1x1) convolution for x86-64: `Y[p, :] = clamp(X[p, :] W + b)` over the
//! `positions` (H x W) of an activation, each side channel-last (`[H, W, C]`) or
//! channel-first (`[C, H, W]`) as tract's plan lays it out around the channel-last
//! depthwise convolutions.
//!
//! Why linesight has its own: tract 0.23.9 runs a 1x1 convolution as a general matmul that
//! first copies the whole activation into its packed panel layout (an extra pass over a
//! tensor of up to 4.8 MB in MobileNetV2, out of cache by the time the matmul reads it back),
//! and pays a fixed setup per 16x12 tile that small channel counts do not amortise. Here the
//! weights are packed once at load (column blocks of 32 output channels), and the kernel
//! reads the activation rows where they are, broadcasting one input value at a time against
//! a block of weights (the classic GEMM with one operand packed, as onnxruntime's MLAS does
//! for this shape): no per-run packing, no copy, the bias and the ReLU6 clamp applied before
//! the one store. No crate offers this shape with a fused clamp and packed-once weights on
//! stable Rust without pulling its own threading (`gemm` brings rayon and its own packing).
//!
//! Blocking: 12 rows x 32 channels of accumulators (24 zmm), the 12 input rows stay in L1
//! while the weight blocks of every output channel stream past them from L2.

/// Weights packed for the kernels: `cout` rounded up to blocks of [`BLOCK`] columns, each
/// block `cin` rows of `BLOCK` values (zero past `cout`), so a block's row is one aligned
/// pair of vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    pub cin: usize,
    pub cout: usize,
    data: Vec<f32>,
}

/// Output channels per packed column block (two AVX-512 vectors, four AVX2 vectors).
pub const BLOCK: usize = 32;

impl PackedWeights {
    /// Packs `w`, row-major `cout x cin` (ONNX `Conv` `[O, I, 1, 1]` order).
    pub fn from_oi(w: &[f32], cout: usize, cin: usize) -> Self {
        assert_eq!(w.len(), cout * cin, "weights are not cout x cin");
        let blocks = cout.div_ceil(BLOCK);
        let mut data = vec![0f32; blocks * cin * BLOCK];
        for o in 0..cout {
            let (b, j) = (o / BLOCK, o % BLOCK);
            for i in 0..cin {
                data[(b * cin + i) * BLOCK + j] = w[o * cin + i];
            }
        }
        PackedWeights { cin, cout, data }
    }

    fn block(&self, b: usize) -> &[f32] {
        &self.data[b * self.cin * BLOCK..(b + 1) * self.cin * BLOCK]
    }
}

/// What is applied to each output before it is stored: `bias[o]`, then `min(max(y, lo), hi)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue {
    pub bias: Vec<f32>,
    pub lo: f32,
    pub hi: f32,
}

/// Where the values of a `positions x channels` matrix are: channel-last (`[.., H, W, C]`:
/// a position's channels contiguous) or channel-first (`[C, H, W]`: a channel's positions
/// contiguous), with `positions` the whole tensor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    ChannelLast,
    ChannelFirst,
}

/// One call's operands: rows `first..first + rows` of the `positions` of `x`.
pub struct Rows<'a> {
    pub x: &'a [f32],
    pub x_layout: Layout,
    pub positions: usize,
    pub first: usize,
    pub rows: usize,
}

impl Rows<'_> {
    /// Offset of (position `p`, input channel `i`) in `x`.
    pub(super) fn at(&self, cin: usize, p: usize, i: usize) -> usize {
        match self.x_layout {
            Layout::ChannelLast => p * cin + i,
            Layout::ChannelFirst => i * self.positions + p,
        }
    }
}

/// Offset of (position `p`, output channel `o`) in `y`.
pub(super) fn out_at(layout: Layout, positions: usize, cout: usize, p: usize, o: usize) -> usize {
    match layout {
        Layout::ChannelLast => p * cout + o,
        Layout::ChannelFirst => o * positions + p,
    }
}

/// The plain reference (and the path for machines without the vector kernel).
///
/// # Safety
/// `y` points to the whole output tensor (`positions x cout` values in `y_layout`); only
/// the rows of `r` are written.
pub unsafe fn reference(r: &Rows, w: &PackedWeights, e: &Epilogue, y: *mut f32, y_layout: Layout) {
    let (cin, cout) = (w.cin, w.cout);
    for p in r.first..r.first + r.rows {
        for o in 0..cout {
            let blk = w.block(o / BLOCK);
            let mut s = e.bias[o];
            for i in 0..cin {
                s += r.x[r.at(cin, p, i)] * blk[i * BLOCK + o % BLOCK];
            }
            // SAFETY: in bounds by the caller's contract.
            unsafe { *y.add(out_at(y_layout, r.positions, cout, p, o)) = s.max(e.lo).min(e.hi) };
        }
    }
}

/// Runs the fastest kernel this CPU has on the rows of `r`, writing them into `y`.
///
/// # Safety
/// `r.x` holds `positions * cin` values; `y` points to `positions * cout` writable values;
/// `e.bias` has `cout` values; `first + rows <= positions`. Calls on disjoint row ranges may
/// run at once.
pub unsafe fn run(r: &Rows, w: &PackedWeights, e: &Epilogue, y: *mut f32, y_layout: Layout) {
    debug_assert!(r.x.len() >= r.positions * w.cin && e.bias.len() == w.cout);
    debug_assert!(r.first + r.rows <= r.positions);
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F checked; bounds are the caller's contract.
            unsafe { x86::avx512(r, w, e, y, y_layout) };
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { reference(r, w, e, y, y_layout) }
}

/// True when [`run`] has a vector kernel on this CPU.
pub fn vectorised() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{out_at, Epilogue, Layout, PackedWeights, Rows, BLOCK};
    use std::arch::x86_64::*;

    const ROWS: usize = 12;

    /// # Safety
    /// AVX-512F; as [`super::run`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(r: &Rows, w: &PackedWeights, e: &Epilogue, y: *mut f32, y_layout: Layout) {
        let (cin, cout) = (w.cin, w.cout);
        let blocks = cout.div_ceil(BLOCK);
        let lo = _mm512_set1_ps(e.lo);
        let hi = _mm512_set1_ps(e.hi);
        // Step between one input channel and the next, for a given row.
        let ci_step = match r.x_layout {
            Layout::ChannelLast => 1,
            Layout::ChannelFirst => r.positions,
        };
        let mut tile = [[0f32; BLOCK]; ROWS];
        let end = r.first + r.rows;
        let mut p0 = r.first;
        while p0 < end {
            let valid = (end - p0).min(ROWS);
            // Rows past the end repeat the last valid one (read, never stored).
            let xr: [*const f32; ROWS] = std::array::from_fn(|k| unsafe {
                r.x.as_ptr().add(r.at(cin, p0 + k.min(valid - 1), 0))
            });
            for b in 0..blocks {
                let wb = w.block(b).as_ptr();
                let o0 = b * BLOCK;
                let width = (cout - o0).min(BLOCK);
                let m0: __mmask16 = if width >= 16 {
                    0xffff
                } else {
                    ((1u32 << width) - 1) as u16
                };
                let m1: __mmask16 = if width >= 32 {
                    0xffff
                } else if width > 16 {
                    ((1u32 << (width - 16)) - 1) as u16
                } else {
                    0
                };
                unsafe {
                    let mut acc0 = [_mm512_setzero_ps(); ROWS];
                    let mut acc1 = [_mm512_setzero_ps(); ROWS];
                    for i in 0..cin {
                        let w0 = _mm512_loadu_ps(wb.add(i * BLOCK));
                        let w1 = _mm512_loadu_ps(wb.add(i * BLOCK + 16));
                        let off = i * ci_step;
                        for k in 0..ROWS {
                            let v = _mm512_set1_ps(*xr[k].add(off));
                            acc0[k] = _mm512_fmadd_ps(v, w0, acc0[k]);
                            acc1[k] = _mm512_fmadd_ps(v, w1, acc1[k]);
                        }
                    }
                    let b0 = _mm512_maskz_loadu_ps(m0, e.bias.as_ptr().add(o0));
                    let b1 = _mm512_maskz_loadu_ps(m1, e.bias.as_ptr().add(o0 + 16.min(width)));
                    for k in 0..valid {
                        let v0 = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(acc0[k], b0), lo), hi);
                        let v1 = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(acc1[k], b1), lo), hi);
                        match y_layout {
                            Layout::ChannelLast => {
                                let out = y.add(out_at(y_layout, r.positions, cout, p0 + k, o0));
                                _mm512_mask_storeu_ps(out, m0, v0);
                                if m1 != 0 {
                                    _mm512_mask_storeu_ps(out.add(16), m1, v1);
                                }
                            }
                            Layout::ChannelFirst => {
                                _mm512_storeu_ps(tile[k].as_mut_ptr(), v0);
                                _mm512_storeu_ps(tile[k].as_mut_ptr().add(16), v1);
                            }
                        }
                    }
                    if y_layout == Layout::ChannelFirst {
                        // The tile is rows x channels; channel-first wants each channel's
                        // `valid` positions contiguous.
                        for o in 0..width {
                            let out = y.add(out_at(y_layout, r.positions, cout, p0, o0 + o));
                            for (k, row) in tile.iter().enumerate().take(valid) {
                                *out.add(k) = row[o];
                            }
                        }
                    }
                }
            }
            p0 += ROWS;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn case(positions: usize, cin: usize, cout: usize, clamp: bool, xl: Layout, yl: Layout) {
        let x: Vec<f32> = (0..positions * cin)
            .map(|i| ((i as f32) * 0.173).sin())
            .collect();
        let w: Vec<f32> = (0..cout * cin)
            .map(|i| ((i as f32) * 0.057).cos() * 0.3)
            .collect();
        let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.01 - 0.1).collect();
        let (lo, hi) = if clamp {
            (0.0, 0.5)
        } else {
            (f32::NEG_INFINITY, f32::INFINITY)
        };
        let e = Epilogue {
            bias: bias.clone(),
            lo,
            hi,
        };
        let pw = PackedWeights::from_oi(&w, cout, cin);
        let mut got = vec![f32::NAN; positions * cout + 3];
        // Two calls on two row ranges, as threads would make them.
        let half = positions / 2;
        for (first, rows) in [(0, half), (half, positions - half)] {
            let r = Rows {
                x: &x,
                x_layout: xl,
                positions,
                first,
                rows,
            };
            unsafe { run(&r, &pw, &e, got.as_mut_ptr(), yl) };
        }
        let xi = |p: usize, i: usize| match xl {
            Layout::ChannelLast => x[p * cin + i],
            Layout::ChannelFirst => x[i * positions + p],
        };
        for p in 0..positions {
            for o in 0..cout {
                let mut want = bias[o] as f64;
                for i in 0..cin {
                    want += xi(p, i) as f64 * w[o * cin + i] as f64;
                }
                let want = want.max(lo as f64).min(hi as f64);
                let g = got[out_at(yl, positions, cout, p, o)] as f64;
                assert!(
                    (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{positions}x{cin}->{cout} {xl:?}->{yl:?}: [{p}, {o}] {g} vs {want}"
                );
            }
        }
        assert!(
            got[positions * cout..].iter().all(|v| v.is_nan()),
            "wrote past the output"
        );
    }

    #[test]
    fn matches_f64_reference_on_mobilenet_shapes_tails_and_layouts() {
        each_test_case(&[], case);
    }

    /// The cases both kernels' tests run: MobileNetV2's channel counts, odd tails (and `extra`),
    /// 1-49 positions, the four layout pairs, with and without the clamp.
    pub(in crate::kernels) fn each_test_case(
        extra: &[(usize, usize)],
        mut f: impl FnMut(usize, usize, usize, bool, Layout, Layout),
    ) {
        use Layout::*;
        let shapes = [
            (32, 16),
            (16, 96),
            (96, 24),
            (24, 144),
            (1, 1),
            (3, 17),
            (5, 33),
            (7, 48),
        ];
        for &(cin, cout) in shapes.iter().chain(extra) {
            for positions in [1, 5, 12, 13, 25, 49] {
                for (xl, yl) in [
                    (ChannelLast, ChannelLast),
                    (ChannelFirst, ChannelLast),
                    (ChannelLast, ChannelFirst),
                    (ChannelFirst, ChannelFirst),
                ] {
                    f(positions, cin, cout, false, xl, yl);
                    f(positions, cin, cout, true, xl, yl);
                }
            }
        }
    }
}
