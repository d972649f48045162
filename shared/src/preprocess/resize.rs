//! The crop-and-resize convolution of [`super::Preprocessor`], with its coefficients
//! computed once per source size and kept.
//!
//! This reproduces fast_image_resize 6.1's `ResizeAlg::Convolution` for `U8x3` images
//! operation for operation (f64 coefficients as in its `precompute_coefficients`, the
//! same i16 fixed-point normalisation and precision choice as its `Normalizer16`, the
//! vertical pass first into a u8 temporary image and then the horizontal pass, the same
//! rounding and clipping), so its output is bit-identical; fast_image_resize's SIMD paths
//! are exact integer arithmetic over the same coefficients, so they agree with its native
//! path and with this one. The unit tests compare it with fast_image_resize itself on
//! real-photo-like content, many sizes, crops and both filters.
//!
//! Why not call fast_image_resize: it recomputes and reallocates its coefficients on
//! every call (454 allocations, 39 KB per 640x480 -> 224 resize, measured by
//! `edge-runtime/tests/alloc.rs`) and offers no way to keep them. Here a [`ResizePlan`]
//! is built when the source size (or crop window) changes and reused after that, so a
//! stream of same-size frames allocates nothing.

/// Fixed-point bits of the accumulator (fast_image_resize: `32 - 8 - 2`).
const PRECISION_BITS: u8 = 32 - 8 - 2;
/// Coefficients are stored as i16 (fast_image_resize: `16 - 1`).
const MAX_COEFFS_PRECISION: u8 = 16 - 1;

