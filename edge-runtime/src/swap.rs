//! Hot swap under `run`: a running loop that follows the installed `current` (no
//! `--bundle`) picks up a new one without stopping the line.
//!
//! ```text
//! swapper thread                                   loop thread (run_loop::run)
//!   every poll interval: stat ROOT/current            between frames:
//!   on SIGHUP: read it at once                          try_recv  (no allocation)
//!   new slot? read + verify (signature, hash,           Ready? swap the LoadedModel,
//!     format, compatibility), memory check,               count it, send the old one
//!     Engine::from_bundle, self-test, build   ──Ready──>  back to be dropped
//!     the stations' scratch                  <──old───
//!   failed? count, log why, remember the slot
//! ```
//!
//! The loop never waits for a load: it only polls a channel. A new model takes over at a
//! frame boundary, and only once it has loaded and passed its self-test beside the old
//! one; otherwise the old one keeps deciding, the failure is counted
//! (`linesight_model_swap_failures_total`) and logged with its reason, and that slot is
//! not tried again (slots never change once named): a new install, a rollback, or SIGHUP
//! (which clears the memory of failed slots, e.g. after freeing memory) moves things on.
//!
//! Verification is [`install::check_bundle`], the same as `install`'s: the trusted keys
//! are edge.toml's `model.trusted_keys` plus `ROOT/trusted-keys/*.pub` (re-read for every
//! new slot), unsigned bundles only with `model.allow_unsigned`.

use crate::commands::install::{self, InstallError};
use crate::memory;
use crate::metrics::Metrics;
use crate::run_loop::{LoadedModel, StationPlan};
use crate::slots;
use crate::trust::{self, KeySpec};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the swapper thread wakes to look at SIGHUP, the poll clock and retired
/// models, and how quickly it sees a stop request.
const TICK: Duration = Duration::from_millis(10);

/// The default interval between two looks at the `current` pointer.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// What the swapper needs: where the models are, how to verify them, and how to build
/// the loop's scratch for a new one.
pub struct SwapSettings {
    pub root: PathBuf,
    /// The slot the loop started with.
    pub active_slot: String,
    /// Interval between looks at the `current` pointer (a `stat`, and a read when it
    /// changed); None: only on SIGHUP.
    pub poll: Option<Duration>,
    /// edge.toml's `model.trusted_keys` (`ROOT/trusted-keys/*.pub` are added).
    pub trusted_keys: Vec<KeySpec>,
    pub allow_unsigned: bool,
    /// Where the available memory comes from (the kernel; tests override it).
    pub mem_available: memory::Available,
    /// The stations and smoothing the loop runs with (a new model gets the same).
    pub stations: Vec<StationPlan>,
    pub smoothing_frames: usize,
    /// Tract threads for a new model (the running one's setting).
    pub threads: usize,
    /// Set by SIGHUP ([`install_sighup`]); a test passes its own flag.
    pub hup: Option<&'static AtomicBool>,
}

/// A model loaded and self-tested, ready to take over.
pub struct Ready {
    pub model: LoadedModel,
    pub slot: String,
    /// Read, verify, load, self-test and build, in milliseconds.
    pub load_ms: f64,
}

