//! The resource directory: loaded with the API server's rules, watched, and reloaded only when
//! the new files are valid, so a typo never stops what is running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use callvault_crds::{ResourceSet, SetError};
use callvault_store::db::Db;

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

/// The files of the set last accepted, kept under `<data>` so that a restart compares the
/// files with what ran before, as an API server compares an update with the stored object.
const RUNNING: &str = "resources-running.json";

/// Remembers `files` (a [`snapshot`]) as the running set.
pub fn remember(data: &Path, files: &[(PathBuf, Vec<u8>)]) -> anyhow::Result<()> {
    let doc: Vec<serde_json::Value> = files
        .iter()
        .map(|(path, text)| {
            serde_json::json!({
                "file": path.display().to_string(),
                "text": String::from_utf8_lossy(text),
            })
        })
        .collect();
    let tmp = data.join(format!("{RUNNING}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&doc)?)?;
    std::fs::rename(&tmp, data.join(RUNNING))?;
    Ok(())
}

/// The set that ran last, if one was remembered and still loads.
pub fn running(data: &Path) -> Option<ResourceSet> {
    let doc: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(data.join(RUNNING)).ok()?).ok()?;
    let files: Vec<(PathBuf, String)> = doc
        .iter()
        .filter_map(|f| {
            Some((
                PathBuf::from(f.get("file")?.as_str()?),
                f.get("text")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    ResourceSet::from_files(files.iter().map(|(p, t)| (p.as_path(), t.as_str()))).ok()
}

/// Whether `loaded` may replace `running`: every change passes the CRDs' transition rules, and
/// no resource is removed while recordings or archive copies still depend on it (in a cluster
/// the same rules are the API server's). `Err` says why not.
pub async fn admit(
    db: &Db,
    tenant: &str,
    loaded: &ResourceSet,
    running: &ResourceSet,
) -> Result<(), String> {
    let removed = loaded.changes_from(running).map_err(|e| e.to_string())?;
    let mut refused = Vec::new();
    for (kind, name) in removed {
        let hint = if kind == "RecordingProfile" {
            " (set spec.disabled: true to stop recording instead)"
        } else {
            ""
        };
        match db.holdings(tenant, kind, &name).await {
            Ok((0, 0)) => {}
            Ok((recordings, copies)) => refused.push(format!(
                "{kind} {name:?} cannot be removed: it still holds {}{hint}",
                holding_text(recordings, copies)
            )),
            Err(e) => refused.push(format!(
                "{kind} {name:?} cannot be removed: what it holds cannot be read ({e})"
            )),
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(SetError::Refused(refused).to_string())
    }
}

/// "1 recording", "3 recordings and 2 archive copies", ...
fn holding_text(recordings: i64, copies: i64) -> String {
    let count = |n: i64, one: &str, many: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    };
    let mut parts = Vec::new();
    if recordings > 0 {
        parts.push(count(recordings, "recording", "recordings"));
    }
    if copies > 0 {
        parts.push(count(copies, "archive copy", "archive copies"));
    }
    parts.join(" and ")
}
