//! `linesight-train label`: name every image once with a multimodal LLM, resumably.
//!
//! 1. Find the images and hash their bytes (the hash identifies an image everywhere).
//! 2. Round 1 (unless `--category/--expert/--granularity` are given): ask a few images
//!    what they show and who names such things; majority vote. Cached like any answer.
//! 3. Round 2: one naming question per image whose answer is not in the log under the same
//!    model + prompt + parameters; answers are appended (fsync'd) as they arrive.
//! 4. Accounting: printed, and written beside the log (`*.accounting.json`).
//!
//! `label diff` ([`diff`]) and `label score` ([`score`]) read logs only.

use crate::embed::progress_bar;
use crate::mllm::accounting::{process_cpu_seconds, Latency, PerAnswer, Prices, Projection, Spend};
use crate::mllm::answer::Status;
use crate::mllm::cache::{CacheKey, Log, Params, Record, Repair, Round};
use crate::mllm::client::{ApiKey, Client, ClientConfig, RetryPolicy};
use crate::mllm::drift::{self, DriftReport, Side};
use crate::mllm::images::{self, ImageFile};
use crate::mllm::labeler::{Failure, Labeler, Question};
use crate::mllm::prompt::{self, Context1, Rendered, Template};
use crate::mllm::score::{self as scoring, ScoreReport, ScoreSettings};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the direct-MLLM baseline's image count comes from.
#[derive(Debug, Clone)]
pub enum Baseline {
    Images(usize),
    /// Rows of one split of a manifest.
    Manifest {
        path: PathBuf,
        split: String,
    },
}

/// Resolved settings of `label`.
#[derive(Debug, Clone)]
pub struct LabelSettings {
    /// Folder of images (searched recursively).
    pub images: PathBuf,
    /// Base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub endpoint: String,
    pub model: String,
    /// The answer log (also the cache).
    pub out: PathBuf,
    pub api_key: Option<ApiKey>,
    /// The variable the key was read from (named in errors).
    pub api_key_env: Option<String>,
    pub concurrency: usize,
    /// Naming prompt file; `None`: the embedded v1.
    pub prompt: Option<PathBuf>,
    /// Round-1 prompt file; `None`: the embedded v1.
    pub category_prompt: Option<PathBuf>,
    /// Given context (skips round 1).
    pub context: Option<Context1>,
    /// Images asked in round 1.
    pub context_images: usize,
    pub params: Params,
    /// Label only the first N images (in path order) and project the full run.
    pub dry_run: Option<usize>,
    pub max_retries: u32,
    pub retry_base: Duration,
    pub timeout: Duration,
    pub prices: Option<Prices>,
    pub baseline: Option<Baseline>,
    /// Accounting file; `None`: beside the log, `<out>.accounting.json`.
    pub accounting: Option<PathBuf>,
    /// Ask again where the logged answer is refused or malformed.
    pub retry_malformed: bool,
    /// Naming answers per image (sample k is its own cache entry: raising N later asks
    /// only for the missing samples). More than 1 needs a temperature above 0.
    pub samples: u32,
    /// Expected names offered in the naming prompt ("other" allowed).
    pub vocabulary: Option<PathBuf>,
}

impl LabelSettings {
    /// Settings with the defaults of the CLI.
    pub fn new(images: PathBuf, endpoint: String, model: String, out: PathBuf) -> Self {
        LabelSettings {
            images,
            endpoint,
            model,
            out,
            api_key: None,
            api_key_env: None,
            concurrency: 8,
            prompt: None,
            category_prompt: None,
            context: None,
            context_images: 5,
            params: Params::default(),
            dry_run: None,
            max_retries: RetryPolicy::default().max_retries,
            retry_base: RetryPolicy::default().base,
            timeout: Duration::from_secs(120),
            prices: None,
            baseline: None,
            accounting: None,
            retry_malformed: false,
            samples: 1,
            vocabulary: None,
        }
    }
}

