//! `callvault`: one binary, one image, a subcommand per workload.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Debug, Parser)]
#[command(
    name = "callvault",
    version,
    about = "Compliance call recording, run the Kubernetes way"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator: reconciles the five CallVault resources.
    Operator(cmd::operator::Args),
    /// Run a SIPREC recording server.
    Recorder(cmd::recorder::Args),
    /// Run the portal: HTTP API and web UI.
    Portal(cmd::portal::Args),
    /// Run one of the scheduled jobs.
    Job {
        #[command(subcommand)]
        job: cmd::job::JobCommand,
    },
    /// Run recorder, portal and jobs in one process, on SQLite and local files.
    Standalone(cmd::standalone::Args),
    /// Place a test SIPREC call (or many, as a load generator).
    Call(cmd::call::Args),
    /// Write the CustomResourceDefinitions as YAML.
    Crdgen(cmd::crdgen::Args),
    /// Generate, export and import recording encryption keys.
    Keys {
        #[command(subcommand)]
        keys: cmd::keys::KeysCommand,
    },
    /// Decrypt a recording offline, check its integrity and print its digest.
    Verify(cmd::verify::Args),
    /// Write an encrypted backup of the catalogue and configuration (no media).
    Backup(cmd::backup::BackupArgs),
    /// Restore an encrypted backup into a new, empty system.
    Restore(cmd::backup::RestoreArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Operator(args) => cmd::operator::run(args),
        Command::Recorder(args) => cmd::recorder::run(args),
        Command::Portal(args) => cmd::portal::run(args),
        Command::Job { job } => cmd::job::run(job),
        Command::Standalone(args) => cmd::standalone::run(args),
        Command::Call(args) => cmd::call::run(args),
        Command::Crdgen(args) => cmd::crdgen::run(args),
        Command::Keys { keys } => cmd::keys::run(keys),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Backup(args) => cmd::backup::backup(args),
        Command::Restore(args) => cmd::backup::restore(args),
    }
}

/// Default output directory of `crdgen`, relative to the repository root.
pub(crate) fn default_crd_dir() -> PathBuf {
    PathBuf::from("charts/callvault/crds")
}
