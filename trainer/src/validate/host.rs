//! "On this host": the `bench` figures of the bundle (load time, latency quantiles, peak
//! RSS). Measured by the `linesight-edge` binary beside this one when it is there (the
//! program the box runs, in its own process, so the RSS is its own), else in this process
//! with the same library function (`linesight_edge::commands::bench`).

use super::report::Host;
use linesight_edge::commands::bench::{self, BenchSettings};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmeasured runs before the measured ones.
const WARMUP: usize = 5;

const NOTE: &str = "Measured on this desktop: the box's own CPU and memory decide what the line gets. Measure on the box with `linesight-edge bench --bundle MODEL.lsb` (and a release build: a dev build with debug assertions is slower).";

/// The `linesight-edge` binary beside the running one, if any.
fn sibling() -> Option<PathBuf> {
    let p = std::env::current_exe()
        .ok()?
        .with_file_name("linesight-edge");
    p.is_file().then_some(p)
}

fn cpu() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores available")
}

/// Runs the benchmark; Err holds why it could not (e.g. the self-test failed).
pub fn measure(bundle: &Path, threads: usize, iterations: usize) -> Result<Host, String> {
    let (value, measured_by, build) = match sibling() {
        Some(exe) => {
            let out = Command::new(&exe)
                .args(["--log", "warn", "bench", "--json", "--bundle"])
                .arg(bundle)
                .args(["--threads", &threads.to_string()])
                .args(["--iterations", &iterations.to_string()])
                .args(["--warmup", &WARMUP.to_string()])
                .env("LINESIGHT_NO_PROGRESS", "1")
                .output()
                .map_err(|e| format!("cannot run `{}`: {e}", exe.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "`{} bench` failed: {}",
                    exe.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with('{'))
                .unwrap_or("");
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("`{} bench --json` printed no report: {e}", exe.display()))?;
            let build = match exe
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str())
            {
                Some("release") => "release build".to_string(),
                Some("debug") => "dev profile (optimised, debug assertions on)".to_string(),
                _ => format!("`{}`", exe.display()),
            };
            (v, format!("`{}` in its own process", exe.display()), build)
        }
        None => {
            let r = bench::run(&BenchSettings {
                bundle: Some(bundle.to_path_buf()),
                root: PathBuf::new(),
                threads,
                iterations,
                warmup: WARMUP,
                size: (640, 480),
                profile: false,
                // Validate reports the signature itself; bench's own check needs no keys.
                trust: Default::default(),
            })
            .map_err(|e| format!("{e:#}"))?;
            let v = serde_json::to_value(&r).map_err(|e| e.to_string())?;
            let build = if cfg!(debug_assertions) {
                "dev profile (optimised, debug assertions on)"
            } else {
                "release build"
            };
            (
                v,
                "this process (no `linesight-edge` binary beside it; peak RSS includes the validate run so far)".to_string(),
                build.to_string(),
            )
        }
    };
    let f = |k: &str| value.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let u = |k: &str| value.get(k).and_then(|v| v.as_u64());
    Ok(Host {
        measured_by,
        build,
        threads: u("threads").unwrap_or(threads as u64),
        iterations: u("iterations").unwrap_or(iterations as u64),
        load_ms: f("load_ms"),
        p50_ms: f("p50_ms"),
        p95_ms: f("p95_ms"),
        p99_ms: f("p99_ms"),
        infer_p50_ms: f("infer_p50_ms"),
        preprocess_p50_ms: f("preprocess_p50_ms"),
        peak_rss_bytes: u("peak_rss_bytes"),
        cpu: cpu(),
        note: NOTE.to_string(),
    })
}
