//! A tiny test bundle, built without candle or the trainer: a hand-written ONNX graph
//! (image [1,3,8,8] -> GlobalAveragePool -> Flatten -> MatMul [3,3] -> logits) with
//! self-test vectors computed by the runtime's own `Engine`. Shared by `install`, `run`
//! and the allocation test binary (`tests/alloc.rs`).

use linesight_edge::engine::Engine;
use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::*;
use linesight_shared::preprocess::Preprocessor;
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

pub const LABELS: usize = 3;

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute,
        ..Default::default()
    }
}

/// The tiny ONNX model; `scale` makes models of different versions compute differently.
pub fn onnx(scale: f32) -> Vec<u8> {
    let w: Vec<f32> = (0..3 * LABELS)
        .map(|i| scale * (i as f32 - 4.0) * 0.5)
        .collect();
    let axis = AttributeProto {
        name: "axis".into(),
        r#type: AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "linesight-edge tests".into(),
        graph: Some(GraphProto {
            name: "tiny".into(),
            node: vec![
                node("GlobalAveragePool", &["image"], "pooled", vec![]),
                node("Flatten", &["pooled"], "flat", vec![axis]),
                node("MatMul", &["flat", "w"], "logits", vec![]),
            ],
            initializer: vec![TensorProto {
                name: "w".into(),
                dims: vec![3, LABELS as i64],
                data_type: DataType::Float as i32,
                raw_data: w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            }],
            input: vec![value_info("image", &[1, 3, 8, 8])],
            output: vec![value_info("logits", &[1, LABELS as i64])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// A valid, unsigned bundle of model version `version`, self-test vectors from the Engine.
pub fn bundle(version: &str, scale: f32) -> Bundle {
    let spec = PreprocessSpec {
        resize_shorter: 8,
        crop: 8,
        mean: [0.5, 0.5, 0.5],
        std: [0.25, 0.25, 0.25],
        filter: ResizeFilter::Bilinear,
    };
    let model = onnx(scale);
    let mut engine = Engine::new(&model, &spec.input_shape()).expect("tiny model loads");
    let pre = Preprocessor::new(spec);
    let mut self_test = Vec::new();
    for v in 0..2u32 {
        let rgb: Vec<u8> = (0..8 * 8 * 3u32)
            .map(|i| ((i * 37 + v * 101) % 256) as u8)
            .collect();
        let mut input = vec![0.0; engine.input_len()];
        pre.normalize_crop(&rgb, &mut input).unwrap();
        let mut logits = vec![0.0; LABELS];
        engine.infer(&input, &mut logits).unwrap();
        self_test.push(SelfTestVector {
            rgb,
            expected_logits: logits,
            tolerance: 1e-4,
        });
    }
    let manifest = Manifest {
        model_id: "tiny".into(),
        model_version: version.into(),
        labels: (0..LABELS).map(|i| format!("class{i}")).collect(),
        preprocess: spec,
        input: TensorSpec {
            name: "image".into(),
            shape: vec![1, 3, 8, 8],
        },
        output: TensorSpec {
            name: "logits".into(),
            shape: vec![1, LABELS as u64],
        },
        precision: Precision::F32,
        model_sha256: [0; 32],
        decision: DecisionRule::default(),
        self_test,
        parity: Parity::default(),
        provenance: Provenance::default(),
        min_runtime_version: "0.1.0".into(),
        v2: Default::default(),
    };
    Bundle::new(manifest, model)
}

/// `tests/fixtures/tiny.lsb` (the end-to-end crate's) is this bundle, committed so the
/// hostile-input suite can run the real binaries without weights or a trainer.
/// `LINESIGHT_WRITE_FIXTURES=1` rewrites it (after a change of this file or of tract).
#[test]
fn the_committed_tiny_fixture_is_this_bundle() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny.lsb");
    let bytes = bundle("1", 1.0).to_bytes();
    if std::env::var("LINESIGHT_WRITE_FIXTURES").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap();
    assert!(
        committed == bytes,
        "`{}` is stale; rewrite it with LINESIGHT_WRITE_FIXTURES=1 cargo test --test it -- tiny_fixture",
        path.display()
    );
}
