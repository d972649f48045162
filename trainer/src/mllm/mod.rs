//! Naming images with a multimodal LLM (MLLM) over the OpenAI-compatible
//! `/v1/chat/completions` protocol, and an offline simulator of such a model.
//!
//! - [`prompt`]: the versioned prompt files and their rendering (round 1 asks for the
//!   super-category and the expert, round 2 for the most specific name).
//! - [`client`]: the HTTP client: bounded retries with backoff and jitter, `Retry-After`,
//!   typed retryable / per-image / fatal errors, an API key that never prints.
//! - [`answer`]: turning the many shapes real servers answer in into a name.
//! - [`cache`]: the answer log, which is also the cache (append-only JSONL, fsync'd,
//!   torn last line repaired, one answer per key).
//! - [`endpoints`]: several servers behind one run: fewest-in-flight routing, per-endpoint
//!   concurrency limits, failing endpoints set aside with backoff, per-endpoint accounting.
//! - [`labeler`]: asks for every missing answer with bounded concurrency and appends it.
//! - [`accounting`]: calls, tokens, latency percentiles, money, and the direct-MLLM baseline.
//! - [`drift`] and [`score`]: comparing two logs, and scoring a log against true labels.
//! - [`simulator`]: `simulate-mllm`, a *simulator* of a multimodal LLM for tests and demos.
//!
//! The MLLM is called by the trainer only, once per image and cache key; the edge runtime
//! never calls it.

pub mod accounting;
pub mod answer;
pub mod cache;
pub mod client;
pub mod drift;
pub mod endpoints;
pub mod images;
pub mod labeler;
pub mod prompt;
pub mod score;
pub mod simulator;
