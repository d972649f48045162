//! The camera-to-decision loop. **No allocation after warm-up**: every buffer a frame
//! needs (station regions, preprocessor scratch, input tensor, logits, smoothing rings,
//! the JSON line) is made in [`Pipeline::new`] or on the first frame; per frame the loop
//! only copies, computes and writes. Two dependencies still allocate per frame, and
//! `tests/alloc.rs` counts them apart from the loop: tract (its input tensor and
//! intermediate results, inside [`Engine::infer`]) and fast_image_resize (its convolution
//! coefficients, recomputed on every resize, inside [`crate::station::preprocess`]).
//! Allowed off that path: error messages, rate-limited logs, saving to the uncertain
//! store (itself rate-limited), log rotation, reopening a source.
//!
//! Recovery: a bad frame is skipped and counted; a source error or a stall (no usable
//! frame within the stall timeout) reopens the source with exponential backoff. Only a
//! stop request, `max_frames`, the end of a finite source, a closed stdout, or a station
//! region outside the first frame end the loop.
//!
//! Nothing is lost quietly: a decision the sink could not write (a full disk) is counted
//! in `decisions_lost` (and `run` exits 1); the first frame's size is checked against
//! every station's region, and a region outside it ends the run with an error naming the
//! station and both sizes (a later frame of another size only skips that station, counted
//! in `roi_errors`).
//!
//! Hot swap: everything that depends on the model (engine, labels, rule, stations'
//! preprocessing and smoothing, input and logits buffers) is one [`LoadedModel`]. With a
//! [`Swapper`] attached ([`Pipeline::set_swapper`]), the loop asks it between frames
//! whether a new model is ready (a non-blocking channel poll, no allocation) and, if so,
//! replaces the whole [`LoadedModel`] at once; the new one was loaded and self-tested on
//! the swapper's thread, and the old one is handed back to that thread to be dropped.

use crate::decide::{self, MAX_TOPK, REJECT};
use crate::engine::Engine;
use crate::metrics::{Metrics, SourceState};
use crate::notify::Notifier;
use crate::sink::jsonl::JsonlSink;
use crate::sink::{Record, TopK};
use crate::source::{Frame, FrameSource, Next, SourceError};
use crate::station::Station;
use crate::store::{Saved, UncertainStore};
use crate::swap::Swapper;
use linesight_shared::manifest::Manifest;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest single wait for a frame, so a stop request is seen quickly.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// At most one log line per kind of trouble in this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Loop settings.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Stop after this many processed frames.
    pub max_frames: Option<u64>,
    /// No usable frame for this long: reopen the source.
    pub stall_timeout: Duration,
    /// First and longest wait between reopen attempts (doubling in between).
    pub reopen_backoff: Duration,
    pub reopen_backoff_max: Duration,
}

/// Why the loop returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    MaxFrames,
    SourceEnded,
    Stopped,
    SinkClosed,
    /// A station's region does not fit the first frame ([`Pipeline::refusal`] says which).
    RoiOutsideFrame,
}

/// Rate limiter for log lines of one kind.
#[derive(Default)]
struct LogLimit {
    last: Option<Instant>,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::MaxFrames => "max-frames",
            EndReason::SourceEnded => "source-ended",
            EndReason::Stopped => "stopped",
            EndReason::SinkClosed => "sink-closed",
            EndReason::RoiOutsideFrame => "roi-outside-frame",
        }
    }
}

impl LogLimit {
    fn allow(&mut self, now: Instant) -> bool {
        let ok = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if ok {
            self.last = Some(now);
        }
        ok
    }
}

#[derive(Default)]
struct Logs {
    bad_frame: LogLimit,
    source: LogLimit,
    stall: LogLimit,
    reopen: LogLimit,
    roi: LogLimit,
    infer: LogLimit,
    sink: LogLimit,
    store: LogLimit,
}

