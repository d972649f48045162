//! `linesight-edge inspect`: the manifest report and the raw ONNX bytes written out.

use crate::tiny;
use linesight_edge::commands::inspect::{self, InspectSettings};
use linesight_shared::bundle::{sha256, Bundle};
use std::process::Command;

#[test]
fn extracted_onnx_equals_the_bundles_model_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.lsb");
    let b = tiny::bundle("7", 1.0);
    b.write(&path).unwrap();
    let out = dir.path().join("model.onnx");
    let r = inspect::run(&InspectSettings {
        bundle: path.clone(),
        extract_onnx: Some(out.clone()),
        trust: Default::default(),
    })
    .unwrap();
    let read_back = Bundle::read(&path).unwrap();
    let written = std::fs::read(&out).unwrap();
    assert_eq!(written, read_back.model);
    assert_eq!(written, tiny::onnx(1.0));
    assert_eq!(r.onnx_bytes, written.len() as u64);
    assert_eq!(r.onnx_sha256, hex::encode(sha256(&written)));
    assert_eq!(
        (r.model_id.as_str(), r.model_version.as_str()),
        ("tiny", "7")
    );
    assert_eq!(r.signature, "unsigned");
    assert_eq!(r.self_test_vectors, 2);
    assert_eq!(r.self_test_tolerance, Some(1e-4));
    assert!(
        r.render()
            .contains("self-test    2 vectors, tolerance 1e-4 (max |logit difference|)"),
        "{}",
        r.render()
    );
    assert_eq!(r.labels.len(), tiny::LABELS);
    assert_eq!(r.extracted_onnx.as_deref(), Some(out.to_str().unwrap()));
    let text = r.render();
    assert!(
        text.contains("unsigned") && text.contains("class2"),
        "{text}"
    );
}

#[test]
fn inspect_names_the_file_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.lsb");
    let e = inspect::run(&InspectSettings {
        bundle: missing.clone(),
        extract_onnx: None,
        trust: Default::default(),
    })
    .unwrap_err();
    assert!(
        format!("{e:#}").contains(missing.to_str().unwrap()),
        "{e:#}"
    );
    // A bundle that reads but an output path that cannot be written.
    let path = dir.path().join("tiny.lsb");
    tiny::bundle("1", 1.0).write(&path).unwrap();
    let bad_out = dir.path().join("no-such-dir").join("m.onnx");
    let e = inspect::run(&InspectSettings {
        bundle: path,
        extract_onnx: Some(bad_out.clone()),
        trust: Default::default(),
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("no-such-dir"), "{e:#}");
}

#[test]
fn inspect_json_is_one_object_with_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.lsb");
    tiny::bundle("3", 1.0).write(&path).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_linesight-edge"))
        .args(["inspect", "--json", "--bundle"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "model_id",
        "model_version",
        "precision",
        "labels",
        "preprocess",
        "decision",
        "parity",
        "provenance",
        "self_test_vectors",
        "self_test_tolerance",
        "signature",
        "onnx_bytes",
        "onnx_sha256",
    ] {
        assert!(v.get(key).is_some(), "no `{key}` in {v}");
    }
    assert_eq!(v["model_version"], "3");
    assert_eq!(v["preprocess"]["crop"], 8);
}

#[test]
fn inspect_shows_the_per_class_parity_of_a_format_2_bundle() {
    use linesight_shared::manifest::ClassParity;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int8.lsb");
    let b = tiny::bundle("3", 1.0);
    let mut m = b.manifest.clone();
    m.v2.parity_per_class = (0..tiny::LABELS as u32)
        .map(|i| ClassParity {
            reference: 4,
            kept: if i == 1 { 3 } else { 4 },
        })
        .collect();
    Bundle::new(m, b.model.clone()).write(&path).unwrap();
    let r = inspect::run(&InspectSettings {
        bundle: path,
        extract_onnx: None,
        trust: Default::default(),
    })
    .unwrap();
    assert_eq!(r.format_version, 2);
    assert_eq!(r.parity_per_class.len(), tiny::LABELS);
    assert_eq!(r.parity_per_class[1].recall, 0.75);
    let text = r.render();
    assert!(text.contains("but 1: class1 3/4"), "{text}");
}
