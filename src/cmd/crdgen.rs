//! `callvault crdgen`: write one YAML file per CustomResourceDefinition.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write one YAML file per CRD into.
    #[arg(long, default_value_os_t = crate::default_crd_dir())]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for file in callvault_crds::crd_files().context("rendering the CRDs")? {
        let path = args.out.join(&file.file_name);
        // Only rewrite changed files, so timestamps (and watchers) stay quiet.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(file.yaml.as_str()) {
            std::fs::write(&path, &file.yaml)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
