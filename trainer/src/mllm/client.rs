//! The HTTP client for OpenAI-compatible `/chat/completions` endpoints (vLLM, Ollama,
//! llama.cpp server, LM Studio, OpenAI, Gemini's compatible endpoint).
//!
//! One request per question, the image inline as a base64 data URL. Failures are typed so
//! that the retry loop branches on variants, not on strings:
//! - [`CallError::Retryable`]: 408/409/425/429/5xx, timeouts, refused or reset
//!   connections, a body that is not a chat completion. Retried with exponential backoff
//!   and full jitter; `Retry-After` (seconds or HTTP date) is honoured and pauses every
//!   request, not only the one that got it.
//! - [`CallError::Rejected`]: this image only (413, 422, a 400 about the image); the run
//!   goes on and the image is reported as failed.
//! - [`FatalError`]: 401/403 (credentials), 404 (endpoint or model), a model that does not
//!   accept images, any other 400; the run stops.
//!
//! One client serves one or more endpoints (the same model behind several servers): each
//! attempt goes where [`Endpoints`] sends it (the fewest requests in flight, within each
//! endpoint's own limit), and a retry goes to another healthy endpoint at once; see
//! [`super::endpoints`] for the rules and the per-endpoint accounting.

use super::answer::{self, Reply};
use super::endpoints::{EndpointSpec, Endpoints, SetAside};
use anyhow::Result;
use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// The longest `Retry-After` honoured; longer ones are capped (and logged).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// An API key. Its `Debug` and `Display` print `[redacted]`; only the request builder
/// reads the value.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Self {
        ApiKey(key)
    }

    /// Reads the key from the environment variable `var`. Fails when it is unset or empty.
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => Ok(ApiKey(k.trim().to_string())),
            Ok(_) => {
                anyhow::bail!("environment variable `{var}` (named by --api-key-env) is empty")
            }
            Err(_) => {
                anyhow::bail!("environment variable `{var}` (named by --api-key-env) is not set")
            }
        }
    }

    fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `sent` is this key (compared in time independent of where they differ).
    pub fn matches(&self, sent: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), sent.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An error that ends the run: asking again, or asking about another image, cannot help.
#[derive(Debug, Error)]
pub enum FatalError {
    #[error("`{url}` refused the credentials ({status}): {message}; {hint}")]
    Credentials {
        url: String,
        status: u16,
        message: String,
        hint: String,
    },
    #[error(
        "`{url}` answered 404 Not Found: {message}; check that --endpoint is the base URL \
         (e.g. `http://127.0.0.1:8000/v1`) and that the model `{model}` is served there"
    )]
    NotFound {
        url: String,
        model: String,
        message: String,
    },
    #[error(
        "model `{model}` at `{url}` does not accept images ({status}): {message}; use a multimodal (vision) model"
    )]
    NotMultimodal {
        url: String,
        model: String,
        status: u16,
        message: String,
    },
    #[error("`{url}` rejected the request ({status}): {message}")]
    BadRequest {
        url: String,
        status: u16,
        message: String,
    },
    /// No connection could be made, on every attempt (refused, no route, name not
    /// resolved, connect timeout): every other image would fail the same way.
    #[error(
        "cannot connect to `{url}`: {cause} (after {attempts} attempts); check that the MLLM \
         server is running and listening there, and that --endpoint is its base URL \
         (e.g. `http://127.0.0.1:8000/v1`)"
    )]
    Unreachable {
        url: String,
        /// The innermost cause, e.g. `Connection refused (os error 111)`.
        cause: String,
        attempts: u32,
    },
}

/// Why one request failed.
#[derive(Debug, Error)]
pub enum CallError {
    /// Worth asking again later.
    #[error("{reason}")]
    Retryable {
        /// Short class for accounting: `429`, `503`, `timeout`, `connect`, `body`, ...
        kind: String,
        reason: String,
        /// For `connect`: the innermost cause (`Connection refused (os error 111)`).
        cause: Option<String>,
        retry_after: Option<Duration>,
        /// The body, when the server answered 2xx with something that is not a chat
        /// completion (recorded as malformed if every retry fails the same way).
        garbled: Option<String>,
    },
    /// This image cannot be answered; the run goes on.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Fatal(#[from] FatalError),
}

/// Retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubled each retry, full jitter.
    pub base: Duration,
    /// Longest computed backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): `Retry-After` plus up to 10% jitter
    /// when the server gave one, else uniform in [0, min(cap, base * 2^retry)].
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::rng();
        match retry_after {
            Some(ra) => {
                let ra = ra.min(MAX_RETRY_AFTER);
                ra + ra.mul_f64(rng.random_range(0.0..0.1))
            }
            None => {
                let exp = self
                    .base
                    .saturating_mul(1u32 << retry.min(20))
                    .min(self.cap);
                exp.mul_f64(rng.random_range(0.0..=1.0))
            }
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URLs (e.g. `http://127.0.0.1:8000/v1`; requests go to `{url}/chat/completions`),
    /// each with its own concurrency limit. At least one.
    pub endpoints: Vec<EndpointSpec>,
    pub model: String,
    pub api_key: Option<ApiKey>,
    /// The variable the key came from (named in credential errors, never the key).
    pub api_key_env: Option<String>,
    /// Per-request timeout (connect + answer).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// When an endpoint that keeps failing is set aside (with several endpoints).
    pub set_aside: SetAside,
    /// Connections kept open per endpoint (at least its concurrency).
    pub pool: usize,
}

/// A successful answer to one question.
#[derive(Debug, Clone)]
pub struct Answered {
    pub reply: Reply,
    /// Duration of the request that answered.
    pub latency: Duration,
    /// Requests made (1 = no retry).
    pub attempts: u32,
    /// The endpoint that answered (index into [`Client::endpoints`]).
    pub endpoint: usize,
}

/// How asking one question ended after retries.
#[derive(Debug)]
pub enum AskError {
    /// Retries exhausted or the image rejected: the image is reported as failed.
    Failed {
        reason: String,
        attempts: u32,
    },
    /// Every attempt got a 2xx body that is not a chat completion: recorded as malformed.
    Garbled {
        body: String,
        reason: String,
        attempts: u32,
        latency: Duration,
        /// The endpoint that sent the last one.
        endpoint: usize,
    },
    Fatal(FatalError),
}

/// Counters kept by the client (all requests, retries included).
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    retry_kinds: Mutex<BTreeMap<String, u64>>,
}

/// The chat-completions client. Cheap to share behind an `Arc`.
pub struct Client {
    http: reqwest::Client,
    /// `{endpoint}/chat/completions`, per endpoint.
    urls: Vec<String>,
    config: ClientConfig,
    endpoints: Endpoints,
    counters: Counters,
}

