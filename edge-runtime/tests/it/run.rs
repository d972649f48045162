//! `linesight-edge run` (issue 6): the loop against misbehaving sources, stations and
//! smoothing, the uncertain store, the health endpoint, and the real binary (SIGTERM,
//! sd_notify, startup errors, settings precedence).

use crate::tiny;
use linesight_edge::engine::Engine;
use linesight_edge::http;
use linesight_edge::metrics::{Metrics, SourceState};
use linesight_edge::notify::Notifier;
use linesight_edge::run_loop::{self, DecisionOptions, EndReason, LoopOptions, Pipeline};
use linesight_edge::sink::jsonl::{JsonlSink, SinkSpec};
use linesight_edge::source::dir::DirSource;
use linesight_edge::source::fault::{FaultPlan, FaultSource};
use linesight_edge::source::synthetic::SyntheticSource;
use linesight_edge::source::{FrameSource, SourceOptions};
use linesight_edge::station::Rect;
use linesight_edge::store::{self, StoreLimits, UncertainStore};
use linesight_shared::bundle::Bundle;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn loop_opts(max_frames: Option<u64>, stall_ms: u64) -> LoopOptions {
    LoopOptions {
        max_frames,
        stall_timeout: Duration::from_millis(stall_ms),
        reopen_backoff: Duration::from_millis(1),
        reopen_backoff_max: Duration::from_millis(4),
    }
}

struct Setup<'a> {
    bundle: &'a Bundle,
    sink: SinkSpec,
    store: Option<UncertainStore>,
    stations: Vec<(String, Option<Rect>)>,
    smoothing: usize,
    metrics: Arc<Metrics>,
}

impl<'a> Setup<'a> {
    fn new(bundle: &'a Bundle, sink: SinkSpec) -> Self {
        Setup {
            bundle,
            sink,
            store: None,
            stations: vec![("frame".into(), None)],
            smoothing: 1,
            metrics: Arc::new(Metrics::new(Duration::from_secs(5))),
        }
    }

