//! `linesight-train validate`: one offline report that says whether a bundle may go to the
//! line (go / no-go against `--require`), and with which thresholds.
//!
//! Writes `OUT/report.html` (self-contained), `OUT/report.json` (the same figures),
//! `OUT/thresholds.toml` (the recommended thresholds, for `linesight-train thresholds`)
//! and, with `--refined`, `OUT/to-verify.csv`. The figures are computed in
//! [`crate::validate`]; this file runs the bundles and puts the report together.

use crate::backbone::{self, BackboneKind};
use crate::dataset::{self, Entry};
use crate::embed::{file_sha256, EmbeddingCache};
use crate::knn::normalize_rows;
use crate::metrics::{canonical, cluster_accuracy, pair_cosines};
use crate::near::refined::Refined;
use crate::sentence::SentenceEncoder;
use crate::validate::calibration::{coverage_curve, reliability, Scored};
use crate::validate::classes::{confused_pairs, confusion, per_class, ClassRow};
use crate::validate::compare::{self, ClassAgreement};
use crate::validate::drift;
use crate::validate::interval::{bootstrap, wilson, Estimate};
use crate::validate::labels;
use crate::validate::report::*;
use crate::validate::rules::{self, Figure};
use crate::validate::score::{self, LoadedBundle, Row};
use crate::validate::thresholds::{self, Candidate, Predicted};
use crate::validate::thumbs::Thumbs;
use crate::validate::{host, html};
use anyhow::{bail, ensure, Context, Result};
use linesight_shared::manifest::{DecisionRule, Precision};
use linesight_shared::preprocess::RgbImage;
use linesight_shared::signature::PublicKey;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Scored images embedded as the drift reference, at most (evenly spaced).
pub const REFERENCE_IMAGES: usize = 300;

/// Exit code of a no-go verdict (0 is go, 2 a failure to make the report).
pub const NO_GO_EXIT: u8 = 3;

/// A no-go verdict: `run` succeeded, the bundle must not ship. Returned by the binary as
/// its error so that it exits with [`NO_GO_EXIT`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoGo(pub String);

pub struct ValidateSettings {
    pub bundle: PathBuf,
    pub manifest: PathBuf,
    pub split: String,
    /// The deployed bundle to compare with.
    pub baseline: Option<PathBuf>,
    /// The f32 twin of an int8 bundle; None: `NAME.f32.lsb` beside an int8 `NAME.lsb`, or
    /// the baseline when it is one, or the manifest's export-time parity figures.
    pub twin: Option<PathBuf>,
    pub refined: Option<PathBuf>,
    /// The checkpoint's `targets.jsonl` (final training targets), with `refined`.
    pub targets: Option<PathBuf>,
    /// A folder written by `linesight-edge export-uncertain`.
    pub uncertain: Option<PathBuf>,
    pub target_precision: f64,
    /// `--require` rules (see [`crate::validate::rules`]).
    pub require: String,
    pub out: PathBuf,
    /// all-MiniLM-L6-v2 folder for sACC (skipped, and said so, when missing).
    pub sentence_model: Option<PathBuf>,
    /// Backbone weights for the drift embeddings; None: the bundle's backbone's default
    /// file under `weights_dir`.
    pub weights: Option<PathBuf>,
    pub weights_dir: PathBuf,
    /// Embedding cache for the drift section.
    pub cache: PathBuf,
    pub trusted_keys: Vec<PathBuf>,
    /// Measured images of the host benchmark; 0 skips it.
    pub bench_iterations: usize,
    pub threads: usize,
    pub resamples: usize,
    pub seed: u64,
}

/// What `validate` prints (the files hold everything).
#[derive(Debug, Serialize)]
pub struct ValidateSummary {
    pub go: bool,
    pub verdict: String,
    pub report_html: String,
    pub html_bytes: u64,
    pub report_json: String,
    pub thresholds_toml: String,
    pub to_verify_csv: Option<String>,
    pub generation_seconds: f64,
    pub images: usize,
    pub unreadable: usize,
    pub top1: f64,
    pub cacc: f64,
    pub sacc: Option<f64>,
    pub target_precision: f64,
    /// The recommended per-class thresholds on the scored images.
    pub per_class_coverage: f64,
    pub per_class_precision: Option<f64>,
    pub global_threshold: f32,
    pub global_coverage: f64,
    pub global_precision: Option<f64>,
    /// The per-class recommendation's two-fold check (chosen on half, scored on the other).
    pub held_out_coverage: f64,
    pub held_out_precision: Option<f64>,
}

