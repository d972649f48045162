//! Refine and NeaR training at 10k images, on synthetic embeddings (no images needed):
//! 100 classes of 100 images, 1280-d (MobileNetV2's width), each image its class mean
//! plus noise, L2-normalized; 55% of the images named correctly, 30% with a wrong class,
//! 15% unnamed. Times the stages refine and train run on embeddings: cosine k-NN, candidate
//! sets + vote pruning, and `near` training (8 rounds); medians of 3 runs.
//!
//! Run: `cargo bench --profile dev -p linesight-trainer --bench refine` (figures in
//! docs/benchmarks.md). Embedding the images is not included: it is the backbone's cost
//! (MobileNetV2 in candle: see the NeaR figures in docs/benchmarks.md).

use candle_core::Device;
use linesight_trainer::knn::{cosine_knn, normalize_rows};
use linesight_trainer::near::candidates::{candidate_sets, prune_by_vote, CandidateSettings, Own};
use linesight_trainer::near::train::{train, TrainData, TrainSettings};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Instant;

/// Size of a class's own part of its mean against the per-image noise (1.5).
const SPREAD: f32 = 0.2;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let (classes, per, dim) = (100usize, 100usize, 1280usize);
    let n = classes * per;
    let mut rng = StdRng::seed_from_u64(1);
    // Class means close together (a shared part plus a small own part), so that
    // neighbours are often of another class, as with fine-grained photos.
    let shared: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
    let means: Vec<Vec<f32>> = (0..classes)
        .map(|_| {
            shared
                .iter()
                .map(|s| s + SPREAD * (rng.random::<f32>() - 0.5))
                .collect()
        })
        .collect();
    let mut x = vec![0f32; n * dim];
    let mut truth = vec![0usize; n];
    let mut own: Vec<Own> = Vec::with_capacity(n);
    for i in 0..n {
        let c = i / per;
        truth[i] = c;
        for d in 0..dim {
            x[i * dim + d] = means[c][d] + 1.5 * (rng.random::<f32>() - 0.5);
        }
        let u = rng.random::<f64>();
        own.push(if u < 0.55 {
            vec![(c, 1.0)]
        } else if u < 0.85 {
            vec![((c + 1 + rng.random_range(0..3)) % classes, 1.0)]
        } else {
            Vec::new()
        });
    }
    normalize_rows(&mut x, dim);
    let cs = CandidateSettings::default();
    let (mut t_knn, mut t_cand, mut t_train) = (Vec::new(), Vec::new(), Vec::new());
    let mut acc = 0.0;
    for _ in 0..3 {
        let t0 = Instant::now();
        let nbs = cosine_knn(&x, n, dim, cs.k)?;
        t_knn.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let (kept, own2) = prune_by_vote(&own, &nbs, classes, 3, &cs);
        let sets = candidate_sets(&own2, &nbs, &cs);
        t_cand.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let data = TrainData {
            x: &x,
            n,
            dim,
            classes: kept.len(),
            own: &own2,
            candidates: &sets,
            neighbours: &nbs,
            verified: &[],
        };
        let trained = train(&data, &TrainSettings::default(), &Device::Cpu)?;
        t_train.push(t0.elapsed().as_secs_f64());
        let right = trained
            .targets
            .iter()
            .zip(&truth)
            .filter(|(t, &c)| t.is_some_and(|t| kept[t] == c))
            .count();
        acc = right as f64 / n as f64;
    }
    println!(
        "refine/train on {n} synthetic embeddings ({classes} classes, {dim}-d), medians of 3:"
    );
    println!(
        "  cosine k-NN (k = {}):          {:8.3} s",
        cs.k,
        median(t_knn)
    );
    println!("  candidate sets + vote pruning: {:8.3} s", median(t_cand));
    println!("  near training (8 rounds):      {:8.3} s", median(t_train));
    println!(
        "  (training targets right: {:.1} %; own names right: 55 %)",
        acc * 100.0
    );
    Ok(())
}
