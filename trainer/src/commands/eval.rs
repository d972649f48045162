//! `linesight-train eval`: score a bundle on a labelled split, running it exactly as the
//! edge runs it (same preprocessing, same tract engine).

use crate::dataset;
use crate::embed::progress_bar;
use crate::metrics::{canonical, cluster_accuracy, semantic_accuracy};
use crate::sentence::SentenceEncoder;
use anyhow::{bail, Context, Result};
use linesight_edge::decide::softmax;
use linesight_edge::engine::Engine;
use linesight_shared::bundle::Bundle;
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct EvalSettings {
    pub bundle: PathBuf,
    pub manifest: PathBuf,
    pub split: String,
    /// all-MiniLM-L6-v2 folder for sACC; when it does not exist, sACC is skipped with a
    /// warning.
    pub sentence_model: Option<PathBuf>,
    /// The refined.json the model was trained from (habits and signals in the report).
    pub refined: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// Clustering accuracy (Hungarian one-to-one matching of predicted names to classes).
    pub cacc: f64,
    /// Share of images whose canonical predicted name equals the canonical true name.
    pub top1_exact: f64,
    /// Semantic accuracy: mean cosine of the sentence embeddings of predicted and true
    /// names; None when the sentence model is not available.
    pub sacc: Option<f64>,
    /// Images scored.
    pub n: usize,
    /// Distinct names predicted.
    pub classes_predicted: usize,
    /// Classes in the split.
    pub classes_true: usize,
    /// Images that could not be read (not scored).
    pub skipped: usize,
    /// Per true class: share predicted with its exact name.
    pub per_class_top1: BTreeMap<String, f64>,
    pub model_id: String,
    pub precision: String,
    /// With `refined`: the MLLM's estimated habits (true class, named as, rate), highest
    /// first, at most 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub habits: Option<Vec<(String, String, f32)>>,
    /// With `refined`: how many training targets each signal changed in refine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signals: Option<crate::near::refined::Signals>,
}

pub fn run(s: &EvalSettings) -> Result<EvalReport> {
    let refined = match &s.refined {
        Some(p) => Some(crate::near::refined::Refined::read(p)?),
        None => None,
    };
    let bundle = Bundle::read(&s.bundle)
        .with_context(|| format!("cannot use bundle `{}`", s.bundle.display()))?;
    let mut engine = Engine::from_bundle(&bundle)?;
    let m = &bundle.manifest;
    let entries = dataset::read_split(&s.manifest, &s.split)?;
    let true_labels = dataset::label_set(&entries);
    let canon_labels: Vec<String> = m.labels.iter().map(|l| canonical(l)).collect();
    let mut pre = Preprocessor::new(m.preprocess);
    let mut input = vec![0.0; engine.input_len()];
    let mut scores = vec![0.0; engine.output_len()];
    let (mut pred, mut truth) = (Vec::new(), Vec::new());
    let (mut pred_names, mut true_names) = (Vec::new(), Vec::new());
    let mut exact = 0usize;
    let mut per_class: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut skipped = 0;
    let pb = progress_bar(entries.len() as u64, "eval");
    for e in &entries {
        pb.inc(1);
        let img = match RgbImage::open(&e.path) {
            Ok(i) => i,
            Err(err) => {
                tracing::warn!(path = %e.path.display(), error = %err, "image skipped");
                skipped += 1;
                continue;
            }
        };
        pre.run(&img.pixels, img.width, img.height, &mut input)?;
        engine.infer(&input, &mut scores)?;
        if let Some(v) = scores.iter().find(|v| !v.is_finite()) {
            bail!(
                "bundle `{}` computes a non-finite logit ({v}) on `{}`: its weights are broken; export it again",
                s.bundle.display(),
                e.path.display()
            );
        }
        softmax(&mut scores);
        let top = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
        let t = true_labels
            .binary_search(&e.label)
            .expect("label from the same entries");
        pred.push(top);
        truth.push(t);
        pred_names.push(m.labels[top].clone());
        true_names.push(e.label.clone());
        let hit = canon_labels[top] == canonical(&e.label);
        exact += hit as usize;
        let c = per_class.entry(e.label.clone()).or_default();
        c.0 += hit as usize;
        c.1 += 1;
    }
    pb.finish_and_clear();
    let n = pred.len();
    if n == 0 {
        bail!("no image of split `{}` could be read", s.split);
    }
    let (cacc, _) = cluster_accuracy(&pred, &truth);
    let sacc = match &s.sentence_model {
        Some(dir) if dir.is_dir() => {
            let encoder = SentenceEncoder::load(dir, &candle_core::Device::Cpu)?;
            Some(semantic_accuracy(&encoder, &pred_names, &true_names).context("computing sACC")?)
        }
        Some(dir) => {
            tracing::warn!(dir = %dir.display(), "sentence model not found, sACC skipped; run scripts/fetch-weights.sh");
            None
        }
        None => None,
    };
    let mut predicted = pred.clone();
    predicted.sort_unstable();
    predicted.dedup();
    Ok(EvalReport {
        cacc,
        top1_exact: exact as f64 / n as f64,
        sacc,
        n,
        classes_predicted: predicted.len(),
        classes_true: true_labels.len(),
        skipped,
        per_class_top1: per_class
            .into_iter()
            .map(|(k, (h, t))| (k, h as f64 / t as f64))
            .collect(),
        model_id: m.model_id.clone(),
        precision: m.precision.to_string(),
        habits: refined.as_ref().map(|r| {
            r.confusion.as_ref().map_or_else(Vec::new, |c| {
                c.habits
                    .iter()
                    .take(20)
                    .map(|h| (h.true_name.clone(), h.named_name.clone(), h.rate))
                    .collect()
            })
        }),
        signals: refined.map(|r| r.summary.signals),
    })
}
