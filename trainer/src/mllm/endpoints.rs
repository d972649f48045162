//! Several OpenAI-compatible servers behind one labelling run (the same model served by
//! several vLLM instances, say): which endpoint gets the next request, which ones are set
//! aside, and what each one did.
//!
//! - Each endpoint has its own concurrency limit: `URL,concurrency=N` on the command line
//!   or in the pipeline config, else `--concurrency` ([`EndpointSpec::parse`]).
//! - A request goes to the endpoint with the fewest requests in flight among those below
//!   their limit, not set aside and not paused by a `Retry-After` (ties: fewer calls so
//!   far, then the order given). When none is free, it waits for one.
//! - A retryable failure (connection refused or reset, timeout, 429/5xx, a body that is not
//!   a chat completion) is retried on another endpoint at once when another one is healthy
//!   ([`Endpoints::others_healthy`]); otherwise after the client's backoff, as with one
//!   endpoint.
//! - With more than one endpoint, an endpoint whose requests fail [`SetAside::after`] times
//!   in a row is set aside for a backoff that doubles each time it is set aside again
//!   without an answer in between ([`SetAside::base`] up to [`SetAside::cap`]); meanwhile
//!   its requests go to the others. When the backoff ends it gets requests again; one
//!   answer clears its record, one more failure sets it aside again. A lone endpoint is
//!   never set aside (there is nowhere else to send; the retry backoff spaces its
//!   requests).
//! - `Retry-After` pauses only the endpoint that sent it.
//! - Per endpoint: HTTP calls, answers, errors by kind, times set aside, and the latency of
//!   its answers ([`EndpointReport`], in the accounting).
//!
//! The endpoint is not part of the cache key: the answer log records which endpoint
//! answered each question, and a rerun against other servers asks only what is missing.

use super::accounting::Latency;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One endpoint as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSpec {
    /// Base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub url: String,
    /// Requests in flight at once on this endpoint.
    pub concurrency: usize,
}

impl EndpointSpec {
    /// `URL` or `URL,concurrency=N` (N >= 1); a URL alone gets `default_concurrency`.
    /// Fails on an empty URL or a malformed or zero concurrency, naming the text.
    pub fn parse(text: &str, default_concurrency: usize) -> Result<Self, String> {
        let text = text.trim();
        let (url, concurrency) = match text.rsplit_once(',') {
            Some((url, opt)) => {
                let n = opt.trim().strip_prefix("concurrency=").ok_or_else(|| {
                    format!("endpoint `{text}`: expected `URL` or `URL,concurrency=N`")
                })?;
                let n: usize = n.trim().parse().map_err(|_| {
                    format!("endpoint `{text}`: concurrency `{n}` is not a whole number")
                })?;
                (url.trim(), n)
            }
            None => (text, default_concurrency),
        };
        if url.is_empty() {
            return Err(format!("endpoint `{text}` has no URL"));
        }
        if concurrency == 0 {
            return Err(format!("endpoint `{text}`: concurrency must be at least 1"));
        }
        Ok(EndpointSpec {
            url: url.trim_end_matches('/').to_string(),
            concurrency,
        })
    }

    /// Parses every text; fails on the first bad one and on a URL given twice.
    pub fn parse_all(texts: &[String], default_concurrency: usize) -> Result<Vec<Self>, String> {
        let mut specs: Vec<EndpointSpec> = Vec::with_capacity(texts.len());
        for t in texts {
            let s = Self::parse(t, default_concurrency)?;
            if specs.iter().any(|o| o.url == s.url) {
                return Err(format!("endpoint `{}` is given twice", s.url));
            }
            specs.push(s);
        }
        if specs.is_empty() {
            return Err("no endpoint given".into());
        }
        Ok(specs)
    }
}

/// When an endpoint that keeps failing is set aside, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SetAside {
    /// Failures in a row that set an endpoint aside.
    pub after: u32,
    /// The first backoff; doubled each time it is set aside again without an answer.
    pub base: Duration,
    pub cap: Duration,
}

impl Default for SetAside {
    fn default() -> Self {
        SetAside {
            after: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        }
    }
}

