//! `dir:PATH`: the image files of a folder (recursively, sorted), replayed in order,
//! optionally looping and at a given fps (then it behaves like a live camera: images that
//! fall due while the loop is busy are skipped and counted as dropped, unless
//! `every_frame`). A file that cannot be read or decoded is reported as a bad frame and
//! skipped; it never stops the run. Decoding allocates: this source is for replays and
//! tests, not for the allocation-free steady state (see `synthetic`).
//!
//! The folder is listed by [`linesight_shared::walk`]: symbolic-link loops end, each file
//! comes once, FIFOs and device nodes are skipped (and said), and a SIGTERM stops a long
//! listing. Images are decoded within the process's image limits
//! ([`linesight_shared::decode`]).
//!
//! Looping over a folder where a whole pass gave no usable image (every file corrupt) does
//! not spin: the source waits before the next pass, 1 s and doubling up to
//! [`MAX_BAD_PASS_BACKOFF`], and says so; one good image resets the wait.

use super::{Frame, FrameSource, Next, Pacer, SourceError, SourceOptions};
use linesight_shared::decode::IMAGE_EXTENSIONS;
use linesight_shared::preprocess::RgbImage;
use linesight_shared::walk::{self, WalkOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The first wait after a pass without a usable image.
pub const FIRST_BAD_PASS_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two passes without a usable image.
pub const MAX_BAD_PASS_BACKOFF: Duration = Duration::from_secs(60);

pub struct DirSource {
    name: String,
    dir: PathBuf,
    looping: bool,
    files: Vec<PathBuf>,
    /// Index of the next image to deliver (may exceed `files.len()` when looping).
    next_index: u64,
    image: Option<RgbImage>,
    pacer: Pacer,
    /// Images in a row that could not be used (a whole pass of them: back off).
    bad_in_a_row: u64,
    /// The next wait after a pass without a usable image.
    backoff: Duration,
    /// No image is delivered before this (after a pass without a usable one).
    paused_until: Option<Instant>,
    /// What the last listing skipped, so a reopen does not repeat the same warnings.
    last_skipped: String,
}

impl DirSource {
    pub fn new(dir: PathBuf, opts: &SourceOptions) -> Self {
        DirSource {
            name: format!("dir:{}", dir.display()),
            dir,
            looping: opts.looping,
            files: Vec::new(),
            next_index: 0,
            image: None,
            pacer: Pacer::new(opts.fps, opts.every_frame),
            bad_in_a_row: 0,
            backoff: FIRST_BAD_PASS_BACKOFF,
            paused_until: None,
            last_skipped: String::new(),
        }
    }

    /// The files found by the last `open`.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Counts an unusable image; after a whole pass of them, pauses the replay.
    fn bad_image(&mut self) {
        self.bad_in_a_row += 1;
        if self.looping && self.bad_in_a_row >= self.files.len() as u64 {
            tracing::error!(
                source = %self.name,
                images = self.files.len(),
                next_pass_in_s = self.backoff.as_secs_f64(),
                "none of the images in the folder could be used in a whole pass (see the bad frames); waiting before the next pass"
            );
            self.paused_until = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BAD_PASS_BACKOFF);
            self.bad_in_a_row = 0;
        }
    }
}

