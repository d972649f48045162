//! int8 pointwise (1x1) convolution for x86-64 with AVX-512 VNNI: the layer the int8
//! exporter writes (`trainer/src/export/quantize.rs`) computed in one pass:
//!
//! ```text
//! q[p, i]  = clamp(round_half_even(x[p, i] * inv_scale + offset), -127, 127)  (int8)
//! acc[p, o] = sum_i q[p, i] * w[o, i]                                     (i32, exact)
//! y[p, o]  = clamp(f32(acc[p, o]) * scale[o] + bias[o], lo, hi)           (f32)
//! ```
//!
//! the same operations, in the same order and f32 rounding, as tract's plan of that ONNX
//! region (Mul, Add/Sub of 1.5 * 2^23, Clip, Cast, integer EinSum, Cast, Mul, Add, ReLU6),
//! so the results are the same bit for bit.
//!
//! `offset` is 0 for a signed activation and -127 for one a ReLU / ReLU6 makes
//! non-negative: the exporter then maps `[0, max]` onto all 255 int8 steps (twice the
//! resolution of `[-max, max]`, half of which would stay unused) and folds `127 * sum_i
//! w[o, i]` into the bias. tract's plan writes it into the rounding constant it adds
//! (1.5 * 2^23 + offset), so the op reads it from there.
//!
//! Why linesight has its own: tract 0.23.9 runs these int8 matmuls slower than its f32 ones
//! on x86 for MobileNetV2's shapes (docs/benchmarks.md: an all-int8 bundle 3.5x the f32
//! one), and every region pays six elementwise passes around the matmul (quantise in four
//! ops, cast, rescale), each writing a whole tensor. Here the activation is quantised on
//! the fly, 12 rows at a time, into a panel that stays in L1; the weights are packed once
//! at load; `VPDPBUSD` does 64 multiply-adds per instruction (4x the f32 FMA); the rescale,
//! bias and clamp are applied before the one store. No crate offers an int8 GEMM with this
//! fused quantise / dequantise on stable Rust.
//!
//! `VPDPBUSD` multiplies *unsigned* bytes by signed ones, so the activation is stored as
//! `q + 128` (1..=255) and `128 * sum_i w[o, i]`, computed once at load, is taken back from
//! each accumulator: exact in i32.

pub use super::pointwise::Rows;
use super::pointwise::{out_at, Layout};

/// Output channels per packed column block (two vectors of 16 i32 accumulators).
pub const BLOCK: usize = 32;

/// Rows (positions) quantised into one panel and held in accumulators at once.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const ROWS: usize = 12;

/// The largest input channel count the kernel takes: its panel lives on the stack
/// (`ROWS * MAX_CIN` bytes), so a run allocates nothing.
pub const MAX_CIN: usize = 4096;

/// int8 weights packed for `VPDPBUSD`: `cout` rounded up to blocks of [`BLOCK`] columns;
/// in a block, for each group of 4 input channels, 32 channels x 4 bytes (one pair of
/// 64-byte vectors). Channels past `cin` or `cout` are zero.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedI8 {
    pub cin: usize,
    pub cout: usize,
    groups: usize,
    data: Vec<i8>,
    /// `128 * sum_i w[o, i]` per output channel (padded to the blocks with 0).
    shift: Vec<i32>,
}

impl PackedI8 {
    /// Packs `w`, row-major `cout x cin` (ONNX `ConvInteger` `[O, I, 1, 1]` order).
    pub fn from_oi(w: &[i8], cout: usize, cin: usize) -> Self {
        assert_eq!(w.len(), cout * cin, "weights are not cout x cin");
        let groups = cin.div_ceil(4);
        let blocks = cout.div_ceil(BLOCK);
        let mut data = vec![0i8; blocks * groups * BLOCK * 4];
        let mut shift = vec![0i32; blocks * BLOCK];
        for o in 0..cout {
            let (b, j) = (o / BLOCK, o % BLOCK);
            for i in 0..cin {
                data[((b * groups + i / 4) * BLOCK + j) * 4 + i % 4] = w[o * cin + i];
                shift[o] += 128 * w[o * cin + i] as i32;
            }
        }
        PackedI8 {
            cin,
            cout,
            groups,
            data,
            shift,
        }
    }

