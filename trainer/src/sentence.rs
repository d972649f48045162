//! Sentence embeddings of names with all-MiniLM-L6-v2 (sentence-transformers), for
//! vocabulary canonicalisation (synonym merging) and the sACC metric.
//!
//! The model is HF's BERT (6 layers, hidden 384, 12 heads) from candle-transformers; the
//! sentence embedding is the mean of the last hidden states over the real (non-padding)
//! tokens, L2-normalized, as sentence-transformers' `Pooling(mean) + Normalize` computes it.
//! Files (fetched by `scripts/fetch-weights.sh`): `model.safetensors`, `tokenizer.json`,
//! `config.json` in one folder.
//!
//! Batch independence: the shipped `tokenizer.json` pads every text to 128 tokens and
//! truncates at 128. Padding is switched off here; a batch is padded by [`pad_batch`] to its
//! own longest text, and the attention mask keeps the padding out of both attention and
//! pooling, so a text's embedding does not depend on what it is batched with. Truncation is
//! set to 256 tokens, sentence-transformers' `max_seq_length` for this model (the 128 in
//! `tokenizer.json` is overridden by sentence-transformers at encode time).

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// Embedding width of all-MiniLM-L6-v2.
pub const DIM: usize = 384;
/// Longest input in tokens (with `[CLS]` and `[SEP]`); longer texts are truncated.
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass. Texts are sorted by length before batching so that each batch
/// pads little.
const BATCH: usize = 64;

/// all-MiniLM-L6-v2: tokenizer + BERT encoder + mean pooling + L2 normalization.
pub struct SentenceEncoder {
    tokenizer: Tokenizer,
    model: BertModel,
    device: Device,
    dim: usize,
}