/// One manifest row that was scored.
struct Image {
    path: PathBuf,
    truth: String,
    /// Index into the true classes.
    t: usize,
    probs: Vec<f32>,
    top1: usize,
    score: f32,
    margin: f32,
    correct: bool,
    base: Option<Vec<f32>>,
    twin: Option<Vec<f32>>,
}

fn info(b: &LoadedBundle) -> BundleInfo {
    let m = &b.manifest;
    BundleInfo {
        path: b.path.display().to_string(),
        file_bytes: b.file_bytes,
        onnx_bytes: b.onnx_bytes,
        format_version: b.format_version,
        model_id: m.model_id.clone(),
        model_version: m.model_version.clone(),
        precision: m.precision.to_string(),
        labels: m.labels.len(),
        backbone: m.provenance.backbone.clone(),
        method: m.provenance.method.clone(),
        model_sha256: hex::encode(m.model_sha256),
        created_unix: m.provenance.created_unix,
        signature: b.signature.clone(),
        self_test: match &b.self_test {
            Ok(d) => SelfTest {
                passed: true,
                vectors: m.self_test.len(),
                max_abs_diff: Some(*d),
                error: None,
            },
            Err(e) => SelfTest {
                passed: false,
                vectors: m.self_test.len(),
                max_abs_diff: None,
                error: Some(e.clone()),
            },
        },
        decision: m.decision.clone(),
        parity: m.parity.clone(),
        load_seconds: b.load_seconds,
    }
}

/// What `rule` does on the scored images (the edge's own decision function).
fn outcome(images: &[Image], rule: &DecisionRule) -> RuleOutcome {
    let (mut accepted, mut correct) = (0, 0);
    for im in images {
        if score::decision(&im.probs, rule).class.is_some() {
            accepted += 1;
            correct += usize::from(im.correct);
        }
    }
    RuleOutcome {
        rule: rule.clone(),
        accepted,
        correct,
        total: images.len(),
        coverage: accepted as f64 / images.len().max(1) as f64,
        precision: wilson(correct, accepted),
    }
}

/// An int8 bundle's f32 twin where `--int8` writes it (`NAME.f32.lsb`), if it is there.
fn twin_beside(bundle: &Path) -> Option<PathBuf> {
    let p = crate::commands::quantize::f32_path(bundle);
    p.is_file().then_some(p)
}

