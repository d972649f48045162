//! `linesight-train refine`: MLLM names + backbone neighbours -> `refined.json` (vocabulary,
//! weighted candidate sets, vote targets and the per-image decision log).

use crate::backbone::{self, BackboneKind};
use crate::embed::{file_sha256, progress_bar, EmbeddingCache};
use crate::knn::{cosine_knn, normalize_rows};
use crate::mllm::{cache, images};
use crate::near::candidates::{candidate_sets, prune_by_vote, vote, CandidateSettings, Own};
use crate::near::confusion::{self, ConfusionSettings};
use crate::near::refined::{RefineSummary, Refined, RefinedImage, Signals, REFINED_VERSION};
use crate::sentence::SentenceEncoder;
use crate::vocab::{self, normalize, VocabSettings};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct RefineSettings {
    pub images: PathBuf,
    pub labels: PathBuf,
    /// The backbone `train` will embed with (recorded in refined.json); it also defines
    /// the neighbours unless `knn` names others.
    pub backbone: BackboneKind,
    pub weights: PathBuf,
    /// Backbones (with their weights) whose embeddings define the neighbours instead of
    /// `backbone`'s; several are combined by concatenating their L2-normalised embeddings
    /// scaled by 1/sqrt(count), so the cosine is the mean of their cosines. Empty: the
    /// training backbone's.
    pub knn: Vec<(BackboneKind, PathBuf)>,
    pub sentence_model: PathBuf,
    pub out: PathBuf,
    /// Embedding cache folder.
    pub cache: PathBuf,
    /// Only answers of this model (needed when the log holds several).
    pub model: Option<String>,
    /// Only answers whose prompt sha256 starts with this.
    pub prompt: Option<String>,
    pub vocab: VocabSettings,
    pub candidates: CandidateSettings,
    pub batch: usize,
    /// Vocabulary hint file: answers are snapped to its names.
    pub hint: Option<PathBuf>,
    /// Manifest of expert-verified images (`path,label,split`; every row is used).
    pub verified: Option<PathBuf>,
    /// Estimate the MLLM's confusion and correct the candidate weights for it; `None`:
    /// only when `verified` is given (with the defaults).
    pub confusion: Option<ConfusionSettings>,
    /// Where the image embeddings of the neighbour backbone(s) are computed (`--device`;
    /// they are cached, so only new images cost); the rest of refine runs on the CPU.
    pub device: crate::device::DeviceChoice,
}

#[derive(Debug, Serialize)]
pub struct RefineReport {
    pub out: String,
    pub classes: Vec<String>,
    pub pruned_classes: Vec<String>,
    /// Names dropped from the vocabulary, with why (most frequent first, at most 20).
    pub dropped_names: Vec<String>,
    pub closest_kept_pair: Option<(String, String, f32)>,
    /// Estimated habits: (true class, named as, rate), highest first (at most 20).
    pub habits: Vec<(String, String, f32)>,
    /// The MLLM's accuracy on these images as the confusion estimate sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_mllm_accuracy: Option<f32>,
    pub summary: RefineSummary,
    pub seconds: f64,
}

/// The usable naming answers of each image sha256 (latest per sample), the model and
/// prompt they came from, and the category round 1 found.
pub struct Answers {
    pub by_sha: HashMap<String, Vec<String>>,
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub category: Option<String>,
}