impl SentenceEncoder {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`.
    ///
    /// Fails when a file is missing (the error names it and says to run
    /// `scripts/fetch-weights.sh`), cannot be parsed, or lacks a tensor the configuration
    /// needs. Tensor names may carry a `bert.` prefix or not.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let file = |name: &str| -> Result<std::path::PathBuf> {
            let p = dir.join(name);
            if !p.is_file() {
                bail!(
                    "sentence model file `{}` is missing; run scripts/fetch-weights.sh",
                    p.display()
                );
            }
            Ok(p)
        };
        let (weights, tok_path, cfg_path) = (
            file("model.safetensors")?,
            file("tokenizer.json")?,
            file("config.json")?,
        );

        let config: Config = serde_json::from_str(
            &fs_err::read_to_string(&cfg_path)
                .with_context(|| format!("reading `{}`", cfg_path.display()))?,
        )
        .with_context(|| format!("parsing BERT config `{}`", cfg_path.display()))?;

        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow!("loading tokenizer `{}`: {e}", tok_path.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("setting truncation on `{}`: {e}", tok_path.display()))?;

        let tensors = candle_core::safetensors::load(&weights, device).with_context(|| {
            format!(
                "cannot load sentence model weights `{}`; run scripts/fetch-weights.sh",
                weights.display()
            )
        })?;
        // Accept both layouts: `embeddings.…` (sentence-transformers' export) and
        // `bert.embeddings.…` (a `BertForXxx` checkpoint).
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("bert.").map(str::to_owned).unwrap_or(k), v))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = BertModel::load(vb, &config).with_context(|| {
            format!(
                "building BERT from `{}` (a tensor is missing or has another shape)",
                weights.display()
            )
        })?;
        Ok(Self {
            tokenizer,
            model,
            device: device.clone(),
            dim: config.hidden_size,
        })
    }

    /// Embedding width (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One L2-normalized embedding per text, in order. A text's embedding does not depend
    /// on the other texts in the call.
    ///
    /// Fails when the tokenizer rejects a text or the forward pass fails.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("tokenizing {} texts: {e}", texts.len()))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i]).collect();
            let rows = self.forward(&batch)?;
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let (flat, mask, len) = pad_batch(batch);
        let n = batch.len();
        let input_ids = Tensor::from_vec(flat, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let token_type_ids = input_ids.zeros_like()?;
        let hidden = self
            .model
            .forward(&input_ids, &token_type_ids, Some(&mask))?;
        let pooled = l2_normalize(&mean_pool(&hidden, &mask)?)?;
        Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}

/// Right-pads token ids to the longest sequence with id 0 (`[PAD]`): the flat ids
/// `[n * len]`, the attention mask (1 real, 0 padding) and `len`.
pub fn pad_batch(batch: &[&[u32]]) -> (Vec<u32>, Vec<u32>, usize) {
    let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * len);
    let mut mask = Vec::with_capacity(batch.len() * len);
    for s in batch {
        ids.extend_from_slice(s);
        ids.resize(ids.len() + len - s.len(), 0);
        mask.extend(std::iter::repeat_n(1, s.len()));
        mask.extend(std::iter::repeat_n(0, len - s.len()));
    }
    (ids, mask, len)
}

/// Mean of `hidden` `[n, len, d]` over the positions where `mask` `[n, len]` is non-zero.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?; // [n, len, 1]
    let sum = hidden.broadcast_mul(&m)?.sum(1)?; // [n, d]
                                                 // sentence-transformers clamps the count at 1e-9; a row always has [CLS] and [SEP].
    let count = m.sum(1)?.maximum(1e-9)?; // [n, 1]
    Ok(sum.broadcast_div(&count)?)
}

/// Each row of `x` `[n, d]` divided by its L2 norm (rows of zeros stay zero).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Cosine similarity of two vectors of equal length; 0 when either is all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_batch_pads_right_with_a_mask() {
        let (ids, mask, len) = pad_batch(&[&[101, 7, 102], &[101, 102], &[101, 5, 6, 102]]);
        assert_eq!(len, 4);
        assert_eq!(ids, [101, 7, 102, 0, 101, 102, 0, 0, 101, 5, 6, 102]);
        assert_eq!(mask, [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1]);
        assert_eq!(pad_batch(&[]), (vec![], vec![], 0));
    }

    #[test]
    fn mean_pool_ignores_padding() -> Result<()> {
        // two rows, three positions, d = 2; row 0 has one padding position holding garbage
        let hidden = Tensor::new(
            &[
                [[1f32, 2.], [3., 4.], [1000., -1000.]],
                [[2., 0.], [4., 2.], [6., 4.]],
            ],
            &Device::Cpu,
        )?;
        let mask = Tensor::new(&[[1u32, 1, 0], [1, 1, 1]], &Device::Cpu)?;
        let pooled = mean_pool(&hidden, &mask)?.to_vec2::<f32>()?;
        assert_eq!(pooled, [[2., 3.], [4., 2.]]);
        Ok(())
    }

    #[test]
    fn l2_normalize_rows() -> Result<()> {
        let x = Tensor::new(&[[3f32, 4.], [0., 0.], [0., -2.]], &Device::Cpu)?;
        let y = l2_normalize(&x)?.to_vec2::<f32>()?;
        assert_eq!(y, [[0.6, 0.8], [0., 0.], [0., -1.]]);
        Ok(())
    }

    #[test]
    fn cosine_values() {
        assert!((cosine(&[1., 0.], &[1., 0.]) - 1.0).abs() < 1e-7);
        assert!(cosine(&[1., 0.], &[0., 3.]).abs() < 1e-7);
        assert!((cosine(&[1., 1.], &[-2., -2.]) + 1.0).abs() < 1e-7);
        assert_eq!(cosine(&[0., 0.], &[1., 2.]), 0.0);
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = std::env::temp_dir().join("linesight-sentence-missing");
        let err = SentenceEncoder::load(&dir, &Device::Cpu)
            .err()
            .expect("no files there")
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("scripts/fetch-weights.sh"),
            "{err}"
        );
    }
}
