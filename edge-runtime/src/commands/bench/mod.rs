//! `linesight-edge bench`: what one bundle costs on this box. Load time (read, verify,
//! plan, warm-up), per-image latency quantiles with preprocessing and inference measured
//! apart, peak RSS and the bundle's size, for a thread count. `--profile` adds the time
//! shares of tract's op types in one run ([`profile`]); `--pipeline` measures the run loop
//! against bare inference instead ([`pipeline`]).

pub mod pipeline;
pub mod profile;

use crate::build_info::BuildInfo;
use crate::engine::Engine;
use crate::metrics;
use crate::source::synthetic::SyntheticSource;
use crate::source::{FrameSource, Next};
use crate::trust::{SignatureReport, TrustSources};
use anyhow::{Context, Result};
use linesight_shared::bundle::Bundle;
use linesight_shared::preprocess::Preprocessor;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct BenchSettings {
    /// The bundle (None: the installed `current` under `root`).
    pub bundle: Option<PathBuf>,
    pub root: PathBuf,
    pub threads: usize,
    /// Measured images (after `warmup` unmeasured ones).
    pub iterations: usize,
    pub warmup: usize,
    /// Size of the synthetic frame that is preprocessed each time (width, height).
    pub size: (u32, u32),
    /// Also time each op of the plan (see [`profile`]).
    pub profile: bool,
    /// Where the trusted keys come from (the signature is checked and shown).
    pub trust: TrustSources,
}

