//! Bundle parsing never panics, and a bundle that parses writes back to the same bytes.
//!
//! Two ways in: the input as a whole file (mostly stopped by magic, lengths, checksum),
//! and the input as the body of a well-formed container (header lengths and the trailing
//! checksum made consistent here), so that manifest decoding, the model hash and the
//! signature block get fuzzed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linesight_shared::bundle::{Bundle, FORMAT_VERSION, MAGIC};
use linesight_shared::signature::{verify_bundle, PublicKey};
use sha2::{Digest, Sha256};

fn check(bytes: &[u8]) {
    if let Ok(b) = Bundle::from_bytes(bytes) {
        assert_eq!(b.to_bytes(), bytes, "a parsed bundle must write back unchanged");
        let _ = verify_bundle(&b, &[], true);
        if let Some(sig) = &b.signature {
            let _ = verify_bundle(&b, &[PublicKey(sig.public_key)], false);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() < 3 {
        return;
    }
    // [split: 2 bytes][kind: 1 byte][rest = manifest ++ model ++ signature]
    let split = u16::from_le_bytes([data[0], data[1]]) as usize;
    let kind = data[2] % 3; // 0 unsigned, 1 ed25519, 2 unknown
    let rest = &data[3..];
    let sig_len = if kind == 1 { 96.min(rest.len()) } else { 0 };
    let (body, sig) = rest.split_at(rest.len() - sig_len);
    let m = split.min(body.len());
    let (manifest, model) = body.split_at(m);
    let mut b = Vec::with_capacity(data.len() + 64);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    b.extend_from_slice(&(model.len() as u64).to_le_bytes());
    b.extend_from_slice(manifest);
    b.extend_from_slice(model);
    b.push(kind);
    b.extend_from_slice(sig);
    let sum = Sha256::digest(&b);
    b.extend_from_slice(&sum);
    check(&b);
});
