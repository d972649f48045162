//! Fleets through Mender (issue 18): the real Mender client (Debian's `mender-client` 3.4,
//! standalone mode: `mender --config C --data D install|commit|rollback`) installs artifacts
//! made by `linesight-train mender-artifact` through the Update Module
//! `packaging/mender/linesight-model`, on a temp "box": its own Mender config and data
//! folder, an edge.toml with the models root and the trusted key, and its runtime
//! delivered the way a fleet would deliver it, as a Mender `single-file` artifact that
//! provides `linesight.runtime.version` (which the model artifacts depend on).
//!
//! Needs root and the Debian packages `mender-client` and `mender-artifact`: Mender 3.4
//! runs Update Modules only from `/usr/share/mender/modules/v3/` and needs
//! `/etc/mender/artifact_info`, so the first test copies the module there and creates that
//! file when it is missing (`artifact_name=linesight-e2e`, left in place). Without them the
//! tests skip loudly, and fail under `LINESIGHT_REQUIRE_MENDER=1` (`scripts/test.sh` sets
//! it and installs the packages as root).
//!
//! The keys, the two bundles and their artifacts are made once per test process (in
//! `target/tmp/mender-fleet`, replaced by the next run); each box installs its own runtime.

use crate::util::*;
use linesight_shared::bundle::Bundle;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MODULE_DIR: &str = "/usr/share/mender/modules/v3";
const ARTIFACT_INFO: &str = "/etc/mender/artifact_info";
const DEVICE_TYPE: &str = "linesight-test-box";
const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What is missing for these tests, if anything.
fn missing() -> Option<String> {
    let on_path = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["mender", "mender-artifact"] {
        if !on_path(tool) {
            return Some(format!(
                "`{tool}` is not installed (Debian: apt-get install mender-client mender-artifact)"
            ));
        }
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some(format!(
            "not root: the Update Module must be copied to {MODULE_DIR}/linesight-model"
        ));
    }
    None
}

/// true when the tests can run; false (after saying so) when they skip.
fn ready(test: &str) -> bool {
    if !weights_present(test) {
        return false;
    }
    let Some(why) = missing() else {
        return true;
    };
    if std::env::var("LINESIGHT_REQUIRE_MENDER").as_deref() == Ok("1") {
        panic!("{test}: {why}, and LINESIGHT_REQUIRE_MENDER=1");
    }
    eprintln!("SKIPPED {test}: {why} (LINESIGHT_REQUIRE_MENDER=1 makes this a failure)");
    false
}

/// Made once per test process: the module in place, keys, bundles, artifacts.
struct Fleet {
    dir: PathBuf,
    public_key: PathBuf,
    /// Signed bundles `birds-a` (demo train split) and `birds-b` (demo test split).
    bundle_a: PathBuf,
    /// Artifacts of A and B made by `linesight-train mender-artifact`.
    artifact_a: PathBuf,
    artifact_b: PathBuf,
    /// A's bundle with its labels reversed after signing, in a well-formed artifact.
    artifact_tampered: PathBuf,
    model_id_a: String,
    model_id_b: String,
}

