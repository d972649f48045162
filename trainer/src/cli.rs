//! Command-line arguments. These types stay here and in main.rs; commands take settings.

use clap::{Parser, Subcommand};
use linesight_trainer::backbone::BackboneKind;
use std::path::PathBuf;

/// linesight-train: label, refine, train, export and evaluate linesight models.
///
/// Exit codes: 0 success, 2 the command failed (the message says why).
#[derive(Parser)]
#[command(name = "linesight-train", version, about, long_about)]
pub struct Cli {
    /// Log filter, e.g. `info` or `linesight_trainer=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// Print the command's report as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
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
    #[arg(long, default_value_t = 128)]
    pub calibration_images: usize,
    /// At most this many parity images (evenly spaced).
    #[arg(long, default_value_t = 400)]
    pub parity_images: usize,
    /// Refuse the int8 bundle unless its top-1 agreement with the f32 model is at least this
    /// (0..1) at --gate-confidence: the lower confidence bound on the held-out images counts,
    /// not the plain ratio, so a small sample cannot certify a high figure (99 % at 95 %
    /// confidence needs at least 268 held-out images, all agreeing).
    #[arg(long, default_value_t = 0.99)]
    pub min_agreement: f32,
    /// Quantise every layer the rules allow, even those measured slower in int8 than in
    /// f32 in tract on this machine (by default they stay f32, and an int8 model that is
    /// still not faster is refused).
    #[arg(long)]
    pub keep_slow_layers: bool,
    /// A layer stays int8 when it runs faster than in f32 by more than this fraction.
    #[arg(long, default_value_t = 0.05)]
    pub speed_margin: f64,
    /// Write the int8 bundle even when it is not faster than the f32 one here.
    #[arg(long)]
    pub allow_slower: bool,
    /// One-sided confidence of the parity gate's lower bound (Wilson score), 0.5..1.
    #[arg(long, default_value_t = 0.95)]
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
    #[arg(long, default_value_t = 32)]
    pub sensitivity_images: usize,
    /// Quantise the first layer (reads the image) and the last one (makes the embedding)
    /// too; by default they stay f32.
    #[arg(long)]
    pub quantize_first_last: bool,
    /// Quantise activations with the ONNX QuantizeLinear op (recognised by other runtimes;
    /// tract runs it one value at a time) instead of Mul/round/Clip/Cast.
    #[arg(long)]
    pub quantize_linear_op: bool,
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
        #[arg(long, default_value_t = linesight_trainer::head::DEFAULT_SCALE)]
        scale: f32,
        /// Images per forward pass.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Training images compared between candle and tract at export.
        #[arg(long, default_value_t = 4)]
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
    /// Example: linesight-train label --images photos/ --endpoint http://127.0.0.1:8000/v1 --model qwen2.5-vl-7b --out labels.jsonl
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
}

