//! MLLM labelling over real HTTP on loopback, against the in-process simulator: cache and
//! resume, prompt changes, drift, every injected fault, fatal errors, accounting, and a
//! `label` process killed with SIGKILL mid-run and resumed.
//!
//! Images are small generated PNGs with a generated truth manifest: no external data.

use linesight_trainer::commands::label::{
    self, Baseline, DiffSettings, LabelReport, LabelSettings,
};
use linesight_trainer::mllm::accounting::Prices;
use linesight_trainer::mllm::answer::Status;
use linesight_trainer::mllm::cache::{self, Record, Round};
use linesight_trainer::mllm::client::ApiKey;
use linesight_trainer::mllm::drift::Side;
use linesight_trainer::mllm::prompt::Context1;
use linesight_trainer::mllm::score::ScoreSettings;
use linesight_trainer::mllm::simulator::noise::Mix;
use linesight_trainer::mllm::simulator::{Fault, RunningSimulator, SimulatorConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CLASSES: [&str; 6] = [
    "Eared Grebe",
    "Horned Grebe",
    "Western Grebe",
    "Cedar Waxwing",
    "Bohemian Waxwing",
    "Belted Kingfisher",
];

/// Generated images and their truth manifest in a temp folder.
pub(crate) struct Fixture {
    dir: tempfile::TempDir,
    pub(crate) images: PathBuf,
    pub(crate) truth: PathBuf,
}

impl Fixture {
    /// `n` distinct 12x12 PNGs, classes assigned round-robin.
    pub(crate) fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let mut csv = String::from("path,label,split\n");
        for i in 0..n {
            let img = image::RgbImage::from_fn(12, 12, |x, y| {
                let v = (i as u32).wrapping_mul(2_654_435_761) ^ (x * 31 + y * 17);
                image::Rgb([(v & 0xFF) as u8, ((v >> 8) & 0xFF) as u8, (i % 256) as u8])
            });
            let name = format!("img_{i:03}.png");
            img.save(images.join(&name)).unwrap();
            csv.push_str(&format!(
                "images/{name},{},{}\n",
                CLASSES[i % CLASSES.len()],
                if i % 2 == 0 { "train" } else { "test" }
            ));
        }
        let truth = dir.path().join("manifest.csv");
        std::fs::write(&truth, csv).unwrap();
        Fixture { dir, images, truth }
    }

    pub(crate) fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn sim(&self, edit: impl FnOnce(&mut SimulatorConfig)) -> RunningSimulator {
        let mut c = SimulatorConfig::new(self.truth.clone());
        edit(&mut c);
        RunningSimulator::start(c, "127.0.0.1:0").unwrap()
    }

    pub(crate) fn settings(&self, sim: &RunningSimulator, out: &str) -> LabelSettings {
        let mut s = LabelSettings::new(
            self.images.clone(),
            sim.base_url(),
            "sim-vision".into(),
            self.out(out),
        );
        s.concurrency = 4;
        s.context_images = 3;
        s.retry_base = Duration::from_millis(20);
        s.max_retries = 12;
        s.timeout = Duration::from_secs(5);
        s
    }
}

pub(crate) fn given_context() -> Option<Context1> {
    Some(Context1 {
        category: "bird".into(),
        expert: "ornithologist".into(),
        granularity: "species".into(),
    })
}

pub(crate) fn naming_lines(log: &Path) -> Vec<Record> {
    cache::read(log)
        .unwrap()
        .0
        .into_iter()
        .filter(|r| r.round == Round::Name)
        .collect()
}

/// Every image has exactly one naming line.
pub(crate) fn assert_each_image_once(log: &Path, n: usize) {
    let mut per_image: BTreeMap<String, usize> = BTreeMap::new();
    for r in naming_lines(log) {
        *per_image.entry(r.image_sha256).or_default() += 1;
    }
    assert_eq!(per_image.len(), n, "images answered");
    assert!(
        per_image.values().all(|&c| c == 1),
        "an image answered twice: {per_image:?}"
    );
}

fn run(s: &LabelSettings) -> LabelReport {
    label::run(s).unwrap()
}

