//! The edge runtime's integration tests, one module per topic. `tests/alloc.rs` is a
//! separate binary (it installs a counting global allocator).

mod deps;
mod install;
mod run;
mod tiny;