/// One round's question counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundStats {
    /// Questions in scope.
    pub questions: usize,
    /// Answered from the log, no call.
    pub cache_hits: usize,
    /// Asked in this run.
    pub asked: usize,
    /// Answers received (and logged) in this run.
    pub answered: usize,
    /// Asked but not answered in this run (asked again next run).
    pub failed: usize,
}

/// Prompt identities.
#[derive(Debug, Clone, Serialize)]
pub struct PromptInfo {
    pub naming_source: String,
    pub naming_template_sha256: String,
    /// sha256 of the naming prompt as sent (in every cache key).
    pub naming_prompt_sha256: String,
    pub category_source: String,
    pub category_prompt_sha256: String,
    /// The vocabulary file offered in the naming prompt, and how many names it lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<(String, usize)>,
}

/// The direct-MLLM baseline next to what labelling cost.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// Asking the MLLM about every image at inference time.
    pub direct_mllm: Projection,
    /// MLLM calls linesight made for training (round 1 + naming, all runs), once.
    pub linesight_labelling_calls: usize,
    /// MLLM calls per image at inference time with linesight's edge model.
    pub linesight_inference_calls_per_image: usize,
}

/// The `label` report: the accounting.
#[derive(Debug, Clone, Serialize)]
pub struct LabelReport {
    pub log: PathBuf,
    pub accounting_file: PathBuf,
    pub endpoint: String,
    pub model: String,
    pub params: Params,
    pub images_found: usize,
    /// Distinct images by content.
    pub unique_images: usize,
    /// Images labelled in this run's scope (all, or the dry run's first N).
    pub images_in_scope: usize,
    /// Naming answers asked per image.
    pub samples: u32,
    pub dry_run: bool,
    pub context: Context1,
    /// `inferred` (round 1) or `given`.
    pub context_source: String,
    pub prompt: PromptInfo,
    pub round1: RoundStats,
    pub naming: RoundStats,
    /// Final naming answers of the images in scope, by status (fresh and cached).
    pub answers: BTreeMap<Status, usize>,
    /// HTTP requests made by this run (retries included).
    pub calls: u64,
    pub retries: u64,
    pub retry_kinds: BTreeMap<String, u64>,
    /// Answers taken from the log instead of asked (both rounds).
    pub cache_hits: usize,
    pub failed: usize,
    /// The first 20 failures.
    pub failures: Vec<Failure>,
    /// Tokens and money of this run's answers.
    pub spend: Spend,
    pub prices: Option<Prices>,
    /// Whole run, hashing included.
    pub wall_s: f64,
    /// The naming round alone.
    pub naming_wall_s: f64,
    /// New naming answers per second of the naming round.
    pub answers_per_s: f64,
    /// Latency of this run's answering requests.
    pub latency_ms: Latency,
    /// CPU time of this process (user + system) and per new answer.
    pub cpu_s: f64,
    pub cpu_ms_per_answer: f64,
    /// Means per naming answer over the images in scope (fresh and cached).
    pub per_answer: PerAnswer,
    /// Dry run: what labelling every image would take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_run: Option<Projection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReport>,
    pub log_repair: Repair,
}

/// Runs `label`. Fails on a fatal endpoint error (credentials, not found, not multimodal),
/// when round 1 yields no category, when the log cannot be written, or when too many
/// images in a row fail; answers received before the failure stay in the log.
pub fn run(s: &LabelSettings) -> Result<LabelReport> {
    if s.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if s.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if s.samples > 1 && s.params.temperature <= 0.0 {
        bail!(
            "--samples {} asks each image {} times, but at --temperature 0 a model gives the same answer every time; \
             set --temperature (0.7 to 1.0 is usual)",
            s.samples,
            s.samples
        );
    }
    refuse_overwriting_inputs(s)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("label")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(s))
}

/// The accounting file: `--accounting`, else `<out>.accounting.json`.
fn accounting_path(s: &LabelSettings) -> PathBuf {
    s.accounting.clone().unwrap_or_else(|| {
        let mut p = s.out.clone().into_os_string();
        p.push(".accounting.json");
        PathBuf::from(p)
    })
}