#[test]
fn labels_each_image_once_and_a_rerun_makes_no_call() {
    let fx = Fixture::new(12);
    let sim = fx.sim(|_| {});
    let s = fx.settings(&sim, "labels.jsonl");
    let first = run(&s);
    assert_eq!(first.context_source, "inferred");
    assert_eq!(first.context.category, "bird");
    assert_eq!(
        (
            first.round1.asked,
            first.naming.asked,
            first.naming.answered
        ),
        (3, 12, 12)
    );
    assert_eq!(first.calls, 15);
    assert_each_image_once(&s.out, 12);
    let lines = cache::read(&s.out).unwrap().0;
    assert_eq!(
        lines.iter().filter(|r| r.round == Round::Category).count(),
        3,
        "round 1 is logged too"
    );
    for r in &lines {
        assert_eq!(r.endpoint, sim.base_url());
        assert_eq!(r.prompt_sha256.len(), 64);
        assert!(r.usage.is_some() && r.latency_ms > 0.0 && !r.time.is_empty());
    }
    let served = sim.stats().requests;

    let second = run(&s);
    assert_eq!(second.calls, 0, "cache hits make zero calls");
    assert_eq!(second.cache_hits, 15);
    assert_eq!(sim.stats().requests, served, "the simulator saw no request");
    assert_eq!(second.answers.values().sum::<usize>(), 12);
    assert_each_image_once(&s.out, 12);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&second.accounting_file).unwrap()).unwrap();
    assert_eq!(report["cache_hits"], 15);
}

#[test]
fn a_changed_prompt_labels_again_and_diff_reports_the_drift() {
    let fx = Fixture::new(12);
    let sim = fx.sim(|c| c.accuracy = 0.5);
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.context = given_context();
    let v1 = run(&s);
    assert_eq!(v1.naming.asked, 12);

    let prompt = fx.out("naming-v2.txt");
    std::fs::write(
        &prompt,
        "You are an expert {expert}. Name the {granularity} of this {category}. Answer as JSON: {\"name\": \"...\"}",
    )
    .unwrap();
    s.prompt = Some(prompt);
    let v2 = run(&s);
    assert_eq!(
        (v2.naming.asked, v2.naming.cache_hits),
        (12, 0),
        "a new prompt asks again"
    );
    assert_ne!(
        v1.prompt.naming_prompt_sha256,
        v2.prompt.naming_prompt_sha256
    );
    assert_eq!(naming_lines(&s.out).len(), 24);

    let side = |p: &str| Side {
        log: s.out.clone(),
        model: None,
        prompt: Some(p[..12].to_string()),
    };
    let d = label::diff(&DiffSettings {
        a: side(&v1.prompt.naming_prompt_sha256),
        b: side(&v2.prompt.naming_prompt_sha256),
    })
    .unwrap();
    assert_eq!(d.images_compared, 12);
    assert_eq!(d.changed + d.unchanged, 12);
    assert!(d.changed > 0, "two draws at accuracy 0.5 differ somewhere");
    let per_name_a: usize = d.per_name.iter().map(|n| n.in_a).sum();
    assert_eq!(per_name_a, 12);
}

#[test]
fn diff_counts_every_changed_name() {
    let fx = Fixture::new(12);
    let right = fx.sim(|c| c.accuracy = 1.0);
    let mut s = fx.settings(&right, "right.jsonl");
    s.context = given_context();
    run(&s);
    let wrong = fx.sim(|c| {
        c.accuracy = 0.0;
        c.mix = Mix {
            sibling: 1.0,
            coarse: 0.0,
            outside: 0.0,
        };
    });
    let mut w = fx.settings(&wrong, "wrong.jsonl");
    w.context = given_context();
    run(&w);
    let side = |log: &PathBuf| Side {
        log: log.clone(),
        model: None,
        prompt: None,
    };
    let d = label::diff(&DiffSettings {
        a: side(&s.out),
        b: side(&w.out),
    })
    .unwrap();
    assert_eq!((d.images_compared, d.changed), (12, 12));
    let grebe = d
        .per_name
        .iter()
        .find(|n| n.name == "eared grebe")
        .expect("eared grebe in A");
    assert_eq!((grebe.in_a, grebe.kept), (2, 0));
    assert!(
        grebe.became.iter().all(|(to, _)| to.contains("grebe")),
        "siblings of a grebe are grebes: {grebe:?}"
    );
}

