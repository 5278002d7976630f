//! `callvault crdgen` (stub: the crds work fills this in).
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write one YAML file per CRD into.
    #[arg(long, default_value_os_t = crate::default_crd_dir())]
    pub out: PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("crdgen: not built yet")
}
