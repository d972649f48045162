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
//! And what both binaries do the same way with what a user hands them: [`walk`] (folders:
//! loops, duplicates, FIFOs), [`regular_file`] (opening only regular files, bounded),
//! [`decode`] (the bounded image decoder behind [`preprocess::RgbImage`]) and
//! [`closed_pipe`] (a closed stdout ends quietly).
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
pub mod closed_pipe;
pub mod decode;
pub mod manifest;
pub mod message;
pub mod output;
pub mod preprocess;
pub mod regular_file;
pub mod signature;
pub mod walk;
