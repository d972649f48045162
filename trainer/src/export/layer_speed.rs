//! Which int8 layers pay: each quantised site's time in tract, int8 against f32, measured
//! node by node on this machine, so the exporter keeps in int8 only the layers that run
//! faster that way (tract 0.23.9 on x86 runs some int8 matmuls slower than f32: small K
//! padded for AMX, the quantise / cast / rescale steps around each one). The engines are
//! the edge's own, with linesight's ops: on x86 with VNNI an int8 1x1 convolution's whole
//! region is one `LinesightPointwiseI8` node named after its `ConvInteger` (`q{index}.`),
//! its f32 twin one `LinesightPointwise`, and the times compared are theirs.
//!
//! Attribution: tract names the nodes of its plan after the ONNX nodes they come from
//! (`Conv_12`, `Conv_12.pack_a`, ...), and the int8 rewrite names everything it adds for a
//! site `q{index}.` (the quantisation of its input, the integer op, the cast and rescale).
//! A site's region is that, plus the elementwise ONNX nodes right after it (ReLU6's Clip, a
//! residual Add), which tract may fuse into the f32 matmul but not into the int8 one:
//! counted in both models, the comparison stays fair whatever tract fuses.

use anyhow::Result;
use linesight_edge::commands::bench::profile::medians;
use linesight_edge::engine::{Engine, NodeTime};
use serde::Serialize;
use std::collections::HashMap;
use tract_onnx::pb::ModelProto;

/// One site's measured time in both encodings.
#[derive(Debug, Clone, Serialize)]
pub struct SiteSpeed {
    /// The site's ONNX node in the f32 model.
    pub node: String,
    pub f32_ms: f64,
    pub int8_ms: f64,
    /// True when int8 is faster by more than the margin asked for.
    pub pays: bool,
}

/// The ONNX names whose tract nodes make up a site's region, in the f32 and int8 models.
struct Region {
    f32_names: Vec<String>,
    int8_tag: String,
    shared: Vec<String>,
}

/// Elementwise ops tract may fuse into the producing matmul.
const FUSABLE: [&str; 6] = ["Clip", "Relu", "Add", "Mul", "Sub", "Max"];

fn regions(model: &ModelProto, site_nodes: &[usize]) -> Vec<Region> {
    let g = model.graph.as_ref().expect("checked by find_sites");
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for x in &n.input {
            consumers.entry(x.as_str()).or_default().push(i);
        }
    }
    site_nodes
        .iter()
        .map(|&i| {
            let n = &g.node[i];
            let shared: Vec<String> = n
                .output
                .iter()
                .flat_map(|o| consumers.get(o.as_str()).into_iter().flatten())
                .map(|&j| &g.node[j])
                .filter(|c| FUSABLE.contains(&c.op_type.as_str()))
                .map(|c| c.name.clone())
                .collect();
            Region {
                f32_names: vec![n.name.clone()],
                int8_tag: format!("q{i}"),
                shared,
            }
        })
        .collect()
}

/// True when tract node `name` comes from ONNX node `onnx` (`onnx` itself, or `onnx.` + a
/// suffix tract added).
fn from_onnx(name: &str, onnx: &str) -> bool {
    name == onnx || name.strip_prefix(onnx).is_some_and(|r| r.starts_with('.'))
}

fn region_ms(nodes: &[NodeTime], names: &[String], shared: &[String]) -> f64 {
    nodes
        .iter()
        .filter(|t| {
            names.iter().any(|o| from_onnx(&t.node, o))
                || shared.iter().any(|o| from_onnx(&t.node, o))
        })
        .map(|t| t.ms)
        .sum()
}

/// Times every site of `site_nodes` (indices into `f32_model`'s nodes) in the f32 model and
/// in the int8 model where all of them are int8, runs of the two interleaved. A site pays
/// when its int8 region is faster than its f32 region by more than `margin` (0.05: 5 %).
pub fn measure(
    f32_model: &ModelProto,
    site_nodes: &[usize],
    f32_engine: &mut Engine,
    int8_engine: &mut Engine,
    input: &[f32],
    runs: usize,
    margin: f64,
) -> Result<Vec<SiteSpeed>> {
    // Interleave: each pass profiles both once; medians per node over the passes.
    let mut a: Vec<Vec<NodeTime>> = Vec::new();
    let mut b: Vec<Vec<NodeTime>> = Vec::new();
    for _ in 0..runs.max(1) {
        a.push(f32_engine.profile(input)?);
        b.push(int8_engine.profile(input)?);
    }
    let (fa, fb) = (medians(&a), medians(&b));
    Ok(regions(f32_model, site_nodes)
        .into_iter()
        .map(|r| {
            let f32_ms = region_ms(&fa, &r.f32_names, &r.shared);
            let int8_ms = region_ms(&fb, std::slice::from_ref(&r.int8_tag), &r.shared);
            SiteSpeed {
                node: r.f32_names[0].clone(),
                f32_ms,
                int8_ms,
                pays: int8_ms < f32_ms * (1.0 - margin),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(node: &str, ms: f64) -> NodeTime {
        NodeTime {
            node: node.into(),
            op: String::new(),
            info: String::new(),
            ms,
        }
    }

    #[test]
    fn names_match_whole_onnx_nodes_only() {
        assert!(from_onnx("Conv_1", "Conv_1"));
        assert!(from_onnx("Conv_1.pack_a", "Conv_1"));
        assert!(!from_onnx("Conv_12", "Conv_1"));
        assert!(!from_onnx("Conv_12.pack_a", "Conv_1"));
        assert!(from_onnx("q7.x.q_mul", "q7"));
        assert!(!from_onnx("q70.ConvInteger", "q7"));
        let nodes = [
            t("Conv_1", 2.0),
            t("Conv_1.pack_a", 0.5),
            t("Conv_12", 9.0),
            t("Clip_2", 0.25),
        ];
        assert_eq!(
            region_ms(&nodes, &["Conv_1".into()], &["Clip_2".into()]),
            2.75
        );
    }
}
