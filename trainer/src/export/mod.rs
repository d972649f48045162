//! Export: backbone + head -> ONNX -> read back by tract and compared with candle on real
//! images -> bundle with manifest and self-test vectors.
//!
//! Nothing is written unless tract's logits match candle's within
//! [`ExportOptions::max_abs_logit_diff`] on every check image.

pub mod int8;
pub mod layer_speed;
pub mod onnx;
pub mod parity_gate;
pub mod quantize;

use crate::backbone::ImageEncoder;
use crate::head::CosineHead;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use linesight_edge::engine::{max_abs_diff, Engine};
use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::{
    DecisionRule, Manifest, Parity, Precision, Provenance, SelfTestVector, TensorSpec,
};
use linesight_shared::preprocess::{Preprocessor, RgbImage};

pub const INPUT_NAME: &str = "image";
pub const OUTPUT_NAME: &str = "logits";
/// Oldest runtime that reads what this trainer writes.
pub const MIN_RUNTIME_VERSION: &str = "0.1.0";

/// The head on top of the backbone.
pub enum Head<'a> {
    /// Scaled cosine against class rows (prototypes or trained).
    Cosine(&'a CosineHead),
    /// A plain linear layer (MobileNetV2's ImageNet classifier, for checks).
    Linear {
        weight: &'a Tensor,
        bias: &'a Tensor,
    },
}

pub struct ExportOptions {
    pub model_id: String,
    pub model_version: String,
    pub labels: Vec<String>,
    pub decision: DecisionRule,
    pub provenance: Provenance,
    /// Largest accepted |candle - tract| logit difference.
    pub max_abs_logit_diff: f32,
    /// How many of the check images become self-test vectors.
    pub self_test_vectors: usize,
    /// Tolerance written into each self-test vector.
    pub self_test_tolerance: f32,
}

impl ExportOptions {
    pub fn new(model_id: &str, labels: Vec<String>, provenance: Provenance) -> Self {
        ExportOptions {
            model_id: model_id.to_string(),
            model_version: default_version(),
            labels,
            decision: DecisionRule::default(),
            provenance,
            max_abs_logit_diff: 1e-4,
            self_test_vectors: 2,
            self_test_tolerance: 1e-3,
        }
    }
}

/// What the export measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub check_images: usize,
    pub max_abs_logit_diff: f32,
    pub top1_agreement: f32,
    pub onnx_bytes: usize,
    pub onnx_nodes: usize,
}

/// Writes the ONNX graph for backbone + head; returns the bytes and the node count.
pub fn onnx_graph(
    encoder: &dyn ImageEncoder,
    head: &Head,
    classes: usize,
) -> Result<(Vec<u8>, usize)> {
    let spec = encoder.preprocess();
    let shape: Vec<i64> = spec.input_shape().iter().map(|&d| d as i64).collect();
    let mut g = onnx::GraphBuilder::new();
    let input = g.input(INPUT_NAME, &shape);
    let emb = encoder.export_onnx(&mut g, &input)?;
    let logits = match head {
        Head::Cosine(h) => h.export_onnx(&mut g, &emb)?,
        Head::Linear { weight, bias } => {
            crate::head::export_linear(&mut g, &emb, weight, bias, "classifier")?
        }
    };
    g.node_named("Identity", &[&logits], vec![], OUTPUT_NAME);
    g.output(OUTPUT_NAME, &[1, classes as i64]);
    let nodes = g.len();
    Ok((
        g.finish(&format!(
            "linesight {} backbone, {} classes",
            encoder.name(),
            classes
        ))?,
        nodes,
    ))
}

