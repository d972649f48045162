//! `validate`: the desktop report that says whether a bundle may go to the line, and with
//! which thresholds (`linesight-train validate`, [`crate::commands::validate`]).
//!
//! The bundle is run exactly as the box runs it ([`score`]: the edge's `Engine`, the
//! shared preprocessing, the edge's softmax and decision rule). The figures are pure
//! functions over the scores, each tested against a hand-computed case:
//! [`interval`] (Wilson, Newcombe's paired difference, percentile bootstrap),
//! [`classes`] (per-class precision / recall / F1, confusion), [`calibration`]
//! (reliability, ECE, accuracy vs coverage, lowest threshold for a precision),
//! [`thresholds`] (global and per-class recommendations, `thresholds.toml`), [`compare`]
//! (deltas against the deployed model, int8-vs-f32 agreement), [`labels`] (training
//! labels to re-check), [`drift`] (what the line's uncertain frames look like), [`rules`]
//! (the go / no-go rules), [`host`] (the `bench` figures). [`report`] holds them all (`report.json`); [`html`] renders
//! `report.html` with [`svg`] plots and [`thumbs`] thumbnails.
//!
//! The edge binary links none of this: plotting and HTML stay on the trainer side.

pub mod calibration;
pub mod classes;
pub mod compare;
pub mod drift;
pub mod host;
pub mod html;
pub mod interval;
pub mod labels;
pub mod report;
pub mod rules;
pub mod score;
pub mod svg;
pub mod thresholds;
pub mod thumbs;
