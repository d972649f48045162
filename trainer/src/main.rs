//! `linesight-train`: parses arguments, runs one command, prints its report.

mod cli;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};
use linesight_shared::closed_pipe::is_closed_pipe;
use linesight_shared::decode::{ImageLimits, DEFAULT_MAX_MEGAPIXELS};
use linesight_trainer::commands::{
    eval, export, keygen, label, mender_artifact, pipeline, prototypes, quantize, refine,
    simulate_mllm, thresholds, train, validate,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let limits =
        ImageLimits::megapixels(cli.max_image_megapixels.unwrap_or(DEFAULT_MAX_MEGAPIXELS))
            .map_err(anyhow::Error::msg);
    match limits.and_then(|l| {
        l.set_process();
        run(cli.command, cli.json)
    }) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): a quiet, clean end.
        Err(e) if is_closed_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<validate::NoGo>().is_some() => {
            eprintln!("linesight-train: {e}");
            ExitCode::from(validate::NO_GO_EXIT)
        }
        Err(e) => {
            eprintln!(
                "linesight-train: error: {}",
                linesight_shared::message::error_chain(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

/// `LINESIGHT_WEIGHTS` or `models/weights` beside the workspace.
fn weights_dir() -> PathBuf {
    std::env::var_os("LINESIGHT_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/weights"))
}

/// Prints the report on stdout; a closed pipe comes back as an error `main` ends quietly on
/// (`println!` would panic).
fn print_report<T: serde::Serialize + std::fmt::Debug>(json: bool, report: &T) -> Result<()> {
    if json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(report)?)?;
    } else {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(report)?
        )?;
    }
    Ok(())
}

fn run(command: Command, json: bool) -> Result<()> {
    match command {
        Command::Prototypes {
            backbone,
            weights,
            manifest,
            split,
            out,
            model_id,
            scale,
            batch,
            check_images,
            sign,
            int8,
            quant,
        } => {
            let int8 = int8_request(int8, &quant)?;
            let settings = prototypes::PrototypesSettings {
                backbone,
                weights: weights.unwrap_or_else(|| backbone.default_weights(&weights_dir())),
                manifest,
                split,
                out,
                model_id,
                scale,
                batch,
                check_images,
                sign,
                int8,
            };
            let report = prototypes::run(&settings)?;
            print_report(json, &report)
        }
        Command::Keygen { out } => {
            let report = keygen::run(&keygen::KeygenSettings { out })?;
            print_report(json, &report)
        }
        Command::Eval {
            bundle,
            manifest,
            split,
            sentence_model,
            refined,
        } => {
            let sentence_model =
                Some(sentence_model.unwrap_or_else(|| weights_dir().join("all-MiniLM-L6-v2")));
            let report = eval::run(&eval::EvalSettings {
                bundle,
                manifest,
                split,
                sentence_model,
                refined,
            })?;
            print_report(json, &report)
        }
        Command::Refine(a) => {
            let report = refine::run(&refine_settings(*a))?;
            print_report(json, &report)
        }
        Command::Train(a) => {
            let report = train::run(&train_settings(*a)?)?;
            print_report(json, &report)
        }
        Command::Export {
            checkpoint,
            out,
            weights,
            model_id,
            sign,
            int8,
            quant,
        } => {
            let int8 = int8_request(int8, &quant)?;
            let report = export::run(&export::ExportSettings {
                checkpoint,
                out,
                weights,
                model_id,
                sign,
                int8,
            })?;
            print_report(json, &report)
        }
        Command::Quantize {
            bundle,
            out,
            sign,
            quant,
        } => {
            let Some(req) = int8_request(true, &quant)? else {
                unreachable!("int8_request(true, ..) returns a request or an error")
            };
            let report = quantize::run(&bundle, &req.sets, &req.opts, sign.as_deref(), &out)?;
            print_report(json, &report)
        }
        Command::Pipeline {
            config,
            force,
            device,
        } => {
            let report = pipeline::run(&pipeline::PipelineSettings {
                config,
                weights_dir: weights_dir(),
                force,
                device,
            })?;
            print_report(json, &report)
        }
        Command::Label(args) => match args.action {
            Some(cli::LabelAction::Diff {
                a,
                b,
                a_model,
                a_prompt,
                b_model,
                b_prompt,
            }) => {
                let side = |log, model, prompt| linesight_trainer::mllm::drift::Side {
                    log,
                    model,
                    prompt,
                };
                let settings = label::DiffSettings {
                    a: side(a, a_model, a_prompt),
                    b: side(b, b_model, b_prompt),
                };
                print_report(json, &label::diff(&settings)?)
            }
            Some(cli::LabelAction::Score {
                labels,
                truth,
                split,
                model,
                prompt,
            }) => {
                let settings = linesight_trainer::mllm::score::ScoreSettings {
                    log: labels,
                    truth,
                    split,
                    model,
                    prompt,
                };
                print_report(json, &label::score(&settings)?)
            }
            None => {
                let settings = label_settings(*args)?;
                let report = label::run(&settings)?;
                print_report(json, &report)?;
                if report.failed > 0 {
                    anyhow::bail!("{} images got no answer (see `failures`); run the same command again to ask for them", report.failed);
                }
                Ok(())
            }
        },
        Command::Validate(a) => {
            let summary = validate::run(&validate_settings(*a))?;
            print_report(json, &summary)?;
            if !summary.go {
                return Err(validate::NoGo(summary.verdict).into());
            }
            Ok(())
        }
        Command::Thresholds {
            bundle,
            set,
            out,
            sign,
        } => {
            let report = thresholds::run(&thresholds::ThresholdsSettings {
                bundle,
                set,
                out,
                sign,
            })?;
            print_report(json, &report)
        }
        Command::SimulateMllm(args) => {
            let s = simulate_settings(*args)?;
            match &s.direct {
                Some(split) => print_report(json, &simulate_mllm::direct(&s, split)?),
                None => print_report(json, &simulate_mllm::run(&s)?),
            }
        }
        Command::MenderArtifact {
            bundle,
            device_types,
            out,
            artifact_name,
            runtime_version,
            no_runtime_depends,
            trusted_keys,
            allow_unsigned,
            mender_artifact: tool,
        } => {
            let report = mender_artifact::run(&mender_artifact::MenderArtifactSettings {
                bundle,
                device_types,
                out,
                artifact_name,
                runtime_version,
                runtime_depends: !no_runtime_depends,
                trusted_keys,
                allow_unsigned,
                tool,
            })?;
            print_report(json, &report)
        }
    }
}

