//! `linesight-train train`: refined.json -> a trained head (checkpoint folder), with
//! `near`, `vote`, `naive` or `prototype`; optionally scored on a labelled split.

use crate::backbone::{self, BackboneKind, TunableEncoder};
use crate::checkpoint::{self, CheckpointMeta, CHECKPOINT_VERSION, TARGETS_FILE};
use crate::dataset;
use crate::embed::{file_sha256, progress_bar, EmbeddingCache};
use crate::finetune::views::{trunk_views, ViewCache};
use crate::finetune::{finetune, FinetuneImages, FinetuneReport, ViewCacheAt};
use crate::head::CosineHead;
use crate::knn::normalize_rows;
use crate::metrics::{score_names, NameScores};
use crate::mllm::images;
use crate::near::refined::Refined;
use crate::near::train::{predict, train, TrainData, TrainSettings};
use crate::sentence::SentenceEncoder;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct TrainCmdSettings {
    pub refined: PathBuf,
    /// Backbone weights; None: the default file for the refined file's backbone.
    pub weights: PathBuf,
    pub cache: PathBuf,
    pub out: PathBuf,
    pub train: TrainSettings,
    /// Score on this labelled manifest's split after training.
    pub eval: Option<(PathBuf, String)>,
    /// all-MiniLM-L6-v2 folder for sACC in the evaluation (skipped when missing).
    pub sentence_model: Option<PathBuf>,
    pub batch: usize,
    /// Where fine-tuning and the frozen embeddings the cache lacks are computed
    /// (`--device`); the head methods run on the CPU.
    pub device: crate::device::DeviceChoice,
}

#[derive(Debug, Serialize)]
pub struct TrainReport {
    pub out: String,
    pub method: String,
    pub classes: usize,
    pub train_images: usize,
    /// Images whose final target differs from refine's vote.
    pub targets_changed_by_training: usize,
    /// `near`: share judged clean at the last epoch.
    pub clean_share: Option<f64>,
    pub train_seconds: f64,
    /// Fine-tuning of backbone stages (trunk pass included); 0 when the backbone is frozen.
    pub finetune_seconds: f64,
    /// Image-epochs per second of the head training.
    pub images_per_second: f64,
    /// Fine-tuning's costs and choice of epoch (None: frozen backbone).
    pub finetune: Option<FinetuneReport>,
    pub eval: Option<NameScores>,
    /// Targets each signal changed in refine (samples, vocabulary hint, neighbours,
    /// confusion correction, verified images) — the training change is
    /// `targets_changed_by_training`.
    pub signals: crate::near::refined::Signals,
    /// The MLLM's habits refine estimated: (true class, named as, rate), at most 10.
    pub habits: Vec<(String, String, f32)>,
}

/// Embeddings of `paths`, cached (what the cache lacks is computed on `compute`); returns
/// normalized rows and which paths they belong to.
#[allow(clippy::too_many_arguments)]
pub fn embed_normalized(
    kind: BackboneKind,
    weights: &Path,
    weights_sha: &str,
    cache_dir: &Path,
    paths: &[PathBuf],
    batch: usize,
    compute: &Device,
) -> Result<(Vec<f32>, Vec<usize>, usize)> {
    let encoder = backbone::load(kind, weights, compute)?;
    let pb = progress_bar(paths.len() as u64, "hash");
    let hashes = images::hash_files(paths, &pb);
    pb.finish_and_clear();
    let mut idx = Vec::new();
    let mut shas = Vec::new();
    for (i, h) in hashes.into_iter().enumerate() {
        match h {
            Ok(h) => {
                idx.push(i);
                shas.push(h);
            }
            Err(e) => tracing::warn!(error = %e, "image skipped"),
        }
    }
    let sub: Vec<PathBuf> = idx.iter().map(|&i| paths[i].clone()).collect();
    let mut cache =
        EmbeddingCache::open(cache_dir, encoder.name(), weights_sha, encoder.embed_dim())?;
    let emb = cache.embed(encoder.as_ref(), weights_sha, &sub, &shas, batch, compute)?;
    let dim = encoder.embed_dim();
    let mut x = emb.embeddings.flatten_all()?.to_vec1::<f32>()?;
    normalize_rows(&mut x, dim);
    Ok((x, emb.rows.iter().map(|&r| idx[r]).collect(), dim))
}

/// Scores `head` on normalized embeddings `x` of `entries[rows]`.
fn score_embeddings(
    head: &CosineHead,
    classes: &[String],
    x: &[f32],
    rows: &[usize],
    dim: usize,
    entries: &[dataset::Entry],
    sentence_model: Option<&Path>,
) -> Result<NameScores> {
    let pred = predict(head, x, rows.len(), dim)?;
    let pred_names: Vec<String> = pred.iter().map(|&c| classes[c].clone()).collect();
    let true_names: Vec<String> = rows.iter().map(|&r| entries[r].label.clone()).collect();
    let sentence = match sentence_model {
        Some(dir) if dir.is_dir() => Some(SentenceEncoder::load(dir, &Device::Cpu)?),
        _ => None,
    };
    score_names(&pred_names, &true_names, sentence.as_ref())
}

