//! The `*.lsb` bundle: one file a technician can copy, holding a manifest, the ONNX bytes
//! and room for an ed25519 signature.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"LSBUNDLE"
//! 8       4     format version (u32)           -- read before anything else
//! 12      4     manifest length M (u32)
//! 16      8     model length N (u64)
//! 24      M     manifest (postcard, see crate::manifest; from version 2 followed by
//!               the postcard ManifestV2 fields)
//! 24+M    N     model (ONNX protobuf)
//! ..      1     signature kind: 0 = unsigned, 1 = ed25519
//! ..      96    only when kind = 1: public key (32) + signature (64) over
//!               sha256(bytes 0 .. end of model)
//! ..      32    sha256 of every byte before it (catches a flipped byte anywhere,
//!               signed or not)
//! ```
//!
//! Refusal rules, in the order they are checked: wrong magic, newer format version,
//! truncation, file checksum, manifest decoding, model hash.

use crate::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::path::Path;

/// File magic, the first 8 bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"LSBUNDLE";
/// The newest bundle format this build reads. It writes version 1 unless the manifest
/// carries version-2 fields ([`crate::manifest::ManifestV2`]).
pub const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 24;
const CHECKSUM_LEN: usize = 32;
/// Hard upper bound on the manifest, so a corrupt length cannot ask for gigabytes.
const MAX_MANIFEST_LEN: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("bundle `{path}` is {kind}, not a file; it was not read")]
    NotAFile {
        path: String,
        kind: crate::regular_file::FileKind,
    },
    #[error("cannot write bundle `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("not a linesight bundle: the file starts with {found:02x?}, expected the magic `LSBUNDLE`; check that you picked the `.lsb` file and not the raw ONNX model")]
    WrongMagic { found: Vec<u8> },
    #[error("bundle format version {found} is newer than this runtime supports (up to {supported}); update linesight-edge before installing this bundle")]
    NewerFormat { found: u32, supported: u32 },
    #[error("bundle format version {found} is not a valid version (supported: 1..={supported})")]
    InvalidFormat { found: u32, supported: u32 },
    #[error("bundle is truncated: {what} needs {expected} bytes but the file has {got}; copy the file again")]
    Truncated {
        what: &'static str,
        expected: u64,
        got: u64,
    },
    #[error("bundle has {extra} unexpected bytes after its checksum; the file is damaged or not a linesight bundle")]
    TrailingBytes { extra: u64 },
    #[error("bundle checksum mismatch: the file is corrupt (expected sha256 {expected}, computed {computed}); copy the file again")]
    ChecksumMismatch { expected: String, computed: String },
    #[error("unknown signature kind {0} in bundle; it was written by a newer or broken trainer")]
    UnknownSignatureKind(u8),
    #[error("bundle manifest cannot be decoded: {0}")]
    Manifest(#[source] postcard::Error),
    #[error("bundle manifest has {extra} bytes after its end; the file was altered or written by a broken trainer")]
    ManifestTrailing { extra: usize },
    #[error("bundle manifest is not in its canonical encoding (it decodes, but re-encodes to other bytes); the file was altered or written by a broken trainer")]
    ManifestNotCanonical,
    #[error("model hash mismatch: the manifest expects sha256 {expected} but the model bytes hash to {computed}; the bundle was tampered with or built wrongly")]
    ModelHashMismatch { expected: String, computed: String },
}

/// The fixed header's fields, checked against the file's length.
struct Header {
    version: u32,
    manifest_len: u32,
    /// Offset of the signature kind byte: header + manifest + model.
    body_end: u64,
}