/// Runs everything and writes the files. Fails (exit 2) when an input cannot be used: a
/// bundle that does not load, a manifest without the split, bad `--require` rules; a
/// missing or corrupt image is reported in the report instead.
pub fn run(s: &ValidateSettings) -> Result<ValidateSummary> {
    let started = Instant::now();
    let rules = rules::parse(&s.require)?;
    ensure!(
        s.target_precision > 0.0 && s.target_precision <= 1.0,
        "--target-precision must be in (0, 1], got {}",
        s.target_precision
    );
    fs_err::create_dir_all(&s.out).context("cannot create the output folder")?;
    let trusted = s
        .trusted_keys
        .iter()
        .map(|p| PublicKey::read(p))
        .collect::<Result<Vec<_>, _>>()?;

    let mut new = LoadedBundle::load(&s.bundle, "bundle", &trusted)?;
    let host = (s.bench_iterations > 0).then(|| {
        tracing::info!(
            iterations = s.bench_iterations,
            "measuring load time and latency on this host"
        );
        host::measure(&s.bundle, s.threads, s.bench_iterations)
    });
    let mut base = match &s.baseline {
        Some(p) => Some(LoadedBundle::load(p, "baseline bundle", &trusted)?),
        None => None,
    };
    let int8 = new.manifest.precision == Precision::Int8;
    let twin_path = s
        .twin
        .clone()
        .or_else(|| if int8 { twin_beside(&s.bundle) } else { None });
    let baseline_is_twin = twin_path.is_none()
        && int8
        && base.as_ref().is_some_and(|b| {
            b.manifest.precision == Precision::F32
                && b.manifest.labels == new.manifest.labels
                && b.manifest.model_id == new.manifest.model_id
        });
    let mut twin = match &twin_path {
        Some(p) => {
            let t = LoadedBundle::load(p, "f32 twin bundle", &trusted)?;
            ensure!(
                t.manifest.labels == new.manifest.labels,
                "`{}` is not the twin of `{}`: their labels differ",
                p.display(),
                s.bundle.display()
            );
            Some(t)
        }
        None => None,
    };

    let entries = dataset::read_split(&s.manifest, &s.split)?;
    let rows = {
        let mut runners: Vec<&mut LoadedBundle> = vec![&mut new];
        runners.extend(base.as_mut());
        runners.extend(twin.as_mut());
        score::score_entries(&entries, &mut runners, "validate")
    };
    let true_names = dataset::label_set(&entries);
    let n_true = true_names.len();
    let canon_true: HashMap<String, usize> = true_names
        .iter()
        .enumerate()
        .map(|(i, n)| (canonical(n), i))
        .collect();
    // classes: the true names, then the bundle's names the split does not have
    let mut classes = true_names.clone();
    let label_class: Vec<usize> = new
        .manifest
        .labels
        .iter()
        .map(|l| match canon_true.get(&canonical(l)) {
            Some(&c) => c,
            None => {
                classes.push(l.clone());
                classes.len() - 1
            }
        })
        .collect();

    let (images, unreadable) = split_rows(
        rows,
        &canon_true,
        &label_class,
        base.is_some(),
        twin.is_some(),
    );
    let n = images.len();
    if n == 0 {
        bail!(
            "no image of split `{}` in `{}` could be read ({} rows, all unreadable: see the log)",
            s.split,
            s.manifest.display(),
            unreadable.len()
        );
    }

    // headline
    let right = images.iter().filter(|i| i.correct).count();
    let top1 = wilson(right, n).expect("n > 0");
    let truth_idx: Vec<usize> = images.iter().map(|i| i.t).collect();
    let top1_idx: Vec<usize> = images.iter().map(|i| i.top1).collect();
    let cacc = bootstrap(n, s.resamples, s.seed, |idx| {
        let p: Vec<usize> = idx.iter().map(|&i| top1_idx[i]).collect();
        let t: Vec<usize> = idx.iter().map(|&i| truth_idx[i]).collect();
        cluster_accuracy(&p, &t).0
    })
    .expect("n > 0");
    let pred_names: Vec<String> = images
        .iter()
        .map(|i| new.manifest.labels[i.top1].clone())
        .collect();
    let truth_names: Vec<String> = images.iter().map(|i| i.truth.clone()).collect();
    let (sacc, sacc_note) = sentence_accuracy(s, &pred_names, &truth_names)?;
    let mut predicted = top1_idx.clone();
    predicted.sort_unstable();
    predicted.dedup();

    // per class, confusion
    let pred_class: Vec<usize> = images.iter().map(|i| label_class[i.top1]).collect();
    let scores: Vec<f32> = images.iter().map(|i| i.score).collect();
    let per_class_rows = per_class(&truth_idx, &pred_class, &classes, n_true);
    let matrix = confusion(&truth_idx, &pred_class, &classes, n_true);
    let pairs = confused_pairs(&truth_idx, &pred_class, &scores, &classes, 10, 4);

    // confidence and thresholds
    let scored: Vec<Scored> = images
        .iter()
        .map(|i| Scored {
            score: i.score,
            correct: i.correct,
        })
        .collect();
    let (bins, ece) = reliability(&scored, 10);
    let curve = coverage_curve(&scored);
    let candidates: Vec<Candidate> = images
        .iter()
        .map(|i| Candidate {
            top1: i.top1,
            score: i.score,
            margin: i.margin,
            correct: i.correct,
        })
        .collect();
    let rec = thresholds::recommend(
        &candidates,
        &new.manifest.labels,
        new.manifest.decision.min_margin,
        s.target_precision,
    );
    let global = outcome(&images, &rec.global_rule());
    let per_class_pre = outcome(&images, &rec.per_class_rule());
    let thresholds_path = s.out.join("thresholds.toml");
    let predicted_fig = |o: &RuleOutcome| Predicted {
        coverage: o.coverage,
        precision: o.precision.map_or(0.0, |e| e.value),
    };
    let source = format!(
        "{n} images of split `{}` of `{}`",
        s.split,
        s.manifest.display()
    );
    let text = thresholds::render(
        &rec,
        &(&new.manifest).into(),
        &source,
        &predicted_fig(&per_class_pre),
        &predicted_fig(&global),
    );
    fs_err::write(&thresholds_path, text)?;
    // What the file says, read back the way `linesight-train thresholds` reads it.
    let applied = thresholds::apply(
        &thresholds::read(&thresholds_path)?,
        &(&new.manifest).into(),
        &thresholds_path.display().to_string(),
    )?;
    let per_class_rule = outcome(&images, &applied);
    ensure!(
        per_class_rule.accepted == per_class_pre.accepted
            && per_class_rule.correct == per_class_pre.correct,
        "`{}` does not read back as the thresholds it was written from",
        thresholds_path.display()
    );
    let class_thresholds = rec
        .per_class
        .iter()
        .zip(&applied.per_class_min_score)
        .map(|((label, choice), &t)| ClassThreshold {
            label: label.clone(),
            threshold: t,
            own: choice.is_some(),
            choice: *choice,
        })
        .collect();
    let current_rule = outcome(&images, &new.manifest.decision);
    let (held_out_per_class, held_out_global) = thresholds::two_fold(
        &candidates,
        &new.manifest.labels,
        new.manifest.decision.min_margin,
        s.target_precision,
        |i, rule| score::decision(&images[i].probs, rule).class.is_some(),
    );

    // galleries
    let mut mistakes: Vec<usize> = (0..n).filter(|&i| !images[i].correct).collect();
    mistakes.sort_by(|&a, &b| images[b].score.total_cmp(&images[a].score).then(a.cmp(&b)));
    let mut uncertain_idx: Vec<usize> = (0..n).collect();
    uncertain_idx.sort_by(|&a, &b| {
        images[a]
            .margin
            .total_cmp(&images[b].margin)
            .then(a.cmp(&b))
    });
    uncertain_idx.truncate(50);

    // against the deployed model
    let baseline = base
        .as_ref()
        .map(|b| baseline_section(b, &new, &images, &true_names, &canon_true));
    let twin_section = if let Some(t) = twin.as_ref() {
        Some(twin_measured(
            &images,
            &new.manifest.labels,
            Some(info(t)),
            |i| i.twin.as_deref(),
        ))
    } else if baseline_is_twin {
        let b = base.as_ref().expect("baseline_is_twin needs a baseline");
        Some(twin_measured(
            &images,
            &new.manifest.labels,
            Some(info(b)),
            |i| i.base.as_deref(),
        ))
    } else if int8 {
        Some(twin_from_manifest(&new))
    } else {
        None
    };

    // training labels
    let labels_section = match &s.refined {
        Some(p) => Some(labels_section(s, p, &mut new)?),
        None => None,
    };

    // the line
    let line = match &s.uncertain {
        Some(dir) => Some(line_section(s, dir, &mut new, &applied, &images)?),
        None => None,
    };

    let (host, host_error) = match host {
        None => (None, None),
        Some(Ok(h)) => (Some(h), None),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the host benchmark failed");
            (None, Some(e))
        }
    };

    // the verdict
    let min_of = |rows: &[ClassRow], f: &dyn Fn(&ClassRow) -> Option<f64>| -> Figure {
        rows.iter()
            .filter_map(f)
            .min_by(f64::total_cmp)
            .ok_or_else(|| "no class to measure".to_string())
    };
    let figure = |metric: &str| -> Figure {
        match metric {
            "top1" => Ok(top1.value),
            "top1_low" => Ok(top1.low),
            "cacc" => Ok(cacc.value),
            "sacc" => sacc
                .map(|e| e.value)
                .ok_or_else(|| sacc_note.clone().unwrap_or_default()),
            "min_class_recall" => min_of(&per_class_rows, &|r| r.recall.map(|e| e.value)),
            "min_class_precision" => min_of(&per_class_rows, &|r| r.precision.map(|e| e.value)),
            "min_class_f1" => min_of(&per_class_rows, &|r| (r.support > 0).then_some(r.f1)),
            "ece" => Ok(ece),
            "max_class_regression" => baseline
                .as_ref()
                .ok_or_else(|| "no --baseline".to_string())
                .and_then(|b| {
                    b.max_class_regression
                        .ok_or_else(|| "no class in common".into())
                }),
            "top1_delta" => baseline
                .as_ref()
                .map(|b| b.delta.value)
                .ok_or_else(|| "no --baseline".into()),
            "int8_agreement" => match &twin_section {
                None => Ok(1.0),
                Some(t) => t
                    .agreement
                    .map(|e| e.value)
                    .ok_or_else(|| "no parity figures".into()),
            },
            "min_class_int8_agreement" => match &twin_section {
                None => Ok(1.0),
                Some(t) => t
                    .per_class
                    .iter()
                    .filter_map(|c| c.agreement.map(|e| e.value))
                    .min_by(f64::total_cmp)
                    .ok_or_else(|| "no per-class parity figures".into()),
            },
            "coverage" => Ok(per_class_rule.coverage),
            "unreadable" => Ok(unreadable.len() as f64),
            "p95_ms" => host.as_ref().map(|h| h.p95_ms).ok_or_else(|| {
                host_error
                    .clone()
                    .unwrap_or_else(|| "not measured (--bench-iterations 0)".into())
            }),
            other => Err(format!("unknown metric `{other}`")),
        }
    };
    let mut verdict = rules::check(&rules, figure);
    if let Err(e) = &new.self_test {
        verdict.go = false;
        verdict.summary = format!(
            "no-go: the bundle fails its self-test, so `install` would refuse it ({e}); {}",
            verdict.summary
        );
    }

    let records: Vec<ImageRecord> = images
        .iter()
        .map(|i| ImageRecord {
            path: i.path.display().to_string(),
            truth: i.truth.clone(),
            predicted: new.manifest.labels[i.top1].clone(),
            score: i.score,
            margin: i.margin,
            correct: i.correct,
            accepted: score::decision(&i.probs, &applied).class.is_some(),
            baseline: base
                .as_ref()
                .zip(i.base.as_ref())
                .map(|(b, p)| b.manifest.labels[argmax(p)].clone()),
            baseline_correct: base
                .as_ref()
                .zip(i.base.as_ref())
                .map(|(b, p)| canonical(&b.manifest.labels[argmax(p)]) == canonical(&i.truth)),
            twin: twin
                .as_ref()
                .zip(i.twin.as_ref())
                .map(|(t, p)| t.manifest.labels[argmax(p)].clone()),
        })
        .collect();

    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        tool: format!("linesight-train {}", env!("CARGO_PKG_VERSION")),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        generation_seconds: 0.0,
        inputs: Inputs {
            bundle: s.bundle.display().to_string(),
            manifest: s.manifest.display().to_string(),
            split: s.split.clone(),
            baseline: s.baseline.as_ref().map(|p| p.display().to_string()),
            twin: twin_path.as_ref().map(|p| p.display().to_string()),
            refined: s.refined.as_ref().map(|p| p.display().to_string()),
            targets: s.targets.as_ref().map(|p| p.display().to_string()),
            uncertain: s.uncertain.as_ref().map(|p| p.display().to_string()),
            target_precision: s.target_precision,
            require: s.require.clone(),
            bootstrap_resamples: s.resamples,
            seed: s.seed,
        },
        verdict,
        headline: Headline {
            top1,
            top1_interval: WILSON.into(),
            cacc,
            cacc_interval: format!(
                "percentile bootstrap over images, {} resamples, seed {}",
                s.resamples, s.seed
            ),
            sacc,
            sacc_interval: format!(
                "percentile bootstrap over images, {} resamples, seed {}",
                s.resamples, s.seed
            ),
            sacc_note,
            images: n,
            unreadable: unreadable.len(),
            classes: n_true,
            names_predicted: predicted.len(),
            bundle: info(&new),
        },
        per_class: per_class_rows,
        confusion: matrix,
        confused_pairs: pairs,
        confidence: Confidence {
            bins,
            ece,
            curve,
            target_precision: s.target_precision,
            global,
            per_class_rule,
            per_class: class_thresholds,
            current_rule,
            held_out_per_class,
            held_out_global,
        },
        galleries: Galleries {
            confident_mistakes: mistakes,
            most_uncertain: uncertain_idx,
        },
        baseline,
        twin: twin_section,
        labels: labels_section,
        line,
        host,
        host_error,
        unreadable,
        images: records,
    };

    let mut thumbs = Thumbs::default();
    report.generation_seconds = started.elapsed().as_secs_f64();
    let page = html::render(&report, &mut thumbs);
    let html_path = s.out.join("report.html");
    let json_path = s.out.join("report.json");
    fs_err::write(&html_path, &page)?;
    fs_err::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    tracing::info!(
        html_bytes = page.len(),
        thumbnails_bytes = thumbs.bytes(),
        seconds = report.generation_seconds,
        "report written"
    );
    let c = &report.confidence;
    Ok(ValidateSummary {
        go: report.verdict.go,
        verdict: report.verdict.summary.clone(),
        report_html: html_path.display().to_string(),
        html_bytes: page.len() as u64,
        report_json: json_path.display().to_string(),
        thresholds_toml: thresholds_path.display().to_string(),
        to_verify_csv: report.labels.as_ref().map(|l| l.csv.clone()),
        generation_seconds: report.generation_seconds,
        images: n,
        unreadable: report.unreadable.len(),
        top1: report.headline.top1.value,
        cacc: report.headline.cacc.value,
        sacc: report.headline.sacc.map(|e| e.value),
        target_precision: s.target_precision,
        per_class_coverage: c.per_class_rule.coverage,
        per_class_precision: c.per_class_rule.precision.map(|e| e.value),
        global_threshold: c.global.rule.min_score,
        global_coverage: c.global.coverage,
        global_precision: c.global.precision.map(|e| e.value),
        held_out_coverage: c.held_out_per_class.coverage,
        held_out_precision: c.held_out_per_class.precision.map(|e| e.value),
    })
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Scored rows -> images; unreadable rows -> the report's list.
fn split_rows(
    rows: Vec<Row>,
    canon_true: &HashMap<String, usize>,
    label_class: &[usize],
    has_base: bool,
    has_twin: bool,
) -> (Vec<Image>, Vec<drift::BadEntry>) {
    let mut images = Vec::new();
    let mut unreadable = Vec::new();
    for r in rows {
        match r.scores {
            Err(error) => unreadable.push(drift::BadEntry {
                path: r.path.display().to_string(),
                error,
            }),
            Ok(mut per_bundle) => {
                let twin = if has_twin { per_bundle.pop() } else { None };
                let base = if has_base { per_bundle.pop() } else { None };
                let probs = per_bundle.swap_remove(0);
                let d = score::decision(&probs, &DecisionRule::default());
                let t = canon_true[&canonical(&r.truth)];
                images.push(Image {
                    correct: label_class[d.top1] == t,
                    top1: d.top1,
                    score: d.score,
                    margin: d.margin,
                    path: r.path,
                    truth: r.truth,
                    t,
                    probs,
                    base,
                    twin,
                });
            }
        }
    }
    (images, unreadable)
}

