//! Asking many questions with bounded concurrency and appending each answer to the log.
//!
//! At most `concurrency` requests are in flight. Answers are written as they arrive:
//! everything finished together is appended in one write and made durable with one fsync
//! before the progress bar counts it. A fatal error stops new requests, keeps every answer
//! already received, and ends the run with that error. Many failures in a row (the endpoint
//! is down, say) also end the run rather than burning through every image.
//!
//! Each image is decoded with the project's one image decoder (`RgbImage::decode`, the
//! one refine, train and the edge decode with, within its size limits) before it is sent:
//! a file that does not decode (truncated, corrupt, too large, a format the project cannot
//! read) is never sent; it is skipped and counted, not failed (asking again cannot help).

use super::answer::{self, Interpretation, Status};
use super::cache::{now_rfc3339, Log, Params, Record, Round, RECORD_VERSION};
use super::client::{AskError, Client};
use super::images::{self, ImageFile};
use super::prompt::Rendered;
use anyhow::{anyhow, bail, Result};
use indicatif::ProgressBar;
use serde::Serialize;
use std::sync::Arc;
use tokio::task::JoinSet;

/// One question: one image, one prompt, one sample.
#[derive(Debug, Clone)]
pub struct Question {
    pub round: Round,
    /// The cache key digest.
    pub key: String,
    pub image: ImageFile,
    pub image_sha256: String,
    pub prompt: Arc<Rendered>,
    pub sample: u32,
}

/// An image that got no answer in this run (asked again on the next one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub path: String,
    pub reason: String,
}

/// What asking a batch of questions produced.
#[derive(Debug, Default)]
pub struct Asked {
    /// Records appended to the log in this run.
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
    /// Images not sent because they do not decode (with why), by cache key.
    pub undecodable: Vec<(String, Failure)>,
}

/// Asks questions through one client (over one or more endpoints) and appends the answers
/// to one log.
pub struct Labeler {
    pub client: Arc<Client>,
    pub params: Params,
    /// Questions in flight at once (all endpoints together; the client keeps each
    /// endpoint within its own limit).
    pub concurrency: usize,
    /// Failures in a row (no answer in between) after which the run stops.
    pub max_consecutive_failures: usize,
}

enum Done {
    Answer(Box<Record>),
    Failed(Failure),
    /// Not sent: the image does not decode. (cache key, why)
    Undecodable(String, Failure),
    Fatal(super::client::FatalError),
}

impl Labeler {
    /// Asks every question and appends each answer to `log` as it arrives; `progress` is
    /// advanced per finished question. Fails on a fatal client error, on too many failures
    /// in a row, and when the log cannot be written; the answers received before that are
    /// in the log either way.
    pub async fn ask_all(
        &self,
        questions: Vec<Question>,
        log: &mut Log,
        progress: &ProgressBar,
    ) -> Result<Asked> {
        let mut out = Asked::default();
        let mut queue = questions.into_iter();
        let mut set: JoinSet<Done> = JoinSet::new();
        let mut in_a_row = 0usize;
        loop {
            while set.len() < self.concurrency.max(1) {
                let Some(q) = queue.next() else { break };
                let client = Arc::clone(&self.client);
                let params = self.params.clone();
                set.spawn(async move { ask_one(&client, &params, q).await });
            }
            let Some(first) = set.join_next().await else {
                break;
            };
            let mut finished = vec![first];
            while let Some(more) = set.try_join_next() {
                finished.push(more);
            }
            let n_finished = finished.len() as u64;
            let mut batch = Vec::with_capacity(finished.len());
            let mut fatal = None;
            for f in finished {
                match f.map_err(|e| anyhow!("a labelling task ended abnormally: {e}"))? {
                    Done::Answer(r) => {
                        in_a_row = 0;
                        batch.push(*r);
                    }
                    Done::Failed(fail) => {
                        in_a_row += 1;
                        tracing::warn!(path = %fail.path, reason = %fail.reason, "no answer for this image in this run");
                        out.failures.push(fail);
                    }
                    Done::Undecodable(key, why) => {
                        tracing::warn!(path = %why.path, reason = %why.reason, "not sent: the image does not decode");
                        out.undecodable.push((key, why));
                    }
                    Done::Fatal(e) => fatal = Some(e),
                }
            }
            tokio::task::block_in_place(|| log.append(batch.clone()))?;
            out.records.extend(batch);
            progress.inc(n_finished);
            if let Some(e) = fatal {
                set.abort_all();
                return Err(e.into());
            }
            if in_a_row >= self.max_consecutive_failures.max(1) {
                set.abort_all();
                let last = out.failures.last().map(|f| f.reason.as_str()).unwrap_or("");
                bail!("stopped after {in_a_row} images in a row got no answer; the last error: {last}");
            }
        }
        Ok(out)
    }
}

