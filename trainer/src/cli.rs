//! Command-line arguments. These types stay here and in main.rs; commands take settings.

use clap::{Parser, Subcommand};
use linesight_trainer::backbone::BackboneKind;
use linesight_trainer::bounds::{parser, Bound};
use linesight_trainer::commands::label;
use linesight_trainer::near::train::TrainSettings;
use std::path::PathBuf;

/// `--gate-confidence`: a one-sided confidence level, at least 0.5 and below 1.
const GATE_CONFIDENCE: Bound = Bound {
    min: 0.5,
    min_inclusive: true,
    max: 1.0,
    max_inclusive: false,
};

/// linesight-train: label, refine, train, export and evaluate linesight models.
///
/// Exit codes: 0 success, 2 the command failed (the message says why), 3 `validate`'s
/// verdict is no-go. Output into a closed pipe (`| head`) ends quietly with 0.
#[derive(Parser)]
#[command(name = "linesight-train", version, about, long_about)]
pub struct Cli {
    /// Log filter, e.g. `info` or `linesight_trainer=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// Print the command's report as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// The largest image decoded (embeddings, eval, calibration, labelling), in
    /// megapixels (1..=1000; default 50). A larger image is refused from its header,
    /// naming its size, before it takes memory.
    #[arg(long, global = true, value_name = "MP")]
    pub max_image_megapixels: Option<u32>,
    #[command(subcommand)]
    pub command: Command,
}

