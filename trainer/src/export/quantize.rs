//! Static post-training int8 quantisation of an exported f32 ONNX graph, in the one
//! encoding tract 0.23.9 runs fast (DESIGN.md, "export / bundle"):
//!
//! - weights: symmetric int8, per output channel, stored as `INT8` initializers;
//! - activations: int8, one scale per tensor from the |values| seen on calibration images
//!   ([`ActStats::max_abs`]), quantised by elementwise arithmetic tract fuses (or
//!   `QuantizeLinear` with a zero point of 0, [`QuantOptions::quantize_linear_op`]);
//!   symmetric (`x / s` in -127..=127) for signed activations; for the input of a 1x1 /
//!   unpadded convolution that a `Relu` or `Clip(0, ..)` makes non-negative, `x / s - 127`
//!   with `s = max / 254`, so `[0, max]` spans all 255 steps instead of half of them, and
//!   the `127 * sum(w)` this takes from every output goes back into the f32 bias
//!   ([`QuantOptions::unsigned_relu`]);
//! - `MatMulInteger` / `ConvInteger` WITHOUT zero-point inputs (a zero point makes tract
//!   add correction sums that it recomputes per run), then `Cast` to f32 and one `Mul` by
//!   `scale_x * scale_w[channel]` (+ the f32 bias for convolutions).
//!
//! What is not faster in int8 stays f32 (measured, docs/benchmarks.md "int8"):
//! depthwise convolutions, matmuls of activations by activations (attention), and
//! single-row matmuls (the projection and the classifier head: memory-bound GEMVs whose
//! precision is what the logits are made of).
//!
//! On x86-64 with AVX-512 VNNI the edge runtime recognises each int8 1x1 convolution
//! written here (quantise chain, `ConvInteger`, cast, rescale, bias, ReLU6) and runs it as
//! one op of its own (`linesight_edge::kernels::pointwise_i8`), bit for bit what tract's
//! plan computes; a change of this encoding (`quantize_linear_op`, zero points) leaves those
//! layers to tract's slower int8 plan, which [`super::layer_speed`] then measures as such.
//!
//! The rewrite works on the ONNX protobuf alone, so every backbone the exporter writes is
//! quantised by the same code; [`plan_check`] then looks at tract's optimized plan for the
//! known slow patterns.

use anyhow::{bail, Context, Result};
use prost::Message;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto,
    TensorProto,
};
use tract_onnx::prelude::*;

/// What to quantise.
#[derive(Debug, Clone, Serialize)]
pub struct QuantOptions {
    /// Quantise `MatMul` by a constant weight.
    pub matmul: bool,
    /// Quantise ungrouped `Conv` (group 1). Depthwise convolutions always stay f32.
    pub conv: bool,
    /// Quantise matmuls of two activations (attention's Q K^T; never a softmax output,
    /// whose small probabilities int8 would flatten). Off by default: measured slower in
    /// tract 0.23.9 (ViT-B/16: the 12 Q K^T matmuls took ~30 ms in int8 against ~9 ms
    /// saved in f32, both operands being packed on every run; docs/benchmarks.md).
    pub activation_matmul: bool,
    /// One weight scale per output channel (else one per tensor).
    pub per_channel: bool,
    /// A `MatMul` whose activation has fewer rows than this stays f32 (GEMV).
    pub min_rows: usize,
    /// Keep the first site (it reads the image) and the last one (it makes the embedding)
    /// in f32: the two layers where int8 error costs the most agreement.
    pub keep_first_last: bool,
    /// Quantise activations with ONNX `QuantizeLinear` (one op other runtimes recognise)
    /// instead of Mul, round-by-magic-number, Clip and Cast, which tract fuses and
    /// vectorises: its QuantizeLinear rounds one value at a time and cost 29 % of an
    /// int8 ViT-B/16 run (docs/benchmarks.md, "int8").
    pub quantize_linear_op: bool,
    /// Quantise the non-negative input of a convolution without padding (a `Relu` or
    /// `Clip` with a minimum >= 0 makes it; MobileNetV2's projection 1x1 convolutions read
    /// one) onto all 255 int8 steps: `round(x / s) - 127` with `s = max / 254`, twice the
    /// resolution of the symmetric `x / s` with `s = max / 127`, whose negative half such
    /// an input never uses. The offset costs nothing at run time: it is folded into the
    /// rounding constant of the quantise chain and, as `127 * scale * sum(w)`, into the
    /// conv's bias (padding is excluded because a padded zero would then stand for `127 *
    /// s`, not 0). Off with `quantize_linear_op`.
    pub unsigned_relu: bool,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            matmul: true,
            conv: true,
            activation_matmul: false,
            per_channel: true,
            min_rows: 2,
            keep_first_last: true,
            quantize_linear_op: false,
            unsigned_relu: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    MatMul,
    Conv,
    /// A matmul of two activations (attention's Q K^T): both sides quantised.
    ActMatMul,
}