#[test]
fn every_surface_form_parses_to_the_right_name() {
    let fx = Fixture::new(60);
    let sim = fx.sim(|c| c.accuracy = 1.0);
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.concurrency = 8;
    let r = run(&s);
    assert_eq!(r.answers.get(&Status::Malformed), None);
    let score = label::score(&ScoreSettings {
        log: s.out.clone(),
        truth: fx.truth.clone(),
        split: None,
        model: None,
        prompt: None,
    })
    .unwrap();
    assert_eq!((score.answers, score.correct), (60, 60), "{score:?}");
    let statuses: BTreeMap<Status, usize> = r.answers.clone();
    assert!(
        statuses.contains_key(&Status::Json) && statuses.contains_key(&Status::Text),
        "{statuses:?}"
    );
}

#[test]
fn answers_are_seeded_and_stochastic() {
    let fx = Fixture::new(24);
    let names = |seed: u64, out: &str| {
        let sim = fx.sim(|c| {
            c.accuracy = 0.4;
            c.seed = seed;
        });
        let mut s = fx.settings(&sim, out);
        s.context = given_context();
        s.concurrency = 6;
        run(&s);
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        for r in naming_lines(&s.out) {
            m.insert(r.image_sha256, r.raw);
        }
        m
    };
    let a = names(1, "a.jsonl");
    assert_eq!(
        a,
        names(1, "b.jsonl"),
        "same seed, same answers, whatever the arrival order"
    );
    assert_ne!(a, names(2, "c.jsonl"), "another seed, other answers");
}

/// Labels 8 images with one kind of fault injected into a share of requests.
fn with_fault(
    fault: Fault,
    rate: f64,
    edit: impl FnOnce(&mut SimulatorConfig),
    client: impl FnOnce(&mut LabelSettings),
) -> (LabelReport, RunningSimulator, Fixture) {
    let fx = Fixture::new(8);
    let sim = fx.sim(|c| {
        c.fault_rate = rate;
        c.faults = vec![fault];
        edit(c);
    });
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.context = given_context();
    s.concurrency = 8;
    client(&mut s);
    let r = run(&s);
    assert_eq!(r.failed, 0, "{:?}", r.failures);
    assert_each_image_once(&s.out, 8);
    (r, sim, fx)
}

#[test]
fn rate_limits_are_retried_after_retry_after() {
    let started = Instant::now();
    let (r, sim, _fx) = with_fault(Fault::RateLimit, 0.3, |c| c.retry_after_s = 1, |_| {});
    let stats = sim.stats();
    assert!(stats.fault_429 > 0, "the seeded draw injects some 429s");
    assert_eq!(
        r.retry_kinds.get("429").copied(),
        Some(stats.fault_429),
        "every 429 retried"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(r.calls, 8 + stats.fault_429);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let (r, sim, _fx) = with_fault(Fault::ServerError, 0.4, |_| {}, |_| {});
    assert!(sim.stats().fault_500 > 0);
    assert_eq!(
        r.retry_kinds.get("500").copied(),
        Some(sim.stats().fault_500)
    );
}

#[test]
fn slow_replies_time_out_and_are_retried() {
    let (r, sim, _fx) = with_fault(
        Fault::Slow,
        0.3,
        |c| c.slow = Duration::from_millis(1500),
        |s| s.timeout = Duration::from_millis(400),
    );
    assert!(sim.stats().fault_slow > 0);
    assert!(
        r.retry_kinds.get("timeout").copied().unwrap_or(0) > 0,
        "{:?}",
        r.retry_kinds
    );
}

#[test]
fn malformed_answers_are_recorded_and_counted() {
    let (r, sim, fx) = with_fault(Fault::Malformed, 0.5, |_| {}, |_| {});
    let injected = sim.stats().fault_malformed as usize;
    assert!(injected > 0);
    let bad = r.answers.get(&Status::Malformed).copied().unwrap_or(0)
        + r.answers.get(&Status::Refused).copied().unwrap_or(0);
    assert_eq!(
        bad, injected,
        "each malformed reply is one recorded answer: {:?}",
        r.answers
    );
    for rec in naming_lines(&fx.out("labels.jsonl"))
        .iter()
        .filter(|x| !x.status.is_usable())
    {
        assert!(rec.problem.is_some() && rec.name.is_none(), "{rec:?}");
    }
    // --retry-malformed asks those again (and only those).
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.context = given_context();
    s.retry_malformed = true;
    let again = run(&s);
    assert_eq!(again.naming.asked, injected);
}

#[test]
fn garbled_bodies_are_retried() {
    let (r, sim, _fx) = with_fault(Fault::Garbled, 0.4, |_| {}, |_| {});
    assert!(sim.stats().fault_garbled > 0);
    assert_eq!(
        r.retry_kinds.get("body").copied(),
        Some(sim.stats().fault_garbled)
    );
}

fn label_err(fx: &Fixture, s: &LabelSettings) -> String {
    let e = label::run(s).expect_err("the run must stop");
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&s.endpoints[0]) || msg.contains("in a row"),
        "{msg}"
    );
    let _ = fx;
    msg
}