/// `validate`'s flags -> settings (defaults resolved against the weights folder).
fn validate_settings(a: cli::ValidateArgs) -> validate::ValidateSettings {
    let cache = a.cache.unwrap_or_else(|| match &a.refined {
        Some(r) => beside(r, "cache"),
        None => a.out.join("embedding-cache"),
    });
    validate::ValidateSettings {
        weights: a.weights,
        weights_dir: weights_dir(),
        sentence_model: Some(
            a.sentence_model
                .unwrap_or_else(|| weights_dir().join("all-MiniLM-L6-v2")),
        ),
        bundle: a.bundle,
        manifest: a.manifest,
        split: a.split,
        baseline: a.baseline,
        twin: a.twin,
        refined: a.refined,
        targets: a.targets,
        uncertain: a.uncertain,
        target_precision: a.target_precision,
        require: a.require,
        out: a.out,
        cache,
        trusted_keys: a.trusted_key,
        bench_iterations: a.bench_iterations,
        threads: a.threads,
        resamples: a.resamples,
        seed: a.seed,
    }
}

/// `label`'s flags -> settings (the API key is read from the named variable here).
fn label_settings(a: cli::LabelArgs) -> Result<label::LabelSettings> {
    use anyhow::Context;
    use linesight_trainer::mllm::{
        accounting::Prices, cache::Params, client::ApiKey, prompt::Context1,
    };
    let missing = |what: &str| anyhow::anyhow!("label needs --{what}");
    if a.endpoints.is_empty() {
        return Err(missing("endpoint"));
    }
    let mut s = label::LabelSettings::new(
        a.images.ok_or_else(|| missing("images"))?,
        String::new(),
        a.model.ok_or_else(|| missing("model"))?,
        a.out.ok_or_else(|| missing("out"))?,
    );
    s.endpoints = a.endpoints;
    s.api_key = a.api_key_env.as_deref().map(ApiKey::from_env).transpose()?;
    s.api_key_env = a.api_key_env;
    s.concurrency = a.concurrency;
    s.prompt = a.prompt;
    s.category_prompt = a.category_prompt;
    if let (Some(category), Some(expert), Some(granularity)) = (a.category, a.expert, a.granularity)
    {
        s.context = Some(Context1 {
            category,
            expert,
            granularity,
        });
    }
    s.context_images = a.context_images;
    s.params = Params {
        temperature: a.temperature,
        max_tokens: a.max_tokens,
        top_p: None,
    };
    s.dry_run = a.dry_run;
    s.max_retries = a.max_retries;
    s.retry_base = std::time::Duration::from_millis(a.retry_base_ms);
    s.timeout = std::time::Duration::try_from_secs_f64(a.timeout)
        .context("--timeout must be a positive number of seconds")?;
    s.prices = a.price_in.zip(a.price_out).map(|(i, o)| Prices {
        input_per_mtok: i,
        output_per_mtok: o,
    });
    s.baseline = match (a.baseline_images, a.baseline_manifest) {
        (Some(n), _) => Some(label::Baseline::Images(n)),
        (None, Some(path)) => Some(label::Baseline::Manifest {
            path,
            split: a.baseline_split,
        }),
        (None, None) => None,
    };
    s.accounting = a.accounting;
    s.retry_malformed = a.retry_malformed;
    s.samples = a.samples;
    s.vocabulary = a.vocabulary.clone();
    Ok(s)
}

