//! Writes the two tiny bundles that `scripts/box.sh` runs in its camera, unplug and
//! power-cut cases: `cargo run --example tiny_bundles -- DIR` -> `DIR/tiny-a.lsb` and
//! `DIR/tiny-b.lsb`.
//!
//! The model is the integration tests' tiny one (`tests/it/tiny.rs`: a hand-written ONNX
//! graph, image [1,3,8,8] -> GlobalAveragePool -> MatMul -> 3 logits, with self-test
//! vectors computed by the runtime's own `Engine`): a real bundle through every check of
//! `install` and `run`, but one whose inference costs microseconds. Inside the emulated
//! ARM64 box a MobileNetV2 frame costs about two seconds of CPU and its load several more,
//! which 300 camera frames and 60 boots of power cuts cannot afford; MobileNetV2 itself is
//! checked on ARM by the box's `same-answers` case.
//!
//! `tiny-a` and `tiny-b` compute differently (the weights are scaled) and carry 2,000
//! extra self-test vectors each, so that a bundle is about 0.4 MB: `install` then spends
//! a measurable time writing and self-testing it, which the power cuts land in.

#[path = "../tests/it/tiny.rs"]
mod tiny;

use linesight_edge::engine::Engine;
use linesight_shared::manifest::SelfTestVector;
use linesight_shared::preprocess::Preprocessor;
use std::path::PathBuf;

const EXTRA_VECTORS: u32 = 2_000;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: tiny_bundles DIR"))?,
    );
    fs_err::create_dir_all(&dir)?;
    for (id, scale) in [("tiny-a", 1.0), ("tiny-b", 2.0)] {
        let mut b = tiny::bundle("1", scale);
        b.manifest.model_id = id.into();
        let mut engine = Engine::from_bundle(&b)?;
        let pre = Preprocessor::new(b.manifest.preprocess);
        let mut input = vec![0.0; engine.input_len()];
        for v in 0..EXTRA_VECTORS {
            let rgb: Vec<u8> = (0..8 * 8 * 3u32)
                .map(|i| ((i * 31 + v * 7) % 256) as u8)
                .collect();
            pre.normalize_crop(&rgb, &mut input)?;
            let mut logits = vec![0.0; tiny::LABELS];
            engine.infer(&input, &mut logits)?;
            b.manifest.self_test.push(SelfTestVector {
                rgb,
                expected_logits: logits,
                tolerance: 1e-4,
            });
        }
        let path = dir.join(format!("{id}.lsb"));
        fs_err::write(&path, b.to_bytes())?;
        println!("{}", path.display());
    }
    Ok(())
}