#[test]
fn wrong_api_key_is_fatal_and_the_key_never_reaches_the_log() {
    let fx = Fixture::new(4);
    let sim = fx.sim(|c| c.api_key = Some(ApiKey::new("sk-right-key-123".into())));
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.api_key = Some(ApiKey::new("sk-wrong-key-456".into()));
    s.api_key_env = Some("LINESIGHT_TEST_KEY".into());
    let msg = label_err(&fx, &s);
    assert!(
        msg.contains("401") && msg.contains("LINESIGHT_TEST_KEY"),
        "{msg}"
    );
    assert!(!msg.contains("sk-"), "{msg}");
    assert_eq!(sim.stats().requests, sim.stats().unauthorized);

    s.api_key = Some(ApiKey::new("sk-right-key-123".into()));
    let r = run(&s);
    assert_eq!(r.naming.answered, 4);
    let log = std::fs::read_to_string(&s.out).unwrap();
    let acct = std::fs::read_to_string(&r.accounting_file).unwrap();
    assert!(
        !log.contains("sk-right")
            && !acct.contains("sk-right")
            && !format!("{s:?}").contains("sk-right")
    );
}

#[test]
fn unknown_model_is_fatal() {
    let fx = Fixture::new(3);
    let sim = fx.sim(|c| c.model = Some("vision-1".into()));
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.model = "no-such-model".into();
    let msg = label_err(&fx, &s);
    assert!(
        msg.contains("404") && msg.contains("no-such-model"),
        "{msg}"
    );
}

#[test]
fn a_text_only_model_is_fatal() {
    let fx = Fixture::new(3);
    let sim = fx.sim(|c| c.text_only = true);
    let s = fx.settings(&sim, "labels.jsonl");
    let msg = label_err(&fx, &s);
    assert!(msg.contains("does not accept images"), "{msg}");
}

#[test]
fn an_unreachable_endpoint_stops_the_run() {
    let fx = Fixture::new(14);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = LabelSettings::new(
        fx.images.clone(),
        format!("http://127.0.0.1:{port}/v1"),
        "m".into(),
        fx.out("l.jsonl"),
    );
    s.max_retries = 1;
    s.retry_base = Duration::from_millis(10);
    s.concurrency = 1;
    s.context = given_context();
    let e = label::run(&s).expect_err("nothing listens there");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("cannot connect to `http://127.0.0.1:")
            && msg.to_lowercase().contains("connection refused")
            && msg.contains("check that the MLLM server is running"),
        "{msg}"
    );
    assert!(naming_lines(&s.out).is_empty());
    // Round 1 (no --category) reports the same, not "no usable category".
    s.context = None;
    let msg = format!("{:#}", label::run(&s).expect_err("nothing listens there"));
    assert!(
        msg.to_lowercase().contains("connection refused") && !msg.contains("round 1"),
        "{msg}"
    );
}

