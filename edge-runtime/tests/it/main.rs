//! The edge runtime's integration tests, one module per topic. `tests/alloc.rs` is a
//! separate binary (it installs a counting global allocator).

mod bench;
mod camera;
mod classify;
mod convert;
mod deps;
mod inspect;
mod install;
mod install_bin;
mod run;
mod swap;
mod tiny;
