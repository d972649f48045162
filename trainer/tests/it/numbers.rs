//! Quiet wrong numbers (issue 16, class 10) at the library boundary: training refuses
//! out-of-range settings and stops when its loss stops being finite (naming the epoch),
//! no checkpoint or refined.json is written holding a NaN, a checkpoint holding one is
//! refused on load, and a manifest that lists an image twice is refused.

use candle_core::{Device, Tensor};
use linesight_trainer::backbone::BackboneKind;
use linesight_trainer::checkpoint::{self, CheckpointMeta, CHECKPOINT_VERSION};
use linesight_trainer::dataset;
use linesight_trainer::head::CosineHead;
use linesight_trainer::knn::Neighbour;
use linesight_trainer::near::candidates::Own;
use linesight_trainer::near::refined::{Refined, RefinedImage};
use linesight_trainer::near::train::{train, EpochLog, Method, TrainData, TrainSettings};

/// Two well separated classes of normalized 8-d embeddings, every image named.
struct Data {
    x: Vec<f32>,
    own: Vec<Own>,
    cands: Vec<Vec<(usize, f32)>>,
    nbs: Vec<Vec<Neighbour>>,
}

fn data(n: usize) -> Data {
    let mut x = Vec::new();
    let mut own = Vec::new();
    for i in 0..n {
        let c = i % 2;
        let mut row = [0.1f32; 8];
        row[c] = 1.0;
        row[2 + i % 6] += 0.05;
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        x.extend(row.iter().map(|v| v / norm));
        own.push(vec![(c, 1.0)]);
    }
    Data {
        x,
        cands: own.clone(),
        own,
        nbs: vec![Vec::new(); n],
    }
}

impl Data {
    fn view(&self) -> TrainData<'_> {
        TrainData {
            x: &self.x,
            n: self.own.len(),
            dim: 8,
            classes: 2,
            own: &self.own,
            candidates: &self.cands,
            neighbours: &self.nbs,
            verified: &[],
        }
    }
}

#[test]
fn training_refuses_out_of_range_settings_naming_them() {
    let d = data(16);
    type Case = (fn(&mut TrainSettings), &'static str);
    let cases: [Case; 4] = [
        (
            |s| {
                s.method = Method::Naive;
                s.lr = f64::NAN;
            },
            "lr = NaN",
        ),
        (|s| s.gmm_threshold = 1.5, "gmm_threshold = 1.5"),
        (|s| s.scale = f32::INFINITY, "scale = inf"),
        (|s| s.batch = 0, "batch = 0"),
    ];
    for (edit, name) in cases {
        let mut s = TrainSettings::default();
        edit(&mut s);
        let e = train(&d.view(), &s, &Device::Cpu).err().expect(name);
        assert!(format!("{e:#}").contains(name), "{name}: {e:#}");
    }
}

/// A finite but absurd learning rate drives the head's weights to infinity within a few
/// steps: training stops with an error naming the epoch instead of returning NaN weights.
#[test]
fn a_loss_that_stops_being_finite_is_an_error_naming_the_epoch() {
    let d = data(64);
    let s = TrainSettings {
        method: Method::Naive,
        lr: 1e30,
        batch: 8,
        epochs: 5,
        ..Default::default()
    };
    let e = train(&d.view(), &s, &Device::Cpu)
        .err()
        .expect("lr 1e30 diverges");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("training diverged") && msg.contains("in epoch "),
        "{msg}"
    );
    // The same data with the default rate trains.
    let ok = TrainSettings {
        method: Method::Naive,
        ..Default::default()
    };
    let t = train(&d.view(), &ok, &Device::Cpu).unwrap();
    assert!(t.history.iter().all(|h| h.loss.is_finite()));
}

fn meta(loss: f64) -> CheckpointMeta {
    CheckpointMeta {
        version: CHECKPOINT_VERSION,
        backbone: BackboneKind::MobilenetV2,
        weights: "w.safetensors".into(),
        weights_sha256: "0".repeat(64),
        trainable: "head".into(),
        classes: vec!["a".into(), "b".into()],
        scale: 20.0,
        settings: TrainSettings::default(),
        refined_sha256: "0".repeat(64),
        mllm_model: None,
        prompt_sha256: None,
        train_images: 2,
        check_images: Vec::new(),
        history: vec![EpochLog {
            epoch: 0,
            loss,
            clean_share: None,
            gmm: None,
            holdout_agreement: None,
        }],
        train_seconds: 1.0,
        eval: None,
    }
}

fn head(values: [f32; 4]) -> CosineHead {
    CosineHead {
        weight: Tensor::from_slice(&values, (2, 2), &Device::Cpu).unwrap(),
        scale: 20.0,
    }
}

