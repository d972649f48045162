//! The whole NeaR pipeline on the demo photos (real MobileNetV2 and MiniLM weights) against
//! the in-process MLLM simulator: label -> refine -> train -> export -> eval, then the
//! stage skipping by input hash.

use crate::weights::{repo_root, weights};
use linesight_trainer::commands::pipeline::{run, PipelineSettings};

fn config(work: &std::path::Path, method: &str) -> String {
    let demo = repo_root().join("models/demo/manifest.csv");
    let demo = demo.display();
    format!(
        r#"
work_dir = "{work}"
[images]
manifest = "{demo}"
split = "train"
[simulator]
truth = "{demo}"
accuracy = 0.7
seed = 3
[label]
model = "simulated"
[refine.vocab]
min_images = 2
[refine.candidates]
k = 5
[train]
method = "{method}"
[export]
model_id = "pipeline-test"
[eval]
manifest = "{demo}"
split = "test"
"#,
        work = work.display()
    )
}

#[test]
fn pipeline_runs_end_to_end_and_skips_unchanged_stages() {
    let test = "pipeline_runs_end_to_end_and_skips_unchanged_stages";
    let Some(w) = weights("mobilenet_v2.safetensors", test) else {
        return;
    };
    if weights("all-MiniLM-L6-v2/model.safetensors", test).is_none() {
        return;
    }
    let weights_dir = w.parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let cfg = tmp.path().join("p.toml");
    std::fs::write(&cfg, config(&work, "near")).unwrap();
    let settings = PipelineSettings {
        config: cfg.clone(),
        weights_dir,
        force: false,
    };
    let first = run(&settings).expect("pipeline runs");
    let status: Vec<(&str, &str)> = first
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        status,
        vec![
            ("label", "ran"),
            ("refine", "ran"),
            ("train", "ran"),
            ("export", "ran"),
            ("eval", "ran")
        ]
    );
    assert!(first.bundle.is_file());
    // 30 naming calls plus round 1.
    assert!(first.mllm_calls >= 30, "{}", first.mllm_calls);
    let eval = first.eval.as_ref().unwrap();
    assert_eq!(eval["n"], 15);
    // 5 species, names 70% right: the refined model must do clearly better than chance (20%).
    assert!(eval["cacc"].as_f64().unwrap() >= 0.6, "{eval}");
    let log = std::fs::read_to_string(work.join("checkpoint/targets.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 30);

    // Unchanged: every stage skipped, nothing asked again.
    let second = run(&settings).expect("second run");
    assert!(
        second
            .stages
            .iter()
            .all(|s| s.status.starts_with("skipped")),
        "{:?}",
        second.stages
    );
    assert_eq!(second.mllm_calls, 0);

    // Another training method: label and refine skipped, the rest runs.
    std::fs::write(&cfg, config(&work, "prototype")).unwrap();
    let third = run(&settings).expect("third run");
    let ran: Vec<&str> = third
        .stages
        .iter()
        .filter(|s| s.status == "ran")
        .map(|s| s.stage.as_str())
        .collect();
    assert_eq!(ran, vec!["train", "export", "eval"]);
}

#[test]
fn bad_pipeline_configs_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("p.toml");
    std::fs::write(
        &cfg,
        "work_dir = \"w\"\n[images]\ndir = \"x\"\n[label]\nmodel = \"m\"\n",
    )
    .unwrap();
    let err = linesight_trainer::commands::pipeline::read_config(&cfg).unwrap_err();
    assert!(format!("{err:#}").contains("needs `endpoint`"), "{err:#}");
    std::fs::write(&cfg, "work_dir = \"w\"\n[images]\ndir = \"x\"\n[label]\nmodel = \"m\"\nendpoint = \"http://h/v1\"\n[train]\nepochz = 3\n").unwrap();
    let err = linesight_trainer::commands::pipeline::read_config(&cfg).unwrap_err();
    assert!(format!("{err:#}").contains("epochz"), "{err:#}");
}