    /// Weight `(o, i)` as packed.
    fn at(&self, o: usize, i: usize) -> i8 {
        self.data[((o / BLOCK * self.groups + i / 4) * BLOCK + o % BLOCK) * 4 + i % 4]
    }
}

/// The dequantisation applied before the one store: `f32(acc) * scale[o] + bias[o]`, then
/// `min(max(y, lo), hi)`; and the activation's quantisation: the step `inv_scale` (the
/// multiplier tract's plan applies before rounding) and the integer `offset` added before
/// rounding (0 or -127, see the module's doc).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantEpilogue {
    pub inv_scale: f32,
    pub offset: f32,
    /// Per output channel, padded with 0 to a whole number of blocks.
    pub scale: Vec<f32>,
    /// Per output channel, padded with 0 to a whole number of blocks.
    pub bias: Vec<f32>,
    pub lo: f32,
    pub hi: f32,
}

impl QuantEpilogue {
    /// `scale` and `bias` (`cout` values each) padded for the kernel. `offset` must be a
    /// whole number in -127..=127 (the rule that builds the op checks it).
    pub fn new(inv_scale: f32, offset: f32, scale: &[f32], bias: &[f32], lo: f32, hi: f32) -> Self {
        assert!(
            offset.fract() == 0.0 && offset.abs() <= 127.0,
            "the quantisation offset is a whole number in -127..=127"
        );
        assert_eq!(
            scale.len(),
            bias.len(),
            "one scale and one bias per channel"
        );
        let padded = scale.len().div_ceil(BLOCK) * BLOCK;
        let pad = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(padded, 0.0);
            p
        };
        QuantEpilogue {
            inv_scale,
            offset,
            scale: pad(scale),
            bias: pad(bias),
            lo,
            hi,
        }
    }
}

/// tract's rounding constant as the exporter writes it (1.5 * 2^23): adding it to an f32
/// below 2^22 in magnitude rounds that value to a whole number, half to even.
pub const ROUND_MAGIC: f32 = 12_582_912.0;

/// The activation's int8 value as tract's plan computes it: `x * inv_scale + offset`
/// rounded half to even (tract adds 1.5 * 2^23 + offset, then subtracts 1.5 * 2^23; the
/// constant being even, the parity rule is that of `x * inv_scale + offset`), clipped to
/// +-127.
pub fn quantize(x: f32, inv_scale: f32, offset: f32) -> i8 {
    (((x * inv_scale) + (ROUND_MAGIC + offset)) - ROUND_MAGIC).clamp(-127.0, 127.0) as i8
}

/// The plain reference (and the path for machines without VNNI): the formula above, one
/// value at a time.
///
/// # Safety
/// `y` points to the whole output tensor (`positions x cout` values in `y_layout`); only
/// the rows of `r` are written.
pub unsafe fn reference(r: &Rows, w: &PackedI8, e: &QuantEpilogue, y: *mut f32, y_layout: Layout) {
    let (cin, cout) = (w.cin, w.cout);
    for p in r.first..r.first + r.rows {
        for o in 0..cout {
            let mut acc = 0i32;
            for i in 0..cin {
                let q = quantize(r.x[r.at(cin, p, i)], e.inv_scale, e.offset);
                acc += q as i32 * w.at(o, i) as i32;
            }
            let v = (acc as f32 * e.scale[o] + e.bias[o]).max(e.lo).min(e.hi);
            // SAFETY: in bounds by the caller's contract.
            unsafe { *y.add(out_at(y_layout, r.positions, cout, p, o)) = v };
        }
    }
}

