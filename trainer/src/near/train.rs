//! Training a scaled-cosine head on frozen, L2-normalized embeddings, four ways:
//!
//! - `prototype`: no training; each class's prototype is the mean embedding of the images
//!   the MLLM gave that name (training-free baseline on the discovered vocabulary);
//! - `naive`: cross-entropy on each image's own (most frequent) MLLM class;
//! - `vote`: cross-entropy on the kNN vote of each candidate set (refine's target);
//! - `near`: NeaR, in rounds (see `train_near`): the head starts from the prototypes of
//!   the own names; each round a two-component Gaussian mixture ([`crate::gmm`]) on the
//!   per-sample losses splits clean (low loss) from noisy images; clean images keep their
//!   name, noisy and unnamed ones get targets refined from the model's prediction restricted
//!   to their candidate set (`q_i * p_i`, the partial-label posterior), mixed with their
//!   neighbours' targets and sharpened; the head is refit to the combined targets.
//!
//! `naive` and `vote` start from the prototypes of their targets, so before the first step
//! `naive` is the `prototype` baseline.

use crate::bounds::{Bound, BoundError, Checker};
use crate::gmm::Gmm2;
use crate::head::CosineHead;
use crate::knn::Neighbour;
use crate::near::candidates::Own;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};

/// Training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// NeaR: candidate-set warm-up, GMM clean/noisy split, refined targets.
    Near,
    /// Cross-entropy on the kNN vote (refine's target).
    Vote,
    /// Cross-entropy on the raw (canonicalised) MLLM names.
    Naive,
    /// No training: class prototypes of the raw MLLM names.
    Prototype,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Near => "near",
            Method::Vote => "vote",
            Method::Naive => "naive",
            Method::Prototype => "prototype",
        }
    }
}

/// Training settings. Defaults measured on cub26 (docs/near.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    pub method: Method,
    /// Passes over the training images.
    pub epochs: usize,
    /// `near`: rounds of target refinement (GMM split, refined targets, head refit).
    pub rounds: usize,
    /// `near`: logit scale of the predictions that refine targets and whose per-sample
    /// losses the GMM splits (sharper than the head's `scale`; measured on cub26).
    pub refine_scale: f32,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch: usize,
    /// Logit scale of the cosine head.
    pub scale: f32,
    /// `near`: posterior of the low-loss component at or above which a sample is clean.
    pub gmm_threshold: f64,
    /// `near`: share of a noisy sample's refined target taken from its neighbours.
    pub neighbour_mix: f32,
    /// `near`: temperature that sharpens refined targets (1 = none, smaller = sharper).
    pub sharpen: f32,
    /// `near`: weight of the noisy samples' loss against the clean samples'.
    pub noisy_weight: f32,
    /// Seed of the batch order.
    pub seed: u64,
    /// Backbone stages fine-tuned with the head after the method settled the targets
    /// (0: frozen backbone, head only; 1: MobileNetV2's last 1x1 convolution; 2: also
    /// its last inverted-residual block; ...). MobileNetV2 only.
    pub trainable_blocks: usize,
    /// Fine-tuning passes over the images (one augmented view of each per pass).
    pub finetune_epochs: usize,
    /// Fine-tuning learning rate (AdamW) of the backbone's stages.
    pub finetune_lr: f64,
    /// Fine-tuning learning rate of the head (equal to `finetune_lr`: one rate for all).
    pub finetune_head_lr: f64,
    /// Fine-tuning images per step.
    pub finetune_batch: usize,
    /// Augmented views per image the frozen trunk runs on once (cached); each epoch
    /// trains on one of them per image.
    pub finetune_views: usize,
    /// Epochs of linear learning-rate warm-up (0: none).
    pub finetune_warmup: usize,
    /// Cosine decay of the learning rate to 0 after the warm-up (false: constant).
    pub finetune_cosine: bool,
    /// Label smoothing of the targets (0: none).
    pub finetune_label_smoothing: f32,
    /// AdamW weight decay of the fine-tuned weights (0: none).
    pub finetune_weight_decay: f64,
    /// Decay of an exponential moving average of the weights, updated every step; the
    /// average is what is scored and kept (0: no average).
    pub finetune_ema: f64,
    /// Share of the trained images held out (by the seed) to choose the epoch whose
    /// weights are kept, scored against the method's settled targets (0: keep the last).
    pub finetune_holdout: f64,
    /// Stop after this many epochs without a better held-out score (0: run every epoch).
    pub finetune_patience: usize,
    /// Weigh each image's loss by its target's total weight (near's noisy weight) times
    /// its confidence (the largest share of its target); false: every image counts 1.
    pub finetune_image_weights: bool,
    /// Augmentation of the views (`[train.augment]`).
    pub augment: crate::augment::AugmentSettings,
    /// `near`: an expert-verified image counts this many times in its class's prototype.
    pub anchor_weight: f32,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            method: Method::Near,
            epochs: 40,
            rounds: 8,
            refine_scale: 20.0,
            lr: 0.01,
            weight_decay: 1e-4,
            batch: 64,
            scale: 20.0,
            gmm_threshold: 0.5,
            neighbour_mix: 0.5,
            sharpen: 1.0,
            noisy_weight: 1.0,
            seed: 0,
            trainable_blocks: 0,
            finetune_epochs: 30,
            finetune_lr: 1e-4,
            finetune_head_lr: 1e-3,
            finetune_batch: 32,
            finetune_views: 4,
            finetune_warmup: 2,
            finetune_cosine: true,
            finetune_label_smoothing: 0.1,
            finetune_weight_decay: 1e-4,
            finetune_ema: 0.0,
            finetune_holdout: 0.1,
            finetune_patience: 0,
            finetune_image_weights: true,
            augment: crate::augment::AugmentSettings::default(),
            anchor_weight: 1.0,
        }
    }
}

