//! The README's main job, in small: prototypes from the committed demo photos, then the
//! edge classifies the held-out ones.

use crate::util::*;
use std::process::Command;

#[test]
fn prototypes_then_classify_held_out_demo_photos() {
    if !weights_present("prototypes_then_classify_held_out_demo_photos") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = demo_bundle(tmp.path());
    let manifest = std::fs::read_to_string(repo().join("models/demo/manifest.csv")).unwrap();
    let test_rows: Vec<(String, String)> = manifest
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",test"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    assert_eq!(test_rows.len(), 15);
    let mut cmd = Command::new(bin("linesight-edge"));
    cmd.args(["classify", "--json", "--bundle"]).arg(&bundle);
    for (p, _) in &test_rows {
        cmd.arg(repo().join("models/demo").join(p));
    }
    let o = run(&mut cmd);
    assert!(o.status.success());
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 15);
    let mut correct = 0;
    for (line, (_, label)) in lines.iter().zip(&test_rows) {
        for key in ["path", "label", "score", "topk", "latency_ms"] {
            assert!(line.get(key).is_some(), "missing `{key}` in {line}");
        }
        correct += (line["label"] == label.as_str()) as usize;
    }
    eprintln!("demo held-out top-1: {correct}/15");
    // 5 distinct species, 6 labelled photos each: prototypes get most of them right.
    assert!(correct >= 12, "only {correct}/15 correct");
}