    fn build(self) -> Pipeline {
        let engine = Engine::from_bundle(self.bundle).unwrap();
        Pipeline::new(
            engine,
            &self.bundle.manifest,
            &self.stations,
            DecisionOptions {
                top_k: 2,
                smoothing_frames: self.smoothing,
                uncertain_band: 0.1,
            },
            JsonlSink::open(&self.sink, 0, 0).unwrap(),
            self.store,
            self.metrics,
        )
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

#[test]
fn the_loop_survives_a_source_that_vanishes_stalls_sends_garbage_and_comes_back() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("decisions.jsonl");
    let b = tiny::bundle("1", 1.0);
    let mut p = Setup::new(&b, SinkSpec::File { path: out.clone() }).build();
    let m = p.metrics().clone();
    let script =
        "ok=20,wrong-size=3,undecodable=2,vanish=3,ok=20,stall,ok=10,vanish=1,undecodable=1,ok=5";
    let mut src = FaultSource::new(FaultPlan::parse(script).unwrap(), (64, 48));
    src.open().unwrap();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let end = run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(Some(70), 50),
        &stop,
        &mut Notifier::disabled(),
    );
    eprintln!("fault run took {:?}", t0.elapsed());
    assert_eq!(end, EndReason::MaxFrames);
    assert!(src.script_done());
    assert_eq!(src.device_index(), 2, "came back under a new index twice");
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    assert_eq!(c(&m.frames), 70);
    assert_eq!(
        c(&m.bad_frames),
        3 + 2 + 1,
        "wrong-size + undecodable frames"
    );
    assert_eq!(c(&m.source_errors), 2, "two vanishes");
    assert_eq!(c(&m.open_failures), 3 + 1, "failed opens while gone");
    assert_eq!(c(&m.stalls), 1);
    assert_eq!(c(&m.reconnects), 3, "two vanishes and one stall");
    assert_eq!(c(&m.decisions), 70);
    assert_eq!(m.source_state(), SourceState::Streaming);
    let l = lines(&out);
    assert_eq!(l.len(), 70);
    let frames: Vec<u64> = l.iter().map(|v| v["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, (0..70).collect::<Vec<_>>());
    for v in &l {
        assert_eq!(v["source"], "fault");
        assert_eq!(v["station"], "frame");
        assert_eq!(v["model"], "tiny");
        assert!(v["label"].as_str().unwrap().starts_with("class"), "{v}");
        assert_eq!(v["topk"].as_array().unwrap().len(), 2);
        assert!(v["latency_ms"].as_f64().unwrap() >= 0.0);
        assert!(v["time_unix_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }
    let text = m.render_prometheus();
    for needle in [
        "linesight_reconnects_total 3\n",
        "linesight_stalls_total 1\n",
        "linesight_bad_frames_total 6\n",
        "linesight_source_state{source=\"fault\",state=\"streaming\"} 1\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn a_stop_request_ends_a_source_that_never_comes_back() {
    let b = tiny::bundle("1", 1.0);
    let mut p = Setup::new(&b, SinkSpec::None).build();
    let m = p.metrics().clone();
    let mut src = FaultSource::new(
        FaultPlan::parse("ok=5,vanish=4000000000").unwrap(),
        (16, 16),
    );
    src.open().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        s2.store(true, Relaxed);
    });
    let end = run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(None, 50),
        &stop,
        &mut Notifier::disabled(),
    );
    stopper.join().unwrap();
    assert_eq!(end, EndReason::Stopped);
    assert_eq!(m.frames.load(Relaxed), 5);
    assert!(
        m.open_failures.load(Relaxed) >= 10,
        "kept retrying with capped backoff"
    );
    assert_eq!(m.source_state(), SourceState::Gone);
}

#[test]
fn healthz_says_503_while_the_source_is_gone_and_200_when_it_is_back() {
    let metrics = Arc::new(Metrics::new(Duration::from_millis(150)));
    let server = http::HttpServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
    let addr = server.addr();
    assert_eq!(
        http::get(addr, "/healthz").unwrap().0,
        503,
        "model not loaded yet"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (m2, s2) = (metrics.clone(), stop.clone());
    let runner = std::thread::spawn(move || {
        let b = tiny::bundle("1", 1.0);
        let mut setup = Setup::new(&b, SinkSpec::None);
        setup.metrics = m2;
        let mut p = setup.build();
        // ~2 s of frames, gone for 60 failed opens at a fixed 20 ms, then frames again.
        let mut src = FaultSource::new(FaultPlan::parse("ok=400,vanish=60").unwrap(), (32, 32));
        src.open().unwrap();
        let slow = SlowSource {
            inner: src,
            per_frame: Duration::from_millis(5),
        };
        let mut slow = slow;
        let mut opts = loop_opts(None, 150);
        opts.reopen_backoff = Duration::from_millis(20);
        opts.reopen_backoff_max = Duration::from_millis(20);
        run_loop::run(&mut p, &mut slow, &opts, &s2, &mut Notifier::disabled())
    });
    let wait_for = |code: u16, what: &str| {
        let t0 = Instant::now();
        loop {
            let (c, body) = http::get(addr, "/healthz").unwrap();
            if c == code {
                return body;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "never {code} ({what}); last {c} {body}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(wait_for(200, "frames flow"), "ok\n");
    let body = wait_for(503, "source gone");
    assert!(body.contains("no frame for"), "{body}");
    let (_, text) = http::get(addr, "/metrics").unwrap();
    assert!(text.contains("linesight_source_errors_total 1\n"), "{text}");
    wait_for(200, "source back");
    stop.store(true, Relaxed);
    assert_eq!(runner.join().unwrap(), EndReason::Stopped);
    let (_, text) = http::get(addr, "/metrics").unwrap();
    assert!(text.contains("linesight_reconnects_total 1\n"), "{text}");
    assert!(
        text.contains("linesight_open_failures_total 60\n"),
        "{text}"
    );
    assert!(
        text.contains("linesight_model_loaded{model_id=\"tiny\"} 1"),
        "{text}"
    );
}

/// Paces another source (so a test can watch it over HTTP).
struct SlowSource<S> {
    inner: S,
    per_frame: Duration,
}

impl<S: FrameSource> FrameSource for SlowSource<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn open(&mut self) -> Result<(), linesight_edge::source::SourceError> {
        self.inner.open()
    }
    fn next(
        &mut self,
        wait: Duration,
    ) -> Result<linesight_edge::source::Next<'_>, linesight_edge::source::SourceError> {
        std::thread::sleep(self.per_frame.min(wait));
        self.inner.next(wait)
    }
}

fn write_png(path: &Path, w: u32, h: u32, v: u8) {
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, (x * 10) as u8, (y * 10) as u8]));
    img.save(path).unwrap();
}

#[test]
fn a_folder_is_replayed_in_order_and_corrupt_files_are_skipped() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("frames");
    std::fs::create_dir_all(&dir).unwrap();
    write_png(&dir.join("a.png"), 12, 10, 10);
    std::fs::write(dir.join("b.png"), b"not a png").unwrap();
    write_png(&dir.join("c.png"), 10, 12, 100);
    write_png(&dir.join("d.png"), 9, 9, 200);
    let mut jpg = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(dir.join("e.jpg"), &jpg[..jpg.len() / 2]).unwrap(); // truncated
    let b = tiny::bundle("1", 1.0);
    let opts = |looping| SourceOptions {
        fps: None,
        looping,
        every_frame: false,
        synthetic_size: (8, 8),
    };

    let out = d.path().join("once.jsonl");
    let mut p = Setup::new(&b, SinkSpec::File { path: out.clone() }).build();
    let mut src = DirSource::new(dir.clone(), &opts(false));
    src.open().unwrap();
    assert_eq!(src.files().len(), 5);
    let stop = AtomicBool::new(false);
    let end = run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(None, 5000),
        &stop,
        &mut Notifier::disabled(),
    );
    assert_eq!(end, EndReason::SourceEnded);
    let m = p.metrics();
    assert_eq!((m.frames.load(Relaxed), m.bad_frames.load(Relaxed)), (3, 2));
    let seqs: Vec<u64> = lines(&out)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![0, 2, 3], "file indices in sorted order");

    let mut p = Setup::new(&b, SinkSpec::None).build();
    let mut src = DirSource::new(dir.clone(), &opts(true));
    src.open().unwrap();
    let end = run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(Some(6), 5000),
        &stop,
        &mut Notifier::disabled(),
    );
    assert_eq!(end, EndReason::MaxFrames);
    // a b! c d e! | a b! c d
    assert_eq!(p.metrics().bad_frames.load(Relaxed), 3);

    // A folder replayed at an fps is a live source: frames due while busy are dropped.
    let mut p = Setup::new(&b, SinkSpec::None).build();
    let mut src = DirSource::new(
        dir.clone(),
        &SourceOptions {
            fps: Some(200.0),
            ..opts(true)
        },
    );
    src.open().unwrap();
    let slow = &mut SlowSource {
        inner: src,
        per_frame: Duration::from_millis(30),
    };
    run_loop::run(
        &mut p,
        slow,
        &loop_opts(Some(5), 5000),
        &stop,
        &mut Notifier::disabled(),
    );
    assert!(
        p.metrics().dropped.load(Relaxed) >= 5,
        "dropped {}",
        p.metrics().dropped.load(Relaxed)
    );
}

