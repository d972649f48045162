//! Manifest decoding never panics, and what decodes encodes back to an equal manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linesight_shared::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = postcard::from_bytes::<Manifest>(data) {
        let bytes = postcard::to_stdvec(&m).expect("a decoded manifest encodes");
        let back: Manifest = postcard::from_bytes(&bytes).expect("its encoding decodes");
        // NaN floats are not equal to themselves; compare the encodings instead.
        assert_eq!(postcard::to_stdvec(&back).expect("encodes"), bytes);
    }
});
