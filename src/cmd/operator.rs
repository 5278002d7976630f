//! `callvault operator`: reconciles the five CallVault resources in the namespaces it watches.

use std::process::ExitCode;

use anyhow::Context;

/// Options of `callvault operator`. Everything else comes from the environment the Helm chart
/// sets (`CALLVAULT_IMAGE`, `CALLVAULT_WATCH_NAMESPACES`, `CALLVAULT_METRICS_ADDR`,
/// `CALLVAULT_DATABASE_SECRET_NAME`/`_KEY`, `CALLVAULT_POD_NAMESPACE`); the API server and
/// credentials from the in-cluster service account or `KUBECONFIG`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let config = callvault_operator::Config::from_env(|name| std::env::var(name).ok())
        .context("operator settings")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let client = callvault_operator::connect()
            .await
            .context("connecting to the Kubernetes API server")?;
        if let Ok(ns) = std::env::var("CALLVAULT_POD_NAMESPACE") {
            tracing::info!(namespace = %ns, "operator pod namespace");
        }
        callvault_operator::run(client, config, super::terminated())
            .await
            .context("operator")
    })?;
    tracing::info!("operator stopped");
    Ok(ExitCode::SUCCESS)
}
