//! Labelling against hostile conditions (issue 16, class 9), through the real binaries and
//! the MLLM simulator over loopback HTTP:
//! - a run killed mid-labelling and resumed asks no image twice, whatever order and wording
//!   round 1's answers came in (round 1's context is a function of the logged answers);
//! - images that do not decode (a truncated JPEG, a 20000x20000 PNG) are never sent, and
//!   are skipped and counted;
//! - a refused connection is reported as one, naming the endpoint;
//! - an `--out` that is not an answer log is refused and left unchanged;
//! - every numeric flag of `label` and the simulator's noise settings are range-checked.

use crate::util::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The demo photos and their labels (`models/demo/manifest.csv`), as absolute paths.
fn demo_photos() -> Vec<(PathBuf, String)> {
    let demo = repo().join("models/demo");
    std::fs::read_to_string(demo.join("manifest.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (demo.join(f[0]), f[1].to_string())
        })
        .collect()
}

/// `linesight-train label` against `url`, quiet, JSON report.
fn label(url: &str, images: &Path, out: &Path) -> Command {
    let mut c = Command::new(bin("linesight-train"));
    c.args(["--json", "--log", "warn", "label", "--model", "sim-vision"])
        .args(["--endpoint", url, "--images"])
        .arg(images)
        .arg("--out")
        .arg(out)
        .env("LINESIGHT_NO_PROGRESS", "1");
    c
}

/// The records of an answer log.
fn log_records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn report(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("label --json prints its report")
}

