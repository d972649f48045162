//! `linesight-edge classify --json --logits`: the raw logits beside the decision (what
//! scripts/box.sh compares between aarch64 and x86).

use crate::tiny;
use std::process::Command;

fn classify(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_linesight-edge"))
        .args(["classify", "--json", "--top-k", "3", "--bundle"])
        .arg(dir.join("tiny.lsb"))
        .args(extra)
        .arg(dir.join("photo.png"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn logits_are_the_model_outputs_before_softmax() {
    let dir = tempfile::tempdir().unwrap();
    tiny::bundle("1", 1.0)
        .write(&dir.path().join("tiny.lsb"))
        .unwrap();
    let img = image::RgbImage::from_fn(16, 12, |x, y| {
        image::Rgb([(x * 15) as u8, (y * 20) as u8, 90])
    });
    img.save(dir.path().join("photo.png")).unwrap();
    let plain = classify(dir.path(), &[]);
    assert!(plain.get("logits").is_none(), "{plain}");
    let v = classify(dir.path(), &["--logits"]);
    let logits: Vec<f64> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(logits.len(), tiny::LABELS);
    // softmax(logits) gives the scores listed in topk, in the same order of labels.
    let max = logits.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    for t in v["topk"].as_array().unwrap() {
        let label = t["label"].as_str().unwrap();
        let i: usize = label.trim_start_matches("class").parse().unwrap();
        let p = (logits[i] - max).exp() / sum;
        assert!(
            (p - t["score"].as_f64().unwrap()).abs() < 1e-5,
            "{label}: {p} vs {t}"
        );
    }
    assert_eq!(v["label"], plain["label"]);
}
