//! Shared helpers: locating binaries, weights and the repo; running commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A binary of the workspace, in the target dir beside this test executable. The first
/// call runs `cargo build --bins` so that `cargo test -p linesight-e2e` alone never runs
/// stale binaries (the test crate cannot depend on binaries directly).
///
/// `LINESIGHT_E2E_FEATURES` (e.g. `linesight-edge/camera`) is passed on as `--features`:
/// the test run that builds the camera feature sets it, so this build does not replace its
/// binaries with ones built without the feature (which its own tests would then run).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "linesight-trainer",
            "-p",
            "linesight-edge",
        ]);
        if let Ok(features) = std::env::var("LINESIGHT_E2E_FEATURES") {
            if !features.is_empty() {
                cmd.args(["--features", &features]);
            }
        }
        let status = cmd.current_dir(repo()).status().unwrap();
        assert!(status.success(), "cargo build --bins failed");
    });
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "`{}` is not built; run the tests with `cargo test --workspace` so both binaries are built",
        p.display()
    );
    p
}

pub fn weights_present(test: &str) -> bool {
    let p = repo().join("models/weights/mobilenet_v2.safetensors");
    if p.exists() {
        return true;
    }
    if std::env::var("LINESIGHT_REQUIRE_WEIGHTS").as_deref() == Ok("1") {
        panic!(
            "{test}: `{}` missing and LINESIGHT_REQUIRE_WEIGHTS=1; run scripts/fetch-weights.sh",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: `{}` not found; run scripts/fetch-weights.sh",
        p.display()
    );
    false
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.env("LINESIGHT_NO_PROGRESS", "1");
    let out = cmd.output().unwrap();
    eprintln!(
        "$ {:?}\nexit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        cmd,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the demo prototype bundle from `models/demo` into `dir`; returns its path.
pub fn demo_bundle(dir: &Path) -> PathBuf {
    let out = dir.join("demo.lsb");
    let o = run(Command::new(bin("linesight-train"))
        .args(["--json", "prototypes", "--manifest"])
        .arg(repo().join("models/demo/manifest.csv"))
        .args(["--split", "train", "--model-id", "demo-birds", "--out"])
        .arg(&out));
    assert!(o.status.success());
    out
}

pub fn stdout_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// The demo prototype bundle, built once per test run (the trainer takes a while) in a
/// folder that lives as long as the test process; copy it before changing it.
pub fn shared_demo_bundle() -> &'static Path {
    static BUILT: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, p) = BUILT.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = demo_bundle(d.path());
        (d, p)
    });
    p
}

/// A copy of bundle `src` at `dst` with model version `version`, signed with `key` (or
/// unsigned): a different, valid bundle of the same model.
pub fn bundle_variant(
    src: &Path,
    dst: &Path,
    version: &str,
    key: Option<&linesight_shared::signature::SecretKey>,
) -> PathBuf {
    use linesight_shared::bundle::Bundle;
    let b = Bundle::read(src).unwrap();
    let mut m = b.manifest.clone();
    m.model_version = version.to_string();
    let mut v = Bundle::new(m, b.model.clone());
    if let Some(k) = key {
        k.sign_bundle(&mut v);
    }
    v.write(dst).unwrap();
    dst.to_path_buf()
}

/// A signing key from `seed` with its `signing.pub` written under `dir`.
pub fn key_pair(dir: &Path, seed: u8) -> (linesight_shared::signature::SecretKey, PathBuf) {
    let k = linesight_shared::signature::SecretKey::from_seed([seed; 32]);
    let (_, public) = k.write_pair(dir).unwrap();
    (k, public)
}

/// sha256 of a file, in hex.
pub fn sha256_file(p: &Path) -> String {
    hex_of(&linesight_shared::bundle::sha256(
        &std::fs::read(p).unwrap(),
    ))
}

pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// stdout and stderr of a finished command, as one text.
pub fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
