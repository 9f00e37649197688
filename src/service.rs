//! The service around the pipeline: HTTP server and metrics recorder started
//! with it, stopped within the shutdown timeout, on Ctrl-C or SIGTERM. Used by
//! `cxpulse run` and `cxpulse demo` alike.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;
use crate::pipeline::{self, Running, Shared};
use crate::{http, telemetry};

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Starts the pipeline for `config` with its HTTP server; returns once it is consuming.
/// Setting `shared.stop` meanwhile abandons the start-up (with an error).
pub async fn start(config: &Config, shared: Arc<Shared>) -> anyhow::Result<Running> {
    let metrics = telemetry::install_recorder()?;
    http::serve(config, metrics, shared.clone()).await?;
    let pipeline_config = config.clone();
    let runtime = tokio::runtime::Handle::current();
    let running =
        tokio::task::spawn_blocking(move || pipeline::start(pipeline_config, runtime, shared))
            .await
            .context("pipeline start-up")??;
    Ok(running)
}

/// Stops a pipeline and waits for it at most `timeout`.
pub async fn stop(running: Running, timeout: Duration) -> anyhow::Result<()> {
    running.stop();
    let joined = tokio::task::spawn_blocking(move || running.join());
    match tokio::time::timeout(timeout, joined).await {
        Ok(result) => result.context("pipeline thread")?,
        Err(_) => {
            anyhow::bail!("shutdown took longer than processing.shutdown_timeout ({timeout:?})")
        }
    }
}