impl Header {
    /// Checks the first [`HEADER_LEN`] bytes (`head`; fewer when the file is shorter) of a
    /// file of `got` bytes: magic, version, lengths, and that the file holds at least
    /// what they announce. Fails on the first refusal of the module doc's order.
    fn parse(head: &[u8], got: u64) -> Result<Header, BundleError> {
        if head.len() < MAGIC.len() || &head[..MAGIC.len()] != MAGIC {
            return Err(BundleError::WrongMagic {
                found: head[..head.len().min(MAGIC.len())].to_vec(),
            });
        }
        if head.len() < HEADER_LEN {
            return Err(BundleError::Truncated {
                what: "the header",
                expected: HEADER_LEN as u64,
                got,
            });
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(BundleError::NewerFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(BundleError::InvalidFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest_len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
        let model_len = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(BundleError::Truncated {
                what: "the manifest (its length field is implausible)",
                expected: manifest_len as u64,
                got,
            });
        }
        let body_end = (HEADER_LEN as u64)
            .checked_add(manifest_len as u64)
            .and_then(|v| v.checked_add(model_len))
            .ok_or(BundleError::Truncated {
                what: "the model (its length field is implausible)",
                expected: u64::MAX,
                got,
            })?;
        // Saturating: a model length near u64::MAX must be refused, not wrap (found by `fuzz/`).
        let min_total = body_end.saturating_add(1 + CHECKSUM_LEN as u64);
        if got < min_total {
            return Err(BundleError::Truncated {
                what: "manifest, model and checksum",
                expected: min_total,
                got,
            });
        }
        Ok(Header {
            version,
            manifest_len,
            body_end,
        })
    }

    /// The longest file this header allows (signed: kind byte, key, signature, checksum).
    fn max_total(&self) -> u64 {
        self.body_end + 1 + 96 + CHECKSUM_LEN as u64
    }
}

/// A bundle file's bytes, read only after its fixed header checked out: a file that is
/// not a bundle (or a FIFO, or a device) is refused after reading at most 24 bytes, and a
/// bundle is read up to the length its header announces, never further. Fails on the
/// refusals [`Bundle::from_bytes`] makes from the header alone, and on IO errors.
pub fn read_file_bytes(path: &Path) -> Result<Vec<u8>, BundleError> {
    use std::io::Read;
    let read_err = |source| BundleError::Read {
        path: path.display().to_string(),
        source,
    };
    let (file, md) = crate::regular_file::open(path).map_err(|e| match e {
        crate::regular_file::OpenError::NotRegular { kind, .. } => BundleError::NotAFile {
            path: path.display().to_string(),
            kind,
        },
        crate::regular_file::OpenError::Io { source, .. } => read_err(source),
        // `open` itself bounds nothing.
        e @ crate::regular_file::OpenError::TooLarge { .. } => {
            read_err(std::io::Error::other(e.to_string()))
        }
    })?;
    let got = md.len();
    let mut head = Vec::with_capacity(HEADER_LEN);
    (&file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let header = Header::parse(&head, got)?;
    let max_total = header.max_total();
    if got > max_total {
        return Err(BundleError::TrailingBytes {
            extra: got - max_total,
        });
    }
    let mut bytes = Vec::with_capacity(got as usize);
    bytes.extend_from_slice(&head);
    (&file)
        .take(got - head.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// The optional ed25519 signature block (filled by `linesight-train export`, `prototypes`
/// or `quantize` with `--sign`, through [`crate::signature::SecretKey::sign_bundle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

/// A decoded, checksum- and hash-verified bundle. Signature verification against trusted
/// keys is a separate step ([`Bundle::signed_digest`] gives the signed bytes' digest).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub format_version: u32,
    pub manifest: Manifest,
    pub model: Vec<u8>,
    pub signature: Option<Signature>,
    signed_digest: [u8; 32],
}

impl Bundle {
    /// A bundle ready to be written; `manifest.model_sha256` is set from `model`.
    pub fn new(mut manifest: Manifest, model: Vec<u8>) -> Self {
        manifest.model_sha256 = sha256(&model);
        Bundle {
            format_version: if manifest.v2.is_empty() { 1 } else { 2 },
            manifest,
            model,
            signature: None,
            signed_digest: [0; 32],
        }
    }

    /// sha256 over header, manifest and model: the message an ed25519 signature signs.
    pub fn signed_digest(&self) -> [u8; 32] {
        self.signed_digest
    }

    /// Sets the signature block and the signed digest (used by
    /// [`crate::signature::SecretKey::sign_bundle`], which signs [`Bundle::body_digest`]).
    pub fn set_signature(&mut self, signature: Signature) {
        self.signature = None;
        self.signed_digest = self.body_digest();
        self.signature = Some(signature);
    }

    /// Serializes the bundle. The body digest is recomputed, so a signature set before must
    /// have been made over [`Bundle::body_digest`] of the same manifest and model.
    pub fn to_bytes(&self) -> Vec<u8> {
        let manifest = encode_manifest(&self.manifest, self.format_version);
        let mut out = Vec::with_capacity(HEADER_LEN + manifest.len() + self.model.len() + 130);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.format_version.to_le_bytes());
        out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.model.len() as u64).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.extend_from_slice(&self.model);
        match &self.signature {
            None => out.push(0),
            Some(sig) => {
                out.push(1);
                out.extend_from_slice(&sig.public_key);
                out.extend_from_slice(&sig.signature);
            }
        }
        let checksum = sha256(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// The digest a signer signs for this manifest and model (header + manifest + model).
    pub fn body_digest(&self) -> [u8; 32] {
        let bytes = self.to_bytes();
        let manifest_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        sha256(&bytes[..HEADER_LEN + manifest_len + self.model.len()])
    }

    /// Parses and verifies a bundle from memory. Fails on wrong magic, a newer format,
    /// truncation, a checksum mismatch, an undecodable manifest or a model hash mismatch.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let got = bytes.len() as u64;
        let Header {
            version,
            manifest_len,
            body_end,
        } = Header::parse(&bytes[..bytes.len().min(HEADER_LEN)], got)?;
        let body_end = body_end as usize;
        let kind = bytes[body_end];
        let sig_len = match kind {
            0 => 0,
            1 => 96,
            other => {
                // Check the checksum first: a flipped kind byte is corruption, not a new kind.
                verify_checksum(bytes)?;
                return Err(BundleError::UnknownSignatureKind(other));
            }
        };
        let total = body_end + 1 + sig_len + CHECKSUM_LEN;
        if bytes.len() < total {
            return Err(BundleError::Truncated {
                what: "signature and checksum",
                expected: total as u64,
                got,
            });
        }
        if bytes.len() > total {
            return Err(BundleError::TrailingBytes {
                extra: (bytes.len() - total) as u64,
            });
        }
        verify_checksum(bytes)?;
        let manifest_bytes = &bytes[HEADER_LEN..HEADER_LEN + manifest_len as usize];
        // `take_from_bytes`: postcard's `from_bytes` would ignore bytes after the manifest,
        // and a bundle must be exactly what it says it is (found by `fuzz/`, target bundle).
        let (mut manifest, mut rest): (Manifest, _) =
            postcard::take_from_bytes(manifest_bytes).map_err(BundleError::Manifest)?;
        if version >= 2 {
            let (v2, r) = postcard::take_from_bytes(rest).map_err(BundleError::Manifest)?;
            manifest.v2 = v2;
            rest = r;
        }
        if !rest.is_empty() {
            return Err(BundleError::ManifestTrailing { extra: rest.len() });
        }
        // One manifest, one encoding: postcard also decodes overlong varints, which would let
        // two different files (and signatures) carry the same manifest (found by `fuzz/`).
        if encode_manifest(&manifest, version) != manifest_bytes {
            return Err(BundleError::ManifestNotCanonical);
        }
        let model = bytes[HEADER_LEN + manifest_len as usize..body_end].to_vec();
        let computed = sha256(&model);
        if computed != manifest.model_sha256 {
            return Err(BundleError::ModelHashMismatch {
                expected: hex::encode(manifest.model_sha256),
                computed: hex::encode(computed),
            });
        }
        let signature = (kind == 1).then(|| {
            let s = &bytes[body_end + 1..body_end + 97];
            Signature {
                public_key: s[..32].try_into().expect("32 bytes"),
                signature: s[32..].try_into().expect("64 bytes"),
            }
        });
        Ok(Bundle {
            format_version: version,
            manifest,
            model,
            signature,
            signed_digest: sha256(&bytes[..body_end]),
        })
    }

    /// Reads a bundle file with [`read_file_bytes`] (the header first) and verifies it.
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        Self::from_bytes(&read_file_bytes(path)?)
    }

    /// Writes the bundle crash-safely: to `PATH.tmp`, fsync, rename over `PATH`.
    pub fn write(&self, path: &Path) -> Result<(), BundleError> {
        let err = |source| BundleError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("lsb.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&self.to_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(())
    }
}

fn verify_checksum(bytes: &[u8]) -> Result<(), BundleError> {
    let (body, tail) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let computed = sha256(body);
    if computed.as_slice() != tail {
        return Err(BundleError::ChecksumMismatch {
            expected: hex::encode(tail),
            computed: hex::encode(computed),
        });
    }
    Ok(())
}

/// The manifest's bytes in a bundle of format `version`.
fn encode_manifest(manifest: &Manifest, version: u32) -> Vec<u8> {
    let mut bytes = postcard::to_stdvec(manifest).expect("manifest serializes to memory");
    if version >= 2 {
        bytes.extend(postcard::to_stdvec(&manifest.v2).expect("manifest serializes to memory"));
    }
    bytes
}

/// sha256 of a byte slice.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::*;

    impl Bundle {
        fn manifest_with_hash(&self) -> Manifest {
            self.manifest.clone()
        }
    }

    pub(crate) fn sample() -> Bundle {
        let manifest = Manifest {
            model_id: "test".into(),
            model_version: "1".into(),
            labels: vec!["a".into(), "b".into()],
            preprocess: PreprocessSpec::imagenet(),
            input: TensorSpec {
                name: "image".into(),
                shape: vec![1, 3, 224, 224],
            },
            output: TensorSpec {
                name: "logits".into(),
                shape: vec![1, 2],
            },
            precision: Precision::F32,
            model_sha256: [0; 32],
            decision: DecisionRule::default(),
            self_test: vec![],
            parity: Parity::default(),
            provenance: Provenance::default(),
            min_runtime_version: "0.1.0".into(),
            v2: ManifestV2::default(),
        };
        Bundle::new(manifest, b"not really onnx".to_vec())
    }

    #[test]
    fn a_model_length_near_u64_max_is_refused_not_wrapped() {
        // The header of fuzz/ artifact crash-925f6615: model length 0x33ffffffffffffff26... wraps.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0xb9u32.to_le_bytes());
        bytes.extend_from_slice(&(u64::MAX - 0xb9 - 24 - 5).to_le_bytes());
        bytes.extend_from_slice(&[0x33, 0x2a]);
        let err = Bundle::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, BundleError::Truncated { .. }), "{err}");
    }