fn fleet() -> &'static Fleet {
    static FLEET: OnceLock<Fleet> = OnceLock::new();
    FLEET.get_or_init(|| {
        install_module();
        // Under the target dir's tmp folder, shared by the tests of this process; the next
        // run replaces it.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mender-fleet");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let train = bin("linesight-train");
        assert!(run(Command::new(&train)
            .args(["keygen", "--out"])
            .arg(dir.join("keys")))
        .status
        .success());
        let key = dir.join("keys/signing.key");
        let bundle = |id: &str, split: &str| {
            let out = dir.join(format!("{id}.lsb"));
            let o = run(Command::new(&train)
                .args(["--json", "prototypes", "--manifest"])
                .arg(repo().join("models/demo/manifest.csv"))
                .args(["--split", split, "--model-id", id, "--sign"])
                .arg(&key)
                .arg("--out")
                .arg(&out));
            assert!(o.status.success());
            out
        };
        let bundle_a = bundle("birds-a", "train");
        let bundle_b = bundle("birds-b", "test");
        let artifact = |bundle: &Path, device_type: &str, name: &str| {
            let out = dir.join(name);
            let o = run(Command::new(&train)
                .args(["--json", "mender-artifact", "--bundle"])
                .arg(bundle)
                .args(["--device-type", device_type, "--trusted-key"])
                .arg(dir.join("keys/signing.pub"))
                .arg("--out")
                .arg(&out));
            assert!(o.status.success());
            let report = &stdout_lines(&o)[0];
            assert_eq!(report["payload_type"], "linesight-model");
            assert_eq!(
                report["depends"]["linesight.runtime.version"],
                RUNTIME_VERSION
            );
            out
        };
        let artifact_a = artifact(&bundle_a, DEVICE_TYPE, "a.mender");
        // An artifact depending on a runtime older than the bundle needs is refused.
        let o = run(Command::new(&train)
            .args(["mender-artifact", "--bundle"])
            .arg(&bundle_a)
            .args([
                "--device-type",
                DEVICE_TYPE,
                "--runtime-version",
                "0.0.1",
                "--out",
            ])
            .arg(dir.join("old-runtime.mender")));
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("--runtime-version 0.0.1 is older"));
        let artifact_b = artifact(&bundle_b, DEVICE_TYPE, "b.mender");

        // Tampered after signing: the labels in another order (a bundle that would name
        // every part wrongly), re-encoded with the original signature. The checksum is
        // recomputed, so only the signature can tell.
        let mut b = Bundle::read(&bundle_a).unwrap();
        b.manifest.labels.reverse();
        let payload = dir.join("tampered/model.lsb");
        std::fs::create_dir_all(payload.parent().unwrap()).unwrap();
        std::fs::write(&payload, b.to_bytes()).unwrap();
        // The packager refuses it ...
        let o = run(Command::new(&train)
            .args(["mender-artifact", "--bundle"])
            .arg(&payload)
            .args(["--device-type", DEVICE_TYPE, "--out"])
            .arg(dir.join("refused.mender")));
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("changed after it was signed"),
            "the packager names the bad signature"
        );
        assert!(!dir.join("refused.mender").exists());
        // ... so it is wrapped with mender-artifact directly, as the packager would.
        let artifact_tampered = dir.join("tampered.mender");
        let manifest = &b.manifest;
        mender_artifact(
            &[
                "--artifact-name",
                "birds-a-tampered",
                "--device-type",
                DEVICE_TYPE,
                "--provides",
                &format!("linesight.model.id:{}", manifest.model_id),
                "--depends",
                &format!("linesight.runtime.version:{RUNTIME_VERSION}"),
            ],
            &payload,
            &artifact_tampered,
        );
        Fleet {
            public_key: dir.join("keys/signing.pub"),
            bundle_a,
            artifact_a,
            artifact_b,
            artifact_tampered,
            model_id_a: "birds-a".into(),
            model_id_b: "birds-b".into(),
            dir,
        }
    })
}

/// `mender-artifact write module-image -T linesight-model ARGS -f FILE -o OUT`.
fn mender_artifact(args: &[&str], file: &Path, out: &Path) {
    let o = run(Command::new("mender-artifact")
        .args(["write", "module-image", "--type", "linesight-model"])
        .args(args)
        .arg("--file")
        .arg(file)
        .arg("--output-path")
        .arg(out));
    assert!(o.status.success());
}

