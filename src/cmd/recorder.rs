//! `callvault recorder`.

use std::process::ExitCode;

/// Options of `callvault recorder`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    super::not_built("recorder")
}
