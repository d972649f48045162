//! Frame sources behind one trait: a folder replayed in order (`dir:`), generated frames
//! (`synthetic`), a V4L2 camera (`camera:ID`, [`camera`]; the capture needs the `camera`
//! cargo feature, without it asking for a camera is a clear startup error), and a
//! fault-injecting source for tests (`fault`).
//!
//! A source owns its frame buffer and lends it out ([`Frame`]) until the next call; the
//! run loop never copies a whole frame. Clocked sources (`synthetic:FPS`, `dir:` with an
//! fps) behave like a live camera: frames fall due on their own clock whether or not the
//! loop is ready, and unless `every_frame` is set only the latest due frame is delivered;
//! the ones skipped are reported in [`Frame::dropped`].

pub mod camera;
pub mod dir;
pub mod fault;
pub mod synthetic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Errors a source reports; the run loop recovers from every one of them.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source cannot be opened (missing folder, device absent).
    #[error("cannot open source `{name}`: {reason}")]
    Open { name: String, reason: String },
    /// The source was open and went away (unplugged, read error); reopen it.
    #[error("source `{name}` is gone: {reason}")]
    Gone { name: String, reason: String },
    /// One frame could not be used (undecodable, corrupt file); skip it and go on.
    #[error("bad frame from `{name}`: {reason}")]
    BadFrame { name: String, reason: String },
}

/// One frame lent by a source: RGB, HWC, u8.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The source's own frame number (counts dropped frames too).
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub rgb: &'a [u8],
    /// Frames that fell due since the previous delivered one and were skipped.
    pub dropped: u64,
}

impl Frame<'_> {
    /// The buffer holds exactly `width * height * 3` bytes and both sides are non-zero.
    pub fn is_well_formed(&self) -> bool {
        self.width > 0
            && self.height > 0
            && self.rgb.len() == self.width as usize * self.height as usize * 3
    }
}

/// What a source has after waiting.
#[derive(Debug)]
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// No frame within the wait (the stall watchdog decides what that means).
    Idle,
    /// A finite source has delivered everything.
    End,
}

/// A source of frames. `open` may be called again after any error (reopen).
pub trait FrameSource {
    /// How the source is named in logs, decision lines and `/metrics`.
    fn name(&self) -> &str;
    /// Opens (or reopens) the source. Fails when it cannot be opened now.
    fn open(&mut self) -> Result<(), SourceError>;
    /// Waits at most `wait` for the next frame.
    fn next(&mut self, wait: Duration) -> Result<Next<'_>, SourceError>;
}

/// A parsed `--source` value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSpec {
    /// `dir:PATH`: image files of a folder, in sorted order.
    Dir { path: PathBuf },
    /// `synthetic[:FPS]`: generated frames.
    Synthetic { fps: Option<f64> },
    /// `camera:ID`: a V4L2 camera by /dev/v4l/by-id path, name or serial, or index;
    /// `camera` holds `[source.camera]` (format override, YUV range).
    Camera {
        id: String,
        camera: camera::CameraOptions,
    },
    /// `fault:SCRIPT`: the fault-injecting test source (needs the `fault-source` feature).
    Fault { script: String },
}

/// Why a `--source` value is refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown source `{0}`: expected dir:PATH, synthetic[:FPS] or camera:ID")]
    Unknown(String),
    #[error("source `{0}`: the fps must be a positive number")]
    Fps(String),
    #[error("source `{0}`: a path is required after `dir:`")]
    EmptyPath(String),
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        if let Some(path) = s.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(SpecError::EmptyPath(s.into()));
            }
            return Ok(SourceSpec::Dir { path: path.into() });
        }
        if s == "synthetic" {
            return Ok(SourceSpec::Synthetic { fps: None });
        }
        if let Some(fps) = s.strip_prefix("synthetic:") {
            return Ok(SourceSpec::Synthetic {
                fps: Some(parse_fps(fps).ok_or_else(|| SpecError::Fps(s.into()))?),
            });
        }
        if let Some(id) = s.strip_prefix("camera:") {
            return Ok(SourceSpec::Camera {
                id: id.into(),
                camera: camera::CameraOptions::default(),
            });
        }
        if let Some(script) = s.strip_prefix("fault:") {
            return Ok(SourceSpec::Fault {
                script: script.into(),
            });
        }
        Err(SpecError::Unknown(s.into()))
    }

    /// The fps the spec itself carries (`synthetic:30`).
    pub fn fps(&self) -> Option<f64> {
        match self {
            SourceSpec::Synthetic { fps } => *fps,
            _ => None,
        }
    }
}

/// A positive, finite fps.
pub fn parse_fps(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|f| f.is_finite() && *f > 0.0)
}

/// The frame clock of a live-like source: frames fall due every `1 / fps`, and either
/// every due frame is delivered in turn (`every_frame`) or only the latest (the others
/// count as dropped). Without an fps every call has a frame due at once.
#[derive(Debug)]
pub struct Pacer {
    period: Option<Duration>,
    every_frame: bool,
    start: Instant,
    /// The next tick not yet delivered or dropped.
    next_tick: u64,
}

impl Pacer {
    pub fn new(fps: Option<f64>, every_frame: bool) -> Self {
        Pacer {
            period: fps.map(|f| Duration::from_secs_f64(1.0 / f)),
            every_frame,
            start: Instant::now(),
            next_tick: 0,
        }
    }

