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

/// `refine --knn-backbone` (issue 19 item 4): the neighbours come from another backbone
/// than the one the student trains on. With EfficientNet-Lite0 as the neighbour backbone
/// and MobileNetV2 as the student's, refined.json records both and its neighbours and
/// targets are exactly those of a refine on Lite0 itself; with both backbones, a neighbour
/// found by each is scored by the mean of their cosines; `train` then trains MobileNetV2
/// on the result.
#[test]
fn refine_takes_its_neighbours_from_another_backbone_than_the_student() {
    let test = "refine_takes_its_neighbours_from_another_backbone_than_the_student";
    if !weights_present(test) || !weights_file_present(test, "efficientnet_lite0.safetensors") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (images, _) = demo_unlabeled(t);
    let train = bin("linesight-train");
    let (lite0, o) = label_and_refine_with(
        t,
        &images,
        "0.7",
        "4",
        &["--backbone", "efficientnet-lite0"],
    );
    assert!(o.status.success(), "{}", all_output(&o));
    // The same answer log, refined again with other backbones.
    let refine = |name: &str, args: &[&str]| {
        let out = t.join(name);
        let o = refine_with(&images, &t.join("labels.jsonl"), args, &out);
        assert!(o.status.success(), "{}", all_output(&o));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&out).unwrap()).unwrap()
    };
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let lite0 = read(&lite0);
    let mnv2 = refine("mnv2.json", &["--backbone", "mobilenet-v2"]);
    let knn = refine(
        "knn.json",
        &[
            "--backbone",
            "mobilenet-v2",
            "--knn-backbone",
            "efficientnet-lite0",
        ],
    );
    assert_eq!(knn["backbone"], "mobilenet-v2");
    assert_eq!(
        knn["knn_backbones"],
        serde_json::json!(["efficientnet-lite0"])
    );
    assert!(
        mnv2.get("knn_backbones").is_none(),
        "written only when used"
    );
    assert_eq!(
        knn["weights_sha256"], mnv2["weights_sha256"],
        "the student's weights"
    );
    let images_of = |r: &serde_json::Value| r["images"].as_array().unwrap().clone();
    for (a, b) in images_of(&knn).iter().zip(&images_of(&lite0)) {
        assert_eq!(a["path"], b["path"]);
        assert_eq!(a["neighbours"], b["neighbours"], "{}", a["path"]);
        assert_eq!(a["target_name"], b["target_name"], "{}", a["path"]);
    }
    assert_ne!(
        images_of(&knn)
            .iter()
            .map(|i| i["neighbours"].clone())
            .collect::<Vec<_>>(),
        images_of(&mnv2)
            .iter()
            .map(|i| i["neighbours"].clone())
            .collect::<Vec<_>>(),
        "the two backbones find different neighbours on these photos"
    );

    let both = refine(
        "both.json",
        &[
            "--knn-backbone",
            "mobilenet-v2",
            "--knn-backbone",
            "efficientnet-lite0",
        ],
    );
    let sim = |r: &serde_json::Value, i: usize, j: u64| {
        r["images"][i]["neighbours"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["index"].as_u64() == Some(j))
            .map(|n| n["similarity"].as_f64().unwrap())
    };
    let mut checked = 0;
    for (i, img) in images_of(&both).iter().enumerate() {
        for n in img["neighbours"].as_array().unwrap() {
            let j = n["index"].as_u64().unwrap();
            if let (Some(a), Some(b)) = (sim(&mnv2, i, j), sim(&lite0, i, j)) {
                let mean = (a + b) / 2.0;
                let got = n["similarity"].as_f64().unwrap();
                assert!(
                    (got - mean).abs() < 1e-4,
                    "image {i}, neighbour {j}: {got} vs {mean}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} neighbours found by both backbones"
    );

    let o = run(Command::new(&train)
        .args(["--json", "train", "--method", "near", "--refined"])
        .arg(t.join("knn.json"))
        .arg("--out")
        .arg(t.join("ckpt")));
    assert!(o.status.success(), "{}", all_output(&o));
    let ckpt = read(&t.join("ckpt").join("checkpoint.json"));
    assert_eq!(ckpt["backbone"], "mobilenet-v2");
}
