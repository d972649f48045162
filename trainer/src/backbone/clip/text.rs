//! CLIP's text tower (HF `CLIPTextTransformer` plus `text_projection`, as in
//! `CLIPTextModelWithProjection`).
//!
//! The forward pass: token embedding plus the first `L` rows of the position embedding,
//! the shared encoder (see [`super::vision`]'s module doc for one block) with a causal
//! additive mask (`-inf` above the diagonal), `final_layer_norm`, the hidden state at each
//! row's end-of-text position, and `text_projection` (no bias).
//!
//! The end-of-text position is the argmax of the row's token ids (first one on ties), the
//! OpenAI convention: its BPE gives `<|endoftext|>` the largest id (49407), and HF does the
//! same for the original checkpoints. No padding mask is applied: with the causal mask,
//! tokens after the end-of-text token cannot change the pooled state.

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use super::{join, push_layer_norm, push_linear, ClipEncoder, ClipTextConfig, LayerNorm};

/// Token and position embeddings (HF `CLIPTextEmbeddings`); keys under
/// `text_model.embeddings`.
#[derive(Debug, Clone)]
pub(crate) struct TextEmbeddings {
    /// `token_embedding.weight`, `[vocab, D]`.
    pub(crate) token_embedding: Tensor,
    /// `position_embedding.weight`, `[max_positions, D]`.
    pub(crate) position_embedding: Tensor,
}

impl TextEmbeddings {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let token_embedding = vb.pp("token_embedding").get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "weight",
            init,
        )?;
        let position_embedding = vb.pp("position_embedding").get_with_hints(
            (cfg.max_position_embeddings, cfg.hidden_size),
            "weight",
            init,
        )?;
        Ok(Self {
            token_embedding,
            position_embedding,
        })
    }

    /// `ids` `[N, L]` (u32) to `[N, L, D]`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, l) = ids.dims2()?;
        let d = self.token_embedding.dim(1)?;
        let tokens = self
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, l, d))?;
        tokens.broadcast_add(&self.position_embedding.narrow(0, 0, l)?)
    }

    fn named_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((
            join(prefix, "token_embedding.weight"),
            self.token_embedding.clone(),
        ));
        out.push((
            join(prefix, "position_embedding.weight"),
            self.position_embedding.clone(),
        ));
    }
}

/// CLIP's text tower: token ids `[N, L]` to text embeddings `[N, projection_dim]`.
///
/// Keys: `text_model.{embeddings, encoder.layers.{i}, final_layer_norm}.*` and
/// `text_projection.weight`.
#[derive(Debug, Clone)]
pub struct ClipTextTower {
    pub(crate) embeddings: TextEmbeddings,
    pub(crate) encoder: ClipEncoder,
    pub(crate) final_layer_norm: LayerNorm,
    /// `text_projection`, `[projection_dim, D]`, no bias.
    pub(crate) projection: Linear,
    pub(crate) config: ClipTextConfig,
}

impl ClipTextTower {
    /// Builds the tower through `vb`, whose prefix must be the checkpoint's root (the tower
    /// spans `text_model.*` and `text_projection.*`).
    ///
    /// Fails when the builder cannot provide a tensor, or when the width is not a multiple
    /// of the number of heads.
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig, projection_dim: usize) -> Result<Self> {
        let vbm = vb.pp("text_model");
        let d = cfg.hidden_size;
        Ok(Self {
            embeddings: TextEmbeddings::new(vbm.pp("embeddings"), cfg)?,
            encoder: ClipEncoder::new(vbm.pp("encoder"), &cfg.encoder())?,
            final_layer_norm: LayerNorm::load(d, cfg.layer_norm_eps, vbm.pp("final_layer_norm"))?,
            projection: candle_nn::linear_no_bias(d, projection_dim, vb.pp("text_projection"))?,
            config: cfg.clone(),
        })
    }

    /// The configuration the tower was built with.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The final-layer-normed hidden state at each row's end-of-text position, `[N, D]`.
    ///
    /// `input_ids` is `[N, L]` of an integer dtype (u32, or i64/u8, converted), with
    /// `1 <= L <= max_position_embeddings` and every id below `vocab_size`. Fails otherwise.
    pub fn forward_pooled(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (ids, id_rows) = self.check_ids(input_ids)?;
        let (n, l) = ids.dims2()?;
        let xs = self.embeddings.forward(&ids)?;
        let mask = causal_mask(l, xs.dtype(), xs.device())?;
        let xs = self.encoder.forward(&xs, Some(&mask))?;
        let xs = self.final_layer_norm.forward(&xs)?;
        let d = xs.dim(2)?;
        let rows = Tensor::from_vec(eos_rows(&id_rows, l), n, xs.device())?;
        xs.reshape((n * l, d))?.index_select(&rows, 0)
    }

    /// Text embeddings `[N, projection_dim]`, not normalised.
    ///
    /// Fails on the inputs [`Self::forward_pooled`] refuses.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.projection.forward(&self.forward_pooled(input_ids)?)
    }

    /// Every weight under its checkpoint name, in forward order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.embeddings
            .named_tensors("text_model.embeddings", &mut out);
        self.encoder.named_tensors("text_model.encoder", &mut out);
        push_layer_norm(
            &mut out,
            "text_model.final_layer_norm",
            &self.final_layer_norm,
        );
        push_linear(&mut out, "text_projection", &self.projection);
        out
    }

    /// Checks the shape, dtype and range of `input_ids`; returns them as a u32 tensor and
    /// as host rows.
    fn check_ids(&self, input_ids: &Tensor) -> Result<(Tensor, Vec<Vec<u32>>)> {
        let (_, l) = input_ids.dims2()?;
        let max = self.config.max_position_embeddings;
        if l == 0 || l > max {
            bail!("CLIP text: sequence length {l}, the model takes 1 to {max} tokens")
        }
        let ids = match input_ids.dtype() {
            DType::U32 => input_ids.clone(),
            DType::U8 | DType::I64 => input_ids.to_dtype(DType::U32)?,
            other => bail!("CLIP text: token ids must be integers, got {other:?}"),
        };
        let rows = ids.to_vec2::<u32>()?;
        let largest = rows.iter().flatten().copied().max().unwrap_or(0);
        if largest as usize >= self.config.vocab_size {
            bail!(
                "CLIP text: token id {largest} is out of the vocabulary of {}",
                self.config.vocab_size
            )
        }
        Ok((ids, rows))
    }
}

impl Module for ClipTextTower {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ClipTextTower::forward(self, xs)
    }
}

/// The additive causal mask `[L, L]`: 0 on and below the diagonal, `-inf` above.
fn causal_mask(l: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (l, l), device)?.to_dtype(dtype)
}

/// For each row of `ids` (`N` rows of `L`), the flat index `row * L + argmax(row)`
/// (the first maximum).
fn eos_rows(ids: &[Vec<u32>], l: usize) -> Vec<u32> {
    ids.iter()
        .enumerate()
        .map(|(r, row)| {
            let mut best = 0;
            for (j, &id) in row.iter().enumerate() {
                if id > row[best] {
                    best = j;
                }
            }
            (r * l + best) as u32
        })
        .collect()
}
