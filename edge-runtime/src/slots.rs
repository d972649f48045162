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
//!   .lock                     held (flock) by the command changing the root
//! ```
//!
//! Every change is crash-safe: a slot is written under a `.partial` name, fsynced, renamed
//! into place and its parent fsynced; a pointer is written to `NAME.tmp`, fsynced, renamed
//! over `NAME` and the root fsynced. A power cut at any step leaves `current` pointing at
//! a complete slot (the old one or the new one).
//!
//! Two processes never change a root at once: every command that does (`install`,
//! `rollback`) holds [`RootLock`] while it reads the pointers, names a slot and writes.
//! A slot's `install.json` is a record, not a proof: whoever shows or switches to a slot
//! checks the record against the bundle it describes ([`check_record`]).
//!
//! A pointer that is damaged (empty, not text, not a slot name, or naming a slot that is
//! not there) is a [`PointerError`] naming the file and what is wrong, never "no model".

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

/// A pointer file that does not name an installed slot. Each message names the file and
/// what is wrong; [`PointerError::repair_hint`] says what to run.
#[derive(Debug, thiserror::Error)]
pub enum PointerError {
    #[error("cannot read the pointer file `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the pointer file `{path}` is empty; it should name a slot (e.g. `0001`)")]
    Empty { path: String },
    #[error("the pointer file `{path}` is not text (its first bytes are {bytes}); it should name a slot (e.g. `0001`)")]
    NotText { path: String, bytes: String },
    #[error("the pointer file `{path}` holds `{text}`, which is not a slot name (4 digits, e.g. `0001`)")]
    NotASlot { path: String, text: String },
    #[error("the pointer file `{path}` names slot {slot}, which is not installed (`{missing}` does not exist)")]
    MissingSlot {
        path: String,
        slot: String,
        missing: String,
    },
}

impl PointerError {
    /// What to run to repair a broken pointer of `root`.
    pub fn repair_hint(root: &Path) -> String {
        let r = root.display();
        format!("repair it with `linesight-edge rollback --root {r}` (switches to the previous slot, or the newest one that verifies; `--slot NNNN` picks one) or install a bundle with `linesight-edge install FILE --root {r}`; `linesight-edge status --root {r}` lists the slots")
    }
}

/// Reads a pointer (`current` or `previous`): `Ok(None)` when the file does not exist,
/// the slot name when it names an installed slot, else a [`PointerError`] saying what is
/// wrong with it.
pub fn read_pointer(root: &Path, which: &str) -> Result<Option<String>, PointerError> {
    let path = root.join(which);
    let shown = || path.display().to_string();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PointerError::Io {
                path: shown(),
                source,
            })
        }
    };
    let name = parse_pointer(&bytes).map_err(|problem| match problem {
        PointerProblem::Empty => PointerError::Empty { path: shown() },
        PointerProblem::NotText(bytes) => PointerError::NotText {
            path: shown(),
            bytes,
        },
        PointerProblem::NotASlot(text) => PointerError::NotASlot {
            path: shown(),
            text,
        },
    })?;
    let model = slot_model(root, &name);
    if !model.is_file() {
        return Err(PointerError::MissingSlot {
            path: shown(),
            slot: name,
            missing: model.display().to_string(),
        });
    }
    Ok(Some(name))
}

/// What is wrong with a pointer's bytes (see [`parse_pointer`]).
#[derive(Debug, PartialEq)]
enum PointerProblem {
    Empty,
    /// The first bytes, in hex.
    NotText(String),
    /// The text, shortened.
    NotASlot(String),
}

/// A pointer file's bytes -> the slot name it holds (`0001` and a newline, surrounding
/// whitespace allowed).
fn parse_pointer(bytes: &[u8]) -> Result<String, PointerProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        PointerProblem::NotText(
            bytes
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    })?;
    let name = text.trim();
    if name.is_empty() {
        return Err(PointerProblem::Empty);
    }
    if slot_number(name).is_none() {
        let short: String = name.chars().take(40).collect();
        let short = short.escape_debug().to_string();
        return Err(PointerProblem::NotASlot(if name.chars().count() > 40 {
            format!("{short}...")
        } else {
            short
        }));
    }
    Ok(name.to_string())
}

/// Reads a slot's `install.json`.
pub fn read_info(root: &Path, name: &str) -> Result<SlotInfo, String> {
    let path = slot_dir(root, name).join(INFO_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("cannot parse `{}`: {e}", path.display()))
}

/// Checks slot `name`'s record against `bytes`, its bundle file as read: size and sha256
/// must be the ones `install` recorded. Returns the record, or what does not match (the
/// record then describes another bundle, and nothing it says about the slot can be shown
/// or trusted).
pub fn check_record(root: &Path, name: &str, bytes: &[u8]) -> Result<SlotInfo, String> {
    let info = read_info(root, name)?;
    let got = hex::encode(linesight_shared::bundle::sha256(bytes));
    if info.bundle_sha256 != got || info.bundle_bytes != bytes.len() as u64 {
        return Err(format!(
            "`{}` does not describe the bundle beside it: it records {} bytes with sha256 {}, but `{}` has {} bytes with sha256 {got}",
            slot_dir(root, name).join(INFO_FILE).display(),
            info.bundle_bytes,
            info.bundle_sha256,
            slot_model(root, name).display(),
            bytes.len(),
        ));
    }
    Ok(info)
}

