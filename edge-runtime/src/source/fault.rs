//! `fault:SCRIPT`: a source that misbehaves on purpose, to test that the run loop
//! survives what cameras do on a production line. It draws synthetic frames and follows a
//! script of steps, then delivers good frames forever:
//!
//! | step | what the loop sees |
//! |---|---|
//! | `ok=N` | N good frames |
//! | `wrong-size=N` | N frames whose buffer is shorter than width x height x 3 |
//! | `undecodable=N` | N [`SourceError::BadFrame`] errors (a frame that cannot be decoded) |
//! | `vanish=K` | [`SourceError::Gone`], then K failed opens; the next open succeeds and the device comes back under a new index |
//! | `stall` | no frame at all ([`Next::Idle`]) until the source is reopened |
//!
//! Example: `fault:ok=20,wrong-size=2,undecodable=2,vanish=3,ok=10,stall,ok=10`.
//! The type is always compiled (the integration tests use it); `--source fault:...` on the
//! command line needs the `fault-source` cargo feature.

use super::synthetic::SyntheticSource;
use super::{Frame, FrameSource, Next, SourceError};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultStep {
    Ok(u64),
    WrongSize(u64),
    Undecodable(u64),
    Vanish(u32),
    Stall,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    pub steps: Vec<FaultStep>,
}

impl FaultPlan {
    /// Parses `ok=20,wrong-size=2,undecodable=1,vanish=3,stall,...`.
    pub fn parse(script: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        for part in script.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (part, None),
            };
            let count = |v: Option<&str>| -> Result<u64, String> {
                v.ok_or_else(|| format!("step `{part}` needs a count (`{key}=N`)"))?
                    .parse::<u64>()
                    .map_err(|_| format!("step `{part}`: the count must be a whole number"))
            };
            steps.push(match key {
                "ok" => FaultStep::Ok(count(value)?),
                "wrong-size" => FaultStep::WrongSize(count(value)?),
                "undecodable" => FaultStep::Undecodable(count(value)?),
                "vanish" => FaultStep::Vanish(
                    u32::try_from(count(value)?)
                        .map_err(|_| format!("step `{part}`: too many failed opens"))?,
                ),
                "stall" if value.is_none() => FaultStep::Stall,
                _ => {
                    return Err(format!(
                        "unknown step `{part}`: expected ok=N, wrong-size=N, undecodable=N, vanish=K or stall"
                    ))
                }
            });
        }
        Ok(FaultPlan { steps })
    }
}

pub struct FaultSource {
    name: String,
    inner: SyntheticSource,
    steps: Vec<FaultStep>,
    /// Index of the current step and how much of it is used.
    pos: usize,
    used: u64,
    is_open: bool,
    stalled: bool,
    failing_opens: u32,
    device_index: u32,
    opens: u64,
}

impl FaultSource {
    pub fn new(plan: FaultPlan, size: (u32, u32)) -> Self {
        FaultSource {
            name: "fault".into(),
            inner: SyntheticSource::new(size, None, false),
            steps: plan.steps,
            pos: 0,
            used: 0,
            is_open: false,
            stalled: false,
            failing_opens: 0,
            device_index: 0,
            opens: 0,
        }
    }

    /// The device index it is found under now (changes each time it comes back).
    pub fn device_index(&self) -> u32 {
        self.device_index
    }

    /// Open attempts so far, failed ones included.
    pub fn open_attempts(&self) -> u64 {
        self.opens
    }

    /// True once every scripted step has been played.
    pub fn script_done(&self) -> bool {
        self.pos >= self.steps.len()
    }

    fn advance(&mut self) {
        self.pos += 1;
        self.used = 0;
    }

    /// Uses one unit of a counted step; moves on when it is spent.
    fn use_one(&mut self, n: u64) {
        self.used += 1;
        if self.used >= n {
            self.advance();
        }
    }
}