/// Copies the repo's module into Mender's module folder (temp name, then rename, so a
/// concurrent test process never runs half a file) and makes sure artifact_info exists.
fn install_module() {
    let src = repo().join("packaging/mender/linesight-model");
    let tmp = Path::new(MODULE_DIR).join(format!(".linesight-model.{}", std::process::id()));
    std::fs::create_dir_all(MODULE_DIR).unwrap();
    std::fs::copy(&src, &tmp).unwrap();
    std::fs::rename(&tmp, Path::new(MODULE_DIR).join("linesight-model")).unwrap();
    if !Path::new(ARTIFACT_INFO).exists() {
        std::fs::create_dir_all("/etc/mender").unwrap();
        std::fs::write(ARTIFACT_INFO, "artifact_name=linesight-e2e\n").unwrap();
    }
}

/// A temp box: Mender config + data folder, edge.toml, models root, and the runtime
/// installed through a Mender `single-file` artifact that provides
/// `linesight.runtime.version`.
struct TestBox {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    edge: PathBuf,
    config: PathBuf,
}

impl TestBox {
    fn new(fleet: &Fleet) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("mender-data")).unwrap();
        std::fs::write(
            dir.join("device_type"),
            format!("device_type={DEVICE_TYPE}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("mender.conf"),
            serde_json::json!({
                "DeviceTypeFile": dir.join("device_type"),
                "ServerURL": "https://mender.invalid",
            })
            .to_string(),
        )
        .unwrap();
        let config = dir.join("edge.toml");
        std::fs::write(
            &config,
            format!(
                "[model]\nroot = \"models\"\ntrusted_keys = [\"{}\"]\npoll_current_ms = 100\n[source]\nsynthetic_size = [320, 240]\n",
                fleet.public_key.display()
            ),
        )
        .unwrap();
        let b = TestBox {
            edge: dir.join("bin/linesight-edge"),
            _tmp: tmp,
            dir,
            config,
        };
        b.install_runtime();
        b
    }

    /// The runtime as a fleet ships it: Mender's own `single-file` module puts the
    /// (stripped) linesight-edge binary into the box's bin/, and the artifact provides
    /// `linesight.runtime.version`.
    fn install_runtime(&self) {
        let stage = self.dir.join("runtime-payload");
        std::fs::create_dir_all(&stage).unwrap();
        let exe = stage.join("linesight-edge");
        let stripped = Command::new("strip")
            .arg("-o")
            .arg(&exe)
            .arg(bin("linesight-edge"))
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(bin("linesight-edge"), &exe).unwrap();
        }
        std::fs::write(
            stage.join("dest_dir"),
            self.dir.join("bin").display().to_string(),
        )
        .unwrap();
        std::fs::write(stage.join("filename"), "linesight-edge").unwrap();
        std::fs::write(stage.join("permissions"), "755").unwrap();
        let artifact = self.dir.join("runtime.mender");
        let mut cmd = Command::new("mender-artifact");
        cmd.args(["write", "module-image", "--type", "single-file"])
            .args([
                "--artifact-name",
                &format!("linesight-edge-{RUNTIME_VERSION}"),
            ])
            .args(["--device-type", DEVICE_TYPE, "--compression", "none"])
            .args(["--software-filesystem", "linesight", "--software-name"])
            .args(["runtime", "--software-version", RUNTIME_VERSION]);
        for f in ["dest_dir", "filename", "permissions", "linesight-edge"] {
            cmd.arg("--file").arg(stage.join(f));
        }
        assert!(run(cmd.arg("--output-path").arg(&artifact))
            .status
            .success());
        assert_eq!(
            self.mender(&["install"], Some(&artifact)).status.code(),
            Some(0)
        );
        assert_eq!(self.mender(&["commit"], None).status.code(), Some(0));
        assert!(
            self.edge.exists(),
            "the runtime artifact put the binary in place"
        );
        let provides = self.mender_stdout(&["show-provides"]);
        assert!(
            provides.contains(&format!("linesight.runtime.version={RUNTIME_VERSION}")),
            "{provides}"
        );
    }

    /// `mender --config C --data D ARGS [FILE]` with the module's environment, at debug log
    /// level (it names every module call).
    fn mender(&self, args: &[&str], file: Option<&Path>) -> Output {
        let mut cmd = Command::new("mender");
        cmd.args(["--no-syslog", "--log-level", "debug", "--config"])
            .arg(self.dir.join("mender.conf"))
            .arg("--data")
            .arg(self.dir.join("mender-data"))
            .args(args)
            .env("LINESIGHT_EDGE", &self.edge)
            .env("LINESIGHT_EDGE_CONFIG", &self.config)
            .env_remove("LINESIGHT_ROOT");
        if let Some(f) = file {
            cmd.arg(f);
        }
        let t0 = Instant::now();
        let o = run(&mut cmd);
        eprintln!("(mender {args:?} took {:.2} s)", t0.elapsed().as_secs_f64());
        o
    }

    fn mender_stdout(&self, args: &[&str]) -> String {
        let o = self.mender(args, None);
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `linesight-edge status --config edge.toml --json`.
    fn status(&self) -> Value {
        let o = run(Command::new(&self.edge)
            .args(["status", "--json", "--config"])
            .arg(&self.config));
        assert!(o.status.success());
        stdout_lines(&o).remove(0)
    }

    /// (current slot, previous slot, current model id).
    fn pointers(&self) -> (Value, Value, Value) {
        let s = self.status();
        let id = s["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["current"] == true)
            .map(|x| x["model_id"].clone())
            .unwrap_or(Value::Null);
        (s["current"].clone(), s["previous"].clone(), id)
    }

    /// Installs and commits `artifact`, asserting both succeed.
    fn deploy(&self, artifact: &Path) {
        assert_eq!(
            self.mender(&["install"], Some(artifact)).status.code(),
            Some(0)
        );
        assert_eq!(self.mender(&["commit"], None).status.code(), Some(0));
    }

    /// `linesight-edge run` following `current`, synthetic frames at `fps` in triggered
    /// mode (every frame delivered, so a lost frame is a hole in `seq`), decisions to
    /// `out`.
    fn start_run(&self, out: &Path, fps: u32, max_frames: Option<u64>) -> std::process::Child {
        let mut cmd = Command::new(&self.edge);
        cmd.args(["run", "--json", "--every-frame", "--no-store", "--config"])
            .arg(&self.config)
            .arg("--source")
            .arg(format!("synthetic:{fps}"))
            .arg("--sink")
            .arg(format!("jsonl:{}", out.display()));
        if let Some(n) = max_frames {
            cmd.args(["--max-frames", &n.to_string()]);
        }
        eprintln!("$ {cmd:?} &");
        cmd.stdout(Stdio::piped()).spawn().unwrap()
    }
}

/// Names of the module states Mender called, in order, from its debug log.
fn module_calls(o: &Output) -> Vec<String> {
    let needle = format!("Calling module: {MODULE_DIR}/linesight-model ");
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| l.split_once(needle.as_str()))
        .filter_map(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Decision lines written so far (a line being written is skipped).
fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_good_artifact_installs_commits_and_a_rollback_restores_the_previous_model() {
    if !ready("a_good_artifact_installs_commits_and_a_rollback_restores_the_previous_model") {
        return;
    }
    let f = fleet();
    let b = TestBox::new(f);

    let o = b.mender(&["install"], Some(&f.artifact_a));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        module_calls(&o),
        [
            "Download",
            "SupportsRollback",
            "ArtifactInstall",
            "NeedsArtifactReboot"
        ]
    );
    assert_eq!(
        b.pointers(),
        ("0001".into(), Value::Null, f.model_id_a.as_str().into())
    );
    let o = b.mender(&["commit"], None);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(module_calls(&o), ["ArtifactCommit", "Cleanup"]);
    let name_a = b.mender_stdout(&["show-artifact"]);
    assert!(name_a.starts_with("birds-a-"), "{name_a}");
    let provides = b.mender_stdout(&["show-provides"]);
    assert!(
        provides.contains("linesight.model.id=birds-a"),
        "{provides}"
    );
    assert_eq!(b.pointers(), ("0001".into(), Value::Null, "birds-a".into()));

    // A second model, not committed, then Mender's rollback.
    assert_eq!(
        b.mender(&["install"], Some(&f.artifact_b)).status.code(),
        Some(0)
    );
    assert_eq!(
        b.pointers(),
        ("0002".into(), "0001".into(), f.model_id_b.as_str().into())
    );
    let o = b.mender(&["rollback"], None);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        module_calls(&o),
        ["SupportsRollback", "ArtifactRollback", "Cleanup"]
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("rolled back: current, previous = 0001 0002")
    );
    assert_eq!(
        b.pointers(),
        ("0001".into(), "0002".into(), "birds-a".into())
    );
    assert_eq!(b.mender_stdout(&["show-artifact"]), name_a);
    let provides = b.mender_stdout(&["show-provides"]);
    assert!(
        provides.contains("linesight.model.id=birds-a"),
        "{provides}"
    );
    eprintln!("status after the rollback: {}", b.status());
}