impl TrainSettings {
    /// `trainable_blocks`: 0 (frozen) up to the stages MobileNetV2 has, its 17
    /// inverted-residual blocks and `features.18`.
    pub const TRAINABLE_BLOCKS: Bound = Bound::between(0.0, 18.0);
    /// `finetune_views`: 1 up to 64 (each view of each image is kept in memory).
    pub const FINETUNE_VIEWS: Bound = Bound::between(1.0, 64.0);
    /// `finetune_ema`: 0 (off) up to 0.9999.
    pub const FINETUNE_EMA: Bound = Bound::between(0.0, 0.9999);
    /// `finetune_holdout`: 0 (off) up to half of the images.
    pub const FINETUNE_HOLDOUT: Bound = Bound::between(0.0, 0.5);

    /// Checks every number against its range, naming a setting as `{prefix}{key}`
    /// (`[train] lr` in a pipeline file, `lr` in a training settings file). Called when a
    /// config is read and again by [`train`], so no NaN, infinity or out-of-range value
    /// reaches the training loop or the checkpoint.
    pub fn validate(&self, prefix: &str) -> Result<(), BoundError> {
        Checker::new(prefix)
            .check("epochs", self.epochs, Bound::AT_LEAST_ONE)
            .check("rounds", self.rounds, Bound::AT_LEAST_ONE)
            .check("refine_scale", self.refine_scale, Bound::POSITIVE)
            .check("lr", self.lr, Bound::POSITIVE)
            .check("weight_decay", self.weight_decay, Bound::NON_NEGATIVE)
            .check("batch", self.batch, Bound::AT_LEAST_ONE)
            .check("scale", self.scale, Bound::POSITIVE)
            .check("gmm_threshold", self.gmm_threshold, Bound::UNIT)
            .check("neighbour_mix", self.neighbour_mix, Bound::UNIT)
            .check("sharpen", self.sharpen, Bound::POSITIVE)
            .check("noisy_weight", self.noisy_weight, Bound::NON_NEGATIVE)
            .check(
                "trainable_blocks",
                self.trainable_blocks,
                Self::TRAINABLE_BLOCKS,
            )
            .check("finetune_epochs", self.finetune_epochs, Bound::AT_LEAST_ONE)
            .check("finetune_lr", self.finetune_lr, Bound::POSITIVE)
            .check("finetune_head_lr", self.finetune_head_lr, Bound::POSITIVE)
            .check("finetune_batch", self.finetune_batch, Bound::AT_LEAST_ONE)
            .check("finetune_views", self.finetune_views, Self::FINETUNE_VIEWS)
            .check("finetune_warmup", self.finetune_warmup, Bound::NON_NEGATIVE)
            .check(
                "finetune_label_smoothing",
                self.finetune_label_smoothing,
                Bound::between(0.0, 0.5),
            )
            .check(
                "finetune_weight_decay",
                self.finetune_weight_decay,
                Bound::NON_NEGATIVE,
            )
            .check("finetune_ema", self.finetune_ema, Self::FINETUNE_EMA)
            .check(
                "finetune_holdout",
                self.finetune_holdout,
                Self::FINETUNE_HOLDOUT,
            )
            .check(
                "finetune_patience",
                self.finetune_patience,
                Bound::NON_NEGATIVE,
            )
            .check("anchor_weight", self.anchor_weight, Bound::POSITIVE)
            .finish()?;
        self.augment.validate(prefix)
    }
}

