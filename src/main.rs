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
    Operator,
    /// Run a SIPREC recording server.
    Recorder,
    /// Run the portal: HTTP API and web UI.
    Portal,
    /// Run one of the scheduled jobs.
    Job {
        #[command(subcommand)]
        job: JobCommand,
    },
    /// Run recorder, portal and jobs in one process, on SQLite and local files.
    Standalone,
    /// Place a test SIPREC call (or many, as a load generator).
    Call,
    /// Write the CustomResourceDefinitions as YAML.
    Crdgen(cmd::crdgen::Args),
    /// Generate, export and import recording encryption keys.
    Keys {
        #[command(subcommand)]
        keys: cmd::keys::KeysCommand,
    },
    /// Decrypt a recording offline, check its integrity and print its digest.
    Verify(cmd::verify::Args),
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Remove expired recordings and carry out deferred deletions.
    Retention,
    /// Copy recordings to a Connector's destination.
    Archive,
    /// Transcribe recordings for a SpeechJob.
    Transcribe,
}

/// Subcommands whose workload is not built yet say so and fail, rather than pretend.
fn not_built(what: &str) -> anyhow::Result<ExitCode> {
    eprintln!("callvault {what}: not built yet in this version");
    Ok(ExitCode::from(2))
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
        Command::Operator => not_built("operator"),
        Command::Recorder => not_built("recorder"),
        Command::Portal => not_built("portal"),
        Command::Job { job } => not_built(match job {
            JobCommand::Retention => "job retention",
            JobCommand::Archive => "job archive",
            JobCommand::Transcribe => "job transcribe",
        }),
        Command::Standalone => not_built("standalone"),
        Command::Call => not_built("call"),
        Command::Crdgen(args) => cmd::crdgen::run(args),
        Command::Keys { keys } => cmd::keys::run(keys),
        Command::Verify(args) => cmd::verify::run(args),
    }
}

/// Default output directory of `crdgen`, relative to the repository root.
pub(crate) fn default_crd_dir() -> PathBuf {
    PathBuf::from("charts/callvault/crds")
}
