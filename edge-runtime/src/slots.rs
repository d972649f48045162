//! Models on the box: numbered slots under a root folder, and the `current` / `previous`
//! pointers.
//!
//! ```text
//! ROOT/                       default /var/lib/linesight (or $LINESIGHT_ROOT, or --root)
//!   slots/0001/model.lsb      an installed bundle, never changed after its slot is named
//!   slots/0001/install.json   what was installed when, signed by which key
//!   slots/.0002.partial/      an install in progress (ignored, removed by the next install)
//!   current                   pointer file: the slot name (`0001`) and a newline
//!   previous                  pointer file: the slot that was current before
//!   trusted-keys/*.pub        public keys this box accepts bundles from
//! ```
//!
//! Every change is crash-safe: a slot is written under a `.partial` name, fsynced, renamed
//! into place and its parent fsynced; a pointer is written to `NAME.tmp`, fsynced, renamed
//! over `NAME` and the root fsynced. A power cut at any step leaves `current` pointing at
//! a complete slot (the old one or the new one).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Environment variable naming the models root (overridden by `--root`).
pub const ROOT_ENV: &str = "LINESIGHT_ROOT";
/// The models root when neither `--root` nor `LINESIGHT_ROOT` is given.
pub const DEFAULT_ROOT: &str = "/var/lib/linesight";
pub const MODEL_FILE: &str = "model.lsb";
pub const INFO_FILE: &str = "install.json";
pub const CURRENT: &str = "current";
pub const PREVIOUS: &str = "previous";
pub const TRUSTED_KEYS_DIR: &str = "trusted-keys";

