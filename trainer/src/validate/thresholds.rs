//! Recommended reject thresholds and `thresholds.toml`, the file that carries them into a
//! bundle.
//!
//! Thresholds are model settings: they travel in the bundle's manifest (its
//! [`DecisionRule`]), and the edge refuses them in `edge.toml` by name, so that a model is
//! never run with another model's thresholds. `validate` writes them as a `[decision]`
//! table that mirrors the manifest's rule, with classes by name and the model's sha256;
//! `linesight-train thresholds --set thresholds.toml` writes them into a copy of the
//! bundle ([`apply`]), which `linesight-edge classify` and `run` then use.

use super::calibration::{lowest_threshold, Choice, Scored, NEVER};
use anyhow::{bail, Context, Result};
use linesight_shared::manifest::{DecisionRule, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The lowest thresholds that reach a precision target, globally and per class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub target_precision: f64,
    /// One threshold for every class.
    pub global: Choice,
    /// Per bundle label (in label order): its own choice among the images predicted as
    /// it, or None when none was (it then gets the global threshold).
    pub per_class: Vec<(String, Option<Choice>)>,
    /// The bundle's margin rule, kept as it is.
    pub min_margin: f32,
}

/// One image for [`recommend`]: its top-1 label index, score, margin and correctness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub top1: usize,
    pub score: f32,
    pub margin: f32,
    pub correct: bool,
}

/// Chooses the thresholds. An image whose margin is below the bundle's `min_margin` is
/// rejected whatever its score, so it is never counted as accepted.
pub fn recommend(
    images: &[Candidate],
    labels: &[String],
    min_margin: f32,
    target: f64,
) -> Recommendation {
    let eligible = |c: &&Candidate| c.margin >= min_margin;
    let mut global = lowest_threshold(&scored(images.iter().filter(eligible)), target);
    global.total = images.len();
    let per_class = labels
        .iter()
        .enumerate()
        .map(|(l, name)| {
            let total = images.iter().filter(|c| c.top1 == l).count();
            let mine = scored(images.iter().filter(|c| c.top1 == l).filter(eligible));
            let choice = (total > 0).then(|| Choice {
                total,
                ..lowest_threshold(&mine, target)
            });
            (name.clone(), choice)
        })
        .collect();
    Recommendation {
        target_precision: target,
        global,
        per_class,
        min_margin,
    }
}

fn scored<'a>(it: impl Iterator<Item = &'a Candidate>) -> Vec<Scored> {
    it.map(|c| Scored {
        score: c.score,
        correct: c.correct,
    })
    .collect()
}

impl Recommendation {
    /// The per-class rule: each label's own threshold, the global one where it has none.
    pub fn per_class_rule(&self) -> DecisionRule {
        DecisionRule {
            min_score: self.global.threshold,
            min_margin: self.min_margin,
            per_class_min_score: self
                .per_class
                .iter()
                .map(|(_, c)| c.map_or(self.global.threshold, |c| c.threshold))
                .collect(),
        }
    }

    /// The global rule: one threshold for every class.
    pub fn global_rule(&self) -> DecisionRule {
        DecisionRule {
            min_score: self.global.threshold,
            min_margin: self.min_margin,
            per_class_min_score: Vec::new(),
        }
    }
}

/// What thresholds chosen on some images do on others.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeldOut {
    pub accepted: usize,
    pub correct: usize,
    pub total: usize,
    pub coverage: f64,
    /// correct / accepted with its Wilson interval; None when nothing was accepted.
    pub precision: Option<super::interval::Estimate>,
}

impl HeldOut {
    fn new(accepted: usize, correct: usize, total: usize) -> Self {
        HeldOut {
            accepted,
            correct,
            total,
            coverage: accepted as f64 / total.max(1) as f64,
            precision: super::interval::wilson(correct, accepted),
        }
    }
}

