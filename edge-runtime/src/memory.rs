//! Memory for a second model: what loading a bundle needs beside the model already
//! running, and what the kernel says is available.
//!
//! During a switch the box holds two models at once: `run` keeps deciding with the old one
//! while the new one loads and self-tests beside it, and `install` loads the new one to
//! self-test it while `run` may be holding the old one. Both check, before loading, that
//! the estimated need fits in `MemAvailable` (`/proc/meminfo`), and refuse with how much is
//! needed and what to free otherwise.
//!
//! The estimate ([`estimate`]) is measured, not derived: the peak RSS growth of loading
//! and self-testing a bundle in a fresh process (`linesight-edge install --json`, field
//! `load_peak_rss_growth_bytes`), on the tiny test model and the MobileNetV2 demo bundle
//! (figures in `docs/benchmarks.md`, "hot swap"). It has two parts: the model (the bundle
//! read, its ONNX copy, tract's decoded, optimized and packed weights) in proportion to the
//! model bytes, and tract's per-run intermediate results in proportion to the input
//! (42 MB per run for a 224x224 MobileNetV2, 602 allocations, see `tests/alloc.rs`).

use linesight_shared::bundle::Bundle;
use serde::Serialize;
use std::path::Path;

/// Where the kernel reports available memory.
pub const MEMINFO: &str = "/proc/meminfo";

/// Model part of the estimate: bytes of memory per byte of ONNX model (the file read, the
/// bundle's copy, tract's decoded and optimized graph with packed weights).
pub const MODEL_FACTOR: u64 = 3;
/// Activation part: bytes of memory per byte of f32 input tensor (tract allocates 42.4 MB
/// over one MobileNetV2 run for a 602 KB input, x70, not all of it live at once).
pub const ACTIVATION_FACTOR: u64 = 64;
/// Fixed part: tract's first-use setup, the engine and its state, the stations' scratch,
/// allocator slack.
pub const FIXED_BYTES: u64 = 16 << 20;
// Calibration (2026-11-29, x86-64, tract 0.23.9, `install --json` in a fresh process):
// - the tiny test model (990-byte bundle, 8x8 input) grew the peak RSS by 12.6 MB: tract's
//   fixed cost; estimate 16.8 MB (x1.33);
// - MobileNetV2 224x224 f32 bundles of 9.17-9.28 MB grew it by 60.6-63.2 MB (4 bundles);
//   estimate 3 x 9.1 (ONNX) + 64 x 0.60 + 16.8 = 81.9 MB (x1.30 the worst measured).
// `tests/it/install_bin.rs` checks the estimate covers the tiny model's measured growth.

/// What loading one bundle is estimated to need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryNeed {
    /// ONNX bytes of the model.
    pub model_bytes: u64,
    /// Bytes of one f32 input tensor.
    pub input_bytes: u64,
    /// The estimate: `MODEL_FACTOR x model + ACTIVATION_FACTOR x input + FIXED_BYTES`.
    pub estimate_bytes: u64,
}

/// The memory a bundle is estimated to need once loaded and run (see the module doc).
pub fn estimate(bundle: &Bundle) -> MemoryNeed {
    let model_bytes = bundle.model.len() as u64;
    let input_bytes = 4 * bundle
        .manifest
        .preprocess
        .input_shape()
        .iter()
        .map(|&d| d as u64)
        .product::<u64>();
    MemoryNeed {
        model_bytes,
        input_bytes,
        estimate_bytes: MODEL_FACTOR * model_bytes + ACTIVATION_FACTOR * input_bytes + FIXED_BYTES,
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut it = line.split_whitespace().skip(1);
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

/// Memory available to a new allocation without swapping (`MemAvailable`), in bytes.
/// Fails where `/proc/meminfo` cannot be read or has no `MemAvailable` (kernels before
/// 3.14).
pub fn available() -> std::io::Result<u64> {
    let text = std::fs::read_to_string(Path::new(MEMINFO))?;
    parse_mem_available(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no MemAvailable line in {MEMINFO}"),
        )
    })
}

/// Where the available figure comes from: the kernel, or a test's override.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Available {
    #[default]
    Kernel,
    /// Test hook: assume this many bytes are available.
    Override(u64),
}

impl Available {
    /// The available bytes; None (check skipped, with a warning) when the kernel does
    /// not say.
    pub fn bytes(self) -> Option<u64> {
        match self {
            Available::Override(b) => Some(b),
            Available::Kernel => match available() {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the available memory; skipping the memory check");
                    None
                }
            },
        }
    }
}

/// Not enough memory to load a second model.
#[derive(Debug, thiserror::Error)]
#[error("not enough memory to load this model beside the running one: it needs about {need_mib} MiB ({model} of model x {MODEL_FACTOR}, {input} of input x {ACTIVATION_FACTOR} for tract's intermediate results, {fixed_mib} MiB fixed) but {available_mib} MiB are available (MemAvailable, /proc/meminfo); free at least {short_mib} MiB: {hint}")]
pub struct MemoryError {
    pub need_mib: u64,
    /// The model's and the input's size, e.g. `8.7 MiB`, `588 KiB`.
    pub model: String,
    pub input: String,
    pub fixed_mib: u64,
    pub available_mib: u64,
    pub short_mib: u64,
    /// What the operator can do, which depends on who refused (install or a hot swap).
    pub hint: &'static str,
}

/// What to free when `install` is refused.
pub const INSTALL_HINT: &str = "stop other programs on this box, or stop `linesight-edge run` for the install (e.g. `systemctl stop linesight-edge`; it loads the new `current` when it starts again)";
/// What to free when a hot swap under `run` is refused.
pub const SWAP_HINT: &str = "stop other programs on this box and send SIGHUP to retry, or restart `linesight-edge run` (it then loads only the new `current`)";

/// Refuses when `need` does not fit in `available` bytes.
pub fn check(need: &MemoryNeed, available: u64, hint: &'static str) -> Result<(), MemoryError> {
    if need.estimate_bytes <= available {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    Err(MemoryError {
        need_mib: mib(need.estimate_bytes),
        model: human(need.model_bytes),
        input: human(need.input_bytes),
        fixed_mib: FIXED_BYTES >> 20,
        available_mib: available >> 20,
        short_mib: mib(need.estimate_bytes - available),
        hint,
    })
}

/// `8.7 MiB`, `588 KiB`, `200 bytes`.
fn human(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{} KiB", b.div_ceil(1 << 10))
    } else {
        format!("{b} bytes")
    }
}

/// Resident and peak resident set size of this process (`VmRSS`, `VmHWM`), in bytes;
/// None where `/proc/self/status` is not there.
pub fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       24684000 kB\nMemFree:         7390000 kB\nMemAvailable:   23859300 kB\n";
        assert_eq!(parse_mem_available(text), Some(23_859_300 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert!(available().is_ok(), "this test runs on Linux");
    }

    #[test]
    fn the_refusal_says_how_much_and_what_to_free() {
        let need = MemoryNeed {
            model_bytes: 9 << 20,
            input_bytes: 602_112,
            estimate_bytes: 100 << 20,
        };
        assert!(check(&need, 100 << 20, INSTALL_HINT).is_ok());
        let e = check(&need, 60 << 20, INSTALL_HINT)
            .unwrap_err()
            .to_string();
        for needle in [
            "needs about 100 MiB (9.0 MiB of model x 3, 588 KiB of input x 64",
            "60 MiB are available",
            "free at least 40 MiB",
            "stop `linesight-edge run`",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
