//! The resource directory: loaded with the API server's rules, watched, and reloaded only when
//! the new files are valid, so a typo never stops what is running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use callvault_crds::ResourceSet;

/// How often the directories are checked for changes. Polling a handful of small files costs
/// nothing and works on every filesystem (bind mounts, network shares) where events may not.
pub const POLL: Duration = Duration::from_secs(1);

/// Loads the user's resources and the generated ones as one set.
pub fn load(resources: &Path, generated: &Path) -> anyhow::Result<ResourceSet> {
    ResourceSet::load_dirs(&[resources, generated])
        .map_err(|e| anyhow::anyhow!("invalid resources in {}: {e}", resources.display()))
}

/// Every YAML file's name and content in the directories: differs when a file is added,
/// removed or edited. The files are small, so the snapshot itself is compared, not a digest.
pub fn snapshot(dirs: &[&Path]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let yaml = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml");
            if yaml && let Ok(content) = std::fs::read(&path) {
                files.push((path, content));
            }
        }
    }
    files.sort();
    files
}
