//! ed25519 signatures over bundles: key files, signing, and verification against trusted
//! keys.
//!
//! A signature signs [`Bundle::body_digest`] (sha256 over header, manifest and model); the
//! bundle stores the signer's public key beside it, and a box accepts the bundle only when
//! that key is one of its trusted keys and the signature verifies.
//!
//! Key files are two lines of text, a header naming what the file is and the 32 key bytes
//! in hex:
//!
//! ```text
//! linesight ed25519 secret key v1        (signing.key, file mode 0600)
//! 9f2c...                                (64 hex digits: the secret seed)
//! ```
//!
//! ```text
//! linesight ed25519 public key v1        (signing.pub)
//! 3b6a...                                (64 hex digits)
//! ```
//!
//! A key is named by its fingerprint: the first 16 hex digits of sha256 of the public key
//! bytes, e.g. `ed25519:3b6a27bcceb6a42d`.

use crate::bundle::{self, Bundle, Signature};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::path::{Path, PathBuf};

/// First line of a secret key file.
pub const SECRET_HEADER: &str = "linesight ed25519 secret key v1";
/// First line of a public key file.
pub const PUBLIC_HEADER: &str = "linesight ed25519 public key v1";
/// File names written by `linesight-train keygen`.
pub const SECRET_FILE: &str = "signing.key";
pub const PUBLIC_FILE: &str = "signing.pub";

/// Every way to get a signed bundle, for messages about an unsigned one.
pub const SIGN_HINT: &str = "sign it when building it: `linesight-train export --sign signing.key`, `linesight-train prototypes --sign signing.key`, `linesight-train quantize --sign signing.key`, or `sign = \"signing.key\"` under `[export]` in a pipeline config (make a key pair with `linesight-train keygen`)";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("bundle signature does not verify against its key `{fingerprint}`: the bundle was changed after it was signed; get a freshly signed copy from whoever built it")]
    BadSignature { fingerprint: String },
    #[error("bundle is signed by key `{fingerprint}`, which is not trusted on this box (trusted: {trusted}); pass that key's `signing.pub` with --trusted-key (or list it in edge.toml's `model.trusted_keys`), or ask for a bundle signed with a trusted key")]
    UntrustedKey {
        fingerprint: String,
        trusted: String,
    },
    #[error("bundle is unsigned and this box installs only signed bundles; {SIGN_HINT}, or pass --allow-unsigned for desktop use")]
    Unsigned,
    #[error("malformed key file `{path}`: {problem}")]
    MalformedKey { path: String, problem: String },
    #[error("cannot read key file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write key file `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` is a file, not a folder: --out names the folder that signing.key and signing.pub are written into (e.g. --out keys/); it was left as it is")]
    NotAFolder { path: String },
    #[error("cannot make the key folder `{path}`: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("key file `{path}` already exists; refusing to overwrite a signing key (pick another --out folder or move the old key away)")]
    KeyExists { path: String },
}

/// An ed25519 secret key. Debug prints only its fingerprint.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({} [redacted])", self.public().fingerprint())
    }
}

/// An ed25519 public key (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// `ed25519:` + the first 16 hex digits of sha256 of the key bytes.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

/// The fingerprint of raw public key bytes (see [`PublicKey::fingerprint`]).
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    format!("ed25519:{}", &hex::encode(bundle::sha256(public_key))[..16])
}

impl SecretKey {
    /// A key from 32 secret bytes; the caller draws them from the OS's randomness.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `bundle` in place: fills its signature block.
    pub fn sign_bundle(&self, bundle: &mut Bundle) {
        // Sign with the block already marked as signed, so the digest is final.
        bundle.signature = None;
        let digest = bundle.body_digest();
        let sig = self.0.sign(&digest);
        bundle.set_signature(Signature {
            public_key: self.public().0,
            signature: sig.to_bytes(),
        });
    }