/// sACC with its bootstrap interval, or why it is missing.
fn sentence_accuracy(
    s: &ValidateSettings,
    predicted: &[String],
    truth: &[String],
) -> Result<(Option<Estimate>, Option<String>)> {
    let Some(dir) = s.sentence_model.as_ref().filter(|d| d.is_dir()) else {
        let why = format!(
            "sACC skipped: no sentence model at `{}` (scripts/fetch-weights.sh fetches it)",
            s.sentence_model
                .as_deref()
                .unwrap_or(Path::new("-"))
                .display()
        );
        tracing::warn!("{why}");
        return Ok((None, Some(why)));
    };
    let encoder = SentenceEncoder::load(dir, &candle_core::Device::Cpu)?;
    let cos = pair_cosines(&encoder, predicted, truth).context("computing sACC")?;
    let e = bootstrap(cos.len(), s.resamples, s.seed, |idx| {
        idx.iter().map(|&i| cos[i]).sum::<f64>() / idx.len() as f64
    });
    Ok((e, None))
}

fn baseline_section(
    b: &LoadedBundle,
    new: &LoadedBundle,
    images: &[Image],
    true_names: &[String],
    canon_true: &HashMap<String, usize>,
) -> Baseline {
    let base_right: Vec<bool> = images
        .iter()
        .map(|i| {
            let top = argmax(i.base.as_deref().unwrap_or(&[]));
            canon_true.get(&canonical(&b.manifest.labels[top])) == Some(&i.t)
        })
        .collect();
    let new_right: Vec<bool> = images.iter().map(|i| i.correct).collect();
    let truth: Vec<usize> = images.iter().map(|i| i.t).collect();
    let (per_class, delta) = compare::class_deltas(&truth, &new_right, &base_right, true_names);
    let (right_to_wrong, wrong_to_right) = compare::flips(&new_right, &base_right);
    let canon = |v: &[String]| {
        v.iter()
            .map(|l| canonical(l))
            .collect::<std::collections::HashSet<_>>()
    };
    let (bl, nl) = (canon(&b.manifest.labels), canon(&new.manifest.labels));
    let base_hits = base_right.iter().filter(|&&r| r).count();
    Baseline {
        bundle: info(b),
        top1: wilson(base_hits, images.len()).unwrap_or(Estimate::exact(0.0)),
        delta: delta.unwrap_or(Estimate::exact(0.0)),
        delta_interval: "Newcombe's paired score interval (method 10), 95 %".into(),
        max_class_regression: compare::max_regression(&per_class),
        per_class,
        right_to_wrong,
        wrong_to_right,
        labels_removed: b
            .manifest
            .labels
            .iter()
            .filter(|l| !nl.contains(&canonical(l)))
            .cloned()
            .collect(),
        labels_added: new
            .manifest
            .labels
            .iter()
            .filter(|l| !bl.contains(&canonical(l)))
            .cloned()
            .collect(),
    }
}

