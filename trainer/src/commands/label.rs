//! `linesight-train label`: name every image once with a multimodal LLM, resumably.
//!
//! 1. Find the images and hash their bytes (the hash identifies an image everywhere).
//! 2. Round 1 (unless `--category/--expert/--granularity` are given): ask a few images
//!    what they show and who names such things; majority vote. Cached like any answer, and
//!    a function of the cached answers alone (see [`infer_context`]): a resumed run votes the same
//!    context, so its naming prompt, and every naming cache key, stay the same.
//! 3. Round 2: one naming question per image whose answer is not in the log under the same
//!    model + prompt + parameters; answers are appended (fsync'd) as they arrive.
//!
//! Every image is decoded (the project's one decoder, within its limits) before it is
//! sent; one that does not decode is skipped and counted (`undecodable`), never sent.
//! 4. Accounting: printed, and written beside the log (`*.accounting.json`).
//!
//! `label diff` ([`diff`]) and `label score` ([`score`]) read logs only.

use crate::bounds::{Bound, BoundError, Checker};
use crate::embed::progress_bar;
use crate::mllm::accounting::{process_cpu_seconds, Latency, PerAnswer, Prices, Projection, Spend};
use crate::mllm::answer::Status;
use crate::mllm::cache::{CacheKey, Log, Params, Record, Repair, Round};
use crate::mllm::client::{ApiKey, Client, ClientConfig, RetryPolicy};
use crate::mllm::drift::{self, DriftReport, Side};
use crate::mllm::endpoints::{EndpointReport, EndpointSpec, SetAside};
use crate::mllm::images::{self, ImageFile};
use crate::mllm::labeler::{Failure, Labeler, Question};
use crate::mllm::prompt::{self, Context1, Rendered, Template};
use crate::mllm::score::{self as scoring, ScoreReport, ScoreSettings};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Endpoints: base URLs (e.g. `http://127.0.0.1:8000/v1`), each optionally with its own
    /// limit, `URL,concurrency=N` ([`EndpointSpec::parse`]). At least one.
    pub endpoints: Vec<String>,
    pub model: String,
    /// The answer log (also the cache).
    pub out: PathBuf,
    pub api_key: Option<ApiKey>,
    /// The variable the key was read from (named in errors).
    pub api_key_env: Option<String>,
    /// Requests in flight per endpoint (one without its own `,concurrency=N`).
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
    /// Ask again where the logged naming answer is refused or malformed (round 1 keeps its
    /// answers: its context is a function of the log).
    pub retry_malformed: bool,
    /// Naming answers per image (sample k is its own cache entry: raising N later asks
    /// only for the missing samples). More than 1 needs a temperature above 0.
    pub samples: u32,
    /// Expected names offered in the naming prompt ("other" allowed).
    pub vocabulary: Option<PathBuf>,
}

/// `--temperature`: the range OpenAI-compatible servers accept.
pub const TEMPERATURE: Bound = Bound::between(0.0, 2.0);
/// `--concurrency`: requests in flight (each holds one image in memory).
pub const CONCURRENCY: Bound = Bound::between(1.0, 4096.0);
/// `--samples`: naming answers per image.
pub const SAMPLES: Bound = Bound::between(1.0, 100.0);
/// `--timeout` in seconds: above 0, at most a day.
pub const TIMEOUT_S: Bound = Bound {
    min: 0.0,
    min_inclusive: false,
    max: 86_400.0,
    max_inclusive: true,
};

impl LabelSettings {
    /// Checks every number against its range (named by its flag). `run` calls it first;
    /// the CLI's parsers and the pipeline's config reader check the same ranges earlier.
    pub fn validate(&self) -> Result<(), BoundError> {
        let mut c = Checker::new("--");
        c.check("concurrency", self.concurrency, CONCURRENCY)
            .check("context-images", self.context_images, Bound::AT_LEAST_ONE)
            .check("temperature", self.params.temperature, TEMPERATURE)
            .check("max-tokens", self.params.max_tokens, Bound::AT_LEAST_ONE)
            .check("samples", self.samples, SAMPLES)
            .check("timeout", self.timeout.as_secs_f64(), TIMEOUT_S);
        if let Some(tp) = self.params.top_p {
            c.check(
                "top-p",
                tp,
                Bound {
                    min_inclusive: false,
                    ..Bound::UNIT
                },
            );
        }
        if let Some(n) = self.dry_run {
            c.check("dry-run", n, Bound::AT_LEAST_ONE);
        }
        if let Some(p) = &self.prices {
            c.check("price-in", p.input_per_mtok, Bound::NON_NEGATIVE)
                .check("price-out", p.output_per_mtok, Bound::NON_NEGATIVE);
        }
        if let Some(Baseline::Images(n)) = self.baseline {
            c.check("baseline-images", n, Bound::AT_LEAST_ONE);
        }
        c.finish()
    }