    /// Reads a secret key file.
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        read_key_file(path, SECRET_HEADER).map(Self::from_seed)
    }

    /// Writes `DIR/signing.key` (mode 0600) and `DIR/signing.pub`, creating `dir`; refuses
    /// to overwrite an existing key. Returns both paths.
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf), SignatureError> {
        let secret = dir.join(SECRET_FILE);
        let public = dir.join(PUBLIC_FILE);
        // `--out signing.key` (taken for the key file): the folder is a file. Said as such,
        // not as "cannot write key file: File exists" (second adversarial pass, issue 16).
        if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
            return Err(SignatureError::NotAFolder {
                path: dir.display().to_string(),
            });
        }
        for p in [&secret, &public] {
            if p.exists() {
                return Err(SignatureError::KeyExists {
                    path: p.display().to_string(),
                });
            }
        }
        let werr = |p: &Path| {
            let path = p.display().to_string();
            move |source| SignatureError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(|source| SignatureError::Folder {
            path: dir.display().to_string(),
            source,
        })?;
        let text = format!("{SECRET_HEADER}\n{}\n", hex::encode(self.0.to_bytes()));
        write_new(&secret, text.as_bytes(), 0o600).map_err(werr(&secret))?;
        let text = format!("{PUBLIC_HEADER}\n{}\n", hex::encode(self.public().0));
        write_new(&public, text.as_bytes(), 0o644).map_err(werr(&public))?;
        Ok((secret, public))
    }
}

impl PublicKey {
    /// Reads a public key file.
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let bytes = read_key_file(path, PUBLIC_HEADER)?;
        if VerifyingKey::from_bytes(&bytes).is_err() {
            return Err(SignatureError::MalformedKey {
                path: path.display().to_string(),
                problem: "the 32 bytes are not a valid ed25519 public key".into(),
            });
        }
        Ok(PublicKey(bytes))
    }

    /// A key written as its 64 hex digits (the second line of a `signing.pub`), e.g. in a
    /// config file; `origin` names where in errors.
    pub fn from_hex(hex_text: &str, origin: &str) -> Result<Self, SignatureError> {
        let bad = |problem: String| SignatureError::MalformedKey {
            path: origin.to_string(),
            problem,
        };
        let bytes = hex::decode(hex_text.trim())
            .map_err(|e| bad(format!("the key `{hex_text}` is not hex: {e}")))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            bad(format!(
                "the key has {} bytes, expected 32 (64 hex digits)",
                b.len()
            ))
        })?;
        if VerifyingKey::from_bytes(&bytes).is_err() {
            return Err(bad("the 32 bytes are not a valid ed25519 public key".into()));
        }
        Ok(PublicKey(bytes))
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Key files are ~100 bytes; anything past this is not one.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

fn read_key_file(path: &Path, header: &str) -> Result<[u8; 32], SignatureError> {
    let bad = |problem: String| SignatureError::MalformedKey {
        path: path.display().to_string(),
        problem,
    };
    // A key file is two short lines: a FIFO or a huge file in `trusted-keys/` must not
    // hang or swamp `install` and `run`.
    let bytes =
        crate::regular_file::read(path, MAX_KEY_FILE_BYTES, "a key file").map_err(|e| match e {
            crate::regular_file::OpenError::Io { source, .. } => SignatureError::Read {
                path: path.display().to_string(),
                source,
            },
            crate::regular_file::OpenError::NotRegular { kind, .. } => {
                bad(format!("it is {kind}, not a regular file; it was not read"))
            }
            crate::regular_file::OpenError::TooLarge { size, limit, .. } => {
                bad(format!("it is {size} bytes; a key file is at most {limit}"))
            }
        })?;
    let text = String::from_utf8(bytes).map_err(|_| bad("it is not UTF-8 text".into()))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    if first != header {
        let other = if header == SECRET_HEADER {
            PUBLIC_HEADER
        } else {
            SECRET_HEADER
        };
        return Err(bad(if first == other {
            format!("expected a `{header}` file but this is a `{other}` file")
        } else {
            format!("the first line must be `{header}`")
        }));
    }
    let hex_line = lines
        .next()
        .ok_or_else(|| bad("the key line (64 hex digits) is missing".into()))?;
    if lines.next().is_some() {
        return Err(bad("unexpected lines after the key".into()));
    }
    let bytes = hex::decode(hex_line).map_err(|e| bad(format!("the key line is not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        bad(format!(
            "the key has {} bytes, expected 32 (64 hex digits)",
            b.len()
        ))
    })
}

/// How a bundle passed [`verify_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Signed by this trusted key (its fingerprint).
    Signed(String),
    /// Unsigned, accepted because the caller allowed unsigned bundles.
    Unsigned,
}

impl Verified {
    /// The signer's fingerprint, or `unsigned`.
    pub fn describe(&self) -> &str {
        match self {
            Verified::Signed(f) => f,
            Verified::Unsigned => "unsigned",
        }
    }
}

