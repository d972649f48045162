//! Class 1, filesystem hazards when walking folders (issue 16). A symbolic-link loop
//! (`ln -s . d/l1; ln -s . d/l2`) made `classify` run for ever with memory past 800 MB and
//! `run` ignore SIGTERM; a FIFO named `x.jpg` blocked both for ever. Every folder walk of
//! both binaries now goes through `linesight_shared::walk`: it ends, lists each file once
//! (device + inode), skips and reports what is not a regular file, never opens a FIFO, and
//! stops on SIGTERM.

use crate::util::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The reported reproduction plus the variants of the class: two loops at the top, a loop
/// further down, a link to a sibling folder and a hard link (second paths to files already
/// listed), a FIFO and a socket named like images, a dangling link. Holds three distinct
/// images: `a/b/deep.jpg`, `c/side.jpg`, `top.jpg`.
fn hostile_folder(root: &Path) -> std::os::unix::net::UnixListener {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir_all(root.join("c")).unwrap();
    for p in ["a/b/deep.jpg", "c/side.jpg", "top.jpg"] {
        std::fs::copy(demo_photo(), root.join(p)).unwrap();
    }
    symlink(".", root.join("l1")).unwrap();
    symlink(".", root.join("l2")).unwrap();
    symlink("../..", root.join("a/b/up")).unwrap();
    symlink("../c", root.join("a/sibling")).unwrap();
    std::fs::hard_link(root.join("top.jpg"), root.join("c/hard.jpg")).unwrap();
    symlink(root.join("nothing.jpg"), root.join("dangling.jpg")).unwrap();
    mkfifo(&root.join("x.jpg"));
    std::os::unix::net::UnixListener::bind(root.join("s.png")).unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn classify_walks_loops_fifos_and_duplicates_once_and_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _socket = hostile_folder(&d);
    let m = classify_tiny(&[&d], TIMEOUT);
    assert!(!m.timed_out, "classify did not end");
    assert_eq!(m.code, Some(0), "skips are said, not failures");
    let lines: Vec<serde_json::Value> = m
        .stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each file once, in walk order: `c` is first reached as `a/sibling`, and its hard
    // link to top.jpg comes before top.jpg itself.
    let paths: Vec<String> = lines
        .iter()
        .map(|l| {
            assert!(l["label"].is_string(), "{l}");
            Path::new(l["path"].as_str().unwrap())
                .strip_prefix(&d)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        paths,
        ["a/b/deep.jpg", "a/sibling/hard.jpg", "a/sibling/side.jpg"]
    );
    for needle in [
        "FIFO",
        "socket",
        "symbolic link to nothing",
        "(a loop)",
        "already listed",
    ] {
        m.assert_stderr_has(needle);
    }
    assert!(
        m.stderr
            .contains("3 not regular files, 2 duplicates, 3 symbolic-link loops"),
        "the summary counts the skips"
    );
    m.assert_peak_below(200 << 10);
}

#[test]
fn a_fifo_named_on_the_command_line_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("x.jpg");
    mkfifo(&fifo);
    let m = classify_tiny(&[&fifo, &demo_photo()], TIMEOUT);
    assert!(!m.timed_out);
    assert_eq!(
        m.code,
        Some(1),
        "a named path that cannot be used is a failed item"
    );
    let out = m.stdout_text();
    assert!(
        out.contains("is a FIFO (named pipe), not a regular file"),
        "{out}"
    );
    assert!(out.contains("\"label\""), "the photo is still classified");
    // The bundle too.
    let m = run_bounded(
        edge(&["classify", "--bundle"]).arg(&fifo).arg(demo_photo()),
        TIMEOUT,
    );
    assert!(!m.timed_out);
    assert_eq!(m.code, Some(2));
    m.assert_stderr_has("is a FIFO (named pipe), not a file");
}

