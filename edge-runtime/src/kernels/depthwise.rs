//! Channel-inner depthwise convolution for x86-64, registered as tract's `DepthwiseC` kernel
//! (`tract_linalg::routines::DepthwiseCF32`, the contract tract's ARM64 kernel implements).
//!
//! One call computes `len` output positions of `channels` contiguous channels each: point
//! `i`, channel `c` is `bias[c]` plus, over the taps `t`,
//! `kernel[tap_indices[t] * k_stride + c] * input[i * in_stride + offsets[t] + c]`.
//!
//! Written here rather than taken from a crate: it is the body of a tract routine with
//! tract's own calling contract, and no crate offers a channel-last depthwise kernel with
//! arbitrary tap offsets (tract hands over only the taps inside the image at the borders).
//!
//! How it is fast: channels are the vector lanes (16 per AVX-512 register, 8 per AVX2
//! register), a block's taps stay in registers for every position of the run (the common tap
//! counts, 9 / 6 / 4 / 3 / 2 / 1 for a 3x3 kernel inside and at the borders of the image, are
//! compiled each with its own count), several positions run at once and each output sums
//! its taps on two chains, so the FMA units are not waiting on one chain's latency. Every
//! stride works the same way (a strided layer only steps further in `input`). The channel
//! tail is masked, not scalar.
//!
//! The sums use FMA and another order than tract's scalar loop, so the results differ from
//! tract's portable path in the last bits (measured against a plain f64 reference in the
//! tests below, and end to end by the exporter's parity check against candle).

/// Every kernel of this module is named with this prefix (see [`super::active`]).
pub const NAME_PREFIX: &str = "linesight_";

