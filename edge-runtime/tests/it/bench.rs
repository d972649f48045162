//! `linesight-edge bench`: the latency report's JSON keys and values, and `--pipeline`.

use crate::tiny;
use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.lsb");
    tiny::bundle("1", 1.0).write(&path).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_linesight-edge"))
        .arg("bench")
        .arg("--bundle")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.trim().lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn bench_json_has_the_documented_keys() {
    let v = bench(&[
        "--iterations",
        "20",
        "--warmup",
        "2",
        "--threads",
        "2",
        "--profile",
        "--json",
    ]);
    for key in [
        "load_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "peak_rss_bytes",
        "bundle_bytes",
        "preprocess_p50_ms",
        "infer_p50_ms",
        "load_read_ms",
        "load_verify_ms",
        "load_plan_ms",
        "load_warm_ms",
        "build",
        "kernels",
    ] {
        assert!(v.get(key).is_some(), "no `{key}` in {v}");
    }
    let f = |k: &str| v[k].as_f64().unwrap();
    assert!(f("load_ms") > 0.0 && f("p50_ms") > 0.0);
    assert!(f("p50_ms") <= f("p95_ms") && f("p95_ms") <= f("p99_ms"));
    assert!(f("preprocess_p50_ms") + f("infer_p50_ms") <= f("p99_ms") * 2.0);
    assert!(f("peak_rss_bytes") > 1e6);
    assert!(f("bundle_bytes") > f("onnx_bytes"));
    assert_eq!(v["threads"], 2);
    // The build that measured is named: this test binary's own.
    assert_eq!(
        v["build"]["debug_assertions"].as_bool(),
        Some(cfg!(debug_assertions))
    );
    assert_eq!(v["infer_ms"].as_array().unwrap().len(), 20);
    let ops = v["profile"]["ops"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["op"].as_str().unwrap().contains("MatMul")),
        "the tiny model's matmul is profiled: {ops:?}"
    );
}

#[test]
fn bench_pipeline_still_measures_the_run_loop() {
    let v = bench(&[
        "--pipeline",
        "--frames",
        "5",
        "--rounds",
        "2",
        "--size",
        "32x24",
        "--json",
    ]);
    assert_eq!(v["rounds"], 2);
    assert_eq!(v["pipeline_fps"].as_array().unwrap().len(), 2);
    assert!(v["bare_fps_median"].as_f64().unwrap() > 0.0);
}