/// The resampling filters the manifest can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    Bilinear,
    CatmullRom,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::CatmullRom => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::CatmullRom => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.) * x - (A + 3.)) * x * x + 1.
                } else if x < 2.0 {
                    (((x - 5.) * x + 8.) * x - 4.) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// One direction's coefficients in fixed point: for output pixel `i`, input pixels
/// `start[i] .. start[i] + len[i]` weighted by `values[offset[i] ..][.. len[i]]`.
#[derive(Debug, Clone, Default)]
struct Axis {
    precision: u8,
    start: Vec<u32>,
    offset: Vec<u32>,
    len: Vec<u32>,
    values: Vec<i16>,
}

impl Axis {
    /// fast_image_resize's `precompute_coefficients` (with `adaptive_kernel_size`, as
    /// `ResizeAlg::Convolution` uses it) followed by `Normalizer16::new`.
    fn new(in_size: u32, in0: f64, in1: f64, out_size: u32, filter: Filter) -> Axis {
        let mut axis = Axis::default();
        let scale = (in1 - in0) / out_size as f64;
        if in_size == 0 || out_size == 0 || scale <= 0. {
            return axis;
        }
        let filter_scale = scale.max(1.0);
        let filter_radius = filter.support() * filter_scale;
        let window_size = filter_radius.ceil() as usize * 2 + 1;
        let recip_filter_scale = 1.0 / filter_scale;

        // f64 weights, `window_size` per output pixel (zero padded), as fast_image_resize
        // keeps them; the padding takes part in its search for the largest weight.
        let mut coeffs: Vec<f64> = Vec::with_capacity(window_size * out_size as usize);
        let mut bounds: Vec<(u32, u32)> = Vec::with_capacity(out_size as usize);
        for out_x in 0..out_size {
            let in_center = in0 + (out_x as f64 + 0.5) * scale;
            let x_min = (in_center - filter_radius).floor().max(0.) as u32;
            let x_max = (in_center + filter_radius).ceil().min(in_size as f64) as u32;
            let cur_index = coeffs.len();
            let mut ww: f64 = 0.0;
            let center = in_center - 0.5;
            let mut bound_start = x_min;
            let mut bound_end = x_max;
            for x in x_min..x_max {
                let w = filter.weight((x as f64 - center) * recip_filter_scale);
                if x == bound_start && w == 0. {
                    bound_start += 1;
                } else {
                    coeffs.push(w);
                    ww += w;
                }
            }
            for &c in coeffs.iter().rev() {
                if bound_end <= bound_start || c != 0. {
                    break;
                }
                bound_end -= 1;
            }
            if ww != 0.0 {
                coeffs[cur_index..].iter_mut().for_each(|w| *w /= ww);
            }
            coeffs.resize(cur_index + window_size, 0.);
            bounds.push((bound_start, bound_end - bound_start));
        }

        let max_weight = coeffs
            .iter()
            .copied()
            .max_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal))
            .unwrap_or(0.0);
        let mut precision = 0u8;
        for cur_precision in 0..PRECISION_BITS {
            precision = cur_precision;
            let next_value: i32 = (max_weight * (1 << (precision + 1)) as f64).round() as i32;
            if next_value >= (1 << MAX_COEFFS_PRECISION) {
                break;
            }
        }
        axis.precision = precision;
        let fixed = (1 << precision) as f64;
        for (chunk, &(start, size)) in coeffs.chunks_exact(window_size).zip(&bounds) {
            axis.start.push(start);
            axis.offset.push(axis.values.len() as u32);
            axis.len.push(size);
            axis.values.extend(
                chunk
                    .iter()
                    .take(size as usize)
                    .map(|&v| (v * fixed).round() as i16),
            );
        }
        axis
    }

    /// The same sums with every output pixel given `win` taps (the longest), padded with
    /// zero weights and shifted left where needed so that the window stays inside
    /// `0 .. in_size`: adding zero products changes no integer sum, and a fixed tap
    /// count lets the horizontal pass unroll. None when a window does not fit.
    fn padded(&self, in_size: u32) -> Option<(usize, Vec<u32>, Vec<i16>)> {
        let win = self.len.iter().copied().max()?;
        if win == 0 || win > in_size {
            return None;
        }
        let mut starts = Vec::with_capacity(self.start.len());
        let mut values = Vec::with_capacity(self.start.len() * win as usize);
        for i in 0..self.start.len() {
            let (start, ks) = self.taps(i);
            let start = start as u32;
            let new_start = start.min(in_size - win);
            let lead = (start - new_start) as usize;
            starts.push(new_start);
            values.extend(std::iter::repeat_n(0, lead));
            values.extend_from_slice(ks);
            values.extend(std::iter::repeat_n(0, win as usize - lead - ks.len()));
        }
        Some((win as usize, starts, values))
    }

    fn taps(&self, i: usize) -> (usize, &[i16]) {
        let o = self.offset[i] as usize;
        (
            self.start[i] as usize,
            &self.values[o..o + self.len[i] as usize],
        )
    }

    fn first(&self) -> u32 {
        self.start.first().copied().unwrap_or(0)
    }

    fn end(&self) -> u32 {
        match (self.start.last(), self.len.last()) {
            (Some(s), Some(l)) => s + l,
            _ => 0,
        }
    }

    #[inline(always)]
    fn clip(&self, v: i32) -> u8 {
        (v >> self.precision).clamp(0, 255) as u8
    }
}

/// What a resize does for one (source size, crop window, destination size, filter).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlanKey {
    pub src: (u32, u32),
    /// left, top, width, height in source pixels.
    pub window: (f64, f64, f64, f64),
    pub dst: (u32, u32),
    pub filter: Filter,
}

/// Why a crop window cannot be resampled (fast_image_resize's `CropBoxError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowError {
    Negative,
    OutsideImage,
    TooLarge,
}

impl std::fmt::Display for WindowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WindowError::Negative => "the crop window has a negative width or height",
            WindowError::OutsideImage => "the crop window starts outside the image",
            WindowError::TooLarge => "the crop window extends past the image",
        })
    }
}

