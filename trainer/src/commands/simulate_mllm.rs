//! `linesight-train simulate-mllm`: serve the MLLM **simulator** (see
//! [`crate::mllm::simulator`]) until Ctrl-C or SIGTERM, then report what it served.

use crate::mllm::simulator::{DirectReport, Simulator, SimulatorConfig, Stats};
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::Arc;

/// Resolved settings: the simulator's configuration and where to listen.
#[derive(Debug, Clone)]
pub struct SimulateSettings {
    pub config: SimulatorConfig,
    /// `HOST:PORT`; port 0 picks a free port (printed at start).
    pub listen: String,
    /// Score this split directly instead of serving.
    pub direct: Option<String>,
}

/// What the simulator served.
#[derive(Debug, Clone, Serialize)]
pub struct SimulateReport {
    /// Always `true`: this was a simulator, not a model.
    pub simulator: bool,
    pub base_url: String,
    pub truth: std::path::PathBuf,
    pub images: usize,
    pub classes: usize,
    pub accuracy: f64,
    pub seed: u64,
    pub fault_rate: f64,
    pub stats: Stats,
}

/// Serves until interrupted. Fails when the truth cannot be loaded or the address bound.
pub fn run(s: &SimulateSettings) -> Result<SimulateReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let sim = Arc::new(Simulator::load(s.config.clone())?);
        let (images, classes) = sim.size();
        let listener = tokio::net::TcpListener::bind(&s.listen)
            .await
            .with_context(|| format!("cannot listen on `{}`", s.listen))?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        eprintln!(
            "simulate-mllm: SIMULATOR of a multimodal LLM (not a model) listening on {base_url} \
             ({images} images, {classes} classes, accuracy {}, seed {}, fault rate {}); Ctrl-C stops it",
            s.config.accuracy, s.config.seed, s.config.fault_rate
        );
        axum::serve(listener, Arc::clone(&sim).router()).with_graceful_shutdown(shutdown_signal()).await?;
        Ok(SimulateReport {
            simulator: true,
            base_url,
            truth: s.config.truth.clone(),
            images,
            classes,
            accuracy: s.config.accuracy,
            seed: s.config.seed,
            fault_rate: s.config.fault_rate,
            stats: sim.stats(),
        })
    })
}

/// `--direct SPLIT`: what asking the simulator about every image of `split` would score.
pub fn direct(s: &SimulateSettings, split: &str) -> Result<DirectReport> {
    Simulator::load(s.config.clone())?.direct(split)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
