//! `side-by-side`: tract (linesight's `Engine`, what the box runs) against onnxruntime,
//! f32 and int8, at several thread counts, in one process, interleaved round by round.
//! scripts/ort-bench.sh sets up onnxruntime and onnxruntime's own int8 model and runs it;
//! docs/benchmarks.md ("int8 side by side") holds the figures.

mod report;
mod runner;

use anyhow::{bail, Context, Result};
use clap::Parser;
use linesight_shared::bundle::Bundle;
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use report::{Cell, Report};
use runner::{Ort, Runner, Tract};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Side-by-side latency of tract and onnxruntime, f32 and int8, in one process.
///
/// For each --model, every variant is built at every thread count, then the rounds run:
/// in each round every (threads, variant) pair runs --iterations images in turn, so slow
/// drift of the machine hits all variants alike. Variants: tract-f32 and ort-f32 (the
/// f32 bundle's ONNX), tract-int8 and ort-int8-lsb (the int8 bundle's ONNX in tract and in
/// onnxruntime), ort-int8 (onnxruntime's own int8 encoding, an ONNX file). Threads are
/// tract's executor (`Engine::set_threads`) and onnxruntime's intra-op threads (one
/// inter-op thread, no spinning).
///
/// The timing input is the first --images photo, preprocessed as the f32 manifest says;
/// the first --agreement-images photos (sorted) give each variant's top-1 agreement with
/// tract f32.
///
/// Example: side-by-side --ort-lib target/ort/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 --model mnv2=target/int8/mnv2-f32.lsb,target/int8/mnv2-int8.lsb,target/ort/mnv2/ort-int8.onnx --images /work/shared/data/cub26/images --out target/ort/run
#[derive(Parser)]
#[command(name = "side-by-side", version, about, long_about)]
struct Args {
    /// onnxruntime's shared library (libonnxruntime.so from the PyPI wheel).
    #[arg(long)]
    ort_lib: PathBuf,
    /// NAME=F32.lsb[,INT8.lsb[,ORT_INT8.onnx]]; repeatable. An empty field skips it
    /// (`vit=f32.lsb,,ort.onnx`).
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Thread counts, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Rounds.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Images per variant and round.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Photos (folder, searched recursively): timing input and agreement set.
    #[arg(long)]
    images: PathBuf,
    /// Photos used for the top-1 agreement with tract f32 (at most).
    #[arg(long, default_value_t = 20)]
    agreement_images: usize,
    /// Take the agreement photos from this `path,label,split` CSV instead of --images
    /// (e.g. cub26's manifest.csv: held-out photos, the test split); paths are relative to
    /// the CSV's folder. The timing input stays the first --images photo.
    #[arg(long, value_name = "CSV")]
    agreement_manifest: Option<PathBuf>,
    /// The split of --agreement-manifest to use.
    #[arg(long, default_value = "test")]
    agreement_split: String,
    /// Write side-by-side.json and side-by-side.md here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also run tract without linesight's own graph ops (`tract-f32-plain`,
    /// `tract-int8-plain`): the same build's kernels registry, tract's plan alone.
    #[arg(long)]
    plain: bool,
    /// Log filter (also RUST_LOG).
    #[arg(long, default_value = "info")]
    log: String,
}

struct ModelSpec {
    name: String,
    f32: PathBuf,
    int8: Option<PathBuf>,
    ort_int8: Option<PathBuf>,
}

