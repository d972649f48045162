//! Command-line arguments. These types stay here and in main.rs; commands take settings.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// linesight-edge runs a linesight model bundle (`*.lsb`) on this box, without network.
///
/// Exit codes: 0 every item succeeded, 1 some items failed (each is reported on its own
/// line), 2 the command could not run (bad bundle, bad arguments).
#[derive(Parser)]
#[command(name = "linesight-edge", version, about, long_about)]
pub struct Cli {
    /// Log filter, e.g. `info` or `linesight_edge=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Classify image files and folders with a bundle, one line per image.
    ///
    /// Folders are searched recursively for .jpg/.jpeg/.png/.bmp/.webp files. An image that
    /// cannot be read or decoded gets a line with its error and the run goes on; the exit
    /// code is then 1.
    ///
    /// Example: linesight-edge classify --bundle model.lsb --json photos/
    Classify {
        /// The model bundle (`*.lsb`) to run.
        #[arg(long)]
        bundle: PathBuf,
        /// Print one JSON object per line (path, label, score, margin, topk, latency_ms, error).
        #[arg(long)]
        json: bool,
        /// How many best labels to list per image.
        #[arg(long, default_value_t = 3)]
        top_k: usize,
        /// Image files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}
