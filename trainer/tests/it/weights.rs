//! Locating real weights and fixtures for tests.

use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The path of a weights file, or `None` (with a loud note) when it is absent and weights
/// are not required. Panics when `LINESIGHT_REQUIRE_WEIGHTS=1` and the file is missing.
pub fn weights(rel: &str, test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LINESIGHT_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/weights"));
    let p = dir.join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("LINESIGHT_REQUIRE_WEIGHTS").as_deref() == Ok("1") {
        panic!(
            "{test}: `{}` is missing and LINESIGHT_REQUIRE_WEIGHTS=1; run scripts/fetch-weights.sh",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: `{}` not found; run scripts/fetch-weights.sh",
        p.display()
    );
    None
}
