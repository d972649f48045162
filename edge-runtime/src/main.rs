//! `linesight-edge`: parses arguments, runs one command, maps the outcome to an exit code.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, RunArgs, TrustArgs};
use linesight_edge::commands::{
    bench, cameras, classify, export_uncertain, inspect, install, rollback, run, status,
};
use linesight_edge::config::{self, EdgeConfig, Overrides};
use linesight_edge::trust::{KeySpec, SignatureReport, TrustSources};
use linesight_edge::{notify, shutdown, slots};
use linesight_shared::closed_pipe::is_closed_pipe;
use linesight_shared::decode::{ImageLimits, DEFAULT_MAX_MEGAPIXELS};
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
    match run(cli.command, cli.max_image_megapixels) {
        Ok(code) => code,
        // The reader went away (`| head`): a quiet, clean end.
        Err(e) if is_closed_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "linesight-edge: error: {}",
                linesight_shared::message::error_chain(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

/// A line on stderr that cannot panic (`eprintln!` does when stderr is a closed pipe).
macro_rules! note {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stderr(), $($arg)*);
    };
}

/// The config (`--config`, else defaults) and where the trusted keys come from, the way
/// `install` finds them: --root > the config's model.root > $LINESIGHT_ROOT > default.
fn trust_sources(
    root: Option<PathBuf>,
    t: TrustArgs,
) -> anyhow::Result<(TrustSources, EdgeConfig)> {
    let cfg = match &t.config {
        Some(p) => EdgeConfig::read(p)?,
        None => EdgeConfig::default(),
    };
    let sources = TrustSources {
        root: slots::resolve_root(root.or(cfg.model.root.clone())),
        flags: t.trusted_keys,
        config: cfg
            .model
            .trusted_keys
            .iter()
            .map(|k| KeySpec::parse(k, Path::new(".")))
            .collect(),
    };
    Ok((sources, cfg))
}

/// Says on stderr what is wrong with a bundle's signature, if anything.
fn warn_signature(bundle: &Path, check: &SignatureReport) {
    if let Some(w) = check.warning(bundle) {
        note!("linesight-edge: {}", w.replace('\n', "\nlinesight-edge: "));
    }
}

