//! Class 11: messages. A cause is printed once, however many layers wrap it (both
//! binaries print error chains through `linesight_shared::message::error_chain`); the
//! unsigned-bundle hint names every way to sign; `--help` shows technicians no test hooks.

use crate::util::*;
use std::path::Path;
use std::process::Command;

/// Runs a failing command and returns its stderr; each `(os error N)` in it appears once.
fn fails_once(bin_name: &str, args: &[&str], cwd: &Path) -> String {
    let o = run(Command::new(bin(bin_name)).args(args).current_dir(cwd));
    assert_eq!(o.status.code(), Some(2), "{bin_name} {args:?} must fail");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let os_errors = err.matches("(os error").count();
    assert_eq!(
        os_errors, 1,
        "{bin_name} {args:?}: the OS error must be printed exactly once:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("error:"))
        .expect("an error line");
    // No `: X: X` repetition of any cause.
    let parts: Vec<&str> = line.split(": ").collect();
    for w in parts.windows(2) {
        assert_ne!(w[0], w[1], "a cause repeated in: {line}");
    }
    err
}

#[test]
fn causes_are_printed_once_by_both_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("file"), b"not a folder").unwrap();
    // Reading: a missing bundle, wrapped by the command's context.
    let e = fails_once(
        "linesight-edge",
        &["classify", "--bundle", "missing.lsb", "x.jpg"],
        d,
    );
    assert!(e.contains("missing.lsb"), "{e}");
    fails_once(
        "linesight-edge",
        &["install", "missing.lsb", "--root", "root"],
        d,
    );
    fails_once("linesight-edge", &["inspect", "--bundle", "missing.lsb"], d);
    // Writing under a path that cannot be a folder.
    fails_once("linesight-train", &["keygen", "--out", "file/keys"], d);
    let store = d.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let e = fails_once(
        "linesight-edge",
        &["export-uncertain", "--store", "store", "--out", "file/usb"],
        d,
    );
    assert!(e.contains("cannot write the export `file/usb`"), "{e}");
    // A root that is not there is named as such.
    let o = run(Command::new(bin("linesight-edge"))
        .args(["rollback", "--root", "nope"])
        .current_dir(d));
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no models root at `nope`"), "{e}");
    fails_once(
        "linesight-train",
        &["label", "score", "missing.jsonl", "--truth", "missing.csv"],
        d,
    );
}

#[test]
fn the_unsigned_hint_names_every_way_to_sign() {
    let tmp = tempfile::tempdir().unwrap();
    // The committed golden bundle is unsigned; install refuses it at the signature check.
    let golden = repo().join("shared/tests/fixtures/golden-v1.lsb");
    let o = run(Command::new(bin("linesight-edge"))
        .arg("install")
        .arg(&golden)
        .arg("--root")
        .arg(tmp.path().join("root")));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    for way in [
        "linesight-train export --sign",
        "linesight-train prototypes --sign",
        "linesight-train quantize --sign",
        "[export]",
        "--allow-unsigned",
    ] {
        assert!(err.contains(way), "the hint lacks `{way}`:\n{err}");
    }
}

#[test]
fn help_shows_no_test_hooks() {
    let edge = [
        "classify",
        "install",
        "rollback",
        "run",
        "export-uncertain",
        "bench",
        "inspect",
        "cameras",
        "status",
    ];
    let train = [
        "prototypes",
        "keygen",
        "eval",
        "refine",
        "train",
        "export",
        "quantize",
        "pipeline",
        "label",
        "simulate-mllm",
    ];
    let cases = edge
        .iter()
        .map(|c| ("linesight-edge", *c))
        .chain(train.iter().map(|c| ("linesight-train", *c)));
    for (b, cmd) in cases {
        let o = Command::new(bin(b)).args([cmd, "--help"]).output().unwrap();
        assert!(o.status.success(), "{b} {cmd} --help");
        let help = String::from_utf8_lossy(&o.stdout);
        for hook in ["LINESIGHT_FAULT", "test hook", "SIGKILL", "show-settings"] {
            assert!(
                !help.contains(hook),
                "`{b} {cmd} --help` shows the test hook `{hook}`:\n{help}"
            );
        }
    }
}

/// Second adversarial pass: `classify`'s text lines printed a file name as it is, so a
/// name with a newline split its line in two (the first a bogus path with no result) and
/// a tab added a column. Control characters are escaped in text lines now; `--json`
/// keeps the name as it is.
#[test]
fn a_file_name_with_a_newline_stays_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = tmp.path().join("a\nb\tc.jpg");
    std::fs::copy(demo_photo(), &photo).unwrap();
    let broken = tmp.path().join("x\ny.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let o = run(edge(&["classify", "--bundle"])
        .arg(tiny_bundle())
        .arg(&photo)
        .arg(&broken));
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per image:\n{text}");
    let dir = tmp.path().display();
    assert!(
        lines[0].starts_with(&format!("{dir}/a\\nb\\tc.jpg\t")),
        "{text}"
    );
    assert_eq!(lines[0].split('\t').count(), 4, "{text}");
    assert!(
        lines[1].starts_with(&format!("{dir}/x\\ny.png\tERROR\t")),
        "{text}"
    );
    let o = run(edge(&["classify", "--json", "--bundle"])
        .arg(tiny_bundle())
        .arg(&photo));
    let v = stdout_lines(&o);
    assert_eq!(v[0]["path"], photo.display().to_string());
}

/// Second adversarial pass: `keygen --out signing.key` (taking --out for the key file)
/// over an existing file said "cannot write key file `signing.key`: File exists", which
/// points the wrong way. It now says that --out is the folder the pair goes into, and
/// leaves the file as it was.
#[test]
fn keygen_out_naming_a_file_says_it_wants_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("signing.key");
    std::fs::write(&file, b"an old key, kept").unwrap();
    let o = run(Command::new(bin("linesight-train"))
        .args(["keygen", "--out", "signing.key"])
        .current_dir(tmp.path()));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`signing.key` is a file, not a folder")
            && err.contains("--out names the folder"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"an old key, kept");
}