    /// Settings with the defaults of the CLI, for one endpoint (push more onto `endpoints`).
    pub fn new(images: PathBuf, endpoint: String, model: String, out: PathBuf) -> Self {
        LabelSettings {
            images,
            endpoints: vec![endpoint],
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
    /// Questions in scope (round 1: the answers the vote needs).
    pub questions: usize,
    /// Answered from the log, no call.
    pub cache_hits: usize,
    /// Asked in this run.
    pub asked: usize,
    /// Answers received (and logged) in this run.
    pub answered: usize,
    /// Asked but not answered in this run (asked again next run).
    pub failed: usize,
    /// Not sent: the image does not decode.
    pub undecodable: usize,
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
    /// Per endpoint: calls, answers, errors by kind, times set aside, answer latency.
    pub endpoints: Vec<EndpointReport>,
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
    /// The images whose round-1 answers the context was voted from (empty when given).
    pub context_from: Vec<String>,
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
    /// Images never sent because they do not decode with the project's image decoder
    /// (truncated, corrupt, larger than the decoder's limit, unsupported format).
    pub undecodable: usize,
    /// The first 20 of them, with why.
    pub undecodable_images: Vec<Failure>,
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
    s.validate()?;
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
    // The endpoints are checked before any image is read.
    let endpoints =
        EndpointSpec::parse_all(&s.endpoints, s.concurrency).map_err(anyhow::Error::msg)?;
    let total_concurrency: usize = endpoints.iter().map(|e| e.concurrency).sum();
    // Each request holds one image in memory, whichever endpoint it waits for.
    crate::bounds::check(
        "concurrency of all endpoints together",
        total_concurrency,
        CONCURRENCY,
    )?;
    let client = Arc::new(Client::new(ClientConfig {
        endpoints,
        model: s.model.clone(),
        api_key: s.api_key.clone(),
        api_key_env: s.api_key_env.clone(),
        timeout: s.timeout,
        retry: RetryPolicy {
            max_retries: s.max_retries,
            base: s.retry_base,
            ..RetryPolicy::default()
        },
        set_aside: SetAside::default(),
        pool: s.concurrency,
    })?);
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

    let labeler = Labeler {
        client: Arc::clone(&client),
        params: s.params.clone(),
        concurrency: total_concurrency,
        max_consecutive_failures: (2 * total_concurrency).max(10),
    };
    let mut new_records: Vec<Record> = Vec::new();

    // 2. Round 1.
    let category_prompt = Arc::new(Rendered::new(category_t.text.clone()));
    let mut round1 = RoundStats::default();
    let mut undecodable: BTreeMap<String, Failure> = BTreeMap::new();
    let (context, context_source, context_from) = match &s.context {
        Some(c) => (c.clone(), "given", Vec::new()),
        None => {
            let r = infer_context(
                &mut log,
                &unique,
                &category_prompt,
                s,
                &labeler,
                &mut round1,
            )
            .await?;
            // Round-1 images that got no answer were passed over for others (counted in
            // `round1.failed`); their naming question is asked like any other's.
            new_records.extend(r.records);
            undecodable.extend(r.undecodable.into_iter().map(|f| (f.path.clone(), f)));
            (r.context, "inferred", r.from)
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
    let (mut questions, _) = pending(&log, &scope, Round::Name, &naming_prompt, s, &mut naming);
    // Images round 1 found undecodable are not decoded again.
    questions.retain(|q| !undecodable.contains_key(&q.image.rel));
    naming.asked = questions.len();
    let naming_started = Instant::now();
    let pb = progress_bar(questions.len() as u64, "label");
    let asked = labeler.ask_all(questions, &mut log, &pb).await?;
    pb.finish_and_clear();
    let naming_wall = naming_started.elapsed().as_secs_f64();
    naming.answered = asked.records.len();
    naming.failed = asked.failures.len();
    undecodable.extend(
        asked
            .undecodable
            .into_iter()
            .map(|(_, f)| (f.path.clone(), f)),
    );
    naming.undecodable = scope
        .iter()
        .filter(|(f, _)| undecodable.contains_key(&f.rel))
        .count();
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
        total_concurrency as f64 * 1e3 / per_answer.latency_ms
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
        endpoints: client.endpoints().report(),
        model: s.model.clone(),
        params: s.params.clone(),
        images_found: files.len(),
        unique_images: unique.len(),
        images_in_scope: scope.len(),
        samples: s.samples,
        dry_run: s.dry_run.is_some(),
        context,
        context_source: context_source.to_string(),
        context_from,
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
        undecodable: undecodable.len(),
        undecodable_images: undecodable.into_values().take(20).collect(),
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

/// What round 1 decided and what it asked for.
struct Round1 {
    context: Context1,
    /// The images the context was voted from.
    from: Vec<String>,
    /// Records appended in this run.
    records: Vec<Record>,
    /// Images asked that got no answer in this run.
    failures: Vec<Failure>,
    undecodable: Vec<Failure>,
}

/// The order round 1 takes images in: `k` evenly spaced over the (path-sorted) images
/// first, then every other image in path order.
fn round1_order(n: usize, k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..k).map(|i| i * n / k).collect();
    let mut taken = vec![false; n];
    for &i in &order {
        taken[i] = true;
    }
    order.extend((0..n).filter(|&i| !taken[i]));
    order
}

/// Round 1: the context, voted from the first `k` images (`--context-images`, in
/// [`round1_order`]) whose logged round-1 answer is usable.
///
/// The result is a function of the log alone: which answers are usable does not depend on
/// when they arrived, and [`prompt::vote`] does not depend on their order. Questions are
/// asked only while fewer than `k` usable answers are logged, for the next images in the
/// order that have no answer yet (an image whose answer is unusable, or that does not
/// decode, is passed over, never asked again); the vote waits until `k` usable answers are
/// logged, or every image has been answered. So once a run has voted, every later run
/// finds the same `k` answers in the log, votes the same context, asks nothing in round 1
/// and keeps every naming cache key. Fails (answers kept) when images in the way got no
/// answer in this run, or when `3 k` questions gave fewer than `k` usable answers.
async fn infer_context(
    log: &mut Log,
    unique: &[(ImageFile, String)],
    prompt: &Arc<Rendered>,
    s: &LabelSettings,
    labeler: &Labeler,
    stats: &mut RoundStats,
) -> Result<Round1> {
    let k = s.context_images.clamp(1, unique.len());
    let order = round1_order(unique.len(), k);
    let budget = 3 * k;
    let key_of = |i: usize| key(Round::Category, &unique[i].1, prompt, s, 0);
    let logged_before: HashSet<String> = order
        .iter()
        .map(|&i| key_of(i))
        .filter(|k| log.get(k).is_some())
        .collect();
    let mut out = Round1 {
        context: Context1 {
            category: String::new(),
            expert: String::new(),
            granularity: String::new(),
        },
        from: Vec::new(),
        records: Vec::new(),
        failures: Vec::new(),
        undecodable: Vec::new(),
    };
    // Images passed over in this run: no answer (asked again next run) or undecodable.
    let mut failed_now: HashSet<usize> = HashSet::new();
    let mut undecodable_now: HashSet<usize> = HashSet::new();
    let index_of: HashMap<String, usize> = order.iter().map(|&i| (key_of(i), i)).collect();
    stats.questions = k;
    loop {
        let mut usable: Vec<(usize, Context1)> = Vec::new();
        let mut unasked: Vec<usize> = Vec::new();
        let mut answered = 0;
        for &i in &order {
            match log.get(&key_of(i)) {
                Some(r) => {
                    answered += 1;
                    if let Some(c) = &r.context {
                        usable.push((i, c.clone()));
                        if usable.len() == k {
                            break;
                        }
                    }
                }
                None if failed_now.contains(&i) || undecodable_now.contains(&i) => {}
                None => unasked.push(i),
            }
        }
        let need = k - usable.len();
        let room = budget.saturating_sub(stats.asked);
        let everything_answered = answered + undecodable_now.len() == order.len();
        if need == 0 || (everything_answered && !usable.is_empty()) {
            stats.cache_hits = usable
                .iter()
                .filter(|(i, _)| logged_before.contains(&key_of(*i)))
                .count();
            let contexts: Vec<Context1> = usable.iter().map(|(_, c)| c.clone()).collect();
            if let Some(ctx) = prompt::vote(&contexts) {
                out.context = ctx;
                out.from = usable
                    .iter()
                    .map(|(i, _)| unique[*i].0.rel.clone())
                    .collect();
                return Ok(out);
            }
        }
        if unasked.is_empty() || room == 0 {
            let why = if let Some(f) = out.failures.first() {
                format!(
                    "{} of the images it asked got no answer in this run (`{}`: {}); run the \
                     same command again to ask them again (answers so far are kept in `{}`)",
                    out.failures.len(),
                    f.path,
                    f.reason,
                    s.out.display()
                )
            } else {
                format!(
                    "the other answers were refused, malformed or without a category (see the \
                     `category` lines in `{}`), or their images do not decode",
                    s.out.display()
                )
            };
            bail!(
                "round 1 needs usable answers from {k} images to infer the category and got {}: {why}; \
                 or pass --category, --expert and --granularity to skip round 1",
                usable.len()
            );
        }
        let batch: Vec<Question> = unasked
            .into_iter()
            .take(need.min(room))
            .map(|i| Question {
                round: Round::Category,
                key: key_of(i),
                image: unique[i].0.clone(),
                image_sha256: unique[i].1.clone(),
                prompt: Arc::clone(prompt),
                sample: 0,
            })
            .collect();
        stats.asked += batch.len();
        let pb = progress_bar(batch.len() as u64, "round 1");
        let asked = labeler.ask_all(batch.clone(), log, &pb).await?;
        pb.finish_and_clear();
        stats.answered += asked.records.len();
        stats.failed += asked.failures.len();
        stats.undecodable += asked.undecodable.len();
        for (key, f) in asked.undecodable {
            if let Some(&i) = index_of.get(&key) {
                undecodable_now.insert(i);
            }
            out.undecodable.push(f);
        }
        for q in &batch {
            if log.get(&q.key).is_none() && !undecodable_now.contains(&index_of[&q.key]) {
                failed_now.insert(index_of[&q.key]);
            }
        }
        out.records.extend(asked.records);
        out.failures.extend(asked.failures);
    }
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

/// Splits images into questions to ask and answers already logged (every sample).
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
