//! `linesight-train quantize` (and `export/prototypes --int8`): an f32 bundle -> a
//! calibrated, parity-gated int8 bundle.

use crate::dataset;
use crate::export::int8::{self, Int8Options, Int8Report};
use crate::mllm::images;
use anyhow::{bail, Context, Result};
use linesight_shared::bundle::Bundle;
use linesight_shared::preprocess::RgbImage;
use linesight_shared::signature::SecretKey;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where the calibration and parity images come from.
#[derive(Debug, Clone)]
pub struct ImageSets {
    /// A folder of images, or a `path,label,split` CSV (labels are not used).
    pub calibration: PathBuf,
    /// The CSV split to use when `calibration` is a CSV.
    pub split: String,
    /// Held-out parity images (folder or CSV); default: every 4th calibration image,
    /// taken out of calibration.
    pub parity: Option<PathBuf>,
    /// The CSV split to use when `parity` is a CSV.
    pub parity_split: String,
    /// At most this many calibration images (evenly spaced over the sorted list).
    pub max_calibration: usize,
    /// At most this many parity images (evenly spaced).
    pub max_parity: usize,
}

#[derive(Debug, Serialize)]
pub struct QuantizeReport {
    pub out: String,
    pub bundle_bytes: u64,
    pub signature: String,
    pub unreadable_images: Vec<String>,
    pub int8: Int8Report,
}

fn image_paths(source: &Path, split: &str) -> Result<Vec<PathBuf>> {
    if source.is_dir() {
        Ok(images::list(source)?.into_iter().map(|f| f.abs).collect())
    } else if source
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let mut rows: Vec<PathBuf> = dataset::read_split(source, split)?
            .into_iter()
            .map(|e| e.path)
            .collect();
        rows.sort();
        Ok(rows)
    } else {
        bail!(
            "`{}` is neither a folder of images nor a `path,label,split` CSV",
            source.display()
        )
    }
}

/// Every `len / n`-th item, `n` at most.
fn evenly<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// The calibration and parity paths, disjoint.
pub fn split_sets(sets: &ImageSets) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let all = image_paths(&sets.calibration, &sets.split)
        .with_context(|| format!("calibration images `{}`", sets.calibration.display()))?;
    let (cal, par) = match &sets.parity {
        Some(p) => {
            let par = image_paths(p, &sets.parity_split)
                .with_context(|| format!("parity images `{}`", p.display()))?;
            let cal: Vec<PathBuf> = all.into_iter().filter(|c| !par.contains(c)).collect();
            (cal, par)
        }
        None => {
            let (mut cal, mut par) = (Vec::new(), Vec::new());
            for (i, p) in all.into_iter().enumerate() {
                if i % 4 == 3 {
                    par.push(p);
                } else {
                    cal.push(p);
                }
            }
            (cal, par)
        }
    };
    if cal.is_empty() {
        bail!("no calibration image left once the parity images are set aside");
    }
    if par.is_empty() {
        bail!("no held-out parity image: give --parity, or more calibration images");
    }
    Ok((
        evenly(&cal, sets.max_calibration),
        evenly(&par, sets.max_parity),
    ))
}

fn open_all(paths: &[PathBuf], unreadable: &mut Vec<String>) -> Vec<RgbImage> {
    paths
        .iter()
        .filter_map(|p| match RgbImage::open(p) {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "image skipped");
                unreadable.push(format!("{}: {e}", p.display()));
                None
            }
        })
        .collect()
}

