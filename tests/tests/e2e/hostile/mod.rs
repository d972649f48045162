//! The hostile-input suite (issue 16): what an adversarial user, a shared box or a full
//! disk does to both binaries. One file per class of hazard; each test fails on the code
//! before its fix. Nothing may hang (every child runs under a timeout and is killed past
//! it, so a regression fails instead of blocking CI), nothing may be lost quietly, and no
//! message may lie. Tests needing a real model skip loudly without weights (and fail under
//! `LINESIGHT_REQUIRE_WEIGHTS=1`, as CI runs them).

mod data_loss;
mod dir_source;
mod health;
mod labelling;
mod lost_output;
mod memory;
mod messages;
mod model_root;
mod numbers;
mod pointers;
mod signatures;
mod walk;
