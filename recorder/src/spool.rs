//! The local spool: the truth about a recording until its object and row are committed.
//!
//! Each segment is two files named by the recording id: `<id>.cvr`, the encrypted recording as
//! it is written, and `<id>.json`, its [`Manifest`] (the row to create and, once the segment
//! ended, how it ended). The manifest is written before the media and replaced atomically, so
//! at any instant the pair says what to do: a manifest without an end is a segment whose
//! writer died (recovered as `incomplete`), one with an end waits for its commit. A third
//! file, `<id>.audio`, notes how much audio each whole encrypted chunk completes
//! ([`AudioProgress`]), so a recovered recording's duration is the audio it holds although the
//! recorder cannot decrypt it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use callvault_config::SpoolLimits;

use callvault_config::Timestamp;
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
    /// The recording's channels (spools written before the layout was chosen per call had two).
    #[serde(default = "two_channels")]
    pub channels: u8,
}

fn two_channels() -> u8 {
    2
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
        /// Why the recorder ended a session its source left (media timeout, session timer,
        /// unreachable peer); `None` for an ordinary end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_reason: Option<String>,
    },
    /// The writer died (crash, full disk): the file holds a prefix of whole chunks.
    Recovered {
        /// Start plus the audio the whole chunks hold.
        end_time: i64,
        metadata_digest: String,
        /// What happened and when, for the recording's row.
        #[serde(default)]
        stop_reason: Option<String>,
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
    /// Bytes media files may still take before writes fail; `u64::MAX`: no limit.
    write_budget: Arc<AtomicU64>,
}

/// The spool volume's size and what is left of it for the recorder, as `df` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    /// Bytes the recorder may still write.
    pub free_bytes: u64,
    /// Bytes used plus those free: the part of the volume the recorder could ever use.
    pub total_bytes: u64,
}

impl Space {
    /// Percent of the volume used, rounded down (a volume of no size is full).
    pub fn used_percent(&self) -> u8 {
        if self.total_bytes == 0 {
            return 100;
        }
        let used = u128::from(self.total_bytes.saturating_sub(self.free_bytes));
        let total = u128::from(self.total_bytes);
        u8::try_from((used.saturating_mul(100) / total).min(100)).unwrap_or(100)
    }
}

/// How full the spool volume is against its [`SpoolLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SpoolLevel {
    Normal,
    /// At or above `alarmPercent`: a Major alarm.
    Warning,
    /// At or above `criticalPercent`: a Critical alarm.
    Critical,
    /// Less than `minFreeMiB` free: new calls are refused (and the alarm is Critical).
    Full,
}