/// A node with a constant weight that could run in int8.
#[derive(Debug, Clone)]
pub struct Site {
    pub node: usize,
    pub kind: SiteKind,
    pub activation: String,
    /// The weight initializer, or for [`SiteKind::ActMatMul`] the second activation.
    pub weight: String,
}

/// Activation statistics of one site over the calibration images.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ActStats {
    /// The range the scale is set from: the mean over calibration images of each image's
    /// largest |value| (TF-Lite's moving-average min/max). The overall maximum let rare
    /// outliers set the step: calibrating on 582 instead of 128 cub26 images then dropped
    /// MobileNetV2's agreement from 97.9 % to 94.3 %.
    pub max_abs: f32,
    /// The largest |value| seen on any calibration image.
    pub peak_abs: f32,
    /// [`SiteKind::ActMatMul`]: `max_abs` of the second activation.
    pub max_abs_b: f32,
    /// Rows of the matmul (elements / inner dimension) or spatial positions of the conv.
    pub rows: usize,
}

/// What became of one site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    pub node: String,
    pub op: SiteKind,
    pub weight: String,
    pub weight_shape: Vec<i64>,
    /// `int8`, or `f32: <why>`.
    pub decision: String,
    pub activation_max_abs: f32,
    /// int8 sites: the activation is non-negative and spans all 255 steps
    /// ([`QuantOptions::unsigned_relu`]).
    pub unsigned_activation: bool,
}

fn initializer_map(m: &ModelProto) -> Result<HashMap<String, &TensorProto>> {
    let g = m.graph.as_ref().context("ONNX model has no graph")?;
    Ok(g.initializer.iter().map(|t| (t.name.clone(), t)).collect())
}

fn attr_int(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// Tensors that cannot be negative: the outputs of `Relu`, and of `Clip` whose minimum (the
/// second input as an initializer, or the `min` attribute of opset < 11) is >= 0.
fn non_negative_tensors(model: &ModelProto) -> Result<HashSet<String>> {
    let inits = initializer_map(model)?;
    let g = model.graph.as_ref().context("ONNX model has no graph")?;
    let mut out = HashSet::new();
    for n in &g.node {
        let non_negative = match n.op_type.as_str() {
            "Relu" => true,
            "Clip" => match n.input.get(1).filter(|m| !m.is_empty()) {
                Some(m) => inits
                    .get(m)
                    .and_then(|t| f32_data(t).ok())
                    .is_some_and(|v| v.len() == 1 && v[0] >= 0.0),
                None => n
                    .attribute
                    .iter()
                    .find(|a| a.name == "min")
                    .is_some_and(|a| a.f >= 0.0),
            },
            _ => false,
        };
        if non_negative {
            out.extend(n.output.iter().cloned());
        }
    }
    Ok(out)
}

/// True when a `Conv` pads nothing (no `pads`, all zero, or `auto_pad` VALID / NOTSET).
fn conv_unpadded(n: &NodeProto) -> bool {
    let pads_zero = n
        .attribute
        .iter()
        .find(|a| a.name == "pads")
        .is_none_or(|a| a.ints.iter().all(|&p| p == 0));
    let auto_pad_none = n
        .attribute
        .iter()
        .find(|a| a.name == "auto_pad")
        .is_none_or(|a| matches!(a.s.as_slice(), b"NOTSET" | b"VALID" | b""));
    pads_zero && auto_pad_none
}

/// Reads an f32 initializer (raw little-endian bytes or `float_data`).
fn f32_data(t: &TensorProto) -> Result<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        bail!("initializer `{}` is not f32", t.name);
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            bail!("initializer `{}` has a truncated raw_data", t.name);
        }
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    } else {
        Ok(t.float_data.clone())
    }
}