/// int8 against its f32 twin, measured on the scored images.
fn twin_measured(
    images: &[Image],
    labels: &[String],
    bundle: Option<BundleInfo>,
    reference: impl Fn(&Image) -> Option<&[f32]>,
) -> Twin {
    let (model, refs): (Vec<usize>, Vec<usize>) = images
        .iter()
        .filter_map(|i| reference(i).map(|r| (i.top1, argmax(r))))
        .unzip();
    let (per_class, agreement) = compare::agreement(&model, &refs, labels);
    Twin {
        source: format!(
            "measured on the {} scored images against the f32 twin `{}`",
            model.len(),
            bundle.as_ref().map_or("?", |b| b.path.as_str())
        ),
        bundle,
        agreement,
        per_class,
    }
}

/// int8 against f32 as export measured it (the manifest's parity figures).
fn twin_from_manifest(new: &LoadedBundle) -> Twin {
    let m = &new.manifest;
    let per_class: Vec<ClassAgreement> =
        m.v2.parity_per_class
            .iter()
            .zip(&m.labels)
            .filter(|(p, _)| p.reference > 0)
            .map(|(p, l)| ClassAgreement {
                name: l.clone(),
                reference: p.reference as usize,
                kept: p.kept as usize,
                agreement: wilson(p.kept as usize, p.reference as usize),
            })
            .collect();
    let images = m.parity.images as usize;
    let agreed = (m.parity.top1_agreement as f64 * images as f64).round() as usize;
    let mut per_class = per_class;
    per_class.sort_by(|a, b| {
        let v = |r: &ClassAgreement| r.agreement.map_or(1.0, |e| e.value);
        v(a).total_cmp(&v(b)).then(a.name.cmp(&b.name))
    });
    Twin {
        source: format!(
            "the bundle's manifest: export's parity check on {images} held-out images (no f32 twin given: --twin F32.lsb measures it on these images)"
        ),
        bundle: None,
        agreement: wilson(agreed, images),
        per_class,
    }
}

