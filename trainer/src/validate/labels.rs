//! Training labels worth a person's look: the images of `refined.json` whose MLLM name,
//! neighbour vote, final training target (from the checkpoint's `targets.jsonl`) and the
//! bundle's own prediction disagree most. The list is written as `to-verify.csv` in the
//! shape `refine --verified` reads (`path,label,split`), with the label left empty for the
//! person to fill in (refine refuses an empty label, so nothing unverified slips through).

use crate::metrics::canonical;
use crate::near::refined::Refined;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One training image and what each signal called it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelRow {
    pub path: PathBuf,
    /// The MLLM's first answer, as parsed.
    pub mllm: Option<String>,
    /// The vocabulary class that answer became (None: dropped as generic or rare).
    pub mllm_class: Option<String>,
    /// refine's neighbour vote.
    pub vote: Option<String>,
    /// The final training target (`targets.jsonl`), when given.
    pub target: Option<String>,
    /// The clean-sample posterior training gave it (`targets.jsonl`), when given.
    pub clean: Option<f64>,
    /// The bundle's top-1 on the image and its score.
    pub model: Option<String>,
    pub model_score: Option<f32>,
    /// Distinct names among the signals present.
    pub distinct: usize,
}

/// A line of the checkpoint's `targets.jsonl`.
#[derive(Debug, Deserialize)]
struct TargetLine {
    path: String,
    target: Option<String>,
    #[serde(default)]
    clean: Option<f64>,
}

/// `targets.jsonl` by image path: (final target, clean posterior).
pub type Targets = HashMap<String, (Option<String>, Option<f64>)>;

/// Reads `targets.jsonl`: path -> (final target, clean posterior). Fails naming the line.
pub fn read_targets(path: &Path) -> Result<Targets> {
    let text = fs_err::read_to_string(path).context("cannot read the training targets")?;
    let mut out = HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let t: TargetLine = serde_json::from_str(line).with_context(|| {
            format!(
                "`{}` line {} is not a targets.jsonl line written by `linesight-train train`",
                path.display(),
                i + 1
            )
        })?;
        out.insert(t.path, (t.target, t.clean));
    }
    Ok(out)
}

/// Every refined image whose signals name at least two distinct classes, most
/// disagreement first, then the least clean, then the least confident prediction.
/// `model[i]` is the bundle's (top-1, score) on image `i` of `refined.images`.
pub fn disagreements(
    refined: &Refined,
    targets: Option<&Targets>,
    model: &[Option<(String, f32)>],
) -> Vec<LabelRow> {
    let mut rows: Vec<LabelRow> = refined
        .images
        .iter()
        .zip(model)
        .map(|(img, m)| {
            let mllm_class = img
                .own
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|&(c, _)| refined.classes[c].clone());
            let (target, clean) = targets
                .and_then(|t| t.get(&img.path))
                .cloned()
                .unwrap_or((None, None));
            let mllm = img.mllm.first().cloned();
            let named = mllm_class.clone().or_else(|| mllm.clone());
            let mut names: Vec<String> = [
                &named,
                &img.target_name,
                &target,
                &m.as_ref().map(|m| m.0.clone()),
            ]
            .into_iter()
            .flatten()
            .map(|n| canonical(n))
            .collect();
            names.sort();
            names.dedup();
            LabelRow {
                path: refined.images_dir.join(&img.path),
                mllm,
                mllm_class,
                vote: img.target_name.clone(),
                target,
                clean,
                model: m.as_ref().map(|m| m.0.clone()),
                model_score: m.as_ref().map(|m| m.1),
                distinct: names.len(),
            }
        })
        .filter(|r| r.distinct >= 2)
        .collect();
    rows.sort_by(|a, b| {
        b.distinct
            .cmp(&a.distinct)
            .then(a.clean.unwrap_or(1.0).total_cmp(&b.clean.unwrap_or(1.0)))
            .then(
                a.model_score
                    .unwrap_or(1.0)
                    .total_cmp(&b.model_score.unwrap_or(1.0)),
            )
            .then(a.path.cmp(&b.path))
    });
    rows
}