#[cfg(target_arch = "x86_64")]
pub use x86::{depthwise_c_avx512, depthwise_c_fma};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use tract_linalg::isa::{Arch, Isa, IsaReq};
    use tract_linalg::routines::{Func, Routine, RoutineFactory};
    use tract_onnx::tract_core::internal::inventory;

    inventory::submit! {
        Routine {
            func: Func::DepthwiseC,
            arch: Some(Arch::X86_64),
            isa: IsaReq::ANY.needing(&[Isa::X86_64Avx512f]),
            boost: 0,
            round_trip: false,
            factory: RoutineFactory::DepthwiseCF32 {
                name: "linesight_avx512f_depthwise_c_f32",
                run: depthwise_c_avx512,
            },
        }
    }

    inventory::submit! {
        Routine {
            func: Func::DepthwiseC,
            arch: Some(Arch::X86_64),
            isa: IsaReq::ANY.needing(&[Isa::X86_64Avx2, Isa::X86_64Fma]),
            boost: 0,
            round_trip: false,
            factory: RoutineFactory::DepthwiseCF32 {
                name: "linesight_fma_depthwise_c_f32",
                run: depthwise_c_fma,
            },
        }
    }

    /// Where one call reads and writes (see the module documentation).
    #[derive(Clone, Copy)]
    struct Run {
        input: *const f32,
        output: *mut f32,
        kernel: *const f32,
        bias: *const f32,
        channels: usize,
        k_stride: usize,
        len: usize,
        in_stride: isize,
        out_stride: isize,
    }

    /// One entry point of tract's `DepthwiseCF32` contract: the call's operands into a
    /// [`Run`], then the kernel compiled for the tap count (the common counts of a 3x3
    /// kernel inside and at the borders of the image), or the any-count one.
    macro_rules! entry {
        ($(#[$doc:meta])* $name:ident, $taps:ident, $any:ident) => {
            $(#[$doc])*
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name(
                input: *const f32,
                output: *mut f32,
                kernel: *const f32,
                tap_indices: &[usize],
                offsets: &[isize],
                bias: *const f32,
                channels: usize,
                k_stride: usize,
                len: usize,
                in_stride: isize,
                out_stride: isize,
            ) {
                let r = Run {
                    input,
                    output,
                    kernel,
                    bias,
                    channels,
                    k_stride,
                    len,
                    in_stride,
                    out_stride,
                };
                // SAFETY: the caller's contract, passed on.
                unsafe {
                    match tap_indices.len().min(offsets.len()) {
                        9 => $taps::<9>(r, tap_indices, offsets),
                        6 => $taps::<6>(r, tap_indices, offsets),
                        4 => $taps::<4>(r, tap_indices, offsets),
                        3 => $taps::<3>(r, tap_indices, offsets),
                        2 => $taps::<2>(r, tap_indices, offsets),
                        1 => $taps::<1>(r, tap_indices, offsets),
                        _ => $any(r, tap_indices, offsets),
                    }
                }
            }
        };
    }

    entry!(
        /// The AVX-512F kernel.
        ///
        /// # Safety
        /// The CPU has AVX-512F; the pointers and strides satisfy tract's `DepthwiseCF32`
        /// contract (every tap of every position and channel readable, every output
        /// writable); `tap_indices` and `offsets` have the same length.
        depthwise_c_avx512,
        avx512_taps,
        avx512_any
    );

    entry!(
        /// The AVX2 + FMA kernel (x86-64 CPUs without AVX-512).
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA; otherwise as [`depthwise_c_avx512`].
        depthwise_c_fma,
        fma_taps,
        fma_any
    );

    #[inline(always)]
    unsafe fn mask16(rest: usize) -> __mmask16 {
        if rest >= 16 {
            0xffff
        } else {
            ((1u32 << rest) - 1) as __mmask16
        }
    }

    /// `N` taps: the block's taps in registers, four positions at a time.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_taps<const N: usize>(r: Run, tap_indices: &[usize], offsets: &[isize]) {
        let mut koff = [0usize; N];
        let mut xoff = [0isize; N];
        for t in 0..N {
            koff[t] = tap_indices[t] * r.k_stride;
            xoff[t] = offsets[t];
        }
        let mut c = 0;
        while c < r.channels {
            let m = unsafe { mask16(r.channels - c) };
            unsafe {
                let mut w = [_mm512_setzero_ps(); N];
                for t in 0..N {
                    w[t] = _mm512_maskz_loadu_ps(m, r.kernel.add(koff[t] + c));
                }
                let b = _mm512_maskz_loadu_ps(m, r.bias.add(c));
                let ib = r.input.add(c);
                let ob = r.output.add(c);
                let mut i = 0usize;
                while i + 4 <= r.len {
                    let p: [*const f32; 4] =
                        std::array::from_fn(|u| ib.offset((i + u) as isize * r.in_stride));
                    let mut even = [b; 4];
                    let mut odd = [_mm512_setzero_ps(); 4];
                    for t in 0..N {
                        for u in 0..4 {
                            let x = _mm512_maskz_loadu_ps(m, p[u].offset(xoff[t]));
                            if t % 2 == 0 {
                                even[u] = _mm512_fmadd_ps(x, w[t], even[u]);
                            } else {
                                odd[u] = _mm512_fmadd_ps(x, w[t], odd[u]);
                            }
                        }
                    }
                    for u in 0..4 {
                        _mm512_mask_storeu_ps(
                            ob.offset((i + u) as isize * r.out_stride),
                            m,
                            _mm512_add_ps(even[u], odd[u]),
                        );
                    }
                    i += 4;
                }
                while i < r.len {
                    let p = ib.offset(i as isize * r.in_stride);
                    let (mut even, mut odd) = (b, _mm512_setzero_ps());
                    for t in 0..N {
                        let x = _mm512_maskz_loadu_ps(m, p.offset(xoff[t]));
                        if t % 2 == 0 {
                            even = _mm512_fmadd_ps(x, w[t], even);
                        } else {
                            odd = _mm512_fmadd_ps(x, w[t], odd);
                        }
                    }
                    _mm512_mask_storeu_ps(
                        ob.offset(i as isize * r.out_stride),
                        m,
                        _mm512_add_ps(even, odd),
                    );
                    i += 1;
                }
            }
            c += 16;
        }
    }

    /// Any other tap count (5x5 and larger kernels, their borders): taps read from memory.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_any(r: Run, tap_indices: &[usize], offsets: &[isize]) {
        let mut c = 0;
        while c < r.channels {
            let m = unsafe { mask16(r.channels - c) };
            unsafe {
                let b = _mm512_maskz_loadu_ps(m, r.bias.add(c));
                for i in 0..r.len {
                    let p = r.input.add(c).offset(i as isize * r.in_stride);
                    let (mut even, mut odd) = (b, _mm512_setzero_ps());
                    for (t, (&k, &o)) in tap_indices.iter().zip(offsets).enumerate() {
                        let x = _mm512_maskz_loadu_ps(m, p.offset(o));
                        let w = _mm512_maskz_loadu_ps(m, r.kernel.add(k * r.k_stride + c));
                        if t % 2 == 0 {
                            even = _mm512_fmadd_ps(x, w, even);
                        } else {
                            odd = _mm512_fmadd_ps(x, w, odd);
                        }
                    }
                    _mm512_mask_storeu_ps(
                        r.output.add(c).offset(i as isize * r.out_stride),
                        m,
                        _mm512_add_ps(even, odd),
                    );
                }
            }
            c += 16;
        }
    }

    /// Lane mask for `_mm256_maskload_ps`: the first `min(rest, 8)` lanes.
    #[inline(always)]
    unsafe fn mask8(rest: usize) -> __m256i {
        let n = rest.min(8) as i32;
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }

    /// `N` taps, two positions at a time (16 ymm registers: the taps, four sums, the bias).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_taps<const N: usize>(r: Run, tap_indices: &[usize], offsets: &[isize]) {
        let mut koff = [0usize; N];
        let mut xoff = [0isize; N];
        for t in 0..N {
            koff[t] = tap_indices[t] * r.k_stride;
            xoff[t] = offsets[t];
        }
        let mut c = 0;
        while c < r.channels {
            unsafe {
                let m = mask8(r.channels - c);
                let mut w = [_mm256_setzero_ps(); N];
                for t in 0..N {
                    w[t] = _mm256_maskload_ps(r.kernel.add(koff[t] + c), m);
                }
                let b = _mm256_maskload_ps(r.bias.add(c), m);
                let ib = r.input.add(c);
                let ob = r.output.add(c);
                let mut i = 0usize;
                while i + 2 <= r.len {
                    let p: [*const f32; 2] =
                        std::array::from_fn(|u| ib.offset((i + u) as isize * r.in_stride));
                    let mut even = [b; 2];
                    let mut odd = [_mm256_setzero_ps(); 2];
                    for t in 0..N {
                        for u in 0..2 {
                            let x = _mm256_maskload_ps(p[u].offset(xoff[t]), m);
                            if t % 2 == 0 {
                                even[u] = _mm256_fmadd_ps(x, w[t], even[u]);
                            } else {
                                odd[u] = _mm256_fmadd_ps(x, w[t], odd[u]);
                            }
                        }
                    }
                    for u in 0..2 {
                        _mm256_maskstore_ps(
                            ob.offset((i + u) as isize * r.out_stride),
                            m,
                            _mm256_add_ps(even[u], odd[u]),
                        );
                    }
                    i += 2;
                }
                if i < r.len {
                    let p = ib.offset(i as isize * r.in_stride);
                    let (mut even, mut odd) = (b, _mm256_setzero_ps());
                    for t in 0..N {
                        let x = _mm256_maskload_ps(p.offset(xoff[t]), m);
                        if t % 2 == 0 {
                            even = _mm256_fmadd_ps(x, w[t], even);
                        } else {
                            odd = _mm256_fmadd_ps(x, w[t], odd);
                        }
                    }
                    _mm256_maskstore_ps(
                        ob.offset(i as isize * r.out_stride),
                        m,
                        _mm256_add_ps(even, odd),
                    );
                }
            }
            c += 8;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_any(r: Run, tap_indices: &[usize], offsets: &[isize]) {
        let mut c = 0;
        while c < r.channels {
            unsafe {
                let m = mask8(r.channels - c);
                let b = _mm256_maskload_ps(r.bias.add(c), m);
                for i in 0..r.len {
                    let p = r.input.add(c).offset(i as isize * r.in_stride);
                    let (mut even, mut odd) = (b, _mm256_setzero_ps());
                    for (t, (&k, &o)) in tap_indices.iter().zip(offsets).enumerate() {
                        let x = _mm256_maskload_ps(p.offset(o), m);
                        let w = _mm256_maskload_ps(r.kernel.add(k * r.k_stride + c), m);
                        if t % 2 == 0 {
                            even = _mm256_fmadd_ps(x, w, even);
                        } else {
                            odd = _mm256_fmadd_ps(x, w, odd);
                        }
                    }
                    _mm256_maskstore_ps(
                        r.output.add(c).offset(i as isize * r.out_stride),
                        m,
                        _mm256_add_ps(even, odd),
                    );
                }
            }
            c += 8;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    type Kernel = unsafe fn(
        *const f32,
        *mut f32,
        *const f32,
        &[usize],
        &[isize],
        *const f32,
        usize,
        usize,
        usize,
        isize,
        isize,
    );

    /// One case: `channels` channels of a `k_stride`-strided kernel, `len` positions `in_stride`
    /// apart, taps at `offsets` from each position; compared with an f64 sum.
    fn check(ker: Kernel, taps: usize, channels: usize, len: usize, stride: usize) {
        let k_stride = channels + 3; // a block of a wider kernel, as tract's threads pass it
        let in_stride = (channels + 5) * stride;
        let out_stride = channels + 2;
        let tap_indices: Vec<usize> = (0..taps).map(|t| (t * 7) % (taps + 2)).collect();
        let offsets: Vec<isize> = (0..taps)
            .map(|t| (t as isize - taps as isize / 2) * (channels as isize + 5))
            .collect();
        let margin = taps * (channels + 5) + channels;
        let n_in = 2 * margin + len * in_stride + channels;
        let input: Vec<f32> = (0..n_in).map(|i| ((i as f32) * 0.37).sin()).collect();
        let kernel: Vec<f32> = (0..(taps + 2) * k_stride)
            .map(|i| ((i as f32) * 0.11).cos())
            .collect();
        let bias: Vec<f32> = (0..channels).map(|c| c as f32 * 0.01 - 0.2).collect();
        let mut output = vec![f32::NAN; len * out_stride + channels];
        unsafe {
            ker(
                input.as_ptr().add(margin),
                output.as_mut_ptr(),
                kernel.as_ptr(),
                &tap_indices,
                &offsets,
                bias.as_ptr(),
                channels,
                k_stride,
                len,
                in_stride as isize,
                out_stride as isize,
            )
        };
        for i in 0..len {
            for c in 0..channels {
                let mut want = bias[c] as f64;
                for (&k, &o) in tap_indices.iter().zip(&offsets) {
                    let x = input[(margin as isize + (i * in_stride) as isize + o) as usize + c];
                    want += kernel[k * k_stride + c] as f64 * x as f64;
                }
                let got = output[i * out_stride + c];
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "taps {taps} channels {channels} len {len} stride {stride}: point {i} channel {c}: {got} vs {want}"
                );
            }
            // Between the runs nothing is written.
            for c in channels..out_stride.min(output.len() - i * out_stride) {
                assert!(
                    output[i * out_stride + c].is_nan(),
                    "wrote past channel {channels}"
                );
            }
        }
    }

    fn check_all(ker: Kernel) {
        for taps in [1, 2, 3, 4, 5, 6, 9, 25] {
            for channels in [1, 7, 8, 15, 16, 17, 31, 32, 33, 96, 100] {
                for len in [0, 1, 2, 3, 4, 5, 9, 14] {
                    for stride in [1, 2] {
                        check(ker, taps, channels, len, stride);
                    }
                }
            }
        }
    }

    #[test]
    fn avx512_matches_f64_reference() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F on this CPU: kernel not tested");
            return;
        }
        check_all(depthwise_c_avx512);
    }

    #[test]
    fn fma_matches_f64_reference() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            eprintln!("no AVX2 + FMA on this CPU: kernel not tested");
            return;
        }
        check_all(depthwise_c_fma);
    }

    #[test]
    fn registered_with_tract() {
        let x86_avx2_fma =
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let active = crate::kernels::active();
        if std::is_x86_feature_detected!("avx512f") {
            assert_eq!(active[0], "linesight_avx512f_depthwise_c_f32");
        } else if x86_avx2_fma {
            assert_eq!(active[0], "linesight_fma_depthwise_c_f32");
        }
        assert_eq!(
            tract_linalg::routines::depthwise_c_f32().is_some(),
            x86_avx2_fma
        );
    }
}