/// Issue 16: round 1's context must be a function of the logged answers, not of the order
/// they arrived in or of which image gave which. Two logs hold the same two tied round-1
/// answers, assigned to the two round-1 images one way and the other: both runs must vote
/// the same context (so the same naming prompt), and ask nothing in round 1.
#[test]
fn round_1_votes_the_same_context_from_the_same_answers_in_any_order() {
    let fx = Fixture::new(8);
    let sim = fx.sim(|_| {});
    let mut s = fx.settings(&sim, "first.jsonl");
    s.context_images = 2;
    s.dry_run = Some(1);
    run(&s);
    let (records, _) = cache::read(&s.out).unwrap();
    let round1: Vec<&Record> = records
        .iter()
        .filter(|r| r.round == Round::Category)
        .collect();
    assert_eq!(round1.len(), 2);
    let tied = [
        Context1 {
            category: "bird".into(),
            expert: "ornithologist".into(),
            granularity: "species".into(),
        },
        Context1 {
            category: "songbird".into(),
            expert: "bird expert".into(),
            granularity: "species".into(),
        },
    ];
    let mut prompts = Vec::new();
    for (name, swap) in [("a.jsonl", false), ("b.jsonl", true)] {
        let text: String = round1
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = (*r).clone();
                r.context = Some(tied[i ^ usize::from(swap)].clone());
                serde_json::to_string(&r).unwrap() + "\n"
            })
            .collect();
        std::fs::write(fx.out(name), text).unwrap();
        let mut s = fx.settings(&sim, name);
        s.context_images = 2;
        s.dry_run = Some(1);
        let r = run(&s);
        assert_eq!((r.round1.asked, r.round1.cache_hits), (0, 2), "{name}");
        prompts.push((r.context, r.prompt.naming_prompt_sha256));
    }
    assert_eq!(prompts[0], prompts[1], "the same answers, the same context");
}