/// Two-fold check of the recommendation: thresholds are chosen on the even-numbered
/// images and applied to the odd-numbered ones, and the other way round; the counts are
/// summed. Thresholds chosen and scored on the same images flatter themselves (more so
/// per class, on few images each); this is what they do on images they were not chosen
/// on. `accepts(i, rule)` says whether image `i` passes `rule` (the edge's decision).
/// Returns (per-class rule, global rule).
pub fn two_fold(
    images: &[Candidate],
    labels: &[String],
    min_margin: f32,
    target: f64,
    accepts: impl Fn(usize, &DecisionRule) -> bool,
) -> (HeldOut, HeldOut) {
    let (mut per_class, mut global) = ([0usize; 2], [0usize; 2]);
    for fold in 0..2 {
        let chosen_on: Vec<Candidate> = images
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == fold)
            .map(|(_, c)| *c)
            .collect();
        let rec = recommend(&chosen_on, labels, min_margin, target);
        let (pc, gl) = (rec.per_class_rule(), rec.global_rule());
        for (i, c) in images.iter().enumerate().filter(|(i, _)| i % 2 != fold) {
            for (rule, acc) in [(&pc, &mut per_class), (&gl, &mut global)] {
                if accepts(i, rule) {
                    acc[0] += 1;
                    acc[1] += usize::from(c.correct);
                }
            }
        }
    }
    let n = images.len();
    (
        HeldOut::new(per_class[0], per_class[1], n),
        HeldOut::new(global[0], global[1], n),
    )
}

/// What `thresholds.toml` names of the model it was made for.
pub struct ModelRef<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub precision: String,
    pub sha256: [u8; 32],
    /// In logit order.
    pub labels: &'a [String],
}

impl<'a> From<&'a Manifest> for ModelRef<'a> {
    fn from(m: &'a Manifest) -> Self {
        ModelRef {
            id: &m.model_id,
            version: &m.model_version,
            precision: m.precision.to_string(),
            sha256: m.model_sha256,
            labels: &m.labels,
        }
    }
}

/// `thresholds.toml` as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsFile {
    /// sha256 (hex) of the ONNX model the thresholds were chosen for.
    pub model_sha256: String,
    pub decision: DecisionTable,
}

/// The manifest's [`DecisionRule`] with classes by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionTable {
    pub min_score: f32,
    pub min_margin: f32,
    #[serde(default)]
    pub per_class_min_score: BTreeMap<String, f32>,
}

