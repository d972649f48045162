//! `linesight-edge install`: verify a bundle completely, then make it the box's `current`
//! model without ever leaving the box without a working one.
//!
//! Checks, in order (the first failure refuses the install and changes nothing):
//! 1. the bundle file: magic, format version, truncation, checksum, manifest, model hash
//!    ([`Bundle::from_bytes`]);
//! 2. the signature: signed by a trusted key (`--trusted-key` files, else edge.toml's
//!    `model.trusted_keys`; and `ROOT/trusted-keys/*.pub`, see [`crate::trust`]); unsigned
//!    only with `--allow-unsigned` (or edge.toml's `model.allow_unsigned`);
//! 3. compatibility: `min_runtime_version` not newer than this runtime, a sane input shape,
//!    self-test vectors present;
//! 4. memory: the estimated need of the model fits in `MemAvailable`, since a running
//!    `run` holds the old model meanwhile ([`crate::memory`]);
//! 5. the model loads in tract (operator support) and its self-test vectors give the
//!    logits the exporter recorded;
//! 6. free disk space for the new slot, with a message saying what can be freed.
//!
//! Checks 1-5 are [`check_bundle`], which the hot swap under `run` ([`crate::swap`])
//! applies to a new `current` too.
//!
//! Then, holding the root's lock ([`slots::RootLock`]: a second `install` or a `rollback`
//! waits), the bundle is written into a new numbered slot (partial folder, fsync, rename,
//! fsync), read back and compared, and `previous` then `current` are switched atomically
//! (see [`crate::slots`]). A broken `current` (see [`slots::PointerError`]) is replaced,
//! and `previous` is then left as it was. Every write, fsync and rename is a named fault point
//! ([`FAULT_STEPS`]) for the crash-safety tests: in-process (`fault_at`, the install
//! returns an error there) and in the real binary (`LINESIGHT_FAULT_KILL=STEP`, the
//! process kills itself with SIGKILL there; [`FAULT_KILL_ENV`]).

use crate::engine::{Engine, EngineError};
use crate::memory::{self, MemoryError, MemoryNeed};
use crate::slots::{
    self, fault_point, io_at, FaultAt, FaultMode, LockError, RootLock, SlotInfo, WriteError,
};
use crate::trust::{self, KeySpec};
use linesight_shared::bundle::{sha256, Bundle, BundleError};
use linesight_shared::signature::{self, PublicKey, SignatureError, Verified};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every fault point of an install over an existing `current`, in the order reached.
pub const FAULT_STEPS: [&str; 15] = [
    "slot:write-model",
    "slot:fsync-model",
    "slot:write-info",
    "slot:fsync-info",
    "slot:fsync-partial-dir",
    "slot:rename",
    "slot:fsync-slots-dir",
    "previous:write",
    "previous:fsync",
    "previous:rename",
    "previous:fsync-dir",
    "current:write",
    "current:fsync",
    "current:rename",
    "current:fsync-dir",
];

/// Test hook of the real binary: `LINESIGHT_FAULT_KILL=STEP` (a step of [`FAULT_STEPS`])
/// makes `install` kill itself with SIGKILL at that step, as a power cut would stop it.
/// Production never sets it; the crash-safety test `tests/it/install_bin.rs` does.
pub const FAULT_KILL_ENV: &str = "LINESIGHT_FAULT_KILL";

/// Bytes kept free beyond the bundle itself (slot metadata, pointer files).
const HEADROOM_BYTES: u64 = 1 << 20;

pub struct InstallSettings {
    pub bundle: PathBuf,
    pub root: PathBuf,
    /// Public key files (`signing.pub`, `--trusted-key`) trusted besides
    /// `ROOT/trusted-keys/*.pub`.
    pub trusted_keys: Vec<PathBuf>,
    /// Keys from edge.toml (`model.trusted_keys`), used when `trusted_keys` is empty.
    pub config_trusted_keys: Vec<KeySpec>,
    pub allow_unsigned: bool,
    /// Test hook: free bytes to assume instead of asking the file system.
    pub free_bytes_override: Option<u64>,
    /// Where the available memory comes from (the kernel; tests override it).
    pub mem_available: memory::Available,
    /// Test hook: stop at this step of [`FAULT_STEPS`] as if the power had gone.
    pub fault_at: Option<String>,
    /// Test hook: SIGKILL this process at this step of [`FAULT_STEPS`] ([`FAULT_KILL_ENV`]).
    pub kill_at: Option<String>,
}

