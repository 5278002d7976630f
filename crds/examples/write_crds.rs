//! Writes the CRD files like `callvault crdgen`, without building the whole binary:
//! `cargo run -p callvault-crds --example write_crds -- charts/callvault/crds`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "charts/callvault/crds".to_owned());
    std::fs::create_dir_all(&dir)?;
    for file in callvault_crds::crd_files()? {
        let path = std::path::Path::new(&dir).join(&file.file_name);
        std::fs::write(&path, &file.yaml)?;
        println!("{}", path.display());
    }
    Ok(())
}
