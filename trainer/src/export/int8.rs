//! The int8 bundle: an f32 bundle -> calibrated, quantised ONNX ([`super::quantize`]) ->
//! tract's plan checked for slow patterns -> parity against the f32 model on held-out
//! images -> a bundle whose manifest records the parity, or a refusal.
//!
//! The f32 bundle stays the correctness baseline: parity is int8 tract against f32 tract,
//! both run by the edge's own [`Engine`], so the figures are those of what the box runs.

use super::layer_speed::{self, SiteSpeed};
use super::parity_gate::GateVerdict;
use super::quantize::{self, ActStats, PlanSummary, QuantOptions, SiteReport};
use anyhow::{bail, Context, Result};
use linesight_edge::engine::{max_abs_diff, Engine};
use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::{ClassParity, Parity, Precision, SelfTestVector};
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use serde::Serialize;
use std::collections::HashMap;

/// The parity gate and its images.
#[derive(Debug, Clone, Serialize)]
pub struct Int8Options {
    pub quant: QuantOptions,
    /// Refuse the bundle unless the held-out images show at least this top-1 agreement with
    /// the f32 model at `confidence` (the lower confidence bound, not the point estimate:
    /// [`super::parity_gate`]).
    pub min_top1_agreement: f32,
    /// One-sided confidence of the gate's lower bound (0.95: certifying 99 % then takes at
    /// least 268 held-out images, all agreeing).
    pub confidence: f64,
    /// Write the bundle even below `min_top1_agreement` (the figures still go into the
    /// manifest and the report).
    pub allow_parity_drop: bool,
    /// After quantising everything the rules allow, put back in f32 this many layers: the
    /// ones whose int8 error moves the logits most, measured one layer at a time on
    /// `sensitivity_images` calibration images (not the parity images, so the gate stays
    /// an honest held-out figure). 0 skips the measurement.
    pub fallback_layers: usize,
    pub sensitivity_images: usize,
    /// Keep in int8 only the layers that run faster that way in tract on this machine
    /// ([`layer_speed`]), and refuse an int8 model that is still not faster than f32.
    pub choose_by_speed: bool,
    /// A layer pays when its int8 time is below its f32 time by more than this fraction.
    pub speed_margin: f64,
    /// Profiled runs (interleaved f32 / int8) behind each layer's median.
    pub speed_runs: usize,
    /// Write the int8 bundle even when it is not faster than f32 here.
    pub allow_slower: bool,
    /// Tolerance written into each int8 self-test vector. Integer matmuls are exact, but
    /// the f32 parts around them may round differently on another CPU, and one activation
    /// moving across a rounding boundary moves the logits by a quantisation step. Measured
    /// (`scripts/box.sh test same-answers`, docs/box.md): an int8 MobileNetV2 bundle built
    /// on x86 computed its self-test vectors on aarch64 (tract's NEON kernels, Cortex-A72)
    /// 9.3e-2 away from x86's, so 0.05 refused it on the boxes it is made for; 0.25 keeps
    /// 2.7x that margin and still refuses a model that computes something else.
    pub self_test_tolerance: f32,
}

impl Default for Int8Options {
    fn default() -> Self {
        Int8Options {
            quant: QuantOptions::default(),
            min_top1_agreement: 0.99,
            confidence: 0.95,
            allow_parity_drop: false,
            fallback_layers: 0,
            sensitivity_images: 32,
            choose_by_speed: true,
            speed_margin: 0.05,
            speed_runs: 9,
            allow_slower: false,
            self_test_tolerance: 0.25,
        }
    }
}

