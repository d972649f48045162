//! Stations: a named region of the frame (ROI) that gets its own decision, and the
//! temporal smoothing of its scores.
//!
//! Every buffer a station needs (region copy, preprocessor scratch, smoothing ring, mean
//! scores) is made when the station is built; per frame it only copies and computes.

use crate::decide::MAX_TOPK;
use crate::source::Frame;
use heapless::HistoryBuf;
use linesight_shared::manifest::PreprocessSpec;
use linesight_shared::preprocess::Preprocessor;

/// The longest smoothing window (frames).
pub const MAX_SMOOTH: usize = 32;

/// A rectangle in frame pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// A region that does not fit the frame it is applied to.
#[derive(Debug, thiserror::Error)]
#[error("region {x},{y} {w}x{h} does not fit a {frame_w}x{frame_h} frame")]
pub struct RoiError {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub frame_w: u32,
    pub frame_h: u32,
}

impl Rect {
    /// Fails when the region is empty or not inside a `frame_w` x `frame_h` frame.
    pub fn check_fits(&self, frame_w: u32, frame_h: u32) -> Result<(), RoiError> {
        let fits = self.w > 0
            && self.h > 0
            && self.x.checked_add(self.w).is_some_and(|r| r <= frame_w)
            && self.y.checked_add(self.h).is_some_and(|b| b <= frame_h);
        if !fits {
            return Err(RoiError {
                x: self.x,
                y: self.y,
                w: self.w,
                h: self.h,
                frame_w,
                frame_h,
            });
        }
        Ok(())
    }

    /// Copies this region of `frame` (which must be well formed) into `out`, reusing its
    /// capacity.
    pub fn copy_from(&self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), RoiError> {
        self.check_fits(frame.width, frame.height)?;
        out.clear();
        let stride = frame.width as usize * 3;
        let (x0, w) = (self.x as usize * 3, self.w as usize * 3);
        for row in frame
            .rgb
            .chunks_exact(stride)
            .skip(self.y as usize)
            .take(self.h as usize)
        {
            out.extend_from_slice(&row[x0..x0 + w]);
        }
        Ok(())
    }
}

/// Mean of the softmax scores over the last `window` frames, kept as each frame's top-k in
/// a fixed ring (a class outside a frame's top-k counts as 0 for that frame; exact for
/// models with at most [`MAX_TOPK`] classes).
pub struct Smoother {
    window: usize,
    ring: HistoryBuf<heapless::Vec<(u32, f32), MAX_TOPK>, MAX_SMOOTH>,
    mean: Vec<f32>,
}

