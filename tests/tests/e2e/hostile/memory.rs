//! Class 2, memory bounds (issue 16). A 2 GB file named `.lsb` was read whole (2.1 GB RSS)
//! before its magic was checked; a small PNG of 12000x12000 px took 900 MB to classify;
//! `bench --size 100000x100000` aborted on a failed 30 GB allocation. Headers are checked
//! before bodies are read, images are decoded by the one bounded decoder
//! (`linesight_shared::decode`, `--max-image-megapixels`), and size arguments are
//! validated. Each case asserts the child's own peak RSS (`wait4`'s `ru_maxrss`).

use crate::util::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Far above what a refusal needs (the edge binary starts at ~10 MB), far below what
/// reading or decoding the hostile input would take.
const BOUND_KIB: u64 = 150 << 10;

/// A sparse 2 GiB file: nothing on disk, 2 GiB if read.
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn a_2gb_file_named_lsb_is_refused_from_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.lsb");
    sparse(&big, 2 << 30);
    let b = big.to_str().unwrap();
    let root = tmp.path().join("root");
    let r = root.to_str().unwrap();
    let photo = demo_photo();
    let p = photo.to_str().unwrap();
    let cases: Vec<Command> = vec![
        edge(&["classify", "--bundle", b, p]),
        edge(&["inspect", "--bundle", b]),
        edge(&["bench", "--bundle", b, "--iterations", "1"]),
        edge(&["install", b, "--root", r, "--allow-unsigned"]),
        edge(&["run", "--bundle", b, "--no-store", "--max-frames", "1"]),
    ];
    for mut cmd in cases {
        let m = run_bounded(&mut cmd, TIMEOUT);
        assert!(!m.timed_out);
        assert_eq!(m.code, Some(2), "{:?}", cmd);
        m.assert_stderr_has("not a linesight bundle");
        m.assert_peak_below(BOUND_KIB);
    }
    let m = run_bounded(
        Command::new(bin("linesight-train"))
            .args(["quantize", "--bundle", b, "--calibration", p, "--out"])
            .arg(tmp.path().join("q.lsb")),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(2));
    m.assert_stderr_has("not a linesight bundle");
    m.assert_peak_below(BOUND_KIB);

    // A real bundle followed by 2 GiB it does not announce: refused unread as well.
    let padded = tmp.path().join("padded.lsb");
    std::fs::copy(tiny_bundle(), &padded).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&padded)
        .unwrap();
    f.set_len(f.metadata().unwrap().len() + (2 << 30)).unwrap();
    let m = run_bounded(
        &mut edge(&["inspect", "--bundle", padded.to_str().unwrap()]),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(2));
    m.assert_stderr_has("unexpected bytes after its checksum");
    m.assert_peak_below(BOUND_KIB);
}

#[test]
fn a_12000x12000_png_is_refused_from_its_header_by_both_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("imgs");
    std::fs::create_dir_all(&d).unwrap();
    let big = d.join("big.png");
    std::fs::write(&big, black_png(12000, 12000)).unwrap();
    let m = classify_tiny(&[&big, &demo_photo()], TIMEOUT);
    assert!(!m.timed_out);
    assert_eq!(
        m.code,
        Some(1),
        "the image is a failed item, the photo is classified"
    );
    let out = m.stdout_text();
    assert!(
        out.contains(&format!(
            "image `{}`: 12000x12000 is 144 megapixels, more than the limit of 50 megapixels; raise the limit with --max-image-megapixels",
            big.display()
        )),
        "{out}"
    );
    assert!(out.contains("\"label\""));
    m.assert_peak_below(BOUND_KIB);

    // The dir: source: a bad frame, counted; the photo decided.
    std::fs::copy(demo_photo(), d.join("photo.jpg")).unwrap();
    let m = run_bounded(
        edge(&[])
            .args(["run", "--no-store", "--json", "--sink", "none", "--bundle"])
            .arg(tiny_bundle())
            .arg(format!("--source=dir:{}", d.display())),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(0));
    let report: serde_json::Value = serde_json::from_str(m.stdout_text().trim()).unwrap();
    assert_eq!(
        (report["bad_frames"].as_u64(), report["decisions"].as_u64()),
        (Some(1), Some(1))
    );
    m.assert_stderr_has("144 megapixels");
    m.assert_peak_below(BOUND_KIB);

    // The trainer's calibration images go through the same decoder: the big one is
    // refused and reported, the others calibrate the tiny model.
    let cal = tmp.path().join("cal");
    std::fs::create_dir_all(&cal).unwrap();
    for name in ["a.png", "b.png", "c.png", "d.png"] {
        std::fs::write(cal.join(name), black_png(16, 16)).unwrap();
    }
    std::fs::rename(&big, cal.join("big.png")).unwrap();
    let m = run_bounded(
        Command::new(bin("linesight-train"))
            .args(["--json", "quantize", "--bundle"])
            .arg(tiny_bundle())
            .arg("--calibration")
            .arg(&cal)
            // The test is the bounded decoder: the gate (one held-out image certifies
            // nothing) and the per-layer speed choice are not.
            .args(["--allow-parity-drop", "--keep-slow-layers"])
            .arg("--out")
            .arg(tmp.path().join("q.lsb")),
        TIMEOUT,
    );
    assert!(!m.timed_out);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let report: serde_json::Value = serde_json::from_str(m.stdout_text().trim()).unwrap();
    let unreadable = report["unreadable_images"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1);
    assert!(unreadable[0]
        .as_str()
        .unwrap()
        .contains("12000x12000 is 144 megapixels"));
    assert_eq!(report["int8"]["calibration_images"], 3);
    m.assert_peak_below(2 * BOUND_KIB);
}

