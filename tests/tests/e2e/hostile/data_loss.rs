//! Class 4: the tools never destroy what they read or what they wrote before.
//! `export-uncertain --clear` never overwrites an earlier export (entry numbers go on after
//! a clear, and a taken name gets a new one) and clears only what is safely copied; every
//! output path of both binaries is refused when it is one of the command's inputs.

use crate::util::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every file of `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn entry(store: &Path, id: u64, tag: &str) {
    std::fs::write(store.join(format!("{id:012}.png")), format!("png {tag}")).unwrap();
    std::fs::write(
        store.join(format!("{id:012}.json")),
        format!("{{\"tag\":\"{tag}\"}}"),
    )
    .unwrap();
}

fn export(store: &Path, out: &Path, clear: bool) -> Output {
    let mut c = Command::new(bin("linesight-edge"));
    c.args(["export-uncertain", "--json", "--store"])
        .arg(store)
        .arg("--out")
        .arg(out);
    if clear {
        c.arg("--clear");
    }
    run(&mut c)
}

#[test]
fn export_clear_never_overwrites_an_earlier_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, usb) = (tmp.path().join("store"), tmp.path().join("usb"));
    std::fs::create_dir_all(&store).unwrap();
    for id in 1..=3 {
        entry(&store, id, &format!("first-{id}"));
    }
    let o = export(&store, &usb, true);
    assert!(o.status.success());
    let first = snapshot(&usb);
    assert_eq!(first.len(), 6);
    // Entries numbered from 1 again (a store reset by hand, or another box's store).
    for id in 1..=2 {
        entry(&store, id, &format!("second-{id}"));
    }
    let o = export(&store, &usb, true);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["entries"].as_u64(), v["cleared"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    let now = snapshot(&usb);
    for (name, bytes) in &first {
        assert_eq!(
            now.get(name),
            Some(bytes),
            "the earlier export's `{name}` was changed"
        );
    }
    assert_eq!(
        now.len(),
        10,
        "the second export is there too: {:?}",
        now.keys()
    );
    assert!(now.values().any(|b| b == b"png second-1"));
    // Exporting onto the store itself is refused and clears nothing.
    entry(&store, 9, "kept");
    let before = snapshot(&store);
    let o = export(&store, &store, true);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the uncertain store"));
    assert_eq!(snapshot(&store), before);
}

#[test]
fn entry_numbers_go_on_after_a_clear() {
    if !weights_present("entry_numbers_go_on_after_a_clear") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, usb) = (tmp.path().join("store"), tmp.path().join("usb"));
    let cfg = tmp.path().join("edge.toml");
    // Every rejected or uncertain frame is saved (synthetic frames are not birds).
    std::fs::write(&cfg, "[store]\nmin_interval_ms = 0\n").unwrap();
    let run_once = || {
        let o = run(Command::new(bin("linesight-edge"))
            .args([
                "run",
                "--source",
                "synthetic",
                "--max-frames",
                "4",
                "--sink",
                "none",
            ])
            .arg("--config")
            .arg(&cfg)
            .arg("--bundle")
            .arg(shared_demo_bundle())
            .arg("--store")
            .arg(&store));
        assert!(o.status.success());
    };
    run_once();
    let saved = snapshot(&store)
        .keys()
        .filter(|k| k.ends_with(".json"))
        .count();
    assert!(saved > 0, "the run saved no uncertain frame");
    assert!(export(&store, &usb, true).status.success());
    run_once();
    let second: Vec<String> = snapshot(&store)
        .into_keys()
        .filter(|k| k.ends_with(".json"))
        .collect();
    assert!(!second.is_empty());
    let first = snapshot(&usb);
    for name in &second {
        assert!(
            !first.contains_key(name),
            "entry `{name}` numbered again after the clear"
        );
    }
}

/// A command that must be refused because an output is one of its inputs; the input is
/// unchanged afterwards.
fn refused(bin_name: &str, args: &[&str], cwd: &Path, kept: &[PathBuf]) {
    let before: Vec<Vec<u8>> = kept.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let o = run(Command::new(bin(bin_name)).args(args).current_dir(cwd));
    assert_eq!(
        o.status.code(),
        Some(2),
        "{bin_name} {args:?} must be refused"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refusing to write"),
        "{bin_name} {args:?}: {err}"
    );
    for (p, b) in kept.iter().zip(before) {
        assert_eq!(
            std::fs::read(p).unwrap(),
            b,
            "`{}` was changed",
            p.display()
        );
    }
}

#[test]
fn no_output_path_overwrites_an_input() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let f = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    };
    let labels = f("labels.jsonl", "{\"v\":1}\n");
    let golden = repo().join("shared/tests/fixtures/golden-v1.lsb");
    let bundle = d.join("model.lsb");
    std::fs::copy(&golden, &bundle).unwrap();
    std::fs::create_dir_all(d.join("photos")).unwrap();
    let ckpt_meta = f("ckpt/checkpoint.json", "{}");
    let key = f("signing.key", "secret");
    let weights = repo().join("models/weights/mobilenet_v2.safetensors");
    let weights = weights.display();

    // (binary, command line, the input it must leave alone)
    let w = format!("--weights {weights}");
    let cases: Vec<(&str, String, &PathBuf)> = vec![
        // The edge: the ONNX out of a bundle written over the bundle.
        ("linesight-edge", "inspect --bundle model.lsb --extract-onnx ./model.lsb".into(), &bundle),
        // The trainer: refine over its answer log; label's accounting over the log;
        // train's checkpoint over its input; export and quantize over their inputs and keys.
        ("linesight-train", format!("refine --images photos --labels labels.jsonl --out labels.jsonl {w}"), &labels),
        ("linesight-train", "label --images photos --endpoint http://127.0.0.1:9/v1 --model m --out labels.jsonl --accounting labels.jsonl".into(), &labels),
        ("linesight-train", format!("train --refined ckpt/checkpoint.json --out ckpt {w}"), &ckpt_meta),
        ("linesight-train", "export --checkpoint ckpt --out ckpt/checkpoint.json".into(), &ckpt_meta),
        ("linesight-train", "export --checkpoint ckpt --out signing.key --sign signing.key".into(), &key),
        ("linesight-train", "quantize --bundle model.lsb --out model.lsb --calibration photos".into(), &bundle),
    ];
    for (b, line, kept) in cases {
        let args: Vec<&str> = line.split(' ').collect();
        refused(b, &args, d, std::slice::from_ref(kept));
    }
}

#[test]
fn the_run_sink_and_prototypes_out_are_refused_over_inputs() {
    if !weights_present("the_run_sink_and_prototypes_out_are_refused_over_inputs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bundle = d.join("model.lsb");
    std::fs::copy(shared_demo_bundle(), &bundle).unwrap();
    let sink = format!("jsonl:{}", bundle.display());
    refused(
        "linesight-edge",
        &[
            "run",
            "--bundle",
            "model.lsb",
            "--source",
            "synthetic",
            "--max-frames",
            "2",
            "--no-store",
            "--sink",
            &sink,
        ],
        d,
        std::slice::from_ref(&bundle),
    );
    // prototypes --out over its manifest (a copy of the demo set).
    let demo = d.join("demo");
    std::fs::create_dir_all(&demo).unwrap();
    let src = repo().join("models/demo");
    for e in walk(&src) {
        let to = demo.join(e.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&e, &to).unwrap();
    }
    let manifest = demo.join("manifest.csv");
    refused(
        "linesight-train",
        &[
            "prototypes",
            "--manifest",
            "demo/manifest.csv",
            "--split",
            "train",
            "--out",
            "demo/manifest.csv",
        ],
        d,
        &[manifest],
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Second adversarial pass: `export-uncertain --clear --out` a folder inside the store said
/// "removed from the store" while the copies stayed in the store's folder, outside its
/// caps. A folder inside the store (by any path, existing or not) is refused now, and the
/// store is left as it was.
#[test]
fn export_into_a_folder_inside_the_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    entry(&store, 1, "kept");
    std::os::unix::fs::symlink(&store, tmp.path().join("link")).unwrap();
    let before = snapshot(&store);
    for out in [store.join("usb"), tmp.path().join("link/usb/day1")] {
        let o = export(&store, &out, true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", out.display());
        assert!(
            err.contains("is inside the uncertain store"),
            "{}: {err}",
            out.display()
        );
        assert_eq!(snapshot(&store), before, "{}", out.display());
    }
    assert!(!store.join("usb").exists());
    // A sibling folder is fine.
    let o = export(&store, &tmp.path().join("usb"), true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Second adversarial pass: `run --config edge.toml --sink jsonl:edge.toml` appended
/// decision lines to its own config (the next start could not parse it; a rotation would
/// have renamed it away), and a sink over a trusted key file was taken too. Both are
/// refused now, before a frame is read, and the files are unchanged.
#[test]
fn the_run_sink_is_refused_over_its_config_and_a_trusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let key = d.join("signing.pub");
    std::fs::write(&key, "not read before the refusal\n").unwrap();
    let config = d.join("edge.toml");
    std::fs::write(&config, "[model]\ntrusted_keys = [\"signing.pub\"]\n").unwrap();
    let tiny = tiny_bundle();
    let tiny = tiny.to_str().unwrap();
    for sink in ["jsonl:edge.toml", "jsonl:./signing.pub"] {
        refused(
            "linesight-edge",
            &[
                "run",
                "--config",
                "edge.toml",
                "--bundle",
                tiny,
                "--max-frames",
                "2",
                "--no-store",
                "--sink",
                sink,
            ],
            d,
            &[config.clone(), key.clone()],
        );
    }
}