impl Smoother {
    /// `window` is clamped to `1..=MAX_SMOOTH`; 1 means no smoothing.
    pub fn new(window: usize, classes: usize) -> Self {
        Smoother {
            window: window.clamp(1, MAX_SMOOTH),
            ring: HistoryBuf::new(),
            mean: vec![0.0; classes],
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Forgets the past (after the source was reopened: the scene may have changed).
    pub fn clear(&mut self) {
        self.ring.clear();
    }

    /// Frames the next decision will be averaged over.
    pub fn frames(&self) -> usize {
        self.ring.len().min(self.window)
    }

    /// Adds one frame's softmax scores; returns the scores to decide on (the frame's own
    /// without smoothing, otherwise the mean over the window).
    pub fn push<'a>(&'a mut self, scores: &'a [f32]) -> &'a [f32] {
        if self.window <= 1 {
            return scores;
        }
        let mut top: heapless::Vec<(u32, f32), MAX_TOPK> = heapless::Vec::new();
        for (i, &s) in scores.iter().enumerate() {
            let pos = top.iter().position(|&(_, t)| s > t).unwrap_or(top.len());
            if pos < MAX_TOPK {
                if top.is_full() {
                    top.pop();
                }
                // cannot fail: there is room after the pop
                let _ = top.insert(pos, (i as u32, s));
            }
        }
        self.ring.write(top);
        self.mean.iter_mut().for_each(|m| *m = 0.0);
        let n = self.frames();
        for frame in self.ring.oldest_ordered().rev().take(n) {
            for &(c, s) in frame {
                if let Some(m) = self.mean.get_mut(c as usize) {
                    *m += s / n as f32;
                }
            }
        }
        &self.mean
    }
}

thread_local! {
    static IN_PREPROCESS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread is inside [`preprocess`]. Lets an allocation counter attribute
/// the allocations of the resize library: fast_image_resize 6.1 recomputes its
/// convolution coefficients on every call (about 20 small allocations per resize), which
/// our code cannot avoid without changing the shared preprocessing. Never allocates.
pub fn in_preprocess() -> bool {
    IN_PREPROCESS.try_with(|c| c.get()).unwrap_or(false)
}

/// The shared preprocessing of one region, marked for [`in_preprocess`].
pub fn preprocess(
    pre: &mut Preprocessor,
    rgb: &[u8],
    width: u32,
    height: u32,
    out: &mut [f32],
) -> Result<(), linesight_shared::preprocess::PreprocessError> {
    IN_PREPROCESS.with(|c| c.set(true));
    let r = pre.run(rgb, width, height, out);
    IN_PREPROCESS.with(|c| c.set(false));
    r
}

/// A station, ready to run: its region, preprocessor and smoother.
pub struct Station {
    pub name: String,
    /// None: the whole frame.
    pub rect: Option<Rect>,
    pub roi: Vec<u8>,
    pub pre: Preprocessor,
    pub smoother: Smoother,
}

impl Station {
    pub fn new(
        name: String,
        rect: Option<Rect>,
        spec: PreprocessSpec,
        smoothing: usize,
        classes: usize,
    ) -> Self {
        let roi = match rect {
            Some(r) => Vec::with_capacity(r.w as usize * r.h as usize * 3),
            None => Vec::new(),
        };
        Station {
            name,
            rect,
            roi,
            pre: Preprocessor::new(spec),
            smoother: Smoother::new(smoothing, classes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, rgb: &[u8]) -> Frame<'_> {
        Frame {
            seq: 0,
            width: w,
            height: h,
            rgb,
            dropped: 0,
        }
    }

    #[test]
    fn region_copy_and_bounds() {
        // 4x3 frame, pixel value = 10*y + x in every channel.
        let rgb: Vec<u8> = (0..3u8)
            .flat_map(|y| (0..4u8).flat_map(move |x| [10 * y + x; 3]))
            .collect();
        let f = frame(4, 3, &rgb);
        let mut out = Vec::with_capacity(12);
        Rect {
            x: 1,
            y: 1,
            w: 2,
            h: 2,
        }
        .copy_from(&f, &mut out)
        .unwrap();
        let firsts: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(firsts, vec![11, 12, 21, 22]);
        assert!(Rect {
            x: 3,
            y: 0,
            w: 2,
            h: 1
        }
        .copy_from(&f, &mut out)
        .is_err());
        assert!(Rect {
            x: 0,
            y: 0,
            w: 0,
            h: 1
        }
        .copy_from(&f, &mut out)
        .is_err());
        let e = Rect {
            x: u32::MAX,
            y: 0,
            w: 2,
            h: 1,
        }
        .copy_from(&f, &mut out)
        .unwrap_err();
        assert!(e.to_string().contains("does not fit a 4x3 frame"), "{e}");
    }

    #[test]
    fn smoothing_means_the_last_frames() {
        let mut s = Smoother::new(1, 2);
        assert_eq!(s.push(&[0.9, 0.1]), &[0.9, 0.1]);
        let mut s = Smoother::new(3, 2);
        assert_eq!(s.push(&[1.0, 0.0]), &[1.0, 0.0]);
        assert_eq!(s.push(&[0.0, 1.0]), &[0.5, 0.5]);
        s.push(&[0.0, 1.0]);
        let m = s.push(&[0.0, 1.0]).to_vec();
        assert_eq!(m, vec![0.0, 1.0], "the first frame left the window");
        s.clear();
        assert_eq!(s.frames(), 0);
        assert_eq!(s.push(&[0.25, 0.75]), &[0.25, 0.75]);
        assert_eq!(Smoother::new(1000, 2).window(), MAX_SMOOTH);
    }
}
