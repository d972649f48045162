//! Where decisions go: one JSON object per line ([`Record`]), to stdout or to a file that
//! is rotated by size ([`jsonl::JsonlSink`]).
//!
//! The line format is an API (ARCHITECTURE.md, "API boundaries"): fields are added, never
//! renamed or removed.

pub mod jsonl;

use serde::Serialize;

/// One (label, score) of a decision's top-k.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TopK<'a> {
    pub label: &'a str,
    pub score: f32,
}

/// One decision line: a station's decision on one frame. Borrowed throughout, so writing
/// it allocates nothing.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// The run's frame counter (frames processed, from 0).
    pub frame: u64,
    /// The source's own frame number (counts dropped frames; a folder's image index).
    pub seq: u64,
    /// Wall-clock time the frame was taken, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    pub source: &'a str,
    pub station: &'a str,
    pub model: &'a str,
    pub model_version: &'a str,
    /// The accepted class's label, or `reject`.
    pub label: &'a str,
    /// Whether the decision rule accepted the top-1 class.
    pub accepted: bool,
    /// Accepted, but close to the rule's thresholds (see `uncertain_band`).
    pub uncertain: bool,
    /// Top-1 score (after smoothing, if any) and top-1 minus top-2.
    pub score: f32,
    pub margin: f32,
    pub topk: &'a [TopK<'a>],
    /// Frames the scores were averaged over (1: no smoothing).
    pub smoothed_frames: usize,
    /// From the frame being taken to this decision.
    pub latency_ms: f64,
}
