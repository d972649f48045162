//! Labelled image manifests (CSV `path,label,split`, paths relative to the CSV's folder)
//! and loading their images, skipping and counting the ones that cannot be decoded.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One row of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: PathBuf,
    pub label: String,
    pub split: String,
}

/// Reads a manifest; paths come back absolute (joined to the manifest's folder).
///
/// One policy for every command that reads a manifest (eval, prototypes, train's
/// evaluation, calibration, the simulator's truth, verified images, the pipeline): a
/// manifest that lists the same image file twice (the same path, or two spellings of it
/// such as `a/./x.jpg` or a symlink) is refused, naming the rows, since a repeated row would
/// be counted twice by every score and trained on twice.
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
    let mut lines = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec =
            rec.with_context(|| format!("manifest `{}` line {}", csv_path.display(), i + 2))?;
        lines.push(rec.position().map_or(i as u64 + 2, |p| p.line()));
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
    refuse_repeated_rows(csv_path, &out, &lines)?;
    Ok(out)
}

/// Fails when two rows name the same file, listing the first few repeats with their line
/// numbers (`lines[i]`: the file line of `entries[i]`).
fn refuse_repeated_rows(csv_path: &Path, entries: &[Entry], lines: &[u64]) -> Result<()> {
    let mut first_line: HashMap<PathBuf, u64> = HashMap::with_capacity(entries.len());
    let mut repeats: Vec<String> = Vec::new();
    let mut count = 0;
    for (e, &line) in entries.iter().zip(lines) {
        // The file itself when it exists (symlinks, `..`), else the path with `.` removed.
        let key = std::fs::canonicalize(&e.path)
            .unwrap_or_else(|_| e.path.components().collect::<PathBuf>());
        match first_line.get(&key) {
            Some(&first) => {
                count += 1;
                if repeats.len() < 5 {
                    repeats.push(format!(
                        "line {line} repeats line {first} (`{}`)",
                        e.path.display()
                    ));
                }
            }
            None => {
                first_line.insert(key, line);
            }
        }
    }
    if count > 0 {
        bail!(
            "manifest `{}` lists the same image more than once ({count} repeated row{}: {}{}); \
             remove the repeated rows, every score would count them twice",
            csv_path.display(),
            if count == 1 { "" } else { "s" },
            repeats.join(", "),
            if count > repeats.len() { ", ..." } else { "" }
        );
    }
    Ok(())
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
