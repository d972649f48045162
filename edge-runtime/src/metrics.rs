//! What `run` counts, in one struct of atomics shared by the loop (writer) and the HTTP
//! thread (reader).
//!
//! The loop only stores and adds; nothing here allocates after [`Metrics::new`]. Rendering
//! the Prometheus text ([`Metrics::render_prometheus`]) allocates, on the HTTP thread.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Upper bounds (milliseconds) of the latency histogram buckets; one more bucket is +Inf.
pub const LATENCY_BUCKETS_MS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
];

/// A latency histogram with fixed buckets and atomic counts.
pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1e3;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Mean in milliseconds (0 when empty).
    pub fn mean_ms(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        self.sum_ns.load(Relaxed) as f64 / n as f64 / 1e6
    }

    /// Quantile `q` in milliseconds, interpolated linearly inside its bucket (0 when empty;
    /// the +Inf bucket reports the last finite bound).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0f64;
        for (i, &c) in counts.iter().enumerate() {
            let next = seen + c as f64;
            if next >= rank && c > 0 {
                let lo = if i == 0 {
                    0.0
                } else {
                    LATENCY_BUCKETS_MS[i - 1]
                };
                let Some(&hi) = LATENCY_BUCKETS_MS.get(i) else {
                    return lo;
                };
                return lo + (hi - lo) * ((rank - seen) / c as f64);
            }
            seen = next;
        }
        LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cum = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cum += c.load(Relaxed);
            match LATENCY_BUCKETS_MS.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", b / 1e3);
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Where the frame source stands, as `/metrics` and the logs report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    /// Not opened yet, or being reopened.
    Opening = 0,
    /// Frames are arriving.
    Streaming = 1,
    /// No frame within the stall timeout; about to be reopened.
    Stalled = 2,
    /// The source failed (unplugged, unreadable); reopening with backoff.
    Gone = 3,
    /// A finite source (a folder without `--loop`) has delivered everything.
    Ended = 4,
}

impl SourceState {
    pub const ALL: [SourceState; 5] = [
        SourceState::Opening,
        SourceState::Streaming,
        SourceState::Stalled,
        SourceState::Gone,
        SourceState::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Opening => "opening",
            SourceState::Streaming => "streaming",
            SourceState::Stalled => "stalled",
            SourceState::Gone => "gone",
            SourceState::Ended => "ended",
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(SourceState::Opening)
    }
}

/// Counters of one `run`. Every field is monotonic unless documented otherwise.
pub struct Metrics {
    start: Instant,
    /// Frames taken from the source and processed (every station decided).
    pub frames: AtomicU64,
    /// Decisions written (one per station and frame).
    pub decisions: AtomicU64,
    /// Decisions made but not written: the sink failed (disk full, IO error). Never
    /// expected; `run` exits 1 when there was any.
    pub decisions_lost: AtomicU64,
    /// Decisions whose outcome was `reject`.
    pub rejected: AtomicU64,
    /// Frames a live source produced that the loop never saw (it kept only the latest).
    pub dropped: AtomicU64,
    /// Frames the source delivered but that could not be used (wrong size, undecodable,
    /// corrupt file); skipped and counted, never fatal.
    pub bad_frames: AtomicU64,
    /// Station regions that did not fit the frame (skipped for that frame).
    pub roi_errors: AtomicU64,
    /// Errors from the source itself (gone, read failure); each leads to a reopen.
    pub source_errors: AtomicU64,
    /// Stall watchdog firings (no frame within the stall timeout).
    pub stalls: AtomicU64,
    /// Successful reopens of the source after an error or a stall.
    pub reconnects: AtomicU64,
    /// Failed open attempts while reconnecting.
    pub open_failures: AtomicU64,
    /// Inference errors (the frame is skipped).
    pub infer_errors: AtomicU64,
    /// Sink failures: lines it could not write, and a final flush or fsync that failed.
    pub sink_errors: AtomicU64,
    /// Uncertain / rejected frames saved to the store, and saves that failed.
    pub stored: AtomicU64,
    pub store_errors: AtomicU64,
    /// Hot swaps applied (a new `current` took over at a frame boundary).
    pub swaps: AtomicU64,
    /// New `current` models refused by the hot swap (verify, memory, load or self-test
    /// failed); the running model kept deciding.
    pub swap_failures: AtomicU64,
    /// Microseconds the last successful hot-swap load took on the swapper thread (read,
    /// verify, load in tract, self-test); 0 before the first.
    pub swap_load_us: AtomicU64,
    source_state: AtomicU8,
    model_loaded: AtomicBool,
    /// Milliseconds since `start` of the last processed frame; `u64::MAX` before the first.
    last_frame_ms: AtomicU64,
    /// Frames per second over the last second or so (an f32's bits).
    fps_bits: AtomicU32,
    /// Frame taken -> last station decided.
    pub latency: Histogram,
    /// Per stage: ROI copy + preprocessing, inference, decision + sink.
    pub preprocess: Histogram,
    pub infer: Histogram,
    pub decide: Histogram,
    /// The id of the model deciding now (changes on a hot swap).
    model_id: Mutex<Option<String>>,
    source_name: OnceLock<String>,
    /// A frame is "flowing" when the last one is at most this old.
    health_window: Duration,
}

