//! One file per `linesight-train` subcommand; each takes a settings struct and returns a
//! report struct (printed as JSON with `--json`).

pub mod eval;
pub mod export;
pub mod keygen;
pub mod label;
pub mod mender_artifact;
pub mod pipeline;
pub mod prototypes;
pub mod quantize;
pub mod refine;
pub mod simulate_mllm;
pub mod thresholds;
pub mod train;
pub mod validate;
