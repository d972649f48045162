//! The loop with a hot-swap thread attached still allocates nothing per frame (issue 7),
//! before and after a swap.
//!
//! Same counting allocator as `tests/alloc.rs` (armed on the loop's thread only; tract's
//! allocations inside `Engine::infer` and fast_image_resize's inside the preprocessing are
//! counted apart): 500 frames while the swapper polls `current` every 2 ms, then a new
//! model is installed and swapped in (the swap itself may allocate, unarmed), then 500
//! frames of the new model after a short warm-up. linesight's own count must be 0 in both.
//! Its own binary so the allocator does not see the other tests.

#[path = "it/tiny.rs"]
mod tiny;

use linesight_edge::commands::install;
use linesight_edge::engine::{self, Engine};
use linesight_edge::memory::Available;
use linesight_edge::metrics::Metrics;
use linesight_edge::notify::Notifier;
use linesight_edge::run_loop::{self, DecisionOptions, EndReason, LoopOptions, Pipeline};
use linesight_edge::sink::jsonl::{JsonlSink, SinkSpec};
use linesight_edge::slots;
use linesight_edge::source::synthetic::SyntheticSource;
use linesight_edge::source::FrameSource;
use linesight_edge::station;
use linesight_edge::swap::{SwapSettings, Swapper};
use linesight_shared::bundle::Bundle;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Counting;

static OURS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn record() {
    if ARMED.try_with(Cell::get).unwrap_or(false)
        && !engine::in_infer()
        && !station::in_preprocess()
    {
        OURS.fetch_add(1, Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        record();
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        record();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        record();
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn opts(n: u64) -> LoopOptions {
    LoopOptions {
        max_frames: Some(n),
        stall_timeout: Duration::from_secs(60),
        reopen_backoff: Duration::from_millis(10),
        reopen_backoff_max: Duration::from_secs(1),
    }
}

fn install(root: &std::path::Path, dir: &std::path::Path, b: &Bundle) {
    let file = dir.join("incoming.lsb");
    std::fs::write(&file, b.to_bytes()).unwrap();
    let mut s = install::InstallSettings::new(file, root.to_path_buf());
    s.allow_unsigned = true;
    install::run(&s).unwrap();
}

#[test]
fn polling_and_swapping_allocate_nothing_per_frame() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let v1 = tiny::bundle("1", 1.0);
    install(&root, d.path(), &v1);
    let stations = vec![("frame".to_string(), None)];
    let metrics = Arc::new(Metrics::new(Duration::from_secs(5)));
    let mut p = Pipeline::new(
        Engine::from_bundle(&v1).unwrap(),
        &v1.manifest,
        &stations,
        DecisionOptions {
            top_k: 3,
            smoothing_frames: 4,
            uncertain_band: 0.1,
        },
        JsonlSink::open(
            &SinkSpec::File {
                path: d.path().join("decisions.jsonl"),
            },
            0,
            0,
        )
        .unwrap(),
        None,
        metrics.clone(),
    );
    p.set_swapper(
        Swapper::start(
            SwapSettings {
                root: root.clone(),
                active_slot: "0001".into(),
                poll: Some(Duration::from_millis(2)),
                trusted_keys: Vec::new(),
                allow_unsigned: true,
                mem_available: Available::Kernel,
                stations: stations.clone(),
                smoothing_frames: 4,
                threads: 1,
                hup: None,
            },
            metrics.clone(),
        )
        .unwrap(),
    );
    let mut src = SyntheticSource::new((64, 48), None, false);
    src.open().unwrap();
    let stop = AtomicBool::new(false);
    let mut notifier = Notifier::disabled();
    let mut armed_run = |p: &mut Pipeline, src: &mut SyntheticSource, what: &str| {
        assert_eq!(
            run_loop::run(p, src, &opts(20), &stop, &mut notifier),
            EndReason::MaxFrames
        );
        OURS.store(0, Relaxed);
        ARMED.with(|a| a.set(true));
        let end = run_loop::run(p, src, &opts(500), &stop, &mut notifier);
        ARMED.with(|a| a.set(false));
        assert_eq!(end, EndReason::MaxFrames);
        let n = OURS.load(Relaxed);
        eprintln!("{what}: linesight's loop allocated {n} times over 500 frames");
        assert_eq!(n, 0, "{what}");
    };
    armed_run(&mut p, &mut src, "model 1, swapper polling every 2 ms");

    install(&root, d.path(), &tiny::bundle("2", 2.0));
    let t0 = Instant::now();
    while p.model().model_version() != "2" {
        assert!(t0.elapsed() < Duration::from_secs(20), "never swapped");
        run_loop::run(
            &mut p,
            &mut src,
            &opts(10),
            &stop,
            &mut Notifier::disabled(),
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(metrics.swaps.load(Relaxed), 1);
    assert_eq!(
        slots::read_pointer(&root, slots::CURRENT)
            .unwrap()
            .as_deref(),
        Some("0002")
    );
    armed_run(&mut p, &mut src, "model 2 after the swap");
}
