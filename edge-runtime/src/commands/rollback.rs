//! `linesight-edge rollback`: make `previous` current again, after checking that its slot
//! still loads and passes its self-test. The model rolled back from becomes `previous`,
//! so a second rollback undoes the first.

use crate::engine::{Engine, EngineError};
use crate::slots::{self, WriteError};
use linesight_shared::bundle::{Bundle, BundleError};
use serde::Serialize;
use std::path::PathBuf;

pub struct RollbackSettings {
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no previous model under `{root}` to roll back to (current: {current})")]
    NoPrevious { root: String, current: String },
    #[error("refusing to roll back to slot {slot}: {problem}; `current` stays slot {current}")]
    Broken {
        slot: String,
        current: String,
        problem: String,
    },
    #[error("cannot read the pointers under `{root}`: {source}")]
    Io {
        root: String,
        source: std::io::Error,
    },
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
}

pub fn run(s: &RollbackSettings) -> Result<RollbackReport, RollbackError> {
    let io = |source| RollbackError::Io {
        root: s.root.display().to_string(),
        source,
    };
    let current = slots::read_pointer(&s.root, slots::CURRENT).map_err(io)?;
    let previous = slots::read_pointer(&s.root, slots::PREVIOUS).map_err(io)?;
    let cur_name = current.clone().unwrap_or_else(|| "none".into());
    let Some(prev) = previous.filter(|p| Some(p) != current.as_ref()) else {
        return Err(RollbackError::NoPrevious {
            root: s.root.display().to_string(),
            current: cur_name,
        });
    };
    let broken = |problem: String| RollbackError::Broken {
        slot: prev.clone(),
        current: cur_name.clone(),
        problem,
    };
    let bundle = Bundle::read(&slots::slot_model(&s.root, &prev))
        .map_err(|e: BundleError| broken(e.to_string()))?;
    Engine::from_bundle(&bundle)
        .and_then(|mut e| e.self_test(&bundle.manifest))
        .map_err(|e: EngineError| broken(e.to_string()))?;
    slots::write_pointer(&s.root, slots::CURRENT, &prev, None)?;
    if let Some(c) = &current {
        slots::write_pointer(&s.root, slots::PREVIOUS, c, None)?;
    }
    Ok(RollbackReport {
        root: s.root.display().to_string(),
        current: prev,
        previous: current,
        model_id: bundle.manifest.model_id,
        model_version: bundle.manifest.model_version,
    })
}
