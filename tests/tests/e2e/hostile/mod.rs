//! The hostile-input suite (issue 16): what an adversarial user, a shared box or a full
//! disk does to both binaries. One file per class of hazard; each test fails on the code
//! before its fix. Tests needing a real model skip loudly without weights (and fail under
//! `LINESIGHT_REQUIRE_WEIGHTS=1`, as CI runs them).

mod data_loss;
mod health;
mod labelling;
mod messages;
mod model_root;
mod numbers;
mod pointers;
mod signatures;
