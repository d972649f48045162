//! EfficientNet-Lite0 with its real ImageNet weights: the checkpoint, BatchNorm eps,
//! TensorFlow "same" padding and (x - 127) / 128 normalisation are right (ImageNet top-1 on
//! real photos in candle and tract), a prototype bundle of cub26 birds passes the 1e-4
//! parity gate through `prototypes`, the int8 path keeps the ImageNet answers, and the
//! fine-tuning split (trunk, tail) computes the embedding, for it and for MobileNetV2.

use crate::clip::max_abs_diff;
use crate::int8::imagenet_int8;
use crate::mobilenet::{argmax, imagenet_top1, prototype_parity, PHOTOS};
use crate::weights::{fixture, weights};
use candle_core::{Device, Tensor};
use linesight_shared::manifest::PreprocessSpec;
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use linesight_trainer::backbone::inverted_residual::InvertedResidualNet;
use linesight_trainer::backbone::{efficientnet_lite0, load_tunable, BackboneKind, ImageEncoder};
use linesight_trainer::commands::prototypes::{run, PrototypesSettings};

fn lite0(test: &str) -> Option<InvertedResidualNet> {
    let w = weights("efficientnet_lite0.safetensors", test)?;
    Some(efficientnet_lite0::load(&w, &Device::Cpu).unwrap())
}

#[test]
fn efficientnet_lite0_imagenet_top1_in_candle_and_tract() {
    let Some(net) = lite0("efficientnet_lite0_imagenet_top1_in_candle_and_tract") else {
        return;
    };
    assert_eq!(net.name(), "efficientnet-lite0");
    assert_eq!(net.blocks.len(), 16);
    assert_eq!(net.preprocess(), PreprocessSpec::efficientnet_lite());
    imagenet_top1(&net);
}

