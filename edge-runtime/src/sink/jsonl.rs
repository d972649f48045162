//! JSON lines to stdout or to a file rotated by size (`PATH`, `PATH.1` ... `PATH.N`,
//! oldest last). Each line is serialized into one reused buffer and written with a single
//! `write` call, so lines from a crash are whole or absent, and steady state allocates
//! nothing (a rotation, rare by design, does).

use super::Record;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the lines go (`--sink`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkSpec {
    /// `jsonl:-`
    Stdout,
    /// `jsonl:PATH`
    File { path: PathBuf },
    /// `none`: decisions are only counted (benchmarks, store-only runs).
    None,
}

impl SinkSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "jsonl:-" => Ok(SinkSpec::Stdout),
            "none" => Ok(SinkSpec::None),
            _ => match s.strip_prefix("jsonl:") {
                Some(p) if !p.is_empty() => Ok(SinkSpec::File { path: p.into() }),
                _ => Err(format!(
                    "unknown sink `{s}`: expected jsonl:- (stdout), jsonl:PATH or none"
                )),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write decisions to `{target}`: {source}")]
pub struct SinkError {
    pub target: String,
    pub source: std::io::Error,
}

impl SinkError {
    /// The reader went away (`| head`): the run should end, not retry.
    pub fn is_broken_pipe(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::BrokenPipe
    }
}

enum Target {
    Stdout,
    File { path: PathBuf, file: File },
    Null,
}

pub struct JsonlSink {
    target: Target,
    line: Vec<u8>,
    /// Bytes in the current file.
    written: u64,
    rotate_bytes: u64,
    keep: usize,
}

impl JsonlSink {
    /// Opens the sink; a file is appended to. `rotate_bytes` 0 never rotates; `keep` is
    /// how many rotated files (`PATH.1`...) are kept.
    pub fn open(spec: &SinkSpec, rotate_bytes: u64, keep: usize) -> Result<Self, SinkError> {
        let (target, written) = match spec {
            SinkSpec::Stdout => (Target::Stdout, 0),
            SinkSpec::None => (Target::Null, 0),
            SinkSpec::File { path } => {
                let file = open_append(path)?;
                let written = file.metadata().map(|m| m.len()).unwrap_or(0);
                (
                    Target::File {
                        path: path.clone(),
                        file,
                    },
                    written,
                )
            }
        };
        Ok(JsonlSink {
            target,
            line: Vec::with_capacity(4096),
            written,
            rotate_bytes,
            keep,
        })
    }

    fn target_name(&self) -> String {
        match &self.target {
            Target::Stdout => "stdout".into(),
            Target::File { path, .. } => path.display().to_string(),
            Target::Null => "none".into(),
        }
    }

    fn err(&self, source: std::io::Error) -> SinkError {
        SinkError {
            target: self.target_name(),
            source,
        }
    }

    /// Writes one line.
    pub fn write(&mut self, rec: &Record) -> Result<(), SinkError> {
        if matches!(self.target, Target::Null) {
            return Ok(());
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, rec)
            .map_err(|e| self.err(std::io::Error::other(e)))?;
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if self.rotate_bytes > 0 && self.written > 0 && self.written + len > self.rotate_bytes {
            self.rotate()?;
        }
        let result = match &mut self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&self.line).and_then(|()| out.flush())
            }
            Target::File { file, .. } => file.write_all(&self.line),
            Target::Null => Ok(()),
        };
        result.map_err(|e| self.err(e))?;
        self.written += len;
        Ok(())
    }

    /// Flushes and, for a file, fsyncs (at shutdown).
    pub fn flush(&mut self) -> Result<(), SinkError> {
        let result = match &mut self.target {
            Target::Stdout => std::io::stdout().lock().flush(),
            Target::File { file, .. } => file.flush().and_then(|()| file.sync_data()),
            Target::Null => Ok(()),
        };
        result.map_err(|e| self.err(e))
    }

    /// `PATH.{keep-1}` -> `PATH.{keep}`, ..., `PATH` -> `PATH.1`, then a fresh `PATH`.
    fn rotate(&mut self) -> Result<(), SinkError> {
        let Target::File { path, file } = &mut self.target else {
            return Ok(());
        };
        let path = path.clone();
        let io = |source| SinkError {
            target: path.display().to_string(),
            source,
        };
        file.sync_data().map_err(io)?;
        if self.keep == 0 {
            std::fs::remove_file(&path).map_err(io)?;
        } else {
            for i in (1..self.keep).rev() {
                let from = rotated(&path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&path, i + 1)).map_err(io)?;
                }
            }
            std::fs::rename(&path, rotated(&path, 1)).map_err(io)?;
        }
        *file = open_append(&path)?;
        self.written = 0;
        tracing::info!(path = %path.display(), "decision log rotated");
        Ok(())
    }
}

/// The name of the `i`-th rotated file of `path` (`PATH.i`).
pub(crate) fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> Result<File, SinkError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SinkError {
            target: path.display().to_string(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| SinkError {
            target: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::TopK;

    fn record<'a>(frame: u64, topk: &'a [TopK<'a>]) -> Record<'a> {
        Record {
            frame,
            seq: frame,
            time_unix_ms: 1,
            source: "synthetic",
            station: "a",
            model: "m",
            model_version: "1",
            label: "bolt",
            accepted: true,
            uncertain: false,
            score: 0.75,
            margin: 0.5,
            topk,
            smoothed_frames: 1,
            latency_ms: 1.5,
        }
    }

    #[test]
    fn specs() {
        assert_eq!(SinkSpec::parse("jsonl:-").unwrap(), SinkSpec::Stdout);
        assert_eq!(
            SinkSpec::parse("jsonl:/x/y.jsonl").unwrap(),
            SinkSpec::File {
                path: "/x/y.jsonl".into()
            }
        );
        assert!(SinkSpec::parse("jsonl:").is_err());
        assert!(SinkSpec::parse("csv:-").is_err());
    }

    #[test]
    fn lines_rotate_by_size_and_keep_n_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("logs/decisions.jsonl");
        let topk = [TopK {
            label: "bolt",
            score: 0.75,
        }];
        let one = serde_json::to_vec(&record(0, &topk)).unwrap().len() as u64 + 1;
        let mut sink = JsonlSink::open(&SinkSpec::File { path: path.clone() }, 3 * one, 2).unwrap();
        for i in 0..10 {
            sink.write(&record(i, &topk)).unwrap();
        }
        sink.flush().unwrap();
        let read = |p: &Path| -> Vec<serde_json::Value> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let frames = |p: &Path| -> Vec<u64> {
            read(p)
                .iter()
                .map(|v| v["frame"].as_u64().unwrap())
                .collect()
        };
        // Frames 9 (current), 6-8 (.1), 3-5 (.2); 0-2 were rotated out.
        assert_eq!(frames(&path), vec![9]);
        assert_eq!(frames(&rotated(&path, 1)), vec![6, 7, 8]);
        assert_eq!(frames(&rotated(&path, 2)), vec![3, 4, 5]);
        assert!(!rotated(&path, 3).exists());
        let v = &read(&path)[0];
        assert_eq!(v["topk"][0]["label"], "bolt");
        assert_eq!(v["latency_ms"], 1.5);
    }
}
