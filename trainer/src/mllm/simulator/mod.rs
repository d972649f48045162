//! `simulate-mllm`: a **simulator** of a multimodal LLM, for tests, benchmarks and demos.
//! It is not a model and does not look at pixels: it recognises each image by the sha256
//! of its bytes in a ground-truth manifest and answers from the true label through a
//! configurable noise model ([`noise`]) shaped like real MLLM errors.
//!
//! It speaks the OpenAI-compatible protocol the labeller speaks: `POST
//! /v1/chat/completions` (text + one inline base64 image), `GET /v1/models`, plus `GET
//! /simulator/stats` (its own counters). A request whose text asks for an `"expert"` JSON
//! key is the round-1 question and gets category / expert / granularity; any other
//! request is a naming question.
//!
//! Answers are reproducible per seed and do not depend on the order in which concurrent
//! requests arrive: each draw is seeded by (seed, image hash, prompt, draw index), the draw
//! index being the request's `seed` (the labeller sends the sample index) or else how many
//! times the image was asked. Temperature (OpenAI's default 1 when a request leaves it
//! out): draw 0 is the image's greedy answer; any other draw repeats it, or with
//! probability T / (1 + T) is a fresh draw from the noise model, so sampled answers show
//! the model's second thoughts while keeping its habits. A prompt that offers a list of
//! expected names (`prompt::offer_names`) is answered from the list (see
//! `noise::Noise::choose_from_list`). Faults are drawn per request from their
//! own seeded stream: 429 with `Retry-After`, 500, slow replies, malformed answers, and
//! (opt-in) garbled bodies. Error replies follow OpenAI's `{"error": {...}}` shape:
//! 401 without the expected key, 404 for another model name, 400 "does not support image
//! input" in `--text-only` mode, 422 for an image that is not in the truth manifest.
//!
//! Round 1 (`context_variety`): a share of the round-1 answers can be reworded (another
//! expert, a `small` category), as real models word the same idea differently per image;
//! with latency (`latency`, uniform 0.5-1.5x per request) the answers also arrive in a
//! different order on every run. Together they expose a context vote that depends on the
//! order of arrival (issue 16). Off by default.
//!
//! Habits (`systematic`, `spread`): real MLLMs repeat some confusions whatever the image.
//! With `systematic` S, a share S of a class's wrong answers names one fixed partner class
//! (a sibling when the class has one); `spread` D gives each class its own accuracy,
//! accuracy +- up to D. Both are fixed per seed (see `noise::Noise::with_habits`).

pub mod names;
pub mod noise;

use crate::bounds::{Bound, Checker};
use crate::dataset;
use crate::mllm::client::ApiKey;
use crate::mllm::images;
use crate::mllm::prompt::{self, sha256_hex, Context1};
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use noise::{Kind, Mix, Noise, Taxonomy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 429 Too Many Requests with `Retry-After`.
    RateLimit,
    /// 500 Internal Server Error.
    ServerError,
    /// The answer arrives after `slow` (a client with a shorter timeout retries).
    Slow,
    /// A 200 answer whose content is truncated JSON, empty, a refusal, or without a name.
    Malformed,
    /// A 200 answer whose body is not JSON at all (a proxy's error page).
    Garbled,
}

impl Fault {
    /// The faults `--fault-rate` draws from by default.
    pub const DEFAULT: [Fault; 4] = [
        Fault::RateLimit,
        Fault::ServerError,
        Fault::Slow,
        Fault::Malformed,
    ];

    /// Parses `429`, `500`, `slow`, `malformed`, `garbled`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "429" | "rate-limit" => Fault::RateLimit,
            "500" | "server-error" => Fault::ServerError,
            "slow" => Fault::Slow,
            "malformed" => Fault::Malformed,
            "garbled" => Fault::Garbled,
            other => {
                bail!("unknown fault `{other}` (expected 429, 500, slow, malformed or garbled)")
            }
        })
    }
}