/// Quantises `f32_bundle` and writes the int8 bundle to `out` (signed with `key`).
pub fn quantize_bundle(
    f32_bundle: &Bundle,
    sets: &ImageSets,
    opts: &Int8Options,
    key: Option<&SecretKey>,
    out: &Path,
) -> Result<QuantizeReport> {
    let (cal_paths, par_paths) = split_sets(sets)?;
    let mut unreadable = Vec::new();
    let calibration = open_all(&cal_paths, &mut unreadable);
    let parity = open_all(&par_paths, &mut unreadable);
    let bar = crate::embed::progress_bar(0, "calibrate");
    let progress = |stage: &str, i: usize, n: usize| {
        if bar.message() != stage {
            bar.set_message(stage.to_string());
            bar.set_length(n as u64);
        }
        bar.set_position(i as u64);
    };
    let result = int8::export_int8(f32_bundle, &calibration, &parity, opts, &progress);
    bar.finish_and_clear();
    let (mut bundle, report) = result?;
    let (bundle_bytes, signature) = crate::export::sign_and_write(&mut bundle, key, out)?;
    Ok(QuantizeReport {
        out: out.display().to_string(),
        bundle_bytes,
        signature,
        unreadable_images: unreadable,
        int8: report,
    })
}

/// `linesight-train quantize`: reads the f32 bundle, quantises it, writes `out`.
pub fn run(
    bundle: &Path,
    sets: &ImageSets,
    opts: &Int8Options,
    sign: Option<&Path>,
    out: &Path,
) -> Result<QuantizeReport> {
    refuse_outputs(&[out], Some(sets), sign, &[("the f32 bundle", bundle)])?;
    let key = sign.map(SecretKey::read).transpose()?;
    let f32_bundle = Bundle::read(bundle)?;
    quantize_bundle(&f32_bundle, sets, opts, key.as_ref(), out)
}

/// Refuses (before any work) when a bundle that `export` or `prototypes` would write
/// (`out`, and with `int8` the f32 one beside it, [`f32_path`]) is one of its `inputs`,
/// its signing key or an image set of the int8 step.
pub fn refuse_overwriting(
    out: &Path,
    int8: Option<&Int8Request>,
    sign: Option<&Path>,
    inputs: &[(&str, &Path)],
) -> Result<()> {
    let f32_out = f32_path(out);
    let outputs: Vec<&Path> = match int8 {
        Some(_) => vec![out, &f32_out],
        None => vec![out],
    };
    refuse_outputs(&outputs, int8.map(|r| &r.sets), sign, inputs)
}

/// [`refuse_overwriting`] for given `outputs` and the int8 image `sets`.
fn refuse_outputs(
    outputs: &[&Path],
    sets: Option<&ImageSets>,
    sign: Option<&Path>,
    inputs: &[(&str, &Path)],
) -> Result<()> {
    let mut all = inputs.to_vec();
    all.extend(sign.map(|k| ("the signing key", k)));
    if let Some(sets) = sets {
        all.push(("the calibration images", sets.calibration.as_path()));
        all.extend(sets.parity.as_deref().map(|p| ("the parity images", p)));
    }
    linesight_shared::output::refuse_each(outputs, &all)?;
    Ok(())
}

/// `--int8` on `export` / `prototypes`: what to do after the f32 bundle is built.
#[derive(Debug, Clone)]
pub struct Int8Request {
    pub sets: ImageSets,
    pub opts: Int8Options,
}

/// Where `--int8` puts the f32 baseline: `model.lsb` -> `model.f32.lsb`.
pub fn f32_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}.f32.lsb"))
}

/// Writes `bundle` (f32) and, with `int8`, its quantised twin: the f32 one to
/// [`f32_path`] and the int8 one to `out`. Returns the f32 file's (path, bytes,
/// signature) and the int8 report.
pub fn write_with_int8(
    bundle: &mut Bundle,
    key: Option<&SecretKey>,
    out: &Path,
    int8: Option<&Int8Request>,
) -> Result<(PathBuf, u64, String, Option<QuantizeReport>)> {
    match int8 {
        None => {
            let (bytes, sig) = crate::export::sign_and_write(bundle, key, out)?;
            Ok((out.to_path_buf(), bytes, sig, None))
        }
        Some(req) => {
            let f32_out = f32_path(out);
            let (bytes, sig) = crate::export::sign_and_write(bundle, key, &f32_out)?;
            let q = quantize_bundle(bundle, &req.sets, &req.opts, key, out)?;
            Ok((f32_out, bytes, sig, Some(q)))
        }
    }
}