/// The model and everything built for it: engine, labels, decision rule, the stations
/// (their preprocessing follows the model's spec, their smoothing its class count) and
/// the input and logits buffers. Built off the loop (at startup, or on the swapper's
/// thread) and replaced as a whole.
pub struct LoadedModel {
    engine: Engine,
    labels: Vec<String>,
    rule: linesight_shared::manifest::DecisionRule,
    model_id: String,
    model_version: String,
    stations: Vec<Station>,
    input: Vec<f32>,
    logits: Vec<f32>,
}

impl LoadedModel {
    /// Builds the model-dependent scratch around a loaded engine and its manifest.
    pub fn new(
        engine: Engine,
        manifest: &Manifest,
        stations: &[StationPlan],
        smoothing_frames: usize,
    ) -> Self {
        let classes = manifest.labels.len();
        let stations = stations
            .iter()
            .map(|(name, rect)| {
                Station::new(
                    name.clone(),
                    *rect,
                    manifest.preprocess,
                    smoothing_frames,
                    classes,
                )
            })
            .collect();
        LoadedModel {
            input: vec![0.0; engine.input_len()],
            logits: vec![0.0; engine.output_len()],
            engine,
            labels: manifest.labels.clone(),
            rule: manifest.decision.clone(),
            model_id: manifest.model_id.clone(),
            model_version: manifest.model_version.clone(),
            stations,
        }
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn model_version(&self) -> &str {
        &self.model_version
    }
}

/// Everything the loop needs besides the source: model, stations, sink, store, metrics,
/// and the per-frame scratch. Built once; [`run`] may be called on it many times.
pub struct Pipeline {
    model: LoadedModel,
    swapper: Option<Swapper>,
    top_k: usize,
    uncertain_band: f32,
    sink: JsonlSink,
    store: Option<UncertainStore>,
    store_line: Vec<u8>,
    metrics: Arc<Metrics>,
    source_name: String,
    frame_counter: u64,
    logs: Logs,
    /// The stations' regions were checked against a frame's size.
    regions_checked: bool,
    /// Why the loop refused to go on (set with [`EndReason::RoiOutsideFrame`]).
    refusal: Option<String>,
}

/// Stations to build: (name, region).
pub type StationPlan = (String, Option<crate::station::Rect>);

/// How a pipeline decides.
pub struct DecisionOptions {
    pub top_k: usize,
    pub smoothing_frames: usize,
    pub uncertain_band: f32,
}

impl Pipeline {
    /// Assembles a pipeline around a loaded engine and the manifest of its bundle.
    pub fn new(
        engine: Engine,
        manifest: &Manifest,
        stations: &[StationPlan],
        decision: DecisionOptions,
        sink: JsonlSink,
        store: Option<UncertainStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.set_model(&manifest.model_id);
        Pipeline {
            model: LoadedModel::new(engine, manifest, stations, decision.smoothing_frames),
            swapper: None,
            top_k: decision.top_k,
            uncertain_band: decision.uncertain_band,
            sink,
            store,
            store_line: Vec::with_capacity(4096),
            metrics,
            source_name: String::with_capacity(256),
            frame_counter: 0,
            logs: Logs::default(),
            regions_checked: false,
            refusal: None,
        }
    }

    /// Why the loop ended with [`EndReason::RoiOutsideFrame`].
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Once, on the first frame: every station's region must fit it. A region that does
    /// not would give no decision on any frame of that size, so the run stops instead of
    /// running on without deciding.
    fn check_regions(&mut self, frame: &Frame) -> Result<(), EndReason> {
        if self.regions_checked {
            return Ok(());
        }
        self.regions_checked = true;
        for st in &self.model.stations {
            if let Some(r) = st.rect {
                if let Err(e) = r.check_fits(frame.width, frame.height) {
                    self.refusal = Some(format!(
                        "station `{}`: {e} (the first frame from `{}`); fix the station's rect in edge.toml",
                        st.name, self.source_name
                    ));
                    return Err(EndReason::RoiOutsideFrame);
                }
            }
        }
        Ok(())
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The engine, for a bare-inference baseline in the same process (`bench`).
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.model.engine
    }

    /// The model deciding now (changes when a swap is applied).
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Attaches a swapper: from now on the loop applies, between frames, every model it
    /// has loaded and self-tested (see the module doc).
    pub fn set_swapper(&mut self, swapper: Swapper) {
        self.swapper = Some(swapper);
    }

