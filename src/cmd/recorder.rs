//! `callvault recorder`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use callvault_config::RecorderConfig;
use callvault_recorder::service::{self, ConfigUpdate, ServiceOptions};
use tokio::sync::watch;

/// How often the configuration file is read again. A ConfigMap volume is updated in place
/// (the kubelet swaps a symlink, within about a minute of the change), so polling sees every
/// change without a restart.
const RELOAD: Duration = Duration::from_secs(2);

/// Options of `callvault recorder`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recorder configuration the operator renders (or standalone writes). Changes to the
    /// file are applied to the running recorder.
    #[arg(long, default_value = "/etc/callvault/recorder.yaml")]
    pub config: PathBuf,
    /// Address of the operations endpoint (/healthz, /readyz, /metrics, /status).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(&args.config)
        .with_context(|| format!("recorder configuration {}", args.config.display()))?;
    let config = load(&args.config, &text)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(async {
        let stop = super::terminated();
        let (updates, configs) = watch::channel(Ok(config));
        let reload = tokio::spawn(reload(args.config.clone(), text, updates));
        let outcome = service::run_with_updates(
            configs,
            ServiceOptions {
                http: args.http,
                // In a pod, its name: each replica's alarms are its own.
                instance: std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()),
                ..ServiceOptions::default()
            },
            stop,
        )
        .await;
        reload.abort();
        outcome
    })?;
    tracing::info!(
        cut_calls = outcome.cut_calls,
        pending_commits = outcome.pending_commits,
        "recorder stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path, text: &[u8]) -> anyhow::Result<callvault_config::ValidRecorderConfig> {
    let text = std::str::from_utf8(text)
        .with_context(|| format!("recorder configuration {}: not UTF-8", path.display()))?;
    RecorderConfig::parse(text)
        .and_then(|c| Ok(c.validate()?))
        .with_context(|| format!("recorder configuration {}", path.display()))
}

/// Reads the configuration file again whenever it changes and hands the result to the
/// running recorder: a valid one is applied in place, an invalid one is refused there (kept
/// visible in `/status` and the metrics) while the last good one keeps running.
async fn reload(path: PathBuf, mut last: Vec<u8>, updates: watch::Sender<ConfigUpdate>) {
    let mut tick = tokio::time::interval(RELOAD);
    loop {
        tick.tick().await;
        let Ok(text) = tokio::fs::read(&path).await else {
            // Mid-swap or briefly unmounted: the next tick reads it again.
            continue;
        };
        if text == last {
            continue;
        }
        let update = load(&path, &text).map_err(|e| format!("{e:#}"));
        last = text;
        if updates.send(update).is_err() {
            return; // the recorder has stopped
        }
    }
}
