//! linesight's own CPU kernels, registered into tract's kernel registry
//! (`tract_linalg::routines`, an `inventory` collection): tract asks the registry which
//! kernel this machine runs for a function, so a kernel submitted here is used by tract's
//! own ops, with no fork of tract.
//!
//! - [`depthwise`]: a channel-inner depthwise convolution for x86-64 (AVX-512F, and AVX2 +
//!   FMA). tract 0.23.9 ships this kernel for ARM64 (NEON), WASM and RISC-V only; on x86 its
//!   depthwise convolutions stay NCHW with a 256-bit non-FMA kernel along W, and strided
//!   layers and image edges go scalar. With a `DepthwiseC` kernel registered, tract's own
//!   declutter pass moves depthwise convolutions of 16+ channels to channel-last (the layout
//!   change propagates through the 1x1 convolutions around them), exactly as on ARM64.
//!
//! - [`pointwise`] and [`pointwise_i8`]: 1x1 convolutions, f32 (AVX-512F) and the int8
//!   layers of an int8 bundle (AVX-512 VNNI), put into tract's decluttered graph as ops of
//!   their own by [`graph`].
//!
//! Everything here is x86-64 only (`cfg(target_arch)`), and each kernel declares the
//! instruction-set features it needs, which tract checks at run time against the CPU: an
//! ARM64 box keeps tract's own NEON kernels, an x86 CPU without AVX2 + FMA keeps tract's
//! portable path.

pub mod depthwise;
pub mod graph;
pub mod pointwise;
pub mod pointwise_i8;

/// The kernels of this module that tract would run on this machine, by name (for `bench` and
/// the tests: registration through `inventory` is invisible otherwise). Empty on a machine
/// where none applies.
pub fn active() -> Vec<&'static str> {
    use tract_linalg::routines::{best_for, Func};
    use tract_onnx::prelude::DatumType;
    let isa = tract_linalg::isa::native();
    let mut names: Vec<&'static str> = [Func::DepthwiseC]
        .into_iter()
        .filter_map(|f| best_for(f, DatumType::F32, &isa))
        .map(|r| r.name())
        .filter(|n| n.starts_with(depthwise::NAME_PREFIX))
        .collect();
    if pointwise::vectorised() {
        names.push("linesight_avx512f_pointwise_f32");
    }
    if pointwise_i8::vectorised() {
        names.push("linesight_avx512vnni_pointwise_i8");
    }
    names
}