/// Reads the answer log. Fails when it holds answers of several models or prompts and
/// no filter picks one.
pub fn read_answers(
    log: &std::path::Path,
    model: Option<&str>,
    prompt: Option<&str>,
) -> Result<Answers> {
    let (records, repair) =
        cache::read(log).with_context(|| format!("cannot read answer log `{}`", log.display()))?;
    if repair.corrupt_lines > 0 || repair.torn_last_line {
        tracing::warn!(log = %log.display(), corrupt = repair.corrupt_lines, torn = repair.torn_last_line, "answer log has damaged lines; they are skipped");
    }
    let keep = |r: &cache::Record| {
        model.is_none_or(|m| r.model == m) && prompt.is_none_or(|p| r.prompt_sha256.starts_with(p))
    };
    let mut categories: BTreeMap<String, usize> = BTreeMap::new();
    let mut latest: BTreeMap<(String, u32), (String, String, String)> = BTreeMap::new();
    for r in records.iter().filter(|r| keep(r)) {
        match r.round {
            cache::Round::Category => {
                if let Some(c) = &r.context {
                    *categories.entry(normalize(&c.category)).or_default() += 1;
                }
            }
            cache::Round::Name => {
                if let (true, Some(name)) = (r.status.is_usable(), &r.name) {
                    latest.insert(
                        (r.image_sha256.clone(), r.sample),
                        (name.clone(), r.model.clone(), r.prompt_sha256.clone()),
                    );
                }
            }
        }
    }
    let models: std::collections::BTreeSet<&str> = latest.values().map(|v| v.1.as_str()).collect();
    let prompts: std::collections::BTreeSet<&str> = latest.values().map(|v| v.2.as_str()).collect();
    if models.len() > 1 {
        bail!(
            "answer log `{}` holds answers of several models ({}); pick one with --model",
            log.display(),
            models.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if prompts.len() > 1 {
        bail!(
            "answer log `{}` holds answers to {} different naming prompts; pick one with --prompt SHA256_PREFIX (`label diff` shows them)",
            log.display(),
            prompts.len()
        );
    }
    let model = models.into_iter().next().map(str::to_string);
    let prompt = prompts.into_iter().next().map(str::to_string);
    let mut by_sha: HashMap<String, Vec<String>> = HashMap::new();
    for ((sha, _), (name, _, _)) in latest {
        by_sha.entry(sha).or_default().push(name);
    }
    let category = categories
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|c| c.0);
    Ok(Answers {
        by_sha,
        model,
        prompt,
        category,
    })
}

pub fn run(s: &RefineSettings) -> Result<RefineReport> {
    s.vocab.validate("")?;
    s.candidates.validate("")?;
    if let Some(c) = &s.confusion {
        c.validate("confusion.")?;
    }
    crate::bounds::check("batch", s.batch, crate::bounds::Bound::AT_LEAST_ONE)?;
    let mut inputs: Vec<(&str, &Path)> = vec![
        ("the answer log", &s.labels),
        ("the images folder", &s.images),
        ("the backbone weights", &s.weights),
        ("the sentence model", &s.sentence_model),
        ("the embedding cache", &s.cache),
    ];
    inputs.extend(
        s.knn
            .iter()
            .map(|(_, w)| ("the neighbour backbone's weights", w.as_path())),
    );
    inputs.extend(s.hint.as_deref().map(|p| ("the vocabulary file", p)));
    inputs.extend(s.verified.as_deref().map(|p| ("the verified manifest", p)));
    linesight_shared::output::refuse_each(&[&s.out], &inputs)?;
    let t0 = Instant::now();
    // Image embeddings on `compute`, the sentence encoder and the k-NN on the CPU.
    let compute = s.device.open()?;
    let device = Device::Cpu;
    let answers = read_answers(&s.labels, s.model.as_deref(), s.prompt.as_deref())?;
    if answers.by_sha.is_empty() {
        bail!(
            "answer log `{}` has no usable naming answer; run `linesight-train label` first",
            s.labels.display()
        );
    }
    let files = images::list(&s.images)?;
    let paths: Vec<PathBuf> = files.iter().map(|f| f.abs.clone()).collect();
    let pb = progress_bar(paths.len() as u64, "hash");
    let hashes = images::hash_files(&paths, &pb);
    pb.finish_and_clear();
    let mut skipped: Vec<String> = Vec::new();
    let mut ok_idx = Vec::new();
    let mut shas = Vec::new();
    for (i, h) in hashes.into_iter().enumerate() {
        match h {
            Ok(h) => {
                ok_idx.push(i);
                shas.push(h);
            }
            Err(e) => skipped.push(e),
        }
    }
    let ok_paths: Vec<PathBuf> = ok_idx.iter().map(|&i| paths[i].clone()).collect();

    // Embeddings of the neighbour backbone(s) (cached by content).
    let weights_sha = file_sha256(&s.weights)
        .with_context(|| format!("cannot read backbone weights `{}`", s.weights.display()))?;
    let knn: Vec<(BackboneKind, PathBuf)> = if s.knn.is_empty() {
        vec![(s.backbone, s.weights.clone())]
    } else {
        s.knn.clone()
    };
    let te = Instant::now();
    let mut parts: Vec<(Vec<f32>, usize)> = Vec::new();
    let mut rows: Option<Vec<usize>> = None;
    let mut first = String::new();
    for (kind, weights) in &knn {
        let encoder = backbone::load(*kind, weights, &compute)?;
        let sha = if *weights == s.weights {
            weights_sha.clone()
        } else {
            file_sha256(weights)
                .with_context(|| format!("cannot read backbone weights `{}`", weights.display()))?
        };
        let mut cache = EmbeddingCache::open(&s.cache, encoder.name(), &sha, encoder.embed_dim())?;
        let emb = cache.embed(encoder.as_ref(), &sha, &ok_paths, &shas, s.batch, &compute)?;
        match &rows {
            // Every backbone decodes the same files the same way: the first one's skips
            // are everybody's.
            None => skipped.extend(
                emb.skipped
                    .iter()
                    .map(|k| format!("{}: {}", k.path.display(), k.reason)),
            ),
            Some(r) if *r != emb.rows => bail!(
                "backbone `{}` could read other images than `{}`; refine needs the same images from every neighbour backbone",
                encoder.name(),
                first
            ),
            Some(_) => {}
        }
        if rows.is_none() {
            first = encoder.name().to_string();
        }
        rows = Some(emb.rows.clone());
        let dim = encoder.embed_dim();
        let mut v = emb.embeddings.flatten_all()?.to_vec1::<f32>()?;
        normalize_rows(&mut v, dim);
        parts.push((v, dim));
    }
    let embed_seconds = te.elapsed().as_secs_f64();
    let rows = rows.unwrap_or_default();
    let n = rows.len();
    if n == 0 {
        bail!("no image under `{}` could be read", s.images.display());
    }
    let (x, dim) = concat_for_cosine(parts, n);

    // Vocabulary over the answers of the usable images.
    let mut img_answers: Vec<Vec<String>> = rows
        .iter()
        .map(|&r| answers.by_sha.get(&shas[r]).cloned().unwrap_or_default())
        .collect();
    let mut vs = s.vocab.clone();
    if vs.category.is_none() {
        vs.category = answers.category.clone();
        if vs.category.is_none() {
            tracing::warn!("the log has no round-1 category and --category is not given; names that are only the category are not dropped");
        }
    }
    let sentence = SentenceEncoder::load(&s.sentence_model, &device).with_context(|| {
        format!(
            "refine merges synonyms with all-MiniLM-L6-v2 from `{}`",
            s.sentence_model.display()
        )
    })?;
    let hint = match &s.hint {
        Some(p) => vocab::read_hint(p)?,
        None => Vec::new(),
    };
    let snaps = if hint.is_empty() {
        None
    } else {
        Some(vocab::snap_to_hint(
            &mut img_answers,
            &hint,
            vs.hint_threshold,
            &sentence,
        )?)
    };
    let vocabulary = vocab::build(&img_answers, &vs, Some(&sentence))?;
    if vocabulary.classes.is_empty() {
        bail!(
            "no name was given to at least {} images; nothing to train on (lower --min-images?)",
            vs.min_images
        );
    }
    let index = vocabulary.index();
    let own: Vec<Own> = img_answers
        .iter()
        .map(|names| {
            let mut o: Vec<(usize, f32)> = Vec::new();
            let total = names.len().max(1) as f32;
            for nm in names {
                if let Some(&c) = index.get(&normalize(nm)) {
                    match o.iter_mut().find(|e| e.0 == c) {
                        Some(e) => e.1 += 1.0 / total,
                        None => o.push((c, 1.0 / total)),
                    }
                }
            }
            o
        })
        .collect();

    let tk = Instant::now();
    let neighbours = cosine_knn(&x, n, dim, s.candidates.k)?;
    let knn_seconds = tk.elapsed().as_secs_f64();
    let vocab_names = vocabulary.names();
    let (kept, own) = prune_by_vote(
        &own,
        &neighbours,
        vocab_names.len(),
        vs.min_images,
        &s.candidates,
    );
    let mut classes: Vec<String> = kept.iter().map(|&c| vocab_names[c].clone()).collect();
    let pruned_classes: Vec<String> = (0..vocab_names.len())
        .filter(|c| !kept.contains(c))
        .map(|c| vocab_names[c].clone())
        .collect();
    let mut signals = Signals::default();
    let verified = match &s.verified {
        None => Vec::new(),
        Some(path) => {
            let keys: Vec<Vec<String>> = kept
                .iter()
                .map(|&c| vocabulary.classes[c].keys.clone())
                .collect();
            let v = read_verified(path, &rows, &shas, &keys, &mut classes, &sentence, &vs)?;
            signals.verified = v.pairs.len();
            signals.verified_not_found = v.not_found;
            v.pairs
        }
    };
    let mut sets = candidate_sets(&own, &neighbours, &s.candidates);
    let plain_votes = vote(&sets);
    let confusion_settings = match (&s.confusion, verified.is_empty()) {
        (Some(c), _) => Some(c.clone()),
        (None, false) => Some(ConfusionSettings::default()),
        (None, true) => None,
    };
    let confusion = match confusion_settings {
        None => None,
        Some(cs) => {
            let counts: Vec<usize> = img_answers.iter().map(Vec::len).collect();
            let (c, corrected) = confusion::estimate(
                &own,
                &counts,
                &neighbours,
                &sets,
                &verified,
                &classes,
                &s.candidates,
                &cs,
            );
            sets = corrected;
            Some(c)
        }
    };
    let votes = vote(&sets);
    signals.confusion = votes
        .iter()
        .zip(&plain_votes)
        .filter(|(a, b)| a != b)
        .count();
    signals.verified_wrong_vote = verified
        .iter()
        .filter(|&&(i, c)| plain_votes[i] != Some(c))
        .count();
    signals.vocabulary_answers = snaps
        .as_ref()
        .map_or(0, |r| r.snapped.iter().map(|s| s.answers).sum());
    signals.samples = img_answers
        .iter()
        .zip(&own)
        .filter(|(a, o)| a.len() > 1 && !o.is_empty())
        .filter(|(a, o)| {
            let first = index.get(&normalize(&a[0])).copied();
            let first = first.and_then(|c| kept.iter().position(|&k| k == c));
            let top = o
                .iter()
                .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)))
                .map(|e| e.0);
            first != top
        })
        .count();

    let mut summary = RefineSummary {
        images: files.len(),
        answered: img_answers.iter().filter(|a| !a.is_empty()).count(),
        named: own.iter().filter(|o| !o.is_empty()).count(),
        targets: votes.iter().filter(|v| v.is_some()).count(),
        skipped,
        embed_seconds,
        knn_seconds,
        ..RefineSummary::default()
    };
    let mut out_images = Vec::with_capacity(n);
    for (j, &r) in rows.iter().enumerate() {
        let top_own = own[j]
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|e| e.0);
        match (top_own, plain_votes[j]) {
            (Some(a), Some(b)) if a != b => summary.targets_changed += 1,
            (None, Some(_)) => summary.targets_filled += 1,
            _ => {}
        }
        out_images.push(RefinedImage {
            path: files[ok_idx[r]].rel.clone(),
            sha256: shas[r].clone(),
            mllm: img_answers[j].clone(),
            own: own[j].clone(),
            neighbours: neighbours[j].clone(),
            candidates: sets[j].clone(),
            target: votes[j],
            target_name: votes[j].map(|c| classes[c].clone()),
        });
    }
    signals.neighbours = summary.targets_changed;
    summary.signals = signals;
    let images_dir = std::fs::canonicalize(&s.images).unwrap_or_else(|_| s.images.clone());
    let refined = Refined {
        version: REFINED_VERSION,
        images_dir,
        backbone: s.backbone,
        weights_sha256: weights_sha,
        knn_backbones: if s.knn.is_empty() {
            Vec::new()
        } else {
            knn.iter().map(|(k, _)| *k).collect()
        },
        mllm_model: answers.model,
        prompt_sha256: answers.prompt,
        vocab_settings: vs,
        candidate_settings: s.candidates.clone(),
        vocabulary,
        classes: classes.clone(),
        pruned_classes: pruned_classes.clone(),
        verified,
        hint,
        snaps,
        confusion,
        images: out_images,
        summary: summary.clone(),
    };
    refined.write(&s.out)?;
    Ok(RefineReport {
        out: s.out.display().to_string(),
        classes,
        pruned_classes,
        dropped_names: refined
            .vocabulary
            .dropped
            .iter()
            .take(20)
            .map(|d| format!("{} ({:?}, {} images)", d.key, d.reason, d.images))
            .collect(),
        closest_kept_pair: refined.vocabulary.closest_kept_pair.clone(),
        habits: refined.confusion.as_ref().map_or_else(Vec::new, |c| {
            c.habits
                .iter()
                .take(20)
                .map(|h| (h.true_name.clone(), h.named_name.clone(), h.rate))
                .collect()
        }),
        estimated_mllm_accuracy: refined.confusion.as_ref().map(|c| c.accuracy),
        summary,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Verified images matched to the refined images and classes.
struct Verified {
    /// (image index, class index)
    pairs: Vec<(usize, usize)>,
    /// Rows whose image is not among the images.
    not_found: usize,
}

/// Reads the verified manifest: each row's file is matched to an image by the sha256 of
/// its bytes and its label to a class (by key, else by MiniLM similarity at the synonym
/// threshold, else as a new class appended to `classes`: a class the MLLM never named
/// well enough is still one the expert knows).
fn read_verified(
    path: &std::path::Path,
    rows: &[usize],
    shas: &[String],
    class_keys: &[Vec<String>],
    classes: &mut Vec<String>,
    sentence: &SentenceEncoder,
    vs: &VocabSettings,
) -> Result<Verified> {
    let entries = crate::dataset::read_manifest(path)?;
    if entries.is_empty() {
        bail!("verified manifest `{}` has no rows", path.display());
    }
    let by_sha: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(j, &r)| (shas[r].as_str(), j))
        .collect();
    let mut key_of: HashMap<String, usize> = HashMap::new();
    for (c, keys) in class_keys.iter().enumerate() {
        for k in keys {
            key_of.insert(k.clone(), c);
        }
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut not_found = 0;
    for e in &entries {
        let sha = file_sha256(&e.path).with_context(|| {
            format!(
                "verified manifest `{}`: cannot read `{}`",
                path.display(),
                e.path.display()
            )
        })?;
        let Some(&img) = by_sha.get(sha.as_str()) else {
            not_found += 1;
            continue;
        };
        let key = normalize(&e.label);
        let class = match key_of.get(&key) {
            Some(&c) => c,
            None => {
                let emb = sentence.encode(&[e.label.as_str()])?;
                let names: Vec<&str> = classes.iter().map(String::as_str).collect();
                let cemb = sentence.encode(&names)?;
                let best = cemb
                    .iter()
                    .enumerate()
                    .map(|(c, ce)| (c, crate::sentence::cosine(&emb[0], ce)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                match best {
                    Some((c, cos)) if cos >= vs.synonym_threshold => c,
                    _ => {
                        tracing::info!(label = %e.label, "a verified label names a class the vocabulary lacks; added");
                        classes.push(e.label.clone());
                        classes.len() - 1
                    }
                }
            }
        };
        key_of.insert(key, class);
        match pairs.iter_mut().find(|p| p.0 == img) {
            Some(p) => p.1 = class,
            None => pairs.push((img, class)),
        }
    }
    if not_found > 0 {
        tracing::warn!(
            rows = not_found,
            manifest = %path.display(),
            "verified rows whose image is not among --images are ignored"
        );
    }
    if pairs.is_empty() {
        bail!(
            "none of the {} images in verified manifest `{}` is among the images being refined (they are matched by content)",
            entries.len(),
            path.display()
        );
    }
    pairs.sort_unstable();
    Ok(Verified { pairs, not_found })
}

/// Row-wise concatenation of L2-normalised embeddings (`parts`: `n` rows each, with their
/// widths), each part scaled by 1/sqrt(parts): the dot product of two rows is then the
/// mean of the parts' cosines, and every row has unit length. Returns the rows and width.
fn concat_for_cosine(mut parts: Vec<(Vec<f32>, usize)>, n: usize) -> (Vec<f32>, usize) {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let width: usize = parts.iter().map(|p| p.1).sum();
    let scale = 1.0 / (parts.len() as f32).sqrt();
    let mut x = Vec::with_capacity(n * width);
    for r in 0..n {
        for (v, dim) in &parts {
            x.extend(v[r * dim..(r + 1) * dim].iter().map(|a| a * scale));
        }
    }
    (x, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_rows_have_unit_length_and_the_mean_cosine() {
        // Two rows in two embeddings of widths 2 and 3, each row L2-normalised.
        let mut a = vec![1.0, 0.0, 0.6, 0.8];
        let mut b = vec![0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        normalize_rows(&mut a, 2);
        normalize_rows(&mut b, 3);
        let cos = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let (x, width) = concat_for_cosine(vec![(a.clone(), 2), (b.clone(), 3)], 2);
        assert_eq!(width, 5);
        let (r0, r1) = x.split_at(5);
        assert!((cos(r0, r0) - 1.0).abs() < 1e-6);
        assert!((cos(r1, r1) - 1.0).abs() < 1e-6);
        let mean = (cos(&a[..2], &a[2..]) + cos(&b[..3], &b[3..])) / 2.0;
        assert!(
            (cos(r0, r1) - mean).abs() < 1e-6,
            "{} vs {mean}",
            cos(r0, r1)
        );
        // One embedding passes through unchanged.
        assert_eq!(concat_for_cosine(vec![(a.clone(), 2)], 2), (a, 2));
    }
}