/// A threshold as TOML writes it: the shortest decimal that reads back as the same f32,
/// always with a decimal point (so TOML reads a float).
fn float(v: f32) -> String {
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// What `thresholds.toml` says about the figures, for its comments.
pub struct Predicted {
    pub coverage: f64,
    pub precision: f64,
}

/// Writes `thresholds.toml`'s text: the per-class rule, with the figures it and the
/// global rule gave on the scored images in comments.
pub fn render(
    rec: &Recommendation,
    model: &ModelRef,
    source: &str,
    per_class: &Predicted,
    global: &Predicted,
) -> String {
    let mut out = String::new();
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let _ = writeln!(
        out,
        "# Reject thresholds recommended by `linesight-train validate` for model `{}` {} ({}),\n\
         # target precision {} on {}.\n\
         #\n\
         # Thresholds are model settings: they travel in the bundle's manifest, and edge.toml\n\
         # refuses them. Write them into a copy of the bundle (sign it again for `install`):\n\
         #   linesight-train thresholds --bundle MODEL.lsb --set thresholds.toml --out MODEL.tuned.lsb --sign signing.key\n\
         #\n\
         # This per-class rule accepted {} of those images at {} precision. Without the\n\
         # [decision.per_class_min_score] table, min_score alone applies to every class\n\
         # (the global rule): {} accepted at {} precision.",
        model.id,
        model.version,
        model.precision,
        rec.target_precision,
        source,
        pct(per_class.coverage),
        pct(per_class.precision),
        pct(global.coverage),
        pct(global.precision),
    );
    let _ = writeln!(
        out,
        "\nmodel_sha256 = \"{}\"\n\n[decision]\nmin_score = {}\nmin_margin = {}\n\n[decision.per_class_min_score]",
        hex::encode(model.sha256),
        float(rec.global.threshold),
        float(rec.min_margin),
    );
    let reached = |c: &Choice| {
        if c.reached {
            format!(
                "accepts {} of {} predictions, {} right",
                c.accepted, c.total, c.correct
            )
        } else {
            format!(
                "no threshold reaches the target on its {} predictions: never accepted",
                c.total
            )
        }
    };
    for (name, choice) in &rec.per_class {
        let key = toml::Value::String(name.clone()).to_string();
        match choice {
            Some(c) => {
                let _ = writeln!(out, "{key} = {}  # {}", float(c.threshold), reached(c));
            }
            None => {
                let _ = writeln!(
                    out,
                    "{key} = {}  # never predicted on these images: the global threshold",
                    float(rec.global.threshold)
                );
            }
        }
    }
    out
}

/// Reads `thresholds.toml`. Fails naming the file on a syntax error or an unknown key.
pub fn read(path: &Path) -> Result<ThresholdsFile> {
    let text = fs_err::read_to_string(path).context("cannot read the thresholds file")?;
    toml::from_str(&text).with_context(|| {
        format!(
            "`{}` is not a thresholds file written by `linesight-train validate`",
            path.display()
        )
    })
}

/// The manifest's decision rule for `file`. Fails when the file was made for another
/// model, names a class the model lacks, or holds a threshold outside 0..=1.01.
pub fn apply(file: &ThresholdsFile, model: &ModelRef, origin: &str) -> Result<DecisionRule> {
    let sha = hex::encode(model.sha256);
    if !file.model_sha256.eq_ignore_ascii_case(&sha) {
        bail!(
            "`{origin}` was made for model sha256 {} but this bundle's model is {sha}; run validate on this bundle",
            file.model_sha256
        );
    }
    let d = &file.decision;
    let valid = |v: f32| (0.0..=NEVER).contains(&v);
    if !valid(d.min_score) || !valid(d.min_margin) {
        bail!(
            "`{origin}`: min_score {} and min_margin {} must be within 0..={NEVER}",
            d.min_score,
            d.min_margin
        );
    }
    for (name, &v) in &d.per_class_min_score {
        if !model.labels.contains(name) {
            bail!("`{origin}`: class `{name}` is not one of the model's labels");
        }
        if !valid(v) {
            bail!("`{origin}`: the threshold {v} of `{name}` must be within 0..={NEVER}");
        }
    }
    let per_class = if d.per_class_min_score.is_empty() {
        Vec::new()
    } else {
        model
            .labels
            .iter()
            .map(|l| d.per_class_min_score.get(l).copied().unwrap_or(d.min_score))
            .collect()
    };
    Ok(DecisionRule {
        min_score: d.min_score,
        min_margin: d.min_margin,
        per_class_min_score: per_class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(top1: usize, score: f32, correct: bool) -> Candidate {
        Candidate {
            top1,
            score,
            margin: score,
            correct,
        }
    }

    fn labels() -> Vec<String> {
        vec!["a".into(), "b \"quoted\"".into(), "never".into()]
    }

    /// class a: 0.9 R, 0.8 W, 0.7 R, 0.6 R; class b: 0.95 R, 0.5 W, 0.4 R.
    fn images() -> Vec<Candidate> {
        vec![
            c(0, 0.9, true),
            c(0, 0.8, false),
            c(0, 0.7, true),
            c(0, 0.6, true),
            c(1, 0.95, true),
            c(1, 0.5, false),
            c(1, 0.4, true),
        ]
    }

    #[test]
    fn recommendation_by_hand() {
        let r = recommend(&images(), &labels(), 0.0, 0.75);
        // global, sorted: .95R .9R .8W .7R .6R .5W .4R -> precision at .6: 4/5 = 0.8,
        // at .5: 4/6, at .4: 5/7 = 0.714 -> lowest reaching 0.75 is 0.6 (5 of 7 accepted)
        assert_eq!(
            (r.global.threshold, r.global.accepted, r.global.total),
            (0.6, 5, 7)
        );
        // a: .9R .8W .7R .6R -> at .6: 3/4 = 0.75 -> 0.6; b: .95R .5W .4R -> at .4: 2/3,
        // at .5: 1/2, at .95: 1/1 -> 0.95
        let a = r.per_class[0].1.unwrap();
        assert_eq!((a.threshold, a.accepted, a.total), (0.6, 4, 4));
        let b = r.per_class[1].1.unwrap();
        assert_eq!((b.threshold, b.accepted, b.total), (0.95, 1, 3));
        assert!(r.per_class[2].1.is_none());
        let rule = r.per_class_rule();
        assert_eq!(rule.per_class_min_score, vec![0.6, 0.95, 0.6]);
        assert!(r.global_rule().per_class_min_score.is_empty());
        // the margin rule: an image below min_margin is never accepted (0.9's margin is
        // 0.9, so a min_margin of 0.92 leaves only 0.95 eligible)
        let r = recommend(&images(), &labels(), 0.92, 0.75);
        assert_eq!((r.global.threshold, r.global.accepted), (0.95, 1));
    }

    #[test]
    fn two_fold_by_hand() {
        // even images (chosen on first): 0.9R 0.7R 0.95R 0.4R -> class 0 {0.9R, 0.7R},
        // class 1 {0.95R, 0.4R}; odd: 0.8W 0.6R (class 0), 0.5W (class 1).
        let imgs = images();
        let accepts = |i: usize, r: &DecisionRule| {
            let c = imgs[i];
            c.score
                >= r.per_class_min_score
                    .get(c.top1)
                    .copied()
                    .unwrap_or(r.min_score)
        };
        let (pc, gl) = two_fold(&imgs, &labels(), 0.0, 0.75, accepts);
        // fold 0 (chosen on evens, all right): class 0 -> 0.7, class 1 -> 0.4, global
        // 0.4; on the odds: 0.8W (>= 0.7), 0.6R (< 0.7), 0.5W (>= 0.4) -> per class 2
        // accepted, 0 right; global 0.4: all 3 accepted, 1 right.
        // fold 1 (chosen on the odds: class 0 {0.8W, 0.6R}, class 1 {0.5W}): class 0
        // reaches 0/1, 1/2, never 0.75; class 1 never; global 0/1, 1/2, 1/3, never ->
        // nothing accepted on the evens.
        assert_eq!((pc.accepted, pc.correct, pc.total), (2, 0, 7));
        assert_eq!((gl.accepted, gl.correct), (3, 1));
        assert!((gl.coverage - 3.0 / 7.0).abs() < 1e-12);
        assert_eq!(pc.precision.unwrap().value, 0.0);
    }

    fn model(labels: &[String]) -> ModelRef<'_> {
        ModelRef {
            id: "m",
            version: "1",
            precision: "f32".into(),
            sha256: [7; 32],
            labels,
        }
    }

    #[test]
    fn the_file_reads_back_as_the_rule_it_was_written_from() {
        let r = recommend(&images(), &labels(), 0.0, 0.75);
        let l = labels();
        let m = model(&l);
        let p = Predicted {
            coverage: 0.5,
            precision: 0.9,
        };
        let text = render(&r, &m, "split `test`", &p, &p);
        let file: ThresholdsFile = toml::from_str(&text).unwrap();
        let rule = apply(&file, &m, "t").unwrap();
        assert_eq!(rule, r.per_class_rule());
        // odd thresholds survive the trip exactly
        let mut odd = r.clone();
        odd.global.threshold = 0.123_456_79;
        odd.per_class[0].1.as_mut().unwrap().threshold = f32::from_bits(0x3f7f_ffff);
        let file: ThresholdsFile = toml::from_str(&render(&odd, &m, "s", &p, &p)).unwrap();
        assert_eq!(apply(&file, &m, "t").unwrap(), odd.per_class_rule());
    }

    #[test]
    fn a_file_for_another_model_or_label_is_refused() {
        let l = labels();
        let m = model(&l);
        let mut file = ThresholdsFile {
            model_sha256: "00".repeat(32),
            decision: DecisionTable {
                min_score: 0.5,
                min_margin: 0.0,
                per_class_min_score: BTreeMap::new(),
            },
        };
        let e = apply(&file, &m, "thr.toml").unwrap_err().to_string();
        assert!(e.contains("was made for model sha256"), "{e}");
        file.model_sha256 = hex::encode(m.sha256);
        assert!(apply(&file, &m, "t")
            .unwrap()
            .per_class_min_score
            .is_empty());
        file.decision
            .per_class_min_score
            .insert("zebra".into(), 0.5);
        let e = apply(&file, &m, "thr.toml").unwrap_err().to_string();
        assert!(
            e.contains("`zebra` is not one of the model's labels"),
            "{e}"
        );
        file.decision.per_class_min_score.clear();
        file.decision.min_score = 2.0;
        assert!(apply(&file, &m, "t").is_err());
        // an unknown key is refused by name
        let e = toml::from_str::<ThresholdsFile>(
            "model_sha256 = \"00\"\n[decision]\nmin_score = 0.5\nmin_margin = 0.0\nthreshold = 1.0\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("threshold"), "{e}");
    }
}