/// Issue 16: images were sent without being decoded first. A truncated JPEG is never
/// sent: skipped, counted and named in the report; the run succeeds on the others.
#[test]
fn an_image_that_does_not_decode_is_skipped_and_counted() {
    let fx = Fixture::new(4);
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(32, 32, image::Rgb([200, 10, 10]))
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpeg = jpeg.into_inner();
    std::fs::write(fx.images.join("cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    let sim = fx.sim(|_| {});
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.context_images = 5;
    let r = run(&s);
    assert_eq!((r.undecodable, r.failed, r.naming.answered), (1, 0, 4));
    assert_eq!(r.undecodable_images[0].path, "cut.jpg");
    assert!(r.undecodable_images[0].reason.contains("truncated"));
    assert_eq!((r.round1.undecodable, r.naming.undecodable), (1, 1));
    assert_eq!(r.context_from.len(), 4, "round 1 passed over it");
    assert_eq!(sim.stats().unknown_image, 0, "never sent");
}

#[test]
fn an_image_unknown_to_the_endpoint_fails_alone() {
    let fx = Fixture::new(5);
    image::RgbImage::from_pixel(9, 9, image::Rgb([1, 2, 3]))
        .save(fx.images.join("stranger.png"))
        .unwrap();
    let sim = fx.sim(|_| {});
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.context = given_context();
    let r = run(&s);
    assert_eq!((r.naming.answered, r.failed), (5, 1));
    assert_eq!(r.failures[0].path, "stranger.png");
    assert!(
        r.failures[0].reason.contains("not in the truth manifest"),
        "{:?}",
        r.failures
    );
}

#[test]
fn dry_run_projects_the_full_run_and_the_direct_baseline() {
    let fx = Fixture::new(10);
    let sim = fx.sim(|_| {});
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.dry_run = Some(4);
    s.prices = Some(Prices {
        input_per_mtok: 2.5,
        output_per_mtok: 10.0,
    });
    s.baseline = Some(Baseline::Manifest {
        path: fx.truth.clone(),
        split: "test".into(),
    });
    let r = run(&s);
    assert_eq!((r.images_in_scope, r.naming.answered), (4, 4));
    let full = r.full_run.as_ref().expect("dry run projects");
    assert_eq!((full.images, full.calls), (10, 10));
    let b = r.baseline.as_ref().expect("baseline");
    assert_eq!(b.direct_mllm.calls, 5, "test rows of the manifest");
    assert_eq!(b.linesight_inference_calls_per_image, 0);
    assert_eq!(b.linesight_labelling_calls, 3 + 4);
    assert!(r.spend.money.unwrap() > 0.0 && r.spend.tokens_in > 258 * 7);
    assert!(b.direct_mllm.money.unwrap() > 0.0);
    assert!(r.latency_ms.p95 >= r.latency_ms.p50 && r.latency_ms.n == 7);
}

#[test]
fn a_torn_last_line_is_cut_reported_and_asked_again() {
    let fx = Fixture::new(6);
    let sim = fx.sim(|_| {});
    let mut s = fx.settings(&sim, "labels.jsonl");
    s.context = given_context();
    run(&s);
    let bytes = std::fs::read(&s.out).unwrap();
    std::fs::write(&s.out, &bytes[..bytes.len() - 40]).unwrap();
    let r = run(&s);
    assert!(
        r.log_repair.torn_last_line && r.log_repair.torn_bytes_dropped > 0,
        "{:?}",
        r.log_repair
    );
    assert_eq!((r.naming.cache_hits, r.naming.asked), (5, 1));
    assert_each_image_once(&s.out, 6);
    assert_eq!(
        cache::read(&s.out).unwrap().1,
        cache::Repair::default(),
        "the log is whole again"
    );
}

#[test]
fn a_killed_label_process_resumes_without_loss_or_duplicates() {
    let fx = Fixture::new(40);
    let sim = fx.sim(|c| c.latency = Duration::from_millis(60));
    let out = fx.out("labels.jsonl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_linesight-train"))
        .args(["label", "--images"])
        .arg(&fx.images)
        .args([
            "--endpoint",
            &sim.base_url(),
            "--model",
            "sim-vision",
            "--concurrency",
            "2",
        ])
        .args([
            "--category",
            "bird",
            "--expert",
            "ornithologist",
            "--granularity",
            "species",
            "--out",
        ])
        .arg(&out)
        .env("LINESIGHT_NO_PROGRESS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines = std::fs::read(&out)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        if lines >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "the child wrote no answers");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = naming_lines(&out).len();
    assert!(
        (8..40).contains(&before),
        "killed mid-run: {before} answers"
    );

    let mut s = fx.settings(&sim, "labels.jsonl");
    s.context = given_context();
    s.concurrency = 8;
    let r = run(&s);
    assert_eq!(
        r.naming.cache_hits, before,
        "every finished answer survived the kill"
    );
    assert_eq!(r.naming.asked, 40 - before);
    assert_each_image_once(&out, 40);
}

/// Names per image in a log, by sample.
fn names_by_image(log: &Path) -> BTreeMap<String, BTreeMap<u32, String>> {
    let mut m: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
    for r in naming_lines(log) {
        if let Some(n) = r.name {
            m.entry(r.image_sha256).or_default().insert(r.sample, n);
        }
    }
    m
}

#[test]
fn sampled_answers_are_cached_per_sample_and_vary_only_with_temperature() {
    let fx = Fixture::new(24);
    let sim = fx.sim(|c| c.accuracy = 0.5);
    let mut s = fx.settings(&sim, "greedy.jsonl");
    s.context = given_context();
    s.samples = 3;
    let refused = label::run(&s).unwrap_err().to_string();
    assert!(refused.contains("--temperature"), "{refused}");

    // Temperature 1: three answers per image, sample 0 the greedy answer.
    s.params.temperature = 1.0;
    s.out = fx.out("sampled.jsonl");
    let r = run(&s);
    assert_eq!((r.samples, r.naming.asked, r.naming.answered), (3, 72, 72));
    let by = names_by_image(&s.out);
    assert_eq!(by.len(), 24);
    assert!(by.values().all(|m| m.len() == 3));
    let varied = by
        .values()
        .filter(|m| m.values().collect::<std::collections::BTreeSet<_>>().len() > 1)
        .count();
    assert!(varied > 0, "samples at temperature 1 differ on some image");

    // Raising N asks only for the missing samples; the old ones are cache hits.
    s.samples = 5;
    let r5 = run(&s);
    assert_eq!((r5.naming.cache_hits, r5.naming.asked), (72, 48));
    let by5 = names_by_image(&s.out);
    for (img, m) in &by {
        for (k, name) in m {
            assert_eq!(&by5[img][k], name, "sample {k} of {img} kept");
        }
    }

    // A fresh simulator with the same seed gives the same samples (the request's seed).
    let again = fx.sim(|c| c.accuracy = 0.5);
    let mut s2 = fx.settings(&again, "again.jsonl");
    s2.context = given_context();
    s2.samples = 5;
    s2.params.temperature = 1.0;
    run(&s2);
    assert_eq!(names_by_image(&s2.out), by5);
}

#[test]
fn a_vocabulary_hint_is_offered_and_answered_from() {
    let fx = Fixture::new(36);
    // Every wrong answer coarse or outside: without a list no answer is a listed name
    // except the correct ones.
    let mix = Mix {
        sibling: 0.0,
        coarse: 0.5,
        outside: 0.5,
    };
    let sim = fx.sim(|c| {
        c.accuracy = 0.4;
        c.mix = mix;
    });
    let listed: Vec<&str> = CLASSES[..5].to_vec(); // Belted Kingfisher left out
    let vocab = fx.out("species.txt");
    std::fs::write(
        &vocab,
        format!("# expected species\n{}\n\n", listed.join("\n")),
    )
    .unwrap();
    let mut s = fx.settings(&sim, "free.jsonl");
    s.context = given_context();
    let free = run(&s);
    s.vocabulary = Some(vocab.clone());
    s.out = fx.out("hinted.jsonl");
    let hinted = run(&s);
    assert_ne!(
        free.prompt.naming_prompt_sha256,
        hinted.prompt.naming_prompt_sha256
    );
    assert_eq!(hinted.prompt.vocabulary.as_ref().map(|v| v.1), Some(5));
    let canon = linesight_trainer::vocab::normalize;
    let is_listed = |n: &str| listed.iter().any(|l| canon(l) == canon(n));
    let names =
        |p: &Path| -> Vec<String> { naming_lines(p).into_iter().filter_map(|r| r.name).collect() };
    let free_names = names(&fx.out("free.jsonl"));
    let hinted_names = names(&s.out);
    let listed_free = free_names.iter().filter(|n| is_listed(n)).count();
    let listed_hinted = hinted_names.iter().filter(|n| is_listed(n)).count();
    // With the list every answer is a listed name or `other: ...`.
    for n in &hinted_names {
        assert!(
            is_listed(n) || n.to_lowercase().contains("other"),
            "hinted answer `{n}` is neither listed nor other"
        );
    }
    assert!(
        listed_hinted > listed_free,
        "the list turns vague answers into listed ones ({listed_hinted} vs {listed_free})"
    );
    // The kingfisher is not on the list: its images are answered as other or a guess.
    assert!(hinted_names
        .iter()
        .any(|n| n.to_lowercase().contains("other")));
}

#[test]
fn direct_scoring_equals_labelling_the_split_through_http() {
    let fx = Fixture::new(40);
    let config = |c: &mut SimulatorConfig| {
        c.accuracy = 0.5;
        c.systematic = 0.5;
        c.seed = 9;
    };
    let sim = fx.sim(config);
    let mut s = fx.settings(&sim, "direct.jsonl");
    s.context = given_context();
    run(&s);
    let score = label::score(&ScoreSettings {
        log: s.out.clone(),
        truth: fx.truth.clone(),
        split: None,
        model: None,
        prompt: None,
    })
    .unwrap();
    let mut c = SimulatorConfig::new(fx.truth.clone());
    config(&mut c);
    // Labelling the whole set through HTTP and scoring the log = scoring the draws.
    let sim2 = linesight_trainer::mllm::simulator::Simulator::load(c).unwrap();
    let train = sim2.direct("train").unwrap();
    assert!(train.simulator);
    assert_eq!(train.n, 20);
    assert_eq!(train.answers.values().sum::<usize>(), train.n);
    assert!(sim2.direct("nope").is_err());
    // Over the whole set the label log's exact accuracy equals the direct draws'.
    let direct_all = {
        let mut csv = String::from("path,label,split\n");
        for l in std::fs::read_to_string(&fx.truth).unwrap().lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            csv.push_str(&format!("{},{},all\n", f[0], f[1]));
        }
        let t = fx.out("all.csv");
        std::fs::write(&t, csv).unwrap();
        let mut c = SimulatorConfig::new(t);
        config(&mut c);
        linesight_trainer::mllm::simulator::Simulator::load(c)
            .unwrap()
            .direct("all")
            .unwrap()
    };
    assert_eq!(direct_all.n, 40);
    assert!(
        (direct_all.top1_exact - score.accuracy).abs() < 1e-9,
        "direct {} vs label score {}",
        direct_all.top1_exact,
        score.accuracy
    );
    assert!((direct_all.cacc - score.cacc).abs() < 1e-9);
}