    /// Restarts the clock (on open).
    pub fn restart(&mut self) {
        self.start = Instant::now();
        self.next_tick = 0;
    }

    /// Waits at most `wait` for a due frame. Returns `Some(dropped)` when one is due,
    /// `None` when none fell due within the wait.
    pub fn wait_due(&mut self, wait: Duration) -> Option<u64> {
        let Some(period) = self.period else {
            return Some(0);
        };
        let due_at = self.start + period.mul_f64(self.next_tick as f64);
        let now = Instant::now();
        if due_at > now {
            let sleep = (due_at - now).min(wait);
            std::thread::sleep(sleep);
            if Instant::now() < due_at {
                return None;
            }
        }
        let elapsed = self.start.elapsed();
        let latest = (elapsed.as_secs_f64() / period.as_secs_f64()).floor() as u64;
        let latest = latest.max(self.next_tick);
        if self.every_frame {
            self.next_tick += 1;
            Some(0)
        } else {
            let dropped = latest - self.next_tick;
            self.next_tick = latest + 1;
            Some(dropped)
        }
    }
}

/// Source settings beyond the spec.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceOptions {
    /// Frames per second of a clocked source; None: as fast as the loop takes them.
    pub fps: Option<f64>,
    /// `dir:`: start over after the last image.
    pub looping: bool,
    /// Deliver every due frame instead of only the latest.
    pub every_frame: bool,
    /// Size of generated frames (`synthetic`, `fault`).
    pub synthetic_size: (u32, u32),
}

/// Why a source cannot be built at all (startup errors).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No camera in this build (no `camera` feature), or a bad `[source.camera]` value.
    #[error("source `camera:{id}`: {reason}")]
    Camera { id: String, reason: String },
    #[error("source `fault:{0}`: this linesight-edge was built without the `fault-source` feature (a test source; build with --features fault-source)")]
    NoFaultFeature(String),
    #[error("source `fault:{script}`: {reason}")]
    FaultScript { script: String, reason: String },
}

/// Builds the source a spec names (not opened yet).
pub fn build(spec: &SourceSpec, opts: &SourceOptions) -> Result<Box<dyn FrameSource>, BuildError> {
    Ok(match spec {
        SourceSpec::Dir { path } => Box::new(dir::DirSource::new(path.clone(), opts)),
        SourceSpec::Synthetic { .. } => Box::new(synthetic::SyntheticSource::new(
            opts.synthetic_size,
            opts.fps,
            opts.every_frame,
        )),
        SourceSpec::Camera { id, camera } => {
            camera::build(id, camera, opts.every_frame).map_err(|reason| BuildError::Camera {
                id: id.clone(),
                reason,
            })?
        }
        SourceSpec::Fault { script } => {
            if !cfg!(feature = "fault-source") {
                return Err(BuildError::NoFaultFeature(script.clone()));
            }
            let plan =
                fault::FaultPlan::parse(script).map_err(|reason| BuildError::FaultScript {
                    script: script.clone(),
                    reason,
                })?;
            Box::new(fault::FaultSource::new(plan, opts.synthetic_size))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            SourceSpec::parse("dir:/a/b").unwrap(),
            SourceSpec::Dir {
                path: "/a/b".into()
            }
        );
        assert_eq!(
            SourceSpec::parse("synthetic").unwrap(),
            SourceSpec::Synthetic { fps: None }
        );
        assert_eq!(
            SourceSpec::parse("synthetic:12.5").unwrap().fps(),
            Some(12.5)
        );
        assert!(matches!(
            SourceSpec::parse("synthetic:0"),
            Err(SpecError::Fps(_))
        ));
        assert!(matches!(
            SourceSpec::parse("dir:"),
            Err(SpecError::EmptyPath(_))
        ));
        assert!(matches!(
            SourceSpec::parse("usb"),
            Err(SpecError::Unknown(_))
        ));
        let opts = SourceOptions {
            fps: None,
            looping: false,
            every_frame: false,
            synthetic_size: (8, 8),
        };
        let camera = build(&SourceSpec::parse("camera:0").unwrap(), &opts);
        if cfg!(feature = "camera") {
            // Built, not opened: opening looks for the device.
            assert_eq!(camera.unwrap().name(), "camera:0");
        } else {
            let err = camera.err().unwrap();
            assert!(
                err.to_string().contains("without the `camera` feature"),
                "{err}"
            );
        }
    }

    #[test]
    fn pacer_keeps_the_latest_or_every_frame() {
        let mut p = Pacer::new(Some(1000.0), false);
        assert_eq!(p.wait_due(Duration::from_millis(5)), Some(0));
        std::thread::sleep(Duration::from_millis(20));
        let dropped = p.wait_due(Duration::ZERO).unwrap();
        assert!(dropped >= 15, "{dropped}");
        let mut p = Pacer::new(Some(1000.0), true);
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..10 {
            assert_eq!(p.wait_due(Duration::ZERO), Some(0));
        }
        let mut p = Pacer::new(Some(1.0), false);
        assert_eq!(p.wait_due(Duration::ZERO), Some(0));
        assert_eq!(p.wait_due(Duration::from_millis(1)), None);
        let mut p = Pacer::new(None, false);
        assert_eq!(p.wait_due(Duration::ZERO), Some(0));
    }
}
