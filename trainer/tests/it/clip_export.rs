//! CLIP image towers as linesight backbones: the ONNX walk computes what candle computes
//! (through the real exporter and its 1e-4 parity gate, on real photos), the bundle runs
//! in the edge engine and passes its self-test, and loading a saved checkpoint through
//! `ClipImageEncoder::load` gives the same embeddings. Random weights: a tiny tower and a
//! ViT-B/16-shaped one cut to 2 layers.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use linesight_edge::engine::{max_abs_diff, Engine};
use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::Provenance;
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use linesight_trainer::backbone::clip::{ClipConfig, ClipImageEncoder, ClipVisionTower};
use linesight_trainer::backbone::{self, BackboneKind, ImageEncoder};
use linesight_trainer::export::onnx::GraphBuilder;
use linesight_trainer::export::{self, ExportOptions, ExportReport, Head};
use linesight_trainer::head::CosineHead;

use crate::weights::fixture;

const PHOTOS: [&str; 2] = ["imagenet/chelsea.png", "imagenet/coffee.png"];

fn photos() -> Vec<RgbImage> {
    PHOTOS
        .iter()
        .map(|p| RgbImage::open(&fixture(p)).unwrap())
        .collect()
}

/// A random image tower for `cfg` and the map of its variables.
fn random_tower(cfg: &ClipConfig) -> (ClipVisionTower, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let tower =
        ClipVisionTower::new(vb, &cfg.vision, cfg.projection_dim).expect("random tower builds");
    (tower, varmap)
}

/// ViT-B/16's image tower (224 px, patch 16, width 768, 12 heads) with only 2 layers.
fn vit_b16_two_layers() -> ClipConfig {
    let mut cfg = ClipConfig::vit_b16();
    cfg.vision.num_hidden_layers = 2;
    cfg
}

/// The photos preprocessed for `encoder`, as one `[N, 3, S, S]` batch.
fn batch(encoder: &dyn ImageEncoder, images: &[RgbImage]) -> Tensor {
    let spec = encoder.preprocess();
    let mut pre = Preprocessor::new(spec);
    let data: Vec<f32> = images.iter().flat_map(|i| pre.tensor(i).unwrap()).collect();
    let [_, c, h, w] = spec.input_shape();
    Tensor::from_vec(data, (images.len(), c, h, w), &Device::Cpu).unwrap()
}

/// Prototype head from the two photos, exported through the real exporter (which refuses
/// a tract/candle logit difference above 1e-4).
fn export_with_prototypes(
    encoder: &ClipImageEncoder,
    what: &str,
) -> (Bundle, ExportReport, CosineHead) {
    let dev = Device::Cpu;
    let images = photos();
    let emb = encoder.embed(&batch(encoder, &images)).unwrap();
    assert_eq!(emb.dims(), &[2, encoder.embed_dim()]);
    check_embedding_parity(encoder, &emb, what);
    let head = CosineHead::prototypes(&emb, &[0, 1], 2, 30.0).unwrap();
    let opts = ExportOptions::new(
        what,
        vec!["cat".into(), "coffee".into()],
        Provenance::default(),
    );
    assert_eq!(opts.max_abs_logit_diff, 1e-4);
    let (bundle, report) = export::export_f32(encoder, &Head::Cosine(&head), &images, &opts, &dev)
        .unwrap_or_else(|e| panic!("{what}: export failed: {e:#}"));
    eprintln!(
        "{what}: max |candle - tract| logit diff {:.3e} over {} photos, top-1 agreement {}, {} ONNX nodes, {} bytes",
        report.max_abs_logit_diff, report.check_images, report.top1_agreement, report.onnx_nodes, report.onnx_bytes
    );
    assert_eq!(report.check_images, 2);
    assert!(
        report.max_abs_logit_diff <= 1e-4,
        "{what}: {}",
        report.max_abs_logit_diff
    );
    (bundle, report, head)
}

/// The tower alone, as ONNX in tract, against candle's embeddings `emb` of the photos; and
/// the two photos' embeddings differ (so the patches, not only the class token, matter).
fn check_embedding_parity(encoder: &ClipImageEncoder, emb: &Tensor, what: &str) {
    let shape = encoder.preprocess().input_shape();
    let mut g = GraphBuilder::new();
    let input = g.input("image", &shape.map(|d| d as i64));
    let out = encoder.export_onnx(&mut g, &input).unwrap();
    g.node_named("Identity", &[&out], vec![], "embedding");
    g.output("embedding", &[1, encoder.embed_dim() as i64]);
    let mut engine = Engine::new(&g.finish("clip tower").unwrap(), &shape).unwrap();
    assert_eq!(engine.output_len(), encoder.embed_dim());
    let rows = emb.to_vec2::<f32>().unwrap();
    let mut pre = Preprocessor::new(encoder.preprocess());
    let mut tract = vec![0.0; encoder.embed_dim()];
    for (img, candle) in photos().iter().zip(&rows) {
        engine.infer(&pre.tensor(img).unwrap(), &mut tract).unwrap();
        let scale = candle.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(candle, &tract);
        eprintln!("{what}: embedding max |candle - tract| {d:.3e} (max |embedding| {scale:.3})");
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "{what}: embeddings differ by {d}"
        );
    }
    let cos = {
        let dot: f32 = rows[0].iter().zip(&rows[1]).map(|(a, b)| a * b).sum();
        let n = |r: &[f32]| r.iter().map(|v| v * v).sum::<f32>().sqrt();
        dot / (n(&rows[0]) * n(&rows[1]))
    };
    eprintln!("{what}: cosine between the two photos' embeddings {cos:.4}");
    assert!(
        cos < 0.999,
        "{what}: the photos' embeddings are nearly equal ({cos})"
    );
}

