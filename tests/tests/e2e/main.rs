//! End-to-end tests across the real binaries: labelled photos -> `linesight-train` ->
//! bundle -> `linesight-edge` decisions, and the refusals a technician can run into.
//!
//! Each test gets a fresh temp directory. The binaries are the ones `cargo test
//! --workspace` builds beside this test executable. Tests needing real weights skip loudly
//! without them (fail under `LINESIGHT_REQUIRE_WEIGHTS=1`).

mod bad_inputs;
mod demo;
mod hostile;
mod mender;
mod near;
mod util;
mod validate;
