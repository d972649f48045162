//! `synthetic[:FPS]`: generated frames, drawn into one reused buffer (no allocation after
//! the first frame). The picture is a gradient with a bright square that moves with the
//! frame number, so consecutive frames differ and the model sees changing input.

use super::{Frame, FrameSource, Next, Pacer, SourceError};
use std::time::Duration;

pub struct SyntheticSource {
    name: String,
    width: u32,
    height: u32,
    buf: Vec<u8>,
    seq: u64,
    pacer: Pacer,
}

impl SyntheticSource {
    pub fn new((width, height): (u32, u32), fps: Option<f64>, every_frame: bool) -> Self {
        let name = match fps {
            Some(f) => format!("synthetic:{f}"),
            None => "synthetic".to_string(),
        };
        SyntheticSource {
            name,
            width,
            height,
            buf: Vec::new(),
            seq: 0,
            pacer: Pacer::new(fps, every_frame),
        }
    }

    /// Draws frame `seq` into the buffer.
    fn draw(&mut self, seq: u64) {
        let (w, h) = (self.width as usize, self.height as usize);
        self.buf.resize(w * h * 3, 0);
        let shift = (seq % 256) as u8;
        let side = (w.min(h) / 4).max(1);
        let sx = (seq as usize * 3) % w.max(1);
        let sy = (seq as usize * 2) % h.max(1);
        for (y, row) in self.buf.chunks_exact_mut(w * 3).enumerate() {
            let gy = (y * 255 / h.max(1)) as u8;
            let in_rows = y >= sy && y < sy + side;
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                if in_rows && x >= sx && x < sx + side {
                    px.copy_from_slice(&[250, 250, 240]);
                } else {
                    let gx = (x * 255 / w.max(1)) as u8;
                    px[0] = gx.wrapping_add(shift);
                    px[1] = gy;
                    px[2] = gx ^ gy;
                }
            }
        }
    }

    /// The next frame regardless of the clock (for the fault source).
    pub(crate) fn produce(&mut self, dropped: u64) -> Frame<'_> {
        self.seq += dropped;
        let seq = self.seq;
        self.draw(seq);
        self.seq += 1;
        Frame {
            seq,
            width: self.width,
            height: self.height,
            rgb: &self.buf,
            dropped,
        }
    }
}

impl FrameSource for SyntheticSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&mut self) -> Result<(), SourceError> {
        if self.width == 0 || self.height == 0 {
            return Err(SourceError::Open {
                name: self.name.clone(),
                reason: format!("frame size {}x{} is empty", self.width, self.height),
            });
        }
        self.pacer.restart();
        Ok(())
    }

    fn next(&mut self, wait: Duration) -> Result<Next<'_>, SourceError> {
        match self.pacer.wait_due(wait) {
            None => Ok(Next::Idle),
            Some(dropped) => Ok(Next::Frame(self.produce(dropped))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_well_formed_and_change() {
        let mut s = SyntheticSource::new((32, 24), None, false);
        s.open().unwrap();
        let first = match s.next(Duration::ZERO).unwrap() {
            Next::Frame(f) => {
                assert!(f.is_well_formed());
                assert_eq!((f.seq, f.dropped), (0, 0));
                f.rgb.to_vec()
            }
            other => panic!("{other:?}"),
        };
        match s.next(Duration::ZERO).unwrap() {
            Next::Frame(f) => {
                assert_eq!(f.seq, 1);
                assert_ne!(f.rgb, &first[..]);
            }
            other => panic!("{other:?}"),
        }
    }
}