impl Metrics {
    /// `health_window`: how old the last frame may be for `/healthz` to say 200.
    pub fn new(health_window: Duration) -> Self {
        Metrics {
            start: Instant::now(),
            frames: AtomicU64::new(0),
            decisions: AtomicU64::new(0),
            decisions_lost: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            roi_errors: AtomicU64::new(0),
            source_errors: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            open_failures: AtomicU64::new(0),
            infer_errors: AtomicU64::new(0),
            sink_errors: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            swaps: AtomicU64::new(0),
            swap_failures: AtomicU64::new(0),
            swap_load_us: AtomicU64::new(0),
            source_state: AtomicU8::new(SourceState::Opening as u8),
            model_loaded: AtomicBool::new(false),
            last_frame_ms: AtomicU64::new(u64::MAX),
            fps_bits: AtomicU32::new(0),
            latency: Histogram::default(),
            preprocess: Histogram::default(),
            infer: Histogram::default(),
            decide: Histogram::default(),
            model_id: Mutex::new(None),
            source_name: OnceLock::new(),
            health_window,
        }
    }

    /// Records that a model is loaded and deciding, and its id.
    pub fn set_model(&self, model_id: &str) {
        let mut id = self.model_id.lock().unwrap_or_else(|e| e.into_inner());
        *id = Some(model_id.to_string());
        self.model_loaded.store(true, Relaxed);
    }

    /// A hot swap was applied: `model_id` decides from now on.
    pub fn model_swapped(&self, model_id: &str) {
        self.set_model(model_id);
        self.swaps.fetch_add(1, Relaxed);
    }

