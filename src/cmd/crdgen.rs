//! `callvault crdgen`: write one YAML file per CustomResourceDefinition.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write one YAML file per CRD into.
    #[arg(long, default_value_os_t = crate::default_crd_dir())]
    pub out: PathBuf,
    /// Where to write the resource reference generated from the same CRDs.
    #[arg(long, default_value = "docs/resources.md")]
    pub reference: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for file in callvault_crds::crd_files().context("rendering the CRDs")? {
        let path = args.out.join(&file.file_name);
        write_if_changed(&path, &file.yaml)?;
        println!("{}", path.display());
    }
    let reference = callvault_crds::reference_markdown().context("rendering the reference")?;
    write_if_changed(&args.reference, &reference)?;
    println!("{}", args.reference.display());
    Ok(ExitCode::SUCCESS)
}

/// Only rewrite changed files, so timestamps (and watchers) stay quiet.
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
