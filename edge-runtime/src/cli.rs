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
    /// Verify a bundle and make it this box's current model (keeping the previous one).
    ///
    /// Checks the file (checksum, model hash, format version), its signature against the
    /// trusted keys (--trusted-key files and ROOT/trusted-keys/*.pub), compatibility
    /// (required runtime version, input shape, loading in tract), runs its self-test
    /// vectors and checks free disk space. Only then is it copied into a new numbered slot
    /// (ROOT/slots/NNNN), fsynced, and `current` switched atomically; the old current
    /// becomes `previous`. A refused or interrupted install leaves `current` as it was.
    ///
    /// Models root: --root, else $LINESIGHT_ROOT, else /var/lib/linesight.
    ///
    /// Example: linesight-edge install /media/usb/model.lsb --trusted-key /etc/linesight/signing.pub
    Install {
        /// The bundle file (`*.lsb`) to install.
        file: PathBuf,
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        /// A trusted public key file (`signing.pub`); repeatable.
        #[arg(long = "trusted-key", value_name = "PUB")]
        trusted_keys: Vec<PathBuf>,
        /// Accept a bundle without signature (desktop use only).
        #[arg(long)]
        allow_unsigned: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the previous model current again (after checking it still self-tests).
    ///
    /// Example: linesight-edge rollback --root /var/lib/linesight
    Rollback {
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the installed models: slots, ids, versions, signers, install times, current/previous.
    ///
    /// Example: linesight-edge status --json
    Status {
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}
