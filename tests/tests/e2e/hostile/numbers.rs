//! Quiet wrong numbers in the trainer (issue 16, class 10): every numeric flag and config
//! key of `linesight-train` is checked (finite, in range) before any work, naming the
//! setting; and every command refuses a manifest that lists an image twice, naming the rows.

use crate::util::*;
use std::path::Path;
use std::process::Command;

/// Issue 16: `train --lr nan` exited 0 and wrote a checkpoint export could not read. Every
/// numeric flag of the trainer's commands is refused out of range at parse time (label's and
/// simulate-mllm's are in `labelling.rs`).
#[test]
fn out_of_range_numeric_flags_are_refused_before_any_work() {
    let train = ["train", "--refined", "r.json", "--out", "c"];
    let refine = ["refine", "--images", "i", "--labels", "l", "--out", "o"];
    let prototypes = ["prototypes", "--manifest", "m.csv", "--out", "o.lsb"];
    let quantize = ["quantize", "--bundle", "b.lsb", "--out", "o.lsb"];
    let export = ["export", "--checkpoint", "c", "--out", "o.lsb"];
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (
            &train,
            &[
                ("--lr", "nan"),
                ("--lr", "-0.1"),
                ("--lr", "inf"),
                ("--epochs", "0"),
                ("--rounds", "0"),
                ("--gmm-threshold", "1.5"),
                ("--trainable-blocks", "99"),
                ("--finetune-epochs", "0"),
                ("--finetune-lr", "NaN"),
                ("--anchor-weight", "-inf"),
                ("--batch", "0"),
            ],
        ),
        (
            &refine,
            &[
                ("--synonym-threshold", "1.2"),
                ("--hint-threshold", "nan"),
                ("--min-images", "0"),
                ("--k", "0"),
                ("--self-weight", "-1"),
                ("--power", "nan"),
                ("--anchor-weight", "0"),
                ("--batch", "0"),
            ],
        ),
        (
            &prototypes,
            &[
                ("--scale", "nan"),
                ("--scale", "0"),
                ("--batch", "0"),
                ("--check-images", "0"),
            ],
        ),
        (
            &quantize,
            &[
                ("--min-agreement", "1.01"),
                ("--min-agreement", "nan"),
                ("--calibration-images", "0"),
                ("--parity-images", "0"),
                ("--sensitivity-images", "0"),
                ("--gate-confidence", "1"),
                ("--gate-confidence", "0.4"),
                ("--speed-margin", "nan"),
            ],
        ),
        (&export, &[("--parity-images", "0")]),
    ];
    for (base, bad_values) in cases {
        for (flag, bad) in *bad_values {
            assert_train_flag_refused(base, flag, bad);
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The same holds for config files: a NaN, an infinity or an out-of-range value in a
/// training settings file or a pipeline file is refused before any stage runs, naming the
/// file and the key (TOML can spell `nan` and `inf`).
#[test]
fn out_of_range_config_keys_are_refused_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let train_toml = t.join("train.toml");
    write(&train_toml, "method = \"naive\"\nlr = nan\n");
    let o = run(Command::new(bin("linesight-train"))
        .args(["train", "--refined", "missing.json", "--out"])
        .arg(t.join("ckpt"))
        .arg("--config")
        .arg(&train_toml));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("train.toml") && err.contains("lr = NaN"),
        "{err}"
    );
    assert!(!t.join("ckpt").exists());

    let images = t.join("images");
    std::fs::create_dir(&images).unwrap();
    for (section, key, value) in [
        ("train", "lr", "inf"),
        ("train", "gmm_threshold", "-0.5"),
        ("train", "batch", "0"),
        ("label", "temperature", "-1"),
        ("label", "concurrency", "0"),
        ("simulator", "accuracy", "nan"),
        ("refine.candidates", "power", "-inf"),
        ("refine.vocab", "synonym_threshold", "3"),
        ("refine.confusion", "prior_accuracy", "nan"),
    ] {
        let mut sections = std::collections::BTreeMap::from([
            ("label", "model = \"m\"\n".to_string()),
            (
                "simulator",
                format!(
                    "truth = \"{}\"\naccuracy = 0.7\nseed = 1\n",
                    t.join("truth.csv").display()
                ),
            ),
            ("train", String::new()),
            ("refine.candidates", String::new()),
            ("refine.vocab", String::new()),
            ("refine.confusion", String::new()),
        ]);
        let body = sections.get_mut(section).unwrap();
        *body = body
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + &format!("{key} = {value}\n");
        let mut toml = format!(
            "work_dir = \"{}\"\n[images]\ndir = \"{}\"\n",
            t.join("work").display(),
            images.display()
        );
        for (name, body) in &sections {
            toml.push_str(&format!("[{name}]\n{body}"));
        }
        let config = t.join("pipeline.toml");
        write(&config, &toml);
        let o = run(Command::new(bin("linesight-train"))
            .args(["pipeline", "--config"])
            .arg(&config));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "[{section}] {key} = {value}");
        assert!(
            err.contains("pipeline.toml") && err.contains(&format!("[{section}] {key} = ")),
            "[{section}] {key} = {value}: {err}"
        );
        assert!(!t.join("work").exists(), "no stage ran");
    }
}

/// A demo manifest with one row repeated: the first row again, spelled with `./` in it
/// (the same file), as the last row. Paths absolute, so the file can live anywhere.
fn manifest_with_a_repeated_row(dir: &Path) -> std::path::PathBuf {
    let demo = repo().join("models/demo");
    let text = std::fs::read_to_string(demo.join("manifest.csv")).unwrap();
    let mut out = String::from("path,label,split\n");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    for row in &rows {
        out.push_str(&format!("{}/{row}\n", demo.display()));
    }
    let first: Vec<&str> = rows[0].split(',').collect();
    out.push_str(&format!(
        "{}/./{},{},test\n",
        demo.display(),
        first[0],
        first[1]
    ));
    let p = dir.join("repeated.csv");
    write(&p, &out);
    p
}

/// Issue 16: `eval` counted a repeated manifest row twice without a word. Every command
/// that reads a manifest refuses it, naming both rows (the repeat is line 47, of line 2).
#[test]
fn a_manifest_that_repeats_an_image_is_refused_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_with_a_repeated_row(tmp.path());
    let check = |o: std::process::Output, what: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}");
        assert!(
            err.contains("repeated.csv") && err.contains("line 47 repeats line 2"),
            "{what}: {err}"
        );
    };
    let train = bin("linesight-train");
    check(
        run(Command::new(&train)
            .args(["simulate-mllm", "--direct", "test", "--truth"])
            .arg(&manifest)),
        "simulate-mllm --direct",
    );
    let log = tmp.path().join("empty.jsonl");
    write(&log, "");
    check(
        run(Command::new(&train)
            .args(["label", "score"])
            .arg(&log)
            .arg("--truth")
            .arg(&manifest)),
        "label score",
    );
    check(
        run(Command::new(&train)
            .args(["prototypes", "--split", "train", "--out"])
            .arg(tmp.path().join("p.lsb"))
            .arg("--manifest")
            .arg(&manifest)),
        "prototypes",
    );
    if !weights_present("a_manifest_that_repeats_an_image_is_refused_by_every_command") {
        return;
    }
    let bundle = demo_bundle(tmp.path());
    check(
        run(Command::new(&train)
            .args(["eval", "--split", "test", "--bundle"])
            .arg(&bundle)
            .arg("--manifest")
            .arg(&manifest)),
        "eval",
    );
}
