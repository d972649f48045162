//! Class 6: broken pointer files. `current` holding garbage, nothing, bytes that are not
//! text, or a slot that is not there: `status` says so (naming the file, what is wrong and
//! what to run) and exits 1; `run` and `bench` name the file instead of "no model
//! installed"; `rollback` and `install` repair it.

use crate::util::*;
use std::path::Path;
use std::process::{Command, Output};

/// (what is in `current`, a phrase the diagnosis must contain)
const BROKEN: [(&[u8], &str); 4] = [
    (b"garbage\n", "holds `garbage`, which is not a slot name"),
    (b"", "is empty"),
    (b"\xff\xfe\x00junk", "is not text"),
    (b"0042\n", "names slot 0042, which is not installed"),
];

fn edge(root: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("linesight-edge"))
        .args(args)
        .arg("--root")
        .arg(root))
}

fn current(root: &Path) -> String {
    std::fs::read_to_string(root.join("current")).unwrap()
}

fn assert_names_the_file(o: &Output, root: &Path, phrase: &str, what: &str) {
    let text = all_output(o);
    let file = root.join("current").display().to_string();
    assert!(
        text.contains(&file),
        "{what}: does not name `{file}`:\n{text}"
    );
    assert!(text.contains(phrase), "{what}: lacks `{phrase}`:\n{text}");
    assert!(
        !text.contains("no model installed"),
        "{what}: says no model:\n{text}"
    );
}

#[test]
fn broken_current_is_diagnosed_named_and_repaired() {
    if !weights_present("broken_current_is_diagnosed_named_and_repaired") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let o = edge(
        &root,
        &[
            "install",
            "--allow-unsigned",
            shared_demo_bundle().to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    let o = edge(&root, &["status"]);
    assert!(o.status.success(), "a healthy root: {}", all_output(&o));

    for (i, (bytes, phrase)) in BROKEN.iter().enumerate() {
        std::fs::write(root.join("current"), bytes).unwrap();
        let o = edge(&root, &["status"]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "status with `current` = {bytes:?}"
        );
        assert_names_the_file(&o, &root, phrase, "status");
        assert!(
            all_output(&o).contains("linesight-edge rollback"),
            "says what to run"
        );
        let o = edge(&root, &["status", "--json"]);
        assert_eq!(o.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["problems"][0].as_str().unwrap().contains(phrase), "{v}");

        let o = edge(
            &root,
            &["run", "--source", "synthetic", "--max-frames", "1"],
        );
        assert_eq!(o.status.code(), Some(2));
        assert_names_the_file(&o, &root, phrase, "run");
        let o = edge(&root, &["bench", "--iterations", "1"]);
        assert_eq!(o.status.code(), Some(2));
        assert_names_the_file(&o, &root, phrase, "bench");

        // Repair: rollback (to the one slot that verifies) or a new install.
        let o = if i % 2 == 0 {
            edge(&root, &["rollback", "--allow-unsigned"])
        } else {
            edge(
                &root,
                &[
                    "install",
                    "--allow-unsigned",
                    shared_demo_bundle().to_str().unwrap(),
                ],
            )
        };
        assert!(
            o.status.success(),
            "repair after {bytes:?}: {}",
            all_output(&o)
        );
        assert!(all_output(&o).contains("repaired"), "{}", all_output(&o));
        let o = edge(&root, &["status"]);
        assert!(o.status.success(), "after the repair: {}", all_output(&o));
        let name = current(&root);
        assert!(root
            .join("slots")
            .join(name.trim())
            .join("model.lsb")
            .is_file());
    }
}

#[test]
fn a_broken_previous_and_a_missing_current_are_problems_too() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // A slot by hand (status reads it; nothing loads it): the committed golden bundle.
    let slot = root.join("slots/0001");
    std::fs::create_dir_all(&slot).unwrap();
    let golden = repo().join("shared/tests/fixtures/golden-v1.lsb");
    std::fs::copy(&golden, slot.join("model.lsb")).unwrap();
    let rec = serde_json::json!({
        "model_id": "golden", "model_version": "1", "signature": "unsigned",
        "installed_unix": 0, "bundle_sha256": sha256_file(&golden),
        "bundle_bytes": std::fs::metadata(&golden).unwrap().len(), "source": "test",
    });
    std::fs::write(slot.join("install.json"), rec.to_string()).unwrap();
    // No `current` at all while a slot is installed.
    let o = edge(&root, &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    assert!(all_output(&o).contains("does not exist but 1 slot(s) are installed"));
    std::fs::write(root.join("current"), "0001\n").unwrap();
    let o = edge(&root, &["status"]);
    assert!(o.status.success(), "{}", all_output(&o));
    std::fs::write(root.join("previous"), b"\x80\x81").unwrap();
    let o = edge(&root, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    let text = all_output(&o);
    assert!(
        text.contains(&root.join("previous").display().to_string()) && text.contains("is not text"),
        "{text}"
    );
}
