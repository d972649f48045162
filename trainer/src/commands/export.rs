//! `linesight-train export`: a checkpoint -> a parity-checked (and optionally signed)
//! f32 bundle.

use crate::backbone;
use crate::checkpoint;
use crate::embed::file_sha256;
use crate::export::{self, ExportOptions, ExportReport, Head};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use linesight_shared::manifest::Provenance;
use linesight_shared::preprocess::RgbImage;
use linesight_shared::signature::SecretKey;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct ExportSettings {
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    /// Backbone weights; None: the file the checkpoint names.
    pub weights: Option<PathBuf>,
    pub model_id: String,
    pub sign: Option<PathBuf>,
    /// Also quantise (`--int8`): `out` gets the int8 bundle, the f32 one goes beside it.
    pub int8: Option<crate::commands::quantize::Int8Request>,
}

#[derive(Debug, Serialize)]
pub struct ExportCmdReport {
    pub out: String,
    pub classes: usize,
    pub bundle_bytes: u64,
    pub signature: String,
    pub export: ExportReport,
    /// With `--int8`: where the f32 baseline went (`out` is then the int8 bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f32_out: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<crate::commands::quantize::QuantizeReport>,
}

pub fn run(s: &ExportSettings) -> Result<ExportCmdReport> {
    let ckpt_files = checkpoint::files(&s.checkpoint);
    let mut inputs: Vec<(&str, &Path)> = vec![("the checkpoint folder", &s.checkpoint)];
    inputs.extend(
        ckpt_files
            .iter()
            .map(|f| ("a checkpoint file", f.as_path())),
    );
    inputs.extend(s.weights.as_deref().map(|w| ("the backbone weights", w)));
    let int8 = s.int8.as_ref();
    crate::commands::quantize::refuse_overwriting(&s.out, int8, s.sign.as_deref(), &inputs)?;
    let device = Device::Cpu;
    let key = s.sign.as_deref().map(SecretKey::read).transpose()?;
    let checkpoint::Loaded {
        head,
        meta,
        backbone: tuned,
    } = checkpoint::load(&s.checkpoint, &device)?;
    let weights = s.weights.clone().unwrap_or_else(|| meta.weights.clone());
    let sha = file_sha256(&weights)
        .with_context(|| format!("cannot read backbone weights `{}`", weights.display()))?;
    if sha != meta.weights_sha256 {
        bail!(
            "backbone weights `{}` (sha256 {}) are not the ones the checkpoint was trained on ({}); pass them with --weights",
            weights.display(),
            &sha[..12],
            &meta.weights_sha256[..12]
        );
    }
    let encoder: Box<dyn backbone::ImageEncoder> = if tuned.is_empty() {
        backbone::load(meta.backbone, &weights, &device)?
    } else {
        let model = backbone::load_tunable(meta.backbone, &weights, &device)
            .context("the checkpoint has fine-tuned backbone tensors")?;
        let vars = model.tail_vars(meta.settings.trainable_blocks);
        if vars.len() != tuned.len() {
            bail!(
                "checkpoint holds {} fine-tuned backbone tensors but trainable_blocks = {} means {}",
                tuned.len(),
                meta.settings.trainable_blocks,
                vars.len()
            );
        }
        for (name, var) in vars {
            let t = tuned
                .get(&name)
                .with_context(|| format!("checkpoint lacks fine-tuned tensor `{name}`"))?;
            var.set(t)
                .with_context(|| format!("fine-tuned tensor `{name}` has the wrong shape"))?;
        }
        model
    };
    let check: Vec<RgbImage> = meta
        .check_images
        .iter()
        .filter_map(|p| match RgbImage::open(p) {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "check image unreadable");
                None
            }
        })
        .collect();
    if check.is_empty() {
        bail!(
            "none of the checkpoint's check images can be read ({}); the export needs real photos to compare candle and tract",
            meta.check_images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let provenance = Provenance {
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        backbone: encoder.name().into(),
        method: meta.settings.method.as_str().into(),
        data_sha256: meta.refined_sha256.clone(),
        train_images: meta.train_images as u32,
        mllm_model: meta.mllm_model.clone(),
        prompt_sha256: meta.prompt_sha256.clone(),
        created_unix: export::unix_now(),
    };
    let opts = ExportOptions::new(&s.model_id, meta.classes.clone(), provenance);
    let (mut bundle, report) = export::export_f32(
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
    Ok(ExportCmdReport {
        out: s.out.display().to_string(),
        classes: meta.classes.len(),
        bundle_bytes,
        signature,
        f32_out: int8.as_ref().map(|_| f32_out.display().to_string()),
        int8,
        export: report,
    })
}