impl SpoolLevel {
    /// Where `space` stands against `limits`.
    pub fn of(space: Space, limits: &SpoolLimits) -> SpoolLevel {
        let percent = space.used_percent();
        if space.free_bytes < limits.min_free_mib.saturating_mul(1 << 20) {
            SpoolLevel::Full
        } else if percent >= limits.critical_percent {
            SpoolLevel::Critical
        } else if percent >= limits.alarm_percent {
            SpoolLevel::Warning
        } else {
            SpoolLevel::Normal
        }
    }
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Spool {
            dir: dir.to_owned(),
            write_budget: Arc::new(AtomicU64::new(u64::MAX)),
        })
    }

    /// Measures the volume the spool is on.
    // The block counts' types differ between platforms (u64 on 64-bit Linux).
    #[allow(clippy::useless_conversion)]
    pub fn space(&self) -> Result<Space, SpoolError> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).map_err(|e| SpoolError::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        let unit = u64::from(stat.fragment_size());
        let total_blocks = u64::from(stat.blocks());
        let used = total_blocks.saturating_sub(u64::from(stat.blocks_free()));
        let available = u64::from(stat.blocks_available());
        Ok(Space {
            free_bytes: available.saturating_mul(unit),
            total_bytes: used.saturating_add(available).saturating_mul(unit),
        })
    }

    /// Test seam: media writes of every clone of this spool fail with "no space left" once
    /// `bytes` more have been written (the failure a full spool volume gives).
    pub fn fail_writes_after(&self, bytes: u64) {
        self.write_budget.store(bytes, Ordering::SeqCst);
    }

    pub fn media_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.cvr"))
    }

    fn manifest_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn audio_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.audio"))
    }

    /// Where [`AudioProgress`] notes a segment's audio per whole chunk (created with it;
    /// `None` when it cannot be, and the recording goes on without).
    pub fn create_audio_notes(&self, id: Uuid) -> Option<File> {
        let path = self.audio_path(id);
        File::create_new(&path)
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "audio notes not kept"))
            .ok()
    }

    /// Marks a segment whose writer died as recovered: its file is cut after the last whole
    /// chunk, its end is its start plus the audio those chunks hold, and its stop reason says
    /// what happened and when (the file's last write). Committed `incomplete`.
    pub fn recover(&self, mut manifest: Manifest, why: Recovery) -> Manifest {
        let id = manifest.id;
        let path = self.media_path(id);
        let last_write = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_micros()).ok());
        let audio = match trim_to_whole_chunks(&path) {
            Ok(Some((len, chunks))) => {
                tracing::info!(recording = %id, bytes = len, chunks, "spool file recovered");
                self.audio_in_chunks(id, chunks)
            }
            Ok(None) => {
                tracing::warn!(recording = %id, "spool file has no complete header");
                Some(0)
            }
            Err(e) => {
                tracing::error!(recording = %id, error = %e, "spool file unreadable");
                None
            }
        };
        let start = manifest.row.start_time;
        let end_time = match audio {
            Some(micros) => start.saturating_add(micros),
            // No notes (a spool from before them, or lost with the machine's power): the
            // file's last write is the closest bound.
            None => last_write.unwrap_or(start).max(start),
        };
        let at = last_write
            .and_then(|t| Timestamp::from_microsecond(t).ok())
            .map_or_else(|| "an unknown time".to_owned(), |t| t.to_string());
        let stop_reason = match why {
            Recovery::Crash => format!("recovered after crash at {at}"),
            Recovery::WriteFailed(error) => format!(
                "spool write failed at {at} ({error}); kept what was written, the call was ended"
            ),
        };
        tracing::info!(recording = %id, %stop_reason, audio_micros = ?audio, "recording recovered");
        manifest.ended = Some(Ended::Recovered {
            end_time,
            // The seal covers the call's details as its row will hold them (recording format §5).
            metadata_digest: hex::encode(
                manifest
                    .row
                    .new_recording(manifest.id)
                    .sealed_digest(end_time),
            ),
            stop_reason: Some(stop_reason),
        });
        if let Err(e) = self.save(&manifest) {
            tracing::error!(error = %e, "cannot record the recovery in the spool");
        }
        manifest
    }

    /// Microseconds of audio in the first `chunks` whole chunks of a segment, from its notes.
    fn audio_in_chunks(&self, id: Uuid, chunks: u64) -> Option<i64> {
        if chunks == 0 {
            return Some(0);
        }
        let notes = std::fs::read(self.audio_path(id)).ok()?;
        let noted = (notes.len() / 8) as u64;
        // Notes are written before their chunk, so there is one for every whole chunk unless
        // the machine lost power; then the last one noted is the best known.
        let last = usize::try_from(chunks.min(noted).checked_sub(1)?).ok()?;
        let bytes: [u8; 8] = notes.get(last * 8..last * 8 + 8)?.try_into().ok()?;
        let samples = u64::from_le_bytes(bytes);
        i64::try_from(samples * 1_000_000 / OPUS_RATE).ok()
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
    pub fn create_media(&self, id: Uuid) -> Result<SpoolFile, SpoolError> {
        let path = self.media_path(id);
        let file = File::create_new(&path).map_err(io(&path))?;
        Ok(SpoolFile {
            file,
            budget: self.write_budget.clone(),
        })
    }

    /// Removes a committed segment: media first, so a crash in between leaves a manifest whose
    /// commit is retried (and found done), never media without its manifest.
    pub fn remove(&self, id: Uuid) -> Result<(), SpoolError> {
        for path in [
            self.media_path(id),
            self.audio_path(id),
            self.manifest_path(id),
        ] {
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

/// A segment's media file in the spool.
#[derive(Debug)]
pub struct SpoolFile {
    file: File,
    budget: Arc<AtomicU64>,
}

impl SpoolFile {
    pub fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl Write for SpoolFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let budget = self.budget.load(Ordering::SeqCst);
        if budget != u64::MAX {
            let n = (buf.len() as u64).min(budget);
            if n == 0 && !buf.is_empty() {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            let n = self.file.write(&buf[..n as usize])?;
            let _ = self
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    (b != u64::MAX).then(|| b.saturating_sub(n as u64))
                });
            return Ok(n);
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Length of the longest prefix of whole encrypted chunks in a spool file whose writer died,
/// and the number of those chunks, computed from the header alone (no key needed). `None` when
/// even the header is torn.
pub fn whole_chunks_len(path: &Path) -> Result<Option<(u64, u64)>, SpoolError> {
    let mut f = File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    let Ok(header) = Header::read_from(&mut f) else {
        return Ok(None);
    };
    let header_len = header.len() as u64;
    let block = u64::from(header.chunk_size()) + TAG_LEN as u64;
    let chunks = (len - header_len) / block;
    Ok(Some((header_len + chunks * block, chunks)))
}

/// Cuts a dead writer's file after its last whole chunk; returns the new length and the
/// number of chunks.
pub fn trim_to_whole_chunks(path: &Path) -> Result<Option<(u64, u64)>, SpoolError> {
    let Some((keep, chunks)) = whole_chunks_len(path)? else {
        return Ok(None);
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    f.set_len(keep).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(Some((keep, chunks)))
}

/// Why a segment was recovered rather than sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The recorder stopped mid-call (killed, crashed, lost power); found at the next start.
    Crash,
    /// Writing the spool failed mid-call, with this error (the recorder ends the call).
    WriteFailed(String),
}

/// Opus granule positions count 48 kHz samples, whatever the input rate.
const OPUS_RATE: u64 = 48_000;

/// Passes a recording's Ogg stream to the encrypting writer and notes, before each whole
/// chunk of `chunk_size` plaintext bytes is handed on, the audio (48 kHz samples after the
/// Opus pre-skip) of the pages that end inside the chunks so far: 8 bytes per chunk in the
/// segment's notes file. No fsync: the notes outlive a killed process as the media does.
pub struct AudioProgress<W> {
    inner: W,
    notes: Option<File>,
    chunk_size: u64,
    written: u64,
    next_boundary: u64,
    scan: PageScan,
    /// Pages whose header was read: (offset of their end, granule).
    ends: std::collections::VecDeque<(u64, u64)>,
    samples: u64,
}

impl<W> std::fmt::Debug for AudioProgress<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioProgress")
            .field("written", &self.written)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

impl<W: Write> AudioProgress<W> {
    pub fn new(inner: W, notes: Option<File>, chunk_size: u32) -> Self {
        AudioProgress {
            inner,
            notes,
            chunk_size: u64::from(chunk_size.max(1)),
            written: 0,
            next_boundary: u64::from(chunk_size.max(1)),
            scan: PageScan::default(),
            ends: std::collections::VecDeque::new(),
            samples: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn note(&mut self) {
        let Some(notes) = self.notes.as_mut() else {
            return;
        };
        if let Err(e) = notes.write_all(&self.samples.to_le_bytes()) {
            tracing::warn!(error = %e, "audio notes stopped: a recovery would estimate the duration");
            self.notes = None;
        }
    }
}

impl<W: Write> Write for AudioProgress<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.scan.feed(data, &mut self.ends);
        let end = self.written + data.len() as u64;
        while self.next_boundary <= end {
            while let Some(&(page_end, granule)) = self.ends.front()
                && page_end <= self.next_boundary
            {
                if granule != u64::MAX {
                    self.samples = granule.saturating_sub(self.scan.pre_skip);
                }
                self.ends.pop_front();
            }
            self.note();
            self.next_boundary += self.chunk_size;
        }
        self.inner.write_all(data)?;
        self.written = end;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads Ogg page headers (RFC 3533) out of a byte stream as it passes.
#[derive(Debug, Default)]
struct PageScan {
    offset: u64,
    header: Vec<u8>,
    body_left: u64,
    pages: u64,
    /// The start of the first page's body: the OpusHead packet.
    head: Vec<u8>,
    pre_skip: u64,
    /// Not an Ogg stream: nothing more is read.
    lost: bool,
}

impl PageScan {
    const FIXED: usize = 27;

    fn feed(&mut self, mut data: &[u8], ends: &mut std::collections::VecDeque<(u64, u64)>) {
        while !data.is_empty() && !self.lost {
            if self.body_left > 0 {
                let n = usize::try_from(self.body_left).map_or(data.len(), |l| l.min(data.len()));
                if self.pages == 1 && self.head.len() < 12 {
                    let take = n.min(12 - self.head.len());
                    self.head.extend_from_slice(&data[..take]);
                    if self.head.len() == 12 && self.head.starts_with(b"OpusHead") {
                        self.pre_skip =
                            u64::from(u16::from_le_bytes([self.head[10], self.head[11]]));
                    }
                }
                self.body_left -= n as u64;
                self.offset += n as u64;
                data = &data[n..];
                continue;
            }
            let want = if self.header.len() < Self::FIXED {
                Self::FIXED
            } else {
                Self::FIXED + usize::from(self.header[26])
            };
            let n = (want - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            self.offset += n as u64;
            data = &data[n..];
            if self.header.len() < want {
                continue;
            }
            if !self.header.starts_with(b"OggS") {
                self.lost = true;
                return;
            }
            if want == Self::FIXED && self.header[26] > 0 {
                continue; // now the segment table
            }
            let body: u64 = self.header[Self::FIXED..]
                .iter()
                .map(|&b| u64::from(b))
                .sum();
            let mut granule = [0u8; 8];
            granule.copy_from_slice(&self.header[6..14]);
            ends.push_back((self.offset + body, u64::from_le_bytes(granule)));
            self.pages += 1;
            self.body_left = body;
            self.header.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::media::ogg::OggPageWriter;

    /// An Ogg stream of an OpusHead page (pre-skip 312) and audio pages of 20 ms packets of
    /// `packet` bytes, 10 packets a page, written through [`AudioProgress`].
    fn write_stream(chunk: u32, packet: usize, pages: u64) -> (Vec<u8>, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let notes_path = dir.path().join("x.audio");
        let notes = File::create(&notes_path).unwrap();
        let progress = AudioProgress::new(Vec::new(), Some(notes), chunk);
        let mut ogg = OggPageWriter::new(progress, 7);
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2]);
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&[0; 9]);
        ogg.push_packet(&head, 0).unwrap();
        ogg.flush_page(false).unwrap();
        let mut granule = 312;
        for _ in 0..pages {
            for _ in 0..10 {
                granule += 960;
                ogg.push_packet(&vec![0x55; packet], granule).unwrap();
            }
            ogg.flush_page(false).unwrap();
        }
        let stream = ogg.into_inner().into_inner();
        let notes = std::fs::read(notes_path)
            .unwrap()
            .chunks(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (stream, notes)
    }

    /// The audio of the whole pages in the first `len` bytes, read independently.
    fn audio_in_prefix(stream: &[u8], len: usize) -> u64 {
        let (mut pos, mut samples) = (0, 0);
        while pos + 27 <= len {
            let n = usize::from(stream[pos + 26]);
            let body: usize = stream[pos + 27..pos + 27 + n]
                .iter()
                .map(|&b| usize::from(b))
                .sum();
            let end = pos + 27 + n + body;
            if end > len {
                break;
            }
            let g = u64::from_le_bytes(stream[pos + 6..pos + 14].try_into().unwrap());
            samples = g.saturating_sub(312);
            pos = end;
        }
        samples
    }

    #[test]
    fn each_whole_chunk_notes_the_audio_of_the_pages_it_completes() {
        for (chunk, packet) in [(1024, 40), (8192, 80), (300, 200)] {
            let (stream, notes) = write_stream(chunk, packet, 40);
            let chunk = chunk as usize;
            assert_eq!(
                notes.len(),
                stream.len() / chunk,
                "one note per whole chunk"
            );
            for (k, &noted) in notes.iter().enumerate() {
                assert_eq!(
                    noted,
                    audio_in_prefix(&stream, (k + 1) * chunk),
                    "chunk {k}"
                );
            }
            assert!(notes.last().unwrap() > &0);
        }
    }

    #[test]
    fn a_stream_that_is_not_ogg_notes_no_audio() {
        let mut progress = AudioProgress::new(Vec::new(), None, 16);
        progress.write_all(&[0xAB; 100]).unwrap();
        assert_eq!(progress.samples, 0);
        assert_eq!(progress.into_inner().len(), 100, "everything passed on");
    }
}
