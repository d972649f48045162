//! The frozen trunk's output on augmented views, computed once and kept: in memory for the
//! epochs of one run, and on disk by content so that other runs (other training seeds,
//! other MLLM accuracies, other methods on the same images) reuse them.
//!
//! A view is a function of the image's bytes, the augmentation settings and seed, and the
//! view index ([`crate::augment`]); its trunk output also depends on the backbone, its
//! weights and how many stages train. The cache key hashes all of those, so a changed
//! setting never reads stale views.
//!
//! Files: `DIR/views/<key prefix>/<image sha256>.views`: the magic `LSVIEWS1`, the number
//! of views (u32 LE), the floats per view (u32 LE), then the views' f32 LE values in view
//! order. Written to a temporary name and renamed, so a killed run leaves no torn file; a
//! file that does not parse is logged and recomputed (it only costs time).

use crate::augment::{AugmentSettings, Augmenter};
use crate::backbone::TunableEncoder;
use crate::embed::progress_bar;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use linesight_shared::preprocess::RgbImage;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MAGIC: &[u8; 8] = b"LSVIEWS1";

/// Views of this many images go through the trunk in one batch (at least 16 views).
const TRUNK_VIEWS: usize = 16;

/// Where the views of one configuration are cached.
pub struct ViewCache {
    dir: PathBuf,
}

impl ViewCache {
    /// The cache folder for `model` with `tail` trained stages and `augment`, under
    /// `root` (the embedding cache folder).
    pub fn new(
        root: &Path,
        model: &dyn TunableEncoder,
        weights_sha256: &str,
        tail: usize,
        augment: &AugmentSettings,
    ) -> Result<Self> {
        let mut h = Sha256::new();
        h.update(b"linesight-views-v1\0");
        h.update(model.name().as_bytes());
        h.update(b"\0");
        h.update(weights_sha256.as_bytes());
        h.update(b"\0");
        h.update((tail as u64).to_le_bytes());
        h.update(serde_json::to_vec(&model.preprocess())?);
        h.update(serde_json::to_vec(augment)?);
        let key = hex::encode(h.finalize());
        Ok(ViewCache {
            dir: root.join("views").join(&key[..16]),
        })
    }

    fn file(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.views"))
    }

    /// The first `views` views of an image, when the file holds at least that many of
    /// `per_view` floats.
    fn read(&self, sha: &str, views: usize, per_view: usize) -> Option<Vec<f32>> {
        let path = self.file(sha);
        let bytes = std::fs::read(&path).ok()?;
        let parsed = (|| {
            let head = bytes.get(..16)?;
            if &head[..8] != MAGIC {
                return None;
            }
            let count = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
            let per = u32::from_le_bytes(head[12..16].try_into().ok()?) as usize;
            let body = &bytes[16..];
            if per != per_view || body.len() != count * per * 4 {
                return None;
            }
            Some((count, body))
        })();
        let Some((count, body)) = parsed else {
            tracing::warn!(path = %path.display(), "view cache file unreadable; recomputing");
            return None;
        };
        if count < views {
            return None;
        }
        Some(
            body[..views * per_view * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    fn write(&self, sha: &str, views: usize, per_view: usize, data: &[f32]) -> Result<()> {
        fs_err::create_dir_all(&self.dir)?;
        let mut bytes = Vec::with_capacity(16 + data.len() * 4);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(views as u32).to_le_bytes());
        bytes.extend_from_slice(&(per_view as u32).to_le_bytes());
        for v in data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let path = self.file(sha);
        let tmp = self
            .dir
            .join(format!("{sha}.views.tmp{}", std::process::id()));
        fs_err::write(&tmp, &bytes)?;
        fs_err::rename(&tmp, &path)?;
        Ok(())
    }
}

/// Trunk outputs of `views` views of each image.
pub struct TrunkViews {
    /// `[n * views, ...]`, image-major: row `i * views + v`.
    pub h: Tensor,
    pub views: usize,
    /// Views computed by the trunk in this run (the rest came from the cache).
    pub computed: usize,
    /// Seconds spent decoding, augmenting and running the trunk.
    pub seconds: f64,
}

/// Runs the frozen trunk (all but the last `tail` stages) on `views` views of every image
/// (`paths[i]` with content hash `shas[i]`), reading and filling `cache` when given.
#[allow(clippy::too_many_arguments)]
pub fn trunk_views(
    model: &dyn TunableEncoder,
    tail: usize,
    augment: &AugmentSettings,
    views: usize,
    paths: &[PathBuf],
    shas: &[String],
    cache: Option<&ViewCache>,
    what: &str,
    device: &Device,
) -> Result<TrunkViews> {
    let t0 = Instant::now();
    let spec = model.preprocess();
    let mut aug = Augmenter::new(spec, augment.clone())?;
    let input = spec.input_shape();
    let n_in = aug.tensor_len();
    // The trunk's output shape, from one blank input.
    let probe = model.trunk(
        &Tensor::zeros(input.to_vec(), candle_core::DType::F32, device)?,
        tail,
    )?;
    let out_shape: Vec<usize> = probe.dims()[1..].to_vec();
    let per_view: usize = out_shape.iter().product();
    let n = paths.len();
    let mut rows: Vec<Option<Vec<f32>>> = (0..n)
        .map(|i| cache.and_then(|c| c.read(&shas[i], views, per_view)))
        .collect();
    let todo: Vec<usize> = (0..n).filter(|&i| rows[i].is_none()).collect();
    let pb = progress_bar((todo.len() * views) as u64, what);
    let group = TRUNK_VIEWS.div_ceil(views.max(1)).max(1);
    let mut tensor = vec![0f32; n_in];
    for ids in todo.chunks(group) {
        let mut batch: Vec<f32> = Vec::with_capacity(ids.len() * views * n_in);
        for &i in ids {
            let img = RgbImage::open(&paths[i])
                .with_context(|| format!("fine-tuning needs `{}`", paths[i].display()))?;
            let key = Augmenter::image_key(&shas[i]);
            for v in 0..views {
                aug.view(&img, key, v as u64, &mut tensor)
                    .with_context(|| format!("cannot augment `{}`", paths[i].display()))?;
                batch.extend_from_slice(&tensor);
            }
        }
        let x = Tensor::from_vec(
            batch,
            (ids.len() * views, input[1], input[2], input[3]),
            device,
        )?;
        let out = model
            .trunk(&x, tail)?
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        for (j, &i) in ids.iter().enumerate() {
            let data = out[j * views * per_view..(j + 1) * views * per_view].to_vec();
            if let Some(c) = cache {
                if let Err(e) = c.write(&shas[i], views, per_view, &data) {
                    tracing::warn!(error = %e, "view cache not written");
                }
            }
            rows[i] = Some(data);
        }
        pb.inc((ids.len() * views) as u64);
    }
    pb.finish_and_clear();
    let data: Vec<f32> = rows.into_iter().flatten().flatten().collect();
    let mut shape = vec![n * views];
    shape.extend_from_slice(&out_shape);
    Ok(TrunkViews {
        h: Tensor::from_vec(data, shape, device)?,
        views,
        computed: todo.len() * views,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
