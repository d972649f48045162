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

/// sha256 (hex) of a file's bytes, streamed (weights files can be gigabytes).
pub fn file_sha256(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = fs_err::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Embeddings kept on disk by image content, so that refine, train, evaluation and a
/// rerun embed each image once per backbone and weights.
///
/// Files: `DIR/<backbone>-<weights sha256 prefix>.safetensors` (tensor `embeddings`,
/// `[N, D]` f32) and a `.json` beside it listing the images' sha256 in row order. Both
/// are replaced by rename, so a killed run leaves the previous cache.
pub struct EmbeddingCache {
    tensor_path: PathBuf,
    index_path: PathBuf,
    dim: usize,
    shas: Vec<String>,
    rows: Vec<f32>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheIndex {
    backbone: String,
    weights_sha256: String,
    dim: usize,
    sha256: Vec<String>,
}

impl EmbeddingCache {
    /// Opens (or starts) the cache for one backbone and weights file in `dir`. A cache file
    /// that cannot be read is logged and started afresh (it only costs time).
    pub fn open(
        dir: &std::path::Path,
        backbone: &str,
        weights_sha256: &str,
        dim: usize,
    ) -> Result<Self> {
        fs_err::create_dir_all(dir)?;
        let stem = format!(
            "{backbone}-{}",
            &weights_sha256[..16.min(weights_sha256.len())]
        );
        let tensor_path = dir.join(format!("{stem}.safetensors"));
        let index_path = dir.join(format!("{stem}.json"));
        let mut cache = EmbeddingCache {
            tensor_path,
            index_path,
            dim,
            shas: Vec::new(),
            rows: Vec::new(),
        };
        if cache.index_path.is_file() && cache.tensor_path.is_file() {
            if let Err(e) = cache.load(weights_sha256) {
                tracing::warn!(cache = %cache.index_path.display(), error = %e, "embedding cache unreadable; starting afresh");
                cache.shas.clear();
                cache.rows.clear();
            }
        }
        Ok(cache)
    }

    fn load(&mut self, weights_sha256: &str) -> Result<()> {
        let index: CacheIndex = serde_json::from_slice(&fs_err::read(&self.index_path)?)?;
        anyhow::ensure!(
            index.weights_sha256 == weights_sha256 && index.dim == self.dim,
            "cache is for other weights"
        );
        let t = candle_core::safetensors::load(&self.tensor_path, &Device::Cpu)?;
        let e = t
            .get("embeddings")
            .ok_or_else(|| anyhow::anyhow!("no `embeddings` tensor"))?;
        anyhow::ensure!(e.dims() == [index.sha256.len(), self.dim], "shape mismatch");
        self.rows = e.flatten_all()?.to_vec1::<f32>()?;
        self.shas = index.sha256;
        Ok(())
    }

    /// Embeds what the cache lacks on `compute` (the device `encoder` was loaded on) and
    /// returns `[N_ok, D]` embeddings for `paths` (whose contents hash to `shas`), in order,
    /// on the CPU, with unreadable images skipped and listed.
    pub fn embed(
        &mut self,
        encoder: &dyn ImageEncoder,
        weights_sha256: &str,
        paths: &[PathBuf],
        shas: &[String],
        batch: usize,
        compute: &Device,
    ) -> Result<Embedded> {
        let known: std::collections::HashMap<&str, usize> = self
            .shas
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let mut missing: Vec<usize> = (0..paths.len())
            .filter(|&i| !known.contains_key(shas[i].as_str()))
            .collect();
        missing.dedup_by_key(|i| shas[*i].clone());
        drop(known);
        let mut skipped = Vec::new();
        if !missing.is_empty() {
            tracing::info!(
                images = missing.len(),
                cached = paths.len() - missing.len(),
                "embedding"
            );
            let todo: Vec<PathBuf> = missing.iter().map(|&i| paths[i].clone()).collect();
            let got = embed_paths(encoder, &todo, batch, compute)?;
            let values = got
                .embeddings
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (r, &j) in got.rows.iter().enumerate() {
                self.shas.push(shas[missing[j]].clone());
                self.rows
                    .extend_from_slice(&values[r * self.dim..(r + 1) * self.dim]);
            }
            skipped = got.skipped;
            self.save(encoder.name(), weights_sha256)?;
        }
        let known: std::collections::HashMap<&str, usize> = self
            .shas
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let mut rows = Vec::new();
        let mut flat = Vec::new();
        for (i, sha) in shas.iter().enumerate() {
            if let Some(&r) = known.get(sha.as_str()) {
                rows.push(i);
                flat.extend_from_slice(&self.rows[r * self.dim..(r + 1) * self.dim]);
            } else if !skipped.iter().any(|s: &Skipped| s.path == paths[i]) {
                skipped.push(Skipped {
                    path: paths[i].clone(),
                    reason: "could not be embedded".into(),
                });
            }
        }
        let embeddings = Tensor::from_vec(flat, (rows.len(), self.dim), &Device::Cpu)?;
        Ok(Embedded {
            embeddings,
            rows,
            skipped,
        })
    }

    fn save(&self, backbone: &str, weights_sha256: &str) -> Result<()> {
        let n = self.shas.len();
        let t = Tensor::from_slice(&self.rows, (n, self.dim), &Device::Cpu)?;
        let tmp_t = self.tensor_path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("embeddings".to_string(), t)]),
            &tmp_t,
        )?;
        let index = CacheIndex {
            backbone: backbone.to_string(),
            weights_sha256: weights_sha256.to_string(),
            dim: self.dim,
            sha256: self.shas.clone(),
        };
        let tmp_i = self.index_path.with_extension("json.tmp");
        fs_err::write(&tmp_i, serde_json::to_vec(&index)?)?;
        // Tensor first: an index never lists rows the tensor lacks (load checks the shape).
        fs_err::rename(&tmp_t, &self.tensor_path)?;
        fs_err::rename(&tmp_i, &self.index_path)?;
        Ok(())
    }
}