    /// Stops the swapper's thread (if any) and returns it, e.g. to read its state.
    pub fn take_swapper(&mut self) -> Option<Swapper> {
        self.swapper.take()
    }

    /// Between frames: applies a model the swapper has ready. Allocates nothing when there
    /// is none (one non-blocking channel poll); a swap itself may allocate.
    fn apply_ready_model(&mut self) {
        let Some(swapper) = self.swapper.as_mut() else {
            return;
        };
        let Some(ready) = swapper.try_take() else {
            return;
        };
        let old = std::mem::replace(&mut self.model, ready.model);
        self.metrics.model_swapped(&self.model.model_id);
        tracing::info!(
            slot = %ready.slot,
            model = %self.model.model_id,
            version = %self.model.model_version,
            from_model = %old.model_id,
            from_version = %old.model_version,
            load_ms = ready.load_ms,
            "hot swap: switched to the new current model at a frame boundary"
        );
        swapper.retire(old);
    }

    pub fn store(&self) -> Option<&UncertainStore> {
        self.store.as_ref()
    }

    /// Flushes (and for a file fsyncs) the sink. A failure is counted in `sink_errors`
    /// (the lines may not be on disk); a closed stdout is not a failure.
    pub fn flush(&mut self) {
        if let Err(e) = self.sink.flush() {
            if e.is_broken_pipe() {
                return;
            }
            self.metrics.sink_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "cannot flush the decision sink; the last decisions may not be on disk");
        }
    }

