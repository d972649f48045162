//! The public keys this box accepts bundles from.
//!
//! Three places name them:
//! - `--trusted-key PUB` (repeatable) on `install`: key files;
//! - `edge.toml`, `[model] trusted_keys = [...]`: key files (`signing.pub`, relative to the
//!   config file's folder) or a key written inline as its 64 hex digits (the second line
//!   of a `signing.pub`); used by `install` when no `--trusted-key` is given, and by the
//!   hot swap under `run`;
//! - `ROOT/trusted-keys/*.pub`: always trusted.

use linesight_shared::bundle::Bundle;
use linesight_shared::signature::{self, PublicKey, SignatureError};
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::slots;

/// Where a command finds the trusted keys, the way `install` does: `--trusted-key` files
/// (`flags`), else edge.toml's `model.trusted_keys` (`config`); plus `ROOT/trusted-keys/`.
#[derive(Debug, Clone, Default)]
pub struct TrustSources {
    pub root: PathBuf,
    pub flags: Vec<PathBuf>,
    pub config: Vec<KeySpec>,
}

impl TrustSources {
    /// Every key; fails on the first that cannot be used ([`resolve`]).
    pub fn resolve(&self) -> Result<Vec<PublicKey>, SignatureError> {
        resolve(&self.root, &self.flags, &self.config)
    }

    /// A bundle's signature checked against these keys, for showing it.
    pub fn check(&self, bundle: &Bundle) -> SignatureReport {
        let (keys, errors) = resolve_usable(&self.root, &self.flags, &self.config);
        let status = signature::check(bundle, &keys);
        SignatureReport {
            status: status.as_str(),
            signer: status.signer().to_string(),
            detail: status.describe(keys.len()),
            trusted_keys: keys.len(),
            key_errors: errors.iter().map(|e| e.to_string()).collect(),
        }
    }
}

/// A bundle's signature as `inspect`, `classify`, `status` and `bench` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignatureReport {
    /// `valid`, `invalid` (changed after signing), `untrusted` (verifies, key not
    /// trusted) or `unsigned`.
    pub status: &'static str,
    /// The signing key's fingerprint, or `unsigned`.
    pub signer: String,
    /// One line for people: what the status means and what to do.
    pub detail: String,
    /// How many trusted keys it was checked against.
    pub trusted_keys: usize,
    /// Trusted keys that are configured but cannot be used (unreadable, malformed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_errors: Vec<String>,
}

impl SignatureReport {
    pub fn is_valid(&self) -> bool {
        self.status == "valid"
    }

    /// The warning a command prints on stderr for anything but a valid signature (and for
    /// trusted keys that cannot be used); None when there is nothing to say.
    pub fn warning(&self, bundle: &Path) -> Option<String> {
        let mut lines = Vec::new();
        if !self.is_valid() {
            lines.push(format!(
                "warning: bundle `{}`: signature {}",
                bundle.display(),
                self.detail
            ));
        }
        lines.extend(
            self.key_errors
                .iter()
                .map(|e| format!("warning: a trusted key cannot be used: {e}")),
        );
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

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
    specs(root, flags, config)
        .iter()
        .map(KeySpec::load)
        .collect()
}

/// The keys of [`resolve`] that can be used, and the errors of those that cannot: for
/// commands that show a bundle's signature status (`status`, `inspect`, `classify`,
/// `bench`) and report a bad key file rather than stop.
pub fn resolve_usable(
    root: &Path,
    flags: &[PathBuf],
    config: &[KeySpec],
) -> (Vec<PublicKey>, Vec<SignatureError>) {
    let (mut keys, mut errors) = (Vec::new(), Vec::new());
    for spec in specs(root, flags, config) {
        match spec.load() {
            Ok(k) => keys.push(k),
            Err(e) => errors.push(e),
        }
    }
    (keys, errors)
}

/// Where the trusted keys of [`resolve`] come from, in order.
fn specs(root: &Path, flags: &[PathBuf], config: &[KeySpec]) -> Vec<KeySpec> {
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
    specs
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
