//! `callvault keys` (stub: the recording-format work fills this in).
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair.
    Generate,
    /// Export a private key, protected by a passphrase.
    Export,
    /// Import a private key.
    Import,
}

pub fn run(_cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("keys: not built yet")
}