    /// Decides every station on one well-formed frame. Err only when the sink is closed
    /// for good (broken pipe).
    fn process(&mut self, frame: &Frame, taken: Instant) -> Result<(), EndReason> {
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let Pipeline {
            model,
            swapper: _,
            top_k,
            uncertain_band,
            sink,
            store,
            store_line,
            metrics,
            source_name,
            frame_counter,
            logs,
            regions_checked: _,
            refusal: _,
        } = self;
        let LoadedModel {
            engine,
            labels,
            rule,
            model_id,
            model_version,
            stations,
            input,
            logits,
        } = model;
        for st in stations.iter_mut() {
            let t0 = Instant::now();
            let (rgb, w, h): (&[u8], u32, u32) = match st.rect {
                Some(r) => match r.copy_from(frame, &mut st.roi) {
                    Ok(()) => (&st.roi, r.w, r.h),
                    Err(e) => {
                        metrics.roi_errors.fetch_add(1, Relaxed);
                        if logs.roi.allow(t0) {
                            tracing::warn!(station = %st.name, error = %e, "station region skipped (repeats are not logged for 10 s)");
                        }
                        continue;
                    }
                },
                None => (frame.rgb, frame.width, frame.height),
            };
            if let Err(e) = crate::station::preprocess(&mut st.pre, rgb, w, h, input) {
                metrics.bad_frames.fetch_add(1, Relaxed);
                if logs.bad_frame.allow(t0) {
                    tracing::warn!(station = %st.name, error = %e, "frame skipped: cannot preprocess");
                }
                continue;
            }
            let t1 = Instant::now();
            metrics.preprocess.observe(t1 - t0);
            if let Err(e) = engine.infer(input, logits) {
                metrics.infer_errors.fetch_add(1, Relaxed);
                if logs.infer.allow(t1) {
                    tracing::error!(station = %st.name, error = %e, "inference failed; frame skipped");
                }
                continue;
            }
            let t2 = Instant::now();
            metrics.infer.observe(t2 - t1);
            decide::softmax(logits);
            let smoothed_frames = st
                .smoother
                .frames()
                .saturating_add(1)
                .min(st.smoother.window());
            let scores = st.smoother.push(logits);
            let d = decide::decide(scores, rule, *top_k);
            let threshold = rule
                .per_class_min_score
                .get(d.top1)
                .copied()
                .unwrap_or(rule.min_score);
            let accepted = d.class.is_some();
            let uncertain = accepted
                && (d.score < threshold + *uncertain_band
                    || d.margin < rule.min_margin + *uncertain_band);
            let mut topk: heapless::Vec<TopK, MAX_TOPK> = heapless::Vec::new();
            for &(c, score) in &d.topk {
                let label = labels.get(c).map_or("?", String::as_str);
                // cannot fail: d.topk has at most MAX_TOPK entries
                let _ = topk.push(TopK { label, score });
            }
            let label = match d.class {
                Some(c) => labels.get(c).map_or("?", String::as_str),
                None => REJECT,
            };
            let rec = Record {
                frame: *frame_counter,
                seq: frame.seq,
                time_unix_ms,
                source: source_name.as_str(),
                station: &st.name,
                model: model_id.as_str(),
                model_version: model_version.as_str(),
                label,
                accepted,
                uncertain,
                score: d.score,
                margin: d.margin,
                topk: &topk,
                smoothed_frames,
                latency_ms: taken.elapsed().as_secs_f64() * 1e3,
            };
            if let Err(e) = sink.write(&rec) {
                if e.is_broken_pipe() {
                    tracing::info!("stdout closed; stopping");
                    return Err(EndReason::SinkClosed);
                }
                metrics.sink_errors.fetch_add(1, Relaxed);
                metrics.decisions_lost.fetch_add(1, Relaxed);
                if logs.sink.allow(t2) {
                    tracing::error!(error = %e, "decision not written: LOST (counted in decisions_lost; repeats are not logged for 10 s)");
                }
            } else {
                metrics.decisions.fetch_add(1, Relaxed);
            }
            if !accepted {
                metrics.rejected.fetch_add(1, Relaxed);
            }
            if let Some(store) = store
                .as_mut()
                .filter(|s| (!accepted || uncertain) && s.ready(t2))
            {
                store_line.clear();
                let saved = serde_json::to_writer(&mut *store_line, &rec)
                    .map_err(|e| crate::store::StoreError::Encode(e.to_string()))
                    .and_then(|()| store.save(rgb, w, h, store_line, t2));
                match saved {
                    Ok(Saved::Entry { .. }) => {
                        metrics.stored.fetch_add(1, Relaxed);
                    }
                    Ok(Saved::RateLimited) => {}
                    Err(e) => {
                        metrics.store_errors.fetch_add(1, Relaxed);
                        if logs.store.allow(t2) {
                            tracing::warn!(error = %e, "cannot save an uncertain frame (repeats are not logged for 10 s)");
                        }
                    }
                }
            }
            metrics.decide.observe(t2.elapsed());
        }
        *frame_counter += 1;
        let now = Instant::now();
        metrics.latency.observe(now - taken);
        metrics.frame_done(now);
        Ok(())
    }

    fn clear_smoothing(&mut self) {
        for s in &mut self.model.stations {
            s.smoother.clear();
        }
    }
}

/// Sleeps `d` in short slices, pinging the watchdog; false when a stop was requested.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool, notifier: &mut Notifier) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Relaxed) {
            return false;
        }
        let now = Instant::now();
        notifier.tick(now);
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Reopens the source: at once, then with doubling waits. False when stopped meanwhile.
fn reopen(
    p: &mut Pipeline,
    source: &mut dyn FrameSource,
    opts: &LoopOptions,
    stop: &AtomicBool,
    notifier: &mut Notifier,
) -> bool {
    let m = p.metrics.clone();
    m.set_fps(0.0);
    p.clear_smoothing();
    let mut backoff = opts.reopen_backoff;
    loop {
        if stop.load(Relaxed) {
            return false;
        }
        m.set_source_state(SourceState::Opening);
        match source.open() {
            Ok(()) => {
                m.reconnects.fetch_add(1, Relaxed);
                m.set_source_state(SourceState::Streaming);
                tracing::info!(source = %source.name(), "source reopened");
                return true;
            }
            Err(e) => {
                m.open_failures.fetch_add(1, Relaxed);
                m.set_source_state(SourceState::Gone);
                if p.logs.reopen.allow(Instant::now()) {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reopen the source; retrying with backoff (repeats are not logged for 10 s)");
                }
            }
        }
        if !sleep_unless_stopped(backoff, stop, notifier) {
            return false;
        }
        backoff = (backoff * 2).min(opts.reopen_backoff_max);
    }
}

