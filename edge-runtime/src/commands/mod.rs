//! One file per subcommand; each exposes a settings struct and a `run` function.

pub mod classify;
pub mod install;
pub mod rollback;
pub mod status;
