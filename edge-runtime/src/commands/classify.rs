//! `linesight-edge classify`: run a bundle over image files and folders, one result line
//! per image. A failing image is reported in its own line and counted; the run goes on.

use crate::decide::{self, REJECT};
use crate::engine::Engine;
use crate::trust::{SignatureReport, TrustSources};
use anyhow::{Context, Result};
use linesight_shared::bundle::Bundle;
use linesight_shared::decode::IMAGE_EXTENSIONS;
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use linesight_shared::walk::{self, WalkOptions};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

pub struct ClassifySettings {
    pub bundle: PathBuf,
    pub paths: Vec<PathBuf>,
    pub json: bool,
    pub top_k: usize,
    /// Add the raw logits to each result.
    pub logits: bool,
    /// Tract threads (1: this thread only).
    pub threads: usize,
    /// Where the trusted keys come from (the bundle's signature is checked and shown).
    pub trust: TrustSources,
}

#[derive(Debug, Serialize)]
pub struct TopK {
    pub label: String,
    pub score: f32,
}

/// One line of output.
#[derive(Debug, Serialize)]
pub struct ImageResult {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topk: Vec<TopK>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The model's raw outputs, in label order (`--logits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClassifyReport {
    pub images: usize,
    pub failed: usize,
    pub rejected: usize,
    /// Entries of the folders passed over (not regular files, second paths to a file
    /// already classified, symbolic-link loops), each said on stderr.
    pub skipped: usize,
    /// What was skipped, e.g. "1 not a regular file, 2 duplicates" (empty: nothing).
    pub skipped_summary: String,
    pub model_id: String,
    /// The bundle's signature against the trusted keys (classify runs it whatever it is;
    /// the binary warns on stderr when it is not valid).
    pub signature_check: SignatureReport,
}

/// Classifies every image; writes one line per image to `out`. Fails when the bundle
/// cannot be used or a line cannot be written (a closed pipe included: the caller ends
/// quietly on that, see `linesight_shared::closed_pipe`).
pub fn run(s: &ClassifySettings, out: &mut dyn Write) -> Result<ClassifyReport> {
    let bundle = Bundle::read(&s.bundle)
        .with_context(|| format!("cannot use bundle `{}`", s.bundle.display()))?;
    let signature_check = s.trust.check(&bundle);
    let mut engine = Engine::from_bundle(&bundle)
        .with_context(|| format!("cannot load the model in `{}`", s.bundle.display()))?;
    engine.set_threads(s.threads)?;
    let m = &bundle.manifest;
    tracing::info!(model = %m.model_id, version = %m.model_version, precision = %m.precision, classes = m.labels.len(), "bundle loaded");
    let mut pre = Preprocessor::new(m.preprocess);
    let mut input = vec![0.0; engine.input_len()];
    let mut scores = vec![0.0; engine.output_len()];
    let mut report = ClassifyReport {
        images: 0,
        failed: 0,
        rejected: 0,
        skipped: 0,
        skipped_summary: String::new(),
        model_id: m.model_id.clone(),
        signature_check,
    };
    let found = walk::walk(&s.paths, &WalkOptions::images(&IMAGE_EXTENSIONS))
        .expect("a walk without a cancel hook is never cancelled");
    for skipped in &found.skipped {
        tracing::warn!("{skipped}");
    }
    report.skipped = found.skipped.len();
    report.skipped_summary = found.skipped_summary();
    for err in &found.errors {
        report.failed += 1;
        emit(
            out,
            s.json,
            &ImageResult::failed(err.path(), err.to_string()),
        )?;
    }
    for path in found.files {
        report.images += 1;
        let t0 = Instant::now();
        let result = RgbImage::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|img| {
                pre.run(&img.pixels, img.width, img.height, &mut input)
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| engine.infer(&input, &mut scores).map_err(|e| e.to_string()));
        let line = match result {
            Err(e) => {
                report.failed += 1;
                tracing::debug!(path = %path.display(), error = %e, "image skipped (reported on its line)");
                ImageResult::failed(&path, e)
            }
            Ok(()) => {
                let logits = s.logits.then(|| scores.clone());
                decide::softmax(&mut scores);
                let d = decide::decide(&scores, &m.decision, s.top_k);
                if d.class.is_none() {
                    report.rejected += 1;
                }
                ImageResult {
                    path: path.display().to_string(),
                    label: Some(
                        d.class
                            .map(|c| m.labels[c].clone())
                            .unwrap_or_else(|| REJECT.to_string()),
                    ),
                    score: Some(d.score),
                    margin: Some(d.margin),
                    topk: d
                        .topk
                        .iter()
                        .map(|&(c, score)| TopK {
                            label: m.labels[c].clone(),
                            score,
                        })
                        .collect(),
                    latency_ms: Some(t0.elapsed().as_secs_f64() * 1e3),
                    logits,
                    error: None,
                }
            }
        };
        emit(out, s.json, &line)?;
    }
    Ok(report)
}

impl ImageResult {
    fn failed(path: &std::path::Path, error: String) -> Self {
        ImageResult {
            path: path.display().to_string(),
            label: None,
            score: None,
            margin: None,
            topk: vec![],
            latency_ms: None,
            logits: None,
            error: Some(error),
        }
    }
}

/// One line, written with IO errors kept as `std::io::Error` (so a closed pipe is
/// recognised; serde_json would wrap it).
fn emit(out: &mut dyn Write, json: bool, r: &ImageResult) -> Result<()> {
    if json {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        out.write_all(&line)?;
    } else if let Some(e) = &r.error {
        writeln!(out, "{}\tERROR\t{}", field(&r.path), field(e))?;
    } else {
        writeln!(
            out,
            "{}\t{}\t{:.3}\t{:.1} ms",
            field(&r.path),
            field(r.label.as_deref().unwrap_or(REJECT)),
            r.score.unwrap_or(0.0),
            r.latency_ms.unwrap_or(0.0)
        )?;
    }
    Ok(())
}

/// A text-line field with its control characters escaped (`\n`, `\t`, `\u{1b}`), so a
/// file named with a newline or a tab stays one line of four tab-separated fields (it
/// once split into two lines, the first a bogus path; second adversarial pass, issue 16).
/// `--json` carries names unescaped.
fn field(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}