/// Everything the simulator is configured with.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Ground-truth manifest (CSV `path,label,split`, paths relative to it).
    pub truth: PathBuf,
    /// Probability that a naming answer carries the correct name.
    pub accuracy: f64,
    /// Shares of the wrong answers.
    pub mix: Mix,
    pub seed: u64,
    /// Optional groups file (`group: Class A, Class B`); default: classes sharing their last word.
    pub groups: Option<PathBuf>,
    /// Probability that a request gets a fault.
    pub fault_rate: f64,
    /// Which faults are drawn (uniformly).
    pub faults: Vec<Fault>,
    /// `Retry-After` seconds sent with 429.
    pub retry_after_s: u64,
    /// Delay of a slow reply.
    pub slow: Duration,
    /// Mean delay of every answer (uniform in [0.5, 1.5] x this), to imitate a model's time.
    pub latency: Duration,
    /// The model name served; `None` accepts any.
    pub model: Option<String>,
    /// The key clients must send as `Authorization: Bearer`; `None` accepts any.
    pub api_key: Option<ApiKey>,
    /// Answer every image request with 400 "does not support image input".
    pub text_only: bool,
    /// What round 1 answers.
    pub context: Context1,
    /// Share of round-1 answers worded differently (another expert, `small` category); 0
    /// by default (see `noise::context_answer`).
    pub context_variety: f64,
    /// Share of wrong answers that go to one fixed partner class per class (a habit).
    pub systematic: f64,
    /// Per-class accuracy = accuracy +- up to this (deterministic per seed).
    pub spread: f64,
    /// Prompt tokens counted per image (usage is reported like a real server's).
    pub image_tokens: u64,
}

impl SimulatorConfig {
    /// Checks the noise and fault settings against their ranges, naming each by its
    /// `simulate-mllm` flag: probabilities and habits within [0, 1], shares of the wrong
    /// answers finite, not negative and not all 0.
    pub fn validate(&self) -> Result<()> {
        Checker::new("--")
            .check("accuracy", self.accuracy, Bound::UNIT)
            .check("sibling-share", self.mix.sibling, Bound::NON_NEGATIVE)
            .check("coarse-share", self.mix.coarse, Bound::NON_NEGATIVE)
            .check("outside-share", self.mix.outside, Bound::NON_NEGATIVE)
            .check("systematic", self.systematic, Bound::UNIT)
            .check("spread", self.spread, Bound::UNIT)
            .check("fault-rate", self.fault_rate, Bound::UNIT)
            .check("context-variety", self.context_variety, Bound::UNIT)
            .finish()?;
        if self.mix.sibling + self.mix.coarse + self.mix.outside <= 0.0 {
            bail!("--sibling-share, --coarse-share and --outside-share are all 0; at least one share of the wrong answers must be above 0");
        }
        if self.fault_rate > 0.0 && self.faults.is_empty() {
            bail!("--fault-rate is above 0 but no fault kind is enabled");
        }
        Ok(())
    }

    /// Defaults for a truth manifest: accuracy 0.7, mix 60/20/20, seed 0, no faults,
    /// round 1 answering bird / ornithologist / species.
    pub fn new(truth: PathBuf) -> Self {
        SimulatorConfig {
            truth,
            accuracy: 0.7,
            mix: Mix::default(),
            seed: 0,
            groups: None,
            fault_rate: 0.0,
            faults: Fault::DEFAULT.to_vec(),
            retry_after_s: 1,
            slow: Duration::from_secs(5),
            latency: Duration::ZERO,
            model: None,
            api_key: None,
            text_only: false,
            context: Context1 {
                category: "bird".into(),
                expert: "ornithologist".into(),
                granularity: "species".into(),
            },
            context_variety: 0.0,
            image_tokens: 258,
            systematic: 0.0,
            spread: 0.0,
        }
    }
}

/// The simulator's counters.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    naming: AtomicU64,
    category: AtomicU64,
    correct: AtomicU64,
    sibling: AtomicU64,
    coarse: AtomicU64,
    outside: AtomicU64,
    fault_429: AtomicU64,
    fault_500: AtomicU64,
    fault_slow: AtomicU64,
    fault_malformed: AtomicU64,
    fault_garbled: AtomicU64,
    unknown_image: AtomicU64,
    unauthorized: AtomicU64,
    wrong_model: AtomicU64,
    not_multimodal: AtomicU64,
    bad_request: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// HTTP requests to `/v1/chat/completions`.
    pub requests: u64,
    /// Naming answers served (malformed ones included).
    pub naming: u64,
    /// Round-1 answers served.
    pub category: u64,
    pub correct: u64,
    pub sibling: u64,
    pub coarse: u64,
    pub outside: u64,
    pub fault_429: u64,
    pub fault_500: u64,
    pub fault_slow: u64,
    pub fault_malformed: u64,
    pub fault_garbled: u64,
    pub unknown_image: u64,
    pub unauthorized: u64,
    pub wrong_model: u64,
    pub not_multimodal: u64,
    pub bad_request: u64,
    /// correct / (correct + sibling + coarse + outside): the accuracy actually served.
    pub served_accuracy: f64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let named = g(&self.correct) + g(&self.sibling) + g(&self.coarse) + g(&self.outside);
        Stats {
            requests: g(&self.requests),
            naming: g(&self.naming),
            category: g(&self.category),
            correct: g(&self.correct),
            sibling: g(&self.sibling),
            coarse: g(&self.coarse),
            outside: g(&self.outside),
            fault_429: g(&self.fault_429),
            fault_500: g(&self.fault_500),
            fault_slow: g(&self.fault_slow),
            fault_malformed: g(&self.fault_malformed),
            fault_garbled: g(&self.fault_garbled),
            unknown_image: g(&self.unknown_image),
            unauthorized: g(&self.unauthorized),
            wrong_model: g(&self.wrong_model),
            not_multimodal: g(&self.not_multimodal),
            bad_request: g(&self.bad_request),
            served_accuracy: if named == 0 {
                0.0
            } else {
                g(&self.correct) as f64 / named as f64
            },
        }
    }
}