/// Reads the image, asks, and turns the outcome into a record or a failure.
async fn ask_one(client: &Client, params: &Params, q: Question) -> Done {
    let fail = |reason: String| {
        Done::Failed(Failure {
            path: q.image.rel.clone(),
            reason,
        })
    };
    let bytes = match tokio::fs::read(&q.image.abs).await {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read `{}`: {e}", q.image.abs.display())),
    };
    let name = q.image.rel.clone();
    let (bytes, decoded) = tokio::task::spawn_blocking(move || {
        let decoded = images::check_decodable(&bytes, &name);
        (bytes, decoded)
    })
    .await
    .unwrap_or_else(|e| {
        (
            Vec::new(),
            Err(format!("the decoding task ended abnormally: {e}")),
        )
    });
    if let Err(reason) = decoded {
        return Done::Undecodable(
            q.key.clone(),
            Failure {
                path: q.image.rel.clone(),
                reason,
            },
        );
    }
    let url = match images::data_url(&bytes) {
        Ok(u) => u,
        Err(e) => return fail(format!("cannot send `{}`: {e:#}", q.image.abs.display())),
    };
    drop(bytes);
    let body = client.request_body(&q.prompt.text, &url, params, q.sample);
    drop(url);
    // `endpoint`: the one that answered (the log records it; it is not in the cache key).
    let base = |status: Status, raw: String, endpoint: usize| Record {
        v: RECORD_VERSION,
        round: q.round,
        key: q.key.clone(),
        path: q.image.rel.clone(),
        image_sha256: q.image_sha256.clone(),
        sample: q.sample,
        endpoint: client.endpoint_url(endpoint).to_string(),
        model: client.model().to_string(),
        prompt_sha256: q.prompt.sha256.clone(),
        params: params.clone(),
        status,
        name: None,
        context: None,
        problem: None,
        raw,
        reasoning: None,
        finish_reason: None,
        served_model: None,
        latency_ms: 0.0,
        attempts: 0,
        usage: None,
        time: now_rfc3339(),
    };
    match client.ask(&body).await {
        Ok(a) => {
            let Interpretation {
                status,
                name,
                context,
                problem,
            } = match q.round {
                Round::Name => answer::interpret_name(&a.reply),
                Round::Category => answer::interpret_context(&a.reply),
            };
            let mut r = base(status, a.reply.content.clone(), a.endpoint);
            r.name = name;
            r.context = context;
            r.problem = problem;
            r.reasoning = a.reply.reasoning;
            r.finish_reason = a.reply.finish_reason;
            r.served_model = a.reply.model.filter(|m| m != client.model());
            r.latency_ms = a.latency.as_secs_f64() * 1e3;
            r.attempts = a.attempts;
            r.usage = a.reply.usage;
            Done::Answer(Box::new(r))
        }
        Err(AskError::Garbled {
            body,
            reason,
            attempts,
            latency,
            endpoint,
        }) => {
            let mut r = base(Status::Malformed, body, endpoint);
            r.problem = Some(reason);
            r.attempts = attempts;
            r.latency_ms = latency.as_secs_f64() * 1e3;
            Done::Answer(Box::new(r))
        }
        Err(AskError::Failed { reason, .. }) => fail(reason),
        Err(AskError::Fatal(e)) => Done::Fatal(e),
    }
}
