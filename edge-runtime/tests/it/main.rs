//! The edge runtime's integration tests, one module per topic.

mod deps;
mod install;
