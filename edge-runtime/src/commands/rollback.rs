//! `linesight-edge rollback`: make `previous` (or `--slot NNNN`) current again, after
//! verifying it as `install` verifies a new bundle. The model rolled back from becomes
//! `previous`, so a second rollback undoes the first.
//!
//! What is switched to is verified, never taken on its record's word: the slot's
//! `install.json` must describe the bundle beside it (size and sha256), and the bundle must
//! pass [`install::check_bundle`]: checksum and model hash, its signature against the
//! trusted keys (unsigned only with `--allow-unsigned`), compatibility, memory, loading and
//! the self-test.
//!
//! Rollback also repairs a broken `current` (empty, not text, not a slot name, naming a
//! missing slot): it switches to `previous` when that verifies, else to the newest slot
//! that does. The whole command holds the root's lock ([`slots::RootLock`]), so an
//! `install` beside it waits.

use crate::commands::install::{self, InstallError};
use crate::memory;
use crate::slots::{self, LockError, PointerError, RootLock, WriteError};
use crate::trust::{self, KeySpec};
use linesight_shared::signature::SignatureError;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct RollbackSettings {
    pub root: PathBuf,
    /// Switch to this slot (e.g. `0002`) instead of `previous`.
    pub slot: Option<String>,
    /// Public key files (`--trusted-key`) trusted besides `ROOT/trusted-keys/*.pub`.
    pub trusted_keys: Vec<PathBuf>,
    /// Keys from edge.toml (`model.trusted_keys`), used when `trusted_keys` is empty.
    pub config_trusted_keys: Vec<KeySpec>,
    /// Accept an unsigned slot (as `install --allow-unsigned` did).
    pub allow_unsigned: bool,
    /// Where the available memory comes from (the kernel; tests override it).
    pub mem_available: memory::Available,
}

