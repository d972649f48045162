//! `linesight-edge bench --pipeline`: end-to-end frames/s of the run loop (synthetic source ->
//! station copy -> preprocess -> infer -> decide -> JSON line, null sink) against bare
//! [`Engine::infer`] on the same bundle, interleaved round by round in one process, with
//! medians. The difference is what the pipeline costs on top of the model.

use crate::commands::run::load_bundle;
use crate::engine::Engine;
use crate::metrics::{self, Metrics};
use crate::notify::Notifier;
use crate::run_loop::{self, DecisionOptions, LoopOptions, Pipeline};
use crate::sink::jsonl::{JsonlSink, SinkSpec};
use crate::source::synthetic::SyntheticSource;
use crate::source::FrameSource;
use anyhow::{Context, Result};
use linesight_shared::preprocess::Preprocessor;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct PipelineSettings {
    pub bundle: Option<PathBuf>,
    pub root: PathBuf,
    /// Tract threads.
    pub threads: usize,
    /// Frames per round and variant.
    pub frames: u64,
    pub rounds: usize,
    /// Synthetic frame size (the pipeline resizes it to the model's input).
    pub size: (u32, u32),
    /// Where the trusted keys come from (the signature is checked and shown).
    pub trust: crate::trust::TrustSources,
}

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    /// Which build measured this ([`crate::build_info`]).
    pub build: crate::build_info::BuildInfo,
    pub model_id: String,
    pub bundle: String,
    /// The bundle's signature against the trusted keys.
    pub signature_check: crate::trust::SignatureReport,
    pub input_shape: Vec<usize>,
    pub frame_size: [u32; 2],
    pub frames_per_round: u64,
    pub rounds: usize,
    /// Per round, in order (raw data).
    pub bare_fps: Vec<f64>,
    pub pipeline_fps: Vec<f64>,
    pub bare_fps_median: f64,
    pub pipeline_fps_median: f64,
    /// 1 - pipeline / bare, in percent, from the medians.
    pub overhead_pct: f64,
    /// Median over rounds of 1 - pipeline / bare of the same round (pairs share the
    /// machine's state; steadier than the ratio of medians on a busy machine).
    pub overhead_paired_median_pct: f64,
    /// Per pipeline frame, the time not spent in `Engine::infer` (source, region copy,
    /// preprocessing, decision, sink, loop), and its share of the pipeline's frame time:
    /// the overhead measured from inside, insensitive to how fast inference ran.
    pub pipeline_other_ms: f64,
    pub overhead_from_stages_pct: f64,
    /// Spread: (max - min) / median, per variant, in percent.
    pub bare_spread_pct: f64,
    pub pipeline_spread_pct: f64,
    /// Mean per-stage times of the pipeline rounds (ms).
    pub preprocess_mean_ms: f64,
    pub infer_mean_ms: f64,
    pub decide_mean_ms: f64,
    pub peak_rss_bytes: Option<u64>,
    pub threads: usize,
}

/// The median (0 for an empty slice).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn spread(v: &[f64]) -> f64 {
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let m = median(v);
    if m > 0.0 {
        (hi - lo) / m * 100.0
    } else {
        0.0
    }
}

