//! `install`, `rollback` and `status` on a temp models root (issue 7).
//!
//! Test bundles come from `tiny.rs` (no candle, no trainer).
//!
//! Every refusal test asserts the message and then that `status` still shows the model
//! installed before as current, and that it still loads and passes its self-test.

use crate::tiny::bundle;
use linesight_edge::commands::{install, rollback, status};
use linesight_edge::engine::Engine;
use linesight_edge::memory::Available;
use linesight_edge::slots;
use linesight_edge::trust::KeySpec;
use linesight_shared::bundle::{sha256, Bundle, FORMAT_VERSION};
use linesight_shared::signature::SecretKey;
use std::path::{Path, PathBuf};

fn signed(mut b: Bundle, key: &SecretKey) -> Vec<u8> {
    key.sign_bundle(&mut b);
    b.to_bytes()
}

/// Recomputes the trailing file checksum after an edit (a consistent, not corrupt, file).
fn rechecksum(bytes: &mut [u8]) {
    let n = bytes.len() - 32;
    let sum = sha256(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
}

/// A temp box with a trusted key and model version `1` installed in slot 0001.
struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
    key: SecretKey,
    public: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let key = SecretKey::from_seed([42; 32]);
        let (_, public) = key.write_pair(&dir.join("keys")).unwrap();
        let f = Fixture {
            root: dir.join("root"),
            dir,
            _dir: tmp,
            key,
            public,
        };
        let r = f
            .install(&signed(bundle("1", 1.0), &f.key), |_| {})
            .expect("first install");
        assert_eq!(r.slot, "0001");
        f.assert_current("0001", "1");
        f
    }

    fn settings(&self, bytes: &[u8]) -> install::InstallSettings {
        let file = self.dir.join("incoming.lsb");
        std::fs::write(&file, bytes).unwrap();
        let mut s = install::InstallSettings::new(file, self.root.clone());
        s.trusted_keys = vec![self.public.clone()];
        s
    }

    fn install(
        &self,
        bytes: &[u8],
        tweak: impl FnOnce(&mut install::InstallSettings),
    ) -> Result<install::InstallReport, install::InstallError> {
        let mut s = self.settings(bytes);
        tweak(&mut s);
        install::run(&s)
    }

    fn status_settings(&self) -> status::StatusSettings {
        status::StatusSettings {
            trust: linesight_edge::trust::TrustSources {
                root: self.root.clone(),
                flags: vec![self.public.clone()],
                config: vec![],
            },
        }
    }

    /// `status` shows `slot` (model version `version`) as current, and it loads and passes
    /// its self-test.
    fn assert_current(&self, slot: &str, version: &str) {
        let st = status::run(&self.status_settings()).unwrap();
        assert_eq!(st.current.as_deref(), Some(slot), "{}", st.render());
        assert!(st.healthy(), "{}", st.render());
        let info = st
            .current_info()
            .expect("current slot has its install.json");
        assert_eq!(info.model_version, version);
        assert_current_loads(&self.root);
    }

    /// Install refused with a message containing every `needles`; nothing changed.
    fn assert_refused(
        &self,
        bytes: &[u8],
        tweak: impl FnOnce(&mut install::InstallSettings),
        needles: &[&str],
    ) -> String {
        let err = self
            .install(bytes, tweak)
            .expect_err("install must be refused");
        let msg = err.to_string();
        for n in needles {
            assert!(msg.contains(n), "message lacks `{n}`:\n{msg}");
        }
        self.assert_current("0001", "1");
        assert_eq!(
            slots::list(&self.root).unwrap(),
            vec!["0001"],
            "a refused install left a slot"
        );
        msg
    }
}

/// The box's `current` bundle loads in tract and passes its self-test.
fn assert_current_loads(root: &Path) {
    let cur = slots::read_pointer(root, slots::CURRENT)
        .unwrap()
        .expect("a current pointer");
    let b = Bundle::read(&slots::slot_model(root, &cur)).expect("current bundle verifies");
    let mut e = Engine::from_bundle(&b).expect("current loads");
    e.self_test(&b.manifest)
        .expect("current passes its self-test");
}