/// Issue 16: a station region outside the frame gave 0 decisions and exit 0. It is now
/// checked against the first frame: the run ends at once, naming the station and both
/// sizes. A later frame of another size only skips that station (counted).
#[test]
fn a_region_outside_the_first_frame_ends_the_run_and_later_misfits_are_counted() {
    let d = tempfile::tempdir().unwrap();
    let b = tiny::bundle("1", 1.0);
    let station = |x| {
        vec![(
            "far".to_string(),
            Some(Rect {
                x,
                y: 0,
                w: 32,
                h: 24,
            }),
        )]
    };
    let mut setup = Setup::new(&b, SinkSpec::None);
    setup.stations = station(60);
    let mut p = setup.build();
    let mut src = SyntheticSource::new((64, 48), None, false);
    src.open().unwrap();
    let stop = AtomicBool::new(false);
    let end = run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(Some(5), 5000),
        &stop,
        &mut Notifier::disabled(),
    );
    assert_eq!(end, run_loop::EndReason::RoiOutsideFrame);
    assert_eq!(p.metrics().frames.load(Relaxed), 0);
    let why = p.refusal().unwrap();
    assert!(
        why.contains("station `far`: region 60,0 32x24 does not fit a 64x48 frame"),
        "{why}"
    );

    // A folder whose first image fits and whose second is smaller.
    let imgs = d.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    image::RgbImage::new(64, 48)
        .save(imgs.join("a.png"))
        .unwrap();
    image::RgbImage::new(16, 16)
        .save(imgs.join("b.png"))
        .unwrap();
    let mut setup = Setup::new(&b, SinkSpec::None);
    setup.stations = station(0);
    let mut p = setup.build();
    let opts = linesight_edge::source::SourceOptions {
        fps: None,
        looping: false,
        every_frame: false,
        synthetic_size: (8, 8),
    };
    let mut src = linesight_edge::source::dir::DirSource::new(imgs, &opts);
    src.open().unwrap();
    let end = run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(None, 5000),
        &stop,
        &mut Notifier::disabled(),
    );
    assert_eq!(end, run_loop::EndReason::SourceEnded);
    assert_eq!(p.metrics().decisions.load(Relaxed), 1);
    assert_eq!(p.metrics().roi_errors.load(Relaxed), 1);
}

