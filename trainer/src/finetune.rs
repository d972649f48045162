//! Fine-tuning a backbone's last stages together with the head, on the targets a training
//! method settled on (`near`'s refined targets, `vote`'s, `naive`'s).
//!
//! The frozen trunk runs once per image and its output (`[C, 7, 7]` per image) is kept in
//! memory; each step runs only the trained tail and the head. The tail's variables are
//! the model's own (`TunableEncoder::tail_vars`), so the tuned model exports as it trained.

use crate::backbone::TunableEncoder;
use crate::embed::progress_bar;
use crate::head::{l2_normalize, CosineHead};
use crate::near::train::{cosine_logits, finite_loss, EpochLog, TrainSettings};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use std::path::PathBuf;

/// Images per trunk forward pass.
const TRUNK_BATCH: usize = 16;

/// Fine-tunes `s.trainable_blocks` stages of `model` and the head on `targets` (`n * k`
/// weights per image, rows of zero are not trained on). Updates the model's variables in
/// place and returns the tuned head and one log entry per epoch.
pub fn finetune(
    model: &dyn TunableEncoder,
    paths: &[PathBuf],
    targets: &[f32],
    head: &CosineHead,
    s: &TrainSettings,
    device: &Device,
) -> Result<(CosineHead, Vec<EpochLog>)> {
    let n = paths.len();
    let k = head.classes();
    if targets.len() != n * k {
        bail!("{} targets for {n} images of {k} classes", targets.len());
    }
    let blocks = s.trainable_blocks;
    // Frozen trunk, once.
    let mut pre = Preprocessor::new(model.preprocess());
    let shape = model.preprocess().input_shape();
    let mut buf = vec![0f32; pre.tensor_len()];
    let mut batch: Vec<f32> = Vec::new();
    let mut chunks = Vec::new();
    let pb = progress_bar(n as u64, "trunk");
    for (i, p) in paths.iter().enumerate() {
        let img = RgbImage::open(p).map_err(|e| anyhow::anyhow!("`{}`: {e}", p.display()))?;
        pre.run(&img.pixels, img.width, img.height, &mut buf)?;
        batch.extend_from_slice(&buf);
        pb.inc(1);
        if (i + 1) % TRUNK_BATCH == 0 || i + 1 == n {
            let b = batch.len() / buf.len();
            let x = Tensor::from_slice(&batch, (b, shape[1], shape[2], shape[3]), device)?;
            chunks.push(model.trunk(&x, blocks)?.detach());
            batch.clear();
        }
    }
    pb.finish_and_clear();
    let h = Tensor::cat(&chunks, 0)?;
    drop(chunks);

    let w = Var::from_tensor(&head.weight)?;
    let mut vars: Vec<Var> = model
        .tail_vars(blocks)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    if vars.is_empty() {
        bail!("no backbone variables to fine-tune for trainable_blocks = {blocks}");
    }
    vars.push(w.clone());
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: s.finetune_lr,
            weight_decay: s.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let rows: Vec<usize> = (0..n)
        .filter(|&i| targets[i * k..(i + 1) * k].iter().any(|&v| v > 0.0))
        .collect();
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut history = Vec::new();
    let pb = progress_bar((s.finetune_epochs * rows.len()) as u64, "finetune");
    for epoch in 0..s.finetune_epochs {
        let mut order = rows.clone();
        order.shuffle(&mut rng);
        let (mut total, mut steps) = (0.0, 0);
        for chunk in order.chunks(s.finetune_batch.max(1)) {
            let ids = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                device,
            )?;
            let f = model.tail(&h.index_select(&ids, 0)?, blocks)?;
            let logits = cosine_logits(w.as_tensor(), &l2_normalize(&f)?, s.scale)?;
            let t: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| {
                    let row = &targets[i * k..(i + 1) * k];
                    let sum: f32 = row.iter().sum();
                    row.iter().map(move |v| v / sum)
                })
                .collect();
            let t = Tensor::from_vec(t, (chunk.len(), k), device)?;
            let loss = (t * candle_nn::ops::log_softmax(&logits, D::Minus1)?)?
                .sum(D::Minus1)?
                .neg()?
                .mean_all()?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            finite_loss(value, "fine-tuning epoch", epoch)?;
            opt.backward_step(&loss)?;
            total += value;
            steps += 1;
            pb.inc(chunk.len() as u64);
        }
        tracing::info!(epoch, loss = total / steps.max(1) as f64, "fine-tune epoch");
        history.push(EpochLog {
            epoch,
            loss: total / steps.max(1) as f64,
            clean_share: None,
            gmm: None,
        });
    }
    pb.finish_and_clear();
    Ok((
        CosineHead {
            weight: l2_normalize(w.as_tensor())?.detach(),
            scale: s.scale,
        },
        history,
    ))
}
