//! What the line sees: the folder `linesight-edge export-uncertain` writes (each entry an
//! image and its decision line), and how far those frames lie from the training set.
//!
//! Drift is measured on the backbone's L2-normalized embeddings (the features refine's
//! neighbours use): a frame's cosine distance to its nearest training image, set against
//! the same distance for the scored images, which come from the training distribution.
//! A frame farther than the scored images' 95th percentile is "beyond the reference".

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The fields of an edge decision line (`linesight_edge::sink::Record`, an API: fields
/// are only ever added) that the report shows.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BoxDecision {
    pub label: String,
    pub accepted: bool,
    #[serde(default)]
    pub uncertain: bool,
    pub score: f32,
    #[serde(default)]
    pub margin: f32,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub model_version: String,
    #[serde(default)]
    pub station: String,
    #[serde(default)]
    pub time_unix_ms: u64,
}

/// One stored frame: its image and the decision the box made on it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFrame {
    pub image: PathBuf,
    pub decision: BoxDecision,
}

/// An entry of the folder that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadEntry {
    pub path: String,
    pub error: String,
}

/// Reads an exported uncertain folder: every `NAME.json` with its image `NAME.png`, by
/// name. A record that does not parse or has no image is listed, not fatal. Fails only
/// when the folder cannot be listed.
pub fn read_folder(dir: &Path) -> anyhow::Result<(Vec<StoredFrame>, Vec<BadEntry>)> {
    use anyhow::Context;
    let mut names: Vec<PathBuf> = fs_err::read_dir(dir)
        .with_context(|| "cannot read the --uncertain folder (written by `linesight-edge export-uncertain --out DIR`)")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let (mut frames, mut bad) = (Vec::new(), Vec::new());
    for json in names {
        let image = json.with_extension("png");
        let parsed = std::fs::read_to_string(&json)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<BoxDecision>(&t).map_err(|e| e.to_string()));
        match parsed {
            Err(e) => bad.push(BadEntry {
                path: json.display().to_string(),
                error: format!("not a decision line: {e}"),
            }),
            Ok(_) if !image.is_file() => bad.push(BadEntry {
                path: json.display().to_string(),
                error: format!("its image `{}` is missing", image.display()),
            }),
            Ok(decision) => frames.push(StoredFrame { image, decision }),
        }
    }
    Ok((frames, bad))
}

/// For each row of `queries`, 1 - the largest cosine similarity to a row of `base` (both
/// L2-normalized, `dim` wide): the cosine distance to the nearest base row. 1 when `base`
/// is empty.
pub fn nearest_distance(queries: &[f32], base: &[f32], dim: usize) -> Vec<f32> {
    queries
        .chunks_exact(dim)
        .map(|q| {
            let best = base
                .chunks_exact(dim)
                .map(|b| q.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max);
            if best.is_finite() {
                (1.0 - best).max(0.0)
            } else {
                1.0
            }
        })
        .collect()
}

/// The nearest-rank `q` quantile of `v` (0 for none).
pub fn quantile(v: &[f32], q: f64) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let rank = (q * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_by_hand() {
        // base: the x and y axes; queries: x (distance 0), the diagonal (1 - 1/sqrt 2),
        // -x (cosine with x is -1, with y 0 -> distance 1)
        let base = [1.0, 0.0, 0.0, 1.0];
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let q = [1.0, 0.0, h, h, -1.0, 0.0];
        let d = nearest_distance(&q, &base, 2);
        assert_eq!(d[0], 0.0);
        assert!((d[1] - (1.0 - h)).abs() < 1e-6);
        assert_eq!(d[2], 1.0);
        assert_eq!(nearest_distance(&q[..2], &[], 2), vec![1.0]);
    }

    #[test]
    fn quantiles_by_hand() {
        let v: Vec<f32> = (1..=20).map(|i| i as f32).collect();
        assert_eq!(quantile(&v, 0.95), 19.0);
        assert_eq!(quantile(&v, 0.5), 10.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn the_folder_is_read_and_bad_entries_listed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let line = r#"{"frame":3,"seq":3,"time_unix_ms":5,"source":"dir:x","station":"frame","model":"m","model_version":"1","label":"reject","accepted":false,"uncertain":false,"score":0.4,"margin":0.1,"topk":[],"smoothed_frames":1,"latency_ms":2.0}"#;
        std::fs::write(d.join("000000000001.json"), line).unwrap();
        std::fs::write(d.join("000000000001.png"), b"png").unwrap();
        std::fs::write(d.join("000000000002.json"), line).unwrap(); // no image
        std::fs::write(d.join("000000000003.json"), "{").unwrap();
        let (frames, bad) = read_folder(d).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].decision.label, "reject");
        assert_eq!(frames[0].decision.score, 0.4);
        assert_eq!(bad.len(), 2);
        assert!(
            bad[0].error.contains("is missing") && bad[1].error.contains("not a decision line")
        );
        assert!(read_folder(&d.join("nope")).is_err());
    }
}