#[test]
fn stations_decide_on_their_regions_with_smoothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("s.jsonl");
    let b = tiny::bundle("1", 1.0);
    let mut setup = Setup::new(&b, SinkSpec::File { path: out.clone() });
    setup.stations = vec![
        (
            "left".into(),
            Some(Rect {
                x: 0,
                y: 0,
                w: 32,
                h: 48,
            }),
        ),
        (
            "right".into(),
            Some(Rect {
                x: 32,
                y: 0,
                w: 32,
                h: 48,
            }),
        ),
    ];
    setup.smoothing = 3;
    let mut p = setup.build();
    let mut src = SyntheticSource::new((64, 48), None, false);
    src.open().unwrap();
    let stop = AtomicBool::new(false);
    run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(Some(5), 5000),
        &stop,
        &mut Notifier::disabled(),
    );
    let m = p.metrics();
    assert_eq!(m.frames.load(Relaxed), 5);
    assert_eq!(m.decisions.load(Relaxed), 10);
    assert_eq!(m.roi_errors.load(Relaxed), 0);
    let l = lines(&out);
    let left: Vec<&serde_json::Value> = l.iter().filter(|v| v["station"] == "left").collect();
    let right: Vec<&serde_json::Value> = l.iter().filter(|v| v["station"] == "right").collect();
    assert_eq!((left.len(), right.len()), (5, 5));
    let sm: Vec<u64> = left
        .iter()
        .map(|v| v["smoothed_frames"].as_u64().unwrap())
        .collect();
    assert_eq!(sm, vec![1, 2, 3, 3, 3]);
    // The two halves of the synthetic frame differ, so do their scores.
    assert_ne!(left[0]["topk"], right[0]["topk"]);
}

#[test]
fn rejected_frames_go_to_the_bounded_store_and_export() {
    let d = tempfile::tempdir().unwrap();
    let mut b = tiny::bundle("1", 1.0);
    b.manifest.decision.min_score = 0.99; // every frame is rejected
    let dir = d.path().join("uncertain");
    let limits = StoreLimits {
        max_bytes: 1 << 20,
        max_entries: 5,
        min_interval: Duration::ZERO,
    };
    let mut setup = Setup::new(&b, SinkSpec::None);
    setup.store = Some(UncertainStore::open(&dir, limits).unwrap());
    let mut p = setup.build();
    let mut src = SyntheticSource::new((20, 16), None, false);
    src.open().unwrap();
    let stop = AtomicBool::new(false);
    run_loop::run(
        &mut p,
        &mut src,
        &loop_opts(Some(12), 5000),
        &stop,
        &mut Notifier::disabled(),
    );
    let m = p.metrics();
    assert_eq!(m.rejected.load(Relaxed), 12);
    assert_eq!(m.stored.load(Relaxed), 12);
    assert_eq!(
        p.store().unwrap().ids().collect::<Vec<_>>(),
        vec![8, 9, 10, 11, 12]
    );
    let usb = d.path().join("usb");
    let r = store::export(&dir, &usb, false).unwrap();
    assert_eq!(r.entries, 5);
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(usb.join("000000000012.json")).unwrap()).unwrap();
    assert_eq!(rec["label"], "reject");
    assert_eq!(rec["frame"], 11);
    let img = image::open(usb.join("000000000012.png")).unwrap();
    assert_eq!((img.width(), img.height()), (20, 16));
}

// ---- the real binary -------------------------------------------------------------------

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_linesight-edge"))
}