/// The answer log (appended) and the accounting file (replaced) are none of the files
/// `label` reads; the accounting file is not the answer log either.
fn refuse_overwriting_inputs(s: &LabelSettings) -> Result<()> {
    let mut inputs: Vec<(&str, &std::path::Path)> = vec![("the images folder", &s.images)];
    inputs.extend(s.prompt.as_deref().map(|p| ("the naming prompt", p)));
    inputs.extend(
        s.category_prompt
            .as_deref()
            .map(|p| ("the round-1 prompt", p)),
    );
    inputs.extend(s.vocabulary.as_deref().map(|p| ("the vocabulary file", p)));
    if let Some(Baseline::Manifest { path, .. }) = &s.baseline {
        inputs.push(("the baseline manifest", path));
    }
    linesight_shared::output::refuse_each(&[&s.out], &inputs)?;
    inputs.push(("the answer log", &s.out));
    linesight_shared::output::refuse_each(&[&accounting_path(s)], &inputs)?;
    Ok(())
}

async fn run_async(s: &LabelSettings) -> Result<LabelReport> {
    let started = Instant::now();
    let cpu0 = process_cpu_seconds();
    let naming_t = Template::file_or(s.prompt.as_ref(), Template::embedded_naming)?;
    let category_t = Template::file_or(s.category_prompt.as_ref(), Template::embedded_category)?;
    let hint = match &s.vocabulary {
        Some(p) => Some(crate::vocab::read_hint(p)?),
        None => None,
    };
    let files = images::list(&s.images)?;
    let mut log = Log::open(&s.out)?;
    let repair = log.repair().clone();
    if repair.torn_last_line {
        tracing::warn!(log = %s.out.display(), ?repair, "resuming after a run that was killed mid-write");
    }

    // 1. Hash.
    let pb = progress_bar(files.len() as u64, "hash");
    let paths: Vec<PathBuf> = files.iter().map(|f| f.abs.clone()).collect();
    let hashes = tokio::task::block_in_place(|| images::hash_files(&paths, &pb));
    pb.finish_and_clear();
    let mut failures = Vec::new();
    let mut unique: Vec<(ImageFile, String)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (f, h) in files.iter().zip(hashes) {
        match h {
            Ok(h) => {
                if seen.insert(h.clone(), unique.len()).is_none() {
                    unique.push((f.clone(), h));
                }
            }
            Err(reason) => failures.push(Failure {
                path: f.rel.clone(),
                reason,
            }),
        }
    }
    if unique.is_empty() {
        bail!(
            "none of the {} image files under `{}` could be read",
            files.len(),
            s.images.display()
        );
    }

    let client = Arc::new(Client::new(ClientConfig {
        endpoint: s.endpoint.clone(),
        model: s.model.clone(),
        api_key: s.api_key.clone(),
        api_key_env: s.api_key_env.clone(),
        timeout: s.timeout,
        retry: RetryPolicy {
            max_retries: s.max_retries,
            base: s.retry_base,
            ..RetryPolicy::default()
        },
        pool: s.concurrency,
    })?);
    let labeler = Labeler {
        client: Arc::clone(&client),
        params: s.params.clone(),
        concurrency: s.concurrency,
        max_consecutive_failures: (2 * s.concurrency).max(10),
    };
    let mut new_records: Vec<Record> = Vec::new();

    // 2. Round 1.
    let category_prompt = Arc::new(Rendered::new(category_t.text.clone()));
    let mut round1 = RoundStats::default();
    let (context, context_source) = match &s.context {
        Some(c) => (c.clone(), "given"),
        None => {
            let k = s.context_images.clamp(1, unique.len());
            let picks: Vec<&(ImageFile, String)> =
                (0..k).map(|i| &unique[i * unique.len() / k]).collect();
            let (questions, mut answers) = pending(
                &log,
                &picks,
                Round::Category,
                &category_prompt,
                s,
                &mut round1,
            );
            let pb = progress_bar(questions.len() as u64, "round 1");
            let asked = labeler.ask_all(questions, &mut log, &pb).await?;
            pb.finish_and_clear();
            round1.answered = asked.records.len();
            round1.failed = asked.failures.len();
            answers.extend(asked.records.iter().cloned());
            new_records.extend(asked.records);
            failures.extend(asked.failures);
            let contexts: Vec<Context1> =
                answers.iter().filter_map(|r| r.context.clone()).collect();
            let Some(ctx) = prompt::vote(&contexts) else {
                bail!(
                    "round 1 got no usable category from {} answers (see the `category` lines in `{}`); \
                     pass --category, --expert and --granularity to skip it",
                    answers.len(),
                    s.out.display()
                );
            };
            (ctx, "inferred")
        }
    };
    tracing::info!(category = %context.category, expert = %context.expert, granularity = %context.granularity, source = context_source, "context");

    // 3. Naming.
    let naming_prompt = Arc::new(match &hint {
        Some(names) => prompt::offer_names(&naming_t.render(&context), names),
        None => naming_t.render(&context),
    });
    let scope_n = s.dry_run.map_or(unique.len(), |n| n.min(unique.len()));
    let scope: Vec<&(ImageFile, String)> = unique.iter().take(scope_n).collect();
    let mut naming = RoundStats::default();
    let (questions, _) = pending(&log, &scope, Round::Name, &naming_prompt, s, &mut naming);
    let naming_started = Instant::now();
    let pb = progress_bar(questions.len() as u64, "label");
    let asked = labeler.ask_all(questions, &mut log, &pb).await?;
    pb.finish_and_clear();
    let naming_wall = naming_started.elapsed().as_secs_f64();
    naming.answered = asked.records.len();
    naming.failed = asked.failures.len();
    let new_naming = asked.records.clone();
    new_records.extend(asked.records);
    failures.extend(asked.failures);

    // 4. Accounting.
    let final_answers: Vec<&Record> = scope
        .iter()
        .flat_map(|(_, sha)| (0..s.samples).map(move |k| (sha, k)))
        .filter_map(|(sha, k)| log.get(&key(Round::Name, sha, &naming_prompt, s, k)))
        .collect();
    let mut answers = BTreeMap::new();
    for r in &final_answers {
        *answers.entry(r.status).or_default() += 1;
    }
    let per_answer = PerAnswer::of(final_answers.iter().copied(), s.prices);
    let answers_per_s = if naming_wall > 0.0 && !new_naming.is_empty() {
        new_naming.len() as f64 / naming_wall
    } else {
        0.0
    };
    let throughput = if answers_per_s > 0.0 {
        answers_per_s
    } else if per_answer.latency_ms > 0.0 {
        s.concurrency as f64 * 1e3 / per_answer.latency_ms
    } else {
        0.0
    };
    let baseline = match &s.baseline {
        None => None,
        Some(b) => {
            let n = match b {
                Baseline::Images(n) => *n,
                Baseline::Manifest { path, split } => {
                    let rows = crate::dataset::read_manifest(path)?
                        .into_iter()
                        .filter(|e| &e.split == split)
                        .count();
                    if rows == 0 {
                        bail!(
                            "baseline manifest `{}` has no rows with split `{split}`",
                            path.display()
                        );
                    }
                    rows
                }
            };
            let labelling_calls = log
                .records()
                .iter()
                .filter(|r| {
                    r.model == s.model
                        && (r.round == Round::Category || r.prompt_sha256 == naming_prompt.sha256)
                })
                .count();
            Some(BaselineReport {
                direct_mllm: Projection::new(n, 1, &per_answer, throughput),
                linesight_labelling_calls: labelling_calls,
                linesight_inference_calls_per_image: 0,
            })
        }
    };
    let (retries, retry_kinds) = client.retries();
    let cpu_s = process_cpu_seconds() - cpu0;
    let latencies: Vec<f64> = new_records
        .iter()
        .filter(|r| r.attempts > 0)
        .map(|r| r.latency_ms)
        .collect();
    let accounting_file = accounting_path(s);
    let failed = failures.len();
    let report = LabelReport {
        log: s.out.clone(),
        accounting_file: accounting_file.clone(),
        endpoint: client.endpoint().to_string(),
        model: s.model.clone(),
        params: s.params.clone(),
        images_found: files.len(),
        unique_images: unique.len(),
        images_in_scope: scope.len(),
        samples: s.samples,
        dry_run: s.dry_run.is_some(),
        context,
        context_source: context_source.to_string(),
        prompt: PromptInfo {
            naming_source: naming_t.source.clone(),
            naming_template_sha256: naming_t.sha256(),
            naming_prompt_sha256: naming_prompt.sha256.clone(),
            category_source: category_t.source.clone(),
            category_prompt_sha256: category_prompt.sha256.clone(),
            vocabulary: s
                .vocabulary
                .as_ref()
                .zip(hint.as_ref())
                .map(|(p, h)| (p.display().to_string(), h.len())),
        },
        cache_hits: round1.cache_hits + naming.cache_hits,
        round1,
        naming,
        answers,
        calls: client.requests(),
        retries,
        retry_kinds,
        failed,
        failures: failures.into_iter().take(20).collect(),
        spend: Spend::of(&new_records, s.prices),
        prices: s.prices,
        wall_s: started.elapsed().as_secs_f64(),
        naming_wall_s: naming_wall,
        answers_per_s,
        latency_ms: Latency::of(&latencies),
        cpu_s,
        cpu_ms_per_answer: if new_naming.is_empty() {
            0.0
        } else {
            cpu_s * 1e3 / new_naming.len() as f64
        },
        full_run: s
            .dry_run
            .map(|_| Projection::new(unique.len(), s.samples as usize, &per_answer, throughput)),
        per_answer,
        baseline,
        log_repair: repair,
    };
    let json = serde_json::to_vec_pretty(&report)?;
    fs_err::write(&accounting_file, json).context("cannot write the accounting file")?;
    Ok(report)
}