/// What a bundle's signature is worth on this box: the one answer every command shows
/// (`inspect`, `classify`, `status`, `bench`) and `install` decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Signed, the signature verifies, and the key is one of the trusted keys.
    Valid { fingerprint: String },
    /// Signed, but the signature does not verify against the key stored beside it: the
    /// bundle was changed after signing (whether or not the key is trusted).
    Invalid { fingerprint: String },
    /// Signed and the signature verifies, but the key is not one of the trusted keys.
    Untrusted { fingerprint: String },
    /// No signature block.
    Unsigned,
}

impl SignatureStatus {
    /// `valid`, `invalid`, `untrusted` or `unsigned` (the JSON reports' value).
    pub fn as_str(&self) -> &'static str {
        match self {
            SignatureStatus::Valid { .. } => "valid",
            SignatureStatus::Invalid { .. } => "invalid",
            SignatureStatus::Untrusted { .. } => "untrusted",
            SignatureStatus::Unsigned => "unsigned",
        }
    }

    /// The signing key's fingerprint, or `unsigned`.
    pub fn signer(&self) -> &str {
        match self {
            SignatureStatus::Valid { fingerprint }
            | SignatureStatus::Invalid { fingerprint }
            | SignatureStatus::Untrusted { fingerprint } => fingerprint,
            SignatureStatus::Unsigned => "unsigned",
        }
    }

    /// One line for people: the status, the signer, and for anything but `valid` what it
    /// means and what to do. `trusted` is how many keys were trusted when checking.
    pub fn describe(&self, trusted: usize) -> String {
        match self {
            SignatureStatus::Valid { fingerprint } => {
                format!("valid (signed by trusted key `{fingerprint}`)")
            }
            SignatureStatus::Invalid { fingerprint } => format!(
                "INVALID: the signature does not verify against its key `{fingerprint}`; the bundle was changed after it was signed, do not use it"
            ),
            SignatureStatus::Untrusted { fingerprint } => format!(
                "untrusted: signed by `{fingerprint}`, which is not among the {trusted} trusted key(s) (--trusted-key, edge.toml model.trusted_keys, ROOT/trusted-keys/*.pub); `install` would refuse it"
            ),
            SignatureStatus::Unsigned => format!(
                "unsigned: `install` refuses it without --allow-unsigned; {SIGN_HINT}"
            ),
        }
    }
}

/// The [`SignatureStatus`] of `bundle` against `trusted`. The signature is verified against
/// the key stored in the bundle first, so a changed bundle is `Invalid` even when its key
/// is not trusted.
pub fn check(bundle: &Bundle, trusted: &[PublicKey]) -> SignatureStatus {
    let Some(sig) = &bundle.signature else {
        return SignatureStatus::Unsigned;
    };
    let fingerprint = fingerprint(&sig.public_key);
    let verifies = VerifyingKey::from_bytes(&sig.public_key).is_ok_and(|key| {
        key.verify_strict(
            &bundle.signed_digest(),
            &ed25519_dalek::Signature::from_bytes(&sig.signature),
        )
        .is_ok()
    });
    if !verifies {
        SignatureStatus::Invalid { fingerprint }
    } else if trusted.iter().any(|k| k.0 == sig.public_key) {
        SignatureStatus::Valid { fingerprint }
    } else {
        SignatureStatus::Untrusted { fingerprint }
    }
}

