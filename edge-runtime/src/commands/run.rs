//! `linesight-edge run`: the unattended camera-to-decision loop. Loads the model (a
//! `--bundle` file or the box's installed `current`), opens the source, starts the
//! optional health endpoint and the uncertain store, tells systemd it is ready, and runs
//! [`crate::run_loop::run`] until stopped. Startup problems (no model, bad config, a
//! source that cannot be opened) fail here with a clear message; once running, the loop
//! recovers from everything the source does.
//!
//! Following `current` (no `--bundle`), it also starts the hot-swap thread
//! ([`crate::swap`]): a new `current` (seen by polling the pointer, or at once on SIGHUP)
//! is loaded and self-tested beside the running model and takes over between two frames.

use crate::config::RunSettings;
use crate::engine::Engine;
use crate::http::HttpServer;
use crate::metrics::{self, Metrics};
use crate::notify::Notifier;
use crate::run_loop::{self, DecisionOptions, EndReason, LoopOptions, Pipeline};
use crate::sink::jsonl::{JsonlSink, SinkSpec};
use crate::slots;
use crate::source;
use crate::store::UncertainStore;
use crate::swap::{self, SwapSettings, Swapper};
use anyhow::{Context, Result};
use linesight_shared::bundle::Bundle;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// What a run did (printed as JSON on stdout with `--json`, else as one line on stderr).
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub model_id: String,
    pub model_version: String,
    pub bundle: String,
    pub source: String,
    pub end: EndReason,
    pub seconds: f64,
    pub frames: u64,
    pub decisions: u64,
    /// Decisions made but not written (the sink failed): an error, `run` exits 1.
    pub decisions_lost: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub bad_frames: u64,
    pub roi_errors: u64,
    pub source_errors: u64,
    pub stalls: u64,
    pub reconnects: u64,
    pub open_failures: u64,
    pub infer_errors: u64,
    pub sink_errors: u64,
    pub stored: u64,
    pub store_errors: u64,
    /// Hot swaps applied, and new `current` models refused (the old one kept deciding).
    pub swaps: u64,
    pub swap_failures: u64,
    /// Milliseconds the last hot-swap load took beside the running model (0: none).
    pub swap_load_ms: f64,
    pub fps: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub infer_mean_ms: f64,
    pub peak_rss_bytes: Option<u64>,
    pub http: Option<String>,
}

impl RunReport {
    /// Output that should exist and does not: decisions the sink lost, a sink that could
    /// not flush, station regions skipped on frames they did not fit. `run` exits 1 then
    /// (0 when everything decided was written).
    pub fn lost_output(&self) -> bool {
        self.decisions_lost > 0 || self.sink_errors > 0 || self.roi_errors > 0
    }

    pub fn from_metrics(m: &Metrics, end: EndReason, seconds: f64) -> Self {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        let frames = l(&m.frames);
        RunReport {
            model_id: m.model_id().unwrap_or_default(),
            model_version: String::new(),
            bundle: String::new(),
            source: String::new(),
            end,
            seconds,
            frames,
            decisions: l(&m.decisions),
            decisions_lost: l(&m.decisions_lost),
            rejected: l(&m.rejected),
            dropped: l(&m.dropped),
            bad_frames: l(&m.bad_frames),
            roi_errors: l(&m.roi_errors),
            source_errors: l(&m.source_errors),
            stalls: l(&m.stalls),
            reconnects: l(&m.reconnects),
            open_failures: l(&m.open_failures),
            infer_errors: l(&m.infer_errors),
            sink_errors: l(&m.sink_errors),
            stored: l(&m.stored),
            store_errors: l(&m.store_errors),
            swaps: l(&m.swaps),
            swap_failures: l(&m.swap_failures),
            swap_load_ms: l(&m.swap_load_us) as f64 / 1e3,
            fps: if seconds > 0.0 {
                frames as f64 / seconds
            } else {
                0.0
            },
            latency_p50_ms: m.latency.quantile_ms(0.5),
            latency_p95_ms: m.latency.quantile_ms(0.95),
            infer_mean_ms: m.infer.mean_ms(),
            peak_rss_bytes: metrics::peak_rss_bytes(),
            http: None,
        }
    }
}

/// The bundle to run: `bundle` if given, else the installed `current` model under `root`.
/// Fails when neither exists or the file does not verify.
pub fn load_bundle(bundle: Option<&Path>, root: &Path) -> Result<(PathBuf, Bundle)> {
    let (path, b, _) = load_model(bundle, root)?;
    Ok((path, b))
}

/// [`load_bundle`], also returning the slot `current` named (None with `bundle`).
fn load_model(bundle: Option<&Path>, root: &Path) -> Result<(PathBuf, Bundle, Option<String>)> {
    let (path, slot) = match bundle {
        Some(p) => (p.to_path_buf(), None),
        None => {
            let current = slots::read_pointer(root, slots::CURRENT)
                .map_err(|e| {
                    anyhow::anyhow!("{e}; {}", slots::PointerError::repair_hint(root))
                })?
                .with_context(|| {
                    format!(
                        "no model: no --bundle given and no model installed under `{}` (install one with `linesight-edge install FILE`, or pass --bundle FILE / --root DIR)",
                        root.display()
                    )
                })?;
            (slots::slot_model(root, &current), Some(current))
        }
    };
    let b =
        Bundle::read(&path).with_context(|| format!("cannot use bundle `{}`", path.display()))?;
    Ok((path, b, slot))
}

