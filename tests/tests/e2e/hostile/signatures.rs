//! Class 7: a signature is shown as what it is worth here, not just as a fingerprint.
//! `inspect`, `classify`, `bench` and `status` check it against the trusted keys found the
//! way `install` finds them (`--trusted-key`, edge.toml's model.trusted_keys,
//! ROOT/trusted-keys/*.pub) and say valid / invalid / untrusted / unsigned; `classify` and
//! `bench` warn on stderr for anything but valid.

use crate::util::*;
use linesight_shared::bundle::Bundle;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The four kinds of bundle, by expected status, and the trusted key file.
fn bundles(dir: &Path) -> (Vec<(&'static str, PathBuf)>, PathBuf) {
    let src = shared_demo_bundle();
    let (trusted, public) = key_pair(&dir.join("keys"), 7);
    let (other, _) = key_pair(&dir.join("other-keys"), 8);
    let valid = bundle_variant(src, &dir.join("valid.lsb"), "1", Some(&trusted));
    let untrusted = bundle_variant(src, &dir.join("untrusted.lsb"), "1", Some(&other));
    let unsigned = bundle_variant(src, &dir.join("unsigned.lsb"), "1", None);
    // Changed after signing (the file checksum is recomputed, so only the signature tells).
    let mut b = Bundle::read(&valid).unwrap();
    b.manifest.model_version = "1-changed".into();
    let invalid = dir.join("invalid.lsb");
    b.write(&invalid).unwrap();
    (
        vec![
            ("valid", valid),
            ("invalid", invalid),
            ("untrusted", untrusted),
            ("unsigned", unsigned),
        ],
        public,
    )
}

fn edge(args: &[&str], bundle: &Path, trust: &[&str]) -> std::process::Output {
    run(Command::new(bin("linesight-edge"))
        .args(args)
        .arg(bundle)
        .args(trust)
        .env("LINESIGHT_ROOT", bundle.parent().unwrap().join("no-root")))
}

#[test]
fn inspect_classify_and_bench_say_valid_invalid_untrusted_or_unsigned() {
    if !weights_present("inspect_classify_and_bench_say_valid_invalid_untrusted_or_unsigned") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cases, public) = bundles(tmp.path());
    let public = public.to_str().unwrap();
    let img = repo().join("models/demo/images/Cedar_Waxwing/0000.jpg");
    for (status, bundle) in &cases {
        let trust = ["--trusted-key", public];
        // inspect: the JSON report and the text line.
        let o = edge(&["inspect", "--json", "--bundle"], bundle, &trust);
        assert!(o.status.success(), "{status}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["signature_check"]["status"], *status,
            "inspect {status}: {v}"
        );
        let o = edge(&["inspect", "--bundle"], bundle, &trust);
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text.lines().find(|l| l.starts_with("signature")).unwrap();
        let shown = if *status == "invalid" {
            "INVALID"
        } else {
            status
        };
        assert!(line.contains(shown), "inspect {status}: {line}");

        // classify runs it, and warns unless valid.
        let mut args = vec!["classify".to_string(), "--json".into()];
        args.extend(trust.iter().map(|s| s.to_string()));
        args.push(img.display().to_string());
        args.push("--bundle".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = edge(&args, bundle, &[]);
        assert!(o.status.success(), "classify {status}");
        let err = String::from_utf8_lossy(&o.stderr);
        let warned = err.contains("warning: bundle");
        assert_eq!(warned, *status != "valid", "classify {status}: {err}");
        if *status != "valid" {
            assert!(err.contains(shown), "classify {status}: {err}");
        }
        assert!(err.contains(&format!("(signature {status})")), "{err}");

        // bench: in the JSON report, and a warning unless valid.
        let o = edge(
            &[
                "bench",
                "--iterations",
                "1",
                "--warmup",
                "0",
                "--json",
                "--bundle",
            ],
            bundle,
            &trust,
        );
        assert!(o.status.success(), "bench {status}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["signature_check"]["status"], *status, "bench {status}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.contains("warning: bundle"),
            *status != "valid",
            "bench {status}: {err}"
        );
    }
    // The key found through ROOT/trusted-keys and through edge.toml, as install finds it.
    let (_, valid) = &cases[0];
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("trusted-keys")).unwrap();
    std::fs::copy(public, root.join("trusted-keys/line.pub")).unwrap();
    let o = edge(
        &[
            "inspect",
            "--json",
            "--root",
            root.to_str().unwrap(),
            "--bundle",
        ],
        valid,
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signature_check"]["status"], "valid", "{v}");
    let cfg = tmp.path().join("edge.toml");
    std::fs::write(&cfg, format!("[model]\ntrusted_keys = [\"{public}\"]\n")).unwrap();
    let o = edge(
        &[
            "inspect",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
            "--bundle",
        ],
        valid,
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signature_check"]["status"], "valid", "{v}");
    // A trusted key file that cannot be used is said, not skipped silently.
    let bad = tmp.path().join("bad.pub");
    std::fs::write(&bad, "not a key\n").unwrap();
    let o = edge(
        &[
            "inspect",
            "--trusted-key",
            bad.to_str().unwrap(),
            "--bundle",
        ],
        valid,
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("a trusted key cannot be used") && text.contains("bad.pub"),
        "{text}"
    );
    // Without any trusted key the same bundle is untrusted, not valid.
    let o = edge(&["inspect", "--json", "--bundle"], valid, &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signature_check"]["status"], "untrusted", "{v}");
}

#[test]
fn status_shows_the_bundles_signature_and_flags_an_invalid_one() {
    if !weights_present("status_shows_the_bundles_signature_and_flags_an_invalid_one") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cases, public) = bundles(tmp.path());
    let root = tmp.path().join("root");
    let r = root.to_str().unwrap();
    let p = public.to_str().unwrap();
    let o = run(Command::new(bin("linesight-edge"))
        .arg("install")
        .arg(&cases[0].1)
        .args(["--root", r, "--trusted-key", p]));
    assert!(o.status.success());
    let status = |trust: &[&str]| {
        run(Command::new(bin("linesight-edge"))
            .args(["status", "--json", "--root", r])
            .args(trust))
    };
    let o = status(&["--trusted-key", p]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["slots"][0]["signature_check"]["status"], "valid", "{v}");
    // Without the key the slot shows as untrusted (and that alone is no problem).
    let o = status(&[]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["slots"][0]["signature_check"]["status"], "untrusted",
        "{v}"
    );
    // The slot's bundle replaced by one changed after signing, its record made to match:
    // status reads the bundle, says invalid, and exits 1.
    let slot = root.join("slots/0001");
    std::fs::copy(&cases[1].1, slot.join("model.lsb")).unwrap();
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(slot.join("install.json")).unwrap()).unwrap();
    rec["bundle_sha256"] = sha256_file(&slot.join("model.lsb")).into();
    rec["bundle_bytes"] = std::fs::metadata(slot.join("model.lsb"))
        .unwrap()
        .len()
        .into();
    std::fs::write(slot.join("install.json"), rec.to_string()).unwrap();
    let o = status(&["--trusted-key", p]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "an invalid signature is a problem"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["slots"][0]["signature_check"]["status"], "invalid", "{v}");
    assert!(all_output(&o).contains("INVALID"));
}
