//! `linesight-edge status`: the slots under the models root, what each holds (model id and
//! version, signer's key fingerprint, install time) and which is current / previous.

use crate::slots::{self, SlotInfo};
use serde::Serialize;
use std::path::PathBuf;

pub struct StatusSettings {
    pub root: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub slot: String,
    pub current: bool,
    pub previous: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub info: Option<SlotInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub root: String,
    pub current: Option<String>,
    pub previous: Option<String>,
    pub slots: Vec<SlotStatus>,
}

impl StatusReport {
    /// The current slot's recorded info, if any.
    pub fn current_info(&self) -> Option<&SlotInfo> {
        self.slots
            .iter()
            .find(|s| s.current)
            .and_then(|s| s.info.as_ref())
    }

    /// A human-readable table.
    pub fn render(&self) -> String {
        let mut out = format!("models root `{}`\n", self.root);
        if self.slots.is_empty() {
            out.push_str("no model installed\n");
        }
        for s in &self.slots {
            let mark = if s.current {
                "current "
            } else if s.previous {
                "previous"
            } else {
                "        "
            };
            match (&s.info, &s.error) {
                (Some(i), _) => out.push_str(&format!(
                    "{mark} {} {} {} signed-by={} installed_unix={} bytes={}\n",
                    s.slot,
                    i.model_id,
                    i.model_version,
                    i.signature,
                    i.installed_unix,
                    i.bundle_bytes
                )),
                (None, e) => out.push_str(&format!(
                    "{mark} {} (unreadable: {})\n",
                    s.slot,
                    e.as_deref().unwrap_or("?")
                )),
            }
        }
        out
    }
}

pub fn run(s: &StatusSettings) -> std::io::Result<StatusReport> {
    let current = slots::read_pointer(&s.root, slots::CURRENT)?;
    let previous = slots::read_pointer(&s.root, slots::PREVIOUS)?;
    let slots = slots::list(&s.root)?
        .into_iter()
        .map(|name| {
            let (info, error) = match slots::read_info(&s.root, &name) {
                Ok(i) => (Some(i), None),
                Err(e) => (None, Some(e)),
            };
            SlotStatus {
                current: current.as_deref() == Some(name.as_str()),
                previous: previous.as_deref() == Some(name.as_str()),
                slot: name,
                info,
                error,
            }
        })
        .collect();
    Ok(StatusReport {
        root: s.root.display().to_string(),
        current,
        previous,
        slots,
    })
}
