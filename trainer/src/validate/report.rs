//! `report.json`: every figure of the report, with a schema version. The HTML page is
//! rendered from this same value ([`super::html`]), so the two cannot disagree.
//!
//! This is a serialization boundary: fields are added, never renamed or removed, without
//! a new [`SCHEMA_VERSION`]. Images are referred to by their index into `images`.

use super::calibration::{Bin, Choice, CoveragePoint};
use super::classes::{ClassRow, Confusion, Pair};
use super::compare::{ClassAgreement, ClassDelta};
use super::drift::{BadEntry, BoxDecision};
use super::interval::Estimate;
use super::labels::LabelRow;
use super::rules::Verdict;
use super::score::SignatureStatus;
use super::thresholds::HeldOut;
use linesight_shared::manifest::{DecisionRule, Parity};
use serde::Serialize;

/// Version of this layout.
pub const SCHEMA_VERSION: u32 = 1;

/// How each interval was computed, as the report states it.
pub const WILSON: &str = "Wilson score interval, 95 %";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    /// `linesight-train X.Y.Z`.
    pub tool: String,
    pub created_unix: u64,
    /// From the start of `validate` until the page was rendered.
    pub generation_seconds: f64,
    pub inputs: Inputs,
    pub verdict: Verdict,
    pub headline: Headline,
    /// Worst first.
    pub per_class: Vec<ClassRow>,
    pub confusion: Confusion,
    pub confused_pairs: Vec<Pair>,
    pub confidence: Confidence,
    pub galleries: Galleries,
    pub baseline: Option<Baseline>,
    /// int8 against its f32 twin; None for an f32 bundle.
    pub twin: Option<Twin>,
    pub labels: Option<Labels>,
    pub line: Option<Line>,
    pub host: Option<Host>,
    /// Why the host benchmark could not run, when it could not.
    pub host_error: Option<String>,
    /// Manifest rows that could not be scored.
    pub unreadable: Vec<BadEntry>,
    /// Every scored image.
    pub images: Vec<ImageRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub bundle: String,
    pub manifest: String,
    pub split: String,
    pub baseline: Option<String>,
    pub twin: Option<String>,
    pub refined: Option<String>,
    pub targets: Option<String>,
    pub uncertain: Option<String>,
    pub target_precision: f64,
    pub require: String,
    pub bootstrap_resamples: usize,
    pub seed: u64,
}

/// A bundle as the report describes it.
#[derive(Debug, Clone, Serialize)]
pub struct BundleInfo {
    pub path: String,
    pub file_bytes: u64,
    pub onnx_bytes: u64,
    pub format_version: u32,
    pub model_id: String,
    pub model_version: String,
    pub precision: String,
    pub labels: usize,
    pub backbone: String,
    pub method: String,
    pub model_sha256: String,
    pub created_unix: u64,
    pub signature: SignatureStatus,
    /// The bundle's self-test vectors run here, as `install` runs them on the box.
    pub self_test: SelfTest,
    /// The decision rule the bundle carries now.
    pub decision: DecisionRule,
    /// What export measured (exporter vs tract, or int8 vs f32).
    pub parity: Parity,
    pub load_seconds: f64,
}

/// The self-test `install` runs before a model goes live.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTest {
    pub passed: bool,
    pub vectors: usize,
    /// Largest logit difference from the expected values.
    pub max_abs_diff: Option<f32>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    pub top1: Estimate,
    pub top1_interval: String,
    pub cacc: Estimate,
    pub cacc_interval: String,
    pub sacc: Option<Estimate>,
    pub sacc_interval: String,
    /// Why sACC is missing, when it is.
    pub sacc_note: Option<String>,
    /// Images scored (rows minus unreadable ones).
    pub images: usize,
    pub unreadable: usize,
    /// True classes in the split.
    pub classes: usize,
    /// Distinct names the bundle predicted.
    pub names_predicted: usize,
    pub bundle: BundleInfo,
}

/// What a decision rule did on the scored images.
#[derive(Debug, Clone, Serialize)]
pub struct RuleOutcome {
    pub rule: DecisionRule,
    pub accepted: usize,
    pub correct: usize,
    pub total: usize,
    pub coverage: f64,
    /// correct / accepted with its Wilson interval; None when nothing was accepted.
    pub precision: Option<Estimate>,
}