/// What the head trains on.
pub struct TrainData<'a> {
    /// `n * dim` values, rows L2-normalized.
    pub x: &'a [f32],
    pub n: usize,
    pub dim: usize,
    pub classes: usize,
    /// Own classes of each image (MLLM answers that name a class, by share).
    pub own: &'a [Own],
    /// Weighted candidate sets (refine's).
    pub candidates: &'a [Vec<(usize, f32)>],
    pub neighbours: &'a [Vec<Neighbour>],
    /// Expert-verified classes (image, class): always clean, never refined.
    pub verified: &'a [(usize, usize)],
}

/// One epoch's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    /// `near` after warm-up: share of samples judged clean.
    pub clean_share: Option<f64>,
    /// `near` after warm-up: the fitted mixture.
    pub gmm: Option<Gmm2>,
    /// Fine-tuning: held-out agreement with the method's targets after this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_agreement: Option<f64>,
}

/// A trained head and what training decided per image.
pub struct Trained {
    pub head: CosineHead,
    /// Final training target of each image (None: not trained on).
    pub targets: Vec<Option<usize>>,
    /// `near`: each image's posterior of being clean at the last epoch.
    pub clean: Vec<Option<f32>>,
    /// The final training targets as weights, `n * k` (what fine-tuning trains on).
    pub soft_targets: Vec<f32>,
    pub history: Vec<EpochLog>,
}

fn argmax(v: &[f32]) -> Option<usize> {
    v.iter()
        .enumerate()
        .filter(|e| *e.1 > 0.0)
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|e| e.0)
}

/// Trains the head. Fails when a setting is out of range, no image has a target, the data
/// are inconsistent or hold non-finite values, or the loss stops being finite (naming the
/// epoch); a diverged head is never returned.
pub fn train(d: &TrainData, s: &TrainSettings, device: &Device) -> Result<Trained> {
    s.validate("")?;
    let (n, k) = (d.n, d.classes);
    if let Some(i) = d.x.iter().position(|v| !v.is_finite()) {
        bail!(
            "the embedding of image {} holds a non-finite value ({}); the backbone weights or the image are broken",
            i / d.dim.max(1),
            d.x[i]
        );
    }
    if d.x.len() != n * d.dim || d.own.len() != n || d.candidates.len() != n {
        bail!("training data of inconsistent sizes");
    }
    let mut own_top: Vec<Option<usize>> = d
        .own
        .iter()
        .map(|o| {
            o.iter()
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|e| e.0)
        })
        .collect();
    let mut q = vec![0f32; n * k];
    for (i, set) in d.candidates.iter().enumerate() {
        for &(c, w) in set {
            q[i * k + c] += w;
        }
    }
    let mut vote: Vec<Option<usize>> = (0..n).map(|i| argmax(&q[i * k..(i + 1) * k])).collect();
    for &(i, c) in d.verified {
        vote[i] = Some(c);
        own_top[i] = Some(c);
        q[i * k..(i + 1) * k].fill(0.0);
        q[i * k + c] = 1.0;
    }
    let x = Tensor::from_slice(d.x, (n, d.dim), device)?;
    match s.method {
        Method::Prototype => {
            let soft_targets = onehot(&own_top, k);
            let head = prototypes_soft(&x, &soft_targets, k, s.scale, device)?;
            Ok(Trained {
                head,
                targets: own_top,
                clean: vec![None; n],
                history: Vec::new(),
                soft_targets,
            })
        }
        Method::Naive => train_gradient(&x, &own_top, k, s, device),
        Method::Vote => train_gradient(&x, &vote, k, s, device),
        Method::Near => train_near(d, &x, &q, &own_top, s, device),
    }
}

