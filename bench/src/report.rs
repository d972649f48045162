//! The side-by-side report: per variant and thread count, the raw latencies, their
//! median / p95 / spread, the top-1 agreement with tract f32, and the ratios
//! (int8 / f32 per runtime, tract / onnxruntime per precision), as JSON and markdown.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub model: String,
    /// `tract-f32`, `tract-int8`, `ort-f32`, `ort-int8` (onnxruntime's own encoding),
    /// `ort-int8-lsb` (the int8 bundle's ONNX run by onnxruntime).
    pub variant: String,
    pub threads: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    /// (max - min) / median of the per-round medians, percent.
    pub round_spread_pct: f64,
    /// Top-1 agreement with tract f32 on the agreement images (1 thread), percent.
    pub top1_agreement_pct: Option<f64>,
    /// Largest absolute logit difference from tract f32 on those images.
    pub max_abs_logit_diff: Option<f64>,
    /// Images of the agreement set that kept tract f32's top-1 class, and the set's size.
    pub agreeing: Option<usize>,
    pub agreement_images: Option<usize>,
    /// Every measured latency, round by round (ms).
    pub latencies_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub model: String,
    pub threads: usize,
    /// e.g. `tract int8 / tract f32`.
    pub what: String,
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The build that measured (only an optimised build without debug assertions counts).
    pub build: linesight_edge::build_info::BuildInfo,
    /// linesight's own kernels tract ran.
    pub kernels: Vec<&'static str>,
    /// Photos of the top-1 agreement, and where they came from.
    pub agreement_images: usize,
    pub agreement_source: String,
    pub ort_library: String,
    pub ort_version: String,
    pub tract_version: String,
    pub rounds: usize,
    pub iterations_per_round: usize,
    pub threads: Vec<usize>,
    pub cells: Vec<Cell>,
    pub ratios: Vec<Ratio>,
}

/// Nearest-rank quantile `q` of `v` (0 when empty).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// (max - min) / median, percent.
pub fn spread_pct(v: &[f64]) -> f64 {
    let m = quantile(v, 0.5);
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    if m > 0.0 && lo.is_finite() {
        (hi - lo) / m * 100.0
    } else {
        0.0
    }
}

/// The ratios of medians the report states, for every model and thread count where both
/// sides were measured.
pub fn ratios(cells: &[Cell]) -> Vec<Ratio> {
    let find = |m: &str, v: &str, t: usize| {
        cells
            .iter()
            .find(|c| c.model == m && c.variant == v && c.threads == t)
            .map(|c| c.median_ms)
    };
    let mut keys: Vec<(String, usize)> =
        cells.iter().map(|c| (c.model.clone(), c.threads)).collect();
    keys.sort();
    keys.dedup();
    let pairs = [
        ("tract-int8", "tract-f32", "tract int8 / tract f32"),
        ("ort-int8", "ort-f32", "ort int8 / ort f32"),
        ("tract-f32", "ort-f32", "tract f32 / ort f32"),
        ("tract-int8", "ort-int8", "tract int8 / ort int8"),
        (
            "ort-int8-lsb",
            "ort-int8",
            "ort (bundle's int8) / ort (own int8)",
        ),
        (
            "tract-f32",
            "tract-f32-plain",
            "tract f32 / tract f32 without linesight ops",
        ),
        (
            "tract-int8",
            "tract-int8-plain",
            "tract int8 / tract int8 without linesight ops",
        ),
        (
            "tract-f32-plain",
            "ort-f32",
            "tract f32 without linesight ops / ort f32",
        ),
    ];
    let mut out = Vec::new();
    for (model, threads) in keys {
        for (a, b, what) in pairs {
            if let (Some(x), Some(y)) = (find(&model, a, threads), find(&model, b, threads)) {
                if y > 0.0 {
                    out.push(Ratio {
                        model: model.clone(),
                        threads,
                        what: what.into(),
                        ratio: x / y,
                    });
                }
            }
        }
    }
    out
}

impl Report {
    /// Two markdown tables: latencies, then ratios.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{}; linesight kernels: {}; agreement photos: {} from {}\n\n",
            self.build.describe().replace('\n', " "),
            if self.kernels.is_empty() {
                "none".to_string()
            } else {
                self.kernels.join(", ")
            },
            self.agreement_images,
            self.agreement_source
        );
        s.push_str(
            "| model | variant | threads | median ms | p95 ms | round spread | top-1 agreement with tract f32 | max logit diff |\n|---|---|---|---|---|---|---|---|\n",
        );
        for c in &self.cells {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.0}% | {} | {} |\n",
                c.model,
                c.variant,
                c.threads,
                c.median_ms,
                c.p95_ms,
                c.round_spread_pct,
                match (c.top1_agreement_pct, c.agreeing, c.agreement_images) {
                    (Some(a), Some(k), Some(n)) => format!("{a:.2}% ({k}/{n})"),
                    (Some(a), _, _) => format!("{a:.1}%"),
                    _ => "-".into(),
                },
                c.max_abs_logit_diff
                    .map(|d| format!("{d:.2e}"))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
        s.push_str("\n| model | threads | ratio of medians | value |\n|---|---|---|---|\n");
        for r in &self.ratios {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} |\n",
                r.model, r.threads, r.what, r.ratio
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(model: &str, variant: &str, threads: usize, median_ms: f64) -> Cell {
        Cell {
            model: model.into(),
            variant: variant.into(),
            threads,
            median_ms,
            p95_ms: median_ms,
            round_spread_pct: 0.0,
            top1_agreement_pct: None,
            max_abs_logit_diff: None,
            agreeing: None,
            agreement_images: None,
            latencies_ms: vec![median_ms],
        }
    }

    #[test]
    fn ratios_pair_the_same_model_and_threads() {
        let cells = [
            cell("m", "tract-f32", 1, 10.0),
            cell("m", "tract-int8", 1, 4.0),
            cell("m", "ort-f32", 1, 5.0),
            cell("m", "ort-int8", 1, 2.0),
            cell("m", "tract-f32", 2, 6.0),
        ];
        let r = ratios(&cells);
        let got: Vec<(usize, &str, f64)> = r
            .iter()
            .map(|r| (r.threads, r.what.as_str(), r.ratio))
            .collect();
        assert_eq!(
            got,
            [
                (1, "tract int8 / tract f32", 0.4),
                (1, "ort int8 / ort f32", 0.4),
                (1, "tract f32 / ort f32", 2.0),
                (1, "tract int8 / ort int8", 2.0),
            ]
        );
    }

    #[test]
    fn quantiles_and_spread() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.95), 4.0);
        assert_eq!(spread_pct(&v), 150.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
