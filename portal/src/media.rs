//! Recording media: find the object (the primary copy, else an archive copy), open its header
//! with the key ring, and decrypt only the chunks a plaintext range needs.

use std::ops::Range;

use bytes::Bytes;
use callvault_store::db::{Recording, RecordingStatus, SealedFields};
use callvault_store::format::{
    FileKey, FormatError, Header, Layout, MAX_HEADER_LEN, Seal, SealFacts, Verdict,
};
use callvault_store::keys::KeyError;
use callvault_store::objstore::Storage;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

/// Plaintext bytes decrypted per storage request when streaming (16 default chunks).
pub const STREAM_PIECE: u64 = 1024 * 1024;

/// An opened recording object.
#[derive(Debug)]
pub struct Media {
    storage: Storage,
    key: String,
    size: u64,
    layout: Layout,
    file_key: FileKey,
    /// Where it came from: `primary` or `archive:<connector>`.
    pub source: String,
}

/// Where a recording's bytes are: the primary object, then each archive copy.
async fn locate(state: &AppState, rec: &Recording) -> ApiResult<(Storage, String, u64, String)> {
    let mut candidates: Vec<(String, String, String)> = Vec::new();
    if rec.status != RecordingStatus::Deleted
        && let Some(key) = &rec.object_key
    {
        candidates.push((
            rec.storage_target.clone(),
            key.clone(),
            "primary".to_owned(),
        ));
    }
    for copy in state.db.archive_copies(&rec.tenant, rec.id).await? {
        candidates.push((
            copy.target,
            copy.object_key,
            format!("archive:{}", copy.connector),
        ));
    }
    if candidates.is_empty() {
        return Err(ApiError::new(
            Code::MediaGone,
            format!(
                "recording {} has no media (deleted, or not stored yet)",
                rec.id
            ),
        ));
    }
    let mut last_err = None;
    for (target, key, source) in candidates {
        let Some(storage) = state.storages.get(&target) else {
            tracing::warn!(recording = %rec.id, %target, "storage target not configured in the portal");
            continue;
        };
        match storage.head(&key).await {
            Ok(info) => return Ok((storage, key, info.size, source)),
            Err(e) if e.is_not_found() => {
                tracing::warn!(recording = %rec.id, %target, %key, "media copy missing");
            }
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e.into()),
        None => Err(ApiError::new(
            Code::MediaGone,
            format!("recording {}: no copy of its media is left", rec.id),
        )),
    }
}

impl Media {
    /// Opens a recording's media for range decryption.
    pub async fn open(state: &AppState, rec: &Recording) -> ApiResult<Media> {
        let (storage, key, size, source) = locate(state, rec).await?;
        let head_len = size.min(MAX_HEADER_LEN as u64);
        let head = storage.get_range(&key, 0..head_len).await?;
        let header = Header::parse(&head).map_err(tampered)?;
        let layout = if rec.status == RecordingStatus::Incomplete {
            Layout::incomplete(&header, size)
        } else {
            Layout::complete(&header, size)
        }
        .map_err(tampered)?;
        let file_key = FileKey::open_with_ring(header, &state.keys).map_err(key_problem)?;
        let media = Media {
            storage,
            key,
            size,
            layout,
            file_key,
            source,
        };
        media.check_row(rec)?;
        Ok(media)
    }

    /// The row against its seal (one HMAC, no audio read), so a recording whose call details,
    /// digests or seal were edited is refused before any audio byte. What the seal covers;
    /// `None` for a recording without a seal (recovered after an interruption).
    fn check_row(&self, rec: &Recording) -> ApiResult<Option<SealedFields>> {
        let Some(facts) = self.row_facts(rec)? else {
            return Ok(None);
        };
        let (facts, seal) = facts;
        let covers = rec.sealed_fields(&facts.metadata_sha256).ok_or_else(|| {
            row_tampered(
                "the call's details (parties, numbers, names, times, duration, direction or \
                     owner) differ from what was sealed",
            )
        })?;
        self.file_key.verify_seal(&facts, &seal).map_err(tampered)?;
        Ok(Some(covers))
    }

    /// The seal facts the row states (length and completeness from the object), and its seal.
    fn row_facts(&self, rec: &Recording) -> ApiResult<Option<(SealFacts, Seal)>> {
        let (Some(sha), Some(meta), Some(sig)) = (
            rec.sha256.as_deref(),
            rec.metadata_digest.as_deref(),
            rec.signature.as_deref(),
        ) else {
            return Ok(None);
        };
        let (Some(plaintext_sha256), Some(metadata_sha256), Some(seal)) =
            (digest(sha), digest(meta), Seal::from_hex(sig))
        else {
            return Err(row_tampered("the row's digest or seal is malformed"));
        };
        Ok(Some((
            SealFacts {
                plaintext_len: self.layout.plaintext_len(),
                plaintext_sha256,
                metadata_sha256,
                complete: self.layout.is_complete(),
            },
            seal,
        )))
    }

    pub fn plaintext_len(&self) -> u64 {
        self.layout.plaintext_len()
    }

