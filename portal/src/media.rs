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

/// The part of an Ogg Opus recording from `joined_ms` to `left_ms` (the end when `None`), as
/// an Ogg Opus stream of its own: the header pages, then every audio page that overlaps the
/// part (the recorder writes one-second pages, so the part is kept to the second), its granule
/// positions rebased so the part starts at zero, its pages renumbered and re-checksummed.
pub fn attended_part(ogg: &[u8], joined_ms: i64, left_ms: Option<i64>) -> Result<Vec<u8>, String> {
    let pages = ogg_pages(ogg)?;
    let [head, tags, audio @ ..] = pages.as_slice() else {
        return Err("an Ogg Opus stream has two header pages".to_owned());
    };
    let pre_skip = match head.body.get(..12) {
        Some(h) if h.starts_with(b"OpusHead") => u64::from(u16::from_le_bytes([h[10], h[11]])),
        _ => return Err("the first page is not an OpusHead".to_owned()),
    };
    // Granule g is sample g - pre_skip of the recording, at 48 kHz.
    let to_granule = |ms: i64| pre_skip + u64::try_from(ms).unwrap_or(0) * 48;
    let (from, to) = (to_granule(joined_ms), left_ms.map(to_granule));
    let mut out = Vec::with_capacity(ogg.len());
    let mut sequence = 0u32;
    let mut emit = |page: &Page<'_>, granule: u64, flags: u8, out: &mut Vec<u8>| {
        let start = out.len();
        out.extend_from_slice(page.header);
        out.extend_from_slice(page.body);
        out[start + 5] = flags;
        out[start + 6..start + 14].copy_from_slice(&granule.to_le_bytes());
        out[start + 18..start + 22].copy_from_slice(&sequence.to_le_bytes());
        out[start + 22..start + 26].fill(0);
        let crc = OGG_CRC.checksum(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        sequence += 1;
    };
    emit(head, head.granule, head.flags & !0x04, &mut out);
    emit(tags, tags.granule, tags.flags & !0x04, &mut out);
    let mut before = 0u64;
    let mut base = None;
    let kept: Vec<(&Page<'_>, u64)> = audio
        .iter()
        // A page on which no packet ends (granule -1) holds no audio of its own.
        .filter(|p| p.granule != u64::MAX)
        .filter_map(|p| {
            let start = std::mem::replace(&mut before, p.granule);
            let overlaps = p.granule > from && to.is_none_or(|t| start < t);
            overlaps.then(|| (p, p.granule - *base.get_or_insert(start)))
        })
        .collect();
    for (i, (page, granule)) in kept.iter().enumerate() {
        let last = if i + 1 == kept.len() { 0x04 } else { 0 };
        emit(page, *granule, (page.flags & !0x04) | last, &mut out);
    }
    Ok(out)
}

/// Ogg's page checksum (RFC 3533 §6): CRC-32, polynomial 0x04c11db7, no reflection, zero
/// initial value and final XOR.
const OGG_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    init: 0,
    refin: false,
    refout: false,
    xorout: 0,
    check: 0x89a1_897f,
    residue: 0,
});

/// One Ogg page: its 27-byte header and lacing table, its body, flags and granule.
struct Page<'a> {
    header: &'a [u8],
    body: &'a [u8],
    flags: u8,
    granule: u64,
}

/// The pages of an Ogg stream the recorder wrote (whole packets per page, no `-1` granules).
fn ogg_pages(data: &[u8]) -> Result<Vec<Page<'_>>, String> {
    let mut pages = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let at = |what: &str| format!("truncated Ogg {what} at byte {pos}");
        let fixed = data.get(pos..pos + 27).ok_or_else(|| at("page header"))?;
        if !fixed.starts_with(b"OggS") {
            return Err(format!("no Ogg page at byte {pos}"));
        }
        let segments = usize::from(fixed[26]);
        let lacing = data
            .get(pos + 27..pos + 27 + segments)
            .ok_or_else(|| at("lacing table"))?;
        let header_len = 27 + segments;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body = data
            .get(pos + header_len..pos + header_len + body_len)
            .ok_or_else(|| at("page body"))?;
        let mut granule = [0u8; 8];
        granule.copy_from_slice(&fixed[6..14]);
        pages.push(Page {
            header: &data[pos..pos + header_len],
            body,
            flags: fixed[5],
            granule: u64::from_le_bytes(granule),
        });
        pos += header_len + body_len;
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use callvault_recorder::media::{OggOpusWriter, OpusConfig};

    /// `seconds` of a recording as the recorder writes it (one-second pages).
    fn recording(seconds: usize) -> Vec<u8> {
        let config = OpusConfig::default();
        let frames = seconds * config.input_rate as usize / config.frame_len;
        let frame = vec![0i16; 2 * config.frame_len];
        let mut w = OggOpusWriter::new(Vec::new(), config.clone()).expect("writer");
        for _ in 0..frames {
            w.write_frame(&frame).expect("frame");
        }
        let total = (frames * config.frame_len) as u64;
        w.finish(total).expect("finish").0
    }

    #[test]
    fn an_attended_part_is_an_ogg_opus_stream_of_that_part_to_the_second() {
        let whole = recording(10);
        let pages = ogg_pages(&whole).expect("pages");
        let pre_skip = u64::from(u16::from_le_bytes([pages[0].body[10], pages[0].body[11]]));
        let part = attended_part(&whole, 3_000, Some(6_500)).expect("part");
        let got = ogg_pages(&part).expect("the part parses");
        // Headers first and unchanged, the first page BOS, the last EOS, pages numbered in
        // order, every checksum valid.
        assert_eq!(got[0].body, pages[0].body);
        assert_eq!(got[1].body, pages[1].body);
        assert_eq!(got[0].flags & 0x02, 0x02);
        assert_eq!(got.last().map(|p| p.flags & 0x04), Some(0x04));
        for (i, page) in ogg_pages(&part).expect("pages").iter().enumerate() {
            let seq = u32::from_le_bytes(page.header[18..22].try_into().expect("4 bytes"));
            assert_eq!(seq as usize, i);
            let mut zeroed = [page.header, page.body].concat();
            let crc = u32::from_le_bytes(zeroed[22..26].try_into().expect("4 bytes"));
            zeroed[22..26].fill(0);
            assert_eq!(callvault_recorder::media::ogg::crc32(&zeroed), crc);
        }
        // 3.0–6.5 s kept to whole one-second pages: 3.5 to 5.5 s long, starting at granule 0.
        let seconds = (got.last().expect("audio").granule - pre_skip) as f64 / 48_000.0;
        assert!((3.5..=5.5).contains(&seconds), "{seconds} s");
        assert!(got.len() < pages.len() - 3);
        // Joined at the start and stayed: the whole recording, its audio pages unchanged.
        let all = attended_part(&whole, 0, None).expect("whole");
        let again = ogg_pages(&all).expect("pages");
        assert_eq!(again.len(), pages.len());
        assert_eq!(
            again.last().map(|p| p.granule),
            pages.last().map(|p| p.granule)
        );
        assert!(attended_part(&whole[..100], 0, None).is_err());
    }

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
