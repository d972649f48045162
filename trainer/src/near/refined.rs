//! `refined.json`: what `refine` decided and why, and what `train` reads.
//!
//! One file: the settings, the vocabulary (classes, merges, dropped names), and for every
//! image its MLLM answers, own classes, neighbours, weighted candidates and vote target
//! (the decision log). Images are identified by path (relative to `images_dir`) and by the
//! sha256 of their bytes; embeddings are not stored here but in the embedding cache.

use crate::backbone::BackboneKind;
use crate::knn::Neighbour;
use crate::near::candidates::CandidateSettings;
use crate::near::confusion::Confusion;
use crate::vocab::{SnapReport, VocabSettings, Vocabulary};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Layout version of `refined.json`.
pub const REFINED_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refined {
    pub version: u32,
    /// The images folder (absolute).
    pub images_dir: PathBuf,
    pub backbone: BackboneKind,
    /// sha256 of the backbone weights file (the training backbone's).
    pub weights_sha256: String,
    /// The backbones whose embeddings defined the neighbours when they are not
    /// `backbone` (`refine --knn-backbone`); empty: `backbone`'s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knn_backbones: Vec<BackboneKind>,
    pub mllm_model: Option<String>,
    pub prompt_sha256: Option<String>,
    pub vocab_settings: VocabSettings,
    pub candidate_settings: CandidateSettings,
    pub vocabulary: Vocabulary,
    /// The classes targets refer to (vocabulary classes that survived the vote), in order.
    pub classes: Vec<String>,
    /// Classes of the vocabulary that won the vote on too few images (dropped).
    pub pruned_classes: Vec<String>,
    /// Expert-verified labels given to refine (`--verified`), by image index.
    #[serde(default)]
    pub verified: Vec<(usize, usize)>,
    /// The vocabulary hint (`--vocabulary`), empty when none was given.
    #[serde(default)]
    pub hint: Vec<String>,
    /// What snapping the answers to the hint did.
    #[serde(default)]
    pub snaps: Option<SnapReport>,
    /// The MLLM's estimated confusion matrix and habits (with `--verified` or
    /// `--correct-confusion`); the candidate sets below are then the corrected ones.
    #[serde(default)]
    pub confusion: Option<Confusion>,
    pub images: Vec<RefinedImage>,
    pub summary: RefineSummary,
}

/// One image's decision record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefinedImage {
    /// Path relative to `images_dir`.
    pub path: String,
    pub sha256: String,
    /// The MLLM's parsed answers (one per sample).
    pub mllm: Vec<String>,
    /// Own classes with their share of the answers.
    pub own: Vec<(usize, f32)>,
    /// The k nearest other images (indices into `images`) with cosine similarity.
    pub neighbours: Vec<Neighbour>,
    /// Weighted candidate classes, heaviest first, weights summing to 1.
    pub candidates: Vec<(usize, f32)>,
    /// The vote (heaviest candidate); None when the set is empty.
    pub target: Option<usize>,
    /// `target`'s name, for reading the log.
    pub target_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefineSummary {
    /// Image files found.
    pub images: usize,
    /// Images with at least one usable MLLM answer.
    pub answered: usize,
    /// Images whose answers name a class.
    pub named: usize,
    /// Images with a target.
    pub targets: usize,
    /// Named images whose target differs from their (most frequent) own class.
    pub targets_changed: usize,
    /// Images without a class of their own that got one from their neighbours.
    pub targets_filled: usize,
    /// Images that could not be read or decoded (path: reason).
    pub skipped: Vec<String>,
    /// How many targets each signal changed.
    #[serde(default)]
    pub signals: Signals,
    pub embed_seconds: f64,
    pub knn_seconds: f64,
}

/// What each signal beside the MLLM's first answer changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Signals {
    /// Images whose most frequent answer class differs from their first answer's (sampling).
    pub samples: usize,
    /// Answers rewritten to a listed name by sentence similarity (vocabulary hint; equal
    /// spellings not counted).
    pub vocabulary_answers: usize,
    /// Named images whose neighbour vote differs from their own name.
    pub neighbours: usize,
    /// Images whose vote the confusion correction changed.
    pub confusion: usize,
    /// Verified images whose vote (before the correction) was not their verified class.
    pub verified_wrong_vote: usize,
    /// Verified rows used, and rows whose image is not among the images.
    pub verified: usize,
    pub verified_not_found: usize,
}

impl Refined {
    /// Reads and checks a `refined.json`.
    pub fn read(path: &Path) -> Result<Refined> {
        let text = fs_err::read_to_string(path).context("cannot read the refined file")?;
        let r: Refined = serde_json::from_str(&text).with_context(|| {
            format!(
                "`{}` is not a refined.json written by `linesight-train refine`",
                path.display()
            )
        })?;
        if r.version != REFINED_VERSION {
            bail!(
                "`{}` has layout version {} but this trainer reads version {REFINED_VERSION}; run refine again",
                path.display(),
                r.version
            );
        }
        let k = r.classes.len();
        for (i, img) in r.images.iter().enumerate() {
            let bad = img.candidates.iter().chain(&img.own).any(|e| e.0 >= k)
                || img.target.is_some_and(|t| t >= k)
                || img.neighbours.iter().any(|n| n.index >= r.images.len());
            if bad {
                bail!(
                    "`{}` is inconsistent: image {i} (`{}`) refers to a class or image that does not exist",
                    path.display(),
                    img.path
                );
            }
        }
        Ok(r)
    }

    /// Writes the file (via a temporary file and a rename). Refuses a weight or a
    /// similarity that is NaN or infinite (JSON would hold `null`, which train cannot read
    /// back), naming the image.
    pub fn write(&self, path: &Path) -> Result<()> {
        for img in &self.images {
            let weights = img.own.iter().chain(&img.candidates).map(|e| e.1);
            let sims = img.neighbours.iter().map(|n| n.similarity);
            if let Some(v) = weights.chain(sims).find(|v| !v.is_finite()) {
                bail!(
                    "refusing to write `{}`: image `{}` has a candidate weight or neighbour similarity of {v} \
                     (its embedding or the settings are broken)",
                    path.display(),
                    img.path
                );
            }
        }
        let text = serde_json::to_string_pretty(self)?;
        let tmp = path.with_extension("json.tmp");
        fs_err::write(&tmp, text)?;
        fs_err::rename(&tmp, path)?;
        Ok(())
    }

    /// Absolute path of every image.
    pub fn image_paths(&self) -> Vec<PathBuf> {
        self.images
            .iter()
            .map(|i| self.images_dir.join(&i.path))
            .collect()
    }
}
