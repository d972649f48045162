//! Fine-tuning a backbone's last stages together with the head, on the targets a training
//! method settled on (`near`'s refined targets, `vote`'s, `naive`'s).
//!
//! The CPU budget shapes it: the frozen trunk is most of the cost, so it runs once on
//! `finetune_views` augmented views of each image ([`views`], cached by content on disk
//! beside the embedding cache), and the epochs train only the tail + head, each epoch on
//! one of the kept views per image (drawn by the training seed). The tail's variables are
//! the model's own (`TunableEncoder::tail_vars`), so the tuned model exports as it trained.
//!
//! The recipe, each piece a setting that can be turned off (`TrainSettings::finetune_*`,
//! measured in docs/near.md, "Fine-tuning"): a lower learning rate for the backbone than
//! for the head, linear warm-up then cosine decay, label smoothing, AdamW weight decay, an
//! exponential moving average of the weights, a held-out share of the trained images that
//! chooses the kept epoch (scored against the method's targets: no ground truth), and
//! per-image loss weights from the method's targets.

pub mod views;

use crate::backbone::TunableEncoder;
use crate::embed::progress_bar;
use crate::head::{l2_normalize, CosineHead};
use crate::near::train::{cosine_logits, finite_loss, EpochLog, TrainSettings};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use views::{trunk_views, ViewCache};

/// The images to fine-tune on.
pub struct FinetuneImages<'a> {
    pub paths: &'a [PathBuf],
    /// sha256 (hex) of each image's bytes: the augmentation's image key and the view
    /// cache's file name.
    pub shas: &'a [String],
    /// `n * k` target weights per image; rows of zero are not trained on.
    pub targets: &'a [f32],
}

/// Where the views are cached: the embedding cache folder and the weights' sha256.
pub struct ViewCacheAt<'a> {
    pub dir: &'a Path,
    pub weights_sha256: &'a str,
}

/// What fine-tuning did and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneReport {
    /// Views the trunk ran on in this run (the rest came from the cache).
    pub trunk_views_computed: usize,
    pub trunk_views_total: usize,
    pub trunk_seconds: f64,
    /// Views per second through decode + augmentation + trunk (0 when all were cached).
    pub trunk_views_per_second: f64,
    pub epochs_run: usize,
    pub tail_seconds: f64,
    /// Image-epochs per second of the tail + head training.
    pub tail_images_per_second: f64,
    pub train_images: usize,
    pub holdout_images: usize,
    /// The epoch whose weights were kept (the last when nothing is held out).
    pub kept_epoch: usize,
    /// Held-out agreement with the method's targets of the kept weights.
    pub holdout_agreement: Option<f64>,
}

