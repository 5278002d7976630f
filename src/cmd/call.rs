//! `callvault call`.

use std::process::ExitCode;

/// Options of `callvault call`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    super::not_built("call")
}
