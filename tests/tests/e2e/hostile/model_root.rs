//! Class 5: one models root, two processes. Installs and rollbacks hold the root's lock
//! (`ROOT/.lock`), so two at once are serialised and every slot's `install.json` describes
//! the bundle beside it; `status` checks each record against its bundle, and `rollback`
//! verifies what it switches to (record, signature against the trusted keys, self-test).

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn edge() -> Command {
    let mut c = Command::new(bin("linesight-edge"));
    c.env("LINESIGHT_NO_PROGRESS", "1");
    c
}

/// Every slot's record names its own bundle's sha256 and the signer the bundle carries.
fn assert_records_match(root: &Path) {
    let slots = root.join("slots");
    for e in std::fs::read_dir(&slots).unwrap() {
        let dir = e.unwrap().path();
        if dir.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("install.json")).unwrap()).unwrap();
        let model = dir.join("model.lsb");
        assert_eq!(
            rec["bundle_sha256"].as_str().unwrap(),
            sha256_file(&model),
            "`{}` describes another bundle: {rec}",
            dir.display()
        );
        let b = linesight_shared::bundle::Bundle::read(&model).unwrap();
        let signer = b
            .signature
            .map(|s| linesight_shared::signature::fingerprint(&s.public_key))
            .unwrap_or_else(|| "unsigned".into());
        assert_eq!(
            rec["signature"].as_str().unwrap(),
            signer,
            "{}",
            dir.display()
        );
    }
}

fn status(root: &Path, public: &Path) -> Output {
    run(edge()
        .args(["status", "--json", "--root"])
        .arg(root)
        .arg("--trusted-key")
        .arg(public))
}

#[test]
fn two_installs_at_once_both_succeed_and_each_slot_describes_its_bundle() {
    if !weights_present("two_installs_at_once_both_succeed_and_each_slot_describes_its_bundle") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(&tmp.path().join("keys"), 3);
    let signed = bundle_variant(
        shared_demo_bundle(),
        &tmp.path().join("a.lsb"),
        "a",
        Some(&key),
    );
    let unsigned = bundle_variant(shared_demo_bundle(), &tmp.path().join("b.lsb"), "b", None);
    let root = tmp.path().join("root");
    for round in 0..3 {
        let spawn = |bundle: &Path, extra: &[&str]| {
            edge()
                .arg("install")
                .arg(bundle)
                .arg("--root")
                .arg(&root)
                .arg("--trusted-key")
                .arg(&public)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = spawn(&signed, &[]);
        let b = spawn(&unsigned, &["--allow-unsigned"]);
        for (name, child) in [("signed", a), ("unsigned", b)] {
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: the {name} install failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert_records_match(&root);
        let o = status(&root, &public);
        assert!(o.status.success(), "round {round}: {}", all_output(&o));
    }
    let o = status(&root, &public);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["slots"].as_array().unwrap().len(), 6);
    for s in v["slots"].as_array().unwrap() {
        let want = if s["model_version"] == "a" {
            "valid"
        } else {
            "unsigned"
        };
        assert_eq!(s["signature_check"]["status"], want, "{s}");
    }
}

#[test]
fn an_install_waits_while_another_command_holds_the_root() {
    if !weights_present("an_install_waits_while_another_command_holds_the_root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    lock.lock().unwrap();
    let mut child = edge()
        .arg("install")
        .arg(shared_demo_bundle())
        .args(["--allow-unsigned", "--root"])
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its checks run; then it says it waits for the lock, and writes nothing meanwhile.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let t0 = Instant::now();
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap();
        seen.push_str(&line);
        if line.contains("waiting for it") {
            break;
        }
        assert!(
            n > 0 && t0.elapsed() < Duration::from_secs(120),
            "the install never waited for the lock:\n{seen}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it went on without the lock"
    );
    assert!(
        !root.join("current").exists(),
        "it wrote while another held the root"
    );
    lock.unlock().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(root.join("current")).unwrap(),
        "0001\n"
    );
}

#[test]
fn status_and_rollback_check_records_and_signatures_not_take_them_on_trust() {
    if !weights_present("status_and_rollback_check_records_and_signatures_not_take_them_on_trust") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(&tmp.path().join("keys"), 4);
    let root = tmp.path().join("root");
    let install = |bundle: &Path, extra: &[&str]| {
        let o = run(edge()
            .arg("install")
            .arg(bundle)
            .arg("--root")
            .arg(&root)
            .arg("--trusted-key")
            .arg(&public)
            .args(extra));
        assert!(o.status.success());
    };
    // The key is pinned in the root, so rollback and status find it without flags.
    std::fs::create_dir_all(root.join("trusted-keys")).unwrap();
    std::fs::copy(&public, root.join("trusted-keys/line.pub")).unwrap();
    let rollback = |extra: &[&str]| run(edge().args(["rollback", "--root"]).arg(&root).args(extra));
    // Slot 0001 unsigned (installed with --allow-unsigned), slot 0002 signed.
    let unsigned = bundle_variant(shared_demo_bundle(), &tmp.path().join("u.lsb"), "u", None);
    let signed = bundle_variant(
        shared_demo_bundle(),
        &tmp.path().join("s.lsb"),
        "s",
        Some(&key),
    );
    install(&unsigned, &["--allow-unsigned"]);
    install(&signed, &[]);

    // Rollback verifies the signature of what it switches to.
    let o = rollback(&[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "rolled back to an unsigned slot without a word"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("slot 0001") && err.contains("unsigned"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("current")).unwrap(),
        "0002\n"
    );
    let o = rollback(&["--allow-unsigned"]);
    assert!(o.status.success(), "{}", all_output(&o));
    assert_eq!(
        std::fs::read_to_string(root.join("current")).unwrap(),
        "0001\n"
    );

    // The records swapped, as the race of two installs once left them: status names both
    // slots, reads the signatures from the bundles, and exits 1; rollback refuses.
    let rec = |s: &str| root.join("slots").join(s).join("install.json");
    let (r1, r2) = (
        std::fs::read(rec("0001")).unwrap(),
        std::fs::read(rec("0002")).unwrap(),
    );
    std::fs::write(rec("0001"), &r2).unwrap();
    std::fs::write(rec("0002"), &r1).unwrap();
    let o = run(edge().args(["status", "--json", "--root"]).arg(&root));
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = v["problems"].to_string();
    for s in ["slot 0001", "slot 0002", "does not describe the bundle"] {
        assert!(problems.contains(s), "{problems}");
    }
    assert_eq!(
        v["slots"][0]["signature_check"]["status"], "unsigned",
        "{v}"
    );
    assert_eq!(v["slots"][1]["signature_check"]["status"], "valid", "{v}");
    let o = rollback(&["--allow-unsigned"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not describe the bundle"),
        "{}",
        all_output(&o)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("current")).unwrap(),
        "0001\n"
    );
}