/// Fine-tunes `s.trainable_blocks` stages of `model` and the head. Updates the model's
/// variables in place (to the kept epoch's weights) and returns the tuned head, one log
/// entry per epoch and the report.
pub fn finetune(
    model: &dyn TunableEncoder,
    images: &FinetuneImages,
    head: &CosineHead,
    s: &TrainSettings,
    cache: Option<ViewCacheAt>,
    device: &Device,
) -> Result<(CosineHead, Vec<EpochLog>, FinetuneReport)> {
    let n = images.paths.len();
    let k = head.classes();
    let targets = images.targets;
    if targets.len() != n * k || images.shas.len() != n {
        bail!(
            "{} targets and {} hashes for {n} images of {k} classes",
            targets.len(),
            images.shas.len()
        );
    }
    let blocks = s.trainable_blocks;
    let rows: Vec<usize> = (0..n)
        .filter(|&i| targets[i * k..(i + 1) * k].iter().any(|&v| v > 0.0))
        .collect();
    if rows.is_empty() {
        bail!("no image has a target to fine-tune on");
    }
    let mut rng = StdRng::seed_from_u64(s.seed);
    // Held-out images, by the seed.
    let (train_rows, hold_rows) = {
        let mut shuffled = rows.clone();
        shuffled.shuffle(&mut rng);
        let h = if s.finetune_holdout > 0.0 && rows.len() >= 2 {
            ((rows.len() as f64 * s.finetune_holdout).round() as usize).clamp(1, rows.len() - 1)
        } else {
            0
        };
        let (hold, train) = shuffled.split_at(h);
        let (mut hold, mut train) = (hold.to_vec(), train.to_vec());
        hold.sort_unstable();
        train.sort_unstable();
        (train, hold)
    };
    // Normalized targets (label-smoothed) and per-image weights.
    let eps = s.finetune_label_smoothing;
    let mut soft = vec![0f32; n * k];
    let mut weight = vec![0f32; n];
    let mut hard = vec![0usize; n];
    for &i in &rows {
        let row = &targets[i * k..(i + 1) * k];
        let sum: f32 = row.iter().sum();
        let top = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |e| e.0);
        hard[i] = top;
        // The target's total weight times its confidence (its largest share).
        weight[i] = if s.finetune_image_weights {
            row[top]
        } else {
            1.0
        };
        for c in 0..k {
            soft[i * k + c] = (1.0 - eps) * row[c] / sum + eps / k as f32;
        }
    }

    // The frozen trunk, once: augmented views of the trained images, the evaluation view
    // of the held-out ones.
    let subset = |ids: &[usize]| -> (Vec<PathBuf>, Vec<String>) {
        (
            ids.iter().map(|&i| images.paths[i].clone()).collect(),
            ids.iter().map(|&i| images.shas[i].clone()).collect(),
        )
    };
    let identity = crate::augment::AugmentSettings::identity();
    let view_cache = |aug: &crate::augment::AugmentSettings| -> Result<Option<ViewCache>> {
        cache
            .as_ref()
            .map(|c| ViewCache::new(c.dir, model, c.weights_sha256, blocks, aug))
            .transpose()
    };
    // Views of every image with a target, held out or not: the cache then serves any
    // seed's split.
    let (tp, ts) = subset(&rows);
    let train_views = trunk_views(
        model,
        blocks,
        &s.augment,
        s.finetune_views,
        &tp,
        &ts,
        view_cache(&s.augment)?.as_ref(),
        "views",
        device,
    )?;
    // Row of each trained image in `train_views` (`rows` is sorted).
    let slot: Vec<usize> = train_rows
        .iter()
        .map(|i| rows.binary_search(i).unwrap_or(0))
        .collect();
    let (hp, hs) = subset(&hold_rows);
    let hold_views = trunk_views(
        model,
        blocks,
        &identity,
        1,
        &hp,
        &hs,
        view_cache(&identity)?.as_ref(),
        "held out",
        device,
    )?;
    let trunk_seconds = train_views.seconds + hold_views.seconds;
    let computed = train_views.computed + hold_views.computed;
    tracing::info!(
        views = train_views.h.dim(0)?,
        computed,
        seconds = trunk_seconds,
        "trunk views ready"
    );

    // Variables and optimisers: backbone and head apart (own learning rates). The head
    // trains on the device the tail runs on and comes back on the CPU, where the rest of
    // the trainer (scoring, checkpoint, export) uses it.
    let w = Var::from_tensor(&head.weight.to_device(device)?)?;
    let backbone_vars: Vec<Var> = model
        .tail_vars(blocks)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    if backbone_vars.is_empty() {
        bail!("no backbone variables to fine-tune for trainable_blocks = {blocks}");
    }
    let params = |lr: f64| ParamsAdamW {
        lr,
        weight_decay: s.finetune_weight_decay,
        ..ParamsAdamW::default()
    };
    let mut opt_b = AdamW::new(backbone_vars.clone(), params(s.finetune_lr))?;
    let mut opt_h = AdamW::new(vec![w.clone()], params(s.finetune_head_lr))?;
    let mut all_vars = backbone_vars.clone();
    all_vars.push(w.clone());
    let mut ema: Option<Vec<Tensor>> = (s.finetune_ema > 0.0)
        .then(|| {
            all_vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()
        })
        .transpose()?;

    let batch = s.finetune_batch.max(1);
    let steps_per_epoch = train_rows.len().div_ceil(batch).max(1);
    let total_steps = (s.finetune_epochs * steps_per_epoch).max(1);
    let warm_steps = (s.finetune_warmup * steps_per_epoch).min(total_steps);
    let lr_factor = |step: usize| -> f64 {
        if step < warm_steps {
            (step + 1) as f64 / warm_steps as f64
        } else if s.finetune_cosine {
            let t = (step - warm_steps) as f64 / (total_steps - warm_steps).max(1) as f64;
            0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        } else {
            1.0
        }
    };

    let mut best: Option<(f64, f64, usize, Vec<Tensor>)> = None;
    let mut history = Vec::new();
    let mut step = 0usize;
    let t_tail = Instant::now();
    let mut epochs_run = 0;
    let views = train_views.views;
    let pb = progress_bar((s.finetune_epochs * train_rows.len()) as u64, "finetune");
    for epoch in 0..s.finetune_epochs {
        let mut order: Vec<usize> = (0..train_rows.len()).collect();
        order.shuffle(&mut rng);
        let picks: Vec<u32> = order
            .iter()
            .map(|&j| (slot[j] * views + rng.random_range(0..views)) as u32)
            .collect();
        let (mut total, mut steps) = (0.0, 0);
        for (chunk, pick) in order.chunks(batch).zip(picks.chunks(batch)) {
            opt_b.set_learning_rate(s.finetune_lr * lr_factor(step));
            opt_h.set_learning_rate(s.finetune_head_lr * lr_factor(step));
            let ids = Tensor::from_slice(pick, pick.len(), device)?;
            let feats = model.tail(&train_views.h.index_select(&ids, 0)?, blocks)?;
            let logits = cosine_logits(w.as_tensor(), &l2_normalize(&feats)?, s.scale)?;
            let mut t = Vec::with_capacity(chunk.len() * k);
            let mut wv = Vec::with_capacity(chunk.len());
            for &j in chunk {
                let i = train_rows[j];
                t.extend_from_slice(&soft[i * k..(i + 1) * k]);
                wv.push(weight[i]);
            }
            let wsum: f32 = wv.iter().sum::<f32>().max(1e-12);
            let t = Tensor::from_vec(t, (chunk.len(), k), device)?;
            let wt = Tensor::from_vec(wv, chunk.len(), device)?;
            let per = (t * candle_nn::ops::log_softmax(&logits, D::Minus1)?)?
                .sum(D::Minus1)?
                .neg()?;
            let loss = ((per * wt)?.sum_all()? / f64::from(wsum))?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            finite_loss(value, "fine-tuning epoch", epoch)?;
            let grads = loss.backward()?;
            opt_b.step(&grads)?;
            opt_h.step(&grads)?;
            if let Some(avg) = ema.as_mut() {
                let d = s.finetune_ema;
                for (a, v) in avg.iter_mut().zip(&all_vars) {
                    *a = ((&*a * d)? + (v.as_tensor() * (1.0 - d))?)?.detach();
                }
            }
            step += 1;
            total += value;
            steps += 1;
            pb.inc(chunk.len() as u64);
        }
        epochs_run = epoch + 1;
        let loss = total / steps.max(1) as f64;
        // The weights that count: the average when there is one.
        let current: Vec<Tensor> = match &ema {
            Some(avg) => avg.clone(),
            None => all_vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?,
        };
        let score = if hold_rows.is_empty() {
            None
        } else {
            Some(holdout_score(
                model,
                &backbone_vars,
                &current,
                &hold_views.h,
                &hold_rows,
                &hard,
                &soft,
                k,
                s,
            )?)
        };
        tracing::info!(epoch, loss, holdout = ?score, "fine-tune epoch");
        history.push(EpochLog {
            epoch,
            loss,
            clean_share: None,
            gmm: None,
            holdout_agreement: score.map(|s| s.0),
        });
        let (agree, hold_loss) = score.unwrap_or((0.0, 0.0));
        let better = match &best {
            None => true,
            Some((a, l, _, _)) => {
                hold_rows.is_empty() || agree > *a || (agree == *a && hold_loss < *l)
            }
        };
        if better {
            best = Some((agree, hold_loss, epoch, current));
        } else if s.finetune_patience > 0 {
            let since = epoch - best.as_ref().map_or(epoch, |b| b.2);
            if since >= s.finetune_patience {
                tracing::info!(epoch, "early stop: no better held-out score");
                break;
            }
        }
    }
    pb.finish_and_clear();
    let tail_seconds = t_tail.elapsed().as_secs_f64();
    let Some((agree, _, kept_epoch, kept)) = best else {
        bail!("fine-tuning ran no epoch");
    };
    for (v, t) in all_vars.iter().zip(&kept) {
        v.set(t)?;
    }
    let report = FinetuneReport {
        trunk_views_computed: computed,
        trunk_views_total: train_views.h.dim(0)? + hold_views.h.dim(0)?,
        trunk_seconds,
        trunk_views_per_second: if computed > 0 {
            computed as f64 / trunk_seconds.max(1e-9)
        } else {
            0.0
        },
        epochs_run,
        tail_seconds,
        tail_images_per_second: (epochs_run * train_rows.len()) as f64 / tail_seconds.max(1e-9),
        train_images: train_rows.len(),
        holdout_images: hold_rows.len(),
        kept_epoch,
        holdout_agreement: (!hold_rows.is_empty()).then_some(agree),
    };
    Ok((
        CosineHead {
            weight: l2_normalize(w.as_tensor())?
                .detach()
                .to_device(&Device::Cpu)?,
            scale: s.scale,
        },
        history,
        report,
    ))
}

