//! `linesight-edge`: parses arguments, runs one command, maps the outcome to an exit code.

mod cli;

use clap::Parser;
use cli::{Cli, Command};
use linesight_edge::commands::{classify, install, rollback, status};
use linesight_edge::slots;
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
            paths,
        } => {
            let settings = classify::ClassifySettings {
                bundle,
                paths,
                json,
                top_k,
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
            json,
        } => {
            let mut settings = install::InstallSettings::new(file, slots::resolve_root(root));
            settings.trusted_keys = trusted_keys;
            settings.allow_unsigned = allow_unsigned;
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
