//! `install` as the real binary (issue 7): killed with SIGKILL at every step of
//! `install::FAULT_STEPS` (`LINESIGHT_FAULT_KILL`), and trusted keys from `--config`.
//!
//! SIGKILL stops the process where it stands, with no destructor and no cleanup: what is
//! on disk is what the kernel got before the signal (a power cut would also lose what
//! was not fsynced; the in-process fault test in `install.rs` covers the write order).

use crate::tiny;
use linesight_edge::commands::install::{FAULT_KILL_ENV, FAULT_STEPS};
use linesight_edge::engine::Engine;
use linesight_edge::slots;
use linesight_shared::bundle::Bundle;
use linesight_shared::signature::SecretKey;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_linesight-edge"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Files {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    public: PathBuf,
    key: SecretKey,
}

impl Files {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let key = SecretKey::from_seed([42; 32]);
        let (_, public) = key.write_pair(&dir.join("keys")).unwrap();
        Files {
            _tmp: tmp,
            dir,
            public,
            key,
        }
    }

    /// Signed tiny bundle of version `version`, written to a file.
    fn bundle(&self, version: &str, scale: f32) -> PathBuf {
        let mut b = tiny::bundle(version, scale);
        self.key.sign_bundle(&mut b);
        let path = self.dir.join(format!("v{version}.lsb"));
        std::fs::write(&path, b.to_bytes()).unwrap();
        path
    }
}

fn install(root: &Path, file: &Path, public: &Path, kill_at: Option<&str>) -> Output {
    let mut c = bin();
    c.args(["install", "--json", "--root"])
        .arg(root)
        .arg("--trusted-key")
        .arg(public)
        .arg(file);
    match kill_at {
        Some(step) => c.env(FAULT_KILL_ENV, step),
        None => c.env_remove(FAULT_KILL_ENV),
    };
    c.output().unwrap()
}

/// `status --json` works; returns (current slot, its model version).
fn status(root: &Path) -> (String, String) {
    let o = bin()
        .args(["status", "--json", "--root"])
        .arg(root)
        .output()
        .unwrap();
    assert!(o.status.success(), "status failed: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let current = v["current"].as_str().expect("a current slot").to_string();
    let slot = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == current.as_str())
        .unwrap_or_else(|| panic!("current {current} is not listed: {v}"));
    (current, slot["model_version"].as_str().unwrap().to_string())
}

/// The current bundle loads and passes its self-test; returns its model version.
fn current_loads(root: &Path) -> String {
    let cur = slots::read_pointer(root, slots::CURRENT).unwrap().unwrap();
    let b = Bundle::read(&slots::slot_model(root, &cur)).expect("current verifies");
    Engine::from_bundle(&b)
        .expect("current loads")
        .self_test(&b.manifest)
        .expect("current passes its self-test");
    b.manifest.model_version
}

#[test]
fn sigkill_at_every_install_step_leaves_a_working_current() {
    let f = Files::new();
    let v1 = f.bundle("1", 1.0);
    let v2 = f.bundle("2", 2.0);
    let v3 = f.bundle("3", 3.0);
    let mut seen_new = Vec::new();
    for step in FAULT_STEPS {
        let root = f.dir.join(format!("root-{}", step.replace(':', "-")));
        let o = install(&root, &v1, &f.public, None);
        assert!(o.status.success(), "{}", stderr(&o));
        if step == FAULT_STEPS[0] {
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            eprintln!(
                "tiny bundle: memory estimate {} bytes, measured peak RSS growth {} bytes",
                r["memory_estimate_bytes"], r["load_peak_rss_growth_bytes"]
            );
            assert!(
                r["memory_estimate_bytes"].as_u64() >= r["load_peak_rss_growth_bytes"].as_u64(),
                "the estimate must cover what loading measured: {r}"
            );
        }

        let o = install(&root, &v2, &f.public, Some(step));
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "{step}: the install must die of SIGKILL there; exit {:?}: {}",
            o.status,
            stderr(&o)
        );

        let (slot, version) = status(&root);
        let loaded = current_loads(&root);
        assert_eq!(loaded, version, "{step}: status and the bundle agree");
        match version.as_str() {
            "1" => assert_eq!(slot, "0001", "{step}"),
            "2" => {
                assert_eq!(slot, "0002", "{step}");
                seen_new.push(step);
            }
            other => panic!("{step}: current is version {other}"),
        }
        // The next install recovers (removes the partial slot) and succeeds.
        let o = install(&root, &v3, &f.public, None);
        assert!(o.status.success(), "{step}: {}", stderr(&o));
        assert_eq!(status(&root).1, "3", "{step}");
        assert_eq!(current_loads(&root), "3");
        let partials = std::fs::read_dir(slots::slots_dir(&root))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .count();
        assert_eq!(partials, 0, "{step}: a partial slot was left");
    }
    // Only a kill after `current` was renamed leaves the new model current.
    assert_eq!(seen_new, vec!["current:fsync-dir"]);
}

#[test]
fn install_uses_the_trusted_keys_of_its_config() {
    let f = Files::new();
    let root = f.dir.join("root");
    let hex = hex::encode(f.key.public().0);
    let cfg = f.dir.join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nroot = \"root\"\ntrusted_keys = [\"{hex}\"]\n[source]\nspec = \"synthetic\"\n"
        ),
    )
    .unwrap();
    let run = |file: &Path| {
        bin()
            .args(["install", "--json", "--config"])
            .arg(&cfg)
            .arg(file)
            .env_remove(FAULT_KILL_ENV)
            .env_remove(slots::ROOT_ENV)
            .output()
            .unwrap()
    };
    // Signed by the config's key: accepted, into the config's root.
    let o = run(&f.bundle("1", 1.0));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(status(&root), ("0001".to_string(), "1".to_string()));
    // Signed by another key: refused, naming both keys and where keys are configured.
    let other = SecretKey::from_seed([3; 32]);
    let mut b = tiny::bundle("2", 2.0);
    other.sign_bundle(&mut b);
    let file = f.dir.join("other.lsb");
    std::fs::write(&file, b.to_bytes()).unwrap();
    let o = run(&file);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    for needle in [
        "is not trusted on this box",
        &other.public().fingerprint(),
        &f.key.public().fingerprint(),
        "model.trusted_keys",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    assert_eq!(status(&root), ("0001".to_string(), "1".to_string()));
    // A key file listed in the config (relative to it) works the same.
    std::fs::write(
        &cfg,
        "[model]\nroot = \"root\"\ntrusted_keys = [\"keys/signing.pub\"]\n",
    )
    .unwrap();
    let o = run(&f.bundle("3", 3.0));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(status(&root), ("0002".to_string(), "3".to_string()));
}