/// int8 calibration, parity gate and what to quantise (`quantize`, `export --int8`,
/// `prototypes --int8`).
#[derive(clap::Args, Debug, Clone)]
pub struct QuantArgs {
    /// Calibration images (training photos): a folder, or a `path,label,split` CSV whose
    /// --calibration-split rows are used (labels are not read).
    #[arg(long, value_name = "DIR|CSV")]
    pub calibration: Option<PathBuf>,
    /// The CSV split used for calibration (and parity, when --parity is a CSV).
    #[arg(long, default_value = "train")]
    pub calibration_split: String,
    /// Held-out images for the parity check (folder or CSV); default: every 4th
    /// calibration image, set aside and not calibrated on.
    #[arg(long, value_name = "DIR|CSV")]
    pub parity: Option<PathBuf>,
    /// The CSV split used for parity when --parity is a CSV (default: --calibration-split;
    /// e.g. `test` for cub26's held-out photos).
    #[arg(long)]
    pub parity_split: Option<String>,
    /// At most this many calibration images (evenly spaced).
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub calibration_images: usize,
    /// At most this many parity images (evenly spaced).
    #[arg(long, default_value_t = 400, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub parity_images: usize,
    /// Refuse the int8 bundle unless its top-1 agreement with the f32 model is at least this
    /// (0..1) at --gate-confidence: the lower confidence bound on the held-out images counts,
    /// not the plain ratio, so a small sample cannot certify a high figure (99 % at 95 %
    /// confidence needs at least 268 held-out images, all agreeing).
    #[arg(long, default_value_t = 0.99, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::UNIT))]
    pub min_agreement: f32,
    /// Quantise every layer the rules allow, even those measured slower in int8 than in
    /// f32 in tract on this machine (by default they stay f32, and an int8 model that is
    /// still not faster is refused).
    #[arg(long)]
    pub keep_slow_layers: bool,
    /// A layer stays int8 when it runs faster than in f32 by more than this fraction.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::UNIT))]
    pub speed_margin: f64,
    /// Write the int8 bundle even when it is not faster than the f32 one here.
    #[arg(long)]
    pub allow_slower: bool,
    /// One-sided confidence of the parity gate's lower bound (Wilson score), 0.5..1.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true, value_parser = parser::<f64>(GATE_CONFIDENCE))]
    pub gate_confidence: f64,
    /// Write the int8 bundle even below --min-agreement (its figures are recorded).
    #[arg(long)]
    pub allow_parity_drop: bool,
    /// Keep convolutions in f32 (quantise matmuls only).
    #[arg(long)]
    pub no_conv: bool,
    /// Keep matmuls in f32 (quantise convolutions only).
    #[arg(long)]
    pub no_matmul: bool,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Quantise matmuls of two activations too (attention's Q K^T); measured slower in
    /// tract 0.23.9, so off by default.
    #[arg(long)]
    pub quantize_attention: bool,
    /// Put back in f32 the N layers whose int8 error moves the logits most (measured one
    /// layer at a time on --sensitivity-images calibration images; costs one model build
    /// and run per layer).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fallback_layers: usize,
    /// Calibration images the --fallback-layers measurement runs on.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub sensitivity_images: usize,
    /// Quantise the first layer (reads the image) and the last one (makes the embedding)
    /// too; by default they stay f32.
    #[arg(long)]
    pub quantize_first_last: bool,
    /// Quantise activations with the ONNX QuantizeLinear op (recognised by other runtimes;
    /// tract runs it one value at a time) instead of Mul/round/Clip/Cast.
    #[arg(long)]
    pub quantize_linear_op: bool,
    /// Quantise every activation symmetrically (-max..max onto -127..127), also the
    /// non-negative ones after a ReLU, which by default span all 255 int8 steps (0..max
    /// onto -127..127, twice the resolution; measured in docs/benchmarks.md).
    #[arg(long)]
    pub signed_activations: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build a bundle from labelled images: class prototypes on a backbone.
    ///
    /// Reads a manifest CSV with columns `path,label,split` (paths relative to the CSV),
    /// embeds the images of one split, averages each class's L2-normalized embeddings into
    /// a prototype and exports backbone + scaled-cosine head as a bundle. The export is
    /// checked: tract must reproduce candle's logits on real images within 1e-4.
    ///
    /// Example: linesight-train prototypes --manifest data/manifest.csv --split train --out model.lsb
    Prototypes {
        /// Backbone to embed with.
        #[arg(long, value_enum, default_value = "mobilenet-v2")]
        backbone: BackboneKind,
        /// Weights file; default: the backbone's file under `models/weights/`.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Labelled manifest CSV (`path,label,split`).
        #[arg(long)]
        manifest: PathBuf,
        /// Which split's rows to use.
        #[arg(long, default_value = "train")]
        split: String,
        /// Output bundle file (`*.lsb`).
        #[arg(long)]
        out: PathBuf,
        /// Model id written into the manifest.
        #[arg(long, default_value = "prototypes")]
        model_id: String,
        /// Logit scale of the cosine head.
        #[arg(long, default_value_t = linesight_trainer::head::DEFAULT_SCALE, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::POSITIVE))]
        scale: f32,
        /// Images per forward pass.
        #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
        batch: usize,
        /// Training images compared between candle and tract at export.
        #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
        check_images: usize,
        /// Sign the bundle with this secret key file (`signing.key` from `keygen`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// Also quantise to int8 (needs --calibration): OUT becomes the int8 bundle and the
        /// f32 baseline is written beside it as OUT with `.f32.lsb`.
        #[arg(long)]
        int8: bool,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Make an ed25519 key pair for signing bundles.
    ///
    /// Writes DIR/signing.key (secret, mode 0600; keep it off the boxes) and DIR/signing.pub
    /// (trusted by boxes: ROOT/trusted-keys/ or `linesight-edge install --trusted-key`).
    /// Refuses to overwrite an existing key.
    ///
    /// Example: linesight-train keygen --out keys/
    Keygen {
        /// Folder to write signing.key and signing.pub into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Score a bundle on a labelled split (cACC, exact top-1), as the edge runs it.
    ///
    /// Example: linesight-train eval --bundle model.lsb --manifest data/manifest.csv --split test
    Eval {
        /// The bundle to score.
        #[arg(long)]
        bundle: PathBuf,
        /// Labelled manifest CSV (`path,label,split`).
        #[arg(long)]
        manifest: PathBuf,
        /// Which split's rows to score.
        #[arg(long, default_value = "test")]
        split: String,
        /// all-MiniLM-L6-v2 folder for sACC; default: `all-MiniLM-L6-v2` under the weights
        /// folder. When it does not exist, sACC is skipped with a warning.
        #[arg(long, value_name = "DIR")]
        sentence_model: Option<PathBuf>,
        /// The refined.json the model was trained from: the report then also shows the
        /// MLLM's estimated habits and how many training targets each signal changed.
        #[arg(long, value_name = "FILE")]
        refined: Option<PathBuf>,
    },
    /// Clean the MLLM's names with the images' neighbours (NeaR refine).
    ///
    /// Builds the vocabulary (surface forms normalized, plurals and synonyms merged with
    /// all-MiniLM-L6-v2, generic names such as "a small bird" dropped, rare names dropped),
    /// embeds every image with the backbone (cached by content under --cache), finds each
    /// image's k nearest neighbours by cosine, and gives each image a candidate set: its own
    /// names and its neighbours' names weighted by similarity. Writes refined.json: the
    /// vocabulary, and per image its MLLM names, candidates, weights and vote (the decision log).
    ///
    /// Example: linesight-train refine --images photos/ --labels labels.jsonl --out refined.json
    Refine(Box<RefineArgs>),
    /// Train a classifier head from refined.json (near, vote, naive or prototype).
    ///
    /// The backbone is frozen; the scaled-cosine head trains on its cached embeddings.
    /// `near` (default): partial-label warm-up on the candidate sets, then a two-component
    /// Gaussian mixture on per-sample loss splits clean from noisy images, and noisy images
    /// train on targets refined from the model and their neighbours. Writes a checkpoint
    /// folder (head.safetensors, checkpoint.json, targets.jsonl). With --eval-manifest, also
    /// scores the head on a labelled split (cACC, exact top-1, sACC).
    ///
    /// Example: linesight-train train --refined refined.json --out ckpt/
    Train(Box<TrainArgs>),
    /// Write a checkpoint as a bundle (f32 ONNX, parity-checked against tract; optionally signed).
    ///
    /// Example: linesight-train export --checkpoint ckpt/ --out model.lsb --sign keys/signing.key
    Export {
        /// Checkpoint folder written by `train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output bundle file (`*.lsb`).
        #[arg(long)]
        out: PathBuf,
        /// Backbone weights (default: the file the checkpoint names).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Model id written into the manifest.
        #[arg(long, default_value = "linesight")]
        model_id: String,
        /// Sign the bundle with this secret key file (`signing.key` from `keygen`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// Also quantise to int8 (needs --calibration): OUT becomes the int8 bundle and the
        /// f32 baseline is written beside it as OUT with `.f32.lsb`.
        #[arg(long)]
        int8: bool,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Quantise an f32 bundle to int8: calibrate on training images, check tract's plan,
    /// and refuse the result unless its top-1 agrees with the f32 model on >= 99 % of
    /// held-out images (figures go into the manifest and the report).
    ///
    /// Example: linesight-train quantize --bundle model.lsb --calibration data/manifest.csv --out model-int8.lsb
    Quantize {
        /// The f32 bundle to quantise.
        #[arg(long)]
        bundle: PathBuf,
        /// Output bundle file (`*.lsb`).
        #[arg(long)]
        out: PathBuf,
        /// Sign the bundle with this secret key file (`signing.key` from `keygen`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Run label -> refine -> train -> export -> eval from one TOML file.
    ///
    /// Each stage is skipped when the hash of its inputs (files and settings) is the one
    /// recorded when it last finished (WORK_DIR/pipeline-state.json) and its output exists;
    /// a killed pipeline resumes where it stopped. See examples/cub26.toml for every key.
    ///
    /// Example: linesight-train pipeline --config examples/cub26.toml
    Pipeline {
        /// Pipeline TOML file (relative paths in it are relative to its folder).
        #[arg(long)]
        config: PathBuf,
        /// Run every stage even when its inputs are unchanged.
        #[arg(long)]
        force: bool,
        /// Where the backbone computes (refine's embeddings, fine-tuning): cpu, cuda or
        /// cuda:N; default: the config's `device`.
        #[arg(long)]
        device: Option<linesight_trainer::device::DeviceChoice>,
    },
    /// Name every image once with a multimodal LLM (resumable; the log is the cache).
    ///
    /// Speaks the OpenAI-compatible `/chat/completions` protocol (vLLM, Ollama, llama.cpp
    /// server, LM Studio, OpenAI, Gemini's compatible endpoint), one image inline per request.
    /// Round 1 asks a few images for the category and the expert; round 2 asks each image
    /// for its most specific name as JSON. Every answer is one fsync'd JSON line in `--out`;
    /// a rerun asks only what is missing for the same model + prompt + parameters, so a
    /// killed run resumes. Accounting is printed and written to `<out>.accounting.json`.
    ///
    /// Several servers of the same model: give --endpoint once per server. Each request
    /// goes to the endpoint with the fewest requests in flight, each within its own limit
    /// (--concurrency, or `URL,concurrency=N`); an endpoint that fails 3 times in a row is
    /// set aside with a doubling backoff and its requests go to the others. The log records
    /// which endpoint answered; the cache key does not include it. The accounting has
    /// calls, errors and latency per endpoint.
    ///
    /// Example: linesight-train label --images photos/ --endpoint http://127.0.0.1:8000/v1 --model qwen2.5-vl-7b --out labels.jsonl
    ///
    /// Example: linesight-train label --images photos/ --endpoint http://gpu1:8000/v1 --endpoint http://gpu2:8000/v1,concurrency=4 --model qwen2.5-vl-7b --out labels.jsonl
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Label(Box<LabelArgs>),
    /// Serve a SIMULATOR of a multimodal LLM (same protocol) for tests and demos.
    ///
    /// Not a model: it recognises each image by the sha256 of its bytes in the truth manifest
    /// and answers from its true label through a noise model shaped like real MLLM errors:
    /// the correct name with probability --accuracy, otherwise a confusable sibling class
    /// (same group), a coarse name ("a small bird"), or a plausible name outside the data set,
    /// in varied surface forms. Answers are reproducible per --seed, prompt and the
    /// request's `seed` (the labeller sends the sample index): sample 0 is the image's greedy
    /// answer, other samples at temperature T are fresh draws with probability T/(1+T). A
    /// prompt that offers a list of expected names (`label --vocabulary`) is answered from
    /// the list. --systematic and --spread add habits: a fixed partner class per class that
    /// takes a share of its mistakes, and per-class accuracies around --accuracy. --direct
    /// SPLIT prints what asking it about every image of a split would score, and exits.
    /// --fault-rate injects 429 (with Retry-After), 500, slow and malformed replies.
    /// Runs until Ctrl-C, then prints what it served.
    ///
    /// Example: linesight-train simulate-mllm --truth data/cub26/manifest.csv --listen 127.0.0.1:8089
    SimulateMllm(Box<SimulateArgs>),
    /// Wrap a signed bundle into a Mender artifact for the `linesight-model` Update Module.
    ///
    /// Verifies the bundle (checksum, model hash, signature: against --trusted-key files,
    /// else the key it carries), then runs Mender's `mender-artifact write module-image`:
    /// payload type `linesight-model` with the bundle as `model.lsb`, the --device-type(s),
    /// provides `linesight.model.id` and `linesight.model.version`, and depends
    /// `linesight.runtime.version` (Mender compares it by exact value with what the box's
    /// runtime artifact provides; default: the bundle's min_runtime_version). The box
    /// needs packaging/mender/linesight-model in /usr/share/mender/modules/v3/ (see
    /// docs/fleet.md). Gate it on the validation report (`linesight-train validate`)
    /// before a fleet sees it.
    ///
    /// Example: linesight-train mender-artifact --bundle model.lsb --device-type line-box-arm64 --runtime-version 0.1.0 --out model.mender
    MenderArtifact {
        /// The signed bundle (`*.lsb`).
        #[arg(long)]
        bundle: PathBuf,
        /// Mender device type the artifact installs on; repeatable.
        #[arg(long = "device-type", value_name = "TYPE", required = true)]
        device_types: Vec<String>,
        /// The artifact file to write (`*.mender`).
        #[arg(long)]
        out: PathBuf,
        /// Artifact name (default: MODEL_ID-MODEL_VERSION).
        #[arg(long)]
        artifact_name: Option<String>,
        /// The linesight.runtime.version the boxes provide (default: the bundle's
        /// min_runtime_version; refused when older than that).
        #[arg(long, value_name = "VERSION")]
        runtime_version: Option<String>,
        /// Leave out the runtime depends (boxes whose runtime did not come through Mender
        /// provide no linesight.runtime.version; install still checks the version).
        #[arg(long, conflicts_with = "runtime_version")]
        no_runtime_depends: bool,
        /// Public key file (`signing.pub`) the bundle must be signed with; repeatable.
        #[arg(long = "trusted-key", value_name = "PUB")]
        trusted_keys: Vec<PathBuf>,
        /// Accept an unsigned bundle (boxes refuse it unless their edge.toml allows it).
        #[arg(long)]
        allow_unsigned: bool,
        /// The mender-artifact program.
        #[arg(long, value_name = "PATH", default_value = "mender-artifact")]
        mender_artifact: PathBuf,
    },
    /// Decide whether a bundle may go to the line: one offline report, go or no-go.
    ///
    /// Runs the bundle exactly as the box does (the edge's engine and preprocessing) on a
    /// labelled split and writes, into --out: report.html (one self-contained page that
    /// opens with no network: verdict, headline figures with 95 % intervals, per-class
    /// precision / recall / F1, confusion heatmap and most confused pairs, reliability and
    /// accuracy against coverage, recommended thresholds, galleries of mistakes, the
    /// comparison with the deployed model, training labels to re-check, the line's
    /// uncertain frames, latency and memory on this host), report.json (the same figures,
    /// with a schema version), thresholds.toml (the thresholds that reach
    /// --target-precision; apply them with `linesight-train thresholds`) and, with
    /// --refined, to-verify.csv (for `refine --verified`).
    ///
    /// A manifest row whose image is missing or corrupt is listed in the report and left
    /// out of every figure; a bundle that does not load stops the command (exit 2).
    ///
    /// Exit codes: 0 go (every --require rule passes), 3 no-go (a rule fails, cannot be
    /// checked, or the bundle fails its self-test), 2 the report could not be made.
    ///
    /// Rules (--require, comma-separated METRIC OP VALUE with OP one of >= <= > <): top1,
    /// top1_low, cacc, sacc, min_class_recall, min_class_precision, min_class_f1, ece,
    /// max_class_regression and top1_delta (need --baseline), int8_agreement and
    /// min_class_int8_agreement (1 for an f32 bundle), coverage (of the recommended
    /// thresholds), unreadable (rows), p95_ms (this host).
    ///
    /// Example: linesight-train validate --bundle new.lsb --manifest data/manifest.csv --baseline deployed.lsb --require top1>=0.80,min_class_recall>=0.5,max_class_regression<=0.05 --out report/
    Validate(Box<ValidateArgs>),
    /// Write the thresholds of a `validate` thresholds.toml into a copy of a bundle.
    ///
    /// Thresholds travel in the bundle's manifest (edge.toml refuses them), so the copy is
    /// what `linesight-edge classify`, `run` and `install` then use. Only the decision rule
    /// changes; the copy must be signed again (--sign) for `install`. Refuses a file made
    /// for another model (sha256) or naming a class the model lacks.
    ///
    /// Example: linesight-train thresholds --bundle new.lsb --set report/thresholds.toml --out new.tuned.lsb --sign keys/signing.key
    Thresholds {
        /// The bundle to copy.
        #[arg(long)]
        bundle: PathBuf,
        /// The thresholds file written by `validate`.
        #[arg(long, value_name = "FILE")]
        set: PathBuf,
        /// The bundle to write.
        #[arg(long)]
        out: PathBuf,
        /// Sign the copy with this secret key file (`signing.key` from `keygen`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
    },
}

/// Arguments of `validate`.
#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The bundle to validate (`*.lsb`).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Labelled manifest CSV (`path,label,split`, paths relative to the CSV).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Which split's rows to score.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// The bundle deployed now: per-class deltas, images that flipped.
    #[arg(long, value_name = "DEPLOYED.lsb")]
    pub baseline: Option<PathBuf>,
    /// The f32 twin of an int8 bundle (default: NAME.f32.lsb beside it, else the
    /// baseline when it is the twin, else the manifest's export-time parity figures).
    #[arg(long, value_name = "F32.lsb")]
    pub twin: Option<PathBuf>,
    /// The refined.json the model was trained from: training labels to re-check.
    #[arg(long, value_name = "FILE")]
    pub refined: Option<PathBuf>,
    /// The checkpoint's targets.jsonl (final training targets), with --refined.
    #[arg(long, value_name = "FILE", requires = "refined")]
    pub targets: Option<PathBuf>,
    /// A folder written by `linesight-edge export-uncertain --out DIR`: drift and
    /// decisions on what the line saw.
    #[arg(long, value_name = "DIR")]
    pub uncertain: Option<PathBuf>,
    /// Precision the recommended thresholds must reach (0..1].
    #[arg(long, default_value_t = 0.95)]
    pub target_precision: f64,
    /// Go / no-go rules, e.g. `top1>=0.80,min_class_recall>=0.5,max_class_regression<=0.05,int8_agreement>=0.99`.
    #[arg(long, default_value = "", value_name = "RULES")]
    pub require: String,
    /// Output folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// all-MiniLM-L6-v2 folder for sACC; default: under the weights folder. Skipped, and
    /// said so in the report, when missing.
    #[arg(long, value_name = "DIR")]
    pub sentence_model: Option<PathBuf>,
    /// Backbone weights for the drift embeddings (default: the bundle's backbone's file
    /// under the weights folder).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Embedding cache for the drift section (default: `cache` beside --refined, else
    /// OUT/embedding-cache).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// A public key (`signing.pub`) the bundle should be signed with; repeatable.
    #[arg(long, value_name = "PUB")]
    pub trusted_key: Vec<PathBuf>,
    /// Images timed by the host benchmark (0: skip it).
    #[arg(long, default_value_t = 50)]
    pub bench_iterations: usize,
    /// Threads tract runs the model on in the benchmark.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Bootstrap resamples for the cACC and sACC intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Arguments of `label`.
#[derive(clap::Args)]
pub struct LabelArgs {
    #[command(subcommand)]
    pub action: Option<LabelAction>,
    /// Folder of images to label (searched recursively).
    #[arg(long, required = true)]
    pub images: Option<PathBuf>,
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8000/v1`; repeat it for
    /// several servers of the same model. `URL,concurrency=N` gives one its own limit.
    #[arg(long = "endpoint", value_name = "URL[,concurrency=N]", required = true)]
    pub endpoints: Vec<String>,
    /// Model name sent with every request.
    #[arg(long, required = true)]
    pub model: Option<String>,
    /// The answer log (JSONL, appended; also the cache).
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Environment variable holding the API key (the key itself never goes on the command line or in a log).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Requests in flight at once, per endpoint (unless it has its own `,concurrency=N`;
    /// 1..=4096).
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = parser::<usize>(label::CONCURRENCY))]
    pub concurrency: usize,
    /// Naming prompt file (default: the embedded prompts/v1/naming.txt).
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Round-1 prompt file (default: the embedded prompts/v1/category.txt).
    #[arg(long)]
    pub category_prompt: Option<PathBuf>,
    /// Skip round 1: the category the images show (needs --expert and --granularity too).
    #[arg(long, requires_all = ["expert", "granularity"])]
    pub category: Option<String>,
    /// Skip round 1: the expert who names them, e.g. `ornithologist`.
    #[arg(long, requires = "category")]
    pub expert: Option<String>,
    /// Skip round 1: what the expert names, e.g. `species`.
    #[arg(long, requires = "category")]
    pub granularity: Option<String>,
    /// Images asked in round 1.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub context_images: usize,
    /// Label only the first N images (path order) and project the cost of all of them.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub dry_run: Option<usize>,
    /// Retries per request after the first attempt (429, 5xx, timeouts, resets).
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// First retry backoff in milliseconds (doubles per retry, full jitter; Retry-After wins).
    #[arg(long, default_value_t = 500)]
    pub retry_base_ms: u64,
    /// Per-request timeout in seconds (above 0, at most 86400).
    #[arg(long, default_value_t = 120.0, allow_negative_numbers = true, value_parser = parser::<f64>(label::TIMEOUT_S))]
    pub timeout: f64,
    /// Sampling temperature, 0 to 2 (part of the cache key).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parser::<f64>(label::TEMPERATURE))]
    pub temperature: f64,
    /// Answer token limit (part of the cache key; reasoning models need more).
    #[arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = parser::<u32>(Bound::AT_LEAST_ONE))]
    pub max_tokens: u32,
    /// Price per million input tokens (any currency; enables money figures).
    #[arg(long, requires = "price_out", allow_negative_numbers = true, value_parser = parser::<f64>(Bound::NON_NEGATIVE))]
    pub price_in: Option<f64>,
    /// Price per million output tokens.
    #[arg(long, requires = "price_in", allow_negative_numbers = true, value_parser = parser::<f64>(Bound::NON_NEGATIVE))]
    pub price_out: Option<f64>,
    /// Project the direct-MLLM baseline (asking the model about every image) for N images.
    #[arg(long, value_name = "N", conflicts_with = "baseline_manifest", allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub baseline_images: Option<usize>,
    /// Project the direct-MLLM baseline for the rows of --baseline-split of this manifest.
    #[arg(long)]
    pub baseline_manifest: Option<PathBuf>,
    /// Split of --baseline-manifest to count.
    #[arg(long, default_value = "test")]
    pub baseline_split: String,
    /// Accounting file (default: `<out>.accounting.json`).
    #[arg(long)]
    pub accounting: Option<PathBuf>,
    /// Ask again for images whose logged naming answer is refused or malformed (round 1's
    /// answers are kept, so the context it voted stays).
    #[arg(long)]
    pub retry_malformed: bool,
    /// Answers per image (each sample is cached on its own; raising N later asks only for
    /// the missing ones). Needs --temperature above 0; refine weights the names by how
    /// often they were given. At most 100.
    #[arg(long, default_value_t = 1, value_name = "N", allow_negative_numbers = true, value_parser = parser::<u32>(label::SAMPLES))]
    pub samples: u32,
    /// File of expected names, one per line (a species list, a parts catalogue): the naming
    /// prompt offers them and allows "other". Default: no list (vocabulary-free).
    #[arg(long, value_name = "FILE")]
    pub vocabulary: Option<PathBuf>,
}

/// Subcommands of `label` that read logs.
#[derive(Subcommand)]
pub enum LabelAction {
    /// Name drift between two answer logs (matched by image hash, per name).
    ///
    /// Example: linesight-train label diff old.jsonl new.jsonl
    Diff {
        /// Log A.
        a: PathBuf,
        /// Log B.
        b: PathBuf,
        /// Only A's answers from this model.
        #[arg(long)]
        a_model: Option<String>,
        /// Only A's answers whose prompt sha256 starts with this.
        #[arg(long)]
        a_prompt: Option<String>,
        /// Only B's answers from this model.
        #[arg(long)]
        b_model: Option<String>,
        /// Only B's answers whose prompt sha256 starts with this.
        #[arg(long)]
        b_prompt: Option<String>,
    },
    /// Accuracy of a log's names against a labelled manifest (direct-MLLM baseline, simulator check).
    ///
    /// Example: linesight-train label score labels.jsonl --truth data/manifest.csv --split train
    Score {
        /// The answer log.
        #[arg(value_name = "LOG")]
        labels: PathBuf,
        /// Labelled manifest CSV (`path,label,split`).
        #[arg(long)]
        truth: PathBuf,
        /// Only this split's rows (default: all).
        #[arg(long)]
        split: Option<String>,
        /// Only answers from this model.
        #[arg(long)]
        model: Option<String>,
        /// Only answers whose prompt sha256 starts with this.
        #[arg(long)]
        prompt: Option<String>,
    },
}

/// Arguments of `simulate-mllm`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Ground-truth manifest CSV (`path,label,split`, paths relative to it).
    #[arg(long)]
    pub truth: PathBuf,
    /// Address to listen on; port 0 picks a free one (printed).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: String,
    /// Probability that a naming answer is correct.
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::UNIT))]
    pub accuracy: f64,
    /// Share of wrong answers naming a confusable sibling class.
    #[arg(long, default_value_t = 0.6, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::NON_NEGATIVE))]
    pub sibling_share: f64,
    /// Share of wrong answers that name one fixed partner class per class, whatever the
    /// image (a habit, as real MLLMs have); the rest follow the shares above.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::UNIT))]
    pub systematic: f64,
    /// Per-class accuracy = --accuracy +- up to this (fixed per class and --seed).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::UNIT))]
    pub spread: f64,
    /// Share of wrong answers that are coarse ("a small bird").
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::NON_NEGATIVE))]
    pub coarse_share: f64,
    /// Share of wrong answers naming something outside the data set.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::NON_NEGATIVE))]
    pub outside_share: f64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Groups of confusable classes, one per line: `group: Class A, Class B` (default: classes sharing their last word).
    #[arg(long)]
    pub groups: Option<PathBuf>,
    /// Probability that a request gets an injected fault.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::UNIT))]
    pub fault_rate: f64,
    /// Faults drawn from, comma-separated: 429, 500, slow, malformed, garbled.
    #[arg(long, value_delimiter = ',', default_value = "429,500,slow,malformed")]
    pub faults: Vec<String>,
    /// Retry-After seconds sent with an injected 429.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// Delay of an injected slow reply, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub slow_ms: u64,
    /// Mean delay of every answer in milliseconds (imitates a model's time).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Model name served (requests for another get 404); default: any name is accepted.
    #[arg(long)]
    pub model: Option<String>,
    /// Require this environment variable's value as the bearer key (else 401).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Behave like a text-only model: refuse every image with 400.
    #[arg(long)]
    pub text_only: bool,
    /// Round-1 answer: category.
    #[arg(long, default_value = "bird")]
    pub category: String,
    /// Round-1 answer: expert.
    #[arg(long, default_value = "ornithologist")]
    pub expert: String,
    /// Round-1 answer: granularity.
    #[arg(long, default_value = "species")]
    pub granularity: String,
    /// Share of round-1 answers worded differently, as real models do from image to image
    /// (the expert as "bird expert" or "bird specialist", sometimes "small bird").
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::UNIT))]
    pub context_variety: f64,
    /// Do not serve: print what asking the simulator about every image of this split of
    /// the truth would score (greedy answers to the embedded naming prompt with the
    /// context above), then exit.
    #[arg(long, value_name = "SPLIT")]
    pub direct: Option<String>,
}

/// Arguments of `refine`.
#[derive(clap::Args)]
pub struct RefineArgs {
    /// Folder of the images that were labelled (searched recursively).
    #[arg(long)]
    pub images: PathBuf,
    /// The answer log written by `label`.
    #[arg(long)]
    pub labels: PathBuf,
    /// Output file (refined.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Backbone the student is trained on (recorded in refined.json for `train`); its
    /// embeddings define the neighbours unless --knn-backbone names others.
    #[arg(long, value_enum, default_value = "mobilenet-v2")]
    pub backbone: BackboneKind,
    /// Weights file; default: the backbone's file under `models/weights/`.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Find the neighbours with this backbone's embeddings instead (repeat it to combine
    /// several: the mean of their cosines), e.g. a stronger backbone than the one a small
    /// box can run. Weights: each backbone's file under `models/weights/`.
    #[arg(long, value_enum, value_name = "BACKBONE")]
    pub knn_backbone: Vec<BackboneKind>,
    /// Embedding cache folder (default: `cache/` beside --out).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// all-MiniLM-L6-v2 folder (default: under the weights folder).
    #[arg(long, value_name = "DIR")]
    pub sentence_model: Option<PathBuf>,
    /// Only answers of this model (needed when the log holds several).
    #[arg(long)]
    pub model: Option<String>,
    /// Only answers whose prompt sha256 starts with this.
    #[arg(long)]
    pub prompt: Option<String>,
    /// The category the images show (default: round 1's answer in the log).
    #[arg(long)]
    pub category: Option<String>,
    /// Cosine of sentence embeddings at which two names are merged as synonyms.
    #[arg(long, default_value_t = linesight_trainer::vocab::VocabSettings::default().synonym_threshold, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::COSINE))]
    pub synonym_threshold: f32,
    /// A name (and a vote class) needs at least this many images to be a class.
    #[arg(long, default_value_t = linesight_trainer::vocab::VocabSettings::default().min_images, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub min_images: usize,
    /// Neighbours per image.
    #[arg(long, default_value_t = linesight_trainer::near::candidates::CandidateSettings::default().k, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub k: usize,
    /// Weight of an image's own names against its neighbours' (each at most 1).
    #[arg(long, default_value_t = linesight_trainer::near::candidates::CandidateSettings::default().self_weight, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::NON_NEGATIVE))]
    pub self_weight: f32,
    /// Neighbour weight = similarity ^ power.
    #[arg(long, default_value_t = linesight_trainer::near::candidates::CandidateSettings::default().power, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::NON_NEGATIVE))]
    pub power: f32,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub batch: usize,
    /// File of expected names, one per line (the list given to `label --vocabulary`, or a
    /// species list / parts catalogue): answers are snapped to the closest listed name
    /// when close enough, other answers stay new names.
    #[arg(long, value_name = "FILE")]
    pub vocabulary: Option<PathBuf>,
    /// Sentence cosine at which an answer snaps to a listed name.
    #[arg(long, default_value_t = linesight_trainer::vocab::VocabSettings::default().hint_threshold, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::COSINE))]
    pub hint_threshold: f32,
    /// Manifest CSV (`path,label,split`) of images an expert checked, as few as 1-3 per
    /// class: matched to the images by content, kept as trusted anchors in training, and
    /// used to estimate the MLLM's confusions and correct every image's candidates.
    #[arg(long, value_name = "MANIFEST")]
    pub verified: Option<PathBuf>,
    /// Estimate the MLLM's confusions from the neighbours alone and correct for them
    /// (always on with --verified).
    #[arg(long)]
    pub correct_confusion: bool,
    /// A verified image counts this many times in the confusion estimate.
    #[arg(long, default_value_t = linesight_trainer::near::confusion::ConfusionSettings::default().anchor_weight, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::POSITIVE))]
    pub anchor_weight: f32,
    /// Where the image embeddings are computed: cpu, cuda or cuda:N (cuda needs a build
    /// with the trainer's `cuda` feature); they are cached, so only new images cost.
    #[arg(long, default_value = "cpu")]
    pub device: linesight_trainer::device::DeviceChoice,
}

/// Arguments of `train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// refined.json written by `refine`.
    #[arg(long)]
    pub refined: PathBuf,
    /// Output checkpoint folder.
    #[arg(long)]
    pub out: PathBuf,
    /// How to train.
    #[arg(long, value_enum, default_value = "near")]
    pub method: linesight_trainer::near::train::Method,
    /// Weights file; default: the backbone's file under `models/weights/`.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Embedding cache folder (default: `cache/` beside --refined).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Training settings as TOML (keys of [train] in examples/cub26.toml); flags below win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// naive/vote: passes over the training images.
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub epochs: Option<usize>,
    /// near: rounds of target refinement (GMM split, refined targets, head refit).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub rounds: Option<usize>,
    /// Learning rate (AdamW).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::POSITIVE))]
    pub lr: Option<f64>,
    /// near: clean posterior threshold of the GMM split.
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::UNIT))]
    pub gmm_threshold: Option<f64>,
    /// Seed of the batch order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Backbone stages fine-tuned with the head after the method settled the targets
    /// (0: frozen backbone; 1: the last 1x1 convolution, MobileNetV2's `features.18` or
    /// EfficientNet-Lite0's `_conv_head`; 2: also the last block; ...).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<usize>(TrainSettings::TRAINABLE_BLOCKS))]
    pub trainable_blocks: Option<usize>,
    /// Fine-tuning passes over the images.
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub finetune_epochs: Option<usize>,
    /// Fine-tuning learning rate of the backbone's stages.
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::POSITIVE))]
    pub finetune_lr: Option<f64>,
    /// Fine-tuning learning rate of the head (the same as --finetune-lr: one rate).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::POSITIVE))]
    pub finetune_head_lr: Option<f64>,
    /// Augmented views per image the frozen trunk runs on once (cached beside the
    /// embeddings); more views cost trunk time once, not per epoch.
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<usize>(TrainSettings::FINETUNE_VIEWS))]
    pub finetune_views: Option<usize>,
    /// Epochs of learning-rate warm-up (0: none).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::NON_NEGATIVE))]
    pub finetune_warmup: Option<usize>,
    /// Cosine decay of the fine-tuning learning rate (true | false).
    #[arg(long, value_name = "BOOL")]
    pub finetune_cosine: Option<bool>,
    /// Fine-tuning label smoothing (0: none).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::between(0.0, 0.5)))]
    pub label_smoothing: Option<f32>,
    /// Fine-tuning weight decay (0: none).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f64>(Bound::NON_NEGATIVE))]
    pub finetune_weight_decay: Option<f64>,
    /// Decay of the weights' moving average in fine-tuning (0: none; e.g. 0.99).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f64>(TrainSettings::FINETUNE_EMA))]
    pub ema: Option<f64>,
    /// Share of the trained images held out to choose the fine-tuning epoch kept (0: keep
    /// the last). Scored against the method's targets, never against true labels.
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f64>(TrainSettings::FINETUNE_HOLDOUT))]
    pub holdout: Option<f64>,
    /// Stop fine-tuning after this many epochs without a better held-out score (0: never).
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::NON_NEGATIVE))]
    pub patience: Option<usize>,
    /// Weigh each image by its target's weight and confidence in fine-tuning (true | false).
    #[arg(long, value_name = "BOOL")]
    pub image_weights: Option<bool>,
    /// Augment the fine-tuning views (true: the `[train.augment]` defaults; false: none).
    #[arg(long, value_name = "BOOL")]
    pub augment: Option<bool>,
    /// Where fine-tuning and the embeddings the cache lacks are computed: cpu, cuda or
    /// cuda:N (cuda needs a build with the trainer's `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: linesight_trainer::device::DeviceChoice,
    /// near: an expert-verified image (refine --verified) counts this many times in its
    /// class's prototype.
    #[arg(long, allow_negative_numbers = true, value_parser = parser::<f32>(Bound::POSITIVE))]
    pub anchor_weight: Option<f32>,
    /// Score on this labelled manifest after training (`path,label,split`).
    #[arg(long)]
    pub eval_manifest: Option<PathBuf>,
    /// Split of --eval-manifest to score.
    #[arg(long, default_value = "test")]
    pub eval_split: String,
    /// all-MiniLM-L6-v2 folder for sACC (default: under the weights folder).
    #[arg(long, value_name = "DIR")]
    pub sentence_model: Option<PathBuf>,
    /// Images per forward pass when embedding.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = parser::<usize>(Bound::AT_LEAST_ONE))]
    pub batch: usize,
}
