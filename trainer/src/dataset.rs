//! Labelled image manifests (CSV `path,label,split`, paths relative to the CSV's folder)
//! and loading their images, skipping and counting the ones that cannot be decoded.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One row of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: PathBuf,
    pub label: String,
    pub split: String,
}

/// Reads a manifest; paths come back absolute (joined to the manifest's folder).
pub fn read_manifest(csv_path: &Path) -> Result<Vec<Entry>> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("cannot read manifest `{}`", csv_path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("manifest `{}` has no header", csv_path.display()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| {
                format!(
                    "manifest `{}` has no `{name}` column (expected `path,label,split`)",
                    csv_path.display()
                )
            })
    };
    let (pc, lc, sc) = (col("path")?, col("label")?, col("split")?);
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec =
            rec.with_context(|| format!("manifest `{}` line {}", csv_path.display(), i + 2))?;
        let field = |c: usize| rec.get(c).map(str::trim).unwrap_or("").to_string();
        let (p, label, split) = (field(pc), field(lc), field(sc));
        if p.is_empty() || label.is_empty() {
            bail!(
                "manifest `{}` line {}: empty path or label",
                csv_path.display(),
                i + 2
            );
        }
        out.push(Entry {
            path: base.join(p),
            label,
            split,
        });
    }
    Ok(out)
}

/// The rows of one split; fails when the manifest has none.
pub fn read_split(csv_path: &Path, split: &str) -> Result<Vec<Entry>> {
    let entries: Vec<Entry> = read_manifest(csv_path)?
        .into_iter()
        .filter(|e| e.split == split)
        .collect();
    if entries.is_empty() {
        bail!(
            "manifest `{}` has no rows with split `{split}`",
            csv_path.display()
        );
    }
    Ok(entries)
}

/// The sorted distinct labels of some entries.
pub fn label_set(entries: &[Entry]) -> Vec<String> {
    let mut labels: Vec<String> = entries.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// An image that could not be used, with the reason.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}