fn labels_section(s: &ValidateSettings, path: &Path, new: &mut LoadedBundle) -> Result<Labels> {
    let refined = Refined::read(path)?;
    let targets = match &s.targets {
        Some(t) => Some(labels::read_targets(t)?),
        None => None,
    };
    let entries: Vec<Entry> = refined
        .image_paths()
        .into_iter()
        .map(|p| Entry {
            path: p,
            label: String::new(),
            split: String::new(),
        })
        .collect();
    let rows = score::score_entries(&entries, &mut [&mut *new], "train imgs");
    let model: Vec<Option<(String, f32)>> = rows
        .iter()
        .map(|r| {
            r.scores.as_ref().ok().map(|s| {
                let top = argmax(&s[0]);
                (new.manifest.labels[top].clone(), s[0][top])
            })
        })
        .collect();
    let all = labels::disagreements(&refined, targets.as_ref(), &model);
    let csv = s.out.join("to-verify.csv");
    labels::write_csv(&all, &csv)?;
    Ok(Labels {
        refined: path.display().to_string(),
        targets: s.targets.as_ref().map(|p| p.display().to_string()),
        images: refined.images.len(),
        disagreeing: all.len(),
        rows: all.into_iter().take(60).collect(),
        csv: csv.display().to_string(),
    })
}