/// Arguments of `label`.
#[derive(clap::Args)]
pub struct LabelArgs {
    #[command(subcommand)]
    pub action: Option<LabelAction>,
    /// Folder of images to label (searched recursively).
    #[arg(long, required = true)]
    pub images: Option<PathBuf>,
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8000/v1`.
    #[arg(long, required = true)]
    pub endpoint: Option<String>,
    /// Model name sent with every request.
    #[arg(long, required = true)]
    pub model: Option<String>,
    /// The answer log (JSONL, appended; also the cache).
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Environment variable holding the API key (the key itself never goes on the command line or in a log).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
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
    #[arg(long, default_value_t = 5)]
    pub context_images: usize,
    /// Label only the first N images (path order) and project the cost of all of them.
    #[arg(long, value_name = "N")]
    pub dry_run: Option<usize>,
    /// Retries per request after the first attempt (429, 5xx, timeouts, resets).
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// First retry backoff in milliseconds (doubles per retry, full jitter; Retry-After wins).
    #[arg(long, default_value_t = 500)]
    pub retry_base_ms: u64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Sampling temperature (part of the cache key).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Answer token limit (part of the cache key; reasoning models need more).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Price per million input tokens (any currency; enables money figures).
    #[arg(long, requires = "price_out")]
    pub price_in: Option<f64>,
    /// Price per million output tokens.
    #[arg(long, requires = "price_in")]
    pub price_out: Option<f64>,
    /// Project the direct-MLLM baseline (asking the model about every image) for N images.
    #[arg(long, value_name = "N", conflicts_with = "baseline_manifest")]
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
    /// Ask again for images whose logged answer is refused or malformed.
    #[arg(long)]
    pub retry_malformed: bool,
    /// Answers per image (each sample is cached on its own; raising N later asks only for
    /// the missing ones). Needs --temperature above 0; refine weights the names by how
    /// often they were given.
    #[arg(long, default_value_t = 1, value_name = "N")]
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
    #[arg(long, default_value_t = 0.7)]
    pub accuracy: f64,
    /// Share of wrong answers naming a confusable sibling class.
    #[arg(long, default_value_t = 0.6)]
    pub sibling_share: f64,
    /// Share of wrong answers that name one fixed partner class per class, whatever the
    /// image (a habit, as real MLLMs have); the rest follow the shares above.
    #[arg(long, default_value_t = 0.0)]
    pub systematic: f64,
    /// Per-class accuracy = --accuracy +- up to this (fixed per class and --seed).
    #[arg(long, default_value_t = 0.0)]
    pub spread: f64,
    /// Share of wrong answers that are coarse ("a small bird").
    #[arg(long, default_value_t = 0.2)]
    pub coarse_share: f64,
    /// Share of wrong answers naming something outside the data set.
    #[arg(long, default_value_t = 0.2)]
    pub outside_share: f64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Groups of confusable classes, one per line: `group: Class A, Class B` (default: classes sharing their last word).
    #[arg(long)]
    pub groups: Option<PathBuf>,
    /// Probability that a request gets an injected fault.
    #[arg(long, default_value_t = 0.0)]
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
    /// Backbone whose embeddings define the neighbours.
    #[arg(long, value_enum, default_value = "mobilenet-v2")]
    pub backbone: BackboneKind,
    /// Weights file; default: the backbone's file under `models/weights/`.
    #[arg(long)]
    pub weights: Option<PathBuf>,
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
    #[arg(long, default_value_t = linesight_trainer::vocab::VocabSettings::default().synonym_threshold)]
    pub synonym_threshold: f32,
    /// A name (and a vote class) needs at least this many images to be a class.
    #[arg(long, default_value_t = linesight_trainer::vocab::VocabSettings::default().min_images)]
    pub min_images: usize,
    /// Neighbours per image.
    #[arg(long, default_value_t = linesight_trainer::near::candidates::CandidateSettings::default().k)]
    pub k: usize,
    /// Weight of an image's own names against its neighbours' (each at most 1).
    #[arg(long, default_value_t = linesight_trainer::near::candidates::CandidateSettings::default().self_weight)]
    pub self_weight: f32,
    /// Neighbour weight = similarity ^ power.
    #[arg(long, default_value_t = linesight_trainer::near::candidates::CandidateSettings::default().power)]
    pub power: f32,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// File of expected names, one per line (the list given to `label --vocabulary`, or a
    /// species list / parts catalogue): answers are snapped to the closest listed name
    /// when close enough, other answers stay new names.
    #[arg(long, value_name = "FILE")]
    pub vocabulary: Option<PathBuf>,
    /// Sentence cosine at which an answer snaps to a listed name.
    #[arg(long, default_value_t = linesight_trainer::vocab::VocabSettings::default().hint_threshold)]
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
    #[arg(long, default_value_t = linesight_trainer::near::confusion::ConfusionSettings::default().anchor_weight)]
    pub anchor_weight: f32,
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
    #[arg(long)]
    pub epochs: Option<usize>,
    /// near: rounds of target refinement (GMM split, refined targets, head refit).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Learning rate (AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    /// near: clean posterior threshold of the GMM split.
    #[arg(long)]
    pub gmm_threshold: Option<f64>,
    /// Seed of the batch order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Backbone stages fine-tuned with the head after the method settled the targets
    /// (0: frozen backbone; 1: MobileNetV2's last 1x1 convolution; 2: also its last block).
    #[arg(long)]
    pub trainable_blocks: Option<usize>,
    /// Fine-tuning passes over the images.
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Fine-tuning learning rate.
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// near: an expert-verified image (refine --verified) counts this many times in its
    /// class's prototype.
    #[arg(long)]
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
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
}
