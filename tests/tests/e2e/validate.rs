//! `linesight-train validate` end to end: a deployed bundle from the demo photos, a new one
//! that regressed (trained on partly wrong names), training labels from the MLLM simulator, uncertain frames stored by the
//! real `linesight-edge run`; the report is rendered and opened in headless Chromium
//! (Debian's `chromium`, installed by scripts/test.sh): the sections are in the DOM, the
//! SVG plots are drawn, the screenshot is not blank (kept as `target/validate-e2e/`), and
//! the page made no network request (Chromium's net log, checked against a control page
//! that does make one). Then the recommended thresholds are written into the bundle and
//! `linesight-edge classify` must accept exactly what the report predicted.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The sections, in the order the page must show them.
const SECTIONS: [&str; 11] = [
    "verdict",
    "headline",
    "per-class",
    "confusion",
    "confidence",
    "galleries",
    "baseline",
    "labels",
    "line",
    "host",
    "unreadable",
];

/// Debian's chromium, or None (the test then skips loudly, and fails in CI).
fn chromium(test: &str) -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if found.is_some() {
            return found;
        }
    }
    if std::env::var("LINESIGHT_REQUIRE_WEIGHTS").as_deref() == Ok("1") {
        panic!(
            "{test}: no `chromium` on PATH; scripts/test.sh installs it (apt-get install chromium)"
        );
    }
    eprintln!("SKIPPED {test}: no `chromium` on PATH (apt-get install chromium)");
    None
}

/// Runs headless Chromium on `page` with a fresh profile and a net log; `mode` is
/// `--dump-dom` or `--screenshot=FILE`. Returns stdout and the net log's text.
fn open_in_chromium(
    exe: &Path,
    page: &Path,
    work: &Path,
    mode: &str,
    tag: &str,
) -> (String, String) {
    let profile = work.join(format!("profile-{tag}"));
    let netlog = work.join(format!("netlog-{tag}.json"));
    let o = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,9000",
            mode,
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("file://{}", page.display()))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let log = std::fs::read_to_string(&netlog).unwrap();
    (String::from_utf8_lossy(&o.stdout).into_owned(), log)
}