/// Runs until `stop` is set (SIGTERM), `max_frames`, or the end of a finite source.
/// Fails only at startup.
pub fn run(s: &RunSettings, stop: &AtomicBool, notifier: &mut Notifier) -> Result<RunReport> {
    let metrics = Arc::new(Metrics::new(s.stall_timeout));
    // The endpoint comes up first, so /healthz says 503 while the model loads.
    let http = s
        .http
        .map(|addr| HttpServer::start(addr, metrics.clone()))
        .transpose()
        .context("cannot start the health endpoint")?;
    let (path, bundle, slot) = load_model(s.bundle.as_deref(), &s.root)?;
    if let SinkSpec::File { path: sink } = &s.sink {
        // The sink appends and rotates: none of its files may be something this run reads.
        let (current, previous) = (s.root.join(slots::CURRENT), s.root.join(slots::PREVIOUS));
        let mut inputs = vec![
            ("the bundle", path.as_path()),
            ("the `current` pointer", current.as_path()),
            ("the `previous` pointer", previous.as_path()),
        ];
        if let Some(st) = &s.store {
            inputs.push(("the uncertain store", st.dir.as_path()));
        }
        // And not the run's own config file or a trusted key it names (appending made the
        // next start fail to parse edge.toml; rotating renamed it away).
        if let Some(config) = &s.config {
            inputs.push(("the config file", config.as_path()));
        }
        for key in &s.trusted_keys {
            if let crate::trust::KeySpec::File(k) = key {
                inputs.push(("a trusted key", k.as_path()));
            }
        }
        for i in 0..=s.keep {
            let file = if i == 0 {
                sink.clone()
            } else {
                crate::sink::jsonl::rotated(sink, i)
            };
            linesight_shared::output::refuse_inputs(&file, inputs.iter().copied())
                .context("refusing the sink")?;
        }
    }
    let mut engine = Engine::from_bundle(&bundle)
        .with_context(|| format!("cannot load the model in `{}`", path.display()))?;
    engine.set_threads(s.threads)?;
    let m = &bundle.manifest;
    tracing::info!(model = %m.model_id, version = %m.model_version, bundle = %path.display(), classes = m.labels.len(), "model loaded");

    let mut src = source::build(&s.source, &s.source_options)?;
    metrics.set_source_name(src.name());
    if let Err(e) = src.open() {
        // A SIGTERM while a large folder was being listed: a stop, not a failure.
        if stop.load(Relaxed) {
            tracing::info!("stopped while opening the source");
            let mut report = RunReport::from_metrics(&metrics, EndReason::Stopped, 0.0);
            report.bundle = path.display().to_string();
            report.source = src.name().to_string();
            return Ok(report);
        }
        return Err(anyhow::Error::new(e).context("cannot start: the source cannot be opened"));
    }
    let sink = JsonlSink::open(&s.sink, s.rotate_bytes, s.keep)?;
    let store = s
        .store
        .as_ref()
        .map(|st| UncertainStore::open(&st.dir, st.limits.clone()))
        .transpose()
        .context("cannot open the uncertain store")?;
    let stations: Vec<_> = s
        .stations
        .iter()
        .map(|st| (st.name.clone(), st.rect))
        .collect();
    let mut pipeline = Pipeline::new(
        engine,
        m,
        &stations,
        DecisionOptions {
            top_k: s.top_k,
            smoothing_frames: s.smoothing_frames,
            uncertain_band: s.uncertain_band,
        },
        sink,
        store,
        metrics.clone(),
    );
    // Following `current`: the hot-swap thread. SIGHUP only sets a flag in any case, so a
    // reload never stops the line.
    let hup = swap::install_sighup().context("cannot install the SIGHUP handler")?;
    if let Some(slot) = slot {
        let swapper = Swapper::start(
            SwapSettings {
                root: s.root.clone(),
                active_slot: slot.clone(),
                poll: s.poll_current,
                trusted_keys: s.trusted_keys.clone(),
                allow_unsigned: s.allow_unsigned,
                mem_available: s.mem_available,
                stations: stations.clone(),
                smoothing_frames: s.smoothing_frames,
                threads: s.threads,
                hup: Some(hup),
            },
            metrics.clone(),
        )
        .context("cannot start the hot-swap thread")?;
        tracing::info!(slot = %slot, poll_ms = s.poll_current.map(|d| d.as_millis() as u64), "following the installed current model (hot swap on change and on SIGHUP)");
        pipeline.set_swapper(swapper);
    }
    let opts = LoopOptions {
        max_frames: s.max_frames,
        stall_timeout: s.stall_timeout,
        reopen_backoff: s.reopen_backoff,
        reopen_backoff_max: s.reopen_backoff_max,
    };
    tracing::info!(source = %src.name(), stations = stations.len(), "running");
    notifier.ready();
    let t0 = Instant::now();
    let end = run_loop::run(&mut pipeline, src.as_mut(), &opts, stop, notifier);
    notifier.stopping();
    drop(pipeline.take_swapper());
    if end == EndReason::RoiOutsideFrame {
        anyhow::bail!(
            "{}",
            pipeline
                .refusal()
                .unwrap_or("a station's region does not fit the frame")
        );
    }
    let mut report = RunReport::from_metrics(&metrics, end, t0.elapsed().as_secs_f64());
    report.model_id = pipeline.model().model_id().to_string();
    report.model_version = pipeline.model().model_version().to_string();
    report.bundle = path.display().to_string();
    report.source = src.name().to_string();
    report.http = http.as_ref().map(|h| h.addr().to_string());
    tracing::info!(end = end.as_str(), frames = report.frames, "stopped");
    Ok(report)
}