/// A loaded simulator: truth index, noise model and counters.
pub struct Simulator {
    config: SimulatorConfig,
    noise: Noise,
    /// image sha256 -> class index.
    by_hash: HashMap<String, usize>,
    /// (image sha256, round) -> times asked.
    asked: Mutex<HashMap<(String, bool), u64>>,
    fault_rng: Mutex<StdRng>,
    counters: Counters,
}

impl Simulator {
    /// Reads the truth manifest and hashes its images. Fails when the manifest or a groups
    /// file cannot be read, or the settings are out of range.
    pub fn load(config: SimulatorConfig) -> Result<Self> {
        config.validate()?;
        let entries = dataset::read_manifest(&config.truth)?;
        if entries.is_empty() {
            bail!("truth manifest `{}` has no rows", config.truth.display());
        }
        let classes = dataset::label_set(&entries);
        let taxonomy = match &config.groups {
            Some(g) => Taxonomy::from_file(classes.clone(), g)?,
            None => Taxonomy::by_last_word(classes.clone()),
        };
        let paths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
        let hashes = images::hash_files(&paths, &indicatif::ProgressBar::hidden());
        let mut by_hash = HashMap::with_capacity(entries.len());
        let mut unreadable = 0;
        for (e, h) in entries.iter().zip(hashes) {
            let Ok(h) = h else {
                unreadable += 1;
                continue;
            };
            let class = classes.binary_search(&e.label).unwrap_or(0);
            if let Some(&prev) = by_hash.get(&h) {
                if prev != class {
                    tracing::warn!(path = %e.path.display(), "the same image bytes carry two labels in the truth; the first wins");
                }
                continue;
            }
            by_hash.insert(h, class);
        }
        if unreadable > 0 {
            tracing::warn!(unreadable, truth = %config.truth.display(), "truth images that could not be read are unknown to the simulator");
        }
        let noise = Noise::uniform(
            taxonomy,
            config.accuracy,
            config.mix,
            config.context.clone(),
        )
        .with_habits(config.spread, config.systematic, config.seed);
        let fault_rng = Mutex::new(StdRng::seed_from_u64(noise::splitmix(config.seed ^ 0xFA17)));
        Ok(Simulator {
            config,
            noise,
            by_hash,
            asked: Mutex::new(HashMap::new()),
            fault_rng,
            counters: Counters::default(),
        })
    }

    /// Images known, classes known.
    pub fn size(&self) -> (usize, usize) {
        (self.by_hash.len(), self.noise.taxonomy.classes.len())
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The HTTP routes, over a shared simulator.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/simulator/stats", get(stats))
            .layer(DefaultBodyLimit::max(256 << 20))
            .with_state(self)
    }

    fn model_name(&self) -> &str {
        self.config
            .model
            .as_deref()
            .unwrap_or("linesight-simulated-mllm")
    }

    /// Which draw a call is: the request's `seed` when it sends one (the labeller sends
    /// the sample index), else how many times this image was asked before.
    fn call_index(&self, image_sha: &str, category_round: bool, seed: Option<u64>) -> u64 {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let c = asked
            .entry((image_sha.to_string(), category_round))
            .or_insert(0);
        *c += 1;
        seed.unwrap_or(*c - 1)
    }

