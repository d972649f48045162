//! `linesight-train thresholds`: writes the thresholds `validate` recommended
//! (`thresholds.toml`) into a copy of the bundle, the only place the edge reads them from
//! (edge.toml refuses them: a model is never run with another model's thresholds).
//!
//! Only the manifest's decision rule changes; the model, its hash and the self-test stay.
//! The signature covers the manifest, so the copy is signed again with `--sign`, or
//! written unsigned (and `install` then refuses it without `--allow-unsigned`).

use crate::validate::thresholds;
use anyhow::{Context, Result};
use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::DecisionRule;
use linesight_shared::signature::SecretKey;
use serde::Serialize;
use std::path::PathBuf;

pub struct ThresholdsSettings {
    pub bundle: PathBuf,
    /// The `thresholds.toml` written by `validate`.
    pub set: PathBuf,
    pub out: PathBuf,
    pub sign: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct ThresholdsReport {
    pub out: String,
    pub bundle_bytes: u64,
    pub model_id: String,
    pub before: DecisionRule,
    pub after: DecisionRule,
    /// The signer's fingerprint, or `unsigned`.
    pub signature: String,
}

/// Fails when the bundle cannot be read, the file was made for another model or names a
/// class the model lacks, or the copy cannot be written.
pub fn run(s: &ThresholdsSettings) -> Result<ThresholdsReport> {
    let key = s.sign.as_deref().map(SecretKey::read).transpose()?;
    let bundle = Bundle::read(&s.bundle)
        .with_context(|| format!("cannot use bundle `{}`", s.bundle.display()))?;
    let file = thresholds::read(&s.set)?;
    let rule = thresholds::apply(
        &file,
        &(&bundle.manifest).into(),
        &s.set.display().to_string(),
    )?;
    let before = bundle.manifest.decision.clone();
    let mut manifest = bundle.manifest;
    manifest.decision = rule.clone();
    let mut copy = Bundle::new(manifest, bundle.model);
    if key.is_none() && bundle.signature.is_some() {
        tracing::warn!("the bundle was signed; the copy is unsigned (give --sign KEY to sign it)");
    }
    let (bundle_bytes, signature) = crate::export::sign_and_write(&mut copy, key.as_ref(), &s.out)?;
    Ok(ThresholdsReport {
        out: s.out.display().to_string(),
        bundle_bytes,
        model_id: copy.manifest.model_id.clone(),
        before,
        after: rule,
        signature,
    })
}