#[test]
fn run_over_a_hostile_folder_ends_each_image_once_and_answers_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _socket = hostile_folder(&d);
    let run = |extra: &[&str], decisions: &Path| {
        let mut cmd = edge(&["run", "--no-store", "--json", "--bundle"]);
        cmd.arg(tiny_bundle())
            .arg(format!("--source=dir:{}", d.display()))
            .arg(format!("--sink=jsonl:{}", decisions.display()))
            .args(extra);
        cmd
    };
    // To its end: three images, each decided once; the FIFO never opened.
    let once = tmp.path().join("once.jsonl");
    let m = run_bounded(&mut run(&[], &once), TIMEOUT);
    assert!(!m.timed_out, "run did not end");
    assert_eq!(m.code, Some(0));
    let report: serde_json::Value = serde_json::from_str(m.stdout_text().trim()).unwrap();
    assert_eq!(report["end"], "source-ended");
    assert_eq!(report["decisions"], 3);
    assert_eq!(report["bad_frames"], 0);
    m.assert_stderr_has("FIFO");
    assert_eq!(std::fs::read_to_string(&once).unwrap().lines().count(), 3);

    // Looping at 20 fps until SIGTERM: it must stop within a second or two.
    let looped = tmp.path().join("loop.jsonl");
    let child = spawn(&mut run(&["--loop", "--fps", "20"], &looped), None);
    std::thread::sleep(Duration::from_millis(1500));
    child.signal(libc::SIGTERM);
    let t = std::time::Instant::now();
    let m = child.wait(Duration::from_secs(30));
    assert!(!m.timed_out, "run ignored SIGTERM");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let report: serde_json::Value = serde_json::from_str(m.stdout_text().trim()).unwrap();
    assert_eq!(report["end"], "stopped");
    assert!(report["decisions"].as_u64().unwrap() >= 3, "{report}");
    m.assert_peak_below(200 << 10);
}

/// The trainer's walks (`label --images`, refine, pipeline, calibration folders) are the
/// same one: `label` ends at the connection it cannot make, after hashing each image once
/// and skipping the FIFO; `quantize` reports a folder of nothing but loops promptly.
#[test]
fn trainer_walks_end_and_skip_what_is_not_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _socket = hostile_folder(&d);
    let m = run_bounded(
        Command::new(bin("linesight-train"))
            .args(["label", "--images"])
            .arg(&d)
            .args(["--endpoint", "http://127.0.0.1:9/v1", "--model", "m"])
            .args(["--max-retries", "0", "--out"])
            .arg(tmp.path().join("labels.jsonl")),
        TIMEOUT,
    );
    assert!(!m.timed_out, "label did not end");
    assert_eq!(m.code, Some(2), "nothing listens on port 9");
    for needle in [
        "FIFO",
        "(a loop)",
        "already listed",
        "3 symbolic-link loops",
    ] {
        m.assert_stderr_has(needle);
    }

    let loops = tmp.path().join("loops");
    std::fs::create_dir_all(&loops).unwrap();
    std::os::unix::fs::symlink(".", loops.join("l1")).unwrap();
    std::os::unix::fs::symlink(".", loops.join("l2")).unwrap();
    mkfifo(&loops.join("x.jpg"));
    let m = run_bounded(
        Command::new(bin("linesight-train"))
            .args(["quantize", "--bundle"])
            .arg(tiny_bundle())
            .arg("--calibration")
            .arg(&loops)
            .arg("--out")
            .arg(tmp.path().join("q.lsb")),
        TIMEOUT,
    );
    assert!(!m.timed_out, "quantize did not end");
    assert_eq!(m.code, Some(2));
    m.assert_stderr_has("no image files");
    m.assert_stderr_has("FIFO");
}

/// `ROOT/trusted-keys/` is a folder `install` (and `run`'s hot swap) reads every `*.pub`
/// of: a FIFO there must be refused, naming it, not waited on for ever.
#[test]
fn a_fifo_among_the_trusted_keys_is_refused_not_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("trusted-keys")).unwrap();
    mkfifo(&root.join("trusted-keys/line3.pub"));
    let m = run_bounded(
        edge(&["install", "--allow-unsigned", "--root"])
            .arg(&root)
            .arg(tiny_bundle()),
        TIMEOUT,
    );
    assert!(!m.timed_out, "install waited on the FIFO");
    assert_eq!(m.code, Some(2));
    m.assert_stderr_has("line3.pub`: it is a FIFO (named pipe), not a regular file");
}