/// Issue 16: `train --lr nan` wrote a checkpoint `export` could not read. A checkpoint
/// holding a NaN or an infinity, in its weights or its metadata, is not written at all.
#[test]
fn a_checkpoint_holding_nan_is_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (head([1.0, f32::NAN, 0.0, 1.0]), meta(0.5), "head.weight"),
        (
            head([1.0, 0.0, 0.0, 1.0]),
            meta(f64::NAN),
            "loss of epoch 0",
        ),
        (
            head([1.0, 0.0, 0.0, 1.0]),
            CheckpointMeta {
                settings: TrainSettings {
                    lr: f64::NAN,
                    ..Default::default()
                },
                ..meta(0.5)
            },
            "settings.lr",
        ),
    ];
    for (i, (h, m, what)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("ckpt{i}"));
        let e = checkpoint::save(&dir, &h, &[], &m).expect_err(what);
        assert!(format!("{e:#}").contains(what), "{what}: {e:#}");
        assert!(!dir.exists(), "{what}: nothing written");
    }
    // A finite one is written and reads back.
    let dir = tmp.path().join("good");
    checkpoint::save(&dir, &head([1.0, 0.0, 0.0, 1.0]), &[], &meta(0.5)).unwrap();
    checkpoint::load(&dir, &Device::Cpu).unwrap();
    // One damaged on disk afterwards is refused on load, naming the file.
    let t = Tensor::from_slice(&[f32::INFINITY, 0.0, 0.0, 1.0], (2, 2), &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("head.weight".to_string(), t)]),
        dir.join("head.safetensors"),
    )
    .unwrap();
    let e = checkpoint::load(&dir, &Device::Cpu)
        .err()
        .expect("inf head");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("head.safetensors") && msg.contains("inf"),
        "{msg}"
    );
}

#[test]
fn a_refined_file_holding_nan_is_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("refined.json");
    let image = RefinedImage {
        path: "a.jpg".into(),
        sha256: "0".repeat(64),
        mllm: vec!["a".into()],
        own: vec![(0, 1.0)],
        neighbours: vec![Neighbour {
            index: 0,
            similarity: f32::NAN,
        }],
        candidates: vec![(0, 1.0)],
        target: Some(0),
        target_name: Some("a".into()),
    };
    let r = Refined {
        version: linesight_trainer::near::refined::REFINED_VERSION,
        images_dir: tmp.path().into(),
        backbone: BackboneKind::MobilenetV2,
        weights_sha256: "0".repeat(64),
        knn_backbones: Vec::new(),
        mllm_model: None,
        prompt_sha256: None,
        vocab_settings: Default::default(),
        candidate_settings: Default::default(),
        vocabulary: linesight_trainer::vocab::Vocabulary {
            classes: Vec::new(),
            dropped: Vec::new(),
            closest_kept_pair: None,
            category: None,
        },
        classes: vec!["a".into()],
        pruned_classes: Vec::new(),
        verified: Vec::new(),
        hint: Vec::new(),
        snaps: None,
        confusion: None,
        images: vec![image],
        summary: Default::default(),
    };
    let e = r.write(&path).expect_err("NaN similarity");
    assert!(format!("{e:#}").contains("a.jpg"), "{e:#}");
    assert!(!path.exists());
}

/// Issue 16: `eval` counted a repeated row twice. The manifest reader refuses a repeat
/// (the same path, or another spelling of the same file: `./`, a symlink), naming the rows.
#[test]
fn a_manifest_that_lists_an_image_twice_is_refused_naming_the_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("img")).unwrap();
    for n in ["a.jpg", "b.jpg"] {
        std::fs::write(d.join("img").join(n), b"x").unwrap();
    }
    std::os::unix::fs::symlink(d.join("img/a.jpg"), d.join("link.jpg")).unwrap();
    let csv = d.join("m.csv");
    for (rows, repeat) in [
        (
            "img/a.jpg,A,train\nimg/b.jpg,B,train\nimg/a.jpg,A,test\n",
            "line 4 repeats line 2",
        ),
        (
            "img/a.jpg,A,train\nimg/b.jpg,B,train\nimg/./b.jpg,B,test\n",
            "line 4 repeats line 3",
        ),
        (
            "img/a.jpg,A,train\nlink.jpg,A,test\n",
            "line 3 repeats line 2",
        ),
        (
            "missing/x.jpg,A,train\nmissing/./x.jpg,A,train\n",
            "line 3 repeats line 2",
        ),
    ] {
        std::fs::write(&csv, format!("path,label,split\n{rows}")).unwrap();
        let e = dataset::read_manifest(&csv).expect_err(repeat);
        let msg = format!("{e:#}");
        assert!(msg.contains("m.csv") && msg.contains(repeat), "{msg}");
    }
    std::fs::write(
        &csv,
        "path,label,split\nimg/a.jpg,A,train\nimg/b.jpg,B,test\n",
    )
    .unwrap();
    assert_eq!(dataset::read_manifest(&csv).unwrap().len(), 2);
}
