//! Command-line arguments. These types stay here and in main.rs; commands take settings.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// linesight-edge runs a linesight model bundle (`*.lsb`) on this box, without network.
///
/// Exit codes: 0 every item succeeded, 1 some items failed (each is reported on its own
/// line), 2 the command could not run (bad bundle, bad arguments). Output into a closed
/// pipe (`| head`) ends quietly with 0.
#[derive(Parser)]
#[command(name = "linesight-edge", version, about, long_about)]
pub struct Cli {
    /// Log filter, e.g. `info` or `linesight_edge=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    /// The largest image decoded, in megapixels (1..=1000; default 50, `run`: also
    /// source.max_image_megapixels). A larger image is refused from its header, naming
    /// its size, before it takes memory; bench --size and the synthetic size are held to
    /// it too.
    #[arg(long, global = true, value_name = "MP")]
    pub max_image_megapixels: Option<u32>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Classify image files and folders with a bundle, one line per image.
    ///
    /// Folders are searched recursively for .jpg/.jpeg/.png/.bmp/.webp files (hidden
    /// entries passed over); symbolic-link loops, second paths to a file already listed and
    /// FIFOs, sockets or devices named like images are skipped and said on stderr, never
    /// opened. An image that cannot be read or decoded (or is larger than
    /// --max-image-megapixels) gets a line with its error and the run goes on; the exit
    /// code is then 1. The bundle's signature is checked against the trusted keys (as
    /// `install` finds them) and a warning goes to stderr unless it is valid. Text lines are
    /// path, label, score, latency separated by tabs, with control characters in a name
    /// escaped (`\n`, `\t`); --json keeps names as they are.
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
        /// With --json: add the model's raw logits (before softmax), to compare boxes and
        /// builds (scripts/box.sh compares aarch64 with x86 this way).
        #[arg(long)]
        logits: bool,
        /// Threads tract runs the model on (1: this thread only).
        #[arg(long, default_value_t = linesight_edge::config::DEFAULT_THREADS)]
        threads: usize,
        /// Models root whose trusted-keys/*.pub are trusted (default: $LINESIGHT_ROOT or
        /// /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Image files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Verify a bundle and make it this box's current model (keeping the previous one).
    ///
    /// Checks the file (checksum, model hash, format version), its signature against the
    /// trusted keys (--trusted-key files, else the config's model.trusted_keys; and
    /// ROOT/trusted-keys/*.pub), compatibility (required runtime version, input shape),
    /// memory for a second model beside a running one (MemAvailable), loading in tract,
    /// runs its self-test vectors and checks free disk space. Only then is it copied into a
    /// new numbered slot (ROOT/slots/NNNN), fsynced, and `current` switched atomically; the
    /// old current becomes `previous`. A refused or interrupted install leaves `current` as
    /// it was. A running `linesight-edge run` following `current` switches to the new
    /// model between two frames.
    ///
    /// Models root: --root, else $LINESIGHT_ROOT, else the config's model.root, else
    /// /var/lib/linesight. Only one install or rollback changes a root at a time; a second
    /// one waits for the first. A broken `current` pointer is replaced.
    ///
    /// Example: linesight-edge install /media/usb/model.lsb --trusted-key /etc/linesight/signing.pub
    Install {
        /// The bundle file (`*.lsb`) to install.
        file: PathBuf,
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Accept a bundle without signature (desktop use only).
        #[arg(long)]
        allow_unsigned: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the previous model (or --slot NNNN) current again, after verifying it as
    /// `install` verifies a bundle.
    ///
    /// The slot's install.json must describe the bundle beside it (size, sha256), and the
    /// bundle must pass the checksum, model hash, its signature against the trusted keys
    /// (unsigned only with --allow-unsigned), the memory check, loading and its self-test.
    /// The model rolled back from becomes `previous`. A broken `current` (empty, garbage,
    /// naming a missing slot) is repaired: previous if it verifies, else the newest slot
    /// that does.
    ///
    /// Example: linesight-edge rollback --root /var/lib/linesight
    ///
    /// Example: linesight-edge rollback --slot 0003 --trusted-key /etc/linesight/signing.pub
    Rollback {
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Switch to this installed slot (e.g. 0003) instead of the previous one.
        #[arg(long, value_name = "NNNN")]
        slot: Option<String>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Accept an unsigned slot (one installed with --allow-unsigned).
        #[arg(long)]
        allow_unsigned: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the unattended camera-to-decision loop: frames -> stations -> decisions.
    ///
    /// Every setting can come from a config file (--config edge.toml; the documented
    /// example is edge-runtime/examples/edge.toml) and every flag overrides the file.
    /// Precedence: flag > $LINESIGHT_ROOT > file > default. Unknown config keys are refused.
    ///
    /// One JSON line per station and frame goes to the sink (default stdout). A bad frame
    /// is skipped and counted; a source that fails or stalls is reopened with backoff.
    /// SIGTERM / SIGINT finish the frame in hand, flush the sink and exit 0; the exit code
    /// is 1 when output was lost (decisions the sink could not write, e.g. a full disk; a
    /// station region that did not fit a frame). A station region outside the first frame
    /// stops the run (exit 2). Under systemd,
    /// READY=1 and WATCHDOG=1 are sent to $NOTIFY_SOCKET.
    ///
    /// Example: linesight-edge run --source dir:/data/parts --loop --fps 5 --http 127.0.0.1:9464
    Run(RunArgs),
    /// Copy the uncertain store (rejected / uncertain frames with their decision lines) to
    /// a folder, e.g. a USB stick, for the next training round.
    ///
    /// Example: linesight-edge export-uncertain --out /media/usb/uncertain --clear
    ExportUncertain {
        /// Destination folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The store folder (default: the config's store.dir, else ROOT/uncertain).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Read the store folder and root from this edge.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Remove the exported entries from the store after the copy is fsynced.
        #[arg(long)]
        clear: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure a bundle on this box: load time (read, verify, plan, warm-up), per-image
    /// latency p50/p95/p99 with preprocessing and inference apart, peak RSS (VmHWM) and
    /// bundle size.
    ///
    /// Each image is a synthetic --size frame, preprocessed as the manifest says, then
    /// inferred. --profile adds the share of each tract op type in one run (median of 5
    /// runs per node). --pipeline measures instead the run loop's frames/s (synthetic
    /// source, null sink) against bare inference, interleaved over --rounds of --frames.
    ///
    /// Example: linesight-edge bench --bundle model.lsb --threads 2 --iterations 200 --json
    ///
    /// Example: linesight-edge bench --bundle model-int8.lsb --profile --nodes
    ///
    /// Example: linesight-edge bench --bundle model.lsb --pipeline --frames 100 --rounds 7
    Bench {
        /// The bundle (default: the installed current model under --root).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Threads tract runs the model on (1: this thread only).
        #[arg(long, default_value_t = linesight_edge::config::DEFAULT_THREADS)]
        threads: usize,
        /// Measured images (after --warmup unmeasured ones).
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        /// Unmeasured images first (caches, CPU clocks).
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Also time every op of the plan and print each op type's share.
        #[arg(long, conflicts_with = "pipeline")]
        profile: bool,
        /// With --profile: also list every node of tract's plan (op, output shape, layout,
        /// kernel) with its time.
        #[arg(long, requires = "profile")]
        nodes: bool,
        /// Measure the run loop against bare inference (frames/s) instead.
        #[arg(long)]
        pipeline: bool,
        /// --pipeline: frames per round and variant.
        #[arg(long, default_value_t = 100, requires = "pipeline")]
        frames: u64,
        /// --pipeline: rounds (each runs both variants, alternating which goes first).
        #[arg(long, default_value_t = 7, requires = "pipeline")]
        rounds: usize,
        /// Synthetic frame size WIDTHxHEIGHT.
        #[arg(long, default_value = "640x480", value_parser = parse_size)]
        size: (u32, u32),
        /// Print the report as one JSON object (with the raw per-image or per-round times).
        #[arg(long)]
        json: bool,
    },
    /// Show what a bundle holds and write its ONNX model out for other tools.
    ///
    /// Verifies the file (checksum, model hash) and prints the manifest: model id and
    /// version, precision, labels, preprocessing, decision rule, parity figures,
    /// provenance, self-test vectors, the signature (valid, invalid, untrusted or unsigned,
    /// checked against the trusted keys as `install` finds them), and the ONNX model's size
    /// and sha256. --extract-onnx writes the raw ONNX bytes, which onnxruntime and Netron
    /// open as they are (never over the bundle itself).
    ///
    /// Example: linesight-edge inspect --bundle model.lsb --extract-onnx model.onnx
    Inspect {
        /// The bundle (`*.lsb`).
        #[arg(long)]
        bundle: PathBuf,
        /// Write the model's ONNX bytes to this file.
        #[arg(long, value_name = "FILE")]
        extract_onnx: Option<PathBuf>,
        /// Models root whose trusted-keys/*.pub are trusted (default: $LINESIGHT_ROOT or
        /// /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the cameras: device nodes, names, the stable id to use in `--source camera:ID`
    /// (/dev/v4l/by-id) and, with the `camera` feature, their formats and the mode `run`
    /// would choose.
    ///
    /// Example: linesight-edge cameras --config /etc/linesight/edge.toml
    Cameras {
        /// Apply this edge.toml's [source.camera] override to the mode shown.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the installed models: slots, ids, versions, signatures, install times,
    /// current/previous; and diagnose the root.
    ///
    /// Each slot's bundle is read: its install.json must describe it (sha256), and its
    /// signature is checked against the trusted keys. A broken `current` or `previous`
    /// (empty, not text, not a slot name, naming a missing slot), a record that describes
    /// another bundle, a damaged bundle or an invalid signature is listed with what to run,
    /// and the exit code is 1.
    ///
    /// Example: linesight-edge status --json
    Status {
        /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
        #[arg(long)]
        root: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Where the trusted keys come from, for every command that checks a signature: the same
/// sources as `install` (and ROOT/trusted-keys/*.pub always).
#[derive(clap::Args)]
pub struct TrustArgs {
    /// A trusted public key file (`signing.pub`); repeatable. Without it, the config's
    /// model.trusted_keys are used; ROOT/trusted-keys/*.pub are trusted in every case.
    #[arg(long = "trusted-key", value_name = "PUB")]
    pub trusted_keys: Vec<PathBuf>,
    /// The box's edge.toml: trusted keys (model.trusted_keys, used without
    /// --trusted-key), model.allow_unsigned and model.root.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Flags of `run`; each overrides the same key of the config file.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Config file (TOML); see edge-runtime/examples/edge.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The bundle to run (default: the installed current model under --root).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Models root (default: $LINESIGHT_ROOT or /var/lib/linesight).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Frame source: dir:PATH | synthetic[:FPS] | camera:ID (a /dev/v4l/by-id path, a name
    /// or serial, or an index; needs the camera feature; see `linesight-edge cameras`).
    #[arg(long)]
    pub source: Option<String>,
    /// Frames per second of the source (dir: replay rate; synthetic: generation rate).
    #[arg(long)]
    pub fps: Option<f64>,
    /// dir: start over after the last image.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Process every frame (triggered capture) instead of only the latest.
    #[arg(long)]
    pub every_frame: bool,
    /// Stop after N frames (0: run until stopped).
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Decision lines: jsonl:- (stdout) | jsonl:PATH (size-rotated) | none.
    #[arg(long)]
    pub sink: Option<String>,
    /// Serve /healthz and /metrics on this loopback address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub http: Option<String>,
    /// Uncertain store folder (default: ROOT/uncertain).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Do not save uncertain / rejected frames.
    #[arg(long)]
    pub no_store: bool,
    /// Average scores over the last N frames (1..=32).
    #[arg(long)]
    pub smoothing: Option<usize>,
    /// Reopen the source after this long without a usable frame (milliseconds).
    #[arg(long)]
    pub stall_timeout_ms: Option<u64>,
    /// How many best labels each decision line lists (1..=8).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Threads tract runs the model on (config: model.threads; default 1).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the final report as JSON on stdout (after the decision lines).
    #[arg(long)]
    pub json: bool,
    /// Print the resolved settings as JSON and exit (tests pin precedence with it).
    #[arg(long, hide = true)]
    pub show_settings: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not WIDTHxHEIGHT (e.g. 640x480)");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}
