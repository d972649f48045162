//! `label score`: how often the logged names are right, against a labelled manifest. This
//! is the direct-MLLM baseline's accuracy when the log covers the test split, and the check
//! that the simulator answers with the accuracy it was configured with.
//!
//! An answer is correct when its canonical form mentions the true class's canonical name
//! as whole words ("the Horned Grebe (Podiceps auritus)." is correct for "Horned Grebe")
//! and mentions no other class. Answers are matched to images by content hash; every
//! naming answer counts (all samples).

use super::answer::Status;
use super::cache::{self, Round};
use super::images;
use crate::dataset;
use crate::metrics::canonical;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// What to score.
#[derive(Debug, Clone)]
pub struct ScoreSettings {
    pub log: PathBuf,
    /// Labelled manifest (`path,label,split`).
    pub truth: PathBuf,
    /// Only rows of this split; `None` for all rows.
    pub split: Option<String>,
    pub model: Option<String>,
    /// A prefix of the prompt sha256.
    pub prompt: Option<String>,
}

/// Scores per class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassScore {
    pub answers: usize,
    pub correct: usize,
}

/// The `label score` report.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    pub log: PathBuf,
    pub truth: PathBuf,
    pub split: Option<String>,
    /// Truth images with at least one naming answer / without any.
    pub images_answered: usize,
    pub images_missing: usize,
    /// Naming answers scored.
    pub answers: usize,
    pub correct: usize,
    /// correct / answers.
    pub accuracy: f64,
    /// cACC of the answers taken as predictions: each answer's normalized name
    /// ([`crate::vocab::normalize`]; refused and malformed answers count as one name of
    /// their own) matched one-to-one to the true classes (Hungarian). The direct-MLLM row
    /// of the NeaR tables.
    pub cacc: f64,
    /// 95% Wilson score interval of the accuracy.
    pub ci95: [f64; 2],
    /// Answers naming another class of the manifest.
    pub other_class: usize,
    /// Usable answers naming no class of the manifest (coarse or outside names).
    pub no_class: usize,
    pub refused: usize,
    pub malformed: usize,
    pub per_class: BTreeMap<String, ClassScore>,
    /// The most frequent (true, answered) class confusions.
    pub confusions: Vec<(String, String, usize)>,
}

/// Classes of `classes` (canonical) that the canonical answer mentions as whole words,
/// leaving out those contained in a longer mentioned one.
fn mentioned(answer: &str, classes: &[String]) -> Vec<usize> {
    let padded = format!(" {answer} ");
    let hits: Vec<usize> = (0..classes.len())
        .filter(|&i| padded.contains(&format!(" {} ", classes[i])))
        .collect();
    hits.iter()
        .copied()
        .filter(|&i| {
            !hits.iter().any(|&j| {
                j != i && classes[j].len() > classes[i].len() && classes[j].contains(&classes[i])
            })
        })
        .collect()
}

