//! Nearest-Neighbor Label Refinement (NeaR): the names an MLLM gave, cleaned by the
//! images' neighbours in a backbone's embedding space, and the training that uses them.
//!
//! - [`candidates`]: each image's weighted candidate set (its own names and its k
//!   neighbours' names, weighted by similarity) and the vote over it;
//! - [`refined`]: `refined.json`, the refine stage's output and decision log;
//! - [`train`]: the training methods over frozen embeddings: `near` (partial-label warm-up,
//!   a two-component GMM on per-sample loss splitting clean from noisy samples, refined
//!   targets for the noisy ones), `vote`, `naive` and `prototype`.

pub mod candidates;
pub mod confusion;
pub mod refined;
pub mod train;