/// One label's recommended threshold.
#[derive(Debug, Clone, Serialize)]
pub struct ClassThreshold {
    pub label: String,
    pub threshold: f32,
    /// Chosen on its own predictions (false: none on this split, the global threshold).
    pub own: bool,
    pub choice: Option<Choice>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Confidence {
    pub bins: Vec<Bin>,
    pub ece: f64,
    pub curve: Vec<CoveragePoint>,
    pub target_precision: f64,
    /// One threshold for every class.
    pub global: RuleOutcome,
    /// The thresholds of `thresholds.toml`, read back and applied by the edge's rule.
    pub per_class_rule: RuleOutcome,
    pub per_class: Vec<ClassThreshold>,
    /// The rule the bundle carries now, on the same images.
    pub current_rule: RuleOutcome,
    /// Two-fold check: per-class / global thresholds chosen on half of the images, scored
    /// on the other half (what to expect on images they were not chosen on).
    pub held_out_per_class: HeldOut,
    pub held_out_global: HeldOut,
}

#[derive(Debug, Clone, Serialize)]
pub struct Galleries {
    /// Wrong, highest score first.
    pub confident_mistakes: Vec<usize>,
    /// Smallest margin between the two best names first.
    pub most_uncertain: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    pub path: String,
    pub truth: String,
    pub predicted: String,
    pub score: f32,
    pub margin: f32,
    pub correct: bool,
    /// Accepted by the recommended per-class thresholds.
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_correct: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub bundle: BundleInfo,
    pub top1: Estimate,
    /// New top-1 minus deployed top-1, Newcombe's paired interval.
    pub delta: Estimate,
    pub delta_interval: String,
    /// Largest regression first.
    pub per_class: Vec<ClassDelta>,
    pub max_class_regression: Option<f64>,
    pub right_to_wrong: Vec<usize>,
    pub wrong_to_right: Vec<usize>,
    /// The deployed model's labels that the new one lacks, and the other way round.
    pub labels_removed: Vec<String>,
    pub labels_added: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Twin {
    /// Where the figures come from: measured on the scored images against the f32 twin
    /// bundle, or the bundle's manifest (export's parity images).
    pub source: String,
    pub bundle: Option<BundleInfo>,
    pub agreement: Option<Estimate>,
    /// Lowest agreement first.
    pub per_class: Vec<ClassAgreement>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Labels {
    pub refined: String,
    pub targets: Option<String>,
    pub images: usize,
    /// Images whose signals disagree (all of them are in `to-verify.csv`).
    pub disagreeing: usize,
    /// The first of them, most disagreement first.
    pub rows: Vec<LabelRow>,
    pub csv: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrameRow {
    pub file: String,
    pub decision: BoxDecision,
    /// The new bundle on the frame: top-1, score, and whether its recommended
    /// thresholds accept it.
    pub new_label: String,
    pub new_score: f32,
    pub new_accepted: bool,
    /// Cosine distance to the nearest training image; None without embeddings.
    pub distance: Option<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub dir: String,
    pub frames: Vec<FrameRow>,
    pub bad_entries: Vec<BadEntry>,
    /// Why there are no distances, when there are none.
    pub drift_note: Option<String>,
    /// Distances of the scored images (the reference: up to 300, evenly spaced) and their
    /// 95th percentile.
    pub reference_distances: Vec<f32>,
    pub reference_p95: Option<f32>,
    pub training_images: usize,
    /// Share of frames beyond the reference's 95th percentile.
    pub beyond_reference: Option<f64>,
    pub median_frame_distance: Option<f32>,
    pub median_reference_distance: Option<f32>,
}

/// `bench` on this host.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// Which program measured: the `linesight-edge` binary beside this one, or this
    /// process (in-process fallback).
    pub measured_by: String,
    pub build: String,
    pub threads: u64,
    pub iterations: u64,
    pub load_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub infer_p50_ms: f64,
    pub preprocess_p50_ms: f64,
    pub peak_rss_bytes: Option<u64>,
    pub cpu: String,
    pub note: String,
}
