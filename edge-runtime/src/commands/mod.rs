//! One file per subcommand; each exposes a settings struct and a `run` function.

pub mod bench;
pub mod cameras;
pub mod classify;
pub mod export_uncertain;
pub mod inspect;
pub mod install;
pub mod rollback;
pub mod run;
pub mod status;