/// Runs frames from an opened `source` through the pipeline until a stop request,
/// `max_frames` (counted from this call), the end of a finite source, or a closed
/// stdout. Returns why it ended; the counters are in the pipeline's metrics.
pub fn run(
    p: &mut Pipeline,
    source: &mut dyn FrameSource,
    opts: &LoopOptions,
    stop: &AtomicBool,
    notifier: &mut Notifier,
) -> EndReason {
    p.source_name.clear();
    p.source_name.push_str(source.name());
    let m = p.metrics.clone();
    m.set_source_name(source.name());
    m.set_source_state(SourceState::Streaming);
    let mut processed = 0u64;
    let mut last_frame = Instant::now();
    let mut window = (Instant::now(), m.frames.load(Relaxed));
    let reason = loop {
        if stop.load(Relaxed) {
            break EndReason::Stopped;
        }
        if opts.max_frames.is_some_and(|n| processed >= n) {
            break EndReason::MaxFrames;
        }
        p.apply_ready_model();
        let now = Instant::now();
        notifier.tick(now);
        if now - window.0 >= Duration::from_secs(1) {
            let frames = m.frames.load(Relaxed);
            m.set_fps((frames - window.1) as f32 / (now - window.0).as_secs_f32());
            window = (now, frames);
        }
        let wait = opts
            .stall_timeout
            .saturating_sub(now - last_frame)
            .clamp(Duration::from_millis(1), MAX_WAIT);
        let mut failed: Option<SourceError> = None;
        match source.next(wait) {
            Ok(Next::Frame(frame)) => {
                let taken = Instant::now();
                m.dropped.fetch_add(frame.dropped, Relaxed);
                if frame.is_well_formed() {
                    if let Err(reason) = p.check_regions(&frame) {
                        break reason;
                    }
                    match p.process(&frame, taken) {
                        Ok(()) => {
                            processed += 1;
                            last_frame = taken;
                        }
                        Err(reason) => break reason,
                    }
                } else {
                    m.bad_frames.fetch_add(1, Relaxed);
                    if p.logs.bad_frame.allow(taken) {
                        tracing::warn!(width = frame.width, height = frame.height, bytes = frame.rgb.len(), "frame skipped: its buffer does not match its size (repeats are not logged for 10 s)");
                    }
                }
            }
            Ok(Next::Idle) => {}
            Ok(Next::End) => {
                m.set_source_state(SourceState::Ended);
                break EndReason::SourceEnded;
            }
            Err(e) => failed = Some(e),
        }
        match failed {
            Some(e @ SourceError::BadFrame { .. }) => {
                m.bad_frames.fetch_add(1, Relaxed);
                if p.logs.bad_frame.allow(Instant::now()) {
                    tracing::warn!(error = %e, "frame skipped (repeats are not logged for 10 s)");
                }
            }
            Some(e) => {
                m.source_errors.fetch_add(1, Relaxed);
                m.set_source_state(SourceState::Gone);
                if p.logs.source.allow(Instant::now()) {
                    tracing::warn!(error = %e, "source failed; reopening (repeats are not logged for 10 s)");
                }
                if !reopen(p, source, opts, stop, notifier) {
                    break EndReason::Stopped;
                }
                last_frame = Instant::now();
            }
            None => {}
        }
        if last_frame.elapsed() > opts.stall_timeout {
            m.stalls.fetch_add(1, Relaxed);
            m.set_source_state(SourceState::Stalled);
            if p.logs.stall.allow(Instant::now()) {
                tracing::warn!(source = %p.source_name, timeout_ms = opts.stall_timeout.as_millis() as u64, "no usable frame within the stall timeout; reopening");
            }
            if !reopen(p, source, opts, stop, notifier) {
                break EndReason::Stopped;
            }
            last_frame = Instant::now();
        }
    };
    p.flush();
    reason
}
