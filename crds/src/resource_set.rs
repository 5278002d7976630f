//! A directory of resource YAML loaded as one consistent set, the way standalone runs it.
//!
//! Each file is validated like the API server would ([`validate_document`]); then what the API
//! server cannot check is checked across the set: the same resource declared twice, and
//! references to a StorageTarget or RecordingProfile that is not declared. Every problem names
//! its file, the resource and the field, and all of them are reported at once, so a user fixes
//! a directory in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::validate::{Resource, parse_yaml, validate_document, validate_update};
use crate::{AccessProfile, Connector, RecordingProfile, SpeechJob, StorageTarget};

/// One problem in a resource directory.
#[derive(Debug)]
pub struct SetProblem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// What is wrong, naming the resource and field.
    pub message: String,
}

impl fmt::Display for SetProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// Why a resource directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The directory (or a file in it) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory holds no `.yaml`/`.yml` file with a CallVault resource.
    #[error("{0}: no CallVault resources found (expected .yaml or .yml files)")]
    Empty(PathBuf),
    /// Resources were found but some are invalid; every problem is listed.
    #[error("{} problem(s):\n  {}", .0.len(), join(.0))]
    Invalid(Vec<SetProblem>),
    /// Valid on their own, but changes from the running set that its rules forbid.
    #[error("{} change(s) refused, the running resources are kept:\n  {}", .0.len(), .0.join("\n  "))]
    Refused(Vec<String>),
}