fn onehot(t: &[Option<usize>], k: usize) -> Vec<f32> {
    let mut m = vec![0f32; t.len() * k];
    for (i, c) in t.iter().enumerate() {
        if let Some(c) = c {
            m[i * k + c] = 1.0;
        }
    }
    m
}

/// NeaR's rounds. The head starts from the prototypes of the images' own names. Each
/// round: predictions `p = softmax(refine_scale * cos)`; per-sample loss `-log p[own]` of
/// the named images; a two-component GMM on those losses; clean images keep their own name
/// as a one-hot target; the others (and unnamed images) get `q * p` restricted to their
/// candidates, mixed with their neighbours' previous targets, sharpened; the head is refit
/// to the combined targets. The refit is the closed-form minimiser of the cosine head's
/// loss on normalized embeddings in the prototype regime (each row the target-weighted mean
/// embedding): on cub26 every gradient-trained head on noisy targets scored below the
/// prototype classifier (docs/near.md), so near refits prototypes instead.
fn train_near(
    d: &TrainData,
    x: &Tensor,
    q: &[f32],
    own_top: &[Option<usize>],
    s: &TrainSettings,
    device: &Device,
) -> Result<Trained> {
    let (n, k) = (d.n, d.classes);
    let verified: Vec<bool> = {
        let mut v = vec![false; n];
        for &(i, _) in d.verified {
            v[i] = true;
        }
        v
    };
    let mut targets = onehot(own_top, k);
    let anchored = |t: &[f32]| -> Vec<f32> {
        let mut t = t.to_vec();
        for &(i, _) in d.verified {
            t[i * k..(i + 1) * k]
                .iter_mut()
                .for_each(|v| *v *= s.anchor_weight);
        }
        t
    };
    let mut head = prototypes_soft(x, &anchored(&targets), k, s.scale, device)?;
    // Unnamed images start from their candidate sets.
    for i in 0..n {
        if own_top[i].is_none() {
            targets[i * k..(i + 1) * k].copy_from_slice(&q[i * k..(i + 1) * k]);
        }
    }
    let mut clean_post: Vec<Option<f32>> = vec![None; n];
    let mut history = Vec::new();
    for round in 0..s.rounds {
        let p = probs(&head.weight, x, s.refine_scale)?;
        let named: Vec<usize> = (0..n).filter(|&i| own_top[i].is_some()).collect();
        let losses: Vec<f64> = named
            .iter()
            .map(|&i| -(p[i * k + own_top[i].unwrap_or(0)].max(1e-12) as f64).ln())
            .collect();
        let g = Gmm2::fit(&losses, 50);
        let mut clean = vec![false; n];
        for (&i, &l) in named.iter().zip(&losses) {
            let post = if verified[i] {
                1.0
            } else {
                g.map_or(1.0, |g| g.p_low(l))
            };
            clean_post[i] = Some(post as f32);
            clean[i] = verified[i] || post >= s.gmm_threshold;
        }
        let prev = targets.clone();
        let mut loss_sum = 0.0;
        for i in 0..n {
            let qi = &q[i * k..(i + 1) * k];
            let row = &mut targets[i * k..(i + 1) * k];
            if clean[i] {
                row.fill(0.0);
                row[own_top[i].unwrap_or(0)] = 1.0;
                continue;
            }
            if qi.iter().all(|&v| v <= 0.0) {
                row.fill(0.0);
                continue;
            }
            // Model prediction restricted to the candidates.
            let mut r: Vec<f32> = (0..k).map(|c| qi[c] * p[i * k + c]).collect();
            normalize_or(&mut r, qi);
            // Neighbours' previous targets, similarity-weighted, on i's candidates.
            let mut nb = vec![0f32; k];
            for e in &d.neighbours[i] {
                let sim = e.similarity.max(0.0);
                let row_j = &prev[e.index * k..(e.index + 1) * k];
                for c in 0..k {
                    nb[c] += sim * row_j[c] * f32::from(qi[c] > 0.0);
                }
            }
            if nb.iter().any(|&v| v > 0.0) {
                normalize_or(&mut nb, qi);
                for c in 0..k {
                    r[c] = (1.0 - s.neighbour_mix) * r[c] + s.neighbour_mix * nb[c];
                }
            }
            let inv_t = 1.0 / s.sharpen.max(1e-3);
            r.iter_mut().for_each(|v| *v = v.powf(inv_t));
            normalize_or(&mut r, qi);
            for c in 0..k {
                let w = s.noisy_weight * r[c];
                row[c] = w;
                if w > 0.0 {
                    loss_sum -= f64::from(w) * f64::from(p[i * k + c].max(1e-12)).ln();
                }
            }
        }
        for i in 0..n {
            if clean[i] {
                loss_sum -= f64::from(p[i * k + own_top[i].unwrap_or(0)].max(1e-12)).ln();
            }
        }
        head = prototypes_soft(x, &anchored(&targets), k, s.scale, device)?;
        let loss = loss_sum / n.max(1) as f64;
        finite_loss(loss, "round", round)?;
        history.push(EpochLog {
            epoch: round,
            loss,
            clean_share: Some(
                clean.iter().filter(|&&c| c).count() as f64 / named.len().max(1) as f64,
            ),
            gmm: g,
            holdout_agreement: None,
        });
    }
    let final_targets = (0..n)
        .map(|i| argmax(&targets[i * k..(i + 1) * k]))
        .collect();
    Ok(Trained {
        head,
        targets: final_targets,
        clean: clean_post,
        history,
        soft_targets: targets,
    })
}