/// What one endpoint did in this run (the accounting's `endpoints`).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub url: String,
    pub concurrency: usize,
    /// HTTP requests sent to it (retries included).
    pub calls: u64,
    /// Requests it answered with a chat completion.
    pub answers: u64,
    /// Requests that got no answer: by kind (`connect`, `timeout`, `429`, `503`, `body`,
    /// `rejected`, `fatal`, ...).
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Times it was set aside.
    pub set_aside: u64,
    /// Latency of its answers.
    pub latency_ms: Latency,
}

#[derive(Debug, Default)]
struct Health {
    in_flight: usize,
    /// Retryable failures since its last answer.
    failures_in_a_row: u32,
    /// Times set aside since its last answer (the backoff's exponent).
    asides_in_a_row: u32,
    aside_until: Option<Instant>,
    /// Retry-After.
    paused_until: Option<Instant>,
    calls: u64,
    answers: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    set_aside: u64,
    latencies_ms: Vec<f64>,
}

impl Health {
    fn healthy(&self, now: Instant) -> bool {
        self.aside_until.is_none_or(|t| t <= now) && self.paused_until.is_none_or(|t| t <= now)
    }

    fn error(&mut self, kind: &str) {
        self.calls += 1;
        self.errors += 1;
        *self.error_kinds.entry(kind.to_string()).or_default() += 1;
    }
}

/// The endpoints of one run and their state. Shared by every request (behind the client).
#[derive(Debug)]
pub struct Endpoints {
    specs: Vec<EndpointSpec>,
    policy: SetAside,
    health: Mutex<Vec<Health>>,
    /// Signalled when a request ends (a slot frees up).
    freed: Notify,
}

/// One request's place on an endpoint; ending it (drop) frees the slot.
#[derive(Debug)]
pub struct Permit<'a> {
    pool: &'a Endpoints,
    index: usize,
}

impl Permit<'_> {
    /// Which endpoint (index into [`Endpoints::specs`]).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.pool.with(self.index, |h| h.in_flight -= 1);
        self.pool.freed.notify_waiters();
    }
}

impl Endpoints {
    /// `specs` must not be empty ([`EndpointSpec::parse_all`] makes sure).
    pub fn new(specs: Vec<EndpointSpec>, policy: SetAside) -> Self {
        let health = specs.iter().map(|_| Health::default()).collect();
        Endpoints {
            specs,
            policy,
            health: Mutex::new(health),
            freed: Notify::new(),
        }
    }

    pub fn specs(&self) -> &[EndpointSpec] {
        &self.specs
    }