/// `simulate-mllm`'s flags -> settings.
fn simulate_settings(a: cli::SimulateArgs) -> Result<simulate_mllm::SimulateSettings> {
    use linesight_trainer::mllm::{client::ApiKey, prompt::Context1, simulator};
    let mut c = simulator::SimulatorConfig::new(a.truth);
    c.accuracy = a.accuracy;
    c.mix = simulator::noise::Mix {
        sibling: a.sibling_share,
        coarse: a.coarse_share,
        outside: a.outside_share,
    };
    c.seed = a.seed;
    c.systematic = a.systematic;
    c.spread = a.spread;
    c.groups = a.groups;
    c.fault_rate = a.fault_rate;
    c.faults = a
        .faults
        .iter()
        .filter(|f| !f.trim().is_empty())
        .map(|f| simulator::Fault::parse(f))
        .collect::<Result<_>>()?;
    c.retry_after_s = a.retry_after;
    c.slow = std::time::Duration::from_millis(a.slow_ms);
    c.latency = std::time::Duration::from_millis(a.latency_ms);
    c.model = a.model;
    c.api_key = a.api_key_env.as_deref().map(ApiKey::from_env).transpose()?;
    c.text_only = a.text_only;
    c.context = Context1 {
        category: a.category,
        expert: a.expert,
        granularity: a.granularity,
    };
    c.context_variety = a.context_variety;
    Ok(simulate_mllm::SimulateSettings {
        config: c,
        listen: a.listen,
        direct: a.direct,
    })
}

/// `refine`'s flags -> settings.
fn refine_settings(a: cli::RefineArgs) -> refine::RefineSettings {
    use linesight_trainer::{near::candidates::CandidateSettings, vocab::VocabSettings};
    let cache = a.cache.unwrap_or_else(|| beside(&a.out, "cache"));
    refine::RefineSettings {
        weights: a
            .weights
            .unwrap_or_else(|| a.backbone.default_weights(&weights_dir())),
        sentence_model: a
            .sentence_model
            .unwrap_or_else(|| weights_dir().join("all-MiniLM-L6-v2")),
        knn: a
            .knn_backbone
            .iter()
            .map(|k| (*k, k.default_weights(&weights_dir())))
            .collect(),
        images: a.images,
        labels: a.labels,
        backbone: a.backbone,
        out: a.out,
        cache,
        model: a.model,
        prompt: a.prompt,
        vocab: VocabSettings {
            category: a.category,
            synonym_threshold: a.synonym_threshold,
            min_images: a.min_images,
            hint_threshold: a.hint_threshold,
        },
        candidates: CandidateSettings {
            k: a.k,
            self_weight: a.self_weight,
            power: a.power,
        },
        batch: a.batch,
        hint: a.vocabulary,
        confusion: (a.correct_confusion || a.verified.is_some()).then(|| {
            linesight_trainer::near::confusion::ConfusionSettings {
                anchor_weight: a.anchor_weight,
                ..Default::default()
            }
        }),
        verified: a.verified,
        device: a.device,
    }
}

/// `name` in the folder of `file`.
fn beside(file: &Path, name: &str) -> PathBuf {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(name)
}

