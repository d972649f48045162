//! `linesight-edge bench --profile`: where tract's time goes. Every node of the plan is
//! timed over a few runs ([`Engine::profile`]); each node keeps its median, and the nodes
//! are grouped by op type (op name and output type, e.g. `OptMatMul -> I32`), so an int8
//! model shows which ops still run in f32, and what the rescaling around them costs.

use crate::engine::{Engine, NodeTime};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// Profiled runs; each node's median over them is kept.
pub const RUNS: usize = 5;
/// Op types the text report lists.
pub const TOP: usize = 15;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpShare {
    /// Op name and output type.
    pub op: String,
    /// Nodes of this type in the plan.
    pub nodes: usize,
    pub ms: f64,
    /// Share of the summed node times, in percent.
    pub pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub runs: usize,
    /// Sum over nodes of their median time (ms); a little below a plain run's time,
    /// which also copies the input in.
    pub total_ms: f64,
    /// Every op type, largest share first.
    pub ops: Vec<OpShare>,
    /// Every node in plan order with its median time (`bench --profile --nodes`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeTime>,
}

/// Profiles `runs` runs of `input` (at least one). Fails when a run fails.
pub fn run(engine: &mut Engine, input: &[f32], runs: usize) -> Result<ProfileReport> {
    let runs = runs.max(1);
    let mut all: Vec<Vec<NodeTime>> = Vec::with_capacity(runs);
    for _ in 0..runs {
        all.push(engine.profile(input)?);
    }
    let per_node = medians(&all);
    let mut report = group(&per_node);
    report.runs = runs;
    report.nodes = per_node;
    Ok(report)
}

/// Each node's median time over several profiled runs of one plan (empty when `runs` is).
pub fn medians(runs: &[Vec<NodeTime>]) -> Vec<NodeTime> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|i| {
            let mut times: Vec<f64> = runs.iter().filter_map(|r| r.get(i)).map(|n| n.ms).collect();
            times.sort_by(f64::total_cmp);
            NodeTime {
                ms: times[times.len() / 2],
                ..first[i].clone()
            }
        })
        .collect()
}

/// Groups node times by op type, largest total first.
pub fn group(nodes: &[NodeTime]) -> ProfileReport {
    let mut by_op: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for n in nodes {
        let e = by_op.entry(n.op.as_str()).or_default();
        e.0 += 1;
        e.1 += n.ms;
    }
    let total: f64 = nodes.iter().map(|n| n.ms).sum();
    let mut ops: Vec<OpShare> = by_op
        .into_iter()
        .map(|(op, (count, ms))| OpShare {
            op: op.to_string(),
            nodes: count,
            ms,
            pct: if total > 0.0 { ms / total * 100.0 } else { 0.0 },
        })
        .collect();
    ops.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.op.cmp(&b.op)));
    ProfileReport {
        runs: 1,
        total_ms: total,
        ops,
        nodes: Vec::new(),
    }
}

impl ProfileReport {
    /// Every node, in plan order: time, op, output shape and tract's description.
    pub fn render_nodes(&self) -> String {
        let mut out = String::from("nodes (plan order, median ms):\n");
        for n in &self.nodes {
            out.push_str(&format!(
                "  {:>8.3}  {:<28} {:<40} {}\n",
                n.ms, n.op, n.node, n.info
            ));
        }
        out
    }

    /// The `top` largest op types as text lines.
    pub fn render(&self, top: usize) -> String {
        let mut out = format!(
            "profile (median of {} runs, {:.2} ms in {} op types):\n",
            self.runs,
            self.total_ms,
            self.ops.len()
        );
        for o in self.ops.iter().take(top) {
            out.push_str(&format!(
                "  {:>5.1}%  {:>8.3} ms  {:>4} nodes  {}\n",
                o.pct, o.ms, o.nodes, o.op
            ));
        }
        let rest: f64 = self.ops.iter().skip(top).map(|o| o.ms).sum();
        if self.ops.len() > top {
            out.push_str(&format!(
                "  {:>5.1}%  {:>8.3} ms  (the other {} op types)\n",
                if self.total_ms > 0.0 {
                    rest / self.total_ms * 100.0
                } else {
                    0.0
                },
                rest,
                self.ops.len() - top
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, ms: f64) -> NodeTime {
        NodeTime {
            node: format!("n{ms}"),
            op: op.into(),
            info: String::new(),
            ms,
        }
    }

    #[test]
    fn groups_by_op_type_largest_first() {
        let r = group(&[
            node("Conv -> F32", 1.0),
            node("OptMatMul -> I32", 6.0),
            node("Conv -> F32", 2.0),
            node("Cast -> F32", 1.0),
        ]);
        assert_eq!(r.total_ms, 10.0);
        let got: Vec<(&str, usize, f64, f64)> = r
            .ops
            .iter()
            .map(|o| (o.op.as_str(), o.nodes, o.ms, o.pct))
            .collect();
        assert_eq!(
            got,
            [
                ("OptMatMul -> I32", 1, 6.0, 60.0),
                ("Conv -> F32", 2, 3.0, 30.0),
                ("Cast -> F32", 1, 1.0, 10.0),
            ]
        );
        let text = r.render(2);
        assert!(text.contains("60.0%"), "{text}");
        assert!(text.contains("the other 1 op types"), "{text}");
    }
}
