//! `linesight-train prototypes`: a supervised head from a labelled manifest: class
//! prototypes of L2-normalized embeddings, scaled-cosine logits, exported as a bundle.
//! The oracle baseline of the NeaR measurements, and useful on its own to a user with a
//! few labelled images per class.

use crate::backbone::{self, BackboneKind};
use crate::bounds::{Bound, Checker};
use crate::dataset;
use crate::embed;
use crate::export::{self, ExportOptions, ExportReport, Head};
use crate::head::CosineHead;
use anyhow::{Context, Result};
use candle_core::Device;
use linesight_shared::manifest::Provenance;
use linesight_shared::preprocess::RgbImage;
use linesight_shared::signature::SecretKey;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct PrototypesSettings {
    pub backbone: BackboneKind,
    pub weights: PathBuf,
    pub manifest: PathBuf,
    pub split: String,
    pub out: PathBuf,
    pub model_id: String,
    pub scale: f32,
    pub batch: usize,
    /// Training images re-run through candle and tract at export.
    pub check_images: usize,
    /// Secret key file (`signing.key`) to sign the bundle with; unsigned when None.
    pub sign: Option<PathBuf>,
    /// Also quantise (`--int8`): `out` gets the int8 bundle, the f32 one goes beside it.
    pub int8: Option<crate::commands::quantize::Int8Request>,
}

#[derive(Debug, Serialize)]
pub struct PrototypesReport {
    pub out: String,
    pub classes: usize,
    pub images: usize,
    pub skipped: Vec<String>,
    pub embed_seconds: f64,
    pub images_per_second: f64,
    pub bundle_bytes: u64,
    /// Fingerprint of the signing key, or `unsigned`.
    pub signature: String,
    pub export: ExportReport,
    /// With `--int8`: where the f32 baseline went (`out` is then the int8 bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f32_out: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<crate::commands::quantize::QuantizeReport>,
}

pub fn run(s: &PrototypesSettings) -> Result<PrototypesReport> {
    Checker::new("--")
        .check("scale", s.scale, Bound::POSITIVE)
        .check("batch", s.batch, Bound::AT_LEAST_ONE)
        .check("check-images", s.check_images, Bound::AT_LEAST_ONE)
        .finish()?;
    let device = Device::Cpu;
    // Read the key first: a bad key path should not cost an embedding run.
    let key = s.sign.as_deref().map(SecretKey::read).transpose()?;
    let entries = dataset::read_split(&s.manifest, &s.split)?;
    let mut inputs: Vec<(&str, &Path)> = vec![
        ("the manifest", &s.manifest),
        ("the backbone weights", &s.weights),
    ];
    inputs.extend(
        entries
            .iter()
            .map(|e| ("a training image", e.path.as_path())),
    );
    let int8 = s.int8.as_ref();
    crate::commands::quantize::refuse_overwriting(&s.out, int8, s.sign.as_deref(), &inputs)?;
    let labels = dataset::label_set(&entries);
    let encoder = backbone::load(s.backbone, &s.weights, &device)?;
    tracing::info!(
        backbone = encoder.name(),
        images = entries.len(),
        classes = labels.len(),
        "embedding"
    );
    let paths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
    let t0 = Instant::now();
    let emb = embed::embed_paths(encoder.as_ref(), &paths, s.batch, &device)?;
    let embed_seconds = t0.elapsed().as_secs_f64();
    let targets: Vec<usize> = emb
        .rows
        .iter()
        .map(|&i| {
            labels
                .binary_search(&entries[i].label)
                .expect("label from the same entries")
        })
        .collect();
    let head = CosineHead::prototypes(&emb.embeddings, &targets, labels.len(), s.scale)
        .context("cannot build class prototypes")?;

    let mut hasher = Sha256::new();
    for &i in &emb.rows {
        hasher.update(entries[i].path.to_string_lossy().as_bytes());
        hasher.update(entries[i].label.as_bytes());
    }
    let provenance = Provenance {
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        backbone: encoder.name().into(),
        method: "prototypes".into(),
        data_sha256: hex::encode(hasher.finalize()),
        train_images: emb.rows.len() as u32,
        mllm_model: None,
        prompt_sha256: None,
        created_unix: export::unix_now(),
    };
    let opts = ExportOptions::new(&s.model_id, labels.clone(), provenance);
    let check: Vec<RgbImage> = emb
        .rows
        .iter()
        .take(s.check_images.max(1))
        .filter_map(|&i| RgbImage::open(&entries[i].path).ok())
        .collect();
    let (mut bundle, export) = export::export_f32(
        encoder.as_ref(),
        &Head::Cosine(&head),
        &check,
        &opts,
        &device,
    )?;
    let (f32_out, bundle_bytes, signature, int8) = crate::commands::quantize::write_with_int8(
        &mut bundle,
        key.as_ref(),
        &s.out,
        s.int8.as_ref(),
    )?;
    Ok(PrototypesReport {
        out: s.out.display().to_string(),
        classes: labels.len(),
        images: emb.rows.len(),
        skipped: emb
            .skipped
            .iter()
            .map(|k| format!("{}: {}", k.path.display(), k.reason))
            .collect(),
        embed_seconds,
        images_per_second: emb.rows.len() as f64 / embed_seconds.max(1e-9),
        bundle_bytes,
        signature,
        f32_out: int8.as_ref().map(|_| f32_out.display().to_string()),
        int8,
        export,
    })
}
