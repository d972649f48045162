//! Embedding a set of image files with a backbone: decode (skipping and counting what
//! cannot be decoded), preprocess with the shared implementation, run in batches, with a
//! progress bar.

use crate::backbone::ImageEncoder;
use crate::dataset::Skipped;
use anyhow::Result;
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use std::path::PathBuf;

/// Embeddings of the images that could be used.
pub struct Embedded {
    /// `[N_ok, D]`, not normalized.
    pub embeddings: Tensor,
    /// For each row, the index into the input path list.
    pub rows: Vec<usize>,
    pub skipped: Vec<Skipped>,
}

pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    if std::env::var_os("LINESIGHT_NO_PROGRESS").is_some() {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb
}

/// Embeds `paths` in batches of `batch`. Unreadable or undecodable files are skipped,
/// logged and returned in `skipped`; an error is returned only if the backbone fails.
pub fn embed_paths(
    encoder: &dyn ImageEncoder,
    paths: &[PathBuf],
    batch: usize,
    device: &Device,
) -> Result<Embedded> {
    let mut pre = Preprocessor::new(encoder.preprocess());
    let n_in = pre.tensor_len();
    let shape = encoder.preprocess().input_shape();
    let batch = batch.max(1);
    let pb = progress_bar(paths.len() as u64, "embed");
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut chunks = Vec::new();
    let mut buf: Vec<f32> = Vec::with_capacity(batch * n_in);
    let mut in_buf = 0usize;
    let flush = |buf: &mut Vec<f32>, in_buf: &mut usize, chunks: &mut Vec<Tensor>| -> Result<()> {
        if *in_buf == 0 {
            return Ok(());
        }
        let x = Tensor::from_slice(buf, (*in_buf, shape[1], shape[2], shape[3]), device)?;
        chunks.push(encoder.embed(&x)?.detach());
        buf.clear();
        *in_buf = 0;
        Ok(())
    };
    let mut tensor = vec![0.0; n_in];
    for (i, p) in paths.iter().enumerate() {
        pb.inc(1);
        match RgbImage::open(p)
            .and_then(|img| pre.run(&img.pixels, img.width, img.height, &mut tensor))
        {
            Ok(()) => {
                buf.extend_from_slice(&tensor);
                in_buf += 1;
                rows.push(i);
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "image skipped");
                skipped.push(Skipped {
                    path: p.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        }
        if in_buf == batch {
            flush(&mut buf, &mut in_buf, &mut chunks)?;
        }
    }
    flush(&mut buf, &mut in_buf, &mut chunks)?;
    pb.finish_and_clear();
    let embeddings = if chunks.is_empty() {
        Tensor::zeros((0, encoder.embed_dim()), candle_core::DType::F32, device)?
    } else {
        Tensor::cat(&chunks, 0)?
    };
    Ok(Embedded {
        embeddings,
        rows,
        skipped,
    })
}