/// The nodes with a constant weight: `MatMul(x, W)` with W a 2-D initializer, and
/// `Conv(x, W[, b])` with W an initializer (any group: the decision comes later).
pub fn find_sites(model: &ModelProto) -> Result<Vec<Site>> {
    let inits = initializer_map(model)?;
    let g = model.graph.as_ref().context("ONNX model has no graph")?;
    let mut sites = Vec::new();
    let producer: HashMap<&str, &str> = g
        .node
        .iter()
        .flat_map(|n| {
            n.output
                .iter()
                .map(move |o| (o.as_str(), n.op_type.as_str()))
        })
        .collect();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type == "MatMul"
            && n.input.len() == 2
            && n.input.iter().all(|x| !inits.contains_key(x))
            && n.input
                .iter()
                .all(|x| producer.get(x.as_str()) != Some(&"Softmax"))
        {
            sites.push(Site {
                node: i,
                kind: SiteKind::ActMatMul,
                activation: n.input[0].clone(),
                weight: n.input[1].clone(),
            });
            continue;
        }
        let kind = match n.op_type.as_str() {
            "MatMul" => SiteKind::MatMul,
            "Conv" => SiteKind::Conv,
            _ => continue,
        };
        if n.input.len() < 2 || inits.contains_key(&n.input[0]) {
            continue;
        }
        let Some(w) = inits.get(&n.input[1]) else {
            continue;
        };
        let rank_ok = match kind {
            SiteKind::MatMul => w.dims.len() == 2,
            SiteKind::Conv => w.dims.len() == 4,
            SiteKind::ActMatMul => false,
        };
        if rank_ok && w.data_type == DataType::Float as i32 {
            sites.push(Site {
                node: i,
                kind,
                activation: n.input[0].clone(),
                weight: n.input[1].clone(),
            });
        }
    }
    Ok(sites)
}