/// For a test named `test`: the fleet fixtures and a new box with model A deployed and
/// committed; None (after saying why) when the tests cannot run here.
fn box_with_model_a(test: &str) -> Option<(&'static Fleet, TestBox)> {
    if !ready(test) {
        return None;
    }
    let f = fleet();
    let b = TestBox::new(f);
    b.deploy(&f.artifact_a);
    Some((f, b))
}

#[test]
fn a_tampered_bundle_fails_in_artifact_install_and_the_old_model_keeps_deciding() {
    let Some((f, b)) = box_with_model_a(
        "a_tampered_bundle_fails_in_artifact_install_and_the_old_model_keeps_deciding",
    ) else {
        return;
    };
    let name_a = b.mender_stdout(&["show-artifact"]);

    let o = b.mender(&["install"], Some(&f.artifact_tampered));
    assert_eq!(
        o.status.code(),
        Some(1),
        "Mender reports the failed install"
    );
    let log = String::from_utf8_lossy(&o.stderr);
    // Mender read the artifact and ran the module; the install refused the bundle ...
    assert_eq!(
        module_calls(&o),
        [
            "Download",
            "SupportsRollback",
            "ArtifactInstall",
            "SupportsRollback",
            "ArtifactRollback",
            "ArtifactFailure",
            "Cleanup"
        ]
    );
    assert!(
        log.contains("changed after it was signed"),
        "the edge's reason is in Mender's log"
    );
    assert!(log.contains("Installation failed"), "{log}");
    // ... and the rollback that follows did not touch the models (nothing had moved).
    assert!(log
        .contains("current is still slot 0001: the install did not switch, nothing to roll back"));
    assert_eq!(b.pointers(), ("0001".into(), Value::Null, "birds-a".into()));
    assert_eq!(
        b.status()["slots"].as_array().unwrap().len(),
        1,
        "no slot was written"
    );
    assert_eq!(b.mender_stdout(&["show-artifact"]), name_a);

    // Still deciding: `run` following `current` decides with birds-a.
    let out = b.dir.join("decisions.jsonl");
    let run_out = b.start_run(&out, 20, Some(5)).wait_with_output().unwrap();
    assert!(run_out.status.success());
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["model"] == "birds-a"), "{lines:?}");
}