fn key(
    round: Round,
    image_sha256: &str,
    prompt: &Rendered,
    s: &LabelSettings,
    sample: u32,
) -> String {
    CacheKey {
        round,
        image_sha256,
        model: &s.model,
        prompt_sha256: &prompt.sha256,
        params: &s.params,
        sample,
    }
    .digest()
}

/// Splits images into questions to ask and answers already logged (naming: every sample;
/// round 1: sample 0).
fn pending(
    log: &Log,
    images: &[&(ImageFile, String)],
    round: Round,
    prompt: &Arc<Rendered>,
    s: &LabelSettings,
    stats: &mut RoundStats,
) -> (Vec<Question>, Vec<Record>) {
    let mut ask = Vec::new();
    let mut have = Vec::new();
    let samples = if round == Round::Name { s.samples } else { 1 };
    for (file, sha) in images {
        for sample in 0..samples {
            stats.questions += 1;
            let k = key(round, sha, prompt, s, sample);
            match log.get(&k) {
                Some(r) if !s.retry_malformed || r.status.is_usable() => {
                    stats.cache_hits += 1;
                    have.push(r.clone());
                }
                _ => ask.push(Question {
                    round,
                    key: k,
                    image: file.clone(),
                    image_sha256: sha.clone(),
                    prompt: Arc::clone(prompt),
                    sample,
                }),
            }
        }
    }
    stats.asked = ask.len();
    (ask, have)
}

/// Settings of `label diff`.
#[derive(Debug, Clone)]
pub struct DiffSettings {
    pub a: Side,
    pub b: Side,
}

/// Runs `label diff`: per-name drift between two logs.
pub fn diff(s: &DiffSettings) -> Result<DriftReport> {
    drift::diff(&s.a, &s.b)
}

/// Runs `label score`: the accuracy of a log's names against a labelled manifest.
pub fn score(s: &ScoreSettings) -> Result<ScoreReport> {
    scoring::score(s)
}