/// Runs the benchmark. Fails when the frame size is over the process's image limit, a
/// count is over [`super::MAX_COUNT`], or the bundle cannot be loaded.
pub fn run(s: &PipelineSettings) -> Result<PipelineReport> {
    super::check_size(s.size)?;
    super::check_count("--frames", s.frames)?;
    super::check_count("--rounds", s.rounds as u64)?;
    let (path, bundle) = load_bundle(s.bundle.as_deref(), &s.root)?;
    let signature_check = s.trust.check(&bundle);
    let mut engine = Engine::from_bundle(&bundle)
        .with_context(|| format!("cannot load the model in `{}`", path.display()))?;
    engine.set_threads(s.threads)?;
    let m = &bundle.manifest;
    let metrics = Arc::new(Metrics::new(Duration::from_secs(5)));
    let sink = JsonlSink::open(&SinkSpec::None, 0, 0)?;
    let mut p = Pipeline::new(
        engine,
        m,
        &[("frame".to_string(), None)],
        DecisionOptions {
            top_k: 3,
            smoothing_frames: 1,
            uncertain_band: 0.1,
        },
        sink,
        None,
        metrics.clone(),
    );
    // The bare variant's input: the first synthetic frame, preprocessed the same way.
    let mut source = SyntheticSource::new(s.size, None, false);
    source.open()?;
    let mut input = vec![0.0f32; p.engine_mut().input_len()];
    let mut logits = vec![0.0f32; p.engine_mut().output_len()];
    {
        let mut pre = Preprocessor::new(m.preprocess);
        let crate::source::Next::Frame(f) = source.next(Duration::ZERO)? else {
            anyhow::bail!("the synthetic source gave no frame");
        };
        pre.run(f.rgb, f.width, f.height, &mut input)?;
    }
    let stop = AtomicBool::new(false);
    let mut notifier = Notifier::disabled();
    let mut pipeline_seconds = 0f64;
    let mut pipeline_round = |p: &mut Pipeline, frames: u64, total: &mut f64| -> f64 {
        let opts = LoopOptions {
            max_frames: Some(frames),
            stall_timeout: Duration::from_secs(60),
            reopen_backoff: Duration::from_millis(10),
            reopen_backoff_max: Duration::from_secs(1),
        };
        let t = Instant::now();
        run_loop::run(p, &mut source, &opts, &stop, &mut notifier);
        let secs = t.elapsed().as_secs_f64();
        *total += secs;
        frames as f64 / secs
    };
    let bare_round =
        |p: &mut Pipeline, frames: u64, input: &[f32], logits: &mut [f32]| -> Result<f64> {
            let t = Instant::now();
            for _ in 0..frames {
                p.engine_mut().infer(input, logits)?;
            }
            Ok(frames as f64 / t.elapsed().as_secs_f64())
        };
    // Warm-up of both variants (first-frame resizer setup, caches, CPU clocks).
    let warm = (s.frames / 5).max(3);
    pipeline_round(&mut p, warm, &mut 0.0);
    bare_round(&mut p, warm, &input, &mut logits)?;
    let (stages_before_pre, stages_before_inf, stages_before_dec) = (
        (metrics.preprocess.mean_ms(), metrics.preprocess.count()),
        (metrics.infer.mean_ms(), metrics.infer.count()),
        (metrics.decide.mean_ms(), metrics.decide.count()),
    );
    let mut bare = Vec::new();
    let mut pipe = Vec::new();
    for round in 0..s.rounds {
        // Alternate which variant goes first, so drift hits both alike.
        if round % 2 == 0 {
            bare.push(bare_round(&mut p, s.frames, &input, &mut logits)?);
            pipe.push(pipeline_round(&mut p, s.frames, &mut pipeline_seconds));
        } else {
            pipe.push(pipeline_round(&mut p, s.frames, &mut pipeline_seconds));
            bare.push(bare_round(&mut p, s.frames, &input, &mut logits)?);
        }
        tracing::info!(
            round,
            bare = bare[round],
            pipeline = pipe[round],
            "bench round"
        );
    }
    // Stage means over the measured rounds only.
    let since = |h: &metrics::Histogram, (mean0, n0): (f64, u64)| {
        let n = h.count();
        if n > n0 {
            (h.mean_ms() * n as f64 - mean0 * n0 as f64) / (n - n0) as f64
        } else {
            0.0
        }
    };
    let (bm, pm) = (median(&bare), median(&pipe));
    let paired: Vec<f64> = bare
        .iter()
        .zip(&pipe)
        .map(|(b, p)| (1.0 - p / b) * 100.0)
        .collect();
    let infer_ms = since(&metrics.infer, stages_before_inf);
    let pipe_frames = (s.frames * s.rounds as u64).max(1) as f64;
    let frame_ms = pipeline_seconds * 1e3 / pipe_frames;
    let other_ms = frame_ms - infer_ms;
    Ok(PipelineReport {
        build: crate::build_info::BuildInfo::current(),
        model_id: m.model_id.clone(),
        bundle: path.display().to_string(),
        signature_check,
        input_shape: m.preprocess.input_shape().to_vec(),
        frame_size: [s.size.0, s.size.1],
        frames_per_round: s.frames,
        rounds: s.rounds,
        bare_fps_median: bm,
        pipeline_fps_median: pm,
        overhead_pct: if bm > 0.0 {
            (1.0 - pm / bm) * 100.0
        } else {
            0.0
        },
        overhead_paired_median_pct: median(&paired),
        pipeline_other_ms: other_ms,
        overhead_from_stages_pct: if frame_ms > 0.0 {
            other_ms / frame_ms * 100.0
        } else {
            0.0
        },
        bare_spread_pct: spread(&bare),
        pipeline_spread_pct: spread(&pipe),
        bare_fps: bare,
        pipeline_fps: pipe,
        preprocess_mean_ms: since(&metrics.preprocess, stages_before_pre),
        infer_mean_ms: infer_ms,
        decide_mean_ms: since(&metrics.decide, stages_before_dec),
        peak_rss_bytes: metrics::peak_rss_bytes(),
        threads: s.threads,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(super::median(&[]), 0.0);
    }
}
