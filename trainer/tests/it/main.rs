//! The trainer's integration tests, one module per topic.
//!
//! Tests that need real weights find them under `models/weights/` (fetched by
//! `scripts/fetch-weights.sh`). Without them they print a loud SKIPPED line, unless
//! `LINESIGHT_REQUIRE_WEIGHTS=1` (set by `.ci/run`), which turns a missing file into a failure.

mod clip;
mod clip_export;
mod cuda;
mod efficientnet;
mod endpoints;
mod finetune;
mod int8;
mod mllm;
mod mobilenet;
mod numbers;
mod pipeline;
mod refine;
mod sentence;
mod weights;