/// True when [`run`] has its vector kernel on this CPU (AVX-512F, BW and VNNI).
pub fn vectorised() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs the fastest kernel this CPU has on the rows of `r`, writing them into `y`.
///
/// # Safety
/// `r.x` holds `positions * cin` values; `y` points to `positions * cout` writable values;
/// `first + rows <= positions`; `cin <= MAX_CIN`. Calls on disjoint row ranges may run at
/// once.
pub unsafe fn run(r: &Rows, w: &PackedI8, e: &QuantEpilogue, y: *mut f32, y_layout: Layout) {
    debug_assert!(r.x.len() >= r.positions * w.cin && w.cin <= MAX_CIN);
    debug_assert!(r.first + r.rows <= r.positions);
    #[cfg(target_arch = "x86_64")]
    {
        if vectorised() {
            // SAFETY: the features are checked; bounds are the caller's contract.
            unsafe { x86::vnni(r, w, e, y, y_layout) };
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { reference(r, w, e, y, y_layout) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{out_at, Layout, PackedI8, QuantEpilogue, Rows, BLOCK, MAX_CIN, ROUND_MAGIC, ROWS};
    use std::arch::x86_64::*;

    /// The constants of [`quant_u8`], from the epilogue's step and offset.
    #[derive(Clone, Copy)]
    struct Quant {
        inv: __m512,
        /// -127 - offset and 127 - offset: the clip, applied before rounding.
        lo: __m512,
        hi: __m512,
        /// 1.5 * 2^23 + offset and 1.5 * 2^23: tract's rounding, add then subtract.
        add: __m512,
        sub: __m512,
    }

    #[inline(always)]
    unsafe fn quant(e: &QuantEpilogue) -> Quant {
        Quant {
            inv: _mm512_set1_ps(e.inv_scale),
            lo: _mm512_set1_ps(-127.0 - e.offset),
            hi: _mm512_set1_ps(127.0 - e.offset),
            add: _mm512_set1_ps(ROUND_MAGIC + e.offset),
            sub: _mm512_set1_ps(ROUND_MAGIC),
        }
    }

    /// `x * inv + offset` rounded half to even and clipped to +-127, plus 128, in i32
    /// lanes (1..=255). The rounding is tract's own (add 1.5 * 2^23 + offset, subtract
    /// 1.5 * 2^23: the same two f32 roundings, so the same integer where `cvtps` of `x *
    /// inv + offset` would round twice); clipping `x * inv` to whole-number bounds before
    /// rounding gives the same integer as clipping after.
    #[inline(always)]
    unsafe fn quant_u8(x: __m512, q: Quant) -> __m512i {
        let v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, q.inv), q.lo), q.hi);
        let v = _mm512_sub_ps(_mm512_add_ps(v, q.add), q.sub);
        _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(128))
    }

    /// Quantises rows `p0..p0 + valid` into `panel`. Returns (row stride, group stride)
    /// in bytes: row `k`'s 4-channel group `g` is the u32 at `k * row + g * group`.
    ///
    /// Channel-last: each row's channels are contiguous; the panel is `[row][groups * 4]`.
    /// Channel-first: a channel's positions are contiguous; four channels' vectors of
    /// positions are interleaved byte-wise into `[group][ROWS]` u32s.
    #[inline(always)]
    unsafe fn fill_panel(
        r: &Rows,
        cin: usize,
        groups: usize,
        p0: usize,
        valid: usize,
        qc: Quant,
        panel: *mut u8,
    ) -> (usize, usize) {
        let k4 = groups * 4;
        match r.x_layout {
            Layout::ChannelLast => {
                for k in 0..ROWS {
                    // Rows past the end repeat the last valid one (computed, never stored).
                    let src = r.x.as_ptr().add((p0 + k.min(valid - 1)) * cin);
                    let dst = panel.add(k * k4);
                    let mut i = 0;
                    while i < k4 {
                        let n = (cin.saturating_sub(i)).min(16);
                        let m: __mmask16 = if n == 16 {
                            0xffff
                        } else {
                            ((1u32 << n) - 1) as u16
                        };
                        let q = quant_u8(_mm512_maskz_loadu_ps(m, src.add(i)), qc);
                        // Channels past `cin` meet zero weights; 128 is int8 zero anyway.
                        let q = _mm512_mask_blend_epi32(m, _mm512_set1_epi32(128), q);
                        let bytes = _mm512_cvtepi32_epi8(q);
                        let take = (k4 - i).min(16);
                        let mb: __mmask16 = if take == 16 {
                            0xffff
                        } else {
                            ((1u32 << take) - 1) as u16
                        };
                        _mm_mask_storeu_epi8(dst.add(i) as *mut i8, mb, bytes);
                        i += 16;
                    }
                }
                (k4, 4)
            }
            Layout::ChannelFirst => {
                let mrows: __mmask16 = ((1u32 << valid) - 1) as u16;
                for g in 0..groups {
                    let mut word = _mm512_setzero_si512();
                    for j in 0..4 {
                        let i = g * 4 + j;
                        let q = if i < cin {
                            let src = r.x.as_ptr().add(i * r.positions + p0);
                            quant_u8(_mm512_maskz_loadu_ps(mrows, src), qc)
                        } else {
                            _mm512_set1_epi32(128)
                        };
                        // Channel `g * 4 + j` is byte `j` of each row's u32 (the shift
                        // count of `slli` is a constant).
                        let q = match j {
                            0 => q,
                            1 => _mm512_slli_epi32::<8>(q),
                            2 => _mm512_slli_epi32::<16>(q),
                            _ => _mm512_slli_epi32::<24>(q),
                        };
                        word = _mm512_or_si512(word, q);
                    }
                    _mm512_mask_storeu_epi32(
                        panel.add(g * ROWS * 4) as *mut i32,
                        ((1u32 << ROWS) - 1) as u16,
                        word,
                    );
                }
                (4, ROWS * 4)
            }
        }
    }

    /// # Safety
    /// AVX-512F, BW and VNNI; as [`super::run`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn vnni(r: &Rows, w: &PackedI8, e: &QuantEpilogue, y: *mut f32, y_layout: Layout) {
        let (cin, cout, groups) = (w.cin, w.cout, w.groups);
        let blocks = cout.div_ceil(BLOCK);
        let qc = quant(e);
        let lo = _mm512_set1_ps(e.lo);
        let hi = _mm512_set1_ps(e.hi);
        // Not zeroed: `fill_panel` writes every byte the loop below reads.
        let mut panel = std::mem::MaybeUninit::<[u8; ROWS * MAX_CIN]>::uninit();
        let panel = panel.as_mut_ptr() as *mut u8;
        let mut tile = [[0f32; BLOCK]; ROWS];
        let end = r.first + r.rows;
        let mut p0 = r.first;
        while p0 < end {
            let valid = (end - p0).min(ROWS);
            let (row_step, group_step) =
                unsafe { fill_panel(r, cin, groups, p0, valid, qc, panel) };
            let xr: [*const u8; ROWS] =
                std::array::from_fn(|k| unsafe { panel.add(k * row_step) as *const u8 });
            for b in 0..blocks {
                let wb = w.data.as_ptr().add(b * groups * BLOCK * 4);
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
                    let mut acc0 = [_mm512_setzero_si512(); ROWS];
                    let mut acc1 = [_mm512_setzero_si512(); ROWS];
                    for g in 0..groups {
                        let w0 = _mm512_loadu_si512(wb.add(g * BLOCK * 4) as *const _);
                        let w1 = _mm512_loadu_si512(wb.add(g * BLOCK * 4 + 64) as *const _);
                        let off = g * group_step;
                        for k in 0..ROWS {
                            let v =
                                _mm512_set1_epi32((xr[k].add(off) as *const i32).read_unaligned());
                            acc0[k] = _mm512_dpbusd_epi32(acc0[k], v, w0);
                            acc1[k] = _mm512_dpbusd_epi32(acc1[k], v, w1);
                        }
                    }
                    let s0 = _mm512_loadu_si512(w.shift.as_ptr().add(o0) as *const _);
                    let s1 = _mm512_loadu_si512(w.shift.as_ptr().add(o0 + 16) as *const _);
                    let c0 = _mm512_loadu_ps(e.scale.as_ptr().add(o0));
                    let c1 = _mm512_loadu_ps(e.scale.as_ptr().add(o0 + 16));
                    let b0 = _mm512_loadu_ps(e.bias.as_ptr().add(o0));
                    let b1 = _mm512_loadu_ps(e.bias.as_ptr().add(o0 + 16));
                    for k in 0..valid {
                        // Separate multiply and add (no FMA): tract's plan rounds twice.
                        let f0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc0[k], s0));
                        let f1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc1[k], s1));
                        let v0 = _mm512_add_ps(_mm512_mul_ps(f0, c0), b0);
                        let v1 = _mm512_add_ps(_mm512_mul_ps(f1, c1), b1);
                        let v0 = _mm512_min_ps(_mm512_max_ps(v0, lo), hi);
                        let v1 = _mm512_min_ps(_mm512_max_ps(v1, lo), hi);
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
mod tests {
    use super::*;