/// `train`'s flags (over an optional TOML file) -> settings.
fn train_settings(a: cli::TrainArgs) -> Result<train::TrainCmdSettings> {
    use anyhow::Context;
    use linesight_trainer::near::{refined::Refined, train::TrainSettings};
    let mut t: TrainSettings = match &a.config {
        Some(p) => {
            let t: TrainSettings = toml::from_str(
                &fs_err::read_to_string(p).context("cannot read the training settings")?,
            )
            .with_context(|| format!("`{}` is not valid training settings TOML", p.display()))?;
            t.validate("")
                .with_context(|| format!("`{}` is not valid training settings", p.display()))?;
            t
        }
        None => TrainSettings::default(),
    };
    t.method = a.method;
    if let Some(v) = a.epochs {
        t.epochs = v;
    }
    if let Some(v) = a.rounds {
        t.rounds = v;
    }
    if let Some(v) = a.lr {
        t.lr = v;
    }
    if let Some(v) = a.gmm_threshold {
        t.gmm_threshold = v;
    }
    if let Some(v) = a.seed {
        t.seed = v;
    }
    if let Some(v) = a.trainable_blocks {
        t.trainable_blocks = v;
    }
    if let Some(v) = a.finetune_epochs {
        t.finetune_epochs = v;
    }
    if let Some(v) = a.finetune_lr {
        t.finetune_lr = v;
    }
    if let Some(v) = a.finetune_head_lr {
        t.finetune_head_lr = v;
    }
    if let Some(v) = a.finetune_views {
        t.finetune_views = v;
    }
    if let Some(v) = a.finetune_warmup {
        t.finetune_warmup = v;
    }
    if let Some(v) = a.finetune_cosine {
        t.finetune_cosine = v;
    }
    if let Some(v) = a.label_smoothing {
        t.finetune_label_smoothing = v;
    }
    if let Some(v) = a.finetune_weight_decay {
        t.finetune_weight_decay = v;
    }
    if let Some(v) = a.ema {
        t.finetune_ema = v;
    }
    if let Some(v) = a.holdout {
        t.finetune_holdout = v;
    }
    if let Some(v) = a.patience {
        t.finetune_patience = v;
    }
    if let Some(v) = a.image_weights {
        t.finetune_image_weights = v;
    }
    if let Some(v) = a.augment {
        use linesight_trainer::augment::AugmentSettings;
        let off = AugmentSettings {
            seed: t.augment.seed,
            ..AugmentSettings::identity()
        };
        // true keeps a settings file's augmentation unless it turned every piece off.
        t.augment = if v && t.augment == off {
            AugmentSettings {
                seed: t.augment.seed,
                ..Default::default()
            }
        } else if v {
            t.augment.clone()
        } else {
            off
        };
    }
    t.validate("").context("the training settings")?;
    if let Some(v) = a.anchor_weight {
        t.anchor_weight = v;
    }
    let weights = match a.weights {
        Some(w) => w,
        None => Refined::read(&a.refined)?
            .backbone
            .default_weights(&weights_dir()),
    };
    Ok(train::TrainCmdSettings {
        cache: a.cache.unwrap_or_else(|| beside(&a.refined, "cache")),
        refined: a.refined,
        weights,
        out: a.out,
        train: t,
        eval: a.eval_manifest.map(|m| (m, a.eval_split)),
        sentence_model: Some(
            a.sentence_model
                .unwrap_or_else(|| weights_dir().join("all-MiniLM-L6-v2")),
        ),
        batch: a.batch,
        device: a.device,
    })
}

/// The int8 settings of `--int8` / `quantize`; None without `--int8`.
fn int8_request(int8: bool, q: &cli::QuantArgs) -> Result<Option<quantize::Int8Request>> {
    if !int8 {
        return Ok(None);
    }
    let Some(calibration) = q.calibration.clone() else {
        anyhow::bail!("int8 quantisation needs --calibration DIR|CSV (training photos to set the activation scales)");
    };
    if !(0.0..=1.0).contains(&q.min_agreement) {
        anyhow::bail!(
            "--min-agreement must be between 0 and 1, got {}",
            q.min_agreement
        );
    }
    let mut opts = linesight_trainer::export::int8::Int8Options {
        min_top1_agreement: q.min_agreement,
        confidence: q.gate_confidence,
        allow_parity_drop: q.allow_parity_drop,
        ..Default::default()
    };
    opts.quant.conv = !q.no_conv;
    opts.quant.matmul = !q.no_matmul;
    opts.quant.per_channel = !q.per_tensor;
    opts.quant.activation_matmul = q.quantize_attention;
    opts.quant.keep_first_last = !q.quantize_first_last;
    opts.quant.quantize_linear_op = q.quantize_linear_op;
    opts.quant.unsigned_relu = !q.signed_activations;
    opts.fallback_layers = q.fallback_layers;
    opts.choose_by_speed = !q.keep_slow_layers;
    opts.speed_margin = q.speed_margin;
    opts.allow_slower = q.allow_slower;
    opts.sensitivity_images = q.sensitivity_images.max(1);
    Ok(Some(quantize::Int8Request {
        sets: quantize::ImageSets {
            calibration,
            split: q.calibration_split.clone(),
            parity: q.parity.clone(),
            parity_split: q
                .parity_split
                .clone()
                .unwrap_or_else(|| q.calibration_split.clone()),
            max_calibration: q.calibration_images.max(1),
            max_parity: q.parity_images.max(1),
        },
        opts,
    }))
}
