//! Writes an f32 bundle of a CLIP ViT-B/16-shaped image tower with random weights (real
//! shapes: 224 px, patch 16, width 768, 12 layers of 12 heads, 512-wide projection) and a
//! random cosine head: the speed benchmarks' stand-in for CLIP, whose weights are not
//! reachable here. Its accuracy means nothing; its cost is ViT-B/16's.
//!
//! The export goes through the real exporter (candle vs tract parity on the photos given).
//!
//! Example:
//!   cargo run --example random_tower -- OUT.lsb [LAYERS] [CLASSES] PHOTO...

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use linesight_shared::manifest::Provenance;
use linesight_shared::preprocess::RgbImage;
use linesight_trainer::backbone::clip::{ClipConfig, ClipImageEncoder, ClipVisionTower};
use linesight_trainer::export::{self, ExportOptions, Head};
use linesight_trainer::head::{l2_normalize, CosineHead, DEFAULT_SCALE};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: random_tower OUT.lsb LAYERS CLASSES PHOTO... (photos: real images for the candle/tract parity check)");
    }
    let out = std::path::PathBuf::from(&args[0]);
    let layers: usize = args[1].parse().context("LAYERS must be a number")?;
    let classes: usize = args[2].parse().context("CLASSES must be a number")?;
    let photos = args[3..]
        .iter()
        .map(|p| RgbImage::open(std::path::Path::new(p)).with_context(|| format!("photo `{p}`")))
        .collect::<Result<Vec<_>>>()?;
    let device = Device::Cpu;
    let mut cfg = ClipConfig::vit_b16();
    cfg.vision.num_hidden_layers = layers;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let tower = ClipVisionTower::new(vb, &cfg.vision, cfg.projection_dim)?;
    let name = format!("clip-vit-b16-random-{layers}l");
    let encoder = ClipImageEncoder::from_tower(tower, &name)?;
    let weight = l2_normalize(&Tensor::randn(
        0f32,
        1.0,
        (classes, cfg.projection_dim),
        &device,
    )?)?;
    let head = CosineHead {
        weight,
        scale: DEFAULT_SCALE,
    };
    let labels: Vec<String> = (0..classes).map(|i| format!("class-{i:02}")).collect();
    let provenance = Provenance {
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        backbone: name.clone(),
        method: "random".into(),
        created_unix: export::unix_now(),
        ..Default::default()
    };
    let mut opts = ExportOptions::new(&name, labels, provenance);
    // 12 random layers accumulate more f32 reordering than the 2-layer test's 1e-4.
    opts.max_abs_logit_diff = 1e-3;
    let (mut bundle, report) =
        export::export_f32(&encoder, &Head::Cosine(&head), &photos, &opts, &device)?;
    let (bytes, _) = export::sign_and_write(&mut bundle, None, &out)?;
    println!(
        "{}: {bytes} bytes, candle vs tract max |logit diff| {:.2e} on {} photos",
        out.display(),
        report.max_abs_logit_diff,
        report.check_images
    );
    Ok(())
}