impl Client {
    /// Builds the client. Fails when the TLS backend cannot start, when no endpoint is
    /// given, or when one is not an http(s) URL.
    pub fn new(config: ClientConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            anyhow::bail!("no --endpoint given");
        }
        let mut specs = config.endpoints.clone();
        for e in &mut specs {
            e.url = e.url.trim_end_matches('/').to_string();
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                anyhow::bail!("--endpoint `{}` is not an http(s) URL (expected e.g. `http://127.0.0.1:8000/v1`)", e.url);
            }
            // A malformed URL (bad port, bad IPv6 address) fails here, once, not per image.
            if let Err(err) = reqwest::Url::parse(&e.url) {
                anyhow::bail!(
                    "--endpoint `{}` is not a valid URL: {err} (expected e.g. `http://127.0.0.1:8000/v1`)",
                    e.url
                );
            }
        }
        let pool = specs.iter().map(|e| e.concurrency).max().unwrap_or(1);
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.pool.max(pool).max(1))
            .tcp_nodelay(true)
            .user_agent(concat!("linesight-train/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            urls: specs
                .iter()
                .map(|e| format!("{}/chat/completions", e.url))
                .collect(),
            endpoints: Endpoints::new(specs.clone(), config.set_aside),
            config: ClientConfig {
                endpoints: specs,
                ..config
            },
            counters: Counters::default(),
        })
    }

    /// The endpoints, their state and accounting.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Base URL of endpoint `i` (as recorded in the log).
    pub fn endpoint_url(&self, i: usize) -> &str {
        &self.config.endpoints[i].url
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// HTTP requests made so far.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    /// Retries made so far, and how many per kind (`429`, `500`, `timeout`, ...).
    pub fn retries(&self) -> (u64, BTreeMap<String, u64>) {
        let kinds = self
            .counters
            .retry_kinds
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default();
        (self.counters.retries.load(Ordering::Relaxed), kinds)
    }

    /// The JSON request for one question about one image. `sample` goes out as OpenAI's
    /// `seed`, so sample k is the same draw whenever it is asked (where the server honours
    /// seeds) and different samples are different draws.
    pub fn request_body(
        &self,
        prompt: &str,
        image_data_url: &str,
        params: &super::cache::Params,
        sample: u32,
    ) -> Vec<u8> {
        let mut body = json!({
            "model": self.config.model,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt},
                    {"type": "image_url", "image_url": {"url": image_data_url}}
                ]
            }],
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "seed": sample,
            "stream": false
        });
        if let (Some(tp), Some(obj)) = (params.top_p, body.as_object_mut()) {
            obj.insert("top_p".into(), json!(tp));
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Asks until answered, retrying retryable failures per the policy: on another
    /// healthy endpoint at once, else on the same one after the backoff.
    pub async fn ask(&self, body: &[u8]) -> Result<Answered, AskError> {
        let mut attempts = 0;
        let mut avoid = None;
        loop {
            let permit = self.endpoints.acquire(avoid).await;
            let i = permit.index();
            attempts += 1;
            let started = Instant::now();
            let outcome = self.call(i, body).await;
            drop(permit);
            match outcome {
                Ok(reply) => {
                    let latency = started.elapsed();
                    self.endpoints.answered(i, latency);
                    return Ok(Answered {
                        reply,
                        latency,
                        attempts,
                        endpoint: i,
                    });
                }
                Err(CallError::Fatal(f)) => {
                    self.endpoints.refused(i, "fatal");
                    return Err(AskError::Fatal(f));
                }
                Err(CallError::Rejected(reason)) => {
                    self.endpoints.refused(i, "rejected");
                    return Err(AskError::Failed { reason, attempts });
                }
                Err(CallError::Retryable {
                    kind,
                    reason,
                    cause,
                    retry_after,
                    garbled,
                }) => {
                    self.endpoints.failed(i, &kind, retry_after);
                    let retry = attempts - 1;
                    if retry >= self.config.retry.max_retries {
                        return Err(match (garbled, cause) {
                            (Some(body), _) => AskError::Garbled {
                                body,
                                reason,
                                attempts,
                                latency: started.elapsed(),
                                endpoint: i,
                            },
                            // Fatal only when no endpoint answers any more: every other
                            // image would fail the same way.
                            (None, Some(cause))
                                if kind == "connect" && self.endpoints.all_failing() =>
                            {
                                AskError::Fatal(FatalError::Unreachable {
                                    url: self.urls.join("`, `"),
                                    cause,
                                    attempts,
                                })
                            }
                            (None, _) => AskError::Failed {
                                reason: format!("{reason} (after {attempts} attempts)"),
                                attempts,
                            },
                        });
                    }
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut k) = self.counters.retry_kinds.lock() {
                        *k.entry(kind).or_default() += 1;
                    }
                    if let Some(ra) = retry_after.filter(|&ra| ra > MAX_RETRY_AFTER) {
                        tracing::warn!(
                            retry_after_s = ra.as_secs(),
                            cap_s = MAX_RETRY_AFTER.as_secs(),
                            "Retry-After capped"
                        );
                    }
                    if self.endpoints.others_healthy(i) {
                        // Another server can take it now; this one's pause or backoff
                        // (set above) keeps the others' requests away from it meanwhile.
                        avoid = Some(i);
                        tracing::debug!(%reason, attempt = attempts, "retrying on another endpoint");
                        continue;
                    }
                    avoid = None;
                    let delay = self.config.retry.delay(retry, retry_after);
                    tracing::debug!(%reason, attempt = attempts, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One HTTP request to endpoint `i`.
    pub async fn call(&self, i: usize, body: &[u8]) -> Result<Reply, CallError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let url = &self.urls[i];
        let mut req = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(k) = &self.config.api_key {
            req = req.bearer_auth(k.expose());
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return answer::parse_completion(&bytes).map_err(|reason| CallError::Retryable {
                kind: "body".into(),
                reason: format!("`{url}`: {reason}"),
                cause: None,
                retry_after: None,
                garbled: Some(String::from_utf8_lossy(&bytes).chars().take(4000).collect()),
            });
        }
        Err(self.classify(url, status, retry_after, &bytes))
    }

    /// Maps a non-2xx answer to retryable / rejected / fatal.
    fn classify(
        &self,
        url: &str,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> CallError {
        let message = server_message(body);
        let url = url.to_string();
        let code = status.as_u16();
        match code {
            401 | 403 => FatalError::Credentials {
                url,
                status: code,
                message,
                hint: match &self.config.api_key_env {
                    Some(var) => format!("check the API key in environment variable `{var}`"),
                    None => {
                        "pass --api-key-env VAR with the variable that holds the API key".into()
                    }
                },
            }
            .into(),
            404 => FatalError::NotFound {
                url,
                model: self.config.model.clone(),
                message,
            }
            .into(),
            400 if says_not_multimodal(&message) => FatalError::NotMultimodal {
                url,
                model: self.config.model.clone(),
                status: code,
                message,
            }
            .into(),
            400 if message.to_lowercase().contains("image") => {
                CallError::Rejected(format!("{code}: {message}"))
            }
            413 | 422 => CallError::Rejected(format!("{code}: {message}")),
            408 | 409 | 425 | 429 | 500..=599 => CallError::Retryable {
                kind: code.to_string(),
                reason: format!("`{url}` answered {status}: {message}"),
                cause: None,
                retry_after,
                garbled: None,
            },
            _ => FatalError::BadRequest {
                url,
                status: code,
                message,
            }
            .into(),
        }
    }
}

fn transport_error(e: reqwest::Error) -> CallError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    let mut reason = e.to_string();
    let mut innermost = None;
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let text = s.to_string();
        // hyper repeats its cause in its own message; keep each text once.
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        innermost = Some(text);
        src = s.source();
    }
    CallError::Retryable {
        kind: kind.into(),
        reason,
        cause: innermost.or_else(|| Some(e.to_string())),
        retry_after: None,
        garbled: None,
    }
}

/// `Retry-After` as seconds (integer or decimal) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(1e6)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The message of an error body (OpenAI's `{"error": {"message": ...}}`, `{"detail": ...}`,
/// `{"message": ...}`, or the text itself), shortened.
fn server_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v
            .get("error")
            .map(answer::error_message)
            .or_else(|| {
                v.get("detail").map(|d| {
                    d.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| d.to_string())
                })
            })
            .or_else(|| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let text = if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    };
    text.chars().take(500).collect()
}

