//! `linesight-edge inspect`: what a bundle holds (its manifest, signature and model), and
//! the raw ONNX bytes written out for other tools (onnxruntime, Netron).

use crate::trust::{SignatureReport, TrustSources};
use anyhow::{Context, Result};
use linesight_shared::bundle::{sha256, Bundle};
use serde::Serialize;
use std::path::PathBuf;

pub struct InspectSettings {
    pub bundle: PathBuf,
    /// Write the model's ONNX bytes to this file.
    pub extract_onnx: Option<PathBuf>,
    /// Where the trusted keys come from (the signature is checked against them).
    pub trust: TrustSources,
}

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub bundle: String,
    pub bundle_bytes: u64,
    pub format_version: u32,
    pub model_id: String,
    pub model_version: String,
    pub precision: String,
    pub labels: Vec<String>,
    pub input: serde_json::Value,
    pub output: serde_json::Value,
    pub preprocess: serde_json::Value,
    pub decision: serde_json::Value,
    pub parity: serde_json::Value,
    /// int8 bundles (format 2): per class, how the int8 model kept the f32 model's top-1
    /// on the parity images.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parity_per_class: Vec<ClassParityReport>,
    pub provenance: serde_json::Value,
    pub min_runtime_version: String,
    /// Manifest fields this report does not name (those of newer format versions).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub other: serde_json::Map<String, serde_json::Value>,
    pub self_test_vectors: usize,
    /// The largest |logit difference| a self-test vector allows (each vector carries its
    /// own; `install` and the hot swap refuse a model beyond it). None without vectors.
    pub self_test_tolerance: Option<f32>,
    /// `ed25519:` + 16 hex of the signing key, or `unsigned`.
    pub signature: String,
    /// The signature checked: valid / invalid / untrusted / unsigned, against the trusted
    /// keys found the way `install` finds them.
    pub signature_check: SignatureReport,
    pub onnx_bytes: u64,
    pub onnx_sha256: String,
    /// Where the ONNX bytes were written (`--extract-onnx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extracted_onnx: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClassParityReport {
    pub label: String,
    /// Parity images the f32 model put in this class.
    pub reference: u32,
    /// Of those, kept in this class by the int8 model.
    pub kept: u32,
    pub recall: f32,
}

fn json(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Manifest fields the report shows under their own names (or counts: `self_test`).
const NAMED: [&str; 12] = [
    "model_id",
    "model_version",
    "labels",
    "preprocess",
    "input",
    "output",
    "precision",
    "model_sha256",
    "decision",
    "self_test",
    "parity",
    "provenance",
];

/// Reads and verifies the bundle (checksum, model hash), checks its signature against the
/// trusted keys (shown, not refused), and writes its ONNX bytes when asked (never over the
/// bundle itself). Fails when the bundle cannot be read or verified, or the ONNX file cannot be
/// written, naming the file.
pub fn run(s: &InspectSettings) -> Result<InspectReport> {
    let bundle_bytes = fs_err::metadata(&s.bundle)
        .context("cannot read the bundle")?
        .len();
    let b = Bundle::read(&s.bundle)
        .with_context(|| format!("cannot use bundle `{}`", s.bundle.display()))?;
    let extracted_onnx = match &s.extract_onnx {
        Some(out) => {
            linesight_shared::output::refuse_inputs(out, [("the bundle", s.bundle.as_path())])?;
            fs_err::write(out, &b.model).with_context(|| {
                format!(
                    "cannot write the ONNX model of `{}` to `{}`",
                    s.bundle.display(),
                    out.display()
                )
            })?;
            Some(out.display().to_string())
        }
        None => None,
    };
    let signature_check = s.trust.check(&b);
    let m = &b.manifest;
    let mut other = match json(m) {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    other.retain(|k, _| !NAMED.contains(&k.as_str()) && k != "min_runtime_version");
    Ok(InspectReport {
        bundle: s.bundle.display().to_string(),
        bundle_bytes,
        format_version: b.format_version,
        model_id: m.model_id.clone(),
        model_version: m.model_version.clone(),
        precision: m.precision.to_string(),
        labels: m.labels.clone(),
        input: json(&m.input),
        output: json(&m.output),
        preprocess: json(&m.preprocess),
        decision: json(&m.decision),
        parity: json(&m.parity),
        parity_per_class: m
            .v2
            .parity_per_class
            .iter()
            .zip(&m.labels)
            .map(|(c, l)| ClassParityReport {
                label: l.clone(),
                reference: c.reference,
                kept: c.kept,
                recall: c.recall(),
            })
            .collect(),
        provenance: json(&m.provenance),
        min_runtime_version: m.min_runtime_version.clone(),
        other,
        self_test_vectors: m.self_test.len(),
        self_test_tolerance: m.self_test.iter().map(|v| v.tolerance).reduce(f32::max),
        signature: signature_check.signer.clone(),
        signature_check,
        onnx_bytes: b.model.len() as u64,
        onnx_sha256: hex::encode(sha256(&b.model)),
        extracted_onnx,
    })
}

/// `key: value` lines of a JSON object (nested objects inline).
fn fields(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

impl InspectReport {
    /// The text report (`inspect` without `--json`).
    pub fn render(&self) -> String {
        let mut out = format!(
            "bundle       {} ({} bytes, format {})\n\
             model        {} {} ({})\n\
             signature    {}\n\
             onnx         {} bytes, sha256 {}\n\
             input        {}\n\
             output       {}\n\
             preprocess   {}\n\
             decision     {}\n\
             parity       {}\n\
             provenance   {}\n\
             runtime      >= {}\n\
             self-test    {} vectors{}\n\
             labels       {} ({})\n",
            self.bundle,
            self.bundle_bytes,
            self.format_version,
            self.model_id,
            self.model_version,
            self.precision,
            self.signature_check.detail,
            self.onnx_bytes,
            self.onnx_sha256,
            fields(&self.input),
            fields(&self.output),
            fields(&self.preprocess),
            fields(&self.decision),
            fields(&self.parity),
            fields(&self.provenance),
            self.min_runtime_version,
            self.self_test_vectors,
            self.self_test_tolerance
                .map(|t| format!(", tolerance {t:e} (max |logit difference|)"))
                .unwrap_or_default(),
            self.labels.len(),
            self.labels.join(", "),
        );
        if !self.parity_per_class.is_empty() {
            let mut lost: Vec<&ClassParityReport> = self
                .parity_per_class
                .iter()
                .filter(|c| c.kept < c.reference)
                .collect();
            lost.sort_by(|a, b| a.recall.total_cmp(&b.recall));
            let list = lost
                .iter()
                .map(|c| format!("{} {}/{}", c.label, c.kept, c.reference))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "per class    int8 kept f32's top-1 in every class{}\n",
                if lost.is_empty() {
                    String::new()
                } else {
                    format!(" but {}: {list}", lost.len())
                }
            ));
        }
        for e in &self.signature_check.key_errors {
            out.push_str(&format!(
                "signature    warning: a trusted key cannot be used: {e}\n"
            ));
        }
        for (k, v) in &self.other {
            out.push_str(&format!("{k:<12} {}\n", fields(v)));
        }
        if let Some(p) = &self.extracted_onnx {
            out.push_str(&format!("wrote the ONNX model to `{p}`\n"));
        }
        out
    }
}