impl FrameSource for DirSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&mut self) -> Result<(), SourceError> {
        let open_err = |reason: String| SourceError::Open {
            name: self.name.clone(),
            reason,
        };
        if !self.dir.is_dir() {
            return Err(open_err(format!(
                "`{}` is not a readable folder",
                self.dir.display()
            )));
        }
        let cancel = crate::shutdown::requested;
        let opts = WalkOptions {
            extensions: &IMAGE_EXTENSIONS,
            cancel: Some(&cancel),
        };
        let found = walk::walk(std::slice::from_ref(&self.dir), &opts)
            .map_err(|e| open_err(format!("{e} (stop requested)")))?;
        let summary = found.skipped_summary();
        if summary != self.last_skipped {
            for s in &found.skipped {
                tracing::warn!(source = %self.name, "{s}");
            }
            if !summary.is_empty() {
                tracing::warn!(source = %self.name, skipped = %summary, "entries of the folder skipped");
            }
            self.last_skipped = summary;
        }
        let files = found.files;
        if let Some(e) = found.errors.first() {
            if files.is_empty() {
                return Err(open_err(e.to_string()));
            }
            tracing::warn!(error = %e, "part of the folder cannot be listed");
        }
        if files.is_empty() {
            return Err(open_err(format!(
                "no image files (.{}) under `{}`",
                IMAGE_EXTENSIONS.join(" ."),
                self.dir.display()
            )));
        }
        // A reopen continues where the replay was (a folder does not restart by itself),
        // and keeps waiting after a bad pass unless the folder changed.
        if self.files != files {
            self.next_index = 0;
            self.bad_in_a_row = 0;
            self.backoff = FIRST_BAD_PASS_BACKOFF;
            self.paused_until = None;
        }
        self.files = files;
        self.pacer.restart();
        Ok(())
    }

    fn next(&mut self, wait: Duration) -> Result<Next<'_>, SourceError> {
        let n = self.files.len() as u64;
        if n == 0 {
            return Err(SourceError::Gone {
                name: self.name.clone(),
                reason: "not open".into(),
            });
        }
        if !self.looping && self.next_index >= n {
            return Ok(Next::End);
        }
        if let Some(until) = self.paused_until {
            let now = Instant::now();
            if now < until {
                std::thread::sleep((until - now).min(wait));
                return Ok(Next::Idle);
            }
            self.paused_until = None;
            self.pacer.restart();
        }
        let Some(dropped) = self.pacer.wait_due(wait) else {
            return Ok(Next::Idle);
        };
        let mut index = self.next_index + dropped;
        let mut dropped = dropped;
        if !self.looping && index >= n {
            // The clock ran past the end: the last image is the latest one.
            dropped -= index - (n - 1);
            index = n - 1;
        }
        self.next_index = index + 1;
        let path = &self.files[(index % n) as usize];
        match RgbImage::open(path) {
            Ok(img) => {
                self.bad_in_a_row = 0;
                self.backoff = FIRST_BAD_PASS_BACKOFF;
                let img = self.image.insert(img);
                Ok(Next::Frame(Frame {
                    seq: index,
                    width: img.width,
                    height: img.height,
                    rgb: &img.pixels,
                    dropped,
                }))
            }
            // The folder itself went away (unmounted stick): reopen, do not skip on.
            Err(e) if !self.dir.is_dir() => Err(SourceError::Gone {
                name: self.name.clone(),
                reason: e.to_string(),
            }),
            Err(e) => {
                self.bad_image();
                Err(SourceError::BadFrame {
                    name: self.name.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 (class 10): looping over a folder of only corrupt images burnt a core.
    #[test]
    fn a_pass_without_a_usable_image_pauses_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("{i}.jpg")), b"not a jpeg").unwrap();
        }
        let opts = SourceOptions {
            fps: None,
            looping: true,
            every_frame: false,
            synthetic_size: (8, 8),
        };
        let mut src = DirSource::new(dir.path().to_path_buf(), &opts);
        src.open().unwrap();
        for _ in 0..3 {
            assert!(matches!(
                src.next(Duration::ZERO),
                Err(SourceError::BadFrame { .. })
            ));
        }
        // A whole pass was bad: nothing for a while, however often the loop asks.
        let t = Instant::now();
        let mut idle = 0;
        while t.elapsed() < Duration::from_millis(300) {
            match src.next(Duration::from_millis(10)) {
                Ok(Next::Idle) => idle += 1,
                other => panic!("expected a pause, got {other:?}"),
            }
        }
        assert!(idle > 5 && idle < 100, "{idle}");
        // A reopen of the same folder keeps the pause; a good image ends it.
        src.open().unwrap();
        assert!(matches!(src.next(Duration::ZERO), Ok(Next::Idle)));
        image::RgbImage::new(4, 4)
            .save(dir.path().join("3.png"))
            .unwrap();
        src.open().unwrap();
        let mut got_frame = false;
        for _ in 0..4 {
            if let Ok(Next::Frame(f)) = src.next(Duration::ZERO) {
                assert_eq!((f.width, f.height), (4, 4));
                got_frame = true;
            }
        }
        assert!(got_frame);
        assert_eq!(src.backoff, FIRST_BAD_PASS_BACKOFF);
    }
}
