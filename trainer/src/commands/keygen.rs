//! `linesight-train keygen`: a new ed25519 signing key pair for bundles.
//!
//! Writes `DIR/signing.key` (secret, mode 0600, keep it off the boxes) and
//! `DIR/signing.pub` (copy it to each box's `trusted-keys/` or pass it with
//! `linesight-edge install --trusted-key`). The secret is drawn from the OS's randomness.

use anyhow::{Context, Result};
use linesight_shared::signature::SecretKey;
use rand::TryRngCore;
use serde::Serialize;
use std::path::PathBuf;

pub struct KeygenSettings {
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct KeygenReport {
    pub secret_key: String,
    pub public_key: String,
    pub fingerprint: String,
}

pub fn run(s: &KeygenSettings) -> Result<KeygenReport> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .context("cannot draw randomness from the operating system")?;
    let key = SecretKey::from_seed(seed);
    seed.fill(0);
    let (secret, public) = key.write_pair(&s.out)?;
    Ok(KeygenReport {
        secret_key: secret.display().to_string(),
        public_key: public.display().to_string(),
        fingerprint: key.public().fingerprint(),
    })
}
