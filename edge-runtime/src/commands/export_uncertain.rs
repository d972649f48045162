//! `linesight-edge export-uncertain --out DIR`: copy the uncertain store (rejected and
//! uncertain frames with their decision lines) to a folder, e.g. a USB stick, for the next
//! training round. Each file is written crash-safely; `--clear` then empties the store.

use crate::store::{self, ExportReport};
use anyhow::{Context, Result};
use std::path::PathBuf;

pub struct ExportSettings {
    /// The store folder (resolved: `--store` > config > ROOT/uncertain).
    pub store: PathBuf,
    pub out: PathBuf,
    pub clear: bool,
}

/// Copies every complete entry. Fails when the store cannot be read or `out` written.
pub fn run(s: &ExportSettings) -> Result<ExportReport> {
    store::export(&s.store, &s.out, s.clear).with_context(|| {
        format!(
            "cannot export the uncertain store `{}` to `{}`",
            s.store.display(),
            s.out.display()
        )
    })
}