/// Cross-entropy training of the cosine head (AdamW, mini-batches) on hard targets,
/// starting from their prototypes: `naive` and `vote`.
fn train_gradient(
    x: &Tensor,
    base: &[Option<usize>],
    k: usize,
    s: &TrainSettings,
    device: &Device,
) -> Result<Trained> {
    let n = base.len();
    let targets = onehot(base, k);
    let init = prototypes_soft(x, &targets, k, s.scale, device)?;
    let w = Var::from_tensor(&init.weight)?;
    let mut opt = AdamW::new(
        vec![w.clone()],
        ParamsAdamW {
            lr: s.lr,
            weight_decay: s.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let trainable: Vec<usize> = (0..n).filter(|&i| base[i].is_some()).collect();
    if trainable.is_empty() {
        bail!("no image has a training target");
    }
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut history = Vec::new();
    for epoch in 0..s.epochs {
        let mut order = trainable.clone();
        order.shuffle(&mut rng);
        let mut total = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(s.batch.max(1)) {
            let ids: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
            let ids_t = Tensor::from_vec(ids, chunk.len(), device)?;
            let xb = x.index_select(&ids_t, 0)?;
            let tb: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| targets[i * k..(i + 1) * k].iter().copied())
                .collect();
            let tb = Tensor::from_vec(tb, (chunk.len(), k), device)?;
            let logits = cosine_logits(w.as_tensor(), &xb, s.scale)?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let loss = (tb * logp)?.sum(D::Minus1)?.neg()?.mean_all()?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            finite_loss(value, "epoch", epoch)?;
            opt.backward_step(&loss)?;
            total += value;
            batches += 1;
        }
        history.push(EpochLog {
            epoch,
            loss: total / batches.max(1) as f64,
            clean_share: None,
            gmm: None,
            holdout_agreement: None,
        });
    }
    Ok(Trained {
        head: CosineHead {
            weight: crate::head::l2_normalize(w.as_tensor())?.detach(),
            scale: s.scale,
        },
        targets: base.to_vec(),
        clean: vec![None; n],
        history,
        soft_targets: targets,
    })
}

/// Fails when a training loss is NaN or infinite: the step it came from would write
/// non-finite weights, so training stops and names the epoch (or round).
pub fn finite_loss(loss: f64, unit: &str, index: usize) -> Result<()> {
    if !loss.is_finite() {
        bail!(
            "training diverged: the loss became {loss} in {unit} {index}; no checkpoint is written \
             (lower the learning rate, or check the embeddings and targets)"
        );
    }
    Ok(())
}

fn normalize_or(r: &mut [f32], fallback: &[f32]) {
    let sum: f32 = r.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        r.iter_mut().for_each(|v| *v /= sum);
    } else {
        r.copy_from_slice(fallback);
    }
}