#[test]
fn a_wrong_device_type_or_runtime_is_refused_before_the_module_runs() {
    let Some((f, b)) =
        box_with_model_a("a_wrong_device_type_or_runtime_is_refused_before_the_module_runs")
    else {
        return;
    };
    let other_type = f.dir.join("other-type.mender");
    let other_runtime = f.dir.join("other-runtime.mender");
    let train = bin("linesight-train");
    for (out, extra) in [
        (&other_type, vec!["--device-type", "another-box"]),
        (
            &other_runtime,
            vec!["--device-type", DEVICE_TYPE, "--runtime-version", "99.0.0"],
        ),
    ] {
        if !out.exists() {
            let o = run(Command::new(&train)
                .args(["mender-artifact", "--bundle"])
                .arg(&f.bundle_a)
                .args(&extra)
                .arg("--out")
                .arg(out));
            assert!(o.status.success());
        }
    }
    for (artifact, reason) in [
        (
            &other_type,
            format!("not compatible with device {DEVICE_TYPE}"),
        ),
        (
            &other_runtime,
            format!("linesight.runtime.version\\\" not satisfied by currently installed artifact (99.0.0 != {RUNTIME_VERSION})"),
        ),
    ] {
        let o = b.mender(&["install"], Some(artifact));
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&reason),
            "{reason}"
        );
        assert!(
            module_calls(&o).is_empty(),
            "the module never ran: {:?}",
            module_calls(&o)
        );
        assert_eq!(b.pointers(), ("0001".into(), Value::Null, "birds-a".into()));
    }
}