    /// The RNG of draw `n` about one image under one prompt: (seed, image, prompt, round,
    /// n); `prompt_salt` from [`prompt_salt`].
    fn call_rng(&self, image_sha: &str, category_round: bool, n: u64, prompt_salt: u64) -> StdRng {
        let h = u64::from_str_radix(&image_sha[..16.min(image_sha.len())], 16).unwrap_or(0)
            ^ prompt_salt;
        let round = if category_round { 0xC47 } else { 0x4A3E };
        StdRng::seed_from_u64(noise::splitmix(
            noise::splitmix(self.config.seed ^ h) ^ n.wrapping_mul(0x9E37) ^ round,
        ))
    }

    /// The name naming question `n` about image `sha` (of `class`) gets under `prompt` at
    /// `temperature`. Draw 0 is the image's greedy answer; any other draw is a fresh draw
    /// with probability T / (1 + T), else the greedy answer again; a prompt offering
    /// expected names is answered from them. `rng` is the call's own stream.
    fn draw_name(
        &self,
        sha: &str,
        class: usize,
        prompt: &str,
        temperature: f64,
        n: u64,
        rng: &mut StdRng,
    ) -> (Kind, String) {
        let pref = self.image_pref(sha);
        let mut greedy_rng = self.call_rng(sha, false, 0, prompt_salt(prompt));
        let (mut kind, mut name) = self.noise.draw(class, pref, &mut greedy_rng);
        if n > 0 && temperature > 0.0 && rng.random::<f64>() < temperature / (1.0 + temperature) {
            (kind, name) = self.noise.draw(class, pref, rng);
        }
        let listed = prompt::expected_names(prompt);
        if !listed.is_empty() {
            (kind, name) = self
                .noise
                .choose_from_list(class, kind, &name, &listed, pref, rng);
        }
        (kind, name)
    }

    /// What asking the simulator about every image of one split of its truth would score:
    /// the greedy answer of each image to the embedded naming prompt rendered with the
    /// configured context (what `label --category/--expert/--granularity` with the same
    /// words sends), scored like `label score` (names compared in canonical form; cACC
    /// by one-to-one matching). No HTTP, no surface forms.
    pub fn direct(&self, split: &str) -> Result<DirectReport> {
        let entries = dataset::read_split(&self.config.truth, split)?;
        if entries.is_empty() {
            bail!(
                "truth manifest `{}` has no rows with split `{split}`",
                self.config.truth.display()
            );
        }
        let prompt = prompt::Template::embedded_naming().render(&self.config.context);
        // The text as `request_parts` assembles it from a request (each text part + '\n'),
        // so these are the draws `label` gets (a test checks they are).
        let text = format!("{}\n", prompt.text);
        let paths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
        let hashes = images::hash_files(&paths, &indicatif::ProgressBar::hidden());
        let (mut predicted, mut truth) = (Vec::new(), Vec::new());
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for (e, h) in entries.iter().zip(hashes) {
            let Ok(sha) = h else { continue };
            let Some(&class) = self.by_hash.get(&sha) else {
                continue;
            };
            let mut rng = self.call_rng(&sha, false, 0, prompt_salt(&text));
            let (kind, name) = self.draw_name(&sha, class, &text, 0.0, 0, &mut rng);
            *kinds.entry(format!("{kind:?}").to_lowercase()).or_default() += 1;
            predicted.push(name);
            truth.push(e.label.clone());
        }
        let scores = crate::metrics::score_names(&predicted, &truth, None)?;
        Ok(DirectReport {
            simulator: true,
            split: split.to_string(),
            prompt_sha256: prompt.sha256,
            n: scores.n,
            cacc: scores.cacc,
            top1_exact: scores.top1_exact,
            answers: kinds,
        })
    }

    /// The image's fixed confusion preference (same for every call).
    fn image_pref(&self, image_sha: &str) -> u64 {
        let h = u64::from_str_radix(
            &image_sha[16.min(image_sha.len())..32.min(image_sha.len())],
            16,
        )
        .unwrap_or(0);
        noise::splitmix(self.config.seed.wrapping_add(0x5EED) ^ h)
    }

    fn draw_fault(&self) -> Option<Fault> {
        if self.config.fault_rate <= 0.0 {
            return None;
        }
        let mut rng = self.fault_rng.lock().unwrap_or_else(|p| p.into_inner());
        (rng.random::<f64>() < self.config.fault_rate)
            .then(|| self.config.faults[rng.random_range(0..self.config.faults.len())])
    }
}

