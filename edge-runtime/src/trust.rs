//! The public keys this box accepts bundles from.
//!
//! Three places name them:
//! - `--trusted-key PUB` (repeatable) on `install`: key files;
//! - `edge.toml`, `[model] trusted_keys = [...]`: key files (`signing.pub`, relative to the
//!   config file's folder) or a key written inline as its 64 hex digits (the second line
//!   of a `signing.pub`); used by `install` when no `--trusted-key` is given, and by the
//!   hot swap under `run`;
//! - `ROOT/trusted-keys/*.pub`: always trusted.

use linesight_shared::signature::{PublicKey, SignatureError};
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::slots;

/// One trusted key as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum KeySpec {
    /// A public key file (`signing.pub`).
    File(PathBuf),
    /// A key written inline: 64 hex digits.
    Inline(String),
}

impl KeySpec {
    /// `edge.toml` text: 64 hex digits are an inline key, anything else a file path
    /// (relative paths are relative to `base`, the config file's folder).
    pub fn parse(text: &str, base: &Path) -> Self {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            KeySpec::Inline(t.to_ascii_lowercase())
        } else if Path::new(t).is_relative() {
            KeySpec::File(base.join(t))
        } else {
            KeySpec::File(PathBuf::from(t))
        }
    }

    /// Reads or decodes the key. Fails on an unreadable or malformed key, naming it.
    pub fn load(&self) -> Result<PublicKey, SignatureError> {
        match self {
            KeySpec::File(p) => PublicKey::read(p),
            KeySpec::Inline(hex) => PublicKey::from_hex(hex, "edge.toml model.trusted_keys"),
        }
    }
}

/// The trusted keys: the `flags` files if any were given, else the `config` keys; plus
/// `ROOT/trusted-keys/*.pub` in every case. Fails on the first key that cannot be used.
pub fn resolve(
    root: &Path,
    flags: &[PathBuf],
    config: &[KeySpec],
) -> Result<Vec<PublicKey>, SignatureError> {
    let mut specs: Vec<KeySpec> = if flags.is_empty() {
        config.to_vec()
    } else {
        flags.iter().cloned().map(KeySpec::File).collect()
    };
    let dir = root.join(slots::TRUSTED_KEYS_DIR);
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut pinned: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        pinned.sort();
        specs.extend(pinned.into_iter().map(KeySpec::File));
    }
    specs.iter().map(KeySpec::load).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_keys_and_files() {
        let base = Path::new("/etc/linesight");
        let hex = "3b6a27bcceb6a42d3b6a27bcceb6a42d3b6a27bcceb6a42d3b6a27bcceb6a42d";
        assert_eq!(KeySpec::parse(hex, base), KeySpec::Inline(hex.into()));
        assert_eq!(
            KeySpec::parse("keys/line3.pub", base),
            KeySpec::File("/etc/linesight/keys/line3.pub".into())
        );
        assert_eq!(
            KeySpec::parse("/k.pub", base),
            KeySpec::File("/k.pub".into())
        );
        let e = KeySpec::Inline("00".repeat(31) + "zz").load().unwrap_err();
        assert!(e.to_string().contains("edge.toml"), "{e}");
    }
}