enum Passes {
    /// The window is the destination, pixel for pixel.
    Copy { left: usize, top: usize },
    /// Only a horizontal pass, over rows `top ..`.
    Horizontal { h: Horizontal, top: usize },
    /// Only a vertical pass, over columns `left ..`.
    Vertical { v: Axis, left: usize },
    /// Vertical pass over columns `x_first ..` into the temporary image, then horizontal.
    Both {
        v: Axis,
        h: Horizontal,
        x_first: usize,
    },
}

/// A horizontal pass's coefficients, padded to a fixed tap count when they fit.
enum Horizontal {
    Fixed {
        axis: Axis,
        win: usize,
        starts: Vec<u32>,
        values: Vec<i16>,
    },
    Any(Axis),
}

impl Horizontal {
    /// `in_size`: the width of the rows the pass reads.
    fn new(axis: Axis, in_size: u32) -> Horizontal {
        match axis.padded(in_size) {
            Some((win, starts, values)) => Horizontal::Fixed {
                axis,
                win,
                starts,
                values,
            },
            None => Horizontal::Any(axis),
        }
    }

    fn axis(&self) -> &Axis {
        match self {
            Horizontal::Fixed { axis, .. } | Horizontal::Any(axis) => axis,
        }
    }
}

/// Coefficients and scratch for one [`PlanKey`]; build once, resize many times.
pub(crate) struct ResizePlan {
    key: PlanKey,
    passes: Passes,
    /// The vertical pass's output when a horizontal pass follows.
    temp: Vec<u8>,
    /// One row of the vertical pass's accumulators.
    acc: Vec<i32>,
}

impl ResizePlan {
    pub fn key(&self) -> &PlanKey {
        &self.key
    }

    /// Plans a resize. Fails when the window does not lie inside the source.
    pub fn new(key: PlanKey) -> Result<ResizePlan, WindowError> {
        let (sw, sh) = key.src;
        let (left, top, width, height) = key.window;
        let (dw, dh) = key.dst;
        if width < 0. || height < 0. {
            return Err(WindowError::Negative);
        }
        if left >= sw as f64 || top >= sh as f64 {
            return Err(WindowError::OutsideImage);
        }
        if left + width > sw as f64 || top + height > sh as f64 {
            return Err(WindowError::TooLarge);
        }
        let integral = |v: f64| v == v.round();
        let passes = if integral(left)
            && integral(top)
            && integral(width)
            && integral(height)
            && width as u32 == dw
            && height as u32 == dh
        {
            Passes::Copy {
                left: left as usize,
                top: top as usize,
            }
        } else {
            let need_h = dw as f64 != width || !integral(left);
            let need_v = dh as f64 != height || !integral(top);
            let h = need_h.then(|| Axis::new(sw, left, left + width, dw, key.filter));
            let v = need_v.then(|| Axis::new(sh, top, top + height, dh, key.filter));
            match (h, v) {
                (Some(mut h), Some(v)) => {
                    let x_first = h.first();
                    h.start.iter_mut().for_each(|s| *s -= x_first);
                    let temp_width = h.end();
                    Passes::Both {
                        v,
                        h: Horizontal::new(h, temp_width),
                        x_first: x_first as usize,
                    }
                }
                (Some(h), None) => Passes::Horizontal {
                    h: Horizontal::new(h, sw),
                    top: top as usize,
                },
                (None, Some(v)) => Passes::Vertical {
                    v,
                    left: left as usize,
                },
                // Unreachable: both sides integral and equal to the destination is a copy.
                (None, None) => Passes::Copy {
                    left: left as usize,
                    top: top as usize,
                },
            }
        };
        let temp = match &passes {
            Passes::Both { h, .. } => {
                // The horizontal bounds were shifted by `x_first`: their end is the width.
                vec![0u8; h.axis().end() as usize * dh as usize * 3]
            }
            _ => Vec::new(),
        };
        let acc = match &passes {
            Passes::Both { h, .. } => vec![0; h.axis().end() as usize * 3],
            Passes::Vertical { .. } => vec![0; dw as usize * 3],
            _ => Vec::new(),
        };
        Ok(ResizePlan {
            key,
            passes,
            temp,
            acc,
        })
    }

