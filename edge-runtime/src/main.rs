//! `linesight-edge`: parses arguments, runs one command, maps the outcome to an exit code.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, RunArgs};
use linesight_edge::commands::{
    bench, cameras, classify, export_uncertain, inspect, install, rollback, run, status,
};
use linesight_edge::config::{self, EdgeConfig, Overrides};
use linesight_edge::{notify, shutdown, slots};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("linesight-edge: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Classify {
            bundle,
            json,
            top_k,
            threads,
            paths,
        } => {
            let settings = classify::ClassifySettings {
                bundle,
                paths,
                json,
                top_k,
                threads,
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let report = classify::run(&settings, &mut out)?;
            eprintln!(
                "linesight-edge: classified {} images with `{}`: {} failed, {} rejected",
                report.images, report.model_id, report.failed, report.rejected
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
            trusted_keys,
            allow_unsigned,
            config: config_path,
            json,
        } => {
            let cfg = match &config_path {
                Some(p) => EdgeConfig::read(p)?,
                None => EdgeConfig::default(),
            };
            let root = slots::resolve_root(root.or(cfg.model.root));
            let mut settings = install::InstallSettings::new(file, root);
            settings.trusted_keys = trusted_keys;
            settings.config_trusted_keys = cfg
                .model
                .trusted_keys
                .iter()
                .map(|k| linesight_edge::trust::KeySpec::parse(k, std::path::Path::new(".")))
                .collect();
            settings.allow_unsigned = allow_unsigned || cfg.model.allow_unsigned;
            settings.kill_at = std::env::var(install::FAULT_KILL_ENV)
                .ok()
                .filter(|v| !v.is_empty());
            if let Some(step) = &settings.kill_at {
                tracing::warn!(step = %step, "{} is set: this install kills itself at that step (test hook)", install::FAULT_KILL_ENV);
            }
            let r = install::run(&settings)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "installed {} {} into slot {} under `{}` (signature: {}, self-test: {} vectors, max diff {:.2e}); previous: {}",
                    r.model_id,
                    r.model_version,
                    r.slot,
                    r.root,
                    r.signature,
                    r.self_test_vectors,
                    r.self_test_max_abs_diff,
                    r.previous.as_deref().unwrap_or("none")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_command(args),
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
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "exported {} uncertain frames ({} bytes) from `{}` to `{}`{}",
                    r.entries,
                    r.bytes,
                    r.store,
                    r.out,
                    if clear {
                        format!("; {} removed from the store", r.cleared)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            bundle,
            root,
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
            let r = bench::run(&bench::BenchSettings {
                bundle,
                root: slots::resolve_root(root),
                threads,
                iterations: iterations.max(1),
                warmup,
                size,
                profile,
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.render());
                if let (true, Some(p)) = (nodes, &r.profile) {
                    print!("{}", p.render_nodes());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            bundle,
            extract_onnx,
            json,
        } => {
            let r = inspect::run(&inspect::InspectSettings {
                bundle,
                extract_onnx,
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            bundle,
            root,
            threads,
            frames,
            rounds,
            size,
            json,
            ..
        } => {
            let r = bench::pipeline::run(&bench::pipeline::PipelineSettings {
                bundle,
                root: slots::resolve_root(root),
                threads,
                frames: frames.max(1),
                rounds: rounds.max(1),
                size,
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", r.build.describe());
                println!(
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
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { root, json } => {
            let r = rollback::run(&rollback::RollbackSettings {
                root: slots::resolve_root(root),
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "rolled back under `{}`: current is slot {} ({} {})",
                    r.root, r.current, r.model_id, r.model_version
                );
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
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { root, json } => {
            let root = slots::resolve_root(root);
            let r = status::run(&status::StatusSettings { root: root.clone() }).map_err(|e| {
                anyhow::anyhow!("cannot read the models root `{}`: {e}", root.display())
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.render());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_command(a: RunArgs) -> anyhow::Result<ExitCode> {
    let file = match &a.config {
        Some(p) => EdgeConfig::read(p)?,
        None => EdgeConfig::default(),
    };
    let settings = config::resolve(
        file,
        Overrides {
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
        },
    )?;
    if a.show_settings {
        println!("{}", serde_json::to_string_pretty(&settings)?);
        return Ok(ExitCode::SUCCESS);
    }
    let stop = shutdown::install().context("cannot install the SIGTERM handler")?;
    let mut notifier = notify::Notifier::from_env();
    let r = run::run(&settings, stop, &mut notifier)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        eprintln!(
            "linesight-edge: {} frames in {:.1} s ({}): {} decisions, {} rejected, {} dropped, {} bad frames, {} source errors, {} stalls, {} reconnects, {} saved as uncertain",
            r.frames,
            r.seconds,
            r.end.as_str(),
            r.decisions,
            r.rejected,
            r.dropped,
            r.bad_frames,
            r.source_errors,
            r.stalls,
            r.reconnects,
            r.stored
        );
    }
    Ok(ExitCode::SUCCESS)
}