#[test]
fn the_image_limit_is_a_setting_on_both_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("six.png");
    std::fs::write(&img, black_png(3000, 2000)).unwrap();
    let classify = |mp: &str| {
        run_bounded(
            edge(&[])
                .args([
                    "--max-image-megapixels",
                    mp,
                    "classify",
                    "--json",
                    "--bundle",
                ])
                .arg(tiny_bundle())
                .arg(&img),
            TIMEOUT,
        )
    };
    let m = classify("5");
    assert_eq!(m.code, Some(1));
    assert!(m
        .stdout_text()
        .contains("3000x2000 is 6 megapixels, more than the limit of 5 megapixels"));
    let m = classify("6");
    assert_eq!(m.code, Some(0), "raised: decoded");
    assert!(m.stdout_text().contains("\"label\""));
    let m = classify("0");
    assert_eq!(m.code, Some(2));
    assert!(
        m.stderr
            .contains("max_image_megapixels 0 is out of range 1..=1000"),
        "{}",
        m.stderr
    );
    let m = run_bounded(
        Command::new(bin("linesight-train"))
            .args(["--max-image-megapixels", "5000", "keygen", "--out"])
            .arg(tmp.path().join("k")),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(2));
    m.assert_stderr_has("out of range 1..=1000");
}

#[test]
fn size_arguments_are_validated_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_bundle();
    let t = t.to_str().unwrap();
    for args in [
        vec!["bench", "--bundle", t, "--size", "100000x100000"],
        vec![
            "bench",
            "--bundle",
            t,
            "--pipeline",
            "--size",
            "100000x100000",
        ],
    ] {
        let m = run_bounded(&mut edge(&args), TIMEOUT);
        assert_eq!(m.code, Some(2), "{args:?}");
        m.assert_stderr_has(
            "--size: 100000x100000 is 10000 megapixels, more than the limit of 50 megapixels",
        );
        m.assert_peak_below(BOUND_KIB);
    }
    // Counts a bench keeps in memory.
    for (args, needle) in [
        (
            vec!["bench", "--bundle", t, "--iterations", "10000000000000"],
            "--iterations 10000000000000 is more than the 10000000 a bench takes",
        ),
        (
            vec![
                "bench",
                "--bundle",
                t,
                "--pipeline",
                "--rounds",
                "18446744073709551615",
            ],
            "--rounds 18446744073709551615 is more than",
        ),
    ] {
        let m = run_bounded(&mut edge(&args), TIMEOUT);
        assert_eq!(m.code, Some(2), "{args:?}");
        m.assert_stderr_has(needle);
    }
    // edge.toml: the synthetic frame size, and a region outside it.
    let cfg = tmp.path().join("edge.toml");
    for (text, needle) in [
        (
            "[source]\nsynthetic_size = [100000, 100000]\n",
            "source.synthetic_size: 100000x100000 is 10000 megapixels",
        ),
        (
            "[[station]]\nname = \"far\"\nrect = [4294967295, 0, 10, 10]\n",
            "station `far`: region 4294967295,0 10x10 does not fit a 640x480 frame",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let m = run_bounded(
            &mut edge(&[
                "run",
                "--bundle",
                t,
                "--no-store",
                "--config",
                cfg.to_str().unwrap(),
            ]),
            TIMEOUT,
        );
        assert_eq!(m.code, Some(2));
        m.assert_stderr_has(needle);
    }
    // A manifest asking for a 100000-pixel model input (120 GB of floats).
    let mut b = linesight_shared::bundle::Bundle::read(&tiny_bundle()).unwrap();
    b.manifest.preprocess.crop = 100_000;
    b.manifest.preprocess.resize_shorter = 100_000;
    let crafted = tmp.path().join("crafted.lsb");
    linesight_shared::bundle::Bundle::new(b.manifest, b.model)
        .write(&crafted)
        .unwrap();
    let m = run_bounded(
        &mut edge(&[
            "classify",
            "--bundle",
            crafted.to_str().unwrap(),
            demo_photo().to_str().unwrap(),
        ]),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(2));
    assert!(
        m.stderr
            .contains("preprocessing crop 100000 is out of range 1..=2048"),
        "{}",
        m.stderr
    );
    m.assert_peak_below(BOUND_KIB);
}