/// The URLs the page asked the network for. Chromium's own background requests (update
/// checks and the like, made whatever the page holds) are not the page's: they carry no
/// origin ("not an origin"), while a request made by a `file://` page carries its origin
/// (`null`) and a `file://` network isolation key.
fn page_requests(netlog: &str) -> Vec<String> {
    let log: serde_json::Value = serde_json::from_str(netlog).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .unwrap();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        // the begin phase carries the request (the end phase only its result)
        .filter(|e| e["type"].as_u64() == Some(start_job) && e["params"]["url"].is_string())
        .filter(|e| {
            let p = &e["params"];
            p["initiator"].as_str() != Some("not an origin")
                || p["network_isolation_key"]
                    .as_str()
                    .is_some_and(|k| k.contains("file://"))
        })
        .map(|e| e["params"]["url"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Pixels within `tol` of `rgb` in each channel.
fn count_colour(img: &image::RgbaImage, rgb: (u8, u8, u8), tol: i32) -> usize {
    img.pixels()
        .filter(|p| {
            (p[0] as i32 - rgb.0 as i32).abs() <= tol
                && (p[1] as i32 - rgb.1 as i32).abs() <= tol
                && (p[2] as i32 - rgb.2 as i32).abs() <= tol
        })
        .count()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
}

/// The demo photos of one split, with absolute paths, and their labels.
fn demo_rows(split: &str) -> Vec<(PathBuf, String)> {
    let demo = repo().join("models/demo");
    std::fs::read_to_string(demo.join("manifest.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f[2] == split)
        .map(|f| (demo.join(&f[0]), f[1].clone()))
        .collect()
}

fn write_manifest(path: &Path, rows: &[(PathBuf, String, &str)]) {
    let mut text = String::from("path,label,split\n");
    for (p, l, s) in rows {
        text.push_str(&format!("{},{l},{s}\n", p.display()));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn validate_renders_an_offline_report_that_chromium_opens() {
    let test = "validate_renders_an_offline_report_that_chromium_opens";
    if !weights_present(test) {
        return;
    }
    let Some(chrome) = chromium(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let train_bin = bin("linesight-train");
    let edge_bin = bin("linesight-edge");

    // The deployed bundle (prototypes of the demo photos), and a new one that regressed:
    // four of Cedar Waxwing's six training photos were named Indigo Bunting.
    let deployed = demo_bundle(t);
    let train_rows = demo_rows("train");
    let mut swapped = 0;
    let bad: Vec<(PathBuf, String, &str)> = train_rows
        .iter()
        .map(|(p, l)| {
            let l = if l == "Cedar Waxwing" && swapped < 4 {
                swapped += 1;
                "Indigo Bunting".to_string()
            } else {
                l.clone()
            };
            (p.clone(), l, "train")
        })
        .collect();
    write_manifest(&t.join("bad.csv"), &bad);
    let bundle = t.join("candidate.lsb");
    let o = run(Command::new(&train_bin)
        .args([
            "--json",
            "prototypes",
            "--split",
            "train",
            "--model-id",
            "demo-new",
            "--manifest",
        ])
        .arg(t.join("bad.csv"))
        .arg("--out")
        .arg(&bundle));
    assert!(o.status.success());

    // The scored split: the 15 held-out photos, one missing file and one corrupt one.
    let corrupt = t.join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8 not a jpeg").unwrap();
    let mut rows: Vec<(PathBuf, String, &str)> = demo_rows("test")
        .into_iter()
        .map(|(p, l)| (p, l, "test"))
        .collect();
    rows.push((t.join("missing.jpg"), "Western Grebe".into(), "test"));
    rows.push((corrupt.clone(), "Belted Kingfisher".into(), "test"));
    let manifest = t.join("test.csv");
    write_manifest(&manifest, &rows);

    // Training labels: the simulator names the 30 training photos, refine votes.
    let (images, _) = demo_unlabeled(t);
    let (refined, o) = label_and_refine(t, &images, "0.6", "3");
    assert!(o.status.success());

    // What the line saw: the box runs a bundle that rejects everything over the
    // held-out photos, keeps them in its store, and exports them.
    let strict = t.join("strict.toml");
    let sha = {
        let o = run(Command::new(&edge_bin)
            .args(["inspect", "--json", "--bundle"])
            .arg(&bundle));
        assert!(o.status.success());
        json(&o)["onnx_sha256"].as_str().unwrap().to_string()
    };
    std::fs::write(
        &strict,
        format!("model_sha256 = \"{sha}\"\n[decision]\nmin_score = 1.01\nmin_margin = 0.0\n"),
    )
    .unwrap();
    let strict_bundle = t.join("strict.lsb");
    let o = run(Command::new(&train_bin)
        .args(["--json", "thresholds", "--bundle"])
        .arg(&bundle)
        .arg("--set")
        .arg(&strict)
        .arg("--out")
        .arg(&strict_bundle));
    assert!(o.status.success());
    let held_out = t.join("held-out");
    std::fs::create_dir(&held_out).unwrap();
    for (i, (p, _)) in demo_rows("test").iter().enumerate() {
        std::os::unix::fs::symlink(p, held_out.join(format!("{i:03}.jpg"))).unwrap();
    }
    let root = t.join("root");
    let edge_toml = t.join("edge.toml");
    std::fs::write(
        &edge_toml,
        format!(
            "[model]\nallow_unsigned = true\n[source]\nspec = \"dir:{}\"\nmax_frames = 15\n[sink]\nspec = \"none\"\n[store]\nmin_interval_ms = 0\n",
            held_out.display()
        ),
    )
    .unwrap();
    let o = run(Command::new(&edge_bin)
        .args(["run", "--json", "--config"])
        .arg(&edge_toml)
        .arg("--bundle")
        .arg(&strict_bundle)
        .arg("--root")
        .arg(&root));
    assert!(o.status.success());
    let usb = t.join("usb");
    let o = run(Command::new(&edge_bin)
        .args(["export-uncertain", "--json", "--root"])
        .arg(&root)
        .arg("--out")
        .arg(&usb));
    assert!(o.status.success());
    assert_eq!(json(&o)["entries"], 15);

    // The report.
    let out = t.join("report");
    let validate = |require: &str| {
        run(Command::new(&train_bin)
            .args(["--json", "validate", "--bundle"])
            .arg(&bundle)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--split", "test", "--baseline"])
            .arg(&deployed)
            .arg("--refined")
            .arg(&refined)
            .arg("--uncertain")
            .arg(&usb)
            .args([
                "--target-precision",
                "0.95",
                "--bench-iterations",
                "5",
                "--resamples",
                "200",
            ])
            .args(["--require", require, "--out"])
            .arg(&out))
    };
    let started = std::time::Instant::now();
    let go_rules = "top1>=0.5,max_class_regression<=1,unreadable<=2";
    let o = validate(go_rules);
    eprintln!("validate took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(o.status.code(), Some(0), "go must exit 0");
    let summary = json(&o);
    assert_eq!(summary["go"], true);
    assert_eq!(
        (summary["images"].as_u64(), summary["unreadable"].as_u64()),
        (Some(15), Some(2))
    );
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["schema_version"], 1);
    let unreadable: Vec<&str> = report["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap())
        .collect();
    assert!(
        unreadable.iter().any(|p| p.ends_with("missing.jpg"))
            && unreadable.iter().any(|p| p.ends_with("corrupt.jpg"))
    );
    assert_eq!(report["line"]["frames"].as_array().unwrap().len(), 15);
    assert!(
        report["line"]["reference_p95"].as_f64().is_some(),
        "drift computed"
    );
    assert!(report["baseline"]["per_class"].as_array().unwrap().len() == 5);
    assert!(report["labels"]["images"].as_u64() == Some(30));
    assert!(out.join("to-verify.csv").exists() && out.join("thresholds.toml").exists());
    // self-contained: no reference to anything outside the file
    for needle in [
        "<script",
        "<link",
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
    ] {
        assert!(!html.contains(needle), "the page contains `{needle}`");
    }
    assert!(html.len() < 3_000_000, "{} bytes", html.len());

    // The regression: Cedar Waxwing went from 3 of 3 to 0 of 3.
    let b = &report["baseline"];
    assert_eq!(b["max_class_regression"].as_f64(), Some(1.0), "{b}");
    assert_eq!(b["right_to_wrong"].as_array().unwrap().len(), 3);
    assert_eq!(b["per_class"][0]["name"], "Cedar Waxwing");
    // A failed rule is a no-go: exit 3, the failed rule named.
    let o = validate("top1>=0.5,max_class_regression<=0.05");
    assert_eq!(o.status.code(), Some(3), "no-go must exit 3");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-go: max_class_regression<=0.05 (is 1)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // and the page says so (the go page is restored below)
    assert!(std::fs::read_to_string(&page).unwrap().contains("NO-GO"));
    let o = validate(go_rules);
    assert_eq!(o.status.code(), Some(0));

    // Chromium: the DOM.
    let work = t.join("chromium");
    std::fs::create_dir(&work).unwrap();
    let (dom, netlog) = open_in_chromium(&chrome, &page, &work, "--dump-dom", "dom");
    let mut at = 0;
    for id in SECTIONS {
        let pos = dom
            .find(&format!("<section id=\"{id}\""))
            .unwrap_or_else(|| panic!("section `{id}` not in the DOM"));
        assert!(pos > at, "section `{id}` out of order");
        at = pos;
    }
    for plot in [
        "plot-confusion",
        "plot-reliability",
        "plot-coverage",
        "plot-deltas",
        "plot-drift",
    ] {
        assert!(
            dom.contains(&format!("<svg id=\"{plot}\"")),
            "plot `{plot}` not in the DOM"
        );
    }
    assert!(
        dom.matches("src=\"data:image/jpeg;base64,").count() >= 15,
        "thumbnails"
    );
    assert_eq!(
        page_requests(&netlog),
        Vec::<String>::new(),
        "the page asked the network"
    );

    // Chromium: the screenshot, kept under target/.
    let artefacts = repo().join("target/validate-e2e");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let (_, netlog) = open_in_chromium(
        &chrome,
        &page,
        &work,
        &format!("--screenshot={}", shot.display()),
        "shot",
    );
    assert_eq!(
        page_requests(&netlog),
        Vec::<String>::new(),
        "the page asked the network"
    );
    std::fs::copy(&page, artefacts.join("report.html")).unwrap();
    let img = image::open(&shot).unwrap().to_rgba8();
    let white = count_colour(&img, (255, 255, 255), 2);
    let total = (img.width() * img.height()) as usize;
    assert!(
        white < total * 95 / 100,
        "the screenshot is blank: {white} of {total} pixels white"
    );
    // Each plot's signature colour (trainer/src/validate/svg.rs) is on screen: the
    // browser drew the SVG, not only parsed it.
    for (what, rgb) in [
        ("heatmap diagonal", (33, 102, 172)),
        ("reliability bars", (242, 142, 43)),
        ("coverage curve", (118, 42, 131)),
        ("drift histogram", (27, 120, 55)),
    ] {
        let n = count_colour(&img, rgb, 12);
        assert!(
            n >= 40,
            "{what}: only {n} pixels of rgb{rgb:?} in the screenshot"
        );
    }

    // The control: the same check finds a request when the page makes one.
    let leaky = work.join("leaky.html");
    std::fs::write(
        &leaky,
        html.replacen(
            "</body>",
            "<img src=\"http://127.0.0.1:9/probe.png\"></body>",
            1,
        ),
    )
    .unwrap();
    let (_, netlog) = open_in_chromium(&chrome, &leaky, &work, "--dump-dom", "control");
    assert_eq!(
        page_requests(&netlog),
        vec!["http://127.0.0.1:9/probe.png".to_string()]
    );

    // The recommended thresholds, written into the bundle, accept in `classify` exactly
    // what the report predicted.
    let tuned = t.join("tuned.lsb");
    let o = run(Command::new(&train_bin)
        .args(["--json", "thresholds", "--bundle"])
        .arg(&bundle)
        .arg("--set")
        .arg(out.join("thresholds.toml"))
        .arg("--out")
        .arg(&tuned));
    assert!(o.status.success());
    let mut cmd = Command::new(&edge_bin);
    cmd.args(["classify", "--json", "--bundle"]).arg(&tuned);
    let test_rows = demo_rows("test");
    for (p, _) in &test_rows {
        cmd.arg(p);
    }
    let o = run(&mut cmd);
    assert!(o.status.success());
    let lines = stdout_lines(&o);
    let accepted: Vec<bool> = lines.iter().map(|l| l["label"] != "reject").collect();
    let right = lines
        .iter()
        .zip(&test_rows)
        .filter(|(l, (_, truth))| l["label"] == truth.as_str())
        .count();
    let rule = &report["confidence"]["per_class_rule"];
    let n_accepted = accepted.iter().filter(|a| **a).count();
    assert!(
        n_accepted > 0 && n_accepted < 15,
        "the thresholds reject some: {n_accepted} of 15 accepted"
    );
    assert_eq!(
        accepted.iter().filter(|a| **a).count() as u64,
        rule["accepted"].as_u64().unwrap()
    );
    assert_eq!(right as u64, rule["correct"].as_u64().unwrap());
    // image by image
    for (l, rec) in lines.iter().zip(report["images"].as_array().unwrap()) {
        assert_eq!(l["path"].as_str(), rec["path"].as_str());
        assert_eq!(
            l["label"] != "reject",
            rec["accepted"].as_bool().unwrap(),
            "{l}"
        );
    }

    // A bundle that does not load stops validate with exit 2, naming the file.
    let broken = t.join("broken.lsb");
    let bytes = std::fs::read(&bundle).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(Command::new(&train_bin)
        .args(["validate", "--bundle"])
        .arg(&broken)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--out")
        .arg(t.join("never")));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken.lsb") && err.contains("truncated"),
        "{err}"
    );
}
