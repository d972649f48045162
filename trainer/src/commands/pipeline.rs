//! `linesight-train pipeline --config FILE`: label -> refine -> train -> export -> eval in
//! order, each stage skipped when the hash of its inputs (files and settings) matches the
//! hash recorded when it last finished and its output is still there.
//!
//! State: `WORK_DIR/pipeline-state.json`, written after each finished stage, so a killed
//! pipeline resumes at the stage it was in (and `label` itself resumes from its log).

use crate::backbone::BackboneKind;
use crate::bounds::{Bound, BoundError, Checker};
use crate::commands::{eval, export, label, refine, train};
use crate::embed::file_sha256;
use crate::mllm::simulator::{RunningSimulator, SimulatorConfig};
use crate::mllm::{cache::Params, client::ApiKey, images, prompt::Context1};
use crate::near::candidates::CandidateSettings;
use crate::near::confusion::ConfusionSettings;
use crate::near::train::TrainSettings;
use crate::vocab::VocabSettings;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The pipeline's TOML file. Relative paths are relative to the file's folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where every stage writes (labels.jsonl, refined.json, checkpoint/, model.lsb, ...).
    pub work_dir: PathBuf,
    /// Where the backbone computes: `cpu`, `cuda` or `cuda:N` (a trainer built with the
    /// `cuda` feature): refine's image embeddings, train's fine-tuning (`[train]
    /// trainable_blocks > 0`) and any embeddings the cache lacks. Labelling, the k-NN, the
    /// head methods, the export and eval (tract) run on the CPU. Not part of any stage's
    /// input hash: a run resumed on another host keeps its finished stages.
    #[serde(default)]
    pub device: crate::device::DeviceChoice,
    pub images: ImagesConfig,
    /// Start the MLLM SIMULATOR in-process and label against it (demos, measurements).
    pub simulator: Option<SimulatorSection>,
    pub label: LabelSection,
    #[serde(default)]
    pub refine: RefineSection,
    #[serde(default)]
    pub train: TrainSettings,
    #[serde(default)]
    pub export: ExportSection,
    /// Score the bundle on a labelled split (as the edge runs it).
    pub eval: Option<EvalSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Folder of unlabeled images.
    pub dir: Option<PathBuf>,
    /// Or: the images of one split of a manifest CSV (only the paths are used; the
    /// pipeline links them into WORK_DIR/images/ under neutral names).
    pub manifest: Option<PathBuf>,
    #[serde(default = "default_split")]
    pub split: String,
}

fn default_split() -> String {
    "train".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    pub truth: PathBuf,
    pub accuracy: f64,
    pub seed: u64,
    /// Habits: share of wrong answers that go to one fixed partner class per class.
    #[serde(default)]
    pub systematic: f64,
    /// Per-class accuracy = accuracy +- up to this.
    #[serde(default)]
    pub spread: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSection {
    /// Base URL of the OpenAI-compatible API, or a list of them (servers of the same
    /// model; `URL,concurrency=N` gives one its own limit); ignored with [simulator].
    pub endpoint: Option<EndpointList>,
    pub model: String,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Skip round 1 by giving all three.
    pub category: Option<String>,
    pub expert: Option<String>,
    pub granularity: Option<String>,
    #[serde(default)]
    pub temperature: f64,
    /// Answers per image (more than 1 needs a temperature above 0).
    #[serde(default = "default_samples")]
    pub samples: u32,
    /// Expected names offered in the naming prompt (one per line).
    pub vocabulary: Option<PathBuf>,
}

/// `endpoint = "URL"` or `endpoint = ["URL", "URL,concurrency=N", ...]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointList {
    One(String),
    Many(Vec<String>),
}

impl EndpointList {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            EndpointList::One(e) => vec![e.clone()],
            EndpointList::Many(v) => v.clone(),
        }
    }
}

fn default_samples() -> u32 {
    1
}

