//! `callvault recorder`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use callvault_config::RecorderConfig;
use callvault_recorder::service::{self, ServiceOptions};

/// Options of `callvault recorder`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recorder configuration the operator renders (or standalone writes).
    #[arg(long, default_value = "/etc/callvault/recorder.yaml")]
    pub config: PathBuf,
    /// Address of the operations endpoint (/healthz, /readyz, /metrics, /status).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = RecorderConfig::load(&args.config)
        .with_context(|| format!("recorder configuration {}", args.config.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(service::run(
        config,
        ServiceOptions {
            http: args.http,
            ..ServiceOptions::default()
        },
        terminated(),
    ))?;
    tracing::info!(
        cut_calls = outcome.cut_calls,
        pending_commits = outcome.pending_commits,
        "recorder stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
