//! The answer log, which is also the cache: append-only JSONL, one [`Record`] per answer.
//!
//! Guarantees:
//! - A record is appended with one `write` of the whole line and made durable with
//!   `fsync` (`sync_data`) before the caller counts the answer as done. A batch of records
//!   finished together shares one `fsync`; none is reported done before it.
//! - A run killed at any moment loses at most the answers of the batch being written: they
//!   are asked again on the next run (a call is spent twice, nothing is duplicated). A torn
//!   last line (no trailing newline) is repaired on open: kept when it is a complete record,
//!   cut off otherwise, and reported either way.
//! - A file that is not a log (not empty, no record, not starting like one: an image or a
//!   manifest given as `--out` by mistake) is refused and left untouched.
//! - One writer at a time: the log file is locked (advisory, released by the OS when the
//!   process dies, SIGKILL included).
//! - Answers are looked up by [`CacheKey`]: image sha256, model, prompt sha256, sampling
//!   parameters, round and sample index. The endpoint is recorded but is not part of the
//!   key (the same model served elsewhere answers the same question). When a key appears
//!   more than once (only after `--retry-malformed`), the last line wins.

use super::answer::{Status, Usage};
use super::prompt::{sha256_hex, Context1};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Version of the record layout written into every line as `v`.
pub const RECORD_VERSION: u32 = 1;

/// Which question a record answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Round {
    /// Round 1: category, expert and granularity, asked on a few images.
    Category,
    /// Round 2: the most specific name, asked once per image (per sample).
    Name,
}

impl Round {
    pub fn as_str(self) -> &'static str {
        match self {
            Round::Category => "category",
            Round::Name => "name",
        }
    }
}

/// Sampling parameters sent with every request; part of the cache key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub temperature: f64,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            temperature: 0.0,
            max_tokens: 512,
            top_p: None,
        }
    }
}

/// What identifies an answer in the cache.
#[derive(Debug, Clone)]
pub struct CacheKey<'a> {
    pub round: Round,
    pub image_sha256: &'a str,
    pub model: &'a str,
    pub prompt_sha256: &'a str,
    pub params: &'a Params,
    /// Index of the sampled answer (0 for the first; more with sampling).
    pub sample: u32,
}

impl CacheKey<'_> {
    /// The sha256 hex of the key fields (what the log's `key` holds).
    pub fn digest(&self) -> String {
        let params = serde_json::to_string(self.params).unwrap_or_default();
        sha256_hex(
            format!(
                "linesight-label-key/1\n{}\n{}\n{}\n{}\n{}\n{}",
                self.round.as_str(),
                self.image_sha256,
                self.model,
                self.prompt_sha256,
                params,
                self.sample
            )
            .as_bytes(),
        )
    }
}