/// Runs the f32 model (`onnx`, decoded as `model`) on every calibration input with the
/// sites' activations as extra outputs and returns their statistics (same order as
/// `sites`).
pub fn calibrate(
    onnx: &[u8],
    model: &ModelProto,
    input_shape: &[usize],
    sites: &[Site],
    inputs: &mut dyn Iterator<Item = Result<Vec<f32>>>,
) -> Result<Vec<ActStats>> {
    let inits = initializer_map(model)?;
    // Distinct activation tensors: several sites may read the same one.
    let mut names: Vec<String> = Vec::new();
    for s in sites {
        if !names.contains(&s.activation) {
            names.push(s.activation.clone());
        }
        if s.kind == SiteKind::ActMatMul && !names.contains(&s.weight) {
            names.push(s.weight.clone());
        }
    }
    let mut m = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .context("tract cannot read the f32 ONNX")?
        .with_input_fact(0, f32::fact(input_shape).into())?;
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    m.select_outputs_by_name(&refs)
        .context("cannot observe the activations to calibrate")?;
    let plan = m.into_optimized()?.into_runnable()?;
    let mut max_abs = vec![0f32; names.len()];
    let mut sum_max = vec![0f64; names.len()];
    let mut len = vec![0usize; names.len()];
    let mut count = 0usize;
    for input in inputs {
        let input = input?;
        let t = Tensor::from_shape(input_shape, &input)?;
        let out = plan.run(tvec!(t.into_tvalue()))?;
        for (k, o) in out.iter().enumerate() {
            let v = o.try_as_plain_ram()?.as_slice::<f32>()?;
            len[k] = v.len();
            let m = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
            if !m.is_finite() {
                bail!(
                    "activation `{}` is not finite on calibration image {count}",
                    names[k]
                );
            }
            max_abs[k] = max_abs[k].max(m);
            sum_max[k] += m as f64;
        }
        count += 1;
    }
    if count == 0 {
        bail!("no calibration image could be used");
    }
    sites
        .iter()
        .map(|s| {
            let k = names
                .iter()
                .position(|n| *n == s.activation)
                .expect("listed");
            let mean_max = |name: &str| {
                let k = names.iter().position(|n| n == name).expect("listed");
                (sum_max[k] / count as f64) as f32
            };
            if s.kind == SiteKind::ActMatMul {
                return Ok(ActStats {
                    max_abs: mean_max(&s.activation),
                    peak_abs: max_abs[k],
                    max_abs_b: mean_max(&s.weight),
                    rows: len[k],
                });
            }
            let w = inits[&s.weight];
            let inner = match s.kind {
                // x[.., K] @ W[K, N]
                SiteKind::MatMul => w.dims[0] as usize,
                // x[1, Cin, H, W]: rows are the spatial positions (before any stride)
                SiteKind::ActMatMul => unreachable!("handled above"),
                SiteKind::Conv => {
                    (w.dims[1] as usize)
                        * attr_int(&model.graph.as_ref().expect("graph").node[s.node], "group")
                            .unwrap_or(1) as usize
                }
            };
            Ok(ActStats {
                max_abs: (sum_max[k] / count as f64) as f32,
                peak_abs: max_abs[k],
                max_abs_b: 0.0,
                rows: len[k] / inner.max(1),
            })
        })
        .collect()
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: name.to_string(),
        op_type: op.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn f32_init(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i8_init(name: &str, dims: &[i64], data: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int8 as i32,
        raw_data: data.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    }
}

/// Symmetric int8 weights: `channels` scales along `axis` (0 for conv `[Co, ..]`, 1 for
/// matmul `[K, N]`), each `max|w| / 127` over its channel.
fn quantize_weight(w: &[f32], dims: &[i64], axis: usize, per_channel: bool) -> (Vec<i8>, Vec<f32>) {
    let channels = dims[axis] as usize;
    // The index of element `i` along `axis`.
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let channel_of = |i: usize| (i / inner) % channels;
    let mut max = vec![0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = channel_of(i);
        max[c] = max[c].max(v.abs());
    }
    if !per_channel {
        let m = max.iter().fold(0f32, |a, &b| a.max(b));
        max.iter_mut().for_each(|v| *v = m);
    }
    let scales: Vec<f32> = max
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Rewrites the f32 model: every site that passes the rules runs in int8. Returns the new
/// ONNX bytes and one report per site.
///
/// `keep_f32` lists sites (by node index) that stay f32 whatever the rules say, each with
/// the reason recorded in its report (the sensitivity fallback and the speed choice of
/// [`super::int8`]).
pub fn rewrite(
    f32_model: &ModelProto,
    sites: &[Site],
    stats: &[ActStats],
    opts: &QuantOptions,
    keep_f32: &HashMap<usize, String>,
) -> Result<(Vec<u8>, Vec<SiteReport>)> {
    let inits = initializer_map(f32_model)?;
    let non_negative = non_negative_tensors(f32_model)?;
    let mut model = f32_model.clone();
    let graph = model.graph.as_mut().context("ONNX model has no graph")?;
    let old_nodes = std::mem::take(&mut graph.node);
    let by_node: HashMap<usize, (&Site, &ActStats)> = sites
        .iter()
        .zip(stats)
        .map(|(s, a)| (s.node, (s, a)))
        .collect();
    let mut reports = Vec::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    // One quantisation per activation tensor and offset, shared by the sites that read it:
    // the int8 tensor's name -> its scale.
    let mut quantized: HashMap<String, f32> = HashMap::new();
    // The first and last sites that would run in int8 (by position in the graph).
    let eligible: Vec<usize> = sites
        .iter()
        .zip(stats)
        .filter(|(s, st)| {
            let n = &old_nodes[s.node];
            match s.kind {
                SiteKind::MatMul => opts.matmul && st.rows >= opts.min_rows,
                SiteKind::Conv => opts.conv && attr_int(n, "group").unwrap_or(1) == 1,
                SiteKind::ActMatMul => false,
            }
        })
        .map(|(s, _)| s.node)
        .collect();
    let ends = [eligible.first().copied(), eligible.last().copied()];
    if opts.quantize_linear_op {
        new_inits.push(i8_init(ZERO_POINT, &[], &[0]));
    }
    for (i, n) in old_nodes.into_iter().enumerate() {
        let Some((site, st)) = by_node.get(&i) else {
            graph.node.push(n);
            continue;
        };
        if site.kind == SiteKind::ActMatMul {
            let skip = if !opts.activation_matmul {
                Some("activation matmul quantisation off")
            } else if st.max_abs == 0.0 || st.max_abs_b == 0.0 {
                Some("an operand is all zeros on calibration")
            } else {
                keep_f32.get(&i).map(String::as_str)
            };
            reports.push(SiteReport {
                node: n.name.clone(),
                op: site.kind,
                weight: site.weight.clone(),
                weight_shape: vec![],
                decision: skip.map_or("int8".into(), |r| format!("f32: {r}")),
                activation_max_abs: st.max_abs,
                unsigned_activation: false,
            });
            if skip.is_some() {
                graph.node.push(n);
                continue;
            }
            let out = n.output.first().context("node without output")?.clone();
            let tag = format!("q{i}");
            let (aq, sa) = quantize_activation(
                &mut graph.node,
                &mut new_inits,
                &mut quantized,
                (&site.activation, st.max_abs, 0),
                &tag,
                opts,
            );
            let (bq, sb) = quantize_activation(
                &mut graph.node,
                &mut new_inits,
                &mut quantized,
                (&site.weight, st.max_abs_b, 0),
                &tag,
                opts,
            );
            let rescale = format!("{tag}.rescale_ab");
            new_inits.push(f32_init(&rescale, &[], &[sa * sb]));
            integer_op(
                &mut graph.node,
                "MatMulInteger",
                &tag,
                [&aq, &bq],
                vec![],
                &rescale,
                &out,
            );
            continue;
        }
        let w = inits[&site.weight];
        let group = attr_int(&n, "group").unwrap_or(1);
        let skip = match site.kind {
            SiteKind::MatMul if !opts.matmul => Some("matmul quantisation off".to_string()),
            SiteKind::Conv if !opts.conv => Some("conv quantisation off".to_string()),
            SiteKind::Conv if group != 1 => Some(format!(
                "grouped convolution (group {group}): tract's f32 depthwise kernel is faster"
            )),
            SiteKind::MatMul if st.rows < opts.min_rows => Some(format!(
                "{} row(s): a GEMV stays f32 (memory-bound; the logits' precision)",
                st.rows
            )),
            _ if st.max_abs == 0.0 => Some("activation is all zeros on calibration".to_string()),
            _ if keep_f32.contains_key(&i) => keep_f32.get(&i).cloned(),
            _ if opts.keep_first_last && ends.contains(&Some(i)) => {
                Some("first or last quantisable layer: kept f32 for agreement".to_string())
            }
            _ => None,
        };
        let unsigned = opts.unsigned_relu
            && !opts.quantize_linear_op
            && site.kind == SiteKind::Conv
            && conv_unpadded(&n)
            && non_negative.contains(&site.activation);
        reports.push(SiteReport {
            node: n.name.clone(),
            op: site.kind,
            weight: site.weight.clone(),
            weight_shape: w.dims.clone(),
            decision: skip.as_ref().map_or("int8".into(), |r| format!("f32: {r}")),
            activation_max_abs: st.max_abs,
            unsigned_activation: unsigned && skip.is_none(),
        });
        if skip.is_some() {
            graph.node.push(n);
            continue;
        }
        let out = n.output.first().context("node without output")?.clone();
        let tag = format!("q{i}");
        let offset = if unsigned { UNSIGNED_OFFSET } else { 0 };
        let (xq, sx) = quantize_activation(
            &mut graph.node,
            &mut new_inits,
            &mut quantized,
            (&site.activation, st.max_abs, offset),
            &tag,
            opts,
        );
        let wdata = f32_data(w)?;
        let axis = match site.kind {
            SiteKind::MatMul => 1,
            SiteKind::Conv | SiteKind::ActMatMul => 0,
        };
        let (wq, sw) = quantize_weight(&wdata, &w.dims, axis, opts.per_channel);
        let wq_name = format!("{}.i8", site.weight);
        new_inits.push(i8_init(&wq_name, &w.dims, &wq));
        let rescale: Vec<f32> = sw.iter().map(|s| s * sx).collect();
        let rescale_name = format!("{}.rescale", site.weight);
        match site.kind {
            SiteKind::MatMul => {
                new_inits.push(f32_init(&rescale_name, &[rescale.len() as i64], &rescale));
                integer_op(
                    &mut graph.node,
                    "MatMulInteger",
                    &tag,
                    [&xq, &wq_name],
                    vec![],
                    &rescale_name,
                    &out,
                );
            }
            SiteKind::ActMatMul => unreachable!("handled above"),
            SiteKind::Conv => {
                let attrs: Vec<AttributeProto> = n
                    .attribute
                    .iter()
                    .filter(|a| a.name != "group")
                    .cloned()
                    .collect();
                let co = w.dims[0];
                new_inits.push(f32_init(&rescale_name, &[1, co, 1, 1], &rescale));
                let mut bias = match n.input.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => {
                        Some(f32_data(inits.get(b).with_context(|| {
                            format!("conv bias `{b}` is not an initializer")
                        })?)?)
                    }
                    None => None,
                };
                if offset != 0 {
                    // q = round(x / sx) + offset, so sum(wq * q) falls short of
                    // sum(wq * x / sx) by offset * sum(wq): put it back, in f32 units.
                    let per_out = wq.len() / co as usize;
                    let b = bias.get_or_insert_with(|| vec![0.0; co as usize]);
                    for (o, b) in b.iter_mut().enumerate() {
                        let sum: i64 = wq[o * per_out..(o + 1) * per_out]
                            .iter()
                            .map(|&v| v as i64)
                            .sum();
                        *b = (*b as f64 - offset as f64 * sum as f64 * rescale[o] as f64) as f32;
                    }
                }
                match bias {
                    Some(bias) => {
                        let bias_name = format!("{tag}.bias_nchw");
                        new_inits.push(f32_init(&bias_name, &[1, co, 1, 1], &bias));
                        let scaled = format!("{tag}.scaled");
                        integer_op(
                            &mut graph.node,
                            "ConvInteger",
                            &tag,
                            [&xq, &wq_name],
                            attrs,
                            &rescale_name,
                            &scaled,
                        );
                        graph.node.push(node(
                            "Add",
                            &format!("{tag}.bias"),
                            &[&scaled, &bias_name],
                            &out,
                            vec![],
                        ));
                    }
                    None => {
                        integer_op(
                            &mut graph.node,
                            "ConvInteger",
                            &tag,
                            [&xq, &wq_name],
                            attrs,
                            &rescale_name,
                            &out,
                        );
                    }
                }
            }
        }
    }
    graph.initializer.extend(new_inits);
    // Drop the initializers nothing reads any more (the f32 weights that became int8).
    let used: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .collect();
    let keep: Vec<TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    graph.initializer = keep;
    model.doc_string = format!("{} (int8: linesight static PTQ)", model.doc_string);
    Ok((model.encode_to_vec(), reports))
}

/// The offset of a non-negative activation ([`QuantOptions::unsigned_relu`]): `[0, max]`
/// maps onto -127..=127.
const UNSIGNED_OFFSET: i32 = -127;

/// Quantises activation `x` (with its calibrated `max_abs` and an `offset`, 0 or
/// [`UNSIGNED_OFFSET`]) to int8: `round(x / s) + offset` with `s = max_abs / 127`, or
/// `max_abs / 254` with the offset. Once per tensor and offset: `done` maps the int8
/// tensor's name to its scale. Returns both.
fn quantize_activation(
    nodes: &mut Vec<NodeProto>,
    inits: &mut Vec<TensorProto>,
    done: &mut HashMap<String, f32>,
    (x, max_abs, offset): (&str, f32, i32),
    tag: &str,
    opts: &QuantOptions,
) -> (String, f32) {
    let xq = if offset == 0 {
        format!("{x}.i8")
    } else {
        format!("{x}.i8_offset{offset}")
    };
    if let Some(&sx) = done.get(&xq) {
        return (xq, sx);
    }
    let sx = if offset == 0 {
        max_abs / 127.0
    } else {
        max_abs / 254.0
    };
    if opts.quantize_linear_op {
        debug_assert_eq!(
            offset, 0,
            "QuantizeLinear is written with a zero point of 0"
        );
        let scale = format!("{x}.scale");
        inits.push(f32_init(&scale, &[], &[sx]));
        nodes.push(node(
            "QuantizeLinear",
            &format!("{tag}.{x}.quantize"),
            &[x, &scale, ZERO_POINT],
            &xq,
            vec![],
        ));
    } else {
        // x / s + offset, rounded half to even by adding 1.5 * 2^23 + offset and
        // subtracting 1.5 * 2^23 (exact for |x / s| < 2^22), clipped, cast: elementwise
        // ops tract fuses and vectorises, where its QuantizeLinear rounds one value at a
        // time. The edge's int8 op reads the offset back from the added constant.
        let inv = format!("{xq}.inv_scale");
        inits.push(f32_init(&inv, &[], &[1.0 / sx]));
        if !inits.iter().any(|t| t.name == ROUND_MAGIC) {
            inits.push(f32_init(ROUND_MAGIC, &[], &[MAGIC]));
            inits.push(f32_init("q.lo", &[], &[-127.0]));
            inits.push(f32_init("q.hi", &[], &[127.0]));
        }
        let add = if offset == 0 {
            ROUND_MAGIC.to_string()
        } else {
            let name = format!("q.round_magic{offset:+}");
            if !inits.iter().any(|t| t.name == name) {
                // Exact: a whole number in [2^23, 2^24).
                inits.push(f32_init(&name, &[], &[MAGIC + offset as f32]));
            }
            name
        };
        let (a, b, c, d) = (
            format!("{tag}.{x}.scaled"),
            format!("{tag}.{x}.biased"),
            format!("{tag}.{x}.rounded"),
            format!("{tag}.{x}.clipped"),
        );
        nodes.push(node(
            "Mul",
            &format!("{tag}.{x}.q_mul"),
            &[x, &inv],
            &a,
            vec![],
        ));
        nodes.push(node(
            "Add",
            &format!("{tag}.{x}.q_add"),
            &[&a, &add],
            &b,
            vec![],
        ));
        nodes.push(node(
            "Sub",
            &format!("{tag}.{x}.q_sub"),
            &[&b, ROUND_MAGIC],
            &c,
            vec![],
        ));
        nodes.push(node(
            "Clip",
            &format!("{tag}.{x}.q_clip"),
            &[&c, "q.lo", "q.hi"],
            &d,
            vec![],
        ));
        nodes.push(node(
            "Cast",
            &format!("{tag}.{x}.q_cast"),
            &[&d],
            &xq,
            vec![int_attr("to", DataType::Int8 as i64)],
        ));
    }
    done.insert(xq.clone(), sx);
    (xq, sx)
}

/// `op` (`MatMulInteger` or `ConvInteger`, no zero points) on the two int8 `inputs`, its
/// i32 result cast to f32 and multiplied by `rescale` into `out`.
fn integer_op(
    nodes: &mut Vec<NodeProto>,
    op: &str,
    tag: &str,
    inputs: [&str; 2],
    attrs: Vec<AttributeProto>,
    rescale: &str,
    out: &str,
) {
    let acc = format!("{tag}.acc_i32");
    let accf = format!("{tag}.acc_f32");
    nodes.push(node(op, &format!("{tag}.{op}"), &inputs, &acc, attrs));
    nodes.push(node(
        "Cast",
        &format!("{tag}.cast"),
        &[&acc],
        &accf,
        vec![int_attr("to", DataType::Float as i64)],
    ));
    nodes.push(node(
        "Mul",
        &format!("{tag}.rescale"),
        &[&accf, rescale],
        out,
        vec![],
    ));
}

const ZERO_POINT: &str = "q.zero_point_i8";
const ROUND_MAGIC: &str = "q.round_magic";
/// 1.5 * 2^23: added and subtracted, it rounds an f32 below 2^22 to a whole number.
const MAGIC: f32 = 12_582_912.0;

/// What tract's optimized plan of a quantised model contains.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSummary {
    /// Op name -> how many nodes of it the optimized plan has.
    pub ops: Vec<(String, usize)>,
    /// Known slow patterns found (empty when the plan is clean).
    pub slow_patterns: Vec<String>,
}