/// Issue 16: the same cached round-1 answers gave one context in one run and another in
/// the next (the vote's ties went to the first answer to arrive), so a resumed run asked
/// about every image again under a new prompt hash. Here the simulator rewords its round-1
/// answers (`--context-variety 1`) and answers after a random latency (the order of arrival
/// changes from run to run); a `label` run is killed mid-naming with SIGKILL and resumed,
/// for simulator seeds until 8 of them gave two round-1 answers that disagree (a tie, the
/// case an order-dependent vote gets wrong half the time). The resumed run must vote the
/// same context from the log, ask nothing in round 1, and ask only the images without an
/// answer.
#[test]
fn a_killed_label_run_resumes_without_asking_any_image_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let photos: Vec<_> = demo_photos().into_iter().take(24).collect();
    for (i, (p, _)) in photos.iter().enumerate() {
        std::os::unix::fs::symlink(p, images.join(format!("{i:03}.jpg"))).unwrap();
    }
    let n = photos.len();
    let truth = repo().join("models/demo/manifest.csv");
    let concurrency = 4;
    let mut ties = 0;
    for seed in 0..60u32 {
        if ties == 8 {
            break;
        }
        let latency = (15 + 5 * seed).to_string();
        let sim = Simulator::start(
            &truth,
            &[
                "--seed",
                &seed.to_string(),
                "--latency-ms",
                &latency,
                "--context-variety",
                "1",
            ],
        );
        let log = tmp.path().join(format!("labels-{seed}.jsonl"));
        let args = ["--context-images", "2", "--concurrency", "4"];
        let mut child = label(&sim.url, &images, &log)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill once round 1 (2 answers) and a few naming answers are logged.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 2 + 6 {
            assert!(Instant::now() < deadline, "seed {seed}: no answers logged");
            assert!(
                child.try_wait().unwrap().is_none(),
                "seed {seed}: ended before the kill"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let first_context: Vec<serde_json::Value> = log_records(&log)
            .into_iter()
            .filter(|r| r["round"] == "category")
            .collect();
        assert_eq!(
            first_context.len(),
            2,
            "seed {seed}: round 1 answered before the kill"
        );
        let words = |r: &serde_json::Value| {
            let c = &r["context"];
            format!("{} / {}", c["category"], c["expert"]).to_lowercase()
        };
        if words(&first_context[0]) != words(&first_context[1]) {
            ties += 1;
        }

        let o = run(label(&sim.url, &images, &log).args(args));
        assert!(o.status.success(), "seed {seed}: the resumed run");
        let r = report(&o);
        let stats = sim.stop();
        assert_eq!(r["context_source"], "inferred");
        assert_eq!(
            (
                r["round1"]["asked"].as_u64(),
                r["round1"]["cache_hits"].as_u64()
            ),
            (Some(0), Some(2)),
            "seed {seed}: round 1 comes from the log: {}",
            r["round1"]
        );
        let records = log_records(&log);
        let mut per_image: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut prompts: BTreeMap<String, usize> = BTreeMap::new();
        for rec in &records {
            let round = rec["round"].as_str().unwrap().to_string();
            *per_image
                .entry((
                    round.clone(),
                    rec["image_sha256"].as_str().unwrap().to_string(),
                ))
                .or_default() += 1;
            if round == "name" {
                *prompts
                    .entry(rec["prompt_sha256"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        assert_eq!(
            prompts.len(),
            1,
            "seed {seed}: one naming prompt: {prompts:?}"
        );
        let twice: Vec<_> = per_image.iter().filter(|(_, &c)| c > 1).collect();
        assert!(
            twice.is_empty(),
            "seed {seed}: images answered twice: {twice:?}"
        );
        let named = per_image
            .keys()
            .filter(|(round, _)| round == "name")
            .count();
        assert_eq!(named, n, "seed {seed}: every image named once");
        // The simulator's own count: nothing asked twice except what was in flight at the kill.
        let served = stats["naming"].as_u64().unwrap() as usize;
        assert!(
            (n..=n + concurrency).contains(&served),
            "seed {seed}: {served} naming requests for {n} images"
        );
        assert_eq!(stats["category"].as_u64(), Some(2), "seed {seed}");
    }
    assert_eq!(ties, 8, "8 seeds whose two round-1 answers disagree");
}

/// Issue 16: a truncated JPEG and a 20000x20000 PNG went to the API. Both are in the
/// simulator's truth (it would answer them), and round 1 is asked about every image: neither
/// may reach the simulator; both are skipped, counted and named in the report, and the run
/// succeeds on the others.
#[test]
fn images_that_do_not_decode_are_never_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let photos = demo_photos();
    let mut csv = String::from("path,label,split\n");
    for (i, (p, label)) in photos.iter().take(6).enumerate() {
        let to = images.join(format!("{i}.jpg"));
        std::fs::copy(p, &to).unwrap();
        csv.push_str(&format!("{},{label},train\n", to.display()));
    }
    let bytes = std::fs::read(&photos[7].0).unwrap();
    let truncated = images.join("truncated.jpg");
    std::fs::write(&truncated, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let huge = images.join("huge.png");
    std::fs::write(&huge, black_png(20_000, 20_000)).unwrap();
    for (p, label) in [(&truncated, &photos[7].1), (&huge, &photos[8].1)] {
        csv.push_str(&format!("{},{label},train\n", p.display()));
    }
    let truth = tmp.path().join("truth.csv");
    std::fs::write(&truth, csv).unwrap();

    let sim = Simulator::start(&truth, &[]);
    let log = tmp.path().join("labels.jsonl");
    let o =
        run(label(&sim.url, &images, &log).args(["--context-images", "8", "--concurrency", "2"]));
    let stats = sim.stop();
    assert!(o.status.success(), "the decodable images are labelled");
    let r = report(&o);
    assert_eq!(r["undecodable"], 2, "{r}");
    let why: BTreeMap<String, String> = r["undecodable_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(why["truncated.jpg"].contains("truncated"), "{why:?}");
    assert!(
        why["huge.png"].contains("20000"),
        "the size is named: {why:?}"
    );
    assert_eq!(r["naming"]["answered"], 6);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["context_from"].as_array().unwrap().len(), 6);
    // Nothing about them reached the simulator, nor the log.
    assert_eq!(
        (stats["naming"].as_u64(), stats["category"].as_u64()),
        (Some(6), Some(6)),
        "{stats}"
    );
    assert_eq!(stats["requests"], 12);
    for rec in log_records(&log) {
        let path = rec["path"].as_str().unwrap();
        assert!(
            path.ends_with(".jpg") && path != "truncated.jpg",
            "{path} was sent"
        );
    }
}

/// Issue 16: with nothing listening, `label` ended with "round 1 got no usable category".
/// The message must say the connection was refused, name the endpoint and what to check.
#[test]
fn a_refused_connection_is_reported_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for (i, (p, _)) in demo_photos().iter().take(3).enumerate() {
        std::os::unix::fs::symlink(p, images.join(format!("{i}.jpg"))).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let o = run(label(&url, &images, &tmp.path().join("l.jsonl")).args([
        "--max-retries",
        "1",
        "--retry-base-ms",
        "10",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "names the endpoint: {err}"
    );
    assert!(
        err.contains("check that the MLLM server is running"),
        "{err}"
    );
    assert!(
        !err.contains("round 1"),
        "not a message about round 1: {err}"
    );
    // A malformed endpoint is refused once, at the start, not retried per image.
    for (url, why) in [
        ("http://127.0.0.1:99999/v1", "invalid port number"),
        ("http://[::1/v1", "invalid IPv6 address"),
    ] {
        let o = run(&mut label(url, &images, &tmp.path().join("l.jsonl")));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            err.contains("is not a valid URL") && err.contains(why),
            "{err}"
        );
    }
}

/// Found on the second pass: `--out` naming a file that is not an answer log (an image,
/// the manifest) had its "torn last line" cut off and answers appended to it. It is refused
/// and left byte for byte as it was.
#[test]
fn an_out_file_that_is_not_an_answer_log_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let photo = &demo_photos()[0].0;
    std::fs::copy(photo, images.join("0.jpg")).unwrap();
    let manifest = tmp.path().join("manifest.csv");
    std::fs::write(&manifest, "path,label,split\nimages/0.jpg,A,train").unwrap();
    for out in [images.join("0.jpg"), manifest] {
        let before = std::fs::read(&out).unwrap();
        let o = run(&mut label("http://127.0.0.1:9/v1", &images, &out));
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("is not an answer log"),
            "{}",
            out.display()
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            before,
            "{} unchanged",
            out.display()
        );
    }
}

/// Issue 16: `--temperature -1` and NaN were accepted. Every numeric flag of `label` and
/// the simulator's noise and fault settings are refused out of range at parse time, named.
#[test]
fn out_of_range_label_and_simulator_numbers_are_refused() {
    let label_base = [
        "label",
        "--images",
        "nowhere",
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--out",
        "l.jsonl",
    ];
    for (flag, bad) in [
        ("--temperature", "-1"),
        ("--temperature", "NaN"),
        ("--temperature", "inf"),
        ("--temperature", "2.5"),
        ("--concurrency", "0"),
        ("--concurrency", "100000"),
        ("--context-images", "0"),
        ("--dry-run", "0"),
        ("--timeout", "nan"),
        ("--timeout", "0"),
        ("--timeout", "-3"),
        ("--max-tokens", "0"),
        ("--samples", "0"),
        ("--samples", "1000"),
        ("--baseline-images", "0"),
        ("--price-in", "-1"),
        ("--price-out", "nan"),
    ] {
        assert_train_flag_refused(&label_base, flag, bad);
    }
    let sim_base = ["simulate-mllm", "--truth", "nowhere.csv"];
    for (flag, bad) in [
        ("--accuracy", "1.5"),
        ("--accuracy", "nan"),
        ("--sibling-share", "-0.1"),
        ("--coarse-share", "inf"),
        ("--outside-share", "NaN"),
        ("--systematic", "2"),
        ("--spread", "-1"),
        ("--fault-rate", "nan"),
        ("--context-variety", "1.1"),
    ] {
        assert_train_flag_refused(&sim_base, flag, bad);
    }
    // Shares that are each valid but all 0 leave no way to answer wrong.
    let o = run(Command::new(bin("linesight-train")).args([
        "simulate-mllm",
        "--truth",
        "nowhere.csv",
        "--sibling-share",
        "0",
        "--coarse-share",
        "0",
        "--outside-share",
        "0",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("are all 0"));
}