/// Writes `to-verify.csv`: `path,label,split` (label empty, split `verified`) and the
/// signals as extra columns, which `refine --verified` ignores.
pub fn write_csv(rows: &[LabelRow], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_path(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    w.write_record(["path", "label", "split", "mllm", "vote", "target", "model"])?;
    for r in rows {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        w.write_record([
            r.path.display().to_string(),
            String::new(),
            "verified".into(),
            o(&r.mllm),
            o(&r.vote),
            o(&r.target),
            o(&r.model),
        ])?;
    }
    w.flush()
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::near::refined::RefinedImage;

    fn image(
        path: &str,
        mllm: &str,
        own: Option<usize>,
        target: Option<usize>,
        classes: &[&str],
    ) -> RefinedImage {
        RefinedImage {
            path: path.into(),
            sha256: String::new(),
            mllm: vec![mllm.into()],
            own: own.map(|c| vec![(c, 1.0)]).unwrap_or_default(),
            neighbours: vec![],
            candidates: vec![],
            target,
            target_name: target.map(|t| classes[t].to_string()),
        }
    }

    #[test]
    fn targets_are_read_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("targets.jsonl");
        std::fs::write(
            &p,
            "{\"path\":\"a.jpg\",\"vote\":\"Crow\",\"target\":\"Crow\",\"clean\":0.25}\n\n{\"path\":\"b.jpg\",\"vote\":null,\"target\":null,\"clean\":null}\n",
        )
        .unwrap();
        let t = read_targets(&p).unwrap();
        assert_eq!(t["a.jpg"], (Some("Crow".to_string()), Some(0.25)));
        assert_eq!(t["b.jpg"], (None, None));
        std::fs::write(&p, "{\"path\":\"a.jpg\"}\nnot json\n").unwrap();
        let e = format!("{:#}", read_targets(&p).unwrap_err());
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn disagreement_by_hand() {
        use crate::near::refined::RefineSummary;
        use crate::vocab::{VocabSettings, Vocabulary};
        let classes = ["Cardinal", "Blue Jay", "Crow"];
        let r = Refined {
            version: crate::near::refined::REFINED_VERSION,
            images_dir: "/imgs".into(),
            backbone: crate::backbone::BackboneKind::MobilenetV2,
            weights_sha256: String::new(),
            knn_backbones: Vec::new(),
            mllm_model: None,
            prompt_sha256: None,
            vocab_settings: VocabSettings::default(),
            candidate_settings: Default::default(),
            vocabulary: Vocabulary {
                classes: vec![],
                dropped: vec![],
                closest_kept_pair: None,
                category: None,
            },
            classes: classes.iter().map(|c| c.to_string()).collect(),
            pruned_classes: vec![],
            verified: vec![],
            hint: vec![],
            snaps: None,
            confusion: None,
            images: vec![
                image("a.jpg", "cardinal", Some(0), Some(0), &classes), // all agree
                image("b.jpg", "blue jay", Some(1), Some(0), &classes), // mllm 1, vote 0, model 2
                image("c.jpg", "a bird", None, Some(2), &classes),      // "a bird" vs crow
                image("d.jpg", "crow", Some(2), Some(2), &classes),     // vote crow, model jay
            ],
            summary: RefineSummary::default(),
        };
        check(&r);
    }

    fn check(r: &Refined) {
        let model = vec![
            Some(("Cardinal".to_string(), 0.9)),
            Some(("Crow".to_string(), 0.4)),
            Some(("Crow".to_string(), 0.8)),
            Some(("Blue Jay".to_string(), 0.3)),
        ];
        let targets: HashMap<String, (Option<String>, Option<f64>)> = [
            ("d.jpg".to_string(), (Some("Crow".to_string()), Some(0.2))),
            ("c.jpg".to_string(), (Some("Crow".to_string()), Some(0.9))),
        ]
        .into();
        let rows = disagreements(r, Some(&targets), &model);
        let got: Vec<(&str, usize)> = rows
            .iter()
            .map(|r| (r.path.file_name().unwrap().to_str().unwrap(), r.distinct))
            .collect();
        // b: blue jay / cardinal / crow = 3; d: crow / crow / crow / blue jay = 2, clean
        // 0.2; c: "a bird" / crow = 2, clean 0.9; a agrees and is left out
        assert_eq!(got, [("b.jpg", 3), ("d.jpg", 2), ("c.jpg", 2)]);
        assert_eq!(rows[2].mllm.as_deref(), Some("a bird"));
        assert!(rows[2].mllm_class.is_none());
        let dir = tempfile::tempdir().unwrap();
        let csv_path = dir.path().join("to-verify.csv");
        write_csv(&rows, &csv_path).unwrap();
        let text = std::fs::read_to_string(&csv_path).unwrap();
        assert!(text.starts_with("path,label,split,mllm,vote,target,model\n/imgs/b.jpg,,verified,blue jay,Cardinal,,Crow\n"), "{text}");
    }
}
