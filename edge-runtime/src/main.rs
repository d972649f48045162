//! `linesight-edge`: parses arguments, runs one command, maps the outcome to an exit code.

mod cli;

use clap::Parser;
use cli::{Cli, Command};
use linesight_edge::commands::classify;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
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
        Command::Classify { bundle, json, top_k, paths } => {
            let settings = classify::ClassifySettings { bundle, paths, json, top_k };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let report = classify::run(&settings, &mut out)?;
            eprintln!(
                "linesight-edge: classified {} images with `{}`: {} failed, {} rejected",
                report.images, report.model_id, report.failed, report.rejected
            );
            Ok(if report.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}
