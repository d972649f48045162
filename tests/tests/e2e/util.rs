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

/// A `linesight-train simulate-mllm` process on a free loopback port; killed when dropped,
/// or stopped with SIGTERM by [`Simulator::stop`], which returns what it served.
pub struct Simulator {
    child: std::process::Child,
    /// The base URL to give `label --endpoint`.
    pub url: String,
}

impl Simulator {
    /// Starts the simulator on `truth` with extra `args` (`--seed`, `--latency-ms`, ...).
    pub fn start(truth: &Path, args: &[&str]) -> Simulator {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(bin("linesight-train"))
            .args([
                "--json",
                "--log",
                "warn",
                "simulate-mllm",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--truth")
            .arg(truth)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut url = String::new();
        let mut seen = String::new();
        for _ in 0..50 {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push_str(&line);
            if let Some(pos) = line.find("http://") {
                url = line[pos..].split_whitespace().next().unwrap().to_string();
                break;
            }
        }
        assert!(
            url.ends_with("/v1"),
            "the simulator printed no address:\n{seen}"
        );
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Simulator { child, url }
    }

    /// Stops the simulator (SIGTERM, as a technician's Ctrl-C) and returns its `stats`.
    pub fn stop(mut self) -> serde_json::Value {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let mut out = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let _ = self.child.wait();
        let report: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("simulator report is not JSON: {e}: {out}"));
        report["stats"].clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `linesight-train ARGS` and asserts that clap refused it at parse time (exit 2,
/// before any work) with a message naming `flag` and the allowed range.
pub fn assert_train_flag_refused(args: &[&str], flag: &str) {
    let o = run(Command::new(bin("linesight-train")).args(args));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?} must be refused");
    assert!(
        err.contains(flag) && err.contains("expected"),
        "{args:?}: the message must name {flag} and the range:\n{err}"
    );
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