fn line_section(
    s: &ValidateSettings,
    dir: &Path,
    new: &mut LoadedBundle,
    rule: &DecisionRule,
    images: &[Image],
) -> Result<Line> {
    let (stored, mut bad_entries) = drift::read_folder(dir)?;
    let mut frames = Vec::new();
    for f in stored {
        let scored = RgbImage::open(&f.image)
            .map_err(|e| e.to_string())
            .and_then(|img| new.scores(&img));
        match scored {
            Err(error) => bad_entries.push(drift::BadEntry {
                path: f.image.display().to_string(),
                error,
            }),
            Ok(p) => {
                let d = score::decision(&p, rule);
                frames.push(FrameRow {
                    file: f.image.display().to_string(),
                    decision: f.decision,
                    new_label: new.manifest.labels[d.top1].clone(),
                    new_score: d.score,
                    new_accepted: d.class.is_some(),
                    distance: None,
                });
            }
        }
    }
    let mut line = Line {
        dir: dir.display().to_string(),
        frames,
        bad_entries,
        drift_note: None,
        reference_distances: Vec::new(),
        reference_p95: None,
        training_images: 0,
        beyond_reference: None,
        median_frame_distance: None,
        median_reference_distance: None,
    };
    match drift_distances(s, new, images, &line.frames) {
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no drift figures");
            line.drift_note = Some(format!("{e:#}"));
        }
        Ok((train_n, reference, per_frame)) => {
            let p95 = drift::quantile(&reference, 0.95);
            for (f, d) in line.frames.iter_mut().zip(&per_frame) {
                f.distance = *d;
            }
            let got: Vec<f32> = per_frame.iter().flatten().copied().collect();
            line.training_images = train_n;
            line.reference_p95 = Some(p95);
            line.beyond_reference = (!got.is_empty())
                .then(|| got.iter().filter(|&&d| d > p95).count() as f64 / got.len() as f64);
            line.median_frame_distance = (!got.is_empty()).then(|| drift::quantile(&got, 0.5));
            line.median_reference_distance = Some(drift::quantile(&reference, 0.5));
            line.reference_distances = reference;
        }
    }
    Ok(line)
}