fn bundle_file(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.lsb");
    std::fs::write(&path, tiny::bundle("1", 1.0).to_bytes()).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sigterm_finishes_the_frame_flushes_and_exits_0_with_sd_notify() {
    let d = tempfile::tempdir().unwrap();
    let bundle = bundle_file(d.path());
    let out = d.path().join("decisions.jsonl");
    let notify = d.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = free_port();
    let child = bin()
        .args(["run", "--bundle"])
        .arg(&bundle)
        .args([
            "--source",
            "synthetic:100",
            "--no-store",
            "--json",
            "--http",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--sink")
        .arg(format!("jsonl:{}", out.display()))
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notify datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    assert_eq!(recv(), "WATCHDOG=1");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    while http::get(addr, "/healthz").map(|r| r.0).unwrap_or(0) != 200 {
        assert!(t0.elapsed() < Duration::from_secs(20), "never healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}: {stderr}", o.status);
    let mut last = String::new();
    while !last.starts_with("STOPPING") {
        last = recv();
    }
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["end"], "stopped", "{report}");
    let n = report["frames"].as_u64().unwrap();
    assert!(n > 0, "{report}");
    let l = lines(&out); // every line is whole
    assert_eq!(l.len() as u64, n, "one line per frame, all flushed");
}

fn run_fails_with(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let o = bin().args(args).envs(env.iter().copied()).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    for n in needles {
        assert!(
            stderr.contains(n),
            "{args:?}: stderr lacks `{n}`:\n{stderr}"
        );
    }
}

#[test]
fn startup_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let bundle = bundle_file(d.path());
    let bundle = bundle.to_str().unwrap();
    let cfg = d.path().join("edge.toml");
    std::fs::write(&cfg, "[source]\nspec = \"synthetic\"\nfsp = 5\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let empty_root = d.path().join("root");
    let root = empty_root.to_str().unwrap();
    run_fails_with(
        &["run", "--config", cfg],
        &[],
        &["line 3", "unknown field `fsp`"],
    );
    run_fails_with(
        &["run", "--root", root, "--max-frames", "1"],
        &[],
        &["no model", "linesight-edge install"],
    );
    run_fails_with(
        &["run", "--max-frames", "1"],
        &[("LINESIGHT_ROOT", root)],
        &["no model", root],
    );
    run_fails_with(
        &[
            "run",
            "--bundle",
            bundle,
            "--source",
            "camera:/dev/v4l/by-id/usb-cam",
        ],
        &[],
        if cfg!(feature = "camera") {
            &["no camera at `/dev/v4l/by-id/usb-cam`", "cameras present"]
        } else {
            &["without the `camera` feature"]
        },
    );
    run_fails_with(
        &["run", "--bundle", bundle, "--source", "dir:/no/such/folder"],
        &[],
        &["cannot open source", "/no/such/folder"],
    );
    run_fails_with(
        &["run", "--bundle", bundle, "--http", "0.0.0.0:9464"],
        &[],
        &["only a loopback address"],
    );
    run_fails_with(
        &["run", "--bundle", "/no/model.lsb"],
        &[],
        &["cannot use bundle `/no/model.lsb`"],
    );
    if !cfg!(feature = "fault-source") {
        run_fails_with(
            &["run", "--bundle", bundle, "--source", "fault:ok=1"],
            &[],
            &["without the `fault-source` feature"],
        );
    }
}

#[test]
fn flags_override_the_config_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("edge.toml");
    std::fs::write(
        &cfg,
        "[source]\nspec = \"dir:frames\"\nfps = 4.0\n[sink]\nspec = \"jsonl:out/d.jsonl\"\n[[station]]\nname = \"a\"\nrect = [1, 2, 3, 4]\n",
    )
    .unwrap();
    let show = |extra: &[&str]| -> serde_json::Value {
        let o = bin()
            .args(["run", "--show-settings", "--config"])
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let s = show(&[]);
    let base = d.path().display().to_string();
    assert_eq!(s["source"]["kind"], "dir");
    assert_eq!(
        s["source"]["path"],
        format!("{base}/frames"),
        "relative to the file"
    );
    assert_eq!(s["source_options"]["fps"], 4.0);
    assert_eq!(s["sink"]["path"], format!("{base}/out/d.jsonl"));
    assert_eq!(s["stations"][0]["rect"]["h"], 4);
    let s = show(&[
        "--source",
        "synthetic",
        "--fps",
        "9",
        "--sink",
        "jsonl:-",
        "--max-frames",
        "7",
        "--every-frame",
    ]);
    assert_eq!(s["source"]["kind"], "synthetic");
    assert_eq!(s["source_options"]["fps"], 9.0);
    assert_eq!(s["source_options"]["every_frame"], true);
    assert_eq!(s["sink"]["kind"], "stdout");
    assert_eq!(s["max_frames"], 7);
}

#[test]
fn export_uncertain_from_the_binary() {
    let d = tempfile::tempdir().unwrap();
    let mut b = tiny::bundle("1", 1.0);
    b.manifest.decision.min_margin = 2.0; // rejects everything
    let bundle = d.path().join("strict.lsb");
    std::fs::write(&bundle, b.to_bytes()).unwrap();
    let root = d.path().join("root");
    let o = bin()
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("--root")
        .arg(&root)
        .args([
            "--source",
            "synthetic",
            "--max-frames",
            "3",
            "--sink",
            "none",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["rejected"].as_u64(), r["stored"].as_u64()),
        (Some(3), Some(1)),
        "{r}"
    );
    let usb = d.path().join("usb");
    let o = bin()
        .args(["export-uncertain", "--json", "--clear", "--root"])
        .arg(&root)
        .arg("--out")
        .arg(&usb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["entries"].as_u64(), r["cleared"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(usb.join("000000000001.png").exists() && usb.join("000000000001.json").exists());
}