/// A resource by kind and name.
pub type ResourceKey = (&'static str, String);

fn join(problems: &[SetProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// The five kinds of resource of one namespace, each by name, defaults applied.
#[derive(Debug, Clone, Default)]
pub struct ResourceSet {
    /// RecordingProfiles by name.
    pub recording_profiles: BTreeMap<String, RecordingProfile>,
    /// AccessProfiles by name.
    pub access_profiles: BTreeMap<String, AccessProfile>,
    /// StorageTargets by name.
    pub storage_targets: BTreeMap<String, StorageTarget>,
    /// Connectors by name.
    pub connectors: BTreeMap<String, Connector>,
    /// SpeechJobs by name.
    pub speech_jobs: BTreeMap<String, SpeechJob>,
}

impl ResourceSet {
    /// Load every `.yaml`/`.yml` file of `dir` (not recursive; documents of other API groups,
    /// such as Secrets, are skipped) and check the set as a whole.
    pub fn load_dir(dir: &Path) -> Result<Self, SetError> {
        Self::load_dirs(&[dir])
    }

    /// [`Self::load_dir`] over several directories read as one set (standalone adds the
    /// resources it generates itself to the user's).
    pub fn load_dirs(dirs: &[&Path]) -> Result<Self, SetError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SetError::Io { path, source }
        };
        let mut files = Vec::new();
        for dir in dirs {
            let mut in_dir = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(io(dir))? {
                let path = entry.map_err(io(dir))?.path();
                let is_yaml = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e == "yaml" || e == "yml");
                if is_yaml && path.is_file() {
                    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
                    in_dir.push((path, text));
                }
            }
            // A stable order makes "declared twice" point at the same file every time.
            in_dir.sort();
            files.extend(in_dir);
        }
        let set = Self::from_files(files.iter().map(|(p, t)| (p.as_path(), t.as_str())))?;
        if set.is_empty() {
            let first = dirs.first().map(|d| d.to_path_buf()).unwrap_or_default();
            return Err(SetError::Empty(first));
        }
        Ok(set)
    }

    /// Build a set from `(file name, text)` pairs; pure, so it is tested without a filesystem.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Self, SetError> {
        let mut set = Self::default();
        let mut problems = Vec::new();
        let mut declared_in: BTreeMap<(&'static str, String), PathBuf> = BTreeMap::new();
        for (file, text) in files {
            let problem = |message: String| SetProblem {
                file: file.to_owned(),
                message,
            };
            let docs = match parse_yaml(text) {
                Ok(docs) => docs,
                Err(e) => {
                    problems.push(problem(e.to_string()));
                    continue;
                }
            };
            for doc in docs.iter().filter(|d| crate::validate::is_callvault(d)) {
                let resource = match validate_document(doc) {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(problem(e.to_string()));
                        continue;
                    }
                };
                let key = (resource.kind(), resource.name().to_owned());
                if let Some(first) = declared_in.get(&key) {
                    problems.push(problem(format!(
                        "{} {:?} is declared twice (first in {})",
                        key.0,
                        key.1,
                        first.display()
                    )));
                    continue;
                }
                declared_in.insert(key, file.to_owned());
                set.insert(resource);
            }
        }
        for (kind, name, message) in set.dangling_references() {
            let file = declared_in
                .get(&(kind, name.clone()))
                .cloned()
                .unwrap_or_default();
            problems.push(SetProblem {
                file,
                message: format!("{kind} {name:?}: {message}"),
            });
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(SetError::Invalid(problems))
        }
    }

    /// Whether the set holds no resource at all.
    pub fn is_empty(&self) -> bool {
        self.recording_profiles.is_empty()
            && self.access_profiles.is_empty()
            && self.storage_targets.is_empty()
            && self.connectors.is_empty()
            && self.speech_jobs.is_empty()
    }

    fn insert(&mut self, resource: Resource) {
        let name = resource.name().to_owned();
        match resource {
            Resource::RecordingProfile(r) => {
                self.recording_profiles.insert(name, r);
            }
            Resource::AccessProfile(r) => {
                self.access_profiles.insert(name, r);
            }
            Resource::StorageTarget(r) => {
                self.storage_targets.insert(name, r);
            }
            Resource::Connector(r) => {
                self.connectors.insert(name, r);
            }
            Resource::SpeechJob(r) => {
                self.speech_jobs.insert(name, r);
            }
        }
    }

    /// Checks this set as an update of `running`, the set last accepted: each resource in
    /// both is validated as an update of its running version, so the CRDs' transition rules
    /// (`oldSelf`) hold here as the API server enforces them in a cluster. Returns the
    /// resources `running` has and this set does not: whether they may go depends on what
    /// still refers to them, which only the caller can tell.
    pub fn changes_from(&self, running: &ResourceSet) -> Result<Vec<ResourceKey>, SetError> {
        let (new, old) = (self.objects(), running.objects());
        let refused: Vec<String> = new
            .iter()
            .filter_map(|(key, object)| {
                let before = old.get(key)?;
                let e = validate_update(object, before).err()?;
                Some(format!("{} {:?}: {e}", key.0, key.1))
            })
            .collect();
        if !refused.is_empty() {
            return Err(SetError::Refused(refused));
        }
        Ok(old.into_keys().filter(|k| !new.contains_key(k)).collect())
    }

    /// Every resource as the object the API server would hold (without status), by key.
    fn objects(&self) -> BTreeMap<ResourceKey, serde_json::Value> {
        fn add<T: serde::Serialize>(
            out: &mut BTreeMap<ResourceKey, serde_json::Value>,
            kind: &'static str,
            items: &BTreeMap<String, T>,
        ) {
            for (name, item) in items {
                if let Ok(mut value) = serde_json::to_value(item) {
                    if let Some(map) = value.as_object_mut() {
                        map.remove("status");
                    }
                    out.insert((kind, name.clone()), value);
                }
            }
        }
        let mut out = BTreeMap::new();
        add(&mut out, "RecordingProfile", &self.recording_profiles);
        add(&mut out, "AccessProfile", &self.access_profiles);
        add(&mut out, "StorageTarget", &self.storage_targets);
        add(&mut out, "Connector", &self.connectors);
        add(&mut out, "SpeechJob", &self.speech_jobs);
        out
    }

    /// References the API server cannot check: `(kind, name, what is missing)`.
    fn dangling_references(&self) -> Vec<(&'static str, String, String)> {
        let targets: BTreeSet<&str> = self.storage_targets.keys().map(String::as_str).collect();
        let profiles: BTreeSet<&str> = self.recording_profiles.keys().map(String::as_str).collect();
        let mut out = Vec::new();
        let missing_target = |field: &str, target: &str| {
            format!("{field} names StorageTarget {target:?}, which is not declared")
        };
        for (name, p) in &self.recording_profiles {
            let target = p.spec.storage_target_ref.name.as_str();
            if !targets.contains(target) {
                out.push((
                    "RecordingProfile",
                    name.clone(),
                    missing_target("spec.storageTargetRef.name", target),
                ));
            }
        }
        for (name, c) in &self.connectors {
            let target = c.spec.storage_target_ref.name.as_str();
            if !targets.contains(target) {
                out.push((
                    "Connector",
                    name.clone(),
                    missing_target("spec.storageTargetRef.name", target),
                ));
            }
            for (i, profile) in c.spec.source.recording_profiles.iter().enumerate() {
                if !profiles.contains(profile.as_str()) {
                    out.push((
                        "Connector",
                        name.clone(),
                        format!(
                            "spec.source.recordingProfiles[{i}] names RecordingProfile \
                             {profile:?}, which is not declared"
                        ),
                    ));
                }
            }
        }
        for (name, j) in &self.speech_jobs {
            for (i, profile) in j.spec.filter.recording_profiles.iter().enumerate() {
                if !profiles.contains(profile.as_str()) {
                    out.push((
                        "SpeechJob",
                        name.clone(),
                        format!(
                            "spec.filter.recordingProfiles[{i}] names RecordingProfile \
                             {profile:?}, which is not declared"
                        ),
                    ));
                }
            }
        }
        out
    }
}
