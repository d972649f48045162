//! One file per subcommand; each exposes a settings struct and a `run` function.

pub mod classify;