/// Held-out top-1 agreement with the targets' argmax and mean cross-entropy against the
/// (smoothed) targets, of the weights `weights` (backbone vars then the head); the model's
/// variables are restored afterwards.
#[allow(clippy::too_many_arguments)]
fn holdout_score(
    model: &dyn TunableEncoder,
    backbone_vars: &[Var],
    weights: &[Tensor],
    h: &Tensor,
    hold_rows: &[usize],
    hard: &[usize],
    soft: &[f32],
    k: usize,
    s: &TrainSettings,
) -> Result<(f64, f64)> {
    let saved: Vec<Tensor> = backbone_vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    for (v, t) in backbone_vars.iter().zip(weights) {
        v.set(t)?;
    }
    let head_w = &weights[backbone_vars.len()];
    let result = (|| -> Result<(f64, f64)> {
        let mut agree = 0usize;
        let mut loss = 0.0f64;
        for (c, ids) in hold_rows.chunks(64).enumerate() {
            let start = c * 64;
            let x = h.narrow(0, start, ids.len())?;
            let f = model.tail(&x, s.trainable_blocks)?;
            let logits = cosine_logits(head_w, &l2_normalize(&f)?, s.scale)?;
            let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
            for (row, &i) in lp.iter().zip(ids) {
                let top = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                    .map_or(0, |e| e.0);
                agree += usize::from(top == hard[i]);
                loss -= row
                    .iter()
                    .zip(&soft[i * k..(i + 1) * k])
                    .map(|(l, t)| f64::from(*l) * f64::from(*t))
                    .sum::<f64>();
            }
        }
        Ok((
            agree as f64 / hold_rows.len() as f64,
            loss / hold_rows.len() as f64,
        ))
    })();
    for (v, t) in backbone_vars.iter().zip(&saved) {
        v.set(t)?;
    }
    result
}
