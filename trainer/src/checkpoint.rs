//! A trained model on disk: a folder with `head.safetensors` (the cosine head's
//! `head.weight`, `[K, D]`), `checkpoint.json` (backbone, classes, settings, provenance,
//! the images to check an export on) and `targets.jsonl` (what training decided per image).
//!
//! The backbone is not copied: the checkpoint names the weights file and its sha256, and
//! `export` refuses weights whose hash differs.

use crate::backbone::BackboneKind;
use crate::head::CosineHead;
use crate::metrics::NameScores;
use crate::near::train::{EpochLog, TrainSettings};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CHECKPOINT_VERSION: u32 = 1;
const HEAD_FILE: &str = "head.safetensors";
const META_FILE: &str = "checkpoint.json";
pub const TARGETS_FILE: &str = "targets.jsonl";

/// The files of the checkpoint folder `dir` (head, metadata, targets log).
pub fn files(dir: &Path) -> [PathBuf; 3] {
    [HEAD_FILE, META_FILE, TARGETS_FILE].map(|f| dir.join(f))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
    pub backbone: BackboneKind,
    pub weights: PathBuf,
    pub weights_sha256: String,
    /// Which backbone layers were trained (`head`: none, the backbone is frozen;
    /// `last-N-stages`: the tensors are in head.safetensors under `backbone.`).
    pub trainable: String,
    pub classes: Vec<String>,
    pub scale: f32,
    pub settings: TrainSettings,
    /// sha256 of the refined.json trained from.
    pub refined_sha256: String,
    pub mllm_model: Option<String>,
    pub prompt_sha256: Option<String>,
    pub train_images: usize,
    /// Training images (absolute paths) that export runs through candle and tract.
    pub check_images: Vec<PathBuf>,
    pub history: Vec<EpochLog>,
    pub train_seconds: f64,
    /// Scores on a labelled split when train was given one.
    pub eval: Option<NameScores>,
}

/// Prefix of fine-tuned backbone tensors in `head.safetensors` (`backbone.features.18.0.weight`).
pub const BACKBONE_PREFIX: &str = "backbone.";

/// The first non-finite value of a tensor, as (flat index, value).
fn first_non_finite(t: &Tensor) -> Result<Option<(usize, f32)>> {
    let v = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    Ok(v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])))
}

/// Fails when a tensor holds NaN or infinity, naming it.
fn check_tensor(name: &str, t: &Tensor) -> Result<()> {
    if let Some((i, v)) = first_non_finite(t)? {
        bail!("tensor `{name}` holds {v} at index {i}");
    }
    Ok(())
}

impl CheckpointMeta {
    /// Fails when a number of the metadata is NaN, infinite or out of range (JSON would
    /// write NaN as `null`, which no reader takes back).
    pub fn check_finite(&self) -> Result<()> {
        self.settings.validate("settings.")?;
        let mut numbers: Vec<(String, f64)> = vec![
            ("scale".into(), f64::from(self.scale)),
            ("train_seconds".into(), self.train_seconds),
        ];
        for h in &self.history {
            numbers.push((format!("loss of epoch {}", h.epoch), h.loss));
            if let Some(c) = h.clean_share {
                numbers.push((format!("clean share of epoch {}", h.epoch), c));
            }
        }
        if let Some(e) = &self.eval {
            numbers.push(("eval cacc".into(), e.cacc));
            numbers.push(("eval top1_exact".into(), e.top1_exact));
            numbers.extend(e.sacc.map(|s| ("eval sacc".to_string(), s)));
        }
        if let Some((name, v)) = numbers.iter().find(|(_, v)| !v.is_finite()) {
            bail!("{name} is {v}");
        }
        Ok(())
    }
}

/// Writes the checkpoint folder (created if missing; files replaced by rename).
/// `backbone` holds the fine-tuned backbone tensors by their backbone name (empty for a
/// frozen backbone). Refuses, before writing anything, weights or metadata that hold a
/// NaN or an infinity: such a checkpoint would export a model that answers NaN, or not
/// read back at all.
pub fn save(
    dir: &Path,
    head: &CosineHead,
    backbone: &[(String, Tensor)],
    meta: &CheckpointMeta,
) -> Result<()> {
    let refuse = || format!("refusing to write the checkpoint `{}`", dir.display());
    check_tensor("head.weight", &head.weight).with_context(refuse)?;
    for (name, t) in backbone {
        check_tensor(&format!("{BACKBONE_PREFIX}{name}"), t).with_context(refuse)?;
    }
    meta.check_finite().with_context(refuse)?;
    fs_err::create_dir_all(dir)?;
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let mut tensors = HashMap::from([("head.weight".to_string(), head.weight.clone())]);
    for (name, t) in backbone {
        tensors.insert(format!("{BACKBONE_PREFIX}{name}"), t.clone());
    }
    candle_core::safetensors::save(&tensors, &tmp)?;
    fs_err::rename(&tmp, dir.join(HEAD_FILE))?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    fs_err::write(&tmp, serde_json::to_string_pretty(meta)?)?;
    fs_err::rename(&tmp, dir.join(META_FILE))?;
    Ok(())
}

/// A checkpoint read back.
pub struct Loaded {
    pub head: CosineHead,
    pub meta: CheckpointMeta,
    /// Fine-tuned backbone tensors by backbone name (empty for a frozen backbone).
    pub backbone: HashMap<String, Tensor>,
}

/// Reads a checkpoint folder. Fails naming the file that is missing or malformed.
pub fn load(dir: &Path, device: &Device) -> Result<Loaded> {
    let meta_path = dir.join(META_FILE);
    let text = fs_err::read_to_string(&meta_path).with_context(|| {
        format!(
            "`{}` is not a checkpoint folder written by `linesight-train train`",
            dir.display()
        )
    })?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is malformed", meta_path.display()))?;
    if meta.version != CHECKPOINT_VERSION {
        bail!(
            "`{}` has version {}, this trainer reads {CHECKPOINT_VERSION}; train again",
            meta_path.display(),
            meta.version
        );
    }
    let head_path = dir.join(HEAD_FILE);
    let tensors = candle_core::safetensors::load(&head_path, device)
        .with_context(|| format!("cannot read `{}`", head_path.display()))?;
    let weight: Tensor = tensors
        .get("head.weight")
        .cloned()
        .with_context(|| format!("`{}` has no tensor `head.weight`", head_path.display()))?;
    let (k, _) = weight.dims2()?;
    if k != meta.classes.len() {
        bail!(
            "`{}` holds {k} class rows but checkpoint.json lists {} classes",
            head_path.display(),
            meta.classes.len()
        );
    }
    for (name, t) in &tensors {
        check_tensor(name, t).with_context(|| {
            format!(
                "`{}` is not a usable checkpoint; train again",
                head_path.display()
            )
        })?;
    }
    meta.check_finite().with_context(|| {
        format!(
            "`{}` is not a usable checkpoint; train again",
            meta_path.display()
        )
    })?;
    let backbone = tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(BACKBONE_PREFIX)
                .map(|n| (n.to_string(), t.clone()))
        })
        .collect();
    Ok(Loaded {
        head: CosineHead {
            weight,
            scale: meta.scale,
        },
        meta,
        backbone,
    })
}
