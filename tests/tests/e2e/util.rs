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

/// Kills a child process (the MLLM simulator) when dropped, whether the test passed or not.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo's training photos as an unlabeled folder `t/images` (links under neutral
/// names, no class in the path), and the held-out photos with their labels.
pub fn demo_unlabeled(t: &Path) -> (PathBuf, Vec<(PathBuf, String)>) {
    let manifest = repo().join("models/demo/manifest.csv");
    let images = t.join("images");
    std::fs::create_dir(&images).unwrap();
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut held_out = Vec::new();
    for (i, line) in text.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let src = repo().join("models/demo").join(f[0]);
        if f[2] == "train" {
            std::os::unix::fs::symlink(&src, images.join(format!("{i:03}.jpg"))).unwrap();
        } else {
            held_out.push((src, f[1].to_string()));
        }
    }
    (images, held_out)
}

/// The MLLM simulator (at `accuracy`, `seed`, over HTTP) names the photos of `images`
/// (`label`), then `refine` votes (`--min-images 2 --k 5`, for 30 photos). Returns
/// refined.json's path and refine's output.
pub fn label_and_refine(t: &Path, images: &Path, accuracy: &str, seed: &str) -> (PathBuf, Output) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let train = bin("linesight-train");
    let manifest = repo().join("models/demo/manifest.csv");
    let mut sim = Child(
        Command::new(&train)
            .args(["--log", "warn", "simulate-mllm", "--listen", "127.0.0.1:0"])
            .args(["--accuracy", accuracy, "--seed", seed, "--truth"])
            .arg(&manifest)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(sim.0.stderr.take().unwrap());
    let mut url = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(pos) = line.find("http://") {
            url = line[pos..].split_whitespace().next().unwrap().to_string();
            break;
        }
    }
    assert!(url.ends_with("/v1"), "simulator address not printed: {url}");
    let labels = t.join("labels.jsonl");
    let o = run(Command::new(&train)
        .args([
            "--json",
            "label",
            "--model",
            "simulated",
            "--endpoint",
            &url,
            "--images",
        ])
        .arg(images)
        .arg("--out")
        .arg(&labels));
    assert!(o.status.success());
    drop(sim);
    let refined = t.join("refined.json");
    let o = run(Command::new(&train)
        .args([
            "--json",
            "refine",
            "--min-images",
            "2",
            "--k",
            "5",
            "--images",
        ])
        .arg(images)
        .arg("--labels")
        .arg(&labels)
        .arg("--out")
        .arg(&refined));
    (refined, o)
}