/// Scores `head` on a labelled split from cached embeddings (the export's parity gate
/// guarantees the bundle gives the same top-1 within 1e-4 of the logits).
#[allow(clippy::too_many_arguments)]
pub fn eval_head(
    head: &CosineHead,
    classes: &[String],
    kind: BackboneKind,
    weights: &Path,
    weights_sha: &str,
    cache_dir: &Path,
    manifest: &Path,
    split: &str,
    sentence_model: Option<&Path>,
    batch: usize,
    compute: &Device,
) -> Result<NameScores> {
    let entries = dataset::read_split(manifest, split)?;
    let paths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
    let (x, rows, dim) = embed_normalized(
        kind,
        weights,
        weights_sha,
        cache_dir,
        &paths,
        batch,
        compute,
    )?;
    score_embeddings(head, classes, &x, &rows, dim, &entries, sentence_model)
}

pub fn run(s: &TrainCmdSettings) -> Result<TrainReport> {
    let mut inputs: Vec<(&str, &Path)> = vec![
        ("refined.json", &s.refined),
        ("the backbone weights", &s.weights),
        ("the embedding cache", &s.cache),
    ];
    inputs.extend(
        s.eval
            .as_ref()
            .map(|(m, _)| ("the eval manifest", m.as_path())),
    );
    let outputs = crate::checkpoint::files(&s.out);
    linesight_shared::output::refuse_each(&outputs.each_ref().map(|p| p.as_path()), &inputs)?;
    let refined = Refined::read(&s.refined)?;
    let weights_sha = file_sha256(&s.weights)
        .with_context(|| format!("cannot read backbone weights `{}`", s.weights.display()))?;
    if weights_sha != refined.weights_sha256 {
        bail!(
            "`{}` was refined with other backbone weights (sha256 {}) than `{}` ({}); refine again or pass the same --weights",
            s.refined.display(),
            &refined.weights_sha256[..12],
            s.weights.display(),
            &weights_sha[..12]
        );
    }
    let paths = refined.image_paths();
    let device = s.device.open()?;
    let (x, rows, dim) = embed_normalized(
        refined.backbone,
        &s.weights,
        &weights_sha,
        &s.cache,
        &paths,
        s.batch,
        &device,
    )?;
    if rows.len() != paths.len() {
        bail!(
            "{} of the {} refined images can no longer be read under `{}`",
            paths.len() - rows.len(),
            paths.len(),
            refined.images_dir.display()
        );
    }
    let own: Vec<_> = refined.images.iter().map(|i| i.own.clone()).collect();
    let cands: Vec<_> = refined
        .images
        .iter()
        .map(|i| i.candidates.clone())
        .collect();
    let nbs: Vec<_> = refined
        .images
        .iter()
        .map(|i| i.neighbours.clone())
        .collect();
    let data = TrainData {
        x: &x,
        n: rows.len(),
        dim,
        classes: refined.classes.len(),
        own: &own,
        candidates: &cands,
        neighbours: &nbs,
        verified: &refined.verified,
    };
    let t0 = Instant::now();
    let mut trained = train(&data, &s.train, &Device::Cpu)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let train_images = trained.targets.iter().filter(|t| t.is_some()).count();

    // Optional: fine-tune the backbone's last stages with the head on the settled targets.
    let mut tuned: Option<Box<dyn TunableEncoder>> = None;
    let mut finetune_seconds = 0.0;
    let mut finetune_report = None;
    if s.train.trainable_blocks > 0 {
        let t1 = Instant::now();
        let model = backbone::load_tunable(refined.backbone, &s.weights, &device)?;
        if s.train.trainable_blocks > model.stages() {
            bail!(
                "trainable_blocks = {} but {} has {} stages that can train",
                s.train.trainable_blocks,
                refined.backbone.name(),
                model.stages()
            );
        }
        let pb = progress_bar(paths.len() as u64, "hash");
        let shas = images::hash_files(&paths, &pb)
            .into_iter()
            .collect::<Result<Vec<_>, String>>()
            .map_err(anyhow::Error::msg)?;
        pb.finish_and_clear();
        let (head, log, report) = finetune(
            model.as_ref(),
            &FinetuneImages {
                paths: &paths,
                shas: &shas,
                targets: &trained.soft_targets,
            },
            &trained.head,
            &s.train,
            Some(ViewCacheAt {
                dir: &s.cache,
                weights_sha256: &weights_sha,
            }),
            &device,
        )?;
        trained.head = head;
        trained.history.extend(log);
        finetune_seconds = t1.elapsed().as_secs_f64();
        finetune_report = Some(report);
        tuned = Some(model);
    }

    let eval = match (&s.eval, &tuned) {
        (Some((manifest, split)), Some(model)) => {
            // The tuned backbone embeds differently from the embedding cache, but its
            // frozen trunk does not: the trunk's output on the evaluation view is cached
            // like the training views, and only the tuned tail runs per run
            // (`tail(trunk(x)) == embed(x)`).
            let entries = dataset::read_split(manifest, split)?;
            let tpaths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
            let pb = progress_bar(tpaths.len() as u64, "hash");
            let hashed = images::hash_files(&tpaths, &pb);
            pb.finish_and_clear();
            let rows: Vec<usize> = (0..tpaths.len())
                .filter(|&i| match &hashed[i] {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "evaluation image skipped");
                        false
                    }
                })
                .collect();
            let shas: Vec<String> = rows
                .iter()
                .filter_map(|&i| hashed[i].as_ref().ok().cloned())
                .collect();
            let sub: Vec<PathBuf> = rows.iter().map(|&i| tpaths[i].clone()).collect();
            let blocks = s.train.trainable_blocks;
            let identity = crate::augment::AugmentSettings::identity();
            let cache = ViewCache::new(&s.cache, model.as_ref(), &weights_sha, blocks, &identity)?;
            let views = trunk_views(
                model.as_ref(),
                blocks,
                &identity,
                1,
                &sub,
                &shas,
                Some(&cache),
                "eval",
                &device,
            )?;
            let mut feats = Vec::new();
            for start in (0..sub.len()).step_by(64) {
                let len = 64.min(sub.len() - start);
                feats.push(model.tail(&views.h.narrow(0, start, len)?, blocks)?);
            }
            let dim = model.embed_dim();
            let mut x = candle_core::Tensor::cat(&feats, 0)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            normalize_rows(&mut x, dim);
            Some(score_embeddings(
                &trained.head,
                &refined.classes,
                &x,
                &rows,
                dim,
                &entries,
                s.sentence_model.as_deref(),
            )?)
        }
        (Some((manifest, split)), None) => Some(eval_head(
            &trained.head,
            &refined.classes,
            refined.backbone,
            &s.weights,
            &weights_sha,
            &s.cache,
            manifest,
            split,
            s.sentence_model.as_deref(),
            s.batch,
            &device,
        )?),
        (None, _) => None,
    };
    let refined_sha = file_sha256(&s.refined)?;
    let check_images: Vec<PathBuf> = paths.iter().take(4).cloned().collect();
    let meta = CheckpointMeta {
        version: CHECKPOINT_VERSION,
        backbone: refined.backbone,
        weights: std::fs::canonicalize(&s.weights).unwrap_or_else(|_| s.weights.clone()),
        weights_sha256: weights_sha,
        trainable: match s.train.trainable_blocks {
            0 => "head".into(),
            n => format!("last-{n}-stages"),
        },
        classes: refined.classes.clone(),
        scale: trained.head.scale,
        settings: s.train.clone(),
        refined_sha256: refined_sha,
        mllm_model: refined.mllm_model.clone(),
        prompt_sha256: refined.prompt_sha256.clone(),
        train_images,
        check_images,
        history: trained.history.clone(),
        train_seconds,
        eval: eval.clone(),
    };
    let backbone_tensors: Vec<(String, candle_core::Tensor)> = tuned
        .as_ref()
        .map(|m| {
            m.tail_vars(s.train.trainable_blocks)
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone()))
                .collect()
        })
        .unwrap_or_default();
    checkpoint::save(&s.out, &trained.head, &backbone_tensors, &meta)?;
    // The training decision log: per image its vote, final target and clean posterior.
    let mut log = std::io::BufWriter::new(fs_err::File::create(s.out.join(TARGETS_FILE))?);
    let mut changed = 0;
    for (i, img) in refined.images.iter().enumerate() {
        let fin = trained.targets[i];
        if img.target.is_some() && fin.is_some() && fin != img.target {
            changed += 1;
        }
        let line = serde_json::json!({
            "path": img.path,
            "vote": img.target_name,
            "target": fin.map(|c| &refined.classes[c]),
            "clean": trained.clean[i],
        });
        writeln!(log, "{line}")?;
    }
    log.flush()?;
    // Passes over the images: epochs for the gradient methods, rounds for near.
    let epochs = match s.train.method {
        crate::near::train::Method::Near => s.train.rounds.max(1),
        _ => s.train.epochs.max(1),
    } as f64;
    Ok(TrainReport {
        out: s.out.display().to_string(),
        method: s.train.method.as_str().into(),
        classes: refined.classes.len(),
        train_images,
        targets_changed_by_training: changed,
        clean_share: trained.history.last().and_then(|h| h.clean_share),
        train_seconds,
        finetune_seconds,
        finetune: finetune_report,
        images_per_second: if s.train.method == crate::near::train::Method::Prototype {
            0.0
        } else {
            train_images as f64 * epochs / train_seconds.max(1e-9)
        },
        eval,
        signals: refined.summary.signals.clone(),
        habits: refined.confusion.as_ref().map_or_else(Vec::new, |c| {
            c.habits
                .iter()
                .take(10)
                .map(|h| (h.true_name.clone(), h.named_name.clone(), h.rate))
                .collect()
        }),
    })
}
