//! The whole NeaR pipeline on the demo photos (real MobileNetV2 and MiniLM weights) against
//! the in-process MLLM simulator: label -> refine -> train -> export -> eval, then the
//! stage skipping by input hash.

use crate::weights::{repo_root, weights};
use linesight_trainer::commands::pipeline::{run, PipelineSettings};
use linesight_trainer::device::DeviceChoice;

/// The weights folder the demo pipeline needs (MobileNetV2 and MiniLM), or `None` with
/// the SKIPPED note of [`weights`].
pub(crate) fn demo_weights(test: &str) -> Option<std::path::PathBuf> {
    let w = weights("mobilenet_v2.safetensors", test)?;
    weights("all-MiniLM-L6-v2/model.safetensors", test)?;
    Some(w.parent()?.to_path_buf())
}

/// The demo pipeline (30 photos, 5 species) against the simulator at 0.7, training `method`.
pub(crate) fn config(work: &std::path::Path, method: &str) -> String {
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
    let Some(weights_dir) = demo_weights(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let cfg = tmp.path().join("p.toml");
    std::fs::write(&cfg, config(&work, "near")).unwrap();
    let settings = PipelineSettings {
        config: cfg.clone(),
        weights_dir,
        force: false,
        device: None,
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

/// The levers of issue 8 through the pipeline: sampled answers, a vocabulary hint and one
/// verified image per class, against a simulator whose every mistake is a habit.
#[test]
fn levers_sampled_answers_hint_and_verified_labels_reach_training() {
    let test = "levers_sampled_answers_hint_and_verified_labels_reach_training";
    let Some(weights_dir) = demo_weights(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let demo = repo_root().join("models/demo/manifest.csv");
    let rows: Vec<(String, String, String)> = std::fs::read_to_string(&demo)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect();
    let mut species: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    species.sort();
    species.dedup();
    let vocab = tmp.path().join("species.txt");
    std::fs::write(&vocab, species.join("\n")).unwrap();
    // One verified train image per species (the first), absolute paths.
    let base = demo.parent().unwrap();
    let mut verified = String::from("path,label,split\n");
    for s in &species {
        let r = rows.iter().find(|r| &r.1 == s && r.2 == "train").unwrap();
        verified.push_str(&format!("{},{},train\n", base.join(&r.0).display(), r.1));
    }
    let verified_csv = tmp.path().join("verified.csv");
    std::fs::write(&verified_csv, verified).unwrap();
    let cfg = tmp.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
work_dir = "{work}"
[images]
manifest = "{demo}"
split = "train"
[simulator]
truth = "{demo}"
accuracy = 0.5
seed = 5
systematic = 1.0
[label]
model = "simulated"
temperature = 1.0
samples = 3
vocabulary = "{vocab}"
[refine]
vocabulary = "{vocab}"
verified = "{verified}"
[refine.vocab]
min_images = 2
[refine.candidates]
k = 5
[train]
method = "near"
[eval]
manifest = "{demo}"
split = "test"
"#,
            work = work.display(),
            demo = demo.display(),
            vocab = vocab.display(),
            verified = verified_csv.display(),
        ),
    )
    .unwrap();
    let report = run(&PipelineSettings {
        config: cfg,
        weights_dir,
        force: false,
        device: None,
    })
    .expect("pipeline runs");
    // 3 samples of 30 images.
    assert!(report.mllm_calls >= 90, "{}", report.mllm_calls);
    // eval shows the habits and what each signal changed beside the scores.
    let eval = report.eval.as_ref().expect("eval ran");
    assert_eq!(eval["signals"]["verified"], 5, "{eval}");
    assert!(!eval["habits"].as_array().unwrap().is_empty(), "{eval}");
    let refined = linesight_trainer::near::refined::Refined::read(&work.join("refined.json"))
        .expect("refined.json");
    assert_eq!(refined.hint.len(), 5);
    assert!(refined.images.iter().all(|i| i.mllm.len() == 3));
    assert_eq!(refined.verified.len(), 5);
    assert_eq!(refined.summary.signals.verified, 5);
    // Every answer was a listed name (exact) or `other: ...`.
    let snaps = refined.snaps.as_ref().expect("snap report");
    assert!(snaps.exact >= 60, "{snaps:?}");
    // The estimated habits are the ones in the log: for each species, the name its
    // images most often wrongly got.
    let log = std::fs::read_to_string(work.join("labels.jsonl")).unwrap();
    let truth_of: std::collections::HashMap<String, String> = refined
        .images
        .iter()
        .map(|i| {
            let target = std::fs::canonicalize(refined.images_dir.join(&i.path)).unwrap();
            let row = rows
                .iter()
                .find(|r| std::fs::canonicalize(base.join(&r.0)).unwrap() == target)
                .unwrap();
            (i.sha256.clone(), row.1.clone())
        })
        .collect();
    let mut wrong: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for line in log.lines() {
        let r: linesight_trainer::mllm::cache::Record = serde_json::from_str(line).unwrap();
        let (Some(name), Some(truth)) = (r.name, truth_of.get(&r.image_sha256)) else {
            continue;
        };
        let name = linesight_trainer::vocab::normalize(&name);
        if species
            .iter()
            .any(|s| linesight_trainer::vocab::normalize(s) == name)
            && name != linesight_trainer::vocab::normalize(truth)
        {
            *wrong.entry((truth.clone(), name)).or_default() += 1;
        }
    }
    let confusion = refined.confusion.as_ref().expect("confusion estimated");
    let mut matched = 0;
    for s in &species {
        let observed = wrong
            .iter()
            .filter(|((t, _), _)| t == s)
            .max_by_key(|(_, n)| **n)
            .map(|((_, n), _)| n.clone());
        let estimated = confusion
            .habits
            .iter()
            .filter(|h| &h.true_name == s)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
            .map(|h| linesight_trainer::vocab::normalize(&h.named_name));
        if observed.is_some() && observed == estimated {
            matched += 1;
        }
    }
    assert!(
        matched >= 4,
        "habits {:?} vs log {wrong:?}",
        confusion.habits
    );
    // Verified images are trained on their verified class.
    let targets = std::fs::read_to_string(work.join("checkpoint/targets.jsonl")).unwrap();
    let targets: Vec<serde_json::Value> = targets
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for &(i, c) in &refined.verified {
        assert_eq!(
            targets[i]["target"].as_str(),
            Some(refined.classes[c].as_str()),
            "verified image {i}: {}",
            targets[i]
        );
    }
}

#[test]
fn the_example_configs_parse() {
    for name in ["cub26.toml", "cub26-finetuned.toml", "demo.toml"] {
        let path = repo_root().join("examples").join(name);
        let c = linesight_trainer::commands::pipeline::read_config(&path)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(c.simulator.is_some(), "{name}");
        assert_eq!(
            c.device,
            DeviceChoice::Cpu,
            "{name}: the examples train on the CPU"
        );
    }
    // A device that is not one is refused, naming it and what is accepted.
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_root().join("examples/demo.toml")).unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, text.replace("device = \"cpu\"", "device = \"gpu\"")).unwrap();
    let e = format!(
        "{:#}",
        linesight_trainer::commands::pipeline::read_config(&bad).unwrap_err()
    );
    assert!(
        e.contains("`gpu` is not a device") && e.contains("cuda:N"),
        "{e}"
    );
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        text.replace("device = \"cpu\"", "device = \"cuda:1\""),
    )
    .unwrap();
    let c = linesight_trainer::commands::pipeline::read_config(&good).unwrap();
    assert_eq!(c.device, DeviceChoice::Cuda(1));
}
