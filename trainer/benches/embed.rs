//! Embedding speed of the inverted-residual backbones in candle on this CPU: images per
//! second of `embed` (forward to the pooled 1280-d features) at batch 1 and 8, MobileNetV2
//! and EfficientNet-Lite0 alternating round by round so both see the same machine load;
//! medians of the rounds and the ratio of the medians. Inputs are the two ImageNet fixture
//! photos, preprocessed once with each backbone's own normalisation (preprocessing and JPEG
//! decoding are not timed: they are the same for both).
//!
//! Run: `cargo bench --profile dev --features linesight-edge/camera --bench embed`
//! (needs `models/weights/`, see scripts/fetch-weights.sh; `ROUNDS=N`, default 7).
//! Figures in docs/benchmarks.md.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use linesight_trainer::backbone::{self, BackboneKind, ImageEncoder};
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn batch(net: &dyn ImageEncoder, n: usize, dev: &Device) -> Result<Tensor> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pre = Preprocessor::new(net.preprocess());
    let photos = ["chelsea.png", "coffee.png"]
        .iter()
        .map(|p| {
            let path = root.join("tests/fixtures/imagenet").join(p);
            RgbImage::open(&path).with_context(|| format!("cannot read `{}`", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut xs = Vec::new();
    for i in 0..n {
        xs.extend(pre.tensor(&photos[i % 2])?);
    }
    let side = net.preprocess().crop as usize;
    Ok(Tensor::from_vec(xs, (n, 3, side, side), dev)?)
}

fn main() -> Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let dev = Device::Cpu;
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/weights");
    let kinds = [BackboneKind::MobilenetV2, BackboneKind::EfficientnetLite0];
    let nets = kinds
        .iter()
        .map(|&k| backbone::load(k, &k.default_weights(&weights), &dev))
        .collect::<Result<Vec<_>>>()?;
    println!("| batch | backbone | images/s (median of {rounds}) | ms per image |");
    println!("|---|---|---|---|");
    for n in [1usize, 8] {
        let inputs = nets
            .iter()
            .map(|net| batch(net.as_ref(), n, &dev))
            .collect::<Result<Vec<_>>>()?;
        for (net, x) in nets.iter().zip(&inputs) {
            net.embed(x)?; // warm-up
        }
        let mut rates = vec![Vec::new(); nets.len()];
        for _ in 0..rounds {
            for (i, (net, x)) in nets.iter().zip(&inputs).enumerate() {
                let t = Instant::now();
                net.embed(x)?;
                rates[i].push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        let med: Vec<f64> = rates.into_iter().map(median).collect();
        for (k, r) in kinds.iter().zip(&med) {
            println!("| {n} | {} | {r:.2} | {:.1} |", k.name(), 1000.0 / r);
        }
        println!(
            "| {n} | ratio efficientnet-lite0 / mobilenet-v2 | {:.3} | |",
            med[1] / med[0]
        );
    }
    Ok(())
}
