//! What the linesight trainer and the edge runtime must agree on.
//!
//! Three types carry the contract:
//! - [`bundle::Bundle`]: the `*.lsb` file (magic, format version, manifest, ONNX bytes,
//!   signature room, checksum) with typed refusal errors;
//! - [`manifest::Manifest`]: the wire types inside it (labels, preprocessing, decision
//!   rule, self-test vectors, parity, provenance);
//! - [`preprocess::Preprocessor`]: the one preprocessing implementation;
//! - [`signature`]: ed25519 key files, bundle signing and verification against trusted keys;
//! - [`output`]: output paths refused when they name an input; [`message`]: an error and
//!   its causes as one line, each cause once.
//!
//! This crate links neither candle nor tract nor any network crate.
//!
//! ```
//! use linesight_shared::{manifest::PreprocessSpec, preprocess::Preprocessor};
//! let mut pre = Preprocessor::new(PreprocessSpec::imagenet());
//! let rgb = vec![128u8; 320 * 240 * 3];
//! let mut tensor = vec![0.0f32; pre.tensor_len()];
//! pre.run(&rgb, 320, 240, &mut tensor).unwrap();
//! assert_eq!(tensor.len(), 3 * 224 * 224);
//! ```

pub mod bundle;
pub mod manifest;
pub mod message;
pub mod output;
pub mod preprocess;
pub mod signature;