/// One answer: one line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Record layout version ([`RECORD_VERSION`]).
    pub v: u32,
    pub round: Round,
    /// [`CacheKey::digest`] of this record's key fields.
    pub key: String,
    /// Image path relative to the images folder.
    pub path: String,
    pub image_sha256: String,
    #[serde(default)]
    pub sample: u32,
    /// The base URL the image was sent to (the audit record of where images went).
    pub endpoint: String,
    pub model: String,
    /// sha256 of the prompt text as sent.
    pub prompt_sha256: String,
    pub params: Params,
    pub status: Status,
    /// The parsed name (round 2, usable answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The parsed context (round 1, usable answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context1>,
    /// Why the answer is refused or malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The answer text as received (for a garbled body, the body).
    pub raw: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The model the server says answered, when it differs from `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    /// Duration of the answering HTTP request.
    pub latency_ms: f64,
    /// HTTP requests made for this answer (1 = no retry).
    pub attempts: u32,
    pub usage: Option<Usage>,
    /// When the answer arrived, RFC 3339 UTC.
    pub time: String,
}

impl Record {
    /// The key this record answers, recomputed from its fields.
    pub fn cache_key(&self) -> String {
        CacheKey {
            round: self.round,
            image_sha256: &self.image_sha256,
            model: &self.model,
            prompt_sha256: &self.prompt_sha256,
            params: &self.params,
            sample: self.sample,
        }
        .digest()
    }
}

/// What reading a log found besides records.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Repair {
    /// A last line without its newline was found (the previous run was killed mid-write).
    pub torn_last_line: bool,
    /// Bytes of a torn last line that was not a complete record and was cut off.
    pub torn_bytes_dropped: usize,
    /// Lines that are not records (neither JSON nor the record layout); skipped.
    pub corrupt_lines: usize,
}

/// Reads every record of a log without locking or repairing it.
/// Fails when the file cannot be read.
pub fn read(path: &Path) -> Result<(Vec<Record>, Repair)> {
    let bytes = fs_err::read(path).context("cannot read the answer log")?;
    let (records, repair, _) = parse(&bytes, path);
    Ok((records, repair))
}

/// Parses log bytes. Returns the records, what was found, and the byte length of the
/// part to keep (everything up to the last good line's newline, or a complete torn line).
fn parse(bytes: &[u8], path: &Path) -> (Vec<Record>, Repair, KeepTail) {
    let mut records = Vec::new();
    let mut repair = Repair::default();
    let mut pos = 0;
    let mut tail = KeepTail::Whole;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let (line, next, complete) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(n) => (&bytes[pos..pos + n], pos + n + 1, true),
            None => (&bytes[pos..], bytes.len(), false),
        };
        let parsed = std::str::from_utf8(line)
            .ok()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(serde_json::from_str::<Record>);
        if !complete {
            repair.torn_last_line = true;
            match parsed {
                Some(Ok(r)) => {
                    records.push(r);
                    tail = KeepTail::AddNewline;
                }
                _ => {
                    repair.torn_bytes_dropped = line.len();
                    tail = KeepTail::CutAt(pos);
                }
            }
        } else {
            match parsed {
                Some(Ok(r)) => records.push(r),
                Some(Err(e)) => {
                    repair.corrupt_lines += 1;
                    tracing::warn!(log = %path.display(), line = line_no, error = %e, "skipping a line that is not an answer record");
                }
                None if line.iter().all(u8::is_ascii_whitespace) => {}
                None => {
                    repair.corrupt_lines += 1;
                    tracing::warn!(log = %path.display(), line = line_no, "skipping a line that is not UTF-8");
                }
            }
        }
        pos = next;
    }
    (records, repair, tail)
}

/// How to leave the end of the file after reading.
enum KeepTail {
    Whole,
    /// The torn last line is a complete record: add its newline.
    AddNewline,
    /// The torn last line starts at this offset and is cut off.
    CutAt(usize),
}

/// An open, locked answer log and its index.
pub struct Log {
    path: PathBuf,
    file: std::fs::File,
    records: Vec<Record>,
    index: HashMap<String, usize>,
    repair: Repair,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("path", &self.path)
            .field("records", &self.records.len())
            .finish()
    }
}

impl Log {
    /// Opens (or creates) the log at `path`, locks it, reads it and repairs a torn last
    /// line. Fails when the file cannot be created, read or locked (another run holds it).
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs_err::create_dir_all(dir).context("cannot create the answer log's folder")?;
        }
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open the answer log `{}`", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                bail!(
                    "another run is writing the answer log `{}`; wait for it or use another --out",
                    path.display()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e)
                    .with_context(|| format!("cannot lock the answer log `{}`", path.display()))
            }
        }
        if !existed {
            sync_parent(path);
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the answer log `{}`", path.display()))?;
        let (records, repair, tail) = parse(&bytes, path);
        // A file that is not empty, holds no record and does not start like one (a torn
        // first record) is not a log: repairing it would cut its tail and appending would
        // corrupt it (an image, a manifest or refined.json given as --out by mistake).
        if !bytes.is_empty() && records.is_empty() && !bytes.starts_with(b"{\"v\":") {
            bail!(
                "`{}` is not an answer log written by `label` (it holds no answer record); \
                 it is left as it is: give --out a new file or an existing answer log",
                path.display()
            );
        }
        match tail {
            KeepTail::Whole => {}
            KeepTail::AddNewline => {
                file.write_all(b"\n")?;
                file.sync_data()?;
                tracing::warn!(log = %path.display(), "the last line had no newline (a run was killed while writing); it is complete and kept");
            }
            KeepTail::CutAt(at) => {
                file.set_len(at as u64).with_context(|| {
                    format!("cannot cut the torn last line of `{}`", path.display())
                })?;
                file.sync_data()?;
                tracing::warn!(
                    log = %path.display(),
                    bytes = repair.torn_bytes_dropped,
                    "cut off a torn last line (a run was killed while writing it); that answer is asked again"
                );
            }
        }
        let mut index = HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            index.insert(r.cache_key(), i);
        }
        Ok(Log {
            path: path.to_path_buf(),
            file,
            records,
            index,
            repair,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening found and repaired.
    pub fn repair(&self) -> &Repair {
        &self.repair
    }

    /// All records, in file order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The answer for a key (the last one when there are several).
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.index.get(key).map(|&i| &self.records[i])
    }

    /// Appends records (one `write` for all lines, then one `fsync`). When this returns
    /// `Ok`, every record is durable. Fails on a write or sync error.
    pub fn append(&mut self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 512);
        for r in &records {
            serde_json::to_writer(&mut buf, r).context("cannot serialize an answer record")?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).with_context(|| {
            format!("cannot append to the answer log `{}`", self.path.display())
        })?;
        self.file
            .sync_data()
            .with_context(|| format!("cannot fsync the answer log `{}`", self.path.display()))?;
        for r in records {
            self.index.insert(r.key.clone(), self.records.len());
            self.records.push(r);
        }
        Ok(())
    }
}

/// Makes a newly created file's directory entry durable (best effort).
fn sync_parent(path: &Path) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Now as RFC 3339 UTC with milliseconds, e.g. `2026-05-01T12:00:00.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_250)),
            "2000-02-29T00:00:00.250Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn keys_differ_by_every_field() {
        let p = Params::default();
        let base = CacheKey {
            round: Round::Name,
            image_sha256: "a",
            model: "m",
            prompt_sha256: "p",
            params: &p,
            sample: 0,
        };
        let hot = Params {
            temperature: 0.7,
            ..Params::default()
        };
        let variants = [
            CacheKey {
                round: Round::Category,
                ..base.clone()
            },
            CacheKey {
                image_sha256: "b",
                ..base.clone()
            },
            CacheKey {
                model: "n",
                ..base.clone()
            },
            CacheKey {
                prompt_sha256: "q",
                ..base.clone()
            },
            CacheKey {
                params: &hot,
                ..base.clone()
            },
            CacheKey {
                sample: 1,
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.digest(), base.digest());
        }
        assert_eq!(base.digest(), base.clone().digest());
    }
}