    /// Resamples `src` (`key.src`, RGB u8, rows packed) into `dst` (`key.dst`, same).
    /// The caller checked both lengths. Allocates nothing.
    pub fn run(&mut self, src: &[u8], dst: &mut [u8]) {
        let (sw, _) = self.key.src;
        let (dw, dh) = self.key.dst;
        let src_stride = sw as usize * 3;
        let dst_stride = dw as usize * 3;
        match &self.passes {
            Passes::Copy { left, top } => {
                for (y, row) in dst.chunks_exact_mut(dst_stride).enumerate() {
                    let s = (top + y) * src_stride + left * 3;
                    row.copy_from_slice(&src[s..s + dst_stride]);
                }
            }
            Passes::Horizontal { h, top } => {
                horizontal(h, &src[top * src_stride..], src_stride, dst, dst_stride);
            }
            Passes::Vertical { v, left } => {
                vertical(v, src, src_stride, left * 3, dst, dst_stride, &mut self.acc);
            }
            Passes::Both { v, h, x_first } => {
                let temp_stride = self.temp.len() / dh.max(1) as usize;
                vertical(
                    v,
                    src,
                    src_stride,
                    x_first * 3,
                    &mut self.temp,
                    temp_stride,
                    &mut self.acc,
                );
                horizontal(h, &self.temp, temp_stride, dst, dst_stride);
            }
        }
    }
}

/// fast_image_resize's `vertical_u8` native pass: output row `y` is the weighted sum of
/// source rows `v.taps(y)`, over the `dst_stride` bytes from byte `x0` of each row.
/// `acc` is scratch of at least `dst_stride` values. The sums are exact integers, so the
/// order (tap-outer here, for vectorisation) does not change the result.
fn vertical(
    v: &Axis,
    src: &[u8],
    src_stride: usize,
    x0: usize,
    dst: &mut [u8],
    dst_stride: usize,
    acc: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { vertical_avx2(v, src, src_stride, x0, dst, dst_stride, acc) };
        return;
    }
    vertical_impl(v, src, src_stride, x0, dst, dst_stride, acc);
}

/// [`vertical_impl`] compiled for AVX2 (x86_64 baselines stop at SSE2; aarch64 has NEON
/// as its baseline, so the plain version vectorises there). On the 2-core x86_64 dev box:
/// 640x480 -> 224 resize 0.4-0.6 ms with it, 0.8-1.1 ms without.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_avx2(
    v: &Axis,
    src: &[u8],
    src_stride: usize,
    x0: usize,
    dst: &mut [u8],
    dst_stride: usize,
    acc: &mut [i32],
) {
    vertical_impl(v, src, src_stride, x0, dst, dst_stride, acc);
}

