//! The hostile-input suite (issue 16): what an adversarial user, a shared box or a full
//! disk does to both binaries. Nothing may hang (every child runs under a timeout and is
//! killed past it, so a regression fails instead of blocking CI), nothing may be lost
//! quietly, and no message may lie. One file per class of trouble.

mod dir_source;
mod labelling;
mod lost_output;
mod memory;
mod numbers;
mod walk;
