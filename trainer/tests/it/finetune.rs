//! Fine-tuning with augmentation on real MobileNetV2 weights, small enough for CI: the
//! tuned weights move, the trunk views are cached by content and reused (the same
//! result from the cache), and the exported bundle of the fine-tuned checkpoint passes
//! the 1e-4 tract parity gate with the tuned weights in it.

use crate::weights::{fixture, weights};
use candle_core::{Device, Tensor};
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use linesight_trainer::backbone::mobilenet_v2::{self, MobileNetV2};
use linesight_trainer::backbone::{BackboneKind, ImageEncoder};
use linesight_trainer::checkpoint::{self, CheckpointMeta, CHECKPOINT_VERSION};
use linesight_trainer::commands::export::{self, ExportSettings};
use linesight_trainer::embed::file_sha256;
use linesight_trainer::export::ExportReport;
use linesight_trainer::finetune::{finetune, FinetuneImages, ViewCacheAt};
use linesight_trainer::head::CosineHead;
use linesight_trainer::near::train::{EpochLog, TrainSettings};
use std::path::{Path, PathBuf};

/// MobileNetV2 (weights `w`) with its last stage tuned (`tail`: the stage's variables, on
/// any device) and `head`, saved as a checkpoint under `dir` and exported to
/// `dir/{model_id}.lsb`; returns the bundle's path and the export's parity report.
#[allow(clippy::too_many_arguments)]
pub(crate) fn export_last_stage(
    dir: &Path,
    w: &Path,
    head: &CosineHead,
    tail: Vec<(String, candle_core::Var)>,
    settings: &TrainSettings,
    history: Vec<EpochLog>,
    check_images: &[PathBuf],
    model_id: &str,
) -> (PathBuf, ExportReport) {
    let ckpt = dir.join(format!("{model_id}-ckpt"));
    let meta = CheckpointMeta {
        version: CHECKPOINT_VERSION,
        backbone: BackboneKind::MobilenetV2,
        weights: w.to_path_buf(),
        weights_sha256: file_sha256(w).unwrap(),
        trainable: "last-1-stages".into(),
        classes: vec!["cat".into(), "coffee".into()],
        scale: head.scale,
        settings: settings.clone(),
        refined_sha256: "0".repeat(64),
        mllm_model: None,
        prompt_sha256: None,
        train_images: 2,
        check_images: check_images.to_vec(),
        history,
        train_seconds: 0.0,
        eval: None,
    };
    let tensors: Vec<(String, Tensor)> = tail
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    checkpoint::save(&ckpt, head, &tensors, &meta).unwrap();
    let out = dir.join(format!("{model_id}.lsb"));
    let r = export::run(&ExportSettings {
        checkpoint: ckpt,
        out: out.clone(),
        weights: None,
        model_id: model_id.into(),
        sign: None,
        int8: None,
    })
    .unwrap();
    (out, r.export)
}

fn tail_values(net: &MobileNetV2, blocks: usize) -> Vec<f32> {
    net.tail_vars(blocks)
        .iter()
        .flat_map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn finetuned_checkpoint_exports_within_parity() {
    let Some(w) = weights(
        "mobilenet_v2.safetensors",
        "finetuned_checkpoint_exports_within_parity",
    ) else {
        return;
    };
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = ["imagenet/chelsea.png", "imagenet/coffee.png"]
        .iter()
        .map(|p| fixture(p))
        .collect();
    let shas: Vec<String> = paths.iter().map(|p| file_sha256(p).unwrap()).collect();
    let weights_sha = file_sha256(&w).unwrap();
    let net = mobilenet_v2::load(&w, &dev).unwrap();
    let mut pre = Preprocessor::new(net.preprocess());
    let images: Vec<RgbImage> = paths.iter().map(|p| RgbImage::open(p).unwrap()).collect();
    let xs: Vec<f32> = images.iter().flat_map(|i| pre.tensor(i).unwrap()).collect();
    let emb = net
        .embed(&Tensor::from_vec(xs, (2, 3, 224, 224), &dev).unwrap())
        .unwrap();
    let head = CosineHead::prototypes(&emb, &[0, 1], 2, 20.0).unwrap();
    let s = TrainSettings {
        trainable_blocks: 1,
        finetune_views: 2,
        finetune_epochs: 2,
        finetune_batch: 2,
        finetune_lr: 1e-2,
        finetune_head_lr: 1e-2,
        finetune_warmup: 1,
        finetune_holdout: 0.0,
        finetune_ema: 0.5,
        seed: 3,
        ..TrainSettings::default()
    };
    let targets = [1.0f32, 0.0, 0.0, 1.0];
    let before = tail_values(&net, 1);
    let imgs = FinetuneImages {
        paths: &paths,
        shas: &shas,
        targets: &targets,
    };
    let cache = || {
        Some(ViewCacheAt {
            dir: tmp.path(),
            weights_sha256: &weights_sha,
        })
    };
    let (tuned_head, log, report) = finetune(&net, &imgs, &head, &s, cache(), &dev).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(report.trunk_views_computed, 4, "{report:?}");
    let after = tail_values(&net, 1);
    assert!(
        before.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-6),
        "fine-tuning changed no backbone weight"
    );

    // The same run again reads every view from the cache and lands on the same weights.
    let net2 = mobilenet_v2::load(&w, &dev).unwrap();
    let (head2, _, report2) = finetune(&net2, &imgs, &head, &s, cache(), &dev).unwrap();
    assert_eq!(report2.trunk_views_computed, 0, "{report2:?}");
    assert_eq!(tail_values(&net2, 1), after);
    assert_eq!(
        head2
            .weight
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        tuned_head
            .weight
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );

    // Checkpoint -> export: the bundle carries the tuned weights and passes parity.
    let (out, export) = export_last_stage(
        tmp.path(),
        &w,
        &tuned_head,
        net.tail_vars(1),
        &s,
        log,
        &paths,
        "tuned",
    );
    eprintln!("fine-tuned export: {export:?}");
    assert!(export.max_abs_logit_diff <= 1e-4, "{export:?}");
    assert_eq!(export.top1_agreement, 1.0);
    // The bundle computes the tuned model, not the ImageNet one.
    let bundle = linesight_shared::bundle::Bundle::read(&out).unwrap();
    let mut engine = linesight_edge::engine::Engine::from_bundle(&bundle).unwrap();
    let mut logits = vec![0.0; 2];
    let x0 = pre.tensor(&images[0]).unwrap();
    engine.infer(&x0, &mut logits).unwrap();
    let candle = |net: &MobileNetV2| {
        let head = linesight_trainer::export::Head::Cosine(&tuned_head);
        linesight_trainer::export::candle_logits(net, &head, &x0, &dev).unwrap()
    };
    let tuned_ref = candle(&net);
    let untuned_ref = candle(&mobilenet_v2::load(&w, &dev).unwrap());
    assert!(linesight_edge::engine::max_abs_diff(&tuned_ref, &logits) <= 1e-4);
    assert!(
        linesight_edge::engine::max_abs_diff(&untuned_ref, &logits) > 1e-3,
        "the bundle computes the untuned backbone"
    );
}