/// Loads `onnx` in tract, optimizes it, and looks for the patterns that made int8 slower
/// than f32 in tract 0.23.9: a `Reduce<Sum>` over integer data (zero-point correction sums
/// recomputed per run) and weight packing at run time (a pack op whose input is a constant).
pub fn plan_check(onnx: &[u8], input_shape: &[usize]) -> Result<PlanSummary> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .context("tract cannot read the int8 ONNX")?
        .with_input_fact(0, f32::fact(input_shape).into())?
        .into_optimized()
        .context("tract cannot optimize the int8 ONNX")?;
    let mut ops: HashMap<String, usize> = HashMap::new();
    let mut slow = Vec::new();
    for n in model.nodes() {
        let name = n.op.name().to_string();
        *ops.entry(name.clone()).or_default() += 1;
        let input_facts: Vec<&TypedFact> = n
            .inputs
            .iter()
            .filter_map(|o| model.outlet_fact(*o).ok())
            .collect();
        let int_input = input_facts
            .iter()
            .any(|f| matches!(f.datum_type, DatumType::I8 | DatumType::U8 | DatumType::I32));
        if name.contains("Reduce") && name.contains("Sum") && int_input {
            slow.push(format!(
                "node `{}`: {name} over integer data, recomputed on every run",
                n.name
            ));
        }
        let all_const = !input_facts.is_empty() && input_facts.iter().all(|f| f.konst.is_some());
        if name.to_lowercase().contains("pack") && all_const {
            slow.push(format!(
                "node `{}`: {name} packs a constant on every run",
                n.name
            ));
        }
    }
    let mut ops: Vec<(String, usize)> = ops.into_iter().collect();
    ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(PlanSummary {
        ops,
        slow_patterns: slow,
    })
}