    /// The id of the model deciding now; None before one is loaded.
    pub fn model_id(&self) -> Option<String> {
        self.model_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Names the source (once; later calls keep the first name and allocate nothing).
    pub fn set_source_name(&self, name: &str) {
        if self.source_name.get().is_none() {
            let _ = self.source_name.set(name.to_string());
        }
    }

    pub fn set_source_state(&self, s: SourceState) {
        self.source_state.store(s as u8, Relaxed);
    }

    pub fn source_state(&self) -> SourceState {
        SourceState::from_u8(self.source_state.load(Relaxed))
    }

    pub fn frame_done(&self, now: Instant) {
        self.frames.fetch_add(1, Relaxed);
        let ms = now.saturating_duration_since(self.start).as_millis() as u64;
        self.last_frame_ms.store(ms, Relaxed);
    }

    pub fn set_fps(&self, fps: f32) {
        self.fps_bits.store(fps.to_bits(), Relaxed);
    }

    pub fn fps(&self) -> f32 {
        f32::from_bits(self.fps_bits.load(Relaxed))
    }

    /// Age of the last processed frame; None before the first.
    pub fn last_frame_age(&self) -> Option<Duration> {
        let ms = self.last_frame_ms.load(Relaxed);
        (ms != u64::MAX).then(|| {
            self.start
                .elapsed()
                .saturating_sub(Duration::from_millis(ms))
        })
    }

    /// Healthy: the model is loaded, a frame was processed within the health window, and
    /// the source is not known to be lost (gone, stalled or being reopened: an unplugged
    /// camera turns `/healthz` to 503 at once, not a health window later).
    pub fn healthy(&self) -> bool {
        self.model_loaded.load(Relaxed)
            && matches!(
                self.source_state(),
                SourceState::Streaming | SourceState::Ended
            )
            && self
                .last_frame_age()
                .is_some_and(|age| age <= self.health_window)
    }

    /// The Prometheus text exposition of every counter (allocates; for the HTTP thread).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &AtomicU64, &str); 17] = [
            ("frames", &self.frames, "frames processed"),
            (
                "decisions",
                &self.decisions,
                "decisions written (station x frame)",
            ),
            (
                "decisions_lost",
                &self.decisions_lost,
                "decisions made but not written (the sink failed)",
            ),
            ("rejected", &self.rejected, "decisions that were `reject`"),
            (
                "dropped_frames",
                &self.dropped,
                "frames of a live source never processed (latest-frame policy)",
            ),
            (
                "bad_frames",
                &self.bad_frames,
                "frames skipped as unusable (wrong size, undecodable)",
            ),
            (
                "roi_errors",
                &self.roi_errors,
                "station regions outside the frame",
            ),
            (
                "source_errors",
                &self.source_errors,
                "source failures (gone, read errors)",
            ),
            ("stalls", &self.stalls, "stall watchdog firings"),
            ("reconnects", &self.reconnects, "successful source reopens"),
            (
                "open_failures",
                &self.open_failures,
                "failed source open attempts",
            ),
            ("infer_errors", &self.infer_errors, "inference failures"),
            (
                "sink_errors",
                &self.sink_errors,
                "decision lines that could not be written",
            ),
            (
                "stored",
                &self.stored,
                "uncertain or rejected frames saved to the store",
            ),
            (
                "store_errors",
                &self.store_errors,
                "failed saves to the store",
            ),
            (
                "model_swaps",
                &self.swaps,
                "hot swaps applied (a new current model took over between frames)",
            ),
            (
                "model_swap_failures",
                &self.swap_failures,
                "new current models refused by the hot swap (the running one kept deciding)",
            ),
        ];
        for (name, v, help) in counters {
            let _ = writeln!(out, "# HELP linesight_{name}_total {help}");
            let _ = writeln!(out, "# TYPE linesight_{name}_total counter");
            let _ = writeln!(out, "linesight_{name}_total {}", v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP linesight_fps frames per second over the last second\n# TYPE linesight_fps gauge\nlinesight_fps {}",
            self.fps()
        );
        let state = self.source_state();
        let _ = writeln!(
            out,
            "# HELP linesight_source_state 1 for the source's current state\n# TYPE linesight_source_state gauge"
        );
        let source = escape_label(self.source_name.get().map(String::as_str).unwrap_or(""));
        for s in SourceState::ALL {
            let _ = writeln!(
                out,
                "linesight_source_state{{source=\"{source}\",state=\"{}\"}} {}",
                s.as_str(),
                u8::from(s == state)
            );
        }
        let loaded = self.model_loaded.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP linesight_model_loaded 1 when the model is loaded, labelled with its id\n# TYPE linesight_model_loaded gauge\nlinesight_model_loaded{{model_id=\"{}\"}} {}",
            escape_label(self.model_id().as_deref().unwrap_or("")),
            u8::from(loaded)
        );
        let _ = writeln!(
            out,
            "# HELP linesight_model_swap_load_seconds how long the last hot-swap load took beside the running model (read, verify, load, self-test)\n# TYPE linesight_model_swap_load_seconds gauge\nlinesight_model_swap_load_seconds {}",
            self.swap_load_us.load(Relaxed) as f64 / 1e6
        );
        let age = self
            .last_frame_age()
            .map(|a| a.as_secs_f64())
            .unwrap_or(-1.0);
        let _ = writeln!(
            out,
            "# HELP linesight_last_frame_age_seconds age of the last processed frame (-1: none yet)\n# TYPE linesight_last_frame_age_seconds gauge\nlinesight_last_frame_age_seconds {age}"
        );
        let _ = writeln!(
            out,
            "# HELP linesight_latency_p50_seconds median frame latency (from the histogram)\n# TYPE linesight_latency_p50_seconds gauge\nlinesight_latency_p50_seconds {}",
            self.latency.quantile_ms(0.5) / 1e3
        );
        let _ = writeln!(
            out,
            "# HELP linesight_latency_p95_seconds 95th percentile frame latency (from the histogram)\n# TYPE linesight_latency_p95_seconds gauge\nlinesight_latency_p95_seconds {}",
            self.latency.quantile_ms(0.95) / 1e3
        );
        self.latency.render(
            &mut out,
            "linesight_frame_latency_seconds",
            "frame taken to last decision written",
        );
        self.preprocess.render(
            &mut out,
            "linesight_preprocess_seconds",
            "region copy and preprocessing, per station",
        );
        self.infer.render(
            &mut out,
            "linesight_infer_seconds",
            "inference, per station",
        );
        self.decide.render(
            &mut out,
            "linesight_decide_seconds",
            "decision and sink, per station",
        );
        out
    }
}

/// Peak resident set size of this process (`VmHWM` of /proc/self/status), in bytes;
/// None where /proc is not there.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), 0.0);
        for _ in 0..90 {
            h.observe(Duration::from_micros(1500)); // bucket (1, 2]
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(40)); // bucket (30, 50]
        }
        let p50 = h.quantile_ms(0.5);
        assert!((1.0..=2.0).contains(&p50), "{p50}");
        let p95 = h.quantile_ms(0.95);
        assert!((30.0..=50.0).contains(&p95), "{p95}");
        assert!((h.mean_ms() - 5.35).abs() < 1e-6);
        h.observe(Duration::from_secs(60));
        assert_eq!(h.quantile_ms(1.0), 5000.0);
    }

    #[test]
    fn health_and_render() {
        let m = Metrics::new(Duration::from_secs(5));
        assert!(!m.healthy());
        m.frame_done(Instant::now());
        assert!(!m.healthy(), "no model yet");
        m.set_model("tiny\"1");
        assert!(!m.healthy(), "the source never streamed");
        m.set_source_state(SourceState::Streaming);
        assert!(m.healthy());
        m.set_source_state(SourceState::Gone);
        assert!(
            !m.healthy(),
            "a lost source is unhealthy before the window passes"
        );
        let text = m.render_prometheus();
        assert!(text.contains("linesight_frames_total 1\n"), "{text}");
        assert!(text.contains("state=\"gone\"} 1\n"), "{text}");
        assert!(text.contains("linesight_model_loaded{model_id=\"tiny\\\"1\"} 1"));
        assert!(text.contains("linesight_frame_latency_seconds_bucket{le=\"+Inf\"} 0"));
    }
}
