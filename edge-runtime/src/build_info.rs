//! Which build this binary is, for benchmarks that must say so.
//!
//! A debug-assertions build of tract NaN-fills every new tensor, zero-fills packed buffers
//! and checks every node's facts at every step: MobileNetV2 runs ~1.5x slower than in a
//! release build. Speed figures come from optimised builds without debug assertions
//! (`cargo build --release`), and `linesight-edge bench` prints which build measured them.
//!
//! linesight's own profile is known at compile time (`cfg!(debug_assertions)`, and the
//! profile name and opt-level cargo gives the build script); tract's is probed at run time
//! (a fresh tensor is NaN-filled only when tract-data was built with debug assertions), since
//! a profile may set dependencies apart (`[profile.dev.package."*"]`).

use serde::Serialize;
use tract_onnx::prelude::*;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    /// Cargo's base profile: `release` or `debug` (a custom profile reports the one it
    /// inherits from).
    pub profile: &'static str,
    /// linesight's opt-level (`0`..`3`, `s`, `z`).
    pub opt_level: &'static str,
    /// Debug assertions in linesight's own crates.
    pub debug_assertions: bool,
    /// Debug assertions in tract (probed: a new tensor comes NaN-filled).
    pub tract_debug_assertions: bool,
    /// The target CPU architecture.
    pub arch: &'static str,
}

impl BuildInfo {
    /// This binary's build.
    pub fn current() -> Self {
        BuildInfo {
            profile: env!("LINESIGHT_PROFILE"),
            opt_level: env!("LINESIGHT_OPT_LEVEL"),
            debug_assertions: cfg!(debug_assertions),
            tract_debug_assertions: tract_debug_assertions(),
            arch: std::env::consts::ARCH,
        }
    }

    /// True when the speed figures of this build are those of a box: optimised, and no
    /// debug assertions anywhere.
    pub fn fit_for_benchmarks(&self) -> bool {
        !self.debug_assertions && !self.tract_debug_assertions && self.opt_level == "3"
    }

    /// One line: the build, and a loud warning when its figures are not the box's.
    pub fn describe(&self) -> String {
        let line = format!(
            "build: {} profile, opt-level {}, debug assertions {} (linesight) / {} (tract), {}",
            self.profile,
            self.opt_level,
            on_off(self.debug_assertions),
            on_off(self.tract_debug_assertions),
            self.arch
        );
        if self.fit_for_benchmarks() {
            line
        } else {
            format!(
                "{line}\nWARNING: NOT A BENCHMARK BUILD: debug assertions or a low opt-level make tract \
                 ~1.5x slower than on a box; build with `cargo build --release` for speed figures"
            )
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "ON"
    } else {
        "off"
    }
}

/// tract-data fills a new f32 tensor with NaN when built with debug assertions, and leaves
/// it uninitialised otherwise. 64 canonical NaNs from an allocator by chance do not happen.
fn tract_debug_assertions() -> bool {
    // SAFETY: the tensor is only read as bits, never as meaningful values.
    let t = unsafe { Tensor::uninitialized::<f32>(&[64]) };
    t.ok()
        .and_then(|t| {
            t.try_as_plain_ram().ok().and_then(|v| {
                v.as_slice::<f32>()
                    .ok()
                    .map(|s| s.iter().all(|x| x.to_bits() == f32::NAN.to_bits()))
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_own_build() {
        let b = BuildInfo::current();
        assert_eq!(b.debug_assertions, cfg!(debug_assertions));
        assert!(["debug", "release"].contains(&b.profile), "{b:?}");
        assert!(!b.opt_level.is_empty());
        // tract is built like us unless a profile sets dependencies apart; the workspace
        // profiles do not (yet), so the probe must agree with our own flag.
        assert_eq!(b.tract_debug_assertions, cfg!(debug_assertions), "{b:?}");
        let text = b.describe();
        assert_eq!(
            text.contains("NOT A BENCHMARK BUILD"),
            !b.fit_for_benchmarks(),
            "{text}"
        );
    }
}