/// Scores a log. Fails when the log or manifest cannot be read or nothing matches.
pub fn score(s: &ScoreSettings) -> Result<ScoreReport> {
    let entries: Vec<_> = dataset::read_manifest(&s.truth)?
        .into_iter()
        .filter(|e| s.split.as_deref().is_none_or(|sp| e.split == sp))
        .collect();
    if entries.is_empty() {
        bail!(
            "manifest `{}` has no rows{}",
            s.truth.display(),
            s.split
                .as_deref()
                .map(|x| format!(" with split `{x}`"))
                .unwrap_or_default()
        );
    }
    let labels = dataset::label_set(&entries);
    let canon: Vec<String> = labels.iter().map(|l| canonical(l)).collect();
    let paths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
    let hashes = images::hash_files(&paths, &indicatif::ProgressBar::hidden());
    let mut truth: HashMap<String, usize> = HashMap::new();
    for (e, h) in entries.iter().zip(hashes) {
        if let Ok(h) = h {
            truth
                .entry(h)
                .or_insert_with(|| labels.binary_search(&e.label).unwrap_or(0));
        }
    }
    let (records, _) = cache::read(&s.log)?;
    let mut answered: HashMap<&str, usize> = HashMap::new();
    let mut r = ScoreReport {
        log: s.log.clone(),
        truth: s.truth.clone(),
        split: s.split.clone(),
        images_answered: 0,
        images_missing: 0,
        answers: 0,
        correct: 0,
        accuracy: 0.0,
        cacc: 0.0,
        ci95: [0.0, 0.0],
        other_class: 0,
        no_class: 0,
        refused: 0,
        malformed: 0,
        per_class: BTreeMap::new(),
        confusions: Vec::new(),
    };
    let mut confusions: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let (mut pred_names, mut true_names) = (Vec::new(), Vec::new());
    for rec in &records {
        if rec.round != Round::Name
            || s.model.as_deref().is_some_and(|m| rec.model != m)
            || s.prompt
                .as_deref()
                .is_some_and(|p| !rec.prompt_sha256.starts_with(p))
        {
            continue;
        }
        let Some(&t) = truth.get(&rec.image_sha256) else {
            continue;
        };
        *answered.entry(rec.image_sha256.as_str()).or_default() += 1;
        r.answers += 1;
        pred_names.push(
            rec.name
                .as_deref()
                .filter(|_| rec.status.is_usable())
                .map_or_else(|| "(no answer)".to_string(), crate::vocab::normalize),
        );
        true_names.push(labels[t].clone());
        let class = r.per_class.entry(labels[t].clone()).or_default();
        class.answers += 1;
        match (rec.status, &rec.name) {
            (Status::Refused, _) => r.refused += 1,
            (_, None) => r.malformed += 1,
            (_, Some(name)) => {
                let m = mentioned(&canonical(name), &canon);
                if m == [t] {
                    r.correct += 1;
                    class.correct += 1;
                } else if let Some(&other) = m.iter().find(|&&c| c != t) {
                    r.other_class += 1;
                    *confusions.entry((t, other)).or_default() += 1;
                } else {
                    r.no_class += 1;
                }
            }
        }
    }
    if r.answers == 0 {
        bail!(
            "no naming answer in `{}` is about an image of `{}`",
            s.log.display(),
            s.truth.display()
        );
    }
    r.images_answered = answered.len();
    r.images_missing = truth.len().saturating_sub(answered.len());
    r.accuracy = r.correct as f64 / r.answers as f64;
    r.ci95 = wilson(r.correct, r.answers);
    r.cacc = crate::metrics::score_names(&pred_names, &true_names, None)?.cacc;
    let mut conf: Vec<(String, String, usize)> = confusions
        .into_iter()
        .map(|((t, o), n)| (labels[t].clone(), labels[o].clone(), n))
        .collect();
    conf.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    conf.truncate(20);
    r.confusions = conf;
    Ok(r)
}

/// 95% Wilson score interval for `k` successes in `n` trials ([0, 1] for no trials).
pub fn wilson(k: usize, n: usize) -> [f64; 2] {
    crate::validate::interval::wilson(k, n).map_or([0.0, 1.0], |e| [e.low, e.high])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_whole_words_and_longest() {
        let classes: Vec<String> = [
            "horned grebe",
            "grebe",
            "pied kingfisher",
            "pied billed grebe",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            mentioned(&canonical("The Horned Grebe (Podiceps auritus)."), &classes),
            vec![0]
        );
        assert_eq!(
            mentioned(&canonical("Pied-billed Grebe"), &classes),
            vec![3]
        );
        assert_eq!(mentioned(&canonical("a grebe"), &classes), vec![1]);
        assert!(mentioned(&canonical("Western Tanager"), &classes).is_empty());
    }

    #[test]
    fn wilson_interval() {
        let [lo, hi] = wilson(70, 100);
        assert!(
            (lo - 0.604).abs() < 0.002 && (hi - 0.781).abs() < 0.002,
            "{lo} {hi}"
        );
    }
}
