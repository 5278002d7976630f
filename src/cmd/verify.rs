//! `callvault verify` (stub: the recording-format work fills this in).
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encrypted recording.
    pub file: PathBuf,
    /// The private key (PKCS#8 PEM).
    #[arg(long)]
    pub key: PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("verify: not built yet")
}