    /// Decrypts plaintext bytes `range`, fetching and authenticating only their chunks.
    pub async fn read(&self, range: Range<u64>) -> ApiResult<Bytes> {
        let span = self
            .layout
            .span(range.start, range.end)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        if span.len == 0 {
            return Ok(Bytes::new());
        }
        let ct = self
            .storage
            .get_range(&self.key, span.ciphertext.clone())
            .await?;
        let plain = self
            .file_key
            .decrypt_span(&self.layout, &span, &ct)
            .map_err(tampered)?;
        Ok(Bytes::from(plain))
    }

    /// The whole ciphertext object as stored (for "keep encrypted" exports).
    pub async fn ciphertext(&self) -> ApiResult<Bytes> {
        Ok(self.storage.get_range(&self.key, 0..self.size).await?)
    }

    /// Full integrity check against the row: every chunk, the length, the plaintext digest,
    /// and the seal over them and the call details ([`Media::open`] checked the row).
    pub async fn verify(&self, state: &AppState, rec: &Recording) -> ApiResult<Integrity> {
        let (Some((facts, seal)), Some(covers)) = (self.row_facts(rec)?, self.check_row(rec)?)
        else {
            return Ok(Integrity::unsealed());
        };
        let bytes = self.ciphertext().await?;
        let keys = state.keys.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            callvault_store::format::verify(&bytes[..], &keys, &facts, &seal)
        })
        .await
        .map_err(|e| ApiError::internal("integrity check", e))?
        .map_err(key_problem)?;
        Ok(match verdict {
            Verdict::Authenticated(_) => Integrity {
                result: "authenticated",
                reason: None,
                sealed: Some(covers),
                covers: Some(covers.describe()),
            },
            Verdict::Tampered(e) => Integrity::tampered(&e.to_string()),
        })
    }
}

/// The answer of the integrity check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Integrity {
    /// `authenticated`, `tampered`, or `unsealed` (a recording recovered after a crash
    /// carries no seal to check).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What an authenticated seal covers: `call_details`, `call_details_assigned_later`, or
    /// `metadata_only` (recorded before call details were sealed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedFields>,
    /// The same, as a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covers: Option<&'static str>,
}

impl Integrity {
    fn tampered(reason: &str) -> Self {
        Integrity {
            result: "tampered",
            reason: Some(reason.to_owned()),
            sealed: None,
            covers: None,
        }
    }

    fn unsealed() -> Self {
        Integrity {
            result: "unsealed",
            reason: Some("the recording has no seal (recovered after an interruption)".to_owned()),
            sealed: None,
            covers: None,
        }
    }
}

fn digest(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut out).ok()?;
    Some(out)
}

fn row_tampered(reason: &str) -> ApiError {
    tracing::error!(reason, "a recording row failed authentication");
    ApiError::new(
        Code::Conflict,
        format!("the recording failed authentication and is not served: {reason}"),
    )
}

fn tampered(e: FormatError) -> ApiError {
    if e.is_tamper() {
        tracing::error!(error = %e, "a recording failed authentication");
        ApiError::new(
            Code::Conflict,
            format!("the recording failed authentication and is not served: {e}"),
        )
    } else {
        ApiError::from(e)
    }
}

fn key_problem(e: FormatError) -> ApiError {
    match e {
        FormatError::UnknownKeyId(id) | FormatError::Key(KeyError::UnknownKeyId(id)) => {
            ApiError::new(
                Code::Unavailable,
                format!("the private key {id} is not loaded in the portal's key ring"),
            )
        }
        other => tampered(other),
    }
}

/// A parsed `Range` header: the plaintext byte range to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Partial(Range<u64>),
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b | a- | -n` against a length (one range; several are refused).
pub fn parse_range(header: Option<&str>, len: u64) -> Result<RangeRequest, String> {
    let Some(h) = header else {
        return Ok(RangeRequest::Full);
    };
    let spec = h
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| format!("unsupported Range unit in {h:?}: only bytes"))?;
    if spec.contains(',') {
        return Err("multiple ranges are not supported".to_owned());
    }
    let (a, b) = spec
        .split_once('-')
        .ok_or_else(|| format!("malformed Range {h:?}"))?;
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("malformed Range {h:?}"))
    };
    let range = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return Err(format!("malformed Range {h:?}")),
        (true, false) => {
            let n = num(b)?;
            if n == 0 || len == 0 {
                return Ok(RangeRequest::Unsatisfiable);
            }
            len.saturating_sub(n)..len
        }
        (false, true) => num(a)?..len,
        (false, false) => {
            let (s, e) = (num(a)?, num(b)?);
            if e < s {
                return Err(format!("malformed Range {h:?}: end before start"));
            }
            s..e.saturating_add(1).min(len)
        }
    };
    if range.start >= len {
        return Ok(RangeRequest::Unsatisfiable);
    }
    Ok(RangeRequest::Partial(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 100), Ok(Full));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Partial(0..10)));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Partial(90..100)));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Partial(90..100)));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Partial(50..100)));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Ok(Unsatisfiable));
        assert!(parse_range(Some("bytes=5-1"), 100).is_err());
        assert!(parse_range(Some("items=0-1"), 100).is_err());
        assert!(parse_range(Some("bytes=0-1,5-6"), 100).is_err());
    }
}