/// The handle the loop holds: the ready channel, the channel for retired models, and the
/// thread. Dropping it stops the thread (after a load in progress finishes).
pub struct Swapper {
    ready: Receiver<Ready>,
    retired: Sender<LoadedModel>,
    stop: Arc<AtomicBool>,
    last_failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Swapper {
    /// Starts the swapper thread. Fails only when the thread cannot be spawned.
    pub fn start(settings: SwapSettings, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (ready_tx, ready) = mpsc::channel();
        let (retired, retired_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let last_failure = Arc::new(Mutex::new(None));
        let worker = Worker {
            last_failure: last_failure.clone(),
            active: settings.active_slot.clone(),
            s: settings,
            metrics,
            ready_tx,
            retired_rx,
            stop: stop.clone(),
            failed: None,
            last_stamp: None,
        };
        let thread = std::thread::Builder::new()
            .name("linesight-swap".into())
            .spawn(move || worker.run())?;
        Ok(Swapper {
            ready,
            retired,
            stop,
            last_failure,
            thread: Some(thread),
        })
    }

    /// A model ready to take over, if any. Never blocks; allocates nothing when there is
    /// none.
    pub fn try_take(&mut self) -> Option<Ready> {
        self.ready.try_recv().ok()
    }

    /// Why the last refused slot was refused (slot and message), if any was.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Hands the replaced model back to the swapper thread, which drops it (so freeing
    /// its memory does not cost the loop time).
    pub fn retire(&mut self, old: LoadedModel) {
        // If the thread is gone the model comes back in the error and is dropped here.
        let _ = self.retired.send(old);
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What identifies one version of the pointer file without reading it: a new `current`
/// is renamed into place, so its inode changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    })
}

struct Worker {
    s: SwapSettings,
    metrics: Arc<Metrics>,
    ready_tx: Sender<Ready>,
    retired_rx: Receiver<LoadedModel>,
    stop: Arc<AtomicBool>,
    last_failure: Arc<Mutex<Option<String>>>,
    /// The slot deciding now, or handed to the loop to decide from its next frame.
    active: String,
    /// The last slot that failed; not tried again until SIGHUP.
    failed: Option<String>,
    /// The pointer file as last read.
    last_stamp: Option<Stamp>,
}

impl Worker {
    fn run(mut self) {
        let pointer = self.s.root.join(slots::CURRENT);
        // `last_stamp` starts unknown, so the first look reads the pointer: an install
        // between `run` reading `current` and this thread starting is not missed.
        let mut next_poll = self.s.poll.map(|p| Instant::now() + p);
        while !self.stop.load(Ordering::Relaxed) {
            while let Ok(old) = self.retired_rx.try_recv() {
                drop(old);
            }
            let hup = self.s.hup.is_some_and(|h| h.swap(false, Ordering::SeqCst));
            let now = Instant::now();
            let due = next_poll.is_some_and(|t| now >= t);
            if hup {
                tracing::info!(
                    "SIGHUP: looking at the current model now (failed slots are tried again)"
                );
                self.failed = None;
            }
            if hup || due {
                next_poll = self.s.poll.map(|p| now + p);
                let st = stamp(&pointer);
                if hup || st != self.last_stamp {
                    self.last_stamp = st;
                    self.look();
                }
            }
            std::thread::sleep(TICK);
        }
    }

    /// Reads `current`; a slot that is neither active nor known bad is loaded.
    fn look(&mut self) {
        let slot = match slots::read_pointer(&self.s.root, slots::CURRENT) {
            Ok(Some(slot)) => slot,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(root = %self.s.root.display(), error = %e, "hot swap: cannot read the current pointer");
                return;
            }
        };
        if slot == self.active || self.failed.as_deref() == Some(slot.as_str()) {
            return;
        }
        let t0 = Instant::now();
        tracing::info!(slot = %slot, "hot swap: a new current model; loading it beside the running one");
        match self.load(&slot) {
            Ok(model) => {
                let took = t0.elapsed();
                self.metrics
                    .swap_load_us
                    .store(took.as_micros() as u64, Ordering::Relaxed);
                let ready = Ready {
                    model,
                    slot: slot.clone(),
                    load_ms: took.as_secs_f64() * 1e3,
                };
                if self.ready_tx.send(ready).is_ok() {
                    self.active = slot;
                }
            }
            Err(e) => {
                self.metrics.swap_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    slot = %slot,
                    running = %self.active,
                    error = %e,
                    "hot swap refused: the running model keeps deciding; this slot is not tried again (install another, roll back, or send SIGHUP to retry)"
                );
                *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("slot {slot}: {e}"));
                self.failed = Some(slot);
            }
        }
    }

    /// Read, verify, check memory, load, self-test, build the loop's scratch.
    fn load(&self, slot: &str) -> Result<LoadedModel, InstallError> {
        let trusted = trust::resolve(&self.s.root, &[], &self.s.trusted_keys)
            .map_err(InstallError::TrustedKey)?;
        let path = slots::slot_model(&self.s.root, slot);
        let bytes = install::read_bundle_file(&path)?;
        let checked = install::check_bundle(
            &path,
            &bytes,
            &trusted,
            self.s.allow_unsigned,
            self.s.mem_available,
            memory::SWAP_HINT,
        )?;
        drop(bytes);
        let mut engine = checked.engine;
        engine
            .set_threads(self.s.threads)
            .map_err(|source| InstallError::Load {
                path: path.display().to_string(),
                source,
            })?;
        Ok(LoadedModel::new(
            engine,
            &checked.bundle.manifest,
            &self.s.stations,
            self.s.smoothing_frames,
        ))
    }
}

static HUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_sig: libc::c_int) {
    HUP.store(true, Ordering::SeqCst);
}

/// Installs the SIGHUP handler (it only sets a flag) and returns the flag. Fails when the
/// handler cannot be installed.
pub fn install_sighup() -> std::io::Result<&'static AtomicBool> {
    // SAFETY: a zeroed sigaction whose handler only stores to an atomic is a valid
    // argument to sigaction.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_hup as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(&HUP)
}