impl InstallSettings {
    pub fn new(bundle: PathBuf, root: PathBuf) -> Self {
        Self {
            bundle,
            root,
            trusted_keys: Vec::new(),
            config_trusted_keys: Vec::new(),
            allow_unsigned: false,
            free_bytes_override: None,
            mem_available: memory::Available::Kernel,
            fault_at: None,
            kill_at: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("refusing `{path}`: {source}")]
    Bundle { path: String, source: BundleError },
    #[error("refusing `{path}`: {source}")]
    Signature {
        path: String,
        source: SignatureError,
    },
    #[error("cannot use trusted key: {0}")]
    TrustedKey(SignatureError),
    #[error("refusing `{path}`: {problem}")]
    Incompatible { path: String, problem: String },
    #[error("refusing `{path}`: the model does not load in this runtime (unsupported operator or shape?): {source}")]
    Load { path: String, source: EngineError },
    #[error("refusing `{path}`: self-test failed: {source}")]
    SelfTest { path: String, source: EngineError },
    #[error("refusing `{path}`: {source}")]
    Memory { path: String, source: MemoryError },
    #[error("not enough disk space under `{root}`: installing needs {need} bytes but {free} are free; free at least {short} more bytes{hint}")]
    NoSpace {
        root: String,
        need: u64,
        free: u64,
        short: u64,
        hint: String,
    },
    #[error("the slot copy `{path}` differs from the bundle read (sha256 {got}, expected {expected}); the disk may be failing, `current` was not changed")]
    CopyMismatch {
        path: String,
        expected: String,
        got: String,
    },
    #[error("cannot access `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

#[derive(Debug, Serialize)]
pub struct InstallReport {
    pub root: String,
    pub slot: String,
    pub previous: Option<String>,
    pub model_id: String,
    pub model_version: String,
    pub signature: String,
    pub self_test_vectors: usize,
    pub self_test_max_abs_diff: f32,
    pub bundle_bytes: u64,
    /// What loading the model is estimated to need ([`memory::estimate`]).
    pub memory_estimate_bytes: u64,
    /// `MemAvailable` when it was checked (None: not known, check skipped).
    pub memory_available_bytes: Option<u64>,
    /// Measured: peak RSS after loading and self-testing minus RSS before reading the
    /// bundle (meaningful in a fresh process, i.e. the binary; how the estimate was set).
    pub load_peak_rss_growth_bytes: Option<u64>,
    /// What was wrong with `current` before this install replaced it, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

/// A bundle that passed checks 1-5 of the module doc: verified, loaded in tract,
/// self-tested.
pub struct Checked {
    pub bundle: Bundle,
    pub engine: Engine,
    pub verified: Verified,
    pub self_test_max_abs_diff: f32,
    pub memory: MemoryNeed,
    pub memory_available: Option<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `major.minor.patch` (a `-pre` suffix is ignored) -> comparable triple.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.trim().split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// Compatibility of a verified bundle with this runtime, short of loading it.
pub fn check_compatible(bundle: &Bundle) -> Result<(), String> {
    let m = &bundle.manifest;
    let ours = env!("CARGO_PKG_VERSION");
    let need = parse_version(&m.min_runtime_version).ok_or_else(|| {
        format!(
            "its min_runtime_version `{}` is not a `major.minor.patch` version",
            m.min_runtime_version
        )
    })?;
    if need > parse_version(ours).expect("our own version parses") {
        return Err(format!(
            "it needs linesight-edge {} or newer, this is {ours}; update the runtime first",
            m.min_runtime_version
        ));
    }
    let p = &m.preprocess;
    if p.crop == 0 || p.crop > 4096 || p.resize_shorter < p.crop {
        return Err(format!(
            "its preprocessing is not sane (resize_shorter {}, crop {}; need 1 <= crop <= resize_shorter, crop <= 4096)",
            p.resize_shorter, p.crop
        ));
    }
    let shape: Vec<u64> = p.input_shape().iter().map(|&d| d as u64).collect();
    if m.input.shape != shape {
        return Err(format!(
            "its input shape {:?} does not match its preprocessing ({shape:?})",
            m.input.shape
        ));
    }
    if m.labels.is_empty() {
        return Err("it lists no labels".into());
    }
    if m.self_test.is_empty() {
        return Err("it carries no self-test vectors, so this box cannot check it before going live; export it again".into());
    }
    Ok(())
}

/// Reads a bundle file, its header first ([`linesight_shared::bundle::read_file_bytes`]:
/// a file that is not a bundle is refused before its body is read); the error names it.
pub fn read_bundle_file(path: &Path) -> Result<Vec<u8>, InstallError> {
    linesight_shared::bundle::read_file_bytes(path).map_err(|source| InstallError::Bundle {
        path: path.display().to_string(),
        source,
    })
}

/// Checks 1-5 of the module doc on the `bytes` of bundle file `path`: parse and hashes,
/// signature against `trusted`, compatibility, memory for a second model (`hint` says
/// what to free), loading in tract, self-test. Fails with the first refusal.
pub fn check_bundle(
    path: &Path,
    bytes: &[u8],
    trusted: &[PublicKey],
    allow_unsigned: bool,
    mem_available: memory::Available,
    hint: &'static str,
) -> Result<Checked, InstallError> {
    let path = path.display().to_string();
    let bundle = Bundle::from_bytes(bytes).map_err(|source| InstallError::Bundle {
        path: path.clone(),
        source,
    })?;
    let verified =
        signature::verify_bundle(&bundle, trusted, allow_unsigned).map_err(|source| {
            InstallError::Signature {
                path: path.clone(),
                source,
            }
        })?;
    check_compatible(&bundle).map_err(|problem| InstallError::Incompatible {
        path: path.clone(),
        problem,
    })?;
    let need = memory::estimate(&bundle);
    let available = mem_available.bytes();
    if let Some(available) = available {
        memory::check(&need, available, hint).map_err(|source| InstallError::Memory {
            path: path.clone(),
            source,
        })?;
    }
    let mut engine = Engine::from_bundle(&bundle).map_err(|source| InstallError::Load {
        path: path.clone(),
        source,
    })?;
    let worst = engine
        .self_test(&bundle.manifest)
        .map_err(|source| InstallError::SelfTest { path, source })?;
    Ok(Checked {
        bundle,
        engine,
        verified,
        self_test_max_abs_diff: worst,
        memory: need,
        memory_available: available,
    })
}

/// Verifies `s.bundle` and makes it `current` (see the module doc).
pub fn run(s: &InstallSettings) -> Result<InstallReport, InstallError> {
    let trusted = trust::resolve(&s.root, &s.trusted_keys, &s.config_trusted_keys)
        .map_err(InstallError::TrustedKey)?;
    let rss_before = memory::rss();
    let bytes = read_bundle_file(&s.bundle)?;
    let checked = check_bundle(
        &s.bundle,
        &bytes,
        &trusted,
        s.allow_unsigned,
        s.mem_available,
        memory::INSTALL_HINT,
    )?;
    let load_peak_rss_growth_bytes = rss_before
        .zip(memory::rss())
        .map(|((before, _), (_, peak))| peak.saturating_sub(before));
    let Checked {
        bundle,
        engine,
        verified,
        self_test_max_abs_diff: worst,
        memory: need,
        memory_available,
    } = checked;
    drop(engine);

    std::fs::create_dir_all(slots::slots_dir(&s.root)).map_err(io(&s.root))?;
    // From here to the last write, no other command changes this root.
    let _lock = RootLock::acquire(&s.root, "install", slots::LOCK_WAIT)?;
    check_space(s, bytes.len() as u64)?;
    remove_partials(&s.root)?;

    let (old_current, repaired) = match slots::read_pointer(&s.root, slots::CURRENT) {
        Ok(c) => (c, None),
        Err(e) => {
            tracing::warn!(error = %e, "replacing a broken `current`");
            (None, Some(e.to_string()))
        }
    };
    let name = slots::next_name(&s.root).map_err(io(&s.root))?;
    let info = SlotInfo {
        model_id: bundle.manifest.model_id.clone(),
        model_version: bundle.manifest.model_version.clone(),
        signature: verified.describe().to_string(),
        installed_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        bundle_sha256: hex::encode(sha256(&bytes)),
        bundle_bytes: bytes.len() as u64,
        source: std::path::absolute(&s.bundle)
            .unwrap_or_else(|_| s.bundle.clone())
            .display()
            .to_string(),
    };
    let fault: FaultAt = match (&s.fault_at, &s.kill_at) {
        (Some(step), _) => Some((step.as_str(), FaultMode::Stop)),
        (None, Some(step)) => Some((step.as_str(), FaultMode::Kill)),
        (None, None) => None,
    };
    write_slot(&s.root, &name, &bytes, &info, fault)?;

    let copy = slots::slot_model(&s.root, &name);
    let back = std::fs::read(&copy).map_err(io(&copy))?;
    if back != bytes {
        return Err(InstallError::CopyMismatch {
            path: copy.display().to_string(),
            expected: info.bundle_sha256.clone(),
            got: hex::encode(sha256(&back)),
        });
    }
    if let Some(old) = &old_current {
        slots::write_pointer(&s.root, slots::PREVIOUS, old, fault)?;
    }
    slots::write_pointer(&s.root, slots::CURRENT, &name, fault)?;
    tracing::info!(slot = %name, model = %info.model_id, version = %info.model_version, "installed");
    Ok(InstallReport {
        root: s.root.display().to_string(),
        slot: name,
        previous: old_current,
        model_id: info.model_id,
        model_version: info.model_version,
        signature: info.signature,
        self_test_vectors: bundle.manifest.self_test.len(),
        self_test_max_abs_diff: worst,
        bundle_bytes: info.bundle_bytes,
        memory_estimate_bytes: need.estimate_bytes,
        memory_available_bytes: memory_available,
        load_peak_rss_growth_bytes,
        repaired,
    })
}

fn check_space(s: &InstallSettings, bundle_bytes: u64) -> Result<(), InstallError> {
    let need = bundle_bytes + HEADROOM_BYTES;
    let free = match s.free_bytes_override {
        Some(f) => f,
        None => slots::free_bytes(&s.root).map_err(io(&s.root))?,
    };
    if free >= need {
        return Ok(());
    }
    let current = slots::read_pointer(&s.root, slots::CURRENT).ok().flatten();
    let previous = slots::read_pointer(&s.root, slots::PREVIOUS).ok().flatten();
    let removable: Vec<String> = slots::list(&s.root)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| Some(n) != current.as_ref() && Some(n) != previous.as_ref())
        .map(|n| {
            let dir = slots::slot_dir(&s.root, &n);
            let size = std::fs::metadata(dir.join(slots::MODEL_FILE))
                .map(|m| m.len())
                .unwrap_or(0);
            format!("`{}` ({size} bytes)", dir.display())
        })
        .collect();
    let hint = if removable.is_empty() {
        "; delete other files on that file system (old logs, the rejected-frames store); the current and previous slots must stay".to_string()
    } else {
        format!(
            "; old slots that are neither current nor previous can be deleted: {}",
            removable.join(", ")
        )
    };
    Err(InstallError::NoSpace {
        root: s.root.display().to_string(),
        need,
        free,
        short: need - free,
        hint,
    })
}

/// Removes `slots/.NNNN.partial` folders left by an interrupted install.
fn remove_partials(root: &Path) -> Result<(), InstallError> {
    let dir = slots::slots_dir(root);
    let rd = std::fs::read_dir(&dir).map_err(io(&dir))?;
    for e in rd {
        let e = e.map_err(io(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".partial") {
            let p = e.path();
            tracing::warn!(path = %p.display(), "removing a partial slot left by an interrupted install");
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// Writes slot `name` crash-safely: into `slots/.NAME.partial/`, fsync files and folder,
/// rename to `slots/NAME`, fsync `slots/`.
fn write_slot(
    root: &Path,
    name: &str,
    bytes: &[u8],
    info: &SlotInfo,
    fault: FaultAt,
) -> Result<(), WriteError> {
    let slots_dir = slots::slots_dir(root);
    let partial = slots_dir.join(format!(".{name}.partial"));
    std::fs::create_dir_all(&partial).map_err(io_at(&partial))?;
    let model = partial.join(slots::MODEL_FILE);
    {
        let mut f = std::fs::File::create(&model).map_err(io_at(&model))?;
        // A stop here leaves a torn copy, as a power cut mid-copy would.
        let half = bytes.len() / 2;
        f.write_all(&bytes[..half]).map_err(io_at(&model))?;
        fault_point(fault, "slot:write-model")?;
        f.write_all(&bytes[half..]).map_err(io_at(&model))?;
        fault_point(fault, "slot:fsync-model")?;
        f.sync_all().map_err(io_at(&model))?;
    }
    let info_path = partial.join(slots::INFO_FILE);
    {
        let mut f = std::fs::File::create(&info_path).map_err(io_at(&info_path))?;
        fault_point(fault, "slot:write-info")?;
        let json = serde_json::to_vec_pretty(info).expect("slot info serializes");
        f.write_all(&json).map_err(io_at(&info_path))?;
        fault_point(fault, "slot:fsync-info")?;
        f.sync_all().map_err(io_at(&info_path))?;
    }
    fault_point(fault, "slot:fsync-partial-dir")?;
    slots::fsync_dir(&partial)?;
    fault_point(fault, "slot:rename")?;
    let dst = slots::slot_dir(root, name);
    std::fs::rename(&partial, &dst).map_err(io_at(&dst))?;
    fault_point(fault, "slot:fsync-slots-dir")?;
    slots::fsync_dir(&slots_dir)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse_version("1.2.3-rc.1"), Some((1, 2, 3)));
        assert!(
            parse_version("1.2").is_none()
                && parse_version("1.2.3.4").is_none()
                && parse_version("x").is_none()
        );
        assert!(parse_version("0.10.0") > parse_version("0.9.9"));
    }
}
