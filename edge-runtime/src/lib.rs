//! linesight's line-side runtime.
//!
//! Main types:
//! - [`engine::Engine`]: an ONNX model planned by tract once and run many times;
//! - [`decide::decide`]: softmax scores to a decision with the manifest's reject rule;
//! - [`slots`]: models on the box (numbered slots, `current` / `previous`, crash-safe switch);
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

pub mod commands;
pub mod decide;
pub mod engine;
pub mod slots;
pub mod walk;
