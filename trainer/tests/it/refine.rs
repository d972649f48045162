//! Reading answer logs for refine: latest answer per image and sample, refusal of logs
//! that mix models or prompts, round-1 category.

use linesight_trainer::commands::refine::read_answers;
use linesight_trainer::mllm::answer::Status;
use linesight_trainer::mllm::cache::{Params, Record, Round, RECORD_VERSION};
use linesight_trainer::mllm::prompt::Context1;

fn record(
    sha: &str,
    model: &str,
    prompt: &str,
    round: Round,
    name: Option<&str>,
    status: Status,
) -> Record {
    let mut r = Record {
        v: RECORD_VERSION,
        round,
        key: String::new(),
        path: format!("{sha}.jpg"),
        image_sha256: sha.into(),
        sample: 0,
        endpoint: "http://127.0.0.1:1/v1".into(),
        model: model.into(),
        prompt_sha256: prompt.into(),
        params: Params::default(),
        status,
        name: name.map(str::to_string),
        context: (round == Round::Category).then(|| Context1 {
            category: "Bird".into(),
            expert: "ornithologist".into(),
            granularity: "species".into(),
        }),
        problem: None,
        raw: String::new(),
        reasoning: None,
        finish_reason: None,
        served_model: None,
        latency_ms: 1.0,
        attempts: 1,
        usage: None,
        time: "2026-11-29T00:00:00Z".into(),
    };
    r.key = r.cache_key();
    r
}

fn write(path: &std::path::Path, records: &[Record]) {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn answers_by_image_with_category_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("labels.jsonl");
    write(
        &log,
        &[
            record("a", "m1", "p1", Round::Category, None, Status::Json),
            record("a", "m1", "p1", Round::Name, Some("Old Name"), Status::Json),
            record(
                "a",
                "m1",
                "p1",
                Round::Name,
                Some("Horned Grebe"),
                Status::Text,
            ),
            record("b", "m1", "p1", Round::Name, None, Status::Refused),
            record(
                "c",
                "m2",
                "p2",
                Round::Name,
                Some("Western Grebe"),
                Status::Json,
            ),
        ],
    );
    let err = read_answers(&log, None, None)
        .err()
        .expect("two models refused");
    assert!(format!("{err:#}").contains("--model"), "{err:#}");
    let a = read_answers(&log, Some("m1"), None).unwrap();
    // The later answer for the same image and sample wins; refusals carry no name.
    assert_eq!(a.by_sha.get("a"), Some(&vec!["Horned Grebe".to_string()]));
    assert!(!a.by_sha.contains_key("b"));
    assert!(!a.by_sha.contains_key("c"));
    assert_eq!(a.category.as_deref(), Some("bird"));
    assert_eq!(a.model.as_deref(), Some("m1"));
    let b = read_answers(&log, None, Some("p2")).unwrap();
    assert_eq!(b.by_sha.len(), 1);
    assert!(read_answers(&tmp.path().join("missing.jsonl"), None, None).is_err());
}
