//! `callvault standalone`.

use std::process::ExitCode;

/// Options of `callvault standalone`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    super::not_built("standalone")
}
