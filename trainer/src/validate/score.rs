//! Running bundles over images exactly as the box does: the bundle read and verified by
//! the shared code, the model planned by the edge's [`Engine`], each image decoded and
//! preprocessed by the shared [`Preprocessor`], the logits turned into scores by the
//! edge's softmax and read by its decision rule.

use crate::dataset::Entry;
use crate::embed::progress_bar;
use anyhow::{Context, Result};
use linesight_edge::decide::{self, Decision};
use linesight_edge::engine::Engine;
use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::{DecisionRule, Manifest};
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use linesight_shared::signature::{self, PublicKey, SignatureError};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What the signature block says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignatureStatus {
    /// `ed25519:` + 16 hex digits of the signing key; None when unsigned.
    pub fingerprint: Option<String>,
    /// The signature verifies against the key in the bundle.
    pub verifies: bool,
    /// With `--trusted-key`: whether that key is among them (what `install` asks).
    pub trusted: Option<bool>,
    /// One line for people.
    pub detail: String,
}

/// A bundle loaded for scoring.
pub struct LoadedBundle {
    /// `bundle`, `baseline bundle`, `f32 twin bundle`: names it in messages.
    pub role: &'static str,
    pub path: PathBuf,
    pub file_bytes: u64,
    pub format_version: u32,
    pub manifest: Manifest,
    pub onnx_bytes: u64,
    pub signature: SignatureStatus,
    /// Seconds to read, verify, plan and warm up.
    pub load_seconds: f64,
    /// The manifest's self-test vectors (largest logit difference), or why they failed.
    pub self_test: Result<f32, String>,
    engine: Engine,
    pre: Preprocessor,
    input: Vec<f32>,
}

/// Reads the signature block: verified against the bundle's own key, and against
/// `trusted` when given.
fn signature_status(bundle: &Bundle, trusted: &[PublicKey]) -> SignatureStatus {
    let own: Vec<PublicKey> = bundle
        .signature
        .iter()
        .map(|s| PublicKey(s.public_key))
        .collect();
    let fingerprint = bundle
        .signature
        .as_ref()
        .map(|s| signature::fingerprint(&s.public_key));
    let own_check = signature::verify_bundle(bundle, &own, true);
    let verifies = matches!(own_check, Ok(signature::Verified::Signed(_)));
    let trusted_check = (!trusted.is_empty() && fingerprint.is_some())
        .then(|| signature::verify_bundle(bundle, trusted, false));
    let trusted_ok = trusted_check.as_ref().map(|r| r.is_ok());
    let detail = match (&fingerprint, &own_check, &trusted_check) {
        (None, _, _) => "unsigned: `install` refuses it unless --allow-unsigned".to_string(),
        (Some(fp), Err(e), _) => format!("signed by {fp} but the signature does NOT verify: {e}"),
        (Some(fp), Ok(_), Some(Err(SignatureError::UntrustedKey { .. }))) => {
            format!("signed by {fp}, verifies, but the key is not among --trusted-key")
        }
        (Some(fp), Ok(_), Some(Ok(_))) => format!("signed by {fp}, verifies, trusted"),
        (Some(fp), Ok(_), _) => format!("signed by {fp}, verifies"),
    };
    SignatureStatus {
        fingerprint,
        verifies,
        trusted: trusted_ok,
        detail,
    }
}

impl LoadedBundle {
    /// Reads, verifies and plans a bundle. Fails, naming the file and its role, when it
    /// cannot be read, is damaged, or tract cannot load its model: a report on a bundle
    /// the box could not run would be worthless.
    pub fn load(path: &Path, role: &'static str, trusted: &[PublicKey]) -> Result<Self> {
        let t = std::time::Instant::now();
        let file_bytes = fs_err::metadata(path)
            .with_context(|| format!("cannot read the {role}"))?
            .len();
        let bundle = Bundle::read(path)
            .with_context(|| format!("cannot use the {role} `{}`", path.display()))?;
        let mut engine = Engine::from_bundle(&bundle).with_context(|| {
            format!(
                "the {role} `{}` does not load: tract cannot run its model",
                path.display()
            )
        })?;
        let signature = signature_status(&bundle, trusted);
        let self_test = engine
            .self_test(&bundle.manifest)
            .map_err(|e| e.to_string());
        if let Err(e) = &self_test {
            tracing::warn!(bundle = %path.display(), error = %e, "the {role} fails its self-test");
        }
        let pre = Preprocessor::new(bundle.manifest.preprocess);
        Ok(LoadedBundle {
            role,
            path: path.to_path_buf(),
            file_bytes,
            format_version: bundle.format_version,
            onnx_bytes: bundle.model.len() as u64,
            input: vec![0.0; engine.input_len()],
            manifest: bundle.manifest,
            signature,
            self_test,
            load_seconds: t.elapsed().as_secs_f64(),
            engine,
            pre,
        })
    }

    /// The softmax scores of one decoded image, one per label.
    pub fn scores(&mut self, img: &RgbImage) -> Result<Vec<f32>, String> {
        self.pre
            .run(&img.pixels, img.width, img.height, &mut self.input)
            .map_err(|e| e.to_string())?;
        let mut scores = vec![0.0; self.engine.output_len()];
        self.engine
            .infer(&self.input, &mut scores)
            .map_err(|e| format!("{}: {e}", self.role))?;
        decide::softmax(&mut scores);
        Ok(scores)
    }
}

/// The decision of the edge's rule on softmax scores (top-2 kept for the margin).
pub fn decision(scores: &[f32], rule: &DecisionRule) -> Decision {
    decide::decide(scores, rule, 2)
}

/// One manifest row scored by every bundle, or why it could not be.
pub struct Row {
    pub path: PathBuf,
    pub truth: String,
    /// Per bundle (in the order given), its softmax scores.
    pub scores: Result<Vec<Vec<f32>>, String>,
}

/// Decodes each image once and scores it with every bundle, with a progress bar. An image
/// that is missing or cannot be decoded is kept with its error (reported, not fatal).
pub fn score_entries(entries: &[Entry], bundles: &mut [&mut LoadedBundle], what: &str) -> Vec<Row> {
    let pb = progress_bar(entries.len() as u64, what);
    let rows = entries
        .iter()
        .map(|e| {
            pb.inc(1);
            let scores = RgbImage::open(&e.path)
                .map_err(|err| err.to_string())
                .and_then(|img| bundles.iter_mut().map(|b| b.scores(&img)).collect());
            if let Err(err) = &scores {
                tracing::warn!(path = %e.path.display(), error = %err, "image not scored (listed in the report)");
            }
            Row {
                path: e.path.clone(),
                truth: e.label.clone(),
                scores,
            }
        })
        .collect();
    pb.finish_and_clear();
    rows
}