#[test]
fn install_status_rollback() {
    let f = Fixture::new();
    let r = f
        .install(&signed(bundle("2", 2.0), &f.key), |_| {})
        .unwrap();
    assert_eq!(
        (r.slot.as_str(), r.previous.as_deref()),
        ("0002", Some("0001"))
    );
    assert_eq!(r.signature, f.key.public().fingerprint());
    f.assert_current("0002", "2");
    let st = status::run(&f.status_settings()).unwrap();
    assert_eq!(st.previous.as_deref(), Some("0001"));
    assert_eq!(st.slots.len(), 2);
    assert!(st.slots.iter().all(|s| s.record.as_ref().unwrap().signature
        == f.key.public().fingerprint()
        && s.signature_check.as_ref().unwrap().status == "valid"));
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["slots"][1]["model_version"], "2");

    let mut rs = rollback::RollbackSettings::new(f.root.clone());
    rs.trusted_keys = vec![f.public.clone()];
    let rb = rollback::run(&rs).unwrap();
    assert_eq!(
        (rb.current.as_str(), rb.previous.as_deref()),
        ("0001", Some("0002"))
    );
    f.assert_current("0001", "1");

    // A key pinned under ROOT/trusted-keys/ is trusted without --trusted-key.
    std::fs::create_dir_all(f.root.join(slots::TRUSTED_KEYS_DIR)).unwrap();
    std::fs::copy(
        &f.public,
        f.root.join(slots::TRUSTED_KEYS_DIR).join("line3.pub"),
    )
    .unwrap();
    let r = f
        .install(&signed(bundle("3", 3.0), &f.key), |s| {
            s.trusted_keys.clear()
        })
        .unwrap();
    assert_eq!(r.slot, "0003");
    f.assert_current("0003", "3");

    // Unsigned: only with --allow-unsigned.
    let r = f
        .install(&bundle("4", 4.0).to_bytes(), |s| s.allow_unsigned = true)
        .unwrap();
    assert_eq!(r.signature, "unsigned");
    f.assert_current("0004", "4");
}

#[test]
fn one_flipped_byte_is_refused() {
    let f = Fixture::new();
    let good = signed(bundle("2", 2.0), &f.key);
    let n = good.len();
    let msg = {
        let mut bad = good.clone();
        bad[0] ^= 0x01;
        f.assert_refused(&bad, |_| {}, &["refusing `", "not a linesight bundle"])
    };
    eprintln!("flip at 0: {msg}");
    // Manifest, model, signature key, signature, checksum.
    for pos in [30, n / 2, n - 32 - 96 + 5, n - 32 - 10, n - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x40;
        let msg = f.assert_refused(
            &bad,
            |_| {},
            &[
                "bundle checksum mismatch: the file is corrupt",
                "copy the file again",
            ],
        );
        eprintln!("flip at {pos}: {msg}");
    }
}

#[test]
fn truncated_file_is_refused() {
    let f = Fixture::new();
    let good = signed(bundle("2", 2.0), &f.key);
    for len in [10, good.len() / 2, good.len() - 1] {
        let msg = f.assert_refused(&good[..len], |_| {}, &["refusing `", "copy the file again"]);
        eprintln!("truncated to {len}: {msg}");
    }
    f.assert_refused(&good[..good.len() / 2], |_| {}, &["bundle is truncated"]);
}

#[test]
fn wrong_key_is_refused() {
    let f = Fixture::new();
    let other = SecretKey::from_seed([7; 32]);
    let msg = f.assert_refused(
        &signed(bundle("2", 2.0), &other),
        |_| {},
        &[
            "is not trusted on this box",
            &other.public().fingerprint(),
            &f.key.public().fingerprint(),
            "--trusted-key",
        ],
    );
    eprintln!("{msg}");
}

#[test]
fn tampered_after_signing_is_refused() {
    let f = Fixture::new();
    let mut b = Bundle::from_bytes(&signed(bundle("2", 2.0), &f.key)).unwrap();
    b.manifest.labels[0] = "evil".into();
    let msg = f.assert_refused(
        &b.to_bytes(),
        |_| {},
        &[
            "bundle signature does not verify",
            &f.key.public().fingerprint(),
        ],
    );
    eprintln!("{msg}");
}

#[test]
fn unsigned_is_refused_without_allow_unsigned() {
    let f = Fixture::new();
    let msg = f.assert_refused(
        &bundle("2", 2.0).to_bytes(),
        |_| {},
        &["bundle is unsigned", "--allow-unsigned"],
    );
    eprintln!("{msg}");
}

#[test]
fn future_format_version_is_refused() {
    let f = Fixture::new();
    let mut bytes = signed(bundle("2", 2.0), &f.key);
    let (supported, newer) = (FORMAT_VERSION, FORMAT_VERSION + 1);
    bytes[8..12].copy_from_slice(&newer.to_le_bytes());
    rechecksum(&mut bytes);
    let msg = f.assert_refused(
        &bytes,
        |_| {},
        &[&format!("bundle format version {newer} is newer than this runtime supports (up to {supported}); update linesight-edge")],
    );
    eprintln!("{msg}");
}

#[test]
fn newer_runtime_requirement_is_refused() {
    let f = Fixture::new();
    let mut b = bundle("2", 2.0);
    b.manifest.min_runtime_version = "99.0.0".into();
    let msg = f.assert_refused(
        &signed(b, &f.key),
        |_| {},
        &["it needs linesight-edge 99.0.0 or newer, this is"],
    );
    eprintln!("{msg}");
}