    /// Requests in flight on all endpoints together at most.
    pub fn total_concurrency(&self) -> usize {
        self.specs.iter().map(|s| s.concurrency).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Health>> {
        // A panic while holding the lock leaves only counters behind: keep going.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, i: usize, f: impl FnOnce(&mut Health) -> T) -> T {
        f(&mut self.lock()[i])
    }

    /// Waits for a free slot on the best endpoint (module doc) and takes it. `avoid`
    /// (the endpoint a retry just failed on) is passed over while another endpoint is
    /// healthy.
    pub async fn acquire(&self, avoid: Option<usize>) -> Permit<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let wake_at = match self.try_acquire(avoid, Instant::now()) {
                Ok(index) => return Permit { pool: self, index },
                Err(wake_at) => wake_at,
            };
            match wake_at {
                Some(t) => {
                    tokio::select! {
                        _ = freed => {}
                        _ = tokio::time::sleep_until(t.into()) => {}
                    }
                }
                None => freed.await,
            }
        }
    }

    /// Takes a slot now, or says when to look again (`None`: when a request ends).
    fn try_acquire(&self, avoid: Option<usize>, now: Instant) -> Result<usize, Option<Instant>> {
        let mut health = self.lock();
        let avoid = avoid.filter(|&a| {
            health
                .iter()
                .enumerate()
                .any(|(j, h)| j != a && h.healthy(now))
        });
        let best = health
            .iter()
            .enumerate()
            .filter(|&(i, h)| {
                Some(i) != avoid && h.healthy(now) && h.in_flight < self.specs[i].concurrency
            })
            .min_by_key(|&(i, h)| (h.in_flight, h.calls, i))
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                health[i].in_flight += 1;
                Ok(i)
            }
            None => Err(health
                .iter()
                .flat_map(|h| [h.aside_until, h.paused_until])
                .flatten()
                .filter(|&t| t > now)
                .min()),
        }
    }

    /// Whether an endpoint other than `i` could take a request now (not set aside, not
    /// paused; it may be busy).
    pub fn others_healthy(&self, i: usize) -> bool {
        let now = Instant::now();
        self.lock()
            .iter()
            .enumerate()
            .any(|(j, h)| j != i && h.healthy(now))
    }

    /// Endpoint `i` answered after `latency`.
    pub fn answered(&self, i: usize, latency: Duration) {
        self.with(i, |h| {
            h.calls += 1;
            h.answers += 1;
            h.failures_in_a_row = 0;
            h.asides_in_a_row = 0;
            h.latencies_ms.push(latency.as_secs_f64() * 1e3);
        });
    }

    /// Endpoint `i` refused this one request for a reason of the request's own (an image
    /// it cannot take, a fatal answer): counted, but says nothing of its health.
    pub fn refused(&self, i: usize, kind: &str) {
        self.with(i, |h| h.error(kind));
    }

    /// A retryable failure on endpoint `i` (`kind` as in the retry counts): counted;
    /// `retry_after` pauses this endpoint; [`SetAside::after`] of them in a row set it
    /// aside when there are other endpoints.
    pub fn failed(&self, i: usize, kind: &str, retry_after: Option<Duration>) {
        self.failed_at(i, kind, retry_after, Instant::now());
    }

    fn failed_at(&self, i: usize, kind: &str, retry_after: Option<Duration>, now: Instant) {
        let several = self.specs.len() > 1;
        let aside = self.with(i, |h| {
            h.error(kind);
            h.failures_in_a_row += 1;
            if let Some(ra) = retry_after {
                let until = now + ra.min(super::client::MAX_RETRY_AFTER);
                h.paused_until = Some(h.paused_until.map_or(until, |p| p.max(until)));
            }
            let already_aside = h.aside_until.is_some_and(|t| t > now);
            if !several || already_aside || h.failures_in_a_row < self.policy.after {
                return None;
            }
            let backoff = self
                .policy
                .base
                .saturating_mul(1u32 << h.asides_in_a_row.min(16))
                .min(self.policy.cap);
            h.asides_in_a_row += 1;
            h.set_aside += 1;
            h.aside_until = Some(now + backoff);
            Some((backoff, h.failures_in_a_row))
        });
        if let Some((backoff, failures)) = aside {
            tracing::warn!(
                endpoint = %self.specs[i].url,
                failures_in_a_row = failures,
                backoff_s = backoff.as_secs_f64(),
                "endpoint set aside; its requests go to the other endpoints"
            );
        }
    }

    /// Whether every endpoint's latest outcome was a failure (none answered since).
    pub fn all_failing(&self) -> bool {
        self.lock().iter().all(|h| h.failures_in_a_row > 0)
    }

    /// What each endpoint did so far.
    pub fn report(&self) -> Vec<EndpointReport> {
        self.lock()
            .iter()
            .zip(&self.specs)
            .map(|(h, s)| EndpointReport {
                url: s.url.clone(),
                concurrency: s.concurrency,
                calls: h.calls,
                answers: h.answers,
                errors: h.errors,
                error_kinds: h.error_kinds.clone(),
                set_aside: h.set_aside,
                latency_ms: Latency::of(&h.latencies_ms),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(limits: &[usize]) -> Endpoints {
        let specs = limits
            .iter()
            .enumerate()
            .map(|(i, &c)| EndpointSpec {
                url: format!("http://e{i}/v1"),
                concurrency: c,
            })
            .collect();
        Endpoints::new(
            specs,
            SetAside {
                after: 2,
                base: Duration::from_millis(200),
                cap: Duration::from_millis(700),
            },
        )
    }

    #[test]
    fn specs_parse_with_and_without_their_own_concurrency() {
        assert_eq!(
            EndpointSpec::parse("http://a:8000/v1/", 8).unwrap(),
            EndpointSpec {
                url: "http://a:8000/v1".into(),
                concurrency: 8
            }
        );
        assert_eq!(
            EndpointSpec::parse("http://b/v1,concurrency=3", 8)
                .unwrap()
                .concurrency,
            3
        );
        for (bad, needle) in [
            ("http://b/v1,concurrency=0", "at least 1"),
            ("http://b/v1,concurrency=x", "not a whole number"),
            ("http://b/v1,threads=2", "URL,concurrency=N"),
            (",concurrency=2", "has no URL"),
        ] {
            let e = EndpointSpec::parse(bad, 8).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let e = EndpointSpec::parse_all(
            &["http://a/v1".into(), "http://a/v1/,concurrency=2".into()],
            4,
        )
        .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn the_endpoint_with_the_fewest_in_flight_gets_the_request_within_its_limit() {
        let p = pool(&[2, 1, 2]);
        let now = Instant::now();
        // Ties go by calls so far, then by order: 0, 1, 2; then the least busy.
        let order: Vec<usize> = (0..5).map(|_| p.try_acquire(None, now).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 2]);
        assert_eq!(p.try_acquire(None, now), Err(None), "all at their limits");
        p.with(1, |h| h.in_flight -= 1);
        assert_eq!(p.try_acquire(None, now), Ok(1));
        // `avoid` passes an endpoint over while another one is healthy.
        let q = pool(&[4, 4]);
        assert_eq!(q.try_acquire(Some(0), now), Ok(1));
        assert_eq!(q.try_acquire(Some(0), now), Ok(1));
    }

    #[test]
    fn failures_in_a_row_set_an_endpoint_aside_with_a_doubling_backoff() {
        let p = pool(&[4, 4]);
        p.failed(0, "connect", None);
        assert!(
            p.try_acquire(Some(1), Instant::now()).is_ok_and(|i| i == 0),
            "one failure: still in use"
        );
        p.with(0, |h| h.in_flight = 0);
        p.failed(0, "connect", None);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                p.try_acquire(None, t0),
                Ok(1),
                "set aside: requests go to the other"
            );
        }
        let until = p.with(0, |h| h.aside_until.unwrap());
        assert!(until - t0 <= Duration::from_millis(200));
        // Back after the backoff; one more failure: aside again, twice as long.
        assert_eq!(p.try_acquire(None, until), Ok(0));
        p.failed_at(0, "connect", None, until);
        let until2 = p.with(0, |h| h.aside_until.unwrap());
        assert!(
            until2 - until >= Duration::from_millis(390),
            "{:?}",
            until2 - until
        );
        // An answer clears the record.
        p.answered(0, Duration::from_millis(5));
        p.failed(0, "503", None);
        assert_eq!(
            p.with(0, |h| (h.failures_in_a_row, h.asides_in_a_row)),
            (1, 0)
        );
        let r = &p.report()[0];
        assert_eq!((r.calls, r.answers, r.errors, r.set_aside), (5, 1, 4, 2));
        assert_eq!(r.error_kinds["connect"], 3);
    }

    #[test]
    fn a_lone_endpoint_is_never_set_aside_and_retry_after_pauses_only_its_sender() {
        let p = pool(&[2]);
        for _ in 0..5 {
            p.failed(0, "connect", None);
        }
        assert_eq!(p.try_acquire(None, Instant::now()), Ok(0));
        let q = pool(&[2, 2]);
        q.failed(0, "429", Some(Duration::from_secs(2)));
        let now = Instant::now();
        assert_eq!(q.try_acquire(None, now), Ok(1));
        assert_eq!(q.try_acquire(None, now), Ok(1));
        // Both unavailable: look again when the pause ends.
        let wake = q.try_acquire(None, now).unwrap_err().unwrap();
        assert!(wake > now + Duration::from_millis(1900));
    }

    #[tokio::test]
    async fn a_waiting_request_takes_the_slot_a_finished_one_frees() {
        let p = std::sync::Arc::new(pool(&[1]));
        let first = p.acquire(None).await;
        let p2 = std::sync::Arc::clone(&p);
        let waiter = tokio::spawn(async move { p2.acquire(None).await.index() });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "the only slot is taken");
        drop(first);
        let i = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the slot was freed")
            .unwrap();
        assert_eq!(i, 0);
    }
}
