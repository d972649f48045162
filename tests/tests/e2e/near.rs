//! The NeaR chain through the real binaries: the simulator serves over HTTP, `label` names
//! the unlabeled demo photos, `refine`, `train --method near`, `export --sign`, then the box
//! installs the signed bundle and classifies the held-out photos.

use crate::util::*;
use std::process::Command;

#[test]
fn label_refine_train_export_install_classify() {
    if !weights_present("label_refine_train_export_install_classify") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (images, held_out) = demo_unlabeled(t);
    let train = bin("linesight-train");
    let (refined, o) = label_and_refine(t, &images, "0.7", "4");
    assert!(o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["classes"].as_array().unwrap().len() >= 5, "{report}");
    // The decision log: every image with its MLLM answer, candidates and target.
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&refined).unwrap()).unwrap();
    let imgs = r["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 30);
    for key in [
        "path",
        "sha256",
        "mllm",
        "candidates",
        "target",
        "target_name",
        "neighbours",
    ] {
        assert!(imgs[0].get(key).is_some(), "decision log lacks `{key}`");
    }

    let ckpt = t.join("ckpt");
    let o = run(Command::new(&train)
        .args(["--json", "train", "--method", "near", "--refined"])
        .arg(&refined)
        .arg("--out")
        .arg(&ckpt));
    assert!(o.status.success());
    for f in ["head.safetensors", "checkpoint.json", "targets.jsonl"] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }

    let keys = t.join("keys");
    assert!(
        run(Command::new(&train).args(["keygen", "--out"]).arg(&keys))
            .status
            .success()
    );
    let bundle = t.join("near.lsb");
    let o = run(Command::new(&train)
        .args(["--json", "export", "--model-id", "near-e2e", "--checkpoint"])
        .arg(&ckpt)
        .arg("--out")
        .arg(&bundle)
        .arg("--sign")
        .arg(keys.join("signing.key")));
    assert!(o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        report["signature"]
            .as_str()
            .unwrap()
            .starts_with("ed25519:"),
        "{report}"
    );
    assert!(report["export"]["max_abs_logit_diff"].as_f64().unwrap() <= 1e-4);

    // A missing checkpoint is refused with the folder named.
    let o = run(Command::new(&train)
        .args(["export", "--checkpoint"])
        .arg(t.join("nope"))
        .arg("--out")
        .arg(t.join("x.lsb")));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));

    // The box: install the signed bundle, then decide on the held-out photos.
    let root = t.join("box");
    let o = run(Command::new(bin("linesight-edge"))
        .arg("install")
        .arg(&bundle)
        .arg("--root")
        .arg(&root)
        .arg("--trusted-key")
        .arg(keys.join("signing.pub")));
    assert!(o.status.success());
    let mut cmd = Command::new(bin("linesight-edge"));
    cmd.args(["classify", "--json", "--bundle"]).arg(&bundle);
    for (p, _) in &held_out {
        cmd.arg(p);
    }
    let o = run(&mut cmd);
    assert!(o.status.success());
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 15);
    let right = lines
        .iter()
        .zip(&held_out)
        .filter(|(l, (_, label))| l["label"] == label.as_str())
        .count();
    eprintln!("near e2e: {right}/15 held-out photos named exactly");
    // 5 species, names 70% right: well above chance (3/15).
    assert!(right >= 9, "{right}/15");
}

/// EfficientNet-Lite0 through the same chain: `refine --backbone efficientnet-lite0`, then
/// `train --trainable-blocks 2` (its head convolution and last block fine-tuned through
/// the TunableEncoder split) and `export`, whose tract parity gate (1e-4) must pass on the
/// tuned backbone; the bundle names the backbone and carries its (x - 127) / 128
/// normalisation.
#[test]
fn efficientnet_lite0_refine_finetune_export() {
    let test = "efficientnet_lite0_refine_finetune_export";
    if !weights_present(test) || !weights_file_present(test, "efficientnet_lite0.safetensors") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (images, _) = demo_unlabeled(t);
    let train = bin("linesight-train");
    let (refined, o) = label_and_refine_with(
        t,
        &images,
        "0.7",
        "4",
        &["--backbone", "efficientnet-lite0"],
    );
    assert!(o.status.success(), "{}", all_output(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&refined).unwrap()).unwrap();
    assert_eq!(r["backbone"], "efficientnet-lite0");

    let ckpt = t.join("ckpt");
    let o = run(Command::new(&train)
        .args([
            "--json",
            "train",
            "--method",
            "near",
            "--trainable-blocks",
            "2",
            "--finetune-epochs",
            "1",
            "--refined",
        ])
        .arg(&refined)
        .arg("--out")
        .arg(&ckpt));
    assert!(o.status.success(), "{}", all_output(&o));
    let bundle = t.join("lite0.lsb");
    let o = run(Command::new(&train)
        .args([
            "--json",
            "export",
            "--model-id",
            "lite0-e2e",
            "--checkpoint",
        ])
        .arg(&ckpt)
        .arg("--out")
        .arg(&bundle));
    assert!(o.status.success(), "{}", all_output(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        report["export"]["max_abs_logit_diff"].as_f64().unwrap() <= 1e-4,
        "{report}"
    );
    let b = linesight_shared::bundle::Bundle::from_bytes(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(b.manifest.provenance.backbone, "efficientnet-lite0");
    assert_eq!(
        b.manifest.preprocess,
        linesight_shared::manifest::PreprocessSpec::efficientnet_lite()
    );
}