#[test]
fn self_test_mismatch_is_refused() {
    let f = Fixture::new();
    let mut b = bundle("2", 2.0);
    b.manifest.self_test[1].expected_logits[2] += 0.5;
    let msg = f.assert_refused(
        &signed(b, &f.key),
        |_| {},
        &["self-test failed: self-test vector 1: logits differ"],
    );
    eprintln!("{msg}");
}

#[test]
fn not_enough_disk_is_refused() {
    let f = Fixture::new();
    let bytes = signed(bundle("2", 2.0), &f.key);
    let msg = f.assert_refused(
        &bytes,
        |s| s.free_bytes_override = Some(4096),
        &[
            "not enough disk space under `",
            "4096 are free",
            "free at least",
        ],
    );
    eprintln!("{msg}");
}

#[test]
fn a_crash_at_every_step_leaves_a_working_current() {
    for (i, step) in install::FAULT_STEPS.iter().enumerate() {
        let f = Fixture::new();
        let err = f
            .install(&signed(bundle("2", 2.0), &f.key), |s| {
                s.fault_at = Some(step.to_string())
            })
            .expect_err("the fault point must be reached");
        assert!(
            err.to_string().contains(&format!("fault point `{step}`")),
            "{step}: {err}"
        );
        // Only the last step comes after the switch of `current`.
        let switched = i + 1 == install::FAULT_STEPS.len();
        if switched {
            f.assert_current("0002", "2");
        } else {
            f.assert_current("0001", "1");
        }
        // The next install after the "power cut" recovers and succeeds.
        let r = f
            .install(&signed(bundle("3", 3.0), &f.key), |_| {})
            .unwrap();
        f.assert_current(&r.slot, "3");
        let partials: Vec<_> = std::fs::read_dir(slots::slots_dir(&f.root))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(
            partials.is_empty(),
            "{step}: partial slot left after recovery"
        );
    }
}

#[test]
fn not_enough_memory_for_a_second_model_is_refused() {
    let f = Fixture::new();
    let bytes = signed(bundle("2", 2.0), &f.key);
    let msg = f.assert_refused(
        &bytes,
        |s| s.mem_available = Available::Override(3 << 20),
        &[
            "refusing `",
            "not enough memory to load this model beside the running one: it needs about 17 MiB",
            "3 MiB are available (MemAvailable, /proc/meminfo)",
            "free at least 14 MiB",
            "stop `linesight-edge run` for the install",
        ],
    );
    eprintln!("{msg}");
    // Enough: accepted, and the report says what was estimated and available.
    let r = f
        .install(&bytes, |s| s.mem_available = Available::Override(64 << 20))
        .unwrap();
    assert_eq!(r.memory_available_bytes, Some(64 << 20));
    assert!(r.memory_estimate_bytes > 16 << 20 && r.memory_estimate_bytes < 17 << 20);
}

#[test]
fn trusted_keys_from_the_config_are_used_without_trusted_key_flags() {
    let f = Fixture::new();
    let hex = hex::encode(f.key.public().0);
    let from_config = |keys: Vec<KeySpec>| {
        move |s: &mut install::InstallSettings| {
            s.trusted_keys.clear();
            s.config_trusted_keys = keys;
        }
    };
    // Inline hex and a key file, each alone, are enough.
    let r = f
        .install(
            &signed(bundle("2", 2.0), &f.key),
            from_config(vec![KeySpec::Inline(hex.clone())]),
        )
        .unwrap();
    f.assert_current(&r.slot, "2");
    let r = f
        .install(
            &signed(bundle("3", 3.0), &f.key),
            from_config(vec![KeySpec::File(f.public.clone())]),
        )
        .unwrap();
    f.assert_current(&r.slot, "3");
    // Another key is refused, naming both.
    let other = SecretKey::from_seed([7; 32]);
    let e = f
        .install(
            &signed(bundle("4", 4.0), &other),
            from_config(vec![KeySpec::Inline(hex.clone())]),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not trusted on this box")
            && e.contains(&other.public().fingerprint())
            && e.contains(&f.key.public().fingerprint()),
        "{e}"
    );
    f.assert_current("0003", "3");
    // --trusted-key replaces the config's keys: the config key alone no longer counts.
    let (_, other_pub) = other.write_pair(&f.dir.join("other")).unwrap();
    let e = f
        .install(&signed(bundle("5", 5.0), &f.key), |s| {
            s.trusted_keys = vec![other_pub.clone()];
            s.config_trusted_keys = vec![KeySpec::Inline(hex.clone())];
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not trusted on this box"), "{e}");
    // A malformed config key is named.
    let e = f
        .install(
            &signed(bundle("6", 6.0), &f.key),
            from_config(vec![KeySpec::Inline("zz".repeat(32))]),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot use trusted key") && e.contains("edge.toml"),
        "{e}"
    );
    f.assert_current("0003", "3");
}