#[inline(always)]
fn vertical_impl(
    v: &Axis,
    src: &[u8],
    src_stride: usize,
    x0: usize,
    dst: &mut [u8],
    dst_stride: usize,
    acc: &mut [i32],
) {
    let initial = 1i32 << (v.precision - 1);
    let acc = &mut acc[..dst_stride];
    for (y, dst_row) in dst.chunks_exact_mut(dst_stride).enumerate() {
        let (first, ks) = v.taps(y);
        acc.fill(initial);
        for (r, &k) in ks.iter().enumerate() {
            let s = (first + r) * src_stride + x0;
            let row = &src[s..s + dst_stride];
            let k = k as i32;
            for (a, &c) in acc.iter_mut().zip(row) {
                // Cannot overflow (|sum| <= 255 * sum |k| < 2^31); wrapping keeps the
                // overflow checks of the dev profile out of the vectorised loop.
                *a = a.wrapping_add((c as i32).wrapping_mul(k));
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(acc.iter()) {
            *d = v.clip(a);
        }
    }
}

/// fast_image_resize's `U8x3` native horizontal pass over every row of `dst`.
fn horizontal(h: &Horizontal, src: &[u8], src_stride: usize, dst: &mut [u8], dst_stride: usize) {
    match h {
        Horizontal::Fixed {
            axis,
            win,
            starts,
            values,
        } => match win {
            1 => horizontal_fixed::<1>(axis, starts, values, src, src_stride, dst, dst_stride),
            2 => horizontal_fixed::<2>(axis, starts, values, src, src_stride, dst, dst_stride),
            3 => horizontal_fixed::<3>(axis, starts, values, src, src_stride, dst, dst_stride),
            4 => horizontal_fixed::<4>(axis, starts, values, src, src_stride, dst, dst_stride),
            5 => horizontal_fixed::<5>(axis, starts, values, src, src_stride, dst, dst_stride),
            6 => horizontal_fixed::<6>(axis, starts, values, src, src_stride, dst, dst_stride),
            7 => horizontal_fixed::<7>(axis, starts, values, src, src_stride, dst, dst_stride),
            8 => horizontal_fixed::<8>(axis, starts, values, src, src_stride, dst, dst_stride),
            _ => horizontal_any(axis, src, src_stride, dst, dst_stride),
        },
        Horizontal::Any(axis) => horizontal_any(axis, src, src_stride, dst, dst_stride),
    }
}

fn horizontal_any(h: &Axis, src: &[u8], src_stride: usize, dst: &mut [u8], dst_stride: usize) {
    let initial = 1i32 << (h.precision - 1);
    for (y, dst_row) in dst.chunks_exact_mut(dst_stride).enumerate() {
        let src_row = &src[y * src_stride..(y + 1) * src_stride];
        for (i, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let (first, ks) = h.taps(i);
            let taps = &src_row[first * 3..(first + ks.len()) * 3];
            let mut ss = [initial; 3];
            for (&k, s) in ks.iter().zip(taps.chunks_exact(3)) {
                let k = k as i32;
                ss[0] += s[0] as i32 * k;
                ss[1] += s[1] as i32 * k;
                ss[2] += s[2] as i32 * k;
            }
            px[0] = h.clip(ss[0]);
            px[1] = h.clip(ss[1]);
            px[2] = h.clip(ss[2]);
        }
    }
}

/// [`horizontal_any`] with every pixel's taps padded to `W` (see [`Axis::padded`]).
fn horizontal_fixed<const W: usize>(
    h: &Axis,
    starts: &[u32],
    values: &[i16],
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
) {
    let initial = 1i32 << (h.precision - 1);
    for (y, dst_row) in dst.chunks_exact_mut(dst_stride).enumerate() {
        let src_row = &src[y * src_stride..(y + 1) * src_stride];
        for ((px, &start), ks) in dst_row
            .chunks_exact_mut(3)
            .zip(starts)
            .zip(values.chunks_exact(W))
        {
            let s = start as usize * 3;
            let taps = &src_row[s..s + W * 3];
            let ks: &[i16; W] = match ks.try_into() {
                Ok(k) => k,
                Err(_) => unreachable!("chunks_exact(W)"),
            };
            let mut ss = [initial; 3];
            for t in 0..W {
                let k = ks[t] as i32;
                ss[0] = ss[0].wrapping_add((taps[t * 3] as i32).wrapping_mul(k));
                ss[1] = ss[1].wrapping_add((taps[t * 3 + 1] as i32).wrapping_mul(k));
                ss[2] = ss[2].wrapping_add((taps[t * 3 + 2] as i32).wrapping_mul(k));
            }
            px[0] = h.clip(ss[0]);
            px[1] = h.clip(ss[1]);
            px[2] = h.clip(ss[2]);
        }
    }
}
