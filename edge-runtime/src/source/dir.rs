//! `dir:PATH`: the image files of a folder (recursively, sorted), replayed in order,
//! optionally looping and at a given fps (then it behaves like a live camera: images that
//! fall due while the loop is busy are skipped and counted as dropped, unless
//! `every_frame`). A file that cannot be read or decoded is reported as a bad frame and
//! skipped; it never stops the run. Decoding allocates: this source is for replays and
//! tests, not for the allocation-free steady state (see `synthetic`).

use super::{Frame, FrameSource, Next, Pacer, SourceError, SourceOptions};
use crate::walk;
use linesight_shared::preprocess::RgbImage;
use std::path::PathBuf;
use std::time::Duration;

pub struct DirSource {
    name: String,
    dir: PathBuf,
    looping: bool,
    files: Vec<PathBuf>,
    /// Index of the next image to deliver (may exceed `files.len()` when looping).
    next_index: u64,
    image: Option<RgbImage>,
    pacer: Pacer,
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
        }
    }

    /// The files found by the last `open`.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
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
        let (files, errors) = walk::image_files(std::slice::from_ref(&self.dir));
        if let Some((path, e)) = errors.first() {
            if files.is_empty() {
                return Err(open_err(format!("cannot list `{}`: {e}", path.display())));
            }
            tracing::warn!(path = %path.display(), error = %e, "part of the folder cannot be listed");
        }
        if files.is_empty() {
            return Err(open_err(format!(
                "no image files (.jpg .jpeg .png .bmp .webp) under `{}`",
                self.dir.display()
            )));
        }
        // A reopen continues where the replay was (a folder does not restart by itself).
        if self.files != files {
            self.next_index = 0;
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
            Err(e) => Err(SourceError::BadFrame {
                name: self.name.clone(),
                reason: e.to_string(),
            }),
        }
    }
}