    /// An unsigned container around raw manifest bytes, lengths and checksum consistent.
    fn unsigned_container(manifest: &[u8], model: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(model.len() as u64).to_le_bytes());
        bytes.extend_from_slice(manifest);
        bytes.extend_from_slice(model);
        bytes.push(0);
        let sum = sha256(&bytes);
        bytes.extend_from_slice(&sum);
        bytes
    }

    #[test]
    fn an_overlong_varint_in_the_manifest_is_refused() {
        let b = sample();
        let canonical = postcard::to_stdvec(&b.manifest).unwrap();
        // The first field is model_id's length (4, "test"): write it as the 2-byte varint 0x84 0x00.
        assert_eq!(canonical[0], 4);
        let mut manifest = vec![0x84, 0x00];
        manifest.extend_from_slice(&canonical[1..]);
        assert_eq!(
            postcard::from_bytes::<Manifest>(&manifest).unwrap(),
            b.manifest
        );
        let err = Bundle::from_bytes(&unsigned_container(&manifest, &b.model)).unwrap_err();
        assert!(matches!(err, BundleError::ManifestNotCanonical), "{err}");
    }

    #[test]
    fn bytes_after_the_manifest_are_refused() {
        let b = sample();
        let mut manifest = postcard::to_stdvec(&b.manifest).unwrap();
        manifest.extend_from_slice(&[0, 0, 7]);
        let err = Bundle::from_bytes(&unsigned_container(&manifest, &b.model)).unwrap_err();
        assert!(
            matches!(err, BundleError::ManifestTrailing { extra: 3 }),
            "{err}"
        );
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let back = Bundle::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back.manifest, b.manifest);
        assert_eq!(back.model, b.model);
        assert_eq!(back.signature, None);
        assert_eq!(back.signed_digest(), b.body_digest());
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Bundle::from_bytes(&bad).is_err(),
                "flip at byte {i} was accepted"
            );
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(
                Bundle::from_bytes(&bytes[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
    }

    #[test]
    fn newer_version_message() {
        let mut bytes = sample().to_bytes();
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        let err = Bundle::from_bytes(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bundle format version 3 is newer than this runtime supports (up to 2); update linesight-edge before installing this bundle"
        );
    }

    fn sample_v2() -> Bundle {
        let mut b = sample();
        b.manifest.precision = Precision::Int8;
        b.manifest.v2.parity_per_class = vec![
            ClassParity {
                reference: 10,
                kept: 9,
            },
            ClassParity {
                reference: 0,
                kept: 0,
            },
        ];
        Bundle::new(b.manifest, b.model)
    }

    #[test]
    fn f32_bundles_stay_version_1_and_int8_parity_makes_version_2() {
        assert_eq!(sample().format_version, 1);
        let b = sample_v2();
        assert_eq!(b.format_version, 2);
        let bytes = b.to_bytes();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
        let back = Bundle::from_bytes(&bytes).unwrap();
        assert_eq!(back.manifest, b.manifest);
        assert_eq!(back.manifest.v2.parity_per_class[0].recall(), 0.9);
        assert_eq!(back.manifest.v2.parity_per_class[1].recall(), 1.0);
        for len in 0..bytes.len() {
            assert!(
                Bundle::from_bytes(&bytes[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
    }

    #[test]
    fn a_version_1_header_on_a_version_2_manifest_is_refused() {
        // The v2 fields would be trailing bytes of a v1 manifest: refused, not ignored.
        let mut b = sample_v2();
        b.format_version = 1;
        let mut bytes = Vec::new();
        let manifest = encode_manifest(&b.manifest, 2);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(b.model.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&manifest);
        bytes.extend_from_slice(&b.model);
        bytes.push(0);
        let sum = sha256(&bytes);
        bytes.extend_from_slice(&sum);
        let err = Bundle::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, BundleError::ManifestTrailing { .. }), "{err}");
    }

    /// `shared/tests/fixtures/golden-v1.lsb` was written by the version-1 writer (the
    /// sample bundle above, unsigned); it must decode forever.
    #[test]
    fn the_golden_version_1_bundle_decodes() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v1.lsb");
        if std::env::var("LINESIGHT_WRITE_GOLDEN").as_deref() == Ok("1") {
            sample().write(&path).unwrap();
        }
        let b = Bundle::read(&path).unwrap();
        assert_eq!(b.format_version, 1);
        assert_eq!(b.manifest, sample().manifest_with_hash());
        assert_eq!(b.model, b"not really onnx");
    }

    #[test]
    fn model_hash_mismatch_with_valid_checksum() {
        // A bundle rebuilt with a consistent checksum but another model: caught by the hash.
        let mut b = sample();
        b.model = b"other bytes".to_vec();
        let err = Bundle::from_bytes(&b.to_bytes()).unwrap_err();
        assert!(
            matches!(err, BundleError::ModelHashMismatch { .. }),
            "{err}"
        );
    }

    /// Issue 16: a 2 GB file named `.lsb` was read whole before its magic was checked.
    /// The header is read first, and the body only up to what the header announces.
    #[test]
    fn a_file_is_judged_by_its_header_before_its_body_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.lsb");
        sample().write(&good).unwrap();
        assert_eq!(read_file_bytes(&good).unwrap(), sample().to_bytes());

        // Sparse: a terabyte on paper; reading it would take hours and all memory.
        let huge = dir.path().join("huge.lsb");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let t = std::time::Instant::now();
        let e = Bundle::read(&huge).unwrap_err();
        assert!(matches!(e, BundleError::WrongMagic { .. }), "{e}");
        // A real header, then a terabyte more than it announces.
        let f = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &sample().to_bytes(), 0).unwrap();
        let e = Bundle::read(&huge).unwrap_err();
        assert!(matches!(e, BundleError::TrailingBytes { .. }), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));

        let fifo = dir.path().join("fifo.lsb");
        crate::regular_file::tests::mkfifo(&fifo);
        let e = Bundle::read(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = Bundle::read(dir.path()).unwrap_err();
        assert!(matches!(e, BundleError::NotAFile { .. }), "{e}");
    }
}