fn parse_model(s: &str) -> Result<ModelSpec> {
    let (name, rest) = s
        .split_once('=')
        .with_context(|| format!("--model `{s}` is not NAME=F32.lsb[,INT8.lsb[,ORT_INT8.onnx]]"))?;
    let mut parts = rest
        .split(',')
        .map(|p| (!p.is_empty()).then(|| PathBuf::from(p)));
    let f32 = parts
        .next()
        .flatten()
        .with_context(|| format!("--model `{s}`: the f32 bundle is missing"))?;
    Ok(ModelSpec {
        name: name.to_string(),
        f32,
        int8: parts.next().flatten(),
        ort_int8: parts.next().flatten(),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("side-by-side: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Variant {
    name: &'static str,
    threads: usize,
    runner: Box<dyn Runner>,
    latencies: Vec<f64>,
    round_medians: Vec<f64>,
    agreement: Option<(f64, f64)>,
    agree_count: Option<(usize, usize)>,
}

fn read_bundle(p: &std::path::Path) -> Result<Bundle> {
    Bundle::read(p).with_context(|| format!("cannot use bundle `{}`", p.display()))
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

fn run(args: &Args) -> Result<()> {
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs positive thread counts, e.g. 1,2");
    }
    let env = runner::ort_environment(&args.ort_lib)?;
    use linesight_shared::walk::{walk, WalkOptions};
    let found = walk(
        std::slice::from_ref(&args.images),
        &WalkOptions::images(&linesight_shared::decode::IMAGE_EXTENSIONS),
    )
    .map_err(|_| anyhow::anyhow!("the walk of `{}` was cancelled", args.images.display()))?;
    if let Some(e) = found.errors.first() {
        bail!("`{}`: {e}", args.images.display());
    }
    let mut photos = found.files;
    photos.sort();
    if photos.is_empty() {
        bail!("no images under `{}`", args.images.display());
    }
    let pool = match &args.agreement_manifest {
        Some(csv) => split_photos(csv, &args.agreement_split)?,
        None => photos.clone(),
    };
    // Spread the agreement set over the pool (the photos are sorted by class), with the
    // first --images photo (the timing input) always first.
    let step = (pool.len() / args.agreement_images.max(1)).max(1);
    let mut agreement_set: Vec<PathBuf> = vec![photos[0].clone()];
    agreement_set.extend(
        pool.iter()
            .step_by(step)
            .take(args.agreement_images.max(1))
            .cloned(),
    );
    let mut cells = Vec::new();
    for spec in args.models.iter().map(|m| parse_model(m)) {
        let spec = spec?;
        cells.extend(bench_model(args, &env, &spec, &agreement_set)?);
    }
    let build = linesight_edge::build_info::BuildInfo::current();
    eprintln!("side-by-side: {}", build.describe());
    let report = Report {
        build,
        kernels: linesight_edge::kernels::active(),
        agreement_images: agreement_set.len() - 1,
        agreement_source: match &args.agreement_manifest {
            Some(csv) => format!("{} (split {})", csv.display(), args.agreement_split),
            None => args.images.display().to_string(),
        },
        ort_library: args.ort_lib.display().to_string(),
        ort_version: ort_version(&args.ort_lib),
        tract_version: "0.23.9".into(),
        rounds: args.rounds,
        iterations_per_round: args.iterations,
        threads: args.threads.clone(),
        ratios: report::ratios(&cells),
        cells,
    };
    let md = report.markdown();
    print!("{md}");
    if let Some(dir) = &args.out {
        fs_err::create_dir_all(dir)?;
        fs_err::write(
            dir.join("side-by-side.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        fs_err::write(dir.join("side-by-side.md"), &md)?;
        eprintln!("side-by-side: wrote `{}`", dir.display());
    }
    Ok(())
}

/// The photos of one split of a `path,label,split` CSV (paths relative to its folder),
/// sorted. Fails on a line without three fields, naming the file and the line.
fn split_photos(csv: &std::path::Path, split: &str) -> Result<Vec<PathBuf>> {
    let text = fs_err::read_to_string(csv)?;
    let base = csv.parent().unwrap_or(std::path::Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 {
            bail!(
                "`{}` line {}: expected `path,label,split`, got `{line}`",
                csv.display(),
                i + 1
            );
        }
        if fields[fields.len() - 1].trim() == split {
            out.push(base.join(fields[0].trim()));
        }
    }
    if out.is_empty() {
        bail!("`{}` has no row of split `{split}`", csv.display());
    }
    out.sort();
    Ok(out)
}

/// The version in the library's file name (`libonnxruntime.so.1.31.1`), else `unknown`.
fn ort_version(lib: &std::path::Path) -> String {
    let name = lib.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("libonnxruntime.so.")
        .filter(|v| !v.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn bench_model(
    args: &Args,
    env: &ort::environment::Environment,
    spec: &ModelSpec,
    agreement_set: &[PathBuf],
) -> Result<Vec<Cell>> {
    let f32b = read_bundle(&spec.f32)?;
    let int8b = spec.int8.as_deref().map(read_bundle).transpose()?;
    let ort_int8 = spec
        .ort_int8
        .as_ref()
        .map(|p| fs_err::read(p).context("cannot read onnxruntime's int8 model"))
        .transpose()?;
    let m = &f32b.manifest;
    if let Some(b) = &int8b {
        if b.manifest.preprocess != m.preprocess || b.manifest.labels != m.labels {
            bail!(
                "`{}` and `{}` differ in preprocessing or labels: not the same model",
                spec.f32.display(),
                spec.int8
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
    }
    let shape = m.preprocess.input_shape().to_vec();
    let labels = m.labels.len();
    let mut variants: Vec<Variant> = Vec::new();
    for &threads in &args.threads {
        let mut add = |name: &'static str, runner: Box<dyn Runner>| {
            variants.push(Variant {
                name,
                threads,
                runner,
                latencies: Vec::new(),
                round_medians: Vec::new(),
                agreement: None,
                agree_count: None,
            })
        };
        let t = Instant::now();
        add(
            "tract-f32",
            Box::new(Tract::new(&f32b.model, &shape, threads, true)?),
        );
        if let Some(b) = &int8b {
            add(
                "tract-int8",
                Box::new(Tract::new(&b.model, &shape, threads, true)?),
            );
        }
        if args.plain {
            add(
                "tract-f32-plain",
                Box::new(Tract::new(&f32b.model, &shape, threads, false)?),
            );
            if let Some(b) = &int8b {
                add(
                    "tract-int8-plain",
                    Box::new(Tract::new(&b.model, &shape, threads, false)?),
                );
            }
        }
        add(
            "ort-f32",
            Box::new(Ort::new(env, &f32b.model, &shape, threads)?),
        );
        if let Some(onnx) = &ort_int8 {
            add("ort-int8", Box::new(Ort::new(env, onnx, &shape, threads)?));
        }
        if let Some(b) = &int8b {
            add(
                "ort-int8-lsb",
                Box::new(Ort::new(env, &b.model, &shape, threads)?),
            );
        }
        tracing::info!(model = %spec.name, threads, secs = t.elapsed().as_secs_f64(), "variants built");
    }

    // Correctness beside speed: top-1 agreement with tract f32 (first thread count).
    let mut pre = Preprocessor::new(m.preprocess);
    let mut input = vec![0f32; shape.iter().product()];
    let mut logits = vec![0f32; labels];
    let mut reference: Vec<Vec<f32>> = Vec::new();
    let mut inputs: Vec<Vec<f32>> = Vec::new();
    for p in agreement_set {
        let img = RgbImage::open(p).with_context(|| format!("cannot read `{}`", p.display()))?;
        pre.run(&img.pixels, img.width, img.height, &mut input)?;
        inputs.push(input.clone());
    }
    let first_threads = args.threads[0];
    for v in variants.iter_mut().filter(|v| v.threads == first_threads) {
        let (mut agree, mut worst) = (0usize, 0f64);
        // inputs[0] is the timing photo, not part of the agreement set.
        for (i, x) in inputs.iter().enumerate().skip(1) {
            v.runner.infer(x, &mut logits)?;
            if v.name == "tract-f32" {
                reference.push(logits.clone());
            }
            let r = &reference[i - 1];
            agree += usize::from(argmax(r) == argmax(&logits));
            worst = logits
                .iter()
                .zip(r)
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(worst, f64::max);
        }
        let n = inputs.len() - 1;
        v.agreement = Some((agree as f64 / n as f64 * 100.0, worst));
        v.agree_count = Some((agree, n));
        tracing::info!(model = %spec.name, variant = v.name, top1_agreement = agree, of = n, max_abs_logit_diff = worst, "agreement with tract f32");
    }

    // Timing: the first photo, every variant once unmeasured, then the rounds.
    let timing_input = &inputs[0];
    for v in variants.iter_mut() {
        for _ in 0..2 {
            v.runner.infer(timing_input, &mut logits)?;
        }
    }
    for round in 0..args.rounds {
        // Rotate the order each round so no variant always follows the same one.
        let n = variants.len();
        for k in 0..n {
            let v = &mut variants[(k + round) % n];
            let mut times = Vec::with_capacity(args.iterations);
            for _ in 0..args.iterations {
                let t = Instant::now();
                v.runner.infer(timing_input, &mut logits)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            v.round_medians.push(report::quantile(&times, 0.5));
            v.latencies.extend(times);
        }
        tracing::info!(model = %spec.name, round, "round done");
    }
    Ok(variants
        .into_iter()
        .map(|v| Cell {
            model: spec.name.clone(),
            variant: v.name.into(),
            threads: v.threads,
            median_ms: report::quantile(&v.latencies, 0.5),
            p95_ms: report::quantile(&v.latencies, 0.95),
            round_spread_pct: report::spread_pct(&v.round_medians),
            top1_agreement_pct: v.agreement.map(|a| a.0),
            agreeing: v.agree_count.map(|a| a.0),
            agreement_images: v.agree_count.map(|a| a.1),
            max_abs_logit_diff: v.agreement.map(|a| a.1),
            latencies_ms: v.latencies,
        })
        .collect())
}