/// The bundle survives serialization, loads in the edge engine, passes its self-test, and
/// its logits on the photos match candle's.
fn check_bundle_in_engine(
    encoder: &ClipImageEncoder,
    bundle: &Bundle,
    head: &CosineHead,
    what: &str,
) {
    let bundle = Bundle::from_bytes(&bundle.to_bytes()).unwrap();
    assert_eq!(bundle.manifest.preprocess, encoder.preprocess());
    let mut engine = Engine::from_bundle(&bundle).unwrap_or_else(|e| panic!("{what}: engine: {e}"));
    let worst = engine
        .self_test(&bundle.manifest)
        .unwrap_or_else(|e| panic!("{what}: self-test: {e}"));
    eprintln!("{what}: engine self-test worst diff {worst:.3e}");
    assert!(worst <= 1e-3);
    let mut pre = Preprocessor::new(encoder.preprocess());
    let mut logits = vec![0.0; 2];
    for img in photos() {
        let x = pre.tensor(&img).unwrap();
        engine.infer(&x, &mut logits).unwrap();
        let reference =
            export::candle_logits(encoder, &Head::Cosine(head), &x, &Device::Cpu).unwrap();
        let d = max_abs_diff(&reference, &logits);
        assert!(
            d <= 1e-4,
            "{what}: engine logits differ from candle's by {d}"
        );
    }
}

#[test]
fn tiny_tower_exports_with_parity_and_runs_in_the_engine() {
    let cfg = ClipConfig::tiny();
    let (tower, _) = random_tower(&cfg);
    let encoder = ClipImageEncoder::from_tower(tower, "clip-tiny").unwrap();
    assert_eq!(encoder.name(), "clip-tiny");
    assert_eq!(encoder.embed_dim(), cfg.projection_dim);
    assert_eq!(encoder.preprocess().input_shape(), [1, 3, 32, 32]);
    let (bundle, _, head) = export_with_prototypes(&encoder, "clip-tiny");
    check_bundle_in_engine(&encoder, &bundle, &head, "clip-tiny");
}

#[test]
fn vit_b16_shaped_tower_exports_with_parity_and_runs_in_the_engine() {
    let cfg = vit_b16_two_layers();
    let (tower, _) = random_tower(&cfg);
    let encoder = ClipImageEncoder::from_tower(tower, "clip-vit-b16").unwrap();
    assert_eq!(encoder.embed_dim(), 512);
    assert_eq!(encoder.preprocess().input_shape(), [1, 3, 224, 224]);
    let (bundle, _, head) = export_with_prototypes(&encoder, "clip-vit-b16 (2 layers)");
    check_bundle_in_engine(&encoder, &bundle, &head, "clip-vit-b16 (2 layers)");
}

#[test]
fn saved_checkpoint_loads_with_equal_embeddings() {
    let cfg = ClipConfig::tiny();
    let (tower, varmap) = random_tower(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    varmap.save(&path).unwrap();

    let original = ClipImageEncoder::from_tower(tower, "clip-tiny").unwrap();
    let loaded = ClipImageEncoder::load(&path, cfg.clone(), "clip-tiny", &Device::Cpu).unwrap();
    assert_eq!(loaded.name(), "clip-tiny");
    assert_eq!(loaded.embed_dim(), cfg.projection_dim);
    assert!(loaded.varmap().is_some());
    let x = batch(&original, &photos());
    let a = original.embed(&x).unwrap();
    let b = loaded.embed(&x).unwrap();
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0, "embeddings differ by {d} after the round trip");

    // And the loaded encoder exports with parity too.
    let (bundle, _, head) = export_with_prototypes(&loaded, "clip-tiny (loaded)");
    check_bundle_in_engine(&loaded, &bundle, &head, "clip-tiny (loaded)");
}

#[test]
fn backbone_load_reaches_the_clip_loader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip-vit-base-patch16/model.safetensors");
    let err = backbone::load(BackboneKind::ClipVitB16, &path, &Device::Cpu)
        .err()
        .expect("a missing file is an error");
    let msg = format!("{err:#}");
    assert!(!msg.contains("CLIP_TODO"), "{msg}");
    assert!(
        msg.contains("clip-vit-b16") && msg.contains(&path.display().to_string()),
        "{msg}"
    );

    // A tiny checkpoint is not a ViT-B/16 one: the error names a tensor and the file.
    let (_, varmap) = random_tower(&ClipConfig::tiny());
    let tiny = dir.path().join("tiny.safetensors");
    varmap.save(&tiny).unwrap();
    let err = backbone::load(BackboneKind::ClipVitB16, &tiny, &Device::Cpu)
        .err()
        .expect("a wrong-shaped checkpoint is an error");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("tiny.safetensors") && msg.contains("vision_model."),
        "{msg}"
    );
}