fn run(command: Command, max_image_megapixels: Option<u32>) -> anyhow::Result<ExitCode> {
    // `run` resolves it with its config file (flag > edge.toml > default).
    if !matches!(command, Command::Run(_)) {
        ImageLimits::megapixels(max_image_megapixels.unwrap_or(DEFAULT_MAX_MEGAPIXELS))
            .map_err(anyhow::Error::msg)?
            .set_process();
    }
    match command {
        Command::Run(args) => run_command(args, max_image_megapixels),
        Command::Classify {
            bundle,
            json,
            top_k,
            logits,
            threads,
            root,
            trust,
            paths,
        } => {
            let settings = classify::ClassifySettings {
                bundle,
                paths,
                json,
                top_k,
                logits,
                threads,
                trust: trust_sources(root, trust)?.0,
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let report = classify::run(&settings, &mut out)?;
            out.flush()?;
            warn_signature(&settings.bundle, &report.signature_check);
            note!(
                "linesight-edge: classified {} images with `{}` (signature {}): {} failed, {} rejected{}",
                report.images,
                report.model_id,
                report.signature_check.status,
                report.failed,
                report.rejected,
                if report.skipped > 0 {
                    format!(
                        "; {} entries of the folders skipped ({})",
                        report.skipped, report.skipped_summary
                    )
                } else {
                    String::new()
                }
            );
            Ok(if report.failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Install {
            file,
            root,
            trust,
            allow_unsigned,
            json,
        } => {
            let (sources, cfg) = trust_sources(root, trust)?;
            let mut settings = install::InstallSettings::new(file, sources.root);
            settings.trusted_keys = sources.flags;
            settings.config_trusted_keys = sources.config;
            settings.allow_unsigned = allow_unsigned || cfg.model.allow_unsigned;
            settings.kill_at = std::env::var(install::FAULT_KILL_ENV)
                .ok()
                .filter(|v| !v.is_empty());
            if let Some(step) = &settings.kill_at {
                tracing::warn!(step = %step, "{} is set: this install kills itself at that step (test hook)", install::FAULT_KILL_ENV);
            }
            let r = install::run(&settings)?;
            if let Some(what) = &r.repaired {
                note!("linesight-edge: repaired: {what}");
            }
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                writeln!(
                std::io::stdout(),
                    "installed {} {} into slot {} under `{}` (signature: {}, self-test: {} vectors, max diff {:.2e}); previous: {}",
                    r.model_id,
                    r.model_version,
                    r.slot,
                    r.root,
                    r.signature,
                    r.self_test_vectors,
                    r.self_test_max_abs_diff,
                    r.previous.as_deref().unwrap_or("none")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportUncertain {
            out,
            store,
            config: config_path,
            root,
            clear,
            json,
        } => {
            let file = match &config_path {
                Some(p) => EdgeConfig::read(p)?,
                None => EdgeConfig::default(),
            };
            let root = slots::resolve_root(root.or(file.model.root));
            let settings = export_uncertain::ExportSettings {
                store: config::store_dir(store, file.store.dir, &root),
                out,
                clear,
            };
            let r = export_uncertain::run(&settings)?;
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                writeln!(
                    std::io::stdout(),
                    "exported {} uncertain frames ({} bytes written, {} already there{}) from `{}` to `{}`{}",
                    r.entries,
                    r.bytes,
                    r.already_there,
                    if r.renamed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", {} under new names because an earlier export holds theirs: {}",
                            r.renamed.len(),
                            r.renamed
                                .iter()
                                .map(|(a, b)| format!("{a} -> {b}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    r.store,
                    r.out,
                    if clear {
                        format!("; {} removed from the store", r.cleared)
                    } else {
                        String::new()
                    }
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            bundle,
            root,
            trust,
            threads,
            iterations,
            warmup,
            profile,
            nodes,
            pipeline: false,
            size,
            json,
            ..
        } => {
            let trust = trust_sources(root, trust)?.0;
            let r = bench::run(&bench::BenchSettings {
                bundle,
                root: trust.root.clone(),
                threads,
                iterations: iterations.max(1),
                warmup,
                size,
                profile,
                trust,
            })?;
            warn_signature(Path::new(&r.bundle), &r.signature_check);
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                write!(std::io::stdout(), "{}", r.render())?;
                if let (true, Some(p)) = (nodes, &r.profile) {
                    write!(std::io::stdout(), "{}", p.render_nodes())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            bundle,
            extract_onnx,
            root,
            trust,
            json,
        } => {
            let r = inspect::run(&inspect::InspectSettings {
                bundle,
                extract_onnx,
                trust: trust_sources(root, trust)?.0,
            })?;
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                write!(std::io::stdout(), "{}", r.render())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            bundle,
            root,
            trust,
            threads,
            frames,
            rounds,
            size,
            json,
            ..
        } => {
            let trust = trust_sources(root, trust)?.0;
            let r = bench::pipeline::run(&bench::pipeline::PipelineSettings {
                bundle,
                root: trust.root.clone(),
                threads,
                frames: frames.max(1),
                rounds: rounds.max(1),
                size,
                trust,
            })?;
            warn_signature(Path::new(&r.bundle), &r.signature_check);
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                writeln!(std::io::stdout(), "{}", r.build.describe())?;
                writeln!(
                std::io::stdout(),
                    "{} ({:?}, frames {}x{}): bare infer {:.2} frames/s, pipeline {:.2} frames/s (medians of {} rounds x {} frames), overhead {:.1}% (paired rounds {:.1}%; from stages: {:.2} ms of each frame outside inference = {:.1}%); stages: preprocess {:.2} ms, infer {:.2} ms, decide+sink {:.3} ms",
                    r.model_id,
                    r.input_shape,
                    r.frame_size[0],
                    r.frame_size[1],
                    r.bare_fps_median,
                    r.pipeline_fps_median,
                    r.rounds,
                    r.frames_per_round,
                    r.overhead_pct,
                    r.overhead_paired_median_pct,
                    r.pipeline_other_ms,
                    r.overhead_from_stages_pct,
                    r.preprocess_mean_ms,
                    r.infer_mean_ms,
                    r.decide_mean_ms
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback {
            root,
            slot,
            trust,
            allow_unsigned,
            json,
        } => {
            let (sources, cfg) = trust_sources(root, trust)?;
            let mut settings = rollback::RollbackSettings::new(sources.root);
            settings.slot = slot;
            settings.trusted_keys = sources.flags;
            settings.config_trusted_keys = sources.config;
            settings.allow_unsigned = allow_unsigned || cfg.model.allow_unsigned;
            let r = rollback::run(&settings)?;
            if let Some(what) = &r.repaired {
                note!("linesight-edge: repaired: {what}");
            }
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                writeln!(
                    std::io::stdout(),
                    "rolled back under `{}`: current is slot {} ({} {})",
                    r.root,
                    r.current,
                    r.model_id,
                    r.model_version
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cameras { config, json } => {
            let file = match &config {
                Some(p) => EdgeConfig::read(p)?,
                None => EdgeConfig::default(),
            };
            file.source.camera.validate().map_err(anyhow::Error::msg)?;
            let r = cameras::run(&cameras::CamerasSettings {
                options: file.source.camera,
                ..Default::default()
            });
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                write!(std::io::stdout(), "{}", r.render())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { root, trust, json } => {
            let trust = trust_sources(root, trust)?.0;
            let root = trust.root.clone();
            let r = status::run(&status::StatusSettings { trust }).map_err(|e| {
                anyhow::anyhow!("cannot read the models root `{}`: {e}", root.display())
            })?;
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
            } else {
                write!(std::io::stdout(), "{}", r.render())?;
            }
            if r.healthy() {
                Ok(ExitCode::SUCCESS)
            } else {
                note!(
                    "linesight-edge: {} problem(s) under `{}`{}",
                    r.problems.len(),
                    r.root,
                    if json {
                        format!(": {}", r.problems.join("; "))
                    } else {
                        " (listed above)".to_string()
                    }
                );
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn run_command(a: RunArgs, max_image_megapixels: Option<u32>) -> anyhow::Result<ExitCode> {
    let file = match &a.config {
        Some(p) => EdgeConfig::read(p)?,
        None => EdgeConfig::default(),
    };
    let settings = config::resolve(
        file,
        Overrides {
            config: a.config.clone(),
            bundle: a.bundle,
            root: a.root,
            source: a.source,
            fps: a.fps,
            looping: a.looping,
            every_frame: a.every_frame,
            max_frames: a.max_frames,
            sink: a.sink,
            http: a.http,
            store: a.store,
            no_store: a.no_store,
            smoothing_frames: a.smoothing,
            stall_timeout_ms: a.stall_timeout_ms,
            top_k: a.top_k,
            threads: a.threads,
            max_image_megapixels,
        },
    )
    .with_context(|| match &a.config {
        // The setting may come from the file or from a flag (the message names which).
        Some(p) => format!(
            "invalid settings (config `{}` and the command line)",
            p.display()
        ),
        None => "invalid settings on the command line".to_string(),
    })?;
    if a.show_settings {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&settings)?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    settings.image_limits.set_process();
    let stop = shutdown::install().context("cannot install the SIGTERM handler")?;
    let mut notifier = notify::Notifier::from_env();
    let r = run::run(&settings, stop, &mut notifier)?;
    if r.lost_output() {
        note!(
            "linesight-edge: error: output was lost: {} decisions NOT written, {} sink errors, {} station regions that did not fit their frame (see the log above; /metrics: linesight_decisions_lost_total)",
            r.decisions_lost,
            r.sink_errors,
            r.roi_errors
        );
    }
    if a.json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(&r)?)?;
    } else {
        note!(
            "linesight-edge: {} frames in {:.1} s ({}): {} decisions written, {} NOT written, {} rejected, {} dropped, {} bad frames, {} source errors, {} stalls, {} reconnects, {} saved as uncertain",
            r.frames,
            r.seconds,
            r.end.as_str(),
            r.decisions,
            r.decisions_lost,
            r.rejected,
            r.dropped,
            r.bad_frames,
            r.source_errors,
            r.stalls,
            r.reconnects,
            r.stored
        );
    }
    Ok(if r.lost_output() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