/// Whether an error message says the model takes no images (vLLM, llama.cpp, OpenAI,
/// Ollama, LM Studio phrasings).
pub fn says_not_multimodal(message: &str) -> bool {
    let m = message.to_lowercase();
    const PHRASES: [&str; 14] = [
        "not a multimodal",
        "not multimodal",
        "does not support image",
        "doesn't support image",
        "not support image",
        "image input is not supported",
        "image input not supported",
        "images are not supported",
        "does not accept image",
        "image_url is only supported",
        "vision is not supported",
        "does not support vision",
        "text-only",
        "mmproj",
    ];
    PHRASES.iter().any(|p| m.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn api_key_never_prints() {
        let k = ApiKey::new("sk-very-secret".into());
        assert!(!format!("{k:?} {k}").contains("secret"));
        let cfg = ClientConfig {
            endpoints: vec![EndpointSpec {
                url: "http://x/v1".into(),
                concurrency: 1,
            }],
            model: "m".into(),
            api_key: Some(k),
            api_key_env: Some("V".into()),
            timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            set_aside: SetAside::default(),
            pool: 1,
        };
        assert!(!format!("{cfg:?}").contains("secret"));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for retry in 0..12 {
            let bound = Duration::from_millis(100)
                .saturating_mul(1 << retry)
                .min(Duration::from_secs(1));
            assert!(p.delay(retry, None) <= bound);
        }
        let d = p.delay(0, Some(Duration::from_secs(2)));
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2200));
    }

    #[test]
    fn not_multimodal_phrasings() {
        assert!(says_not_multimodal("Qwen2-7B is not a multimodal model"));
        assert!(says_not_multimodal(
            "image input is not supported - hint: you may need to provide the mmproj"
        ));
        assert!(says_not_multimodal(
            "Invalid content type. image_url is only supported by certain models."
        ));
        assert!(!says_not_multimodal("max_tokens is too large"));
    }
}
