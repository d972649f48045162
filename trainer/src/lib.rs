//! linesight's trainer: from unlabeled photos and machine-made names to a signed bundle.
//!
//! Main types:
//! - [`backbone::ImageEncoder`]: a backbone in candle that can also write itself as ONNX;
//! - [`head::CosineHead`]: the scaled-cosine classifier on top;
//! - [`export::export_f32`]: backbone + head -> ONNX -> tract parity check -> bundle.
//!
//! ```
//! use linesight_trainer::export::onnx::GraphBuilder;
//! let mut g = GraphBuilder::new();
//! let x = g.input("x", &[1, 4]);
//! let y = g.node("Relu", &[&x], vec![]);
//! g.node_named("Identity", &[&y], vec![], "y");
//! g.output("y", &[1, 4]);
//! assert!(!g.finish("doc").unwrap().is_empty());
//! ```

pub mod augment;
pub mod backbone;
pub mod bounds;
pub mod checkpoint;
pub mod commands;
pub mod dataset;
pub mod device;
pub mod embed;
pub mod export;
pub mod finetune;
pub mod gmm;
pub mod head;
pub mod knn;
pub mod metrics;
pub mod mllm;
pub mod near;
pub mod sentence;
pub mod validate;
pub mod vocab;
