//! linesight's line-side runtime.
//!
//! Main types:
//! - [`engine::Engine`]: an ONNX model planned by tract once and run many times;
//! - [`decide::decide`]: softmax scores to a decision with the manifest's reject rule;
//! - [`slots`]: models on the box (numbered slots, `current` / `previous`, crash-safe switch);
//!   [`swap`]: a running `run` picks up a new `current` between frames;
//! - [`run_loop::Pipeline`] and [`run_loop::run`]: the unattended camera-to-decision
//!   loop of `linesight-edge run` (frame sources in [`source`], stations in [`station`],
//!   sinks in [`sink`], the uncertain store in [`store`], `/healthz` + `/metrics` in
//!   [`http`], counters in [`metrics`]);
//! - [`commands`]: one module per `linesight-edge` subcommand.
//!
//! This crate links no candle and no HTTP client (checked by a test over `cargo tree`).
//!
//! ```
//! use linesight_edge::decide::{decide, softmax};
//! use linesight_shared::manifest::DecisionRule;
//! let mut scores = [2.0f32, 0.5, 0.1];
//! softmax(&mut scores);
//! let d = decide(&scores, &DecisionRule::default(), 2);
//! assert_eq!(d.class, Some(0));
//! ```

pub mod build_info;
pub mod commands;
pub mod config;
pub mod convert;
pub mod decide;
pub mod engine;
pub mod http;
pub mod kernels;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod run_loop;
pub mod shutdown;
pub mod sink;
pub mod slots;
pub mod source;
pub mod station;
pub mod store;
pub mod swap;
pub mod trust;