#[test]
fn a_second_install_while_run_is_deciding_swaps_without_a_gap() {
    const FPS: u32 = 10;
    const PERIOD_MS: u64 = 1000 / FPS as u64;
    let Some((f, b)) =
        box_with_model_a("a_second_install_while_run_is_deciding_swaps_without_a_gap")
    else {
        return;
    };
    let out = b.dir.join("decisions.jsonl");
    let child = b.start_run(&out, FPS, None);
    let pid = child.id().to_string();
    wait_for("birds-a decisions", || read_lines(&out).len() >= 10);
    b.deploy(&f.artifact_b);
    wait_for("birds-b decisions", || {
        read_lines(&out)
            .iter()
            .filter(|l| l["model"] == "birds-b")
            .count()
            >= 10
    });
    // SIGTERM: the loop finishes the frame in hand, flushes and reports.
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let lines = read_lines(&out);

    // Every frame decided once, in order, by A and then by B.
    let mut models: Vec<&str> = Vec::new();
    let mut max_gap = 0;
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["frame"].as_u64(), Some(i as u64), "frame counter: {l}");
        assert_eq!(
            l["seq"].as_u64(),
            Some(i as u64),
            "a frame was lost or repeated: {l}"
        );
        let m = l["model"].as_str().unwrap();
        if models.last() != Some(&m) {
            models.push(m);
        }
        if i > 0 {
            let gap = l["time_unix_ms"].as_u64().unwrap()
                - lines[i - 1]["time_unix_ms"].as_u64().unwrap();
            max_gap = max_gap.max(gap);
        }
    }
    assert_eq!(models, ["birds-a", "birds-b"], "the model changes once");
    assert_eq!(
        (report["swaps"].as_u64(), report["swap_failures"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(report["dropped"].as_u64(), Some(0));
    let load_ms = report["swap_load_ms"].as_f64().unwrap();
    let first_b = lines.iter().position(|l| l["model"] == "birds-b").unwrap();
    let gap_at_swap = lines[first_b]["time_unix_ms"].as_u64().unwrap()
        - lines[first_b - 1]["time_unix_ms"].as_u64().unwrap();
    eprintln!(
        "{} frames at {FPS} fps, swap at frame {first_b}: gap at the swap {gap_at_swap} ms, largest gap {max_gap} ms (period {PERIOD_MS} ms); the new model loaded beside the old one in {load_ms:.0} ms",
        lines.len()
    );
    // A loop that waited for the new model would show the whole load between the last
    // decision of A and the first of B. (The gap bound in frame periods is checked in
    // process by edge-runtime/tests/it/swap.rs; here the install and Mender compete with
    // the loop for the same cores.)
    assert!(
        (gap_at_swap as f64) < load_ms,
        "a gap of {gap_at_swap} ms at the swap, the load took {load_ms:.0} ms: the loop waited"
    );
    assert_eq!(
        b.pointers(),
        ("0002".into(), "0001".into(), "birds-b".into())
    );
}
