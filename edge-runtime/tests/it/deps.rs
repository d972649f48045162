//! The runtime's dependency rule (ARCHITECTURE.md): no candle, no HTTP client, ever.
//! Checked over `cargo tree` of the runtime's normal and build dependencies, all features.

use std::process::Command;

/// Crates that must never reach the box.
const FORBIDDEN: [&str; 12] = [
    "candle-core",
    "candle-nn",
    "candle-transformers",
    "reqwest",
    "hyper",
    "hyper-util",
    "ureq",
    "isahc",
    "curl",
    "surf",
    "attohttpc",
    "linesight-trainer",
];

#[test]
fn runtime_links_no_candle_and_no_http_client() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "linesight-edge",
            "-e",
            "normal,build",
            "--all-features",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"tract-onnx"),
        "sanity: the tree lists tract-onnx:\n{tree}"
    );
    for bad in FORBIDDEN {
        assert!(
            !crates.contains(&bad),
            "`{bad}` is in linesight-edge's dependency tree"
        );
    }
}