/// What the int8 export measured.
#[derive(Debug, Clone, Serialize)]
pub struct Int8Report {
    pub calibration_images: usize,
    pub parity_images: usize,
    pub top1_agreement: f32,
    pub mean_logit_cosine: f32,
    pub max_abs_logit_diff: f32,
    /// Per class: label, images the f32 model put there, of those kept by int8, recall.
    pub per_class: Vec<ClassRecall>,
    /// The lowest per-class recall and its label.
    pub worst_class: Option<ClassRecall>,
    pub sites: Vec<SiteReport>,
    pub int8_sites: usize,
    pub f32_onnx_bytes: usize,
    pub int8_onnx_bytes: usize,
    pub plan: PlanSummary,
    /// With `fallback_layers`: every int8 layer's logit error when it alone is put back
    /// in f32, most sensitive first.
    pub sensitivity: Vec<LayerSensitivity>,
    /// f32 vs int8 latency in tract on the exporting machine (not the line box: a hint,
    /// `linesight-edge bench` on the box is the measurement).
    pub host_speed: HostSpeed,
    /// With `choose_by_speed`: each candidate layer's time in f32 and int8 on this machine.
    pub layer_speed: Vec<SiteSpeed>,
    /// The gate's figures: agreement, its lower confidence bound, the images it would need.
    pub gate: GateVerdict,
    /// False when the gate failed and `allow_parity_drop` let the bundle through.
    pub parity_passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassRecall {
    pub label: String,
    pub reference: u32,
    pub kept: u32,
    pub recall: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostSpeed {
    pub runs: usize,
    pub f32_median_ms: f64,
    pub int8_median_ms: f64,
    /// Ratio of the medians: below 1 the int8 model is faster.
    pub int8_over_f32: f64,
}

/// Median latency of both engines on one input, runs interleaved so drift hits both.
fn host_speed(
    f32_engine: &mut Engine,
    int8_engine: &mut Engine,
    input: &[f32],
) -> Result<HostSpeed> {
    const RUNS: usize = 15;
    let mut out = vec![0.0; f32_engine.output_len()];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = std::time::Instant::now();
        f32_engine.infer(input, &mut out)?;
        a.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        int8_engine.infer(input, &mut out)?;
        b.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (fa, fb) = (median(&mut a), median(&mut b));
    Ok(HostSpeed {
        runs: RUNS,
        f32_median_ms: fa,
        int8_median_ms: fb,
        int8_over_f32: fb / fa,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSensitivity {
    pub node: String,
    #[serde(skip)]
    pub node_index: usize,
    /// Mean squared logit error against f32 with this layer back in f32 ...
    pub mse_without: f64,
    /// ... and with every layer in int8.
    pub mse_all_int8: f64,
}

fn mean_sq_err(engine: &mut Engine, probe: &[Vec<f32>], reference: &[Vec<f32>]) -> Result<f64> {
    let mut out = vec![0.0; engine.output_len()];
    let mut sum = 0f64;
    let mut count = 0usize;
    for (x, r) in probe.iter().zip(reference) {
        engine.infer(x, &mut out)?;
        sum += out
            .iter()
            .zip(r)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        count += out.len();
    }
    Ok(sum / count.max(1) as f64)
}

/// Each int8 layer's effect: the logit MSE against f32 when only that layer is put back
/// in f32; sorted by that error, lowest (most sensitive layer) first.
fn layer_sensitivity(
    f32_bundle: &Bundle,
    model: &tract_onnx::pb::ModelProto,
    sites: &[quantize::Site],
    stats: &[ActStats],
    q: &QuantOptions,
    probe: &[Vec<f32>],
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Vec<LayerSensitivity>> {
    let shape = f32_bundle.manifest.preprocess.input_shape();
    let mut f32_engine = Engine::from_bundle(f32_bundle)?;
    let mut reference = Vec::new();
    for x in probe {
        let mut out = vec![0.0; f32_engine.output_len()];
        f32_engine.infer(x, &mut out)?;
        reference.push(out);
    }
    let none = HashMap::new();
    let (all, reports) = quantize::rewrite(model, sites, stats, q, &none)?;
    let mse_all = mean_sq_err(&mut Engine::new(&all, &shape)?, probe, &reference)?;
    let int8_nodes: Vec<(usize, String)> = sites
        .iter()
        .zip(&reports)
        .filter(|(_, r)| r.decision == "int8")
        .map(|(s, r)| (s.node, r.node.clone()))
        .collect();
    let mut out = Vec::new();
    for (k, (node_index, node)) in int8_nodes.iter().enumerate() {
        progress("sensitivity", k + 1, int8_nodes.len());
        let keep = HashMap::from([(*node_index, String::new())]);
        let (onnx, _) = quantize::rewrite(model, sites, stats, q, &keep)?;
        let mse = mean_sq_err(&mut Engine::new(&onnx, &shape)?, probe, &reference)?;
        out.push(LayerSensitivity {
            node: node.clone(),
            node_index: *node_index,
            mse_without: mse,
            mse_all_int8: mse_all,
        });
    }
    out.sort_by(|a, b| a.mse_without.total_cmp(&b.mse_without));
    Ok(out)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    (dot / (na * nb)) as f32
}

/// Quantises `f32_bundle`. `calibration` images set the activation scales; `parity`
/// images (held out from calibration) measure agreement with the f32 model. Fails when the
/// plan shows a slow pattern, or when agreement is below the gate and
/// `allow_parity_drop` is off (the error carries the figures).
pub fn export_int8(
    f32_bundle: &Bundle,
    calibration: &[RgbImage],
    parity: &[RgbImage],
    opts: &Int8Options,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<(Bundle, Int8Report)> {
    if calibration.is_empty() {
        bail!("int8 export needs calibration images (training photos); none could be read");
    }
    if parity.is_empty() {
        bail!("int8 export needs held-out parity images; none could be read");
    }
    let m = &f32_bundle.manifest;
    if m.precision != Precision::F32 {
        bail!(
            "the bundle to quantise must be f32, this one is {}",
            m.precision
        );
    }
    let spec = m.preprocess;
    let shape = spec.input_shape();
    let mut pre = Preprocessor::new(spec);
    let tensor = |pre: &mut Preprocessor, img: &RgbImage| -> Result<Vec<f32>> {
        let mut input = vec![0.0; pre.tensor_len()];
        let crop = pre.crop_rgb(&img.pixels, img.width, img.height)?.to_vec();
        pre.normalize_crop(&crop, &mut input)?;
        Ok(input)
    };

    let model_proto =
        <tract_onnx::pb::ModelProto as prost::Message>::decode(f32_bundle.model.as_slice())
            .context("the f32 bundle's ONNX does not decode")?;
    let sites = quantize::find_sites(&model_proto)?;
    if sites.is_empty() {
        bail!("the model has no matmul or convolution with a constant weight to quantise");
    }
    let total = calibration.len();
    let mut it = calibration.iter().enumerate().map(|(i, img)| {
        progress("calibrate", i + 1, total);
        tensor(&mut pre, img)
    });
    let stats: Vec<ActStats> =
        quantize::calibrate(&f32_bundle.model, &model_proto, &shape, &sites, &mut it)?;
    let mut keep: HashMap<usize, String> = HashMap::new();
    let mut sensitivity = Vec::new();
    if opts.fallback_layers > 0 {
        let probe: Vec<Vec<f32>> = calibration
            .iter()
            .take(opts.sensitivity_images.max(1))
            .map(|img| tensor(&mut pre, img))
            .collect::<Result<_>>()?;
        sensitivity = layer_sensitivity(
            f32_bundle,
            &model_proto,
            &sites,
            &stats,
            &opts.quant,
            &probe,
            progress,
        )?;
        keep.extend(sensitivity.iter().take(opts.fallback_layers).map(|s| {
            (
                s.node_index,
                "most sensitive layer: kept f32 for agreement".to_string(),
            )
        }));
    }
    let (mut int8_onnx, mut site_reports) =
        quantize::rewrite(&model_proto, &sites, &stats, &opts.quant, &keep)?;
    let mut layer_speed = Vec::new();
    if opts.choose_by_speed {
        let probe = tensor(&mut pre, &calibration[0])?;
        let int8_nodes: Vec<usize> = sites
            .iter()
            .zip(&site_reports)
            .filter(|(_, r)| r.decision == "int8")
            .map(|(s, _)| s.node)
            .collect();
        let mut f32_engine =
            Engine::from_bundle(f32_bundle).context("tract cannot load the f32 bundle")?;
        let mut all_int8 =
            Engine::new(&int8_onnx, &shape).context("tract cannot load the quantised ONNX")?;
        progress("layer speed", 0, 1);
        layer_speed = layer_speed::measure(
            &model_proto,
            &int8_nodes,
            &mut f32_engine,
            &mut all_int8,
            &probe,
            opts.speed_runs,
            opts.speed_margin,
        )?;
        progress("layer speed", 1, 1);
        let slow: Vec<(usize, &SiteSpeed)> = int8_nodes
            .iter()
            .copied()
            .zip(&layer_speed)
            .filter(|(_, s)| !s.pays)
            .collect();
        if !slow.is_empty() {
            keep.extend(slow.into_iter().map(|(i, s)| {
                (
                    i,
                    format!(
                        "slower in int8 on this machine ({:.3} ms against {:.3} ms in f32)",
                        s.int8_ms, s.f32_ms
                    ),
                )
            }));
            (int8_onnx, site_reports) =
                quantize::rewrite(&model_proto, &sites, &stats, &opts.quant, &keep)?;
        }
        if !site_reports.iter().any(|r| r.decision == "int8") {
            bail!(
                "int8 export refused: no layer runs faster in int8 than in f32 in tract on this machine (per-layer times: {}); keep the f32 bundle",
                layer_speed
                    .iter()
                    .map(|s| format!("{} {:.3} vs {:.3} ms", s.node, s.int8_ms, s.f32_ms))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let plan = quantize::plan_check(&int8_onnx, &shape)?;
    if !plan.slow_patterns.is_empty() {
        bail!(
            "int8 export refused: tract's optimized plan has patterns that make int8 slower than f32:\n  {}",
            plan.slow_patterns.join("\n  ")
        );
    }

    let mut f32_engine =
        Engine::from_bundle(f32_bundle).context("tract cannot load the f32 bundle")?;
    let mut int8_engine =
        Engine::new(&int8_onnx, &shape).context("tract cannot load the quantised ONNX")?;
    let classes = m.labels.len();
    if int8_engine.output_len() != classes {
        bail!(
            "the quantised model gives {} logits for {classes} labels",
            int8_engine.output_len()
        );
    }
    let mut a = vec![0.0; classes];
    let mut b = vec![0.0; classes];
    let mut agree = 0usize;
    let mut cos_sum = 0f64;
    let mut worst = 0f32;
    let mut per_class = vec![ClassParity::default(); classes];
    for (i, img) in parity.iter().enumerate() {
        progress("parity", i + 1, parity.len());
        let input = tensor(&mut pre, img)?;
        f32_engine.infer(&input, &mut a)?;
        int8_engine.infer(&input, &mut b)?;
        let (ta, tb) = (argmax(&a), argmax(&b));
        per_class[ta].reference += 1;
        if ta == tb {
            agree += 1;
            per_class[ta].kept += 1;
        }
        cos_sum += cosine(&a, &b) as f64;
        worst = worst.max(max_abs_diff(&a, &b));
    }
    let n = parity.len();
    let top1 = agree as f32 / n as f32;
    let mean_cos = (cos_sum / n as f64) as f32;
    let per_class_report: Vec<ClassRecall> = per_class
        .iter()
        .zip(&m.labels)
        .map(|(c, l)| ClassRecall {
            label: l.clone(),
            reference: c.reference,
            kept: c.kept,
            recall: c.recall(),
        })
        .collect();
    let worst_class = per_class_report
        .iter()
        .filter(|c| c.reference > 0)
        .min_by(|x, y| x.recall.total_cmp(&y.recall))
        .cloned();
    let gate = GateVerdict::judge(
        agree,
        n,
        f64::from(opts.min_top1_agreement),
        opts.confidence,
    );
    let passed = gate.passed;
    if !passed && !opts.allow_parity_drop {
        bail!(
            "int8 export refused: {}; mean logit cosine {:.4}{}; keep the f32 bundle, give more held-out images (--parity), or pass --allow-parity-drop to ship it anyway",
            gate.explain(),
            mean_cos,
            worst_class
                .as_ref()
                .map(|c| format!(", worst class `{}` recall {:.1} %", c.label, c.recall * 100.0))
                .unwrap_or_default()
        );
    }

    let speed = host_speed(
        &mut f32_engine,
        &mut int8_engine,
        &tensor(&mut pre, &parity[0])?,
    )?;
    if speed.int8_over_f32 >= 1.0 {
        if opts.choose_by_speed && !opts.allow_slower {
            bail!(
                "int8 export refused: with only the layers that pay in int8, the int8 model still takes {:.2} ms against {:.2} ms in f32 in tract on this machine (median of {} interleaved runs); keep the f32 bundle, or pass --allow-slower",
                speed.int8_median_ms,
                speed.f32_median_ms,
                speed.runs
            );
        }
        tracing::warn!(
            f32_ms = speed.f32_median_ms,
            int8_ms = speed.int8_median_ms,
            "the int8 model is not faster than f32 in tract on this machine; measure on the target box (`linesight-edge bench`) before shipping it"
        );
    }
    if !linesight_edge::build_info::BuildInfo::current().fit_for_benchmarks() {
        tracing::warn!(
            "the int8 layer choice and speed check ran in a build with debug assertions: its times are not those of an optimised build (use a release build of linesight-train)"
        );
    }

    // Self-test vectors: the f32 bundle's crops with the int8 model's logits.
    let mut self_test = Vec::new();
    let mut logits = vec![0.0; classes];
    let mut input = vec![0.0; pre.tensor_len()];
    for v in &m.self_test {
        pre.normalize_crop(&v.rgb, &mut input)?;
        int8_engine.infer(&input, &mut logits)?;
        self_test.push(SelfTestVector {
            rgb: v.rgb.clone(),
            expected_logits: logits.clone(),
            tolerance: opts.self_test_tolerance,
        });
    }
    let mut manifest = m.clone();
    manifest.precision = Precision::Int8;
    manifest.self_test = self_test;
    manifest.parity = Parity {
        images: n as u32,
        max_abs_logit_diff: worst,
        top1_agreement: top1,
        mean_logit_cosine: mean_cos,
    };
    manifest.v2.parity_per_class = per_class;
    manifest.model_version = format!("{}-int8", m.model_version);
    let report = Int8Report {
        calibration_images: calibration.len(),
        parity_images: n,
        top1_agreement: top1,
        mean_logit_cosine: mean_cos,
        max_abs_logit_diff: worst,
        per_class: per_class_report,
        worst_class,
        int8_sites: site_reports.iter().filter(|s| s.decision == "int8").count(),
        sites: site_reports,
        f32_onnx_bytes: f32_bundle.model.len(),
        int8_onnx_bytes: int8_onnx.len(),
        plan,
        sensitivity,
        host_speed: speed,
        layer_speed,
        gate,
        parity_passed: passed,
    };
    Ok((Bundle::new(manifest, int8_onnx), report))
}