/// `scale * x . normalize(w)^T` for rows of `x` already normalized.
pub fn cosine_logits(w: &Tensor, x: &Tensor, scale: f32) -> candle_core::Result<Tensor> {
    let wn = crate::head::l2_normalize(w)?;
    x.matmul(&wn.t()?)? * scale as f64
}

/// Softmax probabilities of every row, `[n * k]`.
fn probs(w: &Tensor, x: &Tensor, scale: f32) -> Result<Vec<f32>> {
    let logits = cosine_logits(w, x, scale)?.detach();
    Ok(candle_nn::ops::softmax(&logits, D::Minus1)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Prototypes of soft targets (`n * k`, row weights): row c is the target-weighted mean of
/// the (normalized) embeddings, normalized. A class with no weight starts from a seeded
/// random unit vector, with a warning.
fn prototypes_soft(
    x: &Tensor,
    targets: &[f32],
    k: usize,
    scale: f32,
    device: &Device,
) -> Result<CosineHead> {
    let n = x.dims()[0];
    let t = Tensor::from_slice(targets, (n, k), device)?;
    let mut sums = t.t()?.matmul(x)?.to_vec2::<f32>()?;
    let mut rng = StdRng::seed_from_u64(k as u64);
    for (c, row) in sums.iter_mut().enumerate() {
        if row.iter().all(|&v| v == 0.0) {
            tracing::warn!(
                class = c,
                "class has no image to start its prototype; random start"
            );
            for v in row.iter_mut() {
                *v = rand::Rng::random::<f32>(&mut rng) - 0.5;
            }
        }
    }
    let w = Tensor::from_vec(sums.concat(), (k, x.dims()[1]), device)?.to_dtype(DType::F32)?;
    Ok(CosineHead {
        weight: crate::head::l2_normalize(&w)?,
        scale,
    })
}

/// Top-1 class of each row of `x` (`n * dim`, normalized or not).
pub fn predict(head: &CosineHead, x: &[f32], n: usize, dim: usize) -> Result<Vec<usize>> {
    let xt = Tensor::from_slice(x, (n, dim), head.weight.device())?;
    let logits = head.forward(&xt)?;
    Ok(logits
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|v| v as usize)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knn::{cosine_knn, normalize_rows};
    use crate::near::candidates::{candidate_sets, CandidateSettings};
    use rand::Rng;

    /// Clustered embeddings: `classes` close class means, `per` images each, normalized.
    /// `noise` seeds the per-image noise, `seed` the class means.
    fn clusters(
        classes: usize,
        per: usize,
        dim: usize,
        seed: u64,
        noise: u64,
    ) -> (Vec<f32>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let shared: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        let means: Vec<Vec<f32>> = (0..classes)
            .map(|_| {
                shared
                    .iter()
                    .map(|s| s + 0.6 * (rng.random::<f32>() - 0.5))
                    .collect()
            })
            .collect();
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut rng = StdRng::seed_from_u64(noise);
        for i in 0..classes * per {
            let c = i % classes;
            y.push(c);
            x.extend(
                means[c]
                    .iter()
                    .map(|m| m + 1.0 * (rng.random::<f32>() - 0.5)),
            );
        }
        normalize_rows(&mut x, dim);
        (x, y)
    }

    fn accuracy(head: &CosineHead, x: &[f32], y: &[usize], dim: usize) -> f64 {
        let p = predict(head, x, y.len(), dim).unwrap();
        p.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64
    }

    #[test]
    fn near_beats_the_raw_names_on_noisy_clusters() {
        let (classes, dim) = (8, 48);
        let (x, y) = clusters(classes, 60, dim, 11, 1);
        let n = y.len();
        let mut rng = StdRng::seed_from_u64(99);
        // 50% right; wrong names go to a fixed "sibling" pair partner or a random class.
        let own: Vec<Own> = y
            .iter()
            .map(|&c| {
                let u = rng.random::<f64>();
                if u < 0.5 {
                    vec![(c, 1.0)]
                } else if u < 0.8 {
                    vec![(c ^ 1, 1.0)]
                } else if u < 0.9 {
                    vec![(rng.random_range(0..classes), 1.0)]
                } else {
                    Vec::new()
                }
            })
            .collect();
        let nbs = cosine_knn(&x, n, dim, 10).unwrap();
        let sets = candidate_sets(&own, &nbs, &CandidateSettings::default());
        let data = TrainData {
            x: &x,
            n,
            dim,
            classes,
            own: &own,
            candidates: &sets,
            neighbours: &nbs,
            verified: &[],
        };
        let run = |method| {
            let s = TrainSettings {
                method,
                ..TrainSettings::default()
            };
            train(&data, &s, &Device::Cpu).unwrap()
        };
        let near = run(Method::Near);
        let proto = run(Method::Prototype);
        let target_acc = |t: &[Option<usize>]| {
            t.iter().zip(&y).filter(|(a, b)| **a == Some(**b)).count() as f64 / n as f64
        };
        let (near_t, own_t) = (target_acc(&near.targets), target_acc(&proto.targets));
        // Held-out points: same class means, fresh noise.
        let (xh, yh) = clusters(classes, 30, dim, 11, 2);
        let (near_acc, proto_acc) = (
            accuracy(&near.head, &xh, &yh, dim),
            accuracy(&proto.head, &xh, &yh, dim),
        );
        eprintln!("targets right: near {near_t:.3}, own names {own_t:.3}; held-out: near {near_acc:.3}, prototype {proto_acc:.3}");
        assert!(near_t > own_t + 0.1, "near targets {near_t} vs own {own_t}");
        assert!(
            near_acc >= proto_acc,
            "near {near_acc} vs prototype {proto_acc}"
        );
        assert_eq!(near.history.len(), TrainSettings::default().rounds);
        assert!(near.history.iter().all(|h| h.clean_share.is_some()));
    }

    #[test]
    fn verified_labels_are_kept_and_empty_data_is_refused() {
        let (x, y) = clusters(3, 10, 8, 1, 1);
        let n = y.len();
        let own: Vec<Own> = vec![Vec::new(); n];
        let sets = vec![Vec::new(); n];
        let nbs = vec![Vec::new(); n];
        let mut data = TrainData {
            x: &x,
            n,
            dim: 8,
            classes: 3,
            own: &own,
            candidates: &sets,
            neighbours: &nbs,
            verified: &[],
        };
        let s = TrainSettings {
            method: Method::Naive,
            ..TrainSettings::default()
        };
        assert!(train(&data, &s, &Device::Cpu).is_err());
        let verified = [(0, y[0]), (1, y[1]), (2, y[2])];
        data.verified = &verified;
        let t = train(&data, &TrainSettings::default(), &Device::Cpu).unwrap();
        for &(i, c) in &verified {
            assert_eq!(t.targets[i], Some(c));
        }
    }
}
