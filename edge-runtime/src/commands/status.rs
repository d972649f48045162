//! `linesight-edge status`: the slots under the models root, what each holds (model id and
//! version, its signature checked against the trusted keys, install time) and which is
//! current / previous, and everything that is wrong with the root.
//!
//! Nothing is taken on a record's word: each slot's bundle is read, its `install.json` is
//! checked against it ([`slots::check_record`]), and the model id, version and signature
//! shown are the bundle's own. A broken pointer, a record that describes another bundle, an
//! unreadable or damaged bundle and an invalid signature are problems: they are listed with
//! what to run, and the command exits 1.

use crate::slots::{self, PointerError, SlotInfo};
use crate::trust::{SignatureReport, TrustSources};
use linesight_shared::bundle::Bundle;
use serde::Serialize;

pub struct StatusSettings {
    /// The models root, and where the trusted keys come from.
    pub trust: TrustSources,
}

#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub slot: String,
    pub current: bool,
    pub previous: bool,
    /// The bundle's own model id and version (None: the bundle cannot be read).
    pub model_id: Option<String>,
    pub model_version: Option<String>,
    /// The slot's `install.json`, only when it describes the bundle beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<SlotInfo>,
    /// The bundle's signature against the trusted keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_check: Option<SignatureReport>,
    /// What is wrong with this slot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub root: String,
    pub current: Option<String>,
    pub previous: Option<String>,
    pub slots: Vec<SlotStatus>,
    /// Everything wrong with the root (pointers, slots); empty when healthy.
    pub problems: Vec<String>,
    /// What to run about the problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

impl StatusReport {
    /// The current slot's recorded info, if any.
    pub fn current_info(&self) -> Option<&SlotInfo> {
        self.slots
            .iter()
            .find(|s| s.current)
            .and_then(|s| s.record.as_ref())
    }

    /// True when nothing is wrong.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    /// A human-readable table, then the problems and what to run.
    pub fn render(&self) -> String {
        let mut out = format!("models root `{}`\n", self.root);
        if self.slots.is_empty() && self.current.is_none() {
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
            let id = s.model_id.as_deref().unwrap_or("?");
            let version = s.model_version.as_deref().unwrap_or("?");
            let signature = s
                .signature_check
                .as_ref()
                .map(|c| format!("{} ({})", c.status, c.signer))
                .unwrap_or_else(|| "?".into());
            let installed = s
                .record
                .as_ref()
                .map(|i| {
                    format!(
                        " installed_unix={} bytes={}",
                        i.installed_unix, i.bundle_bytes
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "{mark} {} {id} {version} signature={signature}{installed}{}\n",
                s.slot,
                if s.problems.is_empty() {
                    ""
                } else {
                    " PROBLEM"
                },
            ));
        }
        if !self.problems.is_empty() {
            out.push_str(&format!("{} problem(s):\n", self.problems.len()));
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        if let Some(r) = &self.repair {
            out.push_str(&format!("{r}\n"));
        }
        out
    }
}

/// Looks at one slot: record, bundle, record against bundle, signature.
fn slot_status(s: &StatusSettings, name: &str) -> SlotStatus {
    let root = &s.trust.root;
    let mut st = SlotStatus {
        slot: name.to_string(),
        current: false,
        previous: false,
        model_id: None,
        model_version: None,
        record: None,
        signature_check: None,
        problems: Vec::new(),
    };
    let path = slots::slot_model(root, name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            st.problems
                .push(format!("cannot read `{}`: {e}", path.display()));
            return st;
        }
    };
    match slots::check_record(root, name, &bytes) {
        Ok(info) => st.record = Some(info),
        Err(problem) => st.problems.push(problem),
    }
    match Bundle::from_bytes(&bytes) {
        Ok(b) => {
            st.model_id = Some(b.manifest.model_id.clone());
            st.model_version = Some(b.manifest.model_version.clone());
            let check = s.trust.check(&b);
            if check.status == "invalid" {
                st.problems
                    .push(format!("`{}`: signature {}", path.display(), check.detail));
            }
            st.signature_check = Some(check);
        }
        Err(e) => st
            .problems
            .push(format!("`{}` is damaged: {e}", path.display())),
    }
    st
}

/// Looks at the root. Fails only when the slots folder cannot be listed; everything else
/// that is wrong is in the report's `problems`.
pub fn run(s: &StatusSettings) -> std::io::Result<StatusReport> {
    let root = &s.trust.root;
    let mut problems = Vec::new();
    let mut pointer = |which| match slots::read_pointer(root, which) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let current = pointer(slots::CURRENT);
    let previous = pointer(slots::PREVIOUS);
    let pointer_broken = !problems.is_empty();
    let names = slots::list(root)?;
    if current.is_none() && !pointer_broken && !names.is_empty() {
        problems.push(format!(
            "`{}` does not exist but {} slot(s) are installed, so no model runs",
            root.join(slots::CURRENT).display(),
            names.len()
        ));
    }
    let mut slots_status = Vec::with_capacity(names.len());
    for name in names {
        let mut st = slot_status(s, &name);
        st.current = current.as_deref() == Some(name.as_str());
        st.previous = previous.as_deref() == Some(name.as_str());
        problems.extend(st.problems.iter().map(|p| format!("slot {name}: {p}")));
        slots_status.push(st);
    }
    let repair = (!problems.is_empty()).then(|| PointerError::repair_hint(root));
    let (_, key_errors) = crate::trust::resolve_usable(root, &s.trust.flags, &s.trust.config);
    problems.extend(
        key_errors
            .iter()
            .map(|e| format!("a trusted key cannot be used: {e}")),
    );
    Ok(StatusReport {
        root: root.display().to_string(),
        current,
        previous,
        slots: slots_status,
        problems,
        repair,
    })
}