fn default_concurrency() -> usize {
    8
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefineSection {
    pub backbone: BackboneKind,
    /// Backbone weights (default: the backbone's file under models/weights).
    pub weights: Option<PathBuf>,
    /// Backbones whose embeddings define the neighbours instead of `backbone`'s (their
    /// files under models/weights; several: the mean of their cosines). Empty: `backbone`.
    pub knn_backbones: Vec<BackboneKind>,
    pub vocab: VocabSettings,
    pub candidates: CandidateSettings,
    /// Vocabulary hint: answers are snapped to these names (one per line).
    pub vocabulary: Option<PathBuf>,
    /// Manifest (`path,label,split`) of expert-verified images among the images.
    pub verified: Option<PathBuf>,
    /// Correct the candidate weights for the MLLM's estimated confusion even without
    /// verified images (with them it is always on).
    pub correct_confusion: bool,
    pub confusion: ConfusionSettings,
}

impl Default for RefineSection {
    fn default() -> Self {
        RefineSection {
            backbone: BackboneKind::MobilenetV2,
            weights: None,
            knn_backbones: Vec::new(),
            vocab: VocabSettings::default(),
            candidates: CandidateSettings::default(),
            vocabulary: None,
            verified: None,
            correct_confusion: false,
            confusion: ConfusionSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    pub model_id: String,
    /// Secret key file to sign the bundle with.
    pub sign: Option<PathBuf>,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection {
            model_id: "linesight".into(),
            sign: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub manifest: PathBuf,
    #[serde(default = "default_test")]
    pub split: String,
}

fn default_test() -> String {
    "test".into()
}

/// Where the weights live (the binary passes `models/weights` or LINESIGHT_WEIGHTS).
pub struct PipelineSettings {
    pub config: PathBuf,
    pub weights_dir: PathBuf,
    /// Run every stage even when its inputs are unchanged.
    pub force: bool,
    /// Overrides the config's `device`.
    pub device: Option<crate::device::DeviceChoice>,
}

#[derive(Debug, Serialize)]
pub struct StageReport {
    pub stage: String,
    /// `ran` or `skipped (inputs unchanged)`.
    pub status: String,
    pub seconds: f64,
    pub report: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub work_dir: PathBuf,
    pub bundle: PathBuf,
    pub stages: Vec<StageReport>,
    /// MLLM naming calls the labelling made (this run; 0 when everything came from the cache).
    pub mllm_calls: u64,
    /// Training images labelled once; every later image is decided by the edge model.
    pub labelled_images: usize,
    pub eval: Option<serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// stage -> input hash of its last finished run.
    done: BTreeMap<String, String>,
}

impl PipelineConfig {
    /// Checks every number of every section against its range, naming it as written in
    /// the file (`[train] lr`), before any stage runs.
    pub fn validate(&self) -> Result<(), BoundError> {
        let mut c = Checker::new("[label] ");
        c.check("concurrency", self.label.concurrency, label::CONCURRENCY)
            .check("temperature", self.label.temperature, label::TEMPERATURE)
            .check("samples", self.label.samples, label::SAMPLES)
            .finish()?;
        if let Some(s) = &self.simulator {
            Checker::new("[simulator] ")
                .check("accuracy", s.accuracy, Bound::UNIT)
                .check("systematic", s.systematic, Bound::UNIT)
                .check("spread", s.spread, Bound::UNIT)
                .finish()?;
        }
        self.refine.vocab.validate("[refine.vocab] ")?;
        self.refine.candidates.validate("[refine.candidates] ")?;
        self.refine.confusion.validate("[refine.confusion] ")?;
        self.train.validate("[train] ")
    }
}

/// Reads a pipeline file, resolving relative paths against its folder. Fails when the
/// file is not valid TOML, has unknown keys, or a number out of its range.
pub fn read_config(path: &Path) -> Result<PipelineConfig> {
    let text = fs_err::read_to_string(path).context("cannot read the pipeline config")?;
    let mut c: PipelineConfig = toml::from_str(&text)
        .with_context(|| format!("`{}` is not a valid pipeline config", path.display()))?;
    c.validate()
        .with_context(|| format!("`{}` is not a valid pipeline config", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    fix(&mut c.work_dir);
    if let Some(d) = c.images.dir.as_mut() {
        fix(d);
    }
    if let Some(m) = c.images.manifest.as_mut() {
        fix(m);
    }
    if let Some(s) = c.simulator.as_mut() {
        fix(&mut s.truth);
    }
    if let Some(w) = c.refine.weights.as_mut() {
        fix(w);
    }
    for p in [
        c.label.vocabulary.as_mut(),
        c.refine.vocabulary.as_mut(),
        c.refine.verified.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        fix(p);
    }
    if let Some(k) = c.export.sign.as_mut() {
        fix(k);
    }
    if let Some(e) = c.eval.as_mut() {
        fix(&mut e.manifest);
    }
    if c.images.dir.is_some() == c.images.manifest.is_some() {
        bail!(
            "`{}`: [images] needs exactly one of `dir` (a folder of unlabeled images) or `manifest` (+ `split`)",
            path.display()
        );
    }
    if c.simulator.is_none() && c.label.endpoint.is_none() {
        bail!(
            "`{}`: [label] needs `endpoint` (or add a [simulator] section)",
            path.display()
        );
    }
    if let Some(e) = &c.label.endpoint {
        crate::mllm::endpoints::EndpointSpec::parse_all(&e.to_vec(), c.label.concurrency)
            .map_err(|m| anyhow::anyhow!("`{}`: [label] {m}", path.display()))?;
    }
    Ok(c)
}

fn hash_parts(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// sha256 of a file when given (named in the error when it cannot be read), else "".
fn optional_file_hash(path: Option<&Path>) -> Result<String> {
    match path {
        Some(p) => file_sha256(p).with_context(|| format!("cannot read `{}`", p.display())),
        None => Ok(String::new()),
    }
}

/// sha256 over a folder's files (relative path + content), sorted.
fn dir_hash(dir: &Path) -> Result<String> {
    let mut entries: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mut h = Sha256::new();
    for p in entries {
        h.update(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        h.update(file_sha256(&p)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// Links the manifest split's images into `dir` as `00001.jpg`, ... (row numbers; the
/// class folders are not carried over). The folder is made to match the manifest on every
/// run: a link that points elsewhere (the manifest was edited) is replaced and a link the
/// manifest no longer names is removed, so an image dropped from the manifest is not
/// labelled and trained on again. Anything in `dir` that is not such a link is refused
/// (named), never removed.
fn link_images(manifest: &Path, split: &str, dir: &Path) -> Result<()> {
    let entries = crate::dataset::read_split(manifest, split)?;
    fs_err::create_dir_all(dir)?;
    let mut wanted = std::collections::BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        let ext = e.path.extension().and_then(|x| x.to_str()).unwrap_or("jpg");
        let name = format!("{i:05}.{ext}");
        let link = dir.join(&name);
        wanted.insert(std::ffi::OsString::from(name));
        let target = std::fs::canonicalize(&e.path)
            .with_context(|| format!("manifest image `{}` is missing", e.path.display()))?;
        match std::fs::symlink_metadata(&link) {
            Err(_) => {}
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                    continue;
                }
                std::fs::remove_file(&link)
                    .with_context(|| format!("cannot replace the stale link `{}`", link.display()))?;
            }
            Ok(_) => bail!(
                "`{}` is not a link to a manifest image; the pipeline links the manifest's images into `{}` itself: move that file away",
                link.display(),
                dir.display()
            ),
        }
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot link `{}`", link.display()))?;
    }
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        if wanted.contains(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        if !entry.file_type()?.is_symlink() {
            bail!(
                "`{}` is not a link to a manifest image; the pipeline links the manifest's images into `{}` itself: move that file away",
                path.display(),
                dir.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale link `{}`", path.display()))?;
        tracing::info!(link = %path.display(), "removed a link to an image the manifest no longer lists");
    }
    Ok(())
}

/// Reads the stage record. A missing file is a fresh work folder. A file that is not a
/// stage record (cut short by a crash, edited by hand) is kept aside as
/// `pipeline-state.json.unreadable` and the run starts from an empty record: every stage
/// then runs again, and labelling resumes from its own answer cache, so nothing is lost.
fn read_state(path: &Path) -> Result<State> {
    let bytes = match fs_err::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(e.into()),
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Ok(state),
        Err(e) => {
            let aside = path.with_extension("json.unreadable");
            fs_err::rename(path, &aside)?;
            tracing::warn!(
                path = %path.display(),
                kept_as = %aside.display(),
                error = %e,
                "the pipeline's stage record is unreadable; every stage runs again (labelling resumes from its answer cache)"
            );
            Ok(State::default())
        }
    }
}

pub fn run(s: &PipelineSettings) -> Result<PipelineReport> {
    let c = read_config(&s.config)?;
    let device = s.device.unwrap_or(c.device);
    // A device this build or host cannot open stops the run here, before any MLLM call,
    // not at refine after the labelling was paid for.
    device.open().with_context(|| {
        format!(
            "the pipeline's device `{device}` ({})",
            if s.device.is_some() {
                "--device".to_string()
            } else {
                format!("`device` in {}", s.config.display())
            }
        )
    })?;
    let w = &c.work_dir;
    fs_err::create_dir_all(w)?;
    let state_path = w.join("pipeline-state.json");
    let mut state = read_state(&state_path)?;
    let images_dir = match (&c.images.dir, &c.images.manifest) {
        (Some(d), _) => d.clone(),
        (None, Some(m)) => {
            let d = w.join("images");
            link_images(m, &c.images.split, &d)?;
            d
        }
        (None, None) => unreachable!("checked in read_config"),
    };
    let files = images::list(&images_dir)?;
    let paths: Vec<PathBuf> = files.iter().map(|f| f.abs.clone()).collect();
    let shas: Vec<String> = images::hash_files(&paths, &indicatif::ProgressBar::hidden())
        .into_iter()
        .map(|h| h.unwrap_or_default())
        .collect();
    let images_hash = hash_parts(&shas.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
    let weights = c
        .refine
        .weights
        .clone()
        .unwrap_or_else(|| c.refine.backbone.default_weights(&s.weights_dir));
    let sentence_model = s.weights_dir.join("all-MiniLM-L6-v2");
    let labels = w.join("labels.jsonl");
    let refined = w.join("refined.json");
    let ckpt = w.join("checkpoint");
    let bundle = w.join("model.lsb");
    let cache = w.join("cache");
    let mut stages = Vec::new();
    let mut mllm_calls = 0u64;

    let stage = |name: &str,
                 input_hash: String,
                 output: &Path,
                 state: &mut State,
                 f: &mut dyn FnMut() -> Result<serde_json::Value>|
     -> Result<StageReport> {
        let t0 = Instant::now();
        if !s.force && output.exists() && state.done.get(name) == Some(&input_hash) {
            tracing::info!(stage = name, "inputs unchanged, skipped");
            return Ok(StageReport {
                stage: name.into(),
                status: "skipped (inputs unchanged)".into(),
                seconds: 0.0,
                report: serde_json::Value::Null,
            });
        }
        tracing::info!(stage = name, "running");
        let report = f().with_context(|| format!("pipeline stage `{name}` failed"))?;
        state.done.insert(name.into(), input_hash);
        fs_err::write(&state_path, serde_json::to_vec_pretty(state)?)?;
        Ok(StageReport {
            stage: name.into(),
            status: "ran".into(),
            seconds: t0.elapsed().as_secs_f64(),
            report,
        })
    };

    // label
    let label_hash = hash_parts(&[
        images_hash.as_bytes(),
        serde_json::to_string(&c.label)?.as_bytes(),
        serde_json::to_string(&c.simulator)?.as_bytes(),
        optional_file_hash(c.label.vocabulary.as_deref())?.as_bytes(),
    ]);
    let r = stage("label", label_hash, &labels, &mut state, &mut || {
        let sim = match &c.simulator {
            Some(sc) => {
                let mut cfg = SimulatorConfig::new(sc.truth.clone());
                cfg.accuracy = sc.accuracy;
                cfg.seed = sc.seed;
                cfg.systematic = sc.systematic;
                cfg.spread = sc.spread;
                Some(RunningSimulator::start(cfg, "127.0.0.1:0")?)
            }
            None => None,
        };
        let endpoints = match &sim {
            Some(sim) => vec![sim.base_url()],
            None => c
                .label
                .endpoint
                .as_ref()
                .map(EndpointList::to_vec)
                .unwrap_or_default(),
        };
        let mut ls = label::LabelSettings::new(
            images_dir.clone(),
            String::new(),
            c.label.model.clone(),
            labels.clone(),
        );
        ls.endpoints = endpoints;
        ls.api_key = c
            .label
            .api_key_env
            .as_deref()
            .map(ApiKey::from_env)
            .transpose()?;
        ls.api_key_env = c.label.api_key_env.clone();
        ls.concurrency = c.label.concurrency;
        ls.params = Params {
            temperature: c.label.temperature,
            ..Params::default()
        };
        ls.samples = c.label.samples;
        ls.vocabulary = c.label.vocabulary.clone();
        if let (Some(category), Some(expert), Some(granularity)) =
            (&c.label.category, &c.label.expert, &c.label.granularity)
        {
            ls.context = Some(Context1 {
                category: category.clone(),
                expert: expert.clone(),
                granularity: granularity.clone(),
            });
        }
        let report = label::run(&ls)?;
        if let Some(sim) = sim {
            sim.stop();
        }
        if report.failed > 0 {
            bail!(
                "{} images got no answer; run the pipeline again to ask for them",
                report.failed
            );
        }
        mllm_calls += report.calls;
        Ok(serde_json::json!({
            "calls": report.calls,
            "cache_hits": report.cache_hits,
            "answers": report.answers,
            "undecodable": report.undecodable,
            "wall_s": report.wall_s,
        }))
    })?;
    stages.push(r);

    // refine
    let weights_sha = file_sha256(&weights).with_context(|| {
        format!(
            "cannot read backbone weights `{}`; run scripts/fetch-weights.sh",
            weights.display()
        )
    })?;
    let knn: Vec<(BackboneKind, PathBuf)> = c
        .refine
        .knn_backbones
        .iter()
        .map(|k| (*k, k.default_weights(&s.weights_dir)))
        .collect();
    let mut knn_shas = String::new();
    for (_, w) in &knn {
        knn_shas += &file_sha256(w).with_context(|| {
            format!(
                "cannot read backbone weights `{}`; run scripts/fetch-weights.sh",
                w.display()
            )
        })?;
    }
    let refine_hash = hash_parts(&[
        images_hash.as_bytes(),
        file_sha256(&labels)?.as_bytes(),
        weights_sha.as_bytes(),
        knn_shas.as_bytes(),
        serde_json::to_string(&c.refine)?.as_bytes(),
        optional_file_hash(c.refine.vocabulary.as_deref())?.as_bytes(),
        optional_file_hash(c.refine.verified.as_deref())?.as_bytes(),
    ]);
    let r = stage("refine", refine_hash, &refined, &mut state, &mut || {
        let report = refine::run(&refine::RefineSettings {
            images: images_dir.clone(),
            labels: labels.clone(),
            backbone: c.refine.backbone,
            weights: weights.clone(),
            knn: knn.clone(),
            sentence_model: sentence_model.clone(),
            out: refined.clone(),
            cache: cache.clone(),
            model: None,
            prompt: None,
            vocab: c.refine.vocab.clone(),
            candidates: c.refine.candidates.clone(),
            batch: 8,
            hint: c.refine.vocabulary.clone(),
            verified: c.refine.verified.clone(),
            confusion: c
                .refine
                .correct_confusion
                .then(|| c.refine.confusion.clone()),
            device,
        })?;
        Ok(serde_json::json!({
            "classes": report.classes.len(),
            "pruned_classes": report.pruned_classes,
            "targets_changed": report.summary.targets_changed,
            "targets_filled": report.summary.targets_filled,
            "skipped": report.summary.skipped.len(),
        }))
    })?;
    stages.push(r);

    // train
    let train_hash = hash_parts(&[
        file_sha256(&refined)?.as_bytes(),
        serde_json::to_string(&c.train)?.as_bytes(),
    ]);
    let r = stage("train", train_hash, &ckpt, &mut state, &mut || {
        let report = train::run(&train::TrainCmdSettings {
            refined: refined.clone(),
            weights: weights.clone(),
            cache: cache.clone(),
            out: ckpt.clone(),
            train: c.train.clone(),
            eval: None,
            sentence_model: None,
            batch: 8,
            device,
        })?;
        Ok(serde_json::to_value(&report)?)
    })?;
    stages.push(r);

    // export
    let export_hash = hash_parts(&[
        dir_hash(&ckpt)?.as_bytes(),
        serde_json::to_string(&c.export)?.as_bytes(),
    ]);
    let r = stage("export", export_hash, &bundle, &mut state, &mut || {
        let report = export::run(&export::ExportSettings {
            checkpoint: ckpt.clone(),
            out: bundle.clone(),
            weights: Some(weights.clone()),
            model_id: c.export.model_id.clone(),
            sign: c.export.sign.clone(),
            int8: None,
        })?;
        Ok(serde_json::to_value(&report)?)
    })?;
    stages.push(r);

    // eval
    let mut eval_value = None;
    if let Some(e) = &c.eval {
        let eval_out = w.join("eval.json");
        let eval_hash = hash_parts(&[
            file_sha256(&bundle)?.as_bytes(),
            file_sha256(&e.manifest)?.as_bytes(),
            e.split.as_bytes(),
        ]);
        let r = stage("eval", eval_hash, &eval_out, &mut state, &mut || {
            let report = eval::run(&eval::EvalSettings {
                bundle: bundle.clone(),
                manifest: e.manifest.clone(),
                split: e.split.clone(),
                sentence_model: Some(sentence_model.clone()),
                refined: Some(refined.clone()),
            })?;
            let v = serde_json::to_value(&report)?;
            fs_err::write(&eval_out, serde_json::to_vec_pretty(&v)?)?;
            Ok(v)
        })?;
        stages.push(r);
        eval_value = Some(serde_json::from_slice(&fs_err::read(&eval_out)?)?);
    }
    Ok(PipelineReport {
        work_dir: w.clone(),
        bundle,
        stages,
        mllm_calls,
        labelled_images: files.len(),
        eval: eval_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage record cut short by a crash is kept aside (not silently overwritten) and
    /// the run starts over; a missing one is a fresh folder; a good one is read.
    #[test]
    fn an_unreadable_stage_record_is_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pipeline-state.json");
        assert!(read_state(&path).unwrap().done.is_empty());
        std::fs::write(&path, br#"{"done":{"label":"ab12"}}"#).unwrap();
        assert_eq!(read_state(&path).unwrap().done["label"], "ab12");
        std::fs::write(&path, br#"{"done":{"label":"ab"#).unwrap();
        assert!(read_state(&path).unwrap().done.is_empty());
        assert!(!path.exists());
        let aside = d.path().join("pipeline-state.json.unreadable");
        assert_eq!(std::fs::read(aside).unwrap(), br#"{"done":{"label":"ab"#);
    }

    /// Second adversarial pass (issue 16): the linked images folder followed an edited
    /// manifest only by adding links, so an image dropped from (or replaced in) the
    /// manifest was still labelled and trained on by the next `pipeline` run.
    #[test]
    fn the_linked_images_follow_an_edited_manifest() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        for n in ["a.jpg", "b.jpg", "c.png"] {
            std::fs::write(d.join(n), n).unwrap();
        }
        let manifest = d.join("manifest.csv");
        let links = d.join("work/images");
        let listed = || {
            let mut v: Vec<(String, String)> = std::fs::read_dir(&links)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let to = std::fs::read_link(e.path()).unwrap();
                    let to = to.file_name().unwrap().to_string_lossy().into_owned();
                    (e.file_name().to_string_lossy().into_owned(), to)
                })
                .collect();
            v.sort();
            v
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        std::fs::write(
            &manifest,
            "path,label,split\na.jpg,x,train\nb.jpg,y,train\n",
        )
        .unwrap();
        link_images(&manifest, "train", &links).unwrap();
        assert_eq!(
            listed(),
            vec![pair("00000.jpg", "a.jpg"), pair("00001.jpg", "b.jpg")]
        );
        // `a.jpg` dropped, `c.png` added: row numbers shift, the old links must go.
        std::fs::write(
            &manifest,
            "path,label,split\nb.jpg,y,train\nc.png,x,train\n",
        )
        .unwrap();
        link_images(&manifest, "train", &links).unwrap();
        assert_eq!(
            listed(),
            vec![pair("00000.jpg", "b.jpg"), pair("00001.png", "c.png")]
        );
        // A file the pipeline did not link is refused and kept.
        std::fs::write(links.join("mine.jpg"), "keep").unwrap();
        let e = link_images(&manifest, "train", &links)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mine.jpg") && e.contains("move that file away"),
            "{e}"
        );
        assert_eq!(std::fs::read(links.join("mine.jpg")).unwrap(), b"keep");
    }
}