/// The normalisation matters and is the checkpoint's own: with ImageNet mean/std the
/// logits move far, while the right one gives a confident top-1 (the 5-9 point loss of
/// the issue is measured on cub26 in docs/near.md, not here).
#[test]
fn efficientnet_lite0_native_normalisation_beats_imagenet_statistics() {
    let Some(net) = lite0("efficientnet_lite0_native_normalisation_beats_imagenet_statistics")
    else {
        return;
    };
    let dev = Device::Cpu;
    for (p, class) in PHOTOS {
        let img = RgbImage::open(&fixture(p)).unwrap();
        let logits = |spec: PreprocessSpec| {
            let x = Preprocessor::new(spec).tensor(&img).unwrap();
            let x = Tensor::from_vec(x, (1, 3, 224, 224), &dev).unwrap();
            let l = net.imagenet_logits(&x).unwrap();
            let p = candle_nn::ops::softmax_last_dim(&l).unwrap();
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let native = logits(PreprocessSpec::efficientnet_lite());
        let imagenet = logits(PreprocessSpec::imagenet());
        eprintln!(
            "{p}: p(class) native {:.3}, ImageNet mean/std {:.3}",
            native[class], imagenet[class]
        );
        assert_eq!(argmax(&native), class, "{p}");
        assert!(native[class] > imagenet[class], "{p}");
    }
}

#[test]
fn efficientnet_lite0_prototype_bundle_parity_on_real_photos() {
    let Some(net) = lite0("efficientnet_lite0_prototype_bundle_parity_on_real_photos") else {
        return;
    };
    prototype_parity(&net);
}

/// `prototypes --backbone efficientnet-lite0` on six cub26 photos of three species (the
/// demo's copies in `models/demo`, so CI needs no data set beside the checkout): the
/// export's tract parity gate (1e-4) passes and the bundle names the backbone.
#[test]
fn efficientnet_lite0_prototypes_on_cub26_pass_the_parity_gate() {
    let test = "efficientnet_lite0_prototypes_on_cub26_pass_the_parity_gate";
    let Some(w) = weights("efficientnet_lite0.safetensors", test) else {
        return;
    };
    let data = crate::weights::repo_root().join("models/demo");
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("path,label,split\n");
    for species in ["Indigo_Bunting", "Cedar_Waxwing", "Belted_Kingfisher"] {
        for i in 0..2 {
            let p = data.join(format!("images/{species}/{i:04}.jpg"));
            csv.push_str(&format!("{},{species},train\n", p.display()));
        }
    }
    let manifest = tmp.path().join("manifest.csv");
    std::fs::write(&manifest, csv).unwrap();
    let out = tmp.path().join("birds.lsb");
    let report = run(&PrototypesSettings {
        backbone: BackboneKind::EfficientnetLite0,
        weights: w,
        manifest,
        split: "train".into(),
        out: out.clone(),
        model_id: "cub26-lite0".into(),
        scale: linesight_trainer::head::DEFAULT_SCALE,
        batch: 3,
        check_images: 6,
        sign: None,
        int8: None,
    })
    .unwrap();
    eprintln!("cub26 prototypes: {:?}", report.export);
    assert_eq!((report.classes, report.images), (3, 6));
    assert!(report.export.max_abs_logit_diff <= 1e-4);
    assert_eq!(report.export.top1_agreement, 1.0);
    let bundle =
        linesight_shared::bundle::Bundle::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(bundle.manifest.provenance.backbone, "efficientnet-lite0");
    assert_eq!(
        bundle.manifest.preprocess,
        PreprocessSpec::efficientnet_lite()
    );
}

#[test]
fn efficientnet_lite0_int8_keeps_imagenet_top1_on_real_photos() {
    let Some(net) = lite0("efficientnet_lite0_int8_keeps_imagenet_top1_on_real_photos") else {
        return;
    };
    imagenet_int8(&net, 30);
}

#[test]
fn efficientnet_lite0_unsigned_against_symmetric_int8() {
    let Some(net) = lite0("efficientnet_lite0_unsigned_against_symmetric_int8") else {
        return;
    };
    let (u, s) = crate::int8::unsigned_against_symmetric(&net, 16);
    assert!(u < s, "unsigned {u} vs symmetric {s}");
}

/// `tail(trunk(x, n), n) == embed(x)` for every stage count fine-tuning can ask for, for
/// both inverted-residual backbones, through `load_tunable` as `train` loads them; and the
/// tail's variables are exactly the last stages' convolutions.
#[test]
fn trunk_then_tail_is_the_embedding_for_every_stage_count() {
    let dev = Device::Cpu;
    // stages: the blocks (16 and 17) and the head convolution
    for (kind, file, stages) in [
        (
            BackboneKind::EfficientnetLite0,
            "efficientnet_lite0.safetensors",
            17,
        ),
        (BackboneKind::MobilenetV2, "mobilenet_v2.safetensors", 18),
    ] {
        let Some(w) = weights(
            file,
            "trunk_then_tail_is_the_embedding_for_every_stage_count",
        ) else {
            return;
        };
        let net = load_tunable(kind, &w, &dev).unwrap();
        let mut pre = Preprocessor::new(net.preprocess());
        let xs: Vec<f32> = PHOTOS
            .iter()
            .flat_map(|(p, _)| pre.tensor(&RgbImage::open(&fixture(p)).unwrap()).unwrap())
            .collect();
        let x = Tensor::from_vec(xs, (2, 3, 224, 224), &dev).unwrap();
        let full = net.embed(&x).unwrap();
        assert_eq!(full.dims(), [2, 1280]);
        assert_eq!(net.stages(), stages, "{}", kind.name());
        let mut vars = 0;
        for n in 1..=net.stages() {
            let y = net.tail(&net.trunk(&x, n).unwrap(), n).unwrap();
            let d = max_abs_diff(&y, &full);
            assert!(d <= 1e-4, "{} n={n}: max diff {d}", kind.name());
            let v = net.tail_vars(n);
            assert!(v.len() > vars, "{} n={n}: {} vars", kind.name(), v.len());
            vars = v.len();
        }
        // one stage is the head 1x1 convolution: its weight and bias
        let head: Vec<String> = net.tail_vars(1).into_iter().map(|(n, _)| n).collect();
        let want = match kind {
            BackboneKind::EfficientnetLite0 => ["_conv_head.weight", "_conv_head.bias"],
            _ => ["features.18.0.weight", "features.18.0.bias"],
        };
        assert_eq!(head.len(), 2);
        assert!(
            want.iter().all(|w| head.contains(&w.to_string())),
            "{head:?}"
        );
    }
}

/// The stem and the stride-2 5x5 depthwise layers pad one more pixel at the bottom-right
/// (TensorFlow "same"): the exported graph says so in its `pads`.
#[test]
fn efficientnet_lite0_exports_tf_same_pads() {
    use prost::Message;
    let Some(net) = lite0("efficientnet_lite0_exports_tf_same_pads") else {
        return;
    };
    let mut g = linesight_trainer::export::onnx::GraphBuilder::new();
    let input = g.input("input", &[1, 3, 224, 224]);
    let out = net.export_onnx(&mut g, &input).unwrap();
    g.output(&out, &[1, 1280]);
    let model = tract_onnx::pb::ModelProto::decode(g.finish("pads").unwrap().as_slice()).unwrap();
    let pads: Vec<Vec<i64>> = model
        .graph
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| {
            n.attribute
                .iter()
                .find(|a| a.name == "pads")
                .unwrap()
                .ints
                .clone()
        })
        .collect();
    assert_eq!(
        pads.len(),
        1 + 16 * 3 - 1 + 1,
        "stem, 16 blocks (the first without expand), head"
    );
    assert_eq!(pads[0], [0, 0, 1, 1], "stem 3x3 stride 2 on 224");
    // Conv order: stem, _blocks.0 (depthwise, project), then expand, depthwise, project;
    // _blocks.3's depthwise (5x5, stride 2, 56 -> 28) is the 11th.
    assert_eq!(pads[1 + 2 + 3 + 3 + 1], [1, 1, 2, 2]);
    assert!(pads.iter().any(|p| p == &[2, 2, 2, 2]), "5x5 stride 1");
}