/// Embeds the training images, the scored images and the frames with the bundle's
/// backbone (cached by content) and returns (training images embedded, the scored
/// images' distances to the training set, each frame's distance).
fn drift_distances(
    s: &ValidateSettings,
    new: &LoadedBundle,
    images: &[Image],
    frames: &[FrameRow],
) -> Result<(usize, Vec<f32>, Vec<Option<f32>>)> {
    let name = &new.manifest.provenance.backbone;
    let kind = <BackboneKind as clap::ValueEnum>::from_str(name, false).map_err(|_| {
        anyhow::anyhow!("the bundle's backbone `{name}` is not one this trainer can load")
    })?;
    let weights = s
        .weights
        .clone()
        .unwrap_or_else(|| kind.default_weights(&s.weights_dir));
    ensure!(
        weights.is_file(),
        "the backbone weights `{}` are missing (scripts/fetch-weights.sh, or --weights)",
        weights.display()
    );
    let train: Vec<PathBuf> = match &s.refined {
        Some(p) => Refined::read(p)?.image_paths(),
        None => dataset::read_manifest(&s.manifest)?
            .into_iter()
            .filter(|e| e.split != s.split)
            .map(|e| e.path)
            .collect(),
    };
    ensure!(
        !train.is_empty(),
        "no training images: give --refined, or a manifest with a split besides `{}`",
        s.split
    );
    let device = candle_core::Device::Cpu;
    let encoder = backbone::load(kind, &weights, &device)?;
    let sha = file_sha256(&weights)?;
    let mut cache = EmbeddingCache::open(&s.cache, kind.name(), &sha, encoder.embed_dim())?;
    let dim = encoder.embed_dim();
    let mut embed = |paths: &[PathBuf]| -> Result<Vec<Option<Vec<f32>>>> {
        let shas: Vec<String> = paths
            .iter()
            .map(|p| file_sha256(p).unwrap_or_else(|_| format!("unreadable:{}", p.display())))
            .collect();
        let got = cache.embed(encoder.as_ref(), &sha, paths, &shas, 16, &device)?;
        let mut flat = got.embeddings.flatten_all()?.to_vec1::<f32>()?;
        normalize_rows(&mut flat, dim);
        let mut out = vec![None; paths.len()];
        for (r, &i) in got.rows.iter().enumerate() {
            out[i] = Some(flat[r * dim..(r + 1) * dim].to_vec());
        }
        Ok(out)
    };
    let train_rows: Vec<f32> = embed(&train)?.into_iter().flatten().flatten().collect();
    let train_n = train_rows.len() / dim;
    ensure!(
        train_n > 0,
        "none of the {} training images could be embedded",
        train.len()
    );
    // The reference: up to REFERENCE_IMAGES of the scored images, evenly spaced (its 95th
    // percentile is what the frames are compared with; more images cost embedding time).
    let step = images.len().div_ceil(REFERENCE_IMAGES).max(1);
    let scored_paths: Vec<PathBuf> = images
        .iter()
        .step_by(step)
        .map(|i| i.path.clone())
        .collect();
    let reference_rows: Vec<f32> = embed(&scored_paths)?
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let reference = drift::nearest_distance(&reference_rows, &train_rows, dim);
    let frame_paths: Vec<PathBuf> = frames.iter().map(|f| PathBuf::from(&f.file)).collect();
    let per_frame = embed(&frame_paths)?
        .into_iter()
        .map(|e| e.map(|v| drift::nearest_distance(&v, &train_rows, dim)[0]))
        .collect();
    Ok((train_n, reference, per_frame))
}