/// The lock file of a root.
pub const LOCK_FILE: &str = ".lock";

/// How long a command waits for another one changing the same root.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The exclusive lock on a models root, held by a command that changes it (`install`,
/// `rollback`) from before it reads the pointers until its last write; released when
/// dropped or when the process ends, however it ends (flock on `ROOT/.lock`, so a killed
/// holder leaves no stale lock).
#[derive(Debug)]
pub struct RootLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot lock the models root: cannot open `{path}`: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot lock the models root: flock `{path}`: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("another command is changing the models root (it holds `{path}`{holder}); waited {waited_s} s, giving up; try again when it has finished")]
    Busy {
        path: String,
        holder: String,
        waited_s: u64,
    },
}

impl RootLock {
    /// Takes the lock of `root` (an existing folder) for `what` (e.g. `install`), waiting
    /// up to `wait` for another holder; says on the log that it waits.
    pub fn acquire(root: &Path, what: &str, wait: std::time::Duration) -> Result<Self, LockError> {
        use std::fs::TryLockError;
        let path = root.join(LOCK_FILE);
        let shown = || path.display().to_string();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: shown(),
                source,
            })?;
        let t0 = std::time::Instant::now();
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path)
                        .map(|h| h.trim().to_string())
                        .unwrap_or_default();
                    if t0.elapsed() >= wait {
                        return Err(LockError::Busy {
                            path: shown(),
                            holder: if holder.is_empty() {
                                String::new()
                            } else {
                                format!(": {holder}")
                            },
                            waited_s: wait.as_secs(),
                        });
                    }
                    if !said {
                        tracing::warn!(lock = %path.display(), holder = %holder, "another command is changing the models root; waiting for it");
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Lock {
                        path: shown(),
                        source,
                    })
                }
            }
        }
        // Who holds it, for a waiting command's message (informational only).
        let _ = file.set_len(0).and_then(|()| {
            file.write_all(
                format!("linesight-edge {what}, pid {}\n", std::process::id()).as_bytes(),
            )
        });
        Ok(RootLock { _file: file })
    }
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
        std::fs::write(slot_model(d.path(), "0003"), b"bundle").unwrap();
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

    #[test]
    fn broken_pointers_say_what_is_wrong() {
        assert_eq!(parse_pointer(b"0001\n").unwrap(), "0001");
        assert_eq!(parse_pointer(b" 0042 \r\n").unwrap(), "0042");
        assert_eq!(parse_pointer(b""), Err(PointerProblem::Empty));
        assert_eq!(parse_pointer(b"\n \n"), Err(PointerProblem::Empty));
        assert_eq!(
            parse_pointer(b"\xff\xfe0001"),
            Err(PointerProblem::NotText("ff fe 30 30 30 31".into()))
        );
        assert_eq!(
            parse_pointer(b"garbage"),
            Err(PointerProblem::NotASlot("garbage".into()))
        );
        assert_eq!(
            parse_pointer(b"1"),
            Err(PointerProblem::NotASlot("1".into()))
        );
        let long = "x".repeat(100);
        assert!(
            matches!(parse_pointer(long.as_bytes()), Err(PointerProblem::NotASlot(t)) if t.len() == 43)
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(CURRENT), "0007\n").unwrap();
        let e = read_pointer(d.path(), CURRENT).unwrap_err();
        assert!(matches!(e, PointerError::MissingSlot { ref slot, .. } if slot == "0007"));
        assert!(e.to_string().contains("current"), "{e}");
    }

    #[test]
    fn a_record_that_describes_another_bundle_is_caught() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(slot_dir(d.path(), "0001")).unwrap();
        let info = |bytes: &[u8]| SlotInfo {
            model_id: "m".into(),
            model_version: "1".into(),
            signature: "unsigned".into(),
            installed_unix: 0,
            bundle_sha256: hex::encode(linesight_shared::bundle::sha256(bytes)),
            bundle_bytes: bytes.len() as u64,
            source: "x".into(),
        };
        let write = |i: &SlotInfo| {
            std::fs::write(
                slot_dir(d.path(), "0001").join(INFO_FILE),
                serde_json::to_vec(i).unwrap(),
            )
            .unwrap()
        };
        write(&info(b"this bundle"));
        assert!(check_record(d.path(), "0001", b"this bundle").is_ok());
        let e = check_record(d.path(), "0001", b"another bundle").unwrap_err();
        assert!(e.contains("does not describe the bundle"), "{e}");
        let mut same_len = info(b"this bundle");
        same_len.bundle_sha256 = "00".repeat(32);
        write(&same_len);
        assert!(check_record(d.path(), "0001", b"this bundle").is_err());
    }

    #[test]
    fn the_root_lock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            RootLock::acquire(&d.path().join("nope"), "rollback", LOCK_WAIT),
            Err(LockError::Open { .. })
        ));
        let a = RootLock::acquire(d.path(), "install", LOCK_WAIT).unwrap();
        let e = RootLock::acquire(d.path(), "rollback", std::time::Duration::from_millis(120))
            .unwrap_err();
        assert!(
            matches!(e, LockError::Busy { ref holder, .. } if holder.contains("install")),
            "{e}"
        );
        drop(a);
        RootLock::acquire(d.path(), "rollback", std::time::Duration::ZERO).unwrap();
    }
}