/// What `simulate-mllm --direct SPLIT` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DirectReport {
    /// Always `true`: these are a simulator's answers.
    pub simulator: bool,
    pub split: String,
    /// The naming prompt the answers are for (as `label` sends it with the same context).
    pub prompt_sha256: String,
    pub n: usize,
    pub cacc: f64,
    pub top1_exact: f64,
    /// Answers by kind (correct, sibling, coarse, outside).
    pub answers: std::collections::BTreeMap<String, usize>,
}

/// The part of a prompt that seeds the draws: its text without the expected-names list,
/// so a reworded prompt gets new answers while offering a list keeps the draws it changes.
fn prompt_salt(text: &str) -> u64 {
    let base = text
        .split(prompt::EXPECTED_NAMES_MARKER)
        .next()
        .unwrap_or_default();
    u64::from_str_radix(&sha256_hex(base.as_bytes())[..16], 16).unwrap_or(0)
}

fn error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": code}})),
    )
        .into_response()
}

async fn models(State(sim): State<Arc<Simulator>>) -> Response {
    Json(json!({"object": "list", "data": [{"id": sim.model_name(), "object": "model", "owned_by": "linesight-simulator"}]}))
        .into_response()
}

async fn stats(State(sim): State<Arc<Simulator>>) -> Response {
    Json(sim.stats()).into_response()
}