/// Checks a bundle's signature: the signature must verify over the bytes read
/// ([`Bundle::signed_digest`]) and the signing key must be one of `trusted`. An unsigned
/// bundle passes only with `allow_unsigned`; a signed bundle is always checked.
pub fn verify_bundle(
    bundle: &Bundle,
    trusted: &[PublicKey],
    allow_unsigned: bool,
) -> Result<Verified, SignatureError> {
    match check(bundle, trusted) {
        SignatureStatus::Valid { fingerprint } => Ok(Verified::Signed(fingerprint)),
        SignatureStatus::Unsigned if allow_unsigned => Ok(Verified::Unsigned),
        SignatureStatus::Unsigned => Err(SignatureError::Unsigned),
        SignatureStatus::Invalid { fingerprint } => {
            Err(SignatureError::BadSignature { fingerprint })
        }
        SignatureStatus::Untrusted { fingerprint } => Err(SignatureError::UntrustedKey {
            fingerprint,
            trusted: if trusted.is_empty() {
                "none".to_string()
            } else {
                trusted
                    .iter()
                    .map(|k| format!("`{}`", k.fingerprint()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn signed(k: &SecretKey) -> Vec<u8> {
        let mut b = crate::bundle::tests::sample();
        k.sign_bundle(&mut b);
        b.to_bytes()
    }

    #[test]
    fn signed_bundle_round_trips_and_verifies() {
        let k = key(1);
        let b = Bundle::from_bytes(&signed(&k)).unwrap();
        let v = verify_bundle(&b, &[k.public()], false).unwrap();
        assert_eq!(v, Verified::Signed(k.public().fingerprint()));
        // A bundle signed in memory verifies too.
        let mut m = crate::bundle::tests::sample();
        k.sign_bundle(&mut m);
        assert!(verify_bundle(&m, &[k.public()], false).is_ok());
    }

    #[test]
    fn refusals_have_their_messages() {
        let k = key(1);
        let other = key(2);
        let b = Bundle::from_bytes(&signed(&k)).unwrap();
        let e = verify_bundle(&b, &[other.public()], false).unwrap_err();
        assert!(matches!(e, SignatureError::UntrustedKey { .. }));
        assert!(e.to_string().contains(&k.public().fingerprint()), "{e}");
        let u = Bundle::from_bytes(&crate::bundle::tests::sample().to_bytes()).unwrap();
        assert!(matches!(
            verify_bundle(&u, &[k.public()], false),
            Err(SignatureError::Unsigned)
        ));
        assert_eq!(verify_bundle(&u, &[], true).unwrap(), Verified::Unsigned);
        // Manifest changed after signing, checksum recomputed: the signature fails.
        let mut t = b.clone();
        t.manifest.model_version = "2".into();
        let e = verify_bundle(
            &Bundle::from_bytes(&t.to_bytes()).unwrap(),
            &[k.public()],
            false,
        )
        .unwrap_err();
        assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");
        // Changed after signing and signed by an untrusted key: invalid comes first.
        let t = Bundle::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(
            check(&t, &[other.public()]),
            SignatureStatus::Invalid {
                fingerprint: k.public().fingerprint()
            }
        );
        assert!(matches!(
            verify_bundle(&t, &[other.public()], true),
            Err(SignatureError::BadSignature { .. })
        ));
    }

    #[test]
    fn the_status_tells_valid_invalid_untrusted_and_unsigned_apart() {
        let k = key(1);
        let b = Bundle::from_bytes(&signed(&k)).unwrap();
        let fp = k.public().fingerprint();
        assert_eq!(check(&b, &[k.public()]).as_str(), "valid");
        assert_eq!(check(&b, &[key(2).public()]).as_str(), "untrusted");
        assert_eq!(check(&b, &[]).signer(), fp);
        let mut t = b.clone();
        t.manifest.model_id = "changed".into();
        let t = Bundle::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(check(&t, &[k.public()]).as_str(), "invalid");
        let u = Bundle::from_bytes(&crate::bundle::tests::sample().to_bytes()).unwrap();
        assert_eq!(check(&u, &[k.public()]), SignatureStatus::Unsigned);
        let hint = SignatureStatus::Unsigned.describe(1);
        for way in [
            "export --sign",
            "prototypes --sign",
            "quantize --sign",
            "keygen",
        ] {
            assert!(hint.contains(way), "{hint}");
        }
        assert!(SignatureError::Unsigned
            .to_string()
            .contains("quantize --sign"));
    }

    #[test]
    fn key_files_round_trip_and_malformed_ones_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(7);
        let (sk, pk) = k.write_pair(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(SecretKey::read(&sk).unwrap().public(), k.public());
        assert_eq!(PublicKey::read(&pk).unwrap(), k.public());
        let hex_line = std::fs::read_to_string(&pk).unwrap();
        let hex_line = hex_line.lines().nth(1).unwrap();
        assert_eq!(PublicKey::from_hex(hex_line, "t").unwrap(), k.public());
        assert!(PublicKey::from_hex("abcd", "t").is_err());
        assert!(matches!(
            k.write_pair(dir.path()),
            Err(SignatureError::KeyExists { .. })
        ));
        let e = PublicKey::read(&sk).unwrap_err();
        assert!(
            e.to_string().contains("signing.key") && e.to_string().contains("secret key"),
            "{e}"
        );
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, format!("{PUBLIC_HEADER}\nabcd\n")).unwrap();
        let e = PublicKey::read(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "malformed key file `{}`: the key has 2 bytes, expected 32 (64 hex digits)",
                bad.display()
            )
        );
    }
}