/// `--root` > `LINESIGHT_ROOT` > `/var/lib/linesight`.
pub fn resolve_root(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os(ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// What `install` records beside each slot's bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlotInfo {
    pub model_id: String,
    pub model_version: String,
    /// Signer's key fingerprint, or `unsigned`.
    pub signature: String,
    /// Seconds since the Unix epoch.
    pub installed_unix: u64,
    /// sha256 of the bundle file.
    pub bundle_sha256: String,
    pub bundle_bytes: u64,
    /// Where the bundle was installed from.
    pub source: String,
}

/// The slots folder of a root.
pub fn slots_dir(root: &Path) -> PathBuf {
    root.join("slots")
}

/// The folder of slot `name` (e.g. `0001`).
pub fn slot_dir(root: &Path, name: &str) -> PathBuf {
    slots_dir(root).join(name)
}

/// The bundle file of slot `name`.
pub fn slot_model(root: &Path, name: &str) -> PathBuf {
    slot_dir(root, name).join(MODEL_FILE)
}

/// Slot names (`0001`, `0002`, ...) present under `root`, ascending. Partial slots are not
/// listed.
pub fn list(root: &Path) -> std::io::Result<Vec<String>> {
    let dir = slots_dir(root);
    let mut names = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let name = e?.file_name().to_string_lossy().into_owned();
                if slot_number(&name).is_some() {
                    names.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// `0007` -> 7; anything else (partial folders, stray files) -> None.
pub fn slot_number(name: &str) -> Option<u32> {
    (name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// The name of the slot after every existing (or partial) one.
pub fn next_name(root: &Path) -> std::io::Result<String> {
    let mut max = 0;
    if let Ok(rd) = std::fs::read_dir(slots_dir(root)) {
        for e in rd {
            let name = e?.file_name().to_string_lossy().into_owned();
            let base = name.trim_start_matches('.').trim_end_matches(".partial");
            if let Some(n) = slot_number(base) {
                max = max.max(n);
            }
        }
    }
    Ok(format!("{:04}", max + 1))
}

/// Reads a pointer (`current` or `previous`); None when absent or not naming a slot.
pub fn read_pointer(root: &Path, which: &str) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(root.join(which)) {
        Ok(s) => {
            let name = s.trim().to_string();
            Ok(slot_number(&name).map(|_| name))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a slot's `install.json`.
pub fn read_info(root: &Path, name: &str) -> Result<SlotInfo, String> {
    let path = slot_dir(root, name).join(INFO_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("cannot parse `{}`: {e}", path.display()))
}

/// Fault injection for crash-safety tests: a step name at which a write sequence stops as
/// if the power had gone (no cleanup runs), and how. `None` in production.
pub type FaultAt<'a> = Option<(&'a str, FaultMode)>;

/// What happens at the selected fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// The write sequence returns `Err(Fault)` (in-process tests; no cleanup runs).
    Stop,
    /// The process sends itself SIGKILL: nothing after that point runs, not even a
    /// destructor (the real binary under `LINESIGHT_FAULT_KILL`, see
    /// [`crate::commands::install::FAULT_KILL_ENV`]).
    Kill,
}

/// An injected stop at `step`.
#[derive(Debug)]
pub struct Fault(pub String);

/// Steps of [`write_pointer`], in order (prefixed by the pointer name, e.g. `current:rename`).
pub const POINTER_STEPS: [&str; 4] = ["write", "fsync", "rename", "fsync-dir"];

/// Returns `Err(Fault)` (or dies of SIGKILL) when `fault_at` names `step`.
pub fn fault_point(fault_at: FaultAt, step: &str) -> Result<(), Fault> {
    // Where an install is (the power-cut box test reads it off the console).
    tracing::debug!(step, "install step");
    match fault_at {
        Some((f, FaultMode::Stop)) if f == step => Err(Fault(step.to_string())),
        Some((f, FaultMode::Kill)) if f == step => {
            // SAFETY: signalling our own process; SIGKILL cannot be caught, so this never
            // returns.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            unreachable!("SIGKILL did not end the process")
        }
        _ => Ok(()),
    }
}

/// Error of a crash-safe write: IO (naming the path) or an injected fault.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("stopped at fault point `{0}` (test hook)")]
    Fault(String),
}

impl From<Fault> for WriteError {
    fn from(f: Fault) -> Self {
        WriteError::Fault(f.0)
    }
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// fsyncs a folder so a rename or a new entry in it survives a power cut.
pub fn fsync_dir(dir: &Path) -> Result<(), WriteError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))
}

/// Points `which` (`current` / `previous`) at slot `name`: write `which.tmp`, fsync,
/// rename over `which`, fsync the root. Fault steps are `{which}:{step}`.
pub fn write_pointer(
    root: &Path,
    which: &str,
    name: &str,
    fault_at: FaultAt,
) -> Result<(), WriteError> {
    let dst = root.join(which);
    let tmp = root.join(format!("{which}.tmp"));
    let step = |s: &str| fault_point(fault_at, &format!("{which}:{s}"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
        step("write")?;
        f.write_all(format!("{name}\n").as_bytes())
            .map_err(io_at(&tmp))?;
        step("fsync")?;
        f.sync_all().map_err(io_at(&tmp))?;
    }
    step("rename")?;
    std::fs::rename(&tmp, &dst).map_err(io_at(&dst))?;
    step("fsync-dir")?;
    fsync_dir(root)
}

/// Free bytes available to this user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
    })?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_pointers() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(next_name(d.path()).unwrap(), "0001");
        std::fs::create_dir_all(slots_dir(d.path()).join("0003")).unwrap();
        std::fs::create_dir_all(slots_dir(d.path()).join(".0004.partial")).unwrap();
        assert_eq!(list(d.path()).unwrap(), vec!["0003"]);
        assert_eq!(next_name(d.path()).unwrap(), "0005");
        assert_eq!(read_pointer(d.path(), CURRENT).unwrap(), None);
        write_pointer(d.path(), CURRENT, "0003", None).unwrap();
        assert_eq!(
            read_pointer(d.path(), CURRENT).unwrap().as_deref(),
            Some("0003")
        );
        assert!(matches!(
            write_pointer(
                d.path(),
                CURRENT,
                "0004",
                Some(("current:rename", FaultMode::Stop))
            ),
            Err(WriteError::Fault(_))
        ));
        assert_eq!(
            read_pointer(d.path(), CURRENT).unwrap().as_deref(),
            Some("0003")
        );
        assert!(free_bytes(d.path()).unwrap() > 0);
    }
}
