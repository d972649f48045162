//! Bad inputs: a corrupt JPEG and an empty file are reported on their own line and counted
//! (exit 1) while the other images are classified; a truncated bundle, a flipped model
//! byte and a future format version are refused with their own message (exit 2).

use crate::util::*;
use std::process::Command;

fn classify(bundle: &std::path::Path, paths: &[std::path::PathBuf]) -> std::process::Output {
    run(Command::new(bin("linesight-edge"))
        .args(["classify", "--json", "--bundle"])
        .arg(bundle)
        .args(paths))
}

#[test]
fn corrupt_images_are_reported_and_counted() {
    if !weights_present("corrupt_images_are_reported_and_counted") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = demo_bundle(tmp.path());
    let good = repo().join("models/demo/images/Cedar_Waxwing/0000.jpg");
    let bytes = std::fs::read(&good).unwrap();
    let corrupt = tmp.path().join("corrupt.jpg");
    std::fs::write(&corrupt, &bytes[..bytes.len() / 3]).unwrap();
    let empty = tmp.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let missing = tmp.path().join("missing.jpg");
    let o = classify(
        &bundle,
        &[corrupt.clone(), good.clone(), empty.clone(), missing],
    );
    assert_eq!(o.status.code(), Some(1), "some failed -> exit 1");
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 4);
    let by_path = |p: &std::path::Path| {
        lines
            .iter()
            .find(|l| l["path"] == p.display().to_string())
            .unwrap()
            .clone()
    };
    assert!(by_path(&corrupt)["error"]
        .as_str()
        .unwrap()
        .contains("cannot decode image"));
    assert!(by_path(&empty)["error"]
        .as_str()
        .unwrap()
        .contains("is empty"));
    assert!(by_path(&good)["label"].is_string());
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 failed"));
}

#[test]
fn damaged_bundles_are_refused_with_their_own_message() {
    if !weights_present("damaged_bundles_are_refused_with_their_own_message") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = demo_bundle(tmp.path());
    let bytes = std::fs::read(&bundle).unwrap();
    let img = repo().join("models/demo/images/Cedar_Waxwing/0000.jpg");
    let manifest_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;

    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&3u32.to_le_bytes());
    let mut flipped_model = bytes.clone();
    flipped_model[24 + manifest_len + 1000] ^= 0x10;
    let mut not_a_bundle = bytes.clone();
    not_a_bundle[..8].copy_from_slice(b"\x08\x07\x12\x04onnx");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.lsb",
            bytes[..bytes.len() / 2].to_vec(),
            "bundle is truncated",
        ),
        ("flipped.lsb", flipped_model, "bundle checksum mismatch"),
        (
            "future.lsb",
            future,
            "bundle format version 3 is newer than this runtime supports (up to 2)",
        ),
        ("wrong-magic.lsb", not_a_bundle, "not a linesight bundle"),
        ("empty.lsb", vec![], "not a linesight bundle"),
    ];
    for (name, content, message) in cases {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        let o = classify(&p, std::slice::from_ref(&img));
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(message),
            "{name}: expected `{message}` in: {err}"
        );
        assert!(
            err.contains(name),
            "{name}: the message names the file: {err}"
        );
        assert!(o.stdout.is_empty(), "{name}: nothing classified");
    }
}