    fn case(positions: usize, cin: usize, cout: usize, clamp: bool, xl: Layout, yl: Layout) {
        // A signed activation (offset 0) and a ReLU's non-negative one (offset -127).
        for offset in [0.0, -127.0] {
            case_at(positions, cin, cout, clamp, xl, yl, offset);
        }
    }

    fn case_at(
        positions: usize,
        cin: usize,
        cout: usize,
        clamp: bool,
        xl: Layout,
        yl: Layout,
        offset: f32,
    ) {
        // Values past +-127 steps too, so the clip is exercised; an exact half step too.
        let inv = 40.0;
        let mut x: Vec<f32> = (0..positions * cin)
            .map(|i| ((i as f32) * 0.173).sin() * 4.0)
            .map(|v| if offset < 0.0 { v.abs() * 2.0 } else { v })
            .collect();
        if let Some(v) = x.get_mut(1) {
            *v = 2.5 / inv;
        }
        let w: Vec<i8> = (0..cout * cin)
            .map(|i| (((i as f32) * 0.057).cos() * 127.0) as i8)
            .collect();
        let scale: Vec<f32> = (0..cout).map(|o| 1e-3 * (1.0 + o as f32 * 0.1)).collect();
        let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.01 - 0.1).collect();
        let (lo, hi) = if clamp {
            (0.0, 6.0)
        } else {
            (f32::NEG_INFINITY, f32::INFINITY)
        };
        let e = QuantEpilogue::new(inv, offset, &scale, &bias, lo, hi);
        let pw = PackedI8::from_oi(&w, cout, cin);
        let mut got = vec![f32::NAN; positions * cout + 3];
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
                // Independent of the kernel's helpers: f64 rounding half to even.
                let mut acc = 0i64;
                for i in 0..cin {
                    let q = ((xi(p, i) * inv) as f64 + offset as f64)
                        .round_ties_even()
                        .clamp(-127.0, 127.0);
                    acc += q as i64 * w[o * cin + i] as i64;
                }
                let want = (acc as f32 * scale[o] + bias[o]).max(lo).min(hi);
                let g = got[out_at(yl, positions, cout, p, o)];
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{positions}x{cin}->{cout} {xl:?}->{yl:?} offset {offset}: [{p}, {o}] {g} vs {want}"
                );
            }
        }
        assert!(
            got[positions * cout..].iter().all(|v| v.is_nan()),
            "wrote past the output"
        );
    }

    #[test]
    fn matches_the_integer_reference_exactly_on_mobilenet_shapes_tails_and_layouts() {
        crate::kernels::pointwise::tests::each_test_case(&[(18, 40), (960, 20)], case);
    }

    #[test]
    fn quantize_rounds_half_to_even_and_clips_like_tracts_plan() {
        assert_eq!(quantize(2.5, 1.0, 0.0), 2);
        assert_eq!(quantize(3.5, 1.0, 0.0), 4);
        assert_eq!(quantize(-2.5, 1.0, 0.0), -2);
        assert_eq!(quantize(1000.0, 1.0, 0.0), 127);
        assert_eq!(quantize(-1e30, 1.0, 0.0), -127);
        assert_eq!(quantize(0.3, 10.0, 0.0), 3);
        // Non-negative activations: [0, 254] steps onto -127..=127; the parity rule is
        // that of the shifted value (2.5 - 127 = -124.5 -> -124, 3.5 - 127 -> -124).
        assert_eq!(quantize(0.0, 1.0, -127.0), -127);
        assert_eq!(quantize(2.5, 1.0, -127.0), -124);
        assert_eq!(quantize(3.5, 1.0, -127.0), -124);
        assert_eq!(quantize(254.0, 1.0, -127.0), 127);
        assert_eq!(quantize(1e30, 1.0, -127.0), 127);
    }
}