impl RollbackSettings {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            slot: None,
            trusted_keys: Vec::new(),
            config_trusted_keys: Vec::new(),
            allow_unsigned: false,
            mem_available: memory::Available::Kernel,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no previous model under `{root}` to roll back to (current: {current}); `--slot NNNN` switches to another installed slot (`linesight-edge status` lists them)")]
    NoPrevious { root: String, current: String },
    #[error("refusing to roll back to slot {slot}: {problem}; `current` stays {current}")]
    Broken {
        slot: String,
        current: String,
        problem: String,
    },
    #[error("slot `{slot}` is not installed under `{root}` (installed: {installed})")]
    NoSuchSlot {
        slot: String,
        root: String,
        installed: String,
    },
    #[error("no installed slot under `{root}` verifies, so `current` cannot be repaired by a rollback ({problems}); install a bundle with `linesight-edge install FILE --root {root}`")]
    NothingVerifies { root: String, problems: String },
    #[error("no models root at `{root}` (nothing was installed there; check --root, $LINESIGHT_ROOT or the config's model.root)")]
    NoRoot { root: String },
    #[error("cannot read the slots under `{root}`: {source}")]
    Io {
        root: String,
        source: std::io::Error,
    },
    #[error("cannot use trusted key: {0}")]
    TrustedKey(SignatureError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub root: String,
    pub current: String,
    pub previous: Option<String>,
    pub model_id: String,
    pub model_version: String,
    /// The signer's fingerprint (verified against the trusted keys), or `unsigned`.
    pub signature: String,
    /// What was wrong with `current` before (a repair), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

/// A slot that passed every check, ready to be switched to.
struct Verified {
    model_id: String,
    model_version: String,
    signature: String,
}

/// Verifies slot `name` under `root` (see the module doc); the error says what failed.
fn verify_slot(
    root: &Path,
    name: &str,
    trusted: &[linesight_shared::signature::PublicKey],
    s: &RollbackSettings,
) -> Result<Verified, String> {
    let path = slots::slot_model(root, name);
    let bytes = install::read_bundle_file(&path).map_err(|e| e.to_string())?;
    slots::check_record(root, name, &bytes)?;
    let checked = install::check_bundle(
        &path,
        &bytes,
        trusted,
        s.allow_unsigned,
        s.mem_available,
        memory::INSTALL_HINT,
    )
    .map_err(|e: InstallError| e.to_string())?;
    let m = checked.bundle.manifest;
    Ok(Verified {
        model_id: m.model_id,
        model_version: m.model_version,
        signature: checked.verified.describe().to_string(),
    })
}

pub fn run(s: &RollbackSettings) -> Result<RollbackReport, RollbackError> {
    let root_shown = s.root.display().to_string();
    if !s.root.is_dir() {
        return Err(RollbackError::NoRoot { root: root_shown });
    }
    let _lock = RootLock::acquire(&s.root, "rollback", slots::LOCK_WAIT)?;
    let trusted = trust::resolve(&s.root, &s.trusted_keys, &s.config_trusted_keys)
        .map_err(RollbackError::TrustedKey)?;
    let pointer = |which| -> (Option<String>, Option<PointerError>) {
        match slots::read_pointer(&s.root, which) {
            Ok(name) => (name, None),
            Err(e) => {
                tracing::warn!(error = %e, "broken pointer");
                (None, Some(e))
            }
        }
    };
    let (current, current_broken) = pointer(slots::CURRENT);
    let (previous, _) = pointer(slots::PREVIOUS);
    let cur_name = match (&current, &current_broken) {
        (Some(c), _) => format!("slot {c}"),
        (None, Some(_)) => "broken".to_string(),
        (None, None) => "none".to_string(),
    };
    let installed = slots::list(&s.root).map_err(|source| RollbackError::Io {
        root: root_shown.clone(),
        source,
    })?;

    // The slots to try, in order; `repair`: several may be tried, the first that verifies
    // wins.
    let (candidates, repair) = if let Some(slot) = &s.slot {
        if !installed.contains(slot) {
            return Err(RollbackError::NoSuchSlot {
                slot: slot.clone(),
                root: root_shown,
                installed: if installed.is_empty() {
                    "none".into()
                } else {
                    installed.join(", ")
                },
            });
        }
        (vec![slot.clone()], false)
    } else if let Some(prev) = previous.filter(|p| Some(p) != current.as_ref()) {
        if current.is_some() {
            (vec![prev], false)
        } else {
            // Repair: previous first, then the others, newest first.
            let mut c = vec![prev.clone()];
            c.extend(installed.iter().rev().filter(|n| **n != prev).cloned());
            (c, true)
        }
    } else if current.is_none() && !installed.is_empty() {
        (installed.iter().rev().cloned().collect(), true)
    } else {
        return Err(RollbackError::NoPrevious {
            root: root_shown,
            current: cur_name,
        });
    };

    let mut problems = Vec::new();
    let mut chosen = None;
    for name in candidates {
        match verify_slot(&s.root, &name, &trusted, s) {
            Ok(v) => {
                chosen = Some((name, v));
                break;
            }
            Err(problem) if !repair => {
                return Err(RollbackError::Broken {
                    slot: name,
                    current: cur_name,
                    problem,
                })
            }
            Err(problem) => {
                tracing::warn!(slot = %name, problem = %problem, "slot does not verify; trying an older one");
                problems.push(format!("slot {name}: {problem}"));
            }
        }
    }
    let Some((target, v)) = chosen else {
        return Err(RollbackError::NothingVerifies {
            root: root_shown,
            problems: problems.join("; "),
        });
    };
    slots::write_pointer(&s.root, slots::CURRENT, &target, None)?;
    let new_previous = match current.filter(|c| *c != target) {
        Some(c) => {
            slots::write_pointer(&s.root, slots::PREVIOUS, &c, None)?;
            Some(c)
        }
        None => slots::read_pointer(&s.root, slots::PREVIOUS).ok().flatten(),
    };
    Ok(RollbackReport {
        root: root_shown,
        current: target,
        previous: new_previous,
        model_id: v.model_id,
        model_version: v.model_version,
        signature: v.signature,
        repaired: current_broken.map(|e| e.to_string()),
    })
}
