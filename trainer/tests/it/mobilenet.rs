//! MobileNetV2 with its real ImageNet weights: the loading and the shared preprocessing
//! are right (ImageNet top-1 on real photos), and the ONNX export computes the same in
//! tract. The checks are written once for any inverted-residual network; EfficientNet-Lite0
//! runs them too (`efficientnet.rs`).

use crate::weights::{fixture, weights};
use candle_core::{Device, Tensor};
use linesight_edge::engine::{max_abs_diff, Engine};
use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::Provenance;
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use linesight_trainer::backbone::inverted_residual::InvertedResidualNet;
use linesight_trainer::backbone::mobilenet_v2;
use linesight_trainer::backbone::ImageEncoder;
use linesight_trainer::export::{self, ExportOptions, Head};

/// (fixture, ImageNet class)
pub const PHOTOS: [(&str, usize); 2] =
    [("imagenet/chelsea.png", 285), ("imagenet/coffee.png", 967)];

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[test]
fn imagenet_top1_in_candle_and_tract() {
    let Some(w) = weights(
        "mobilenet_v2.safetensors",
        "imagenet_top1_in_candle_and_tract",
    ) else {
        return;
    };
    imagenet_top1(&mobilenet_v2::load(&w, &Device::Cpu).unwrap());
}

/// Both photos get their ImageNet class from the network in candle, and from its exported
/// graph in tract (through the real exporter and its parity gate).
pub fn imagenet_top1(net: &InvertedResidualNet) {
    let dev = Device::Cpu;
    let images: Vec<RgbImage> = PHOTOS
        .iter()
        .map(|(p, _)| RgbImage::open(&fixture(p)).unwrap())
        .collect();
    let mut pre = Preprocessor::new(net.preprocess());

    // candle
    for (img, (name, class)) in images.iter().zip(PHOTOS) {
        let x = Tensor::from_vec(pre.tensor(img).unwrap(), (1, 3, 224, 224), &dev).unwrap();
        let logits = net
            .imagenet_logits(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let top = argmax(&logits);
        eprintln!(
            "{} candle {name}: top-1 {top} (expected {class}), logit {:.2}",
            net.name(),
            logits[top]
        );
        assert_eq!(top, class, "{name}");
    }

    // the exported graph in tract, through the real exporter and its parity gate
    let (wt, b) = net.classifier.as_ref().unwrap();
    let labels: Vec<String> = (0..1000).map(|i| format!("imagenet-{i}")).collect();
    let mut opts = ExportOptions::new("imagenet-check", labels, Provenance::default());
    opts.max_abs_logit_diff = 1e-3; // raw ImageNet logits reach ~20; the cosine heads use 1e-4
    let (bundle, report) = export::export_f32(
        net,
        &Head::Linear {
            weight: wt,
            bias: b,
        },
        &images,
        &opts,
        &dev,
    )
    .unwrap();
    eprintln!("export: {report:?}");
    let bundle = Bundle::from_bytes(&bundle.to_bytes()).unwrap();
    let mut engine = Engine::from_bundle(&bundle).unwrap();
    let mut logits = vec![0.0; 1000];
    for (img, (name, class)) in images.iter().zip(PHOTOS) {
        let x = pre.tensor(img).unwrap();
        engine.infer(&x, &mut logits).unwrap();
        eprintln!("tract {name}: top-1 {}", argmax(&logits));
        assert_eq!(argmax(&logits), class, "{name} through tract");
    }
    assert!(engine.self_test(&bundle.manifest).unwrap() <= 1e-3);
}

#[test]
fn prototype_bundle_parity_on_real_photos() {
    let Some(w) = weights(
        "mobilenet_v2.safetensors",
        "prototype_bundle_parity_on_real_photos",
    ) else {
        return;
    };
    prototype_parity(&mobilenet_v2::load(&w, &Device::Cpu).unwrap());
}

/// A two-prototype cosine bundle of the network passes the 1e-4 tract parity gate, and
/// tract's logits match candle's for each photo.
pub fn prototype_parity(net: &InvertedResidualNet) {
    let dev = Device::Cpu;
    let images: Vec<RgbImage> = PHOTOS
        .iter()
        .map(|(p, _)| RgbImage::open(&fixture(p)).unwrap())
        .collect();
    let mut pre = Preprocessor::new(net.preprocess());
    let xs: Vec<f32> = images.iter().flat_map(|i| pre.tensor(i).unwrap()).collect();
    let emb = net
        .embed(&Tensor::from_vec(xs, (2, 3, 224, 224), &dev).unwrap())
        .unwrap();
    let head = linesight_trainer::head::CosineHead::prototypes(&emb, &[0, 1], 2, 30.0).unwrap();
    let opts = ExportOptions::new(
        "proto-check",
        vec!["cat".into(), "coffee".into()],
        Provenance::default(),
    );
    let (bundle, report) =
        export::export_f32(net, &Head::Cosine(&head), &images, &opts, &dev).unwrap();
    eprintln!("prototype export: {report:?}");
    assert!(report.max_abs_logit_diff <= 1e-4);
    assert_eq!(report.top1_agreement, 1.0);
    let mut engine = Engine::from_bundle(&bundle).unwrap();
    let mut logits = vec![0.0; 2];
    for (i, img) in images.iter().enumerate() {
        engine
            .infer(&pre.tensor(img).unwrap(), &mut logits)
            .unwrap();
        assert_eq!(argmax(&logits), i);
        let reference =
            export::candle_logits(net, &Head::Cosine(&head), &pre.tensor(img).unwrap(), &dev)
                .unwrap();
        assert!(max_abs_diff(&reference, &logits) <= 1e-4);
    }
}