/// candle logits of backbone + head for one normalized NCHW input.
pub fn candle_logits(
    encoder: &dyn ImageEncoder,
    head: &Head,
    input: &[f32],
    device: &Device,
) -> Result<Vec<f32>> {
    let spec = encoder.preprocess();
    let x = Tensor::from_slice(input, spec.input_shape().to_vec(), device)?;
    let e = encoder.embed(&x)?;
    let logits = match head {
        Head::Cosine(h) => h.forward(&e)?,
        Head::Linear { weight, bias } => e.matmul(&weight.t()?)?.broadcast_add(bias)?,
    };
    Ok(logits.flatten_all()?.to_vec1::<f32>()?)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// Builds the f32 bundle. `check_images` are real photos (at least one): each is run
/// through candle and through tract; any logit difference above the limit fails the export.
pub fn export_f32(
    encoder: &dyn ImageEncoder,
    head: &Head,
    check_images: &[RgbImage],
    opts: &ExportOptions,
    device: &Device,
) -> Result<(Bundle, ExportReport)> {
    if check_images.is_empty() {
        bail!("export needs at least one real image to compare candle and tract on");
    }
    let classes = opts.labels.len();
    let spec = encoder.preprocess();
    let (onnx_bytes, onnx_nodes) = onnx_graph(encoder, head, classes)?;
    let mut engine = Engine::new(&onnx_bytes, &spec.input_shape())
        .context("tract cannot load the exported ONNX")?;
    if engine.output_len() != classes {
        bail!(
            "exported model gives {} logits for {} labels",
            engine.output_len(),
            classes
        );
    }
    let mut pre = Preprocessor::new(spec);
    let mut input = vec![0.0; pre.tensor_len()];
    let mut tract_logits = vec![0.0; classes];
    let mut worst = 0f32;
    let mut agree = 0usize;
    let mut self_test = Vec::new();
    for (i, img) in check_images.iter().enumerate() {
        let crop = pre.crop_rgb(&img.pixels, img.width, img.height)?.to_vec();
        pre.normalize_crop(&crop, &mut input)?;
        let reference = candle_logits(encoder, head, &input, device)?;
        if let Some(v) = reference.iter().find(|v| !v.is_finite()) {
            bail!(
                "export refused: the model computes a non-finite logit ({v}) on check image {i}; \
                 its weights hold a NaN or an infinity (train again)"
            );
        }
        engine.infer(&input, &mut tract_logits)?;
        let d = max_abs_diff(&reference, &tract_logits);
        worst = worst.max(d);
        if argmax(&reference) == argmax(&tract_logits) {
            agree += 1;
        }
        if d > opts.max_abs_logit_diff {
            bail!(
                "export refused: on check image {i} tract's logits differ from candle's by {d:.3e} (limit {:.1e}); the ONNX graph does not compute what the trained model computes",
                opts.max_abs_logit_diff
            );
        }
        if self_test.len() < opts.self_test_vectors {
            self_test.push(SelfTestVector {
                rgb: crop,
                expected_logits: tract_logits.clone(),
                tolerance: opts.self_test_tolerance,
            });
        }
    }
    let n = check_images.len();
    let manifest = Manifest {
        model_id: opts.model_id.clone(),
        model_version: opts.model_version.clone(),
        labels: opts.labels.clone(),
        preprocess: spec,
        input: TensorSpec {
            name: INPUT_NAME.into(),
            shape: spec.input_shape().iter().map(|&d| d as u64).collect(),
        },
        output: TensorSpec {
            name: OUTPUT_NAME.into(),
            shape: vec![1, classes as u64],
        },
        precision: Precision::F32,
        model_sha256: [0; 32],
        decision: opts.decision.clone(),
        self_test,
        parity: Parity {
            images: n as u32,
            max_abs_logit_diff: worst,
            top1_agreement: agree as f32 / n as f32,
            mean_logit_cosine: 1.0,
        },
        provenance: opts.provenance.clone(),
        min_runtime_version: MIN_RUNTIME_VERSION.into(),
        v2: Default::default(),
    };
    let report = ExportReport {
        check_images: n,
        max_abs_logit_diff: worst,
        top1_agreement: agree as f32 / n as f32,
        onnx_bytes: onnx_bytes.len(),
        onnx_nodes,
    };
    Ok((Bundle::new(manifest, onnx_bytes), report))
}

/// `YYYYMMDD.HHMMSS` (UTC) of now, the default model version.
pub fn default_version() -> String {
    let secs = unix_now();
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}.{:02}{:02}{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm (a date crate
/// would be a dependency for one function).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Signs `bundle` with `key` (when given) and writes it to `out`; returns the file's size
/// and the signing key's fingerprint (`unsigned` without a key).
pub fn sign_and_write(
    bundle: &mut Bundle,
    key: Option<&linesight_shared::signature::SecretKey>,
    out: &std::path::Path,
) -> Result<(u64, String)> {
    if let Some(k) = key {
        k.sign_bundle(bundle);
    }
    bundle.write(out)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let signature = key.map_or_else(|| "unsigned".to_string(), |k| k.public().fingerprint());
    Ok((bytes, signature))
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