/// Quantiles of one measured quantity, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles of `samples` (all zero when empty).
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Quantiles::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = (q * s.len() as f64).ceil() as usize;
            s[rank.clamp(1, s.len()) - 1]
        };
        Quantiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            mean: s.iter().sum::<f64>() / s.len() as f64,
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Which build measured this (speed figures only count from an optimised build without
    /// debug assertions: [`BuildInfo::fit_for_benchmarks`]).
    pub build: BuildInfo,
    /// linesight's own kernels tract runs on this machine (`kernels::active`).
    pub kernels: Vec<&'static str>,
    pub bundle: String,
    pub model_id: String,
    pub model_version: String,
    pub precision: String,
    pub input_shape: Vec<usize>,
    /// Size of the bundle file and of the ONNX model inside it.
    pub bundle_bytes: u64,
    pub onnx_bytes: u64,
    pub threads: usize,
    pub iterations: usize,
    pub frame_size: [u32; 2],
    /// The bundle's signature against the trusted keys (measured whatever it is; the
    /// binary warns on stderr when it is not valid).
    pub signature_check: SignatureReport,
    /// Read + verify + plan + warm-up, and each part: reading the file; checksum, model
    /// hash and signature (against the trusted keys);
    /// tract's decode, optimisation and plan with one run on zeros; the self-test vectors.
    pub load_ms: f64,
    pub load_read_ms: f64,
    pub load_verify_ms: f64,
    pub load_plan_ms: f64,
    pub load_warm_ms: f64,
    /// Per image, preprocessing + inference.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Preprocessing alone (resize, crop, normalise of a `frame_size` RGB frame).
    pub preprocess_p50_ms: f64,
    pub preprocess_p95_ms: f64,
    pub preprocess_p99_ms: f64,
    /// `Engine::infer` alone.
    pub infer_p50_ms: f64,
    pub infer_p95_ms: f64,
    pub infer_p99_ms: f64,
    /// VmHWM of this process after the run (bundle bytes, plan, buffers).
    pub peak_rss_bytes: Option<u64>,
    /// The raw per-image times (ms), in order.
    pub preprocess_ms: Vec<f64>,
    pub infer_ms: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<profile::ProfileReport>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `--size`: within the process's image limit, checked before anything is allocated (a
/// 100000x100000 frame would ask for 30 GB).
fn check_size((width, height): (u32, u32)) -> Result<()> {
    linesight_shared::decode::ImageLimits::process()
        .check(width, height)
        .map_err(|e| anyhow::anyhow!("--size: {e}"))
}

/// The most iterations, warm-up images, frames or rounds a bench takes: each is kept or
/// counted in memory (a typo of 10^13 would ask for 80 TB of timings).
pub const MAX_COUNT: u64 = 10_000_000;

/// Fails when a count argument is above [`MAX_COUNT`], naming the flag.
fn check_count(flag: &str, n: u64) -> Result<()> {
    if n > MAX_COUNT {
        anyhow::bail!("{flag} {n} is more than the {MAX_COUNT} a bench takes");
    }
    Ok(())
}

/// Loads the bundle (timing each step) and measures it. Fails when the frame size is over
/// the process's image limit, a count is over [`MAX_COUNT`], the bundle cannot be read,
/// verified or loaded, or an inference fails.
pub fn run(s: &BenchSettings) -> Result<BenchReport> {
    check_size(s.size)?;
    check_count("--iterations", s.iterations as u64)?;
    check_count("--warmup", s.warmup as u64)?;
    let path = match &s.bundle {
        Some(p) => p.clone(),
        None => crate::commands::run::load_bundle(None, &s.root)?.0,
    };
    let t = Instant::now();
    let bytes =
        linesight_shared::bundle::read_file_bytes(&path).context("cannot read the bundle")?;
    let load_read = t.elapsed();

    let t = Instant::now();
    let bundle = Bundle::from_bytes(&bytes)
        .with_context(|| format!("cannot use bundle `{}`", path.display()))?;
    let signature_check = s.trust.check(&bundle);
    let load_verify = t.elapsed();
    let bundle_bytes = bytes.len() as u64;
    drop(bytes);

    let t = Instant::now();
    let mut engine = Engine::from_bundle(&bundle)
        .with_context(|| format!("cannot load the model in `{}`", path.display()))?;
    engine.set_threads(s.threads)?;
    let load_plan = t.elapsed();

    let t = Instant::now();
    engine
        .self_test(&bundle.manifest)
        .with_context(|| format!("bundle `{}` fails its self-test", path.display()))?;
    let load_warm = t.elapsed();

    let m = &bundle.manifest;
    let mut source = SyntheticSource::new(s.size, None, false);
    source.open()?;
    let Next::Frame(frame) = source.next(Duration::ZERO)? else {
        anyhow::bail!("the synthetic source gave no frame");
    };
    let (rgb, width, height) = (frame.rgb.to_vec(), frame.width, frame.height);
    let mut pre = Preprocessor::new(m.preprocess);
    let mut input = vec![0.0f32; engine.input_len()];
    let mut logits = vec![0.0f32; engine.output_len()];
    let mut pre_ms = Vec::with_capacity(s.iterations);
    let mut inf_ms = Vec::with_capacity(s.iterations);
    for i in 0..s.warmup + s.iterations {
        let t0 = Instant::now();
        pre.run(&rgb, width, height, &mut input)?;
        let t1 = Instant::now();
        engine.infer(&input, &mut logits)?;
        let t2 = Instant::now();
        if i >= s.warmup {
            pre_ms.push(ms(t1 - t0));
            inf_ms.push(ms(t2 - t1));
        }
    }
    let total: Vec<f64> = pre_ms.iter().zip(&inf_ms).map(|(a, b)| a + b).collect();
    let (tq, pq, iq) = (
        Quantiles::of(&total),
        Quantiles::of(&pre_ms),
        Quantiles::of(&inf_ms),
    );
    let profile = if s.profile {
        Some(profile::run(&mut engine, &input, profile::RUNS)?)
    } else {
        None
    };
    Ok(BenchReport {
        build: BuildInfo::current(),
        kernels: crate::kernels::active(),
        bundle: path.display().to_string(),
        model_id: m.model_id.clone(),
        model_version: m.model_version.clone(),
        precision: m.precision.to_string(),
        input_shape: m.preprocess.input_shape().to_vec(),
        bundle_bytes,
        onnx_bytes: bundle.model.len() as u64,
        signature_check,
        threads: engine.threads(),
        iterations: s.iterations,
        frame_size: [width, height],
        load_ms: ms(load_read + load_verify + load_plan + load_warm),
        load_read_ms: ms(load_read),
        load_verify_ms: ms(load_verify),
        load_plan_ms: ms(load_plan),
        load_warm_ms: ms(load_warm),
        p50_ms: tq.p50,
        p95_ms: tq.p95,
        p99_ms: tq.p99,
        mean_ms: tq.mean,
        preprocess_p50_ms: pq.p50,
        preprocess_p95_ms: pq.p95,
        preprocess_p99_ms: pq.p99,
        infer_p50_ms: iq.p50,
        infer_p95_ms: iq.p95,
        infer_p99_ms: iq.p99,
        peak_rss_bytes: metrics::peak_rss_bytes(),
        preprocess_ms: pre_ms,
        infer_ms: inf_ms,
        profile,
    })
}

impl BenchReport {
    /// The human-readable summary (`bench` without `--json`).
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}\nlinesight kernels: {}\n",
            self.build.describe(),
            if self.kernels.is_empty() {
                "none on this CPU (tract's own)".to_string()
            } else {
                self.kernels.join(", ")
            }
        );
        out += &format!(
            "{} {} ({}, {:?}, {} threads), bundle {:.1} MB (ONNX {:.1} MB)\n\
             load {:.1} ms: read {:.1}, verify {:.1}, plan {:.1}, warm-up (self-test) {:.1}\n\
             per image over {} iterations (ms):  p50 {:.2}  p95 {:.2}  p99 {:.2}\n\
             \x20 preprocess ({}x{} frame):          p50 {:.2}  p95 {:.2}  p99 {:.2}\n\
             \x20 inference:                         p50 {:.2}  p95 {:.2}  p99 {:.2}\n\
             peak RSS {}\n\
             signature {}\n",
            self.model_id,
            self.model_version,
            self.precision,
            self.input_shape,
            self.threads,
            self.bundle_bytes as f64 / 1e6,
            self.onnx_bytes as f64 / 1e6,
            self.load_ms,
            self.load_read_ms,
            self.load_verify_ms,
            self.load_plan_ms,
            self.load_warm_ms,
            self.iterations,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.frame_size[0],
            self.frame_size[1],
            self.preprocess_p50_ms,
            self.preprocess_p95_ms,
            self.preprocess_p99_ms,
            self.infer_p50_ms,
            self.infer_p95_ms,
            self.infer_p99_ms,
            self.peak_rss_bytes
                .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                .unwrap_or_else(|| "unknown (no /proc/self/status)".into()),
            self.signature_check.detail,
        );
        if let Some(p) = &self.profile {
            out.push_str(&p.render(profile::TOP));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Quantiles;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let q = Quantiles::of(&v);
        assert_eq!((q.p50, q.p95, q.p99), (50.0, 95.0, 99.0));
        assert_eq!((q.min, q.max, q.mean), (1.0, 100.0, 50.5));
        let one = Quantiles::of(&[3.0]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert_eq!(Quantiles::of(&[]), Quantiles::default());
    }
}