impl FrameSource for FaultSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.opens += 1;
        if self.failing_opens > 0 {
            self.failing_opens -= 1;
            return Err(SourceError::Open {
                name: self.name.clone(),
                reason: "no such device (injected)".into(),
            });
        }
        self.inner.open()?;
        self.is_open = true;
        self.stalled = false;
        Ok(())
    }

    fn next(&mut self, wait: Duration) -> Result<Next<'_>, SourceError> {
        if !self.is_open {
            return Err(SourceError::Gone {
                name: self.name.clone(),
                reason: "not open".into(),
            });
        }
        if self.stalled {
            std::thread::sleep(wait);
            return Ok(Next::Idle);
        }
        // Skip counted steps of zero.
        while let Some(FaultStep::Ok(0) | FaultStep::WrongSize(0) | FaultStep::Undecodable(0)) =
            self.steps.get(self.pos)
        {
            self.advance();
        }
        match self.steps.get(self.pos).copied() {
            None => Ok(Next::Frame(self.inner.produce(0))),
            Some(FaultStep::Ok(n)) => {
                self.use_one(n);
                Ok(Next::Frame(self.inner.produce(0)))
            }
            Some(FaultStep::WrongSize(n)) => {
                self.use_one(n);
                let f = self.inner.produce(0);
                let short = f.rgb.len().saturating_sub(7);
                Ok(Next::Frame(Frame {
                    rgb: &f.rgb[..short],
                    ..f
                }))
            }
            Some(FaultStep::Undecodable(n)) => {
                self.use_one(n);
                Err(SourceError::BadFrame {
                    name: self.name.clone(),
                    reason: "corrupt frame data (injected)".into(),
                })
            }
            Some(FaultStep::Vanish(k)) => {
                self.advance();
                self.is_open = false;
                self.failing_opens = k;
                self.device_index += 1;
                Err(SourceError::Gone {
                    name: self.name.clone(),
                    reason: "device unplugged (injected)".into(),
                })
            }
            Some(FaultStep::Stall) => {
                self.advance();
                self.stalled = true;
                std::thread::sleep(wait);
                Ok(Next::Idle)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_or_say_why_not() {
        let p = FaultPlan::parse("ok=3, wrong-size=1,undecodable=2,vanish=4,stall").unwrap();
        assert_eq!(
            p.steps,
            vec![
                FaultStep::Ok(3),
                FaultStep::WrongSize(1),
                FaultStep::Undecodable(2),
                FaultStep::Vanish(4),
                FaultStep::Stall
            ]
        );
        assert!(FaultPlan::parse("ok")
            .unwrap_err()
            .contains("needs a count"));
        assert!(FaultPlan::parse("explode=1")
            .unwrap_err()
            .contains("unknown step"));
        assert!(FaultPlan::parse("ok=x")
            .unwrap_err()
            .contains("whole number"));
    }

    #[test]
    fn plays_its_script() {
        let plan = FaultPlan::parse("ok=1,wrong-size=1,undecodable=1,vanish=1,stall").unwrap();
        let mut s = FaultSource::new(plan, (8, 8));
        assert!(matches!(
            s.next(Duration::ZERO),
            Err(SourceError::Gone { .. })
        ));
        s.open().unwrap();
        assert!(matches!(s.next(Duration::ZERO), Ok(Next::Frame(f)) if f.is_well_formed()));
        assert!(matches!(s.next(Duration::ZERO), Ok(Next::Frame(f)) if !f.is_well_formed()));
        assert!(matches!(
            s.next(Duration::ZERO),
            Err(SourceError::BadFrame { .. })
        ));
        assert!(matches!(
            s.next(Duration::ZERO),
            Err(SourceError::Gone { .. })
        ));
        assert!(s.open().is_err());
        s.open().unwrap();
        assert_eq!(s.device_index(), 1);
        assert!(matches!(s.next(Duration::ZERO), Ok(Next::Idle)));
        assert!(matches!(s.next(Duration::ZERO), Ok(Next::Idle)));
        s.open().unwrap();
        assert!(s.script_done());
        assert!(matches!(s.next(Duration::ZERO), Ok(Next::Frame(_))));
    }
}