/// The text and image URLs of a request's messages.
fn request_parts(v: &Value) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut urls = Vec::new();
    for m in v
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match m.get("content") {
            Some(Value::String(s)) => {
                text.push_str(s);
                text.push('\n');
            }
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                        text.push('\n');
                    }
                    let url = p
                        .get("image_url")
                        .and_then(|u| u.get("url").and_then(Value::as_str).or_else(|| u.as_str()));
                    if let Some(u) = url {
                        urls.push(u.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    (text, urls)
}

async fn chat(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let c = &sim.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = &sim.config.api_key {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if !key.matches(sent.unwrap_or("")) {
            c.unauthorized.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::UNAUTHORIZED,
                "simulator: incorrect or missing API key",
                "invalid_request_error",
                "invalid_api_key",
            );
        }
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        c.bad_request.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "simulator: the request body is not JSON",
            "invalid_request_error",
            "invalid_json",
        );
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if sim.config.model.as_deref().is_some_and(|m| m != model) {
        c.wrong_model.fetch_add(1, Ordering::Relaxed);
        let msg = format!(
            "simulator: the model `{model}` does not exist (this simulator serves `{}`)",
            sim.model_name()
        );
        return error(
            StatusCode::NOT_FOUND,
            &msg,
            "invalid_request_error",
            "model_not_found",
        );
    }
    let (text, urls) = request_parts(&req);
    let Some(url) = urls.first() else {
        c.bad_request.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "simulator: the request carries no image",
            "invalid_request_error",
            "no_image",
        );
    };
    if sim.config.text_only {
        c.not_multimodal.fetch_add(1, Ordering::Relaxed);
        let msg = format!(
            "simulator: model `{}` is text-only and does not support image input",
            sim.model_name()
        );
        return error(
            StatusCode::BAD_REQUEST,
            &msg,
            "invalid_request_error",
            "image_input_not_supported",
        );
    }
    let fault = sim.draw_fault();
    match fault {
        Some(Fault::RateLimit) => {
            c.fault_429.fetch_add(1, Ordering::Relaxed);
            let body = json!({"error": {"message": "simulator: rate limit reached, retry later", "type": "rate_limit_error", "code": "rate_limit_exceeded"}});
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, sim.config.retry_after_s.to_string())],
                Json(body),
            )
                .into_response();
        }
        Some(Fault::ServerError) => {
            c.fault_500.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulator: internal error (injected)",
                "server_error",
                "internal_error",
            );
        }
        Some(Fault::Garbled) => {
            c.fault_garbled.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>502 Bad Gateway (simulated)</body></html>",
            )
                .into_response();
        }
        Some(Fault::Slow) => {
            c.fault_slow.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(sim.config.slow).await;
        }
        _ => {}
    }
    let Some(bytes) = images::decode_data_url(url) else {
        c.bad_request.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "simulator: the image must be an inline base64 data URL",
            "invalid_request_error",
            "invalid_image_url",
        );
    };
    let sha = sha256_hex(&bytes);
    let Some(&class) = sim.by_hash.get(&sha) else {
        c.unknown_image.fetch_add(1, Ordering::Relaxed);
        let msg = format!(
            "simulator: image sha256 {sha} is not in the truth manifest `{}`",
            sim.config.truth.display()
        );
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &msg,
            "invalid_request_error",
            "unknown_image",
        );
    };
    if !sim.config.latency.is_zero() {
        let f = sim
            .fault_rng
            .lock()
            .map(|mut r| r.random_range(0.5..1.5))
            .unwrap_or(1.0);
        tokio::time::sleep(sim.config.latency.mul_f64(f)).await;
    }
    let category_round = text.contains("\"expert\"");
    // OpenAI's default temperature is 1 when a request leaves it out.
    let temperature = req
        .get("temperature")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    let n = sim.call_index(
        &sha,
        category_round,
        req.get("seed").and_then(Value::as_u64),
    );
    let mut rng = sim.call_rng(&sha, category_round, n, prompt_salt(&text));
    let noise = &sim.noise;
    let mut refusal = None;
    let mut finish = "stop";
    let mut reasoning = None;
    let mut as_parts = false;
    let content = if category_round {
        c.category.fetch_add(1, Ordering::Relaxed);
        Some(noise::context_answer(
            &noise.context,
            sim.config.context_variety,
            &mut rng,
        ))
    } else {
        c.naming.fetch_add(1, Ordering::Relaxed);
        let (kind, name) = sim.draw_name(&sha, class, &text, temperature, n, &mut rng);
        if fault == Some(Fault::Malformed) {
            c.fault_malformed.fetch_add(1, Ordering::Relaxed);
            let (content, refuse, fin) = noise::malformed(&name, &mut rng);
            refusal = refuse;
            finish = fin;
            content
        } else {
            let counter = match kind {
                Kind::Correct => &c.correct,
                Kind::Sibling => &c.sibling,
                Kind::Coarse => &c.coarse,
                Kind::Outside => &c.outside,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let sibs = noise.taxonomy.siblings(class);
            let distractor = sibs
                .get(rng.random_range(0..sibs.len().max(1)))
                .map(|&s| noise.taxonomy.classes[s].as_str())
                .unwrap_or("");
            let s = noise::surface(&name, distractor, &noise.context.category, &mut rng);
            reasoning = s.reasoning;
            as_parts = s.as_parts;
            Some(s.content)
        }
    };
    let completion_tokens = content.as_deref().map_or(1, |t| t.len() as u64 / 4 + 1)
        + reasoning.as_deref().map_or(0, |r| r.len() as u64 / 4 + 1);
    let prompt_tokens = text.len() as u64 / 4 + 1 + sim.config.image_tokens * urls.len() as u64;
    let content_value = match (&content, as_parts) {
        (Some(t), true) => json!([{"type": "text", "text": t}]),
        (Some(t), false) => json!(t),
        (None, _) => Value::Null,
    };
    let mut message = json!({"role": "assistant", "content": content_value});
    if let (Some(r), Some(obj)) = (reasoning, message.as_object_mut()) {
        obj.insert("reasoning_content".into(), json!(r));
    }
    if let (Some(r), Some(obj)) = (refusal, message.as_object_mut()) {
        obj.insert("refusal".into(), json!(r));
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(json!({
        "id": format!("chatcmpl-sim-{}", c.requests.load(Ordering::Relaxed)),
        "object": "chat.completion",
        "created": created,
        "model": if model.is_empty() { sim.model_name().to_string() } else { model },
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    }))
    .into_response()
}

/// A simulator serving on its own runtime thread until stopped; for tests and benchmarks
/// that run it in-process.
pub struct RunningSimulator {
    pub addr: SocketAddr,
    sim: Arc<Simulator>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl RunningSimulator {
    /// Loads the simulator and serves it on `listen` (port 0 picks a free port).
    /// Fails when loading fails or the address cannot be bound.
    pub fn start(config: SimulatorConfig, listen: &str) -> Result<Self> {
        let sim = Arc::new(Simulator::load(config)?);
        let std_listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on `{listen}`"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Arc::clone(&sim).router();
        let thread = std::thread::Builder::new()
            .name("simulate-mllm".into())
            .spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = rx.await;
                        })
                        .await?;
                    Ok(())
                })
            })?;
        Ok(RunningSimulator {
            addr,
            sim,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The base URL to give the labeller, e.g. `http://127.0.0.1:40123/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    /// Stops serving and returns the final counters.
    pub fn stop(mut self) -> Stats {
        self.halt();
        self.sim.stats()
    }

    fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => tracing::warn!(error = %e, "simulator ended with an error"),
                Err(_) => tracing::warn!("simulator thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.halt();
    }
}
