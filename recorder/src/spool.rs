//! The local spool: the truth about a recording until its object and row are committed.
//!
//! Each segment is two files named by the recording id: `<id>.cvr`, the encrypted recording as
//! it is written, and `<id>.json`, its [`Manifest`] (the row to create and, once the segment
//! ended, how it ended). The manifest is written before the media and replaced atomically, so
//! at any instant the pair says what to do: a manifest without an end is a segment whose
//! writer died (recovered as `incomplete`), one with an end waits for its commit.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use callvault_store::db::{CallType, Direction, NewRecording, Party, ReleaseCause};
use callvault_store::format::{Header, TAG_LEN};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool manifest {path} is unreadable: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The row of a recording as created at call start (and again by the committer when the
/// database was unreachable then).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowFacts {
    pub call_id: String,
    pub sip_call_id: String,
    pub session_id: String,
    pub segment: i64,
    pub start_time: i64,
    pub direction: Direction,
    pub call_type: CallType,
    pub calling: Party,
    pub called: Party,
    pub participants: Vec<Party>,
    pub owner_user_id: Option<Uuid>,
    pub owner_item: String,
    pub profile: String,
    pub storage_target: String,
    pub key_id: String,
    pub expires_at: Option<i64>,
    pub raw_metadata: String,
}

impl RowFacts {
    pub fn new_recording(&self, id: Uuid) -> NewRecording {
        let mut r = NewRecording::new(self.call_id.clone(), self.start_time, self.direction);
        r.id = id;
        r.sip_call_id = self.sip_call_id.clone();
        r.session_id = self.session_id.clone();
        r.segment = self.segment;
        r.answer_time = Some(self.start_time);
        r.call_type = self.call_type;
        r.calling = self.calling.clone();
        r.called = self.called.clone();
        r.participants = self.participants.clone();
        r.owner_user_id = self.owner_user_id;
        r.owner_item = self.owner_item.clone();
        r.profile = self.profile.clone();
        r.storage_target = self.storage_target.clone();
        r.key_id = Some(self.key_id.clone());
        r.expires_at = self.expires_at;
        r.raw_metadata = Some(self.raw_metadata.clone());
        r
    }
}

/// How a segment ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Ended {
    /// The writer finished: the file is complete and sealed.
    Sealed {
        end_time: i64,
        release_cause: ReleaseCause,
        sha256: String,
        metadata_digest: String,
        signature: String,
        /// Metadata and participants as they were at the end (re-INVITEs may change them).
        raw_metadata: String,
        participants: Vec<Party>,
    },
    /// The writer died (crash, full disk): the file holds a prefix of whole chunks.
    Recovered {
        end_time: i64,
        metadata_digest: String,
    },
}

impl Ended {
    pub fn end_time(&self) -> i64 {
        match self {
            Ended::Sealed { end_time, .. } | Ended::Recovered { end_time, .. } => *end_time,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub tenant: String,
    pub id: Uuid,
    pub row: RowFacts,
    pub ended: Option<Ended>,
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Spool {
            dir: dir.to_owned(),
        })
    }

    pub fn media_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.cvr"))
    }

    fn manifest_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes (or replaces) a manifest atomically and durably.
    pub fn save(&self, m: &Manifest) -> Result<(), SpoolError> {
        let path = self.manifest_path(m.id);
        let tmp = self.dir.join(format!("{}.json.tmp", m.id));
        let json = serde_json::to_vec_pretty(m).map_err(|e| SpoolError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&json).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// Creates the media file of a segment (after its manifest).
    pub fn create_media(&self, id: Uuid) -> Result<File, SpoolError> {
        let path = self.media_path(id);
        File::create_new(&path).map_err(io(&path))
    }

    /// Removes a committed segment: media first, so a crash in between leaves a manifest whose
    /// commit is retried (and found done), never media without its manifest.
    pub fn remove(&self, id: Uuid) -> Result<(), SpoolError> {
        for path in [self.media_path(id), self.manifest_path(id)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        self.sync_dir()
    }

    /// Every manifest in the spool; unreadable ones are reported and left in place.
    pub fn manifests(&self) -> Result<Vec<Manifest>, SpoolError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read(&path).map_err(io(&path))?;
            match serde_json::from_slice::<Manifest>(&text) {
                Ok(m) => out.push(m),
                Err(e) => tracing::error!(path = %path.display(), error = %e,
                    "unreadable spool manifest left in place"),
            }
        }
        out.sort_by_key(|m| m.row.start_time);
        Ok(out)
    }
}

/// Length of the longest prefix of whole encrypted chunks in a spool file whose writer died,
/// computed from the header alone (no key needed). `None` when even the header is torn.
pub fn whole_chunks_len(path: &Path) -> Result<Option<u64>, SpoolError> {
    let mut f = File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    let Ok(header) = Header::read_from(&mut f) else {
        return Ok(None);
    };
    let header_len = header.len() as u64;
    let block = u64::from(header.chunk_size()) + TAG_LEN as u64;
    Ok(Some(header_len + (len - header_len) / block * block))
}

/// Cuts a dead writer's file after its last whole chunk; returns the new length.
pub fn trim_to_whole_chunks(path: &Path) -> Result<Option<u64>, SpoolError> {
    let Some(keep) = whole_chunks_len(path)? else {
        return Ok(None);
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    f.set_len(keep).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(Some(keep))
}
