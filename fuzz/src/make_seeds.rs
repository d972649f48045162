//! Writes the seed corpus: a small unsigned and a small signed bundle, and their manifest,
//! into fuzz/corpus/{bundle,manifest}/.

use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::*;
use linesight_shared::signature::SecretKey;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let manifest = Manifest {
        model_id: "seed".into(),
        model_version: "1".into(),
        labels: vec!["Indigo Bunting".into(), "Cedar Waxwing".into()],
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
        self_test: vec![SelfTestVector {
            rgb: vec![128; 12],
            expected_logits: vec![0.5, -0.5],
            tolerance: 1e-3,
        }],
        parity: Parity::default(),
        provenance: Provenance::default(),
        min_runtime_version: "0.1.0".into(),
        v2: Default::default(),
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    std::fs::create_dir_all(dir.join("bundle"))?;
    std::fs::create_dir_all(dir.join("manifest"))?;
    let mut b = Bundle::new(manifest, b"\x08\x07tiny onnx".to_vec());
    std::fs::write(dir.join("bundle/unsigned.lsb"), b.to_bytes())?;
    std::fs::write(
        dir.join("manifest/seed.postcard"),
        postcard::to_stdvec(&b.manifest).expect("encodes"),
    )?;
    SecretKey::from_seed([7; 32]).sign_bundle(&mut b);
    std::fs::write(dir.join("bundle/signed.lsb"), b.to_bytes())?;
    println!("seeds written to {}", dir.display());
    Ok(())
}
