//! Interactions: search and list, details, playback with Range, download, notes, tags,
//! deletion requests, the integrity check, assigning unassigned calls, bulk ZIP, CSV/XLSX.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callvault_store::db::{
    AccessScope, Attendance, DeleteMode, Note, Recording, SearchQuery, Tag, Transcript, now_micros,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::extract::{Json, Path, Query};
use super::{Caller, Need, St};
use crate::AppState;
use crate::access::{Action, AdminPermission, gained_by_assignment, resolve};
use crate::error::{ApiError, ApiResult, Code};
use crate::export::{self, Row};
use crate::media::{Media, RangeRequest, STREAM_PIECE, parse_range};
use crate::metrics::Metrics;

/// Most calls in one bulk ZIP (media-manager F-74).
pub const MAX_ZIP: usize = 50;
/// Most calls in one tag, delete or export-by-id request.
pub const MAX_BATCH: usize = 1000;
/// Most rows in one CSV/XLSX export of a search.
pub const MAX_EXPORT_ROWS: usize = 100_000;
const DEFAULT_PAGE: u32 = 25;

/// One page of the Interactions list.
#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<Recording>,
    pub next_cursor: Option<String>,
    pub total: i64,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only calls not assigned to a user (the admins' "Not assigned to users" view).
    #[serde(default)]
    pub unassigned: bool,
}

pub async fn list(
    State(state): St,
    c: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Page>> {
    let q = SearchQuery {
        unassigned: p.unassigned,
        ..Default::default()
    };
    run_search(&state, &c, &q, p.limit, p.cursor.as_deref()).await
}

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    #[serde(default)]
    pub query: SearchQuery,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

pub async fn search(
    State(state): St,
    c: Caller,
    Json(req): Json<SearchRequest>,
) -> ApiResult<Json<Page>> {
    run_search(&state, &c, &req.query, req.limit, req.cursor.as_deref()).await
}

async fn run_search(
    state: &AppState,
    c: &Caller,
    q: &SearchQuery,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<Json<Page>> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    // The page and the total are independent queries: run them on two connections at once.
    let (page, total) = futures::try_join!(
        state
            .db
            .search_recordings(&c.tenant, &c.grants.view, q, limit, cursor),
        state.db.count_recordings(&c.tenant, &c.grants.view, q),
    )?;
    c.audit(
        state,
        "search",
        "interactions",
        "",
        json!({ "query": q, "page": cursor.is_some(), "results": page.items.len(), "total": total }),
    )
    .await?;
    Ok(Json(Page {
        items: page.items,
        next_cursor: page.next_cursor,
        total,
    }))
}

/// A call's details with everything shown under the player, and what the caller may do.
#[derive(Debug, Serialize)]
pub struct Detail {
    pub recording: Recording,
    pub tags: Vec<Tag>,
    pub notes: Vec<Note>,
    pub transcripts: Vec<Transcript>,
    /// Actions the caller may take on this call (the UI greys the others out).
    pub allowed: Vec<Action>,
    /// The part of a meeting the caller plays, when they reach it only by having attended
    /// that part; absent when they may hear the whole call.
    pub part: Option<Attendance>,
}

pub async fn detail(State(state): St, c: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<Detail>> {
    let (rec, audience) = c.recording_and_audience(&state, id, Need::View).await?;
    let part = c
        .grants
        .attended_part(Action::Play, rec.owner_user_id, &audience);
    let allowed = Action::ALL
        .into_iter()
        .filter(|a| c.grants.check(*a, &rec, &audience).is_ok())
        // The whole meeting is not theirs to download (see `Caller::recording_part`).
        .filter(|a| {
            *a != Action::Download
                || c.grants
                    .attended_part(*a, rec.owner_user_id, &audience)
                    .is_none()
        })
        .collect();
    c.audit(&state, "view", "call", id.to_string(), json!({}))
        .await?;
    Ok(Json(Detail {
        tags: state.db.recording_tags(&c.tenant, id).await?,
        notes: state.db.notes(&c.tenant, id).await?,
        transcripts: state.db.transcripts(&c.tenant, id).await?,
        recording: rec,
        allowed,
        part,
    }))
}

/// A recording refused because it failed authentication: counted and audited (a tampered
/// recording is something an auditor must see), the error passed on.
async fn refuse_tampered(
    state: &AppState,
    c: &Caller,
    id: Uuid,
    action: &str,
    e: ApiError,
) -> ApiError {
    if e.code != Code::Conflict {
        return e;
    }
    Metrics::add(&state.metrics.media_tampered, 1);
    let details = json!({ "action": action, "reason": e.message });
    match c
        .audit(state, "media.tampered", "call", id.to_string(), details)
        .await
    {
        Ok(()) => e,
        Err(audit) => audit,
    }
}

/// Opens a call's media for `action`; a header that fails authentication is refused.
async fn open_media(
    state: &AppState,
    c: &Caller,
    rec: &Recording,
    action: &str,
) -> ApiResult<Media> {
    match Media::open(state, rec).await {
        Ok(m) => Ok(m),
        Err(e) => Err(refuse_tampered(state, c, rec.id, action, e).await),
    }
}

/// The body of plaintext `range`, a piece at a time. The first piece is decrypted before the
/// response starts, so a recording whose first chunk fails authentication is answered with an
/// error, not a 200/206 that breaks off; a later chunk that fails cuts the body, logged with
/// its reason.
async fn media_body(
    state: &std::sync::Arc<AppState>,
    c: &Caller,
    id: Uuid,
    action: &str,
    media: Media,
    range: std::ops::Range<u64>,
) -> ApiResult<Body> {
    let first_end = range.end.min(range.start + STREAM_PIECE);
    let first = match media.read(range.start..first_end).await {
        Ok(b) => b,
        Err(e) => return Err(refuse_tampered(state, c, id, action, e).await),
    };
    Metrics::add(&state.metrics.audio_bytes, first.len() as u64);
    let state = state.clone();
    let media = std::sync::Arc::new(media);
    let rest = futures::stream::try_unfold(first_end, move |pos| {
        let media = media.clone();
        let state = state.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok::<_, ApiError>(None);
            }
            let next = end.min(pos + STREAM_PIECE);
            let bytes = media.read(pos..next).await.inspect_err(|e| {
                if e.code == Code::Conflict {
                    Metrics::add(&state.metrics.media_tampered, 1);
                }
                tracing::error!(recording = %id, at = pos, reason = %e.message, "audio cut off mid-stream");
            })?;
            Metrics::add(&state.metrics.audio_bytes, bytes.len() as u64);
            Ok(Some((bytes, next)))
        }
    });
    let head = futures::stream::once(async move { Ok::<_, ApiError>(first) });
    Ok(Body::from_stream(futures::StreamExt::chain(head, rest)))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Plays a call: decrypted Ogg/Opus with HTTP Range, so the player can seek.
pub async fn media(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (rec, audience) = c
        .recording_and_audience(&state, id, Need::Do(Action::Play))
        .await?;
    let media = open_media(&state, &c, &rec, "play").await?;
    if let Some(part) = c
        .grants
        .attended_part(Action::Play, rec.owner_user_id, &audience)
    {
        return play_attended_part(&state, &c, &rec, media, part, &headers).await;
    }
    let len = media.plaintext_len();
    let (status, range) = requested_range(&headers, len)?;
    let source = media.source.clone();
    let body = media_body(&state, &c, id, "play", media, range.clone()).await?;
    // One audit entry per playback, not per seek: the first request of a player starts at 0.
    if range.start == 0 {
        c.audit(
            &state,
            "play",
            "call",
            id.to_string(),
            json!({ "source": source }),
        )
        .await?;
    }
    Ok(audio_response(body, status, &range, len))
}

/// The plaintext range a player asks for (`Range`), and whether the answer is partial.
fn requested_range(headers: &HeaderMap, len: u64) -> ApiResult<(StatusCode, Range<u64>)> {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    match parse_range(range_header, len).map_err(ApiError::invalid)? {
        RangeRequest::Full => Ok((StatusCode::OK, 0..len)),
        RangeRequest::Partial(r) => Ok((StatusCode::PARTIAL_CONTENT, r)),
        RangeRequest::Unsatisfiable => {
            let mut e = ApiError::new(
                Code::RangeNotSatisfiable,
                format!("the recording has {len} bytes"),
            );
            e.range_len = Some(len);
            Err(e)
        }
    }
}

/// Audio a player may seek in, never cached.
fn audio_response(body: Body, status: StatusCode, range: &Range<u64>, len: u64) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/ogg"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        header_value(&(range.end - range.start).to_string()),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {}-{}/{len}", range.start, range.end - 1)),
        );
    }
    resp
}

/// Plays the part of a meeting the caller attended: decrypted whole (a meeting's recording is
/// seconds to hours of Opus, megabytes), cut to the part, served with Range from memory.
async fn play_attended_part(
    state: &std::sync::Arc<AppState>,
    c: &Caller,
    rec: &Recording,
    media: Media,
    part: Attendance,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let whole = match media.read(0..media.plaintext_len()).await {
        Ok(b) => b,
        Err(e) => return Err(refuse_tampered(state, c, rec.id, "play", e).await),
    };
    let audio = crate::media::attended_part(&whole, part.joined_ms, part.left_ms)
        .map_err(|e| ApiError::internal(&format!("cutting recording {}", rec.id), e))?;
    let len = audio.len() as u64;
    let (status, range) = requested_range(headers, len)?;
    if range.start == 0 {
        c.audit(
            state,
            "play",
            "call",
            rec.id.to_string(),
            json!({ "source": media.source, "part": part }),
        )
        .await?;
    }
    let body = bytes::Bytes::from(audio).slice(range.start as usize..range.end as usize);
    Ok(audio_response(Body::from(body), status, &range, len))
}

fn file_name(rec: &Recording, ext: &str) -> String {
    let safe = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_'))
            .take(32)
            .collect::<String>()
    };
    let when = export::iso(rec.start_time)
        .replace([':', '.'], "-")
        .trim_end_matches('Z')
        .to_owned();
    format!(
        "{when}_{}_{}_{}.{ext}",
        safe(&rec.calling.number),
        safe(&rec.called.number),
        rec.id
    )
}

/// Downloads one call as a decrypted `.ogg`.
pub async fn download(State(state): St, c: Caller, Path(id): Path<Uuid>) -> ApiResult<Response> {
    let rec = c.recording(&state, id, Need::Do(Action::Download)).await?;
    let media = open_media(&state, &c, &rec, "download").await?;
    let len = media.plaintext_len();
    let source = media.source.clone();
    let body = media_body(&state, &c, id, "download", media, 0..len).await?;
    c.audit(
        &state,
        "download",
        "call",
        id.to_string(),
        json!({ "source": source, "bytes": len }),
    )
    .await?;
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/ogg"));
    h.insert(header::CONTENT_LENGTH, header_value(&len.to_string()));
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&format!(
            "attachment; filename=\"{}\"",
            file_name(&rec, "ogg")
        )),
    );
    Ok(resp)
}

pub async fn integrity(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<crate::media::Integrity>> {
    let rec = c.recording(&state, id, Need::View).await?;
    let media = Media::open(&state, &rec).await;
    let result = match media {
        Ok(m) => m.verify(&state, &rec).await?,
        // A header or final chunk that does not authenticate is itself the verdict.
        Err(e) if e.code == Code::Conflict => crate::media::Integrity {
            result: "tampered",
            reason: Some(e.message),
            sealed: None,
            covers: None,
        },
        Err(e) => return Err(e),
    };
    c.audit(
        &state,
        "integrity.check",
        "call",
        id.to_string(),
        json!({ "result": result.result }),
    )
    .await?;
    Ok(Json(result))
}

pub async fn notes(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<Note>>> {
    c.recording(&state, id, Need::View).await?;
    Ok(Json(state.db.notes(&c.tenant, id).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewNote {
    pub body: String,
}

pub async fn add_note(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<NewNote>,
) -> ApiResult<Json<Note>> {
    c.recording(&state, id, Need::Do(Action::AddNotes)).await?;
    if req.body.trim().is_empty() || req.body.chars().count() > 4000 {
        return Err(ApiError::invalid("a note has 1 to 4000 characters"));
    }
    let author = if c.user.display_name.is_empty() {
        &c.user.username
    } else {
        &c.user.display_name
    };
    let note = state
        .db
        .add_note(&c.tenant, id, Some(c.user.id), author, &req.body)
        .await?;
    c.audit(
        &state,
        "note.add",
        "call",
        id.to_string(),
        json!({ "note_id": note.id, "body": note.body }),
    )
    .await?;
    Ok(Json(note))
}

/// Deletes a note: one's own (with addNotes), or another's with deleteOthersNotes.
pub async fn delete_note(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    let note = state
        .db
        .note(&c.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("note {id}")))?;
    let need = if note.author_user_id == Some(c.user.id) {
        Action::AddNotes
    } else {
        Action::DeleteOthersNotes
    };
    c.recording(&state, note.recording_id, Need::Do(need))
        .await?;
    state.db.delete_note(&c.tenant, id).await?;
    c.audit(
        &state,
        "note.delete",
        "call",
        note.recording_id.to_string(),
        json!({ "note_id": id, "author": note.author_name, "body": note.body }),
    )
    .await?;
    Ok(Json(json!({ "deleted": true })))
}

fn batch(ids: &[Uuid], max: usize) -> ApiResult<()> {
    if ids.is_empty() {
        return Err(ApiError::invalid("select at least one recording"));
    }
    if ids.len() > max {
        return Err(ApiError::new(
            Code::TooManyItems,
            format!("at most {max} recordings per request, got {}", ids.len()),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct SetTags {
    pub recordings: Vec<Uuid>,
    pub tags: Vec<Uuid>,
}

/// Sets exactly these tags on every selected call, replacing theirs (F-82).
pub async fn set_tags(
    State(state): St,
    c: Caller,
    Json(req): Json<SetTags>,
) -> ApiResult<Json<Value>> {
    batch(&req.recordings, MAX_BATCH)?;
    for id in &req.recordings {
        c.recording(&state, *id, Need::Do(Action::Tag)).await?;
    }
    let catalogue = state.db.list_tags(&c.tenant).await?;
    let names: Vec<String> = req
        .tags
        .iter()
        .map(|t| {
            catalogue
                .iter()
                .find(|x| x.id == *t)
                .map(|x| x.name.clone())
                .ok_or_else(|| ApiError::invalid(format!("tag {t} is not in the catalogue")))
        })
        .collect::<ApiResult<_>>()?;
    state
        .db
        .replace_tags(&c.tenant, &req.recordings, &req.tags)
        .await?;
    for id in &req.recordings {
        c.audit(
            &state,
            "tag.set",
            "call",
            id.to_string(),
            json!({ "tags": names }),
        )
        .await?;
    }
    Ok(Json(
        json!({ "recordings": req.recordings.len(), "tags": names }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct DeleteRequest {
    pub recordings: Vec<Uuid>,
    /// `all` (metadata and media, the default) or `media_only`.
    #[serde(default = "delete_all")]
    pub mode: DeleteMode,
    /// The operator approving the deletion.
    #[serde(default)]
    pub authorized_by: String,
    /// Why.
    #[serde(default)]
    pub note: String,
}

fn delete_all() -> DeleteMode {
    DeleteMode::All
}

/// Requests deletion of calls; the next retention run carries it out. Refused (nothing is
/// requested) when any selected call is under legal hold.
pub async fn request_delete(
    State(state): St,
    c: Caller,
    Json(req): Json<DeleteRequest>,
) -> ApiResult<Json<Value>> {
    batch(&req.recordings, MAX_BATCH)?;
    if req.authorized_by.trim().is_empty() {
        return Err(ApiError::invalid(
            "authorized_by must name the operator approving the deletion",
        ));
    }
    for id in &req.recordings {
        c.recording(&state, *id, Need::Do(Action::DeleteCalls))
            .await?;
    }
    state
        .db
        .request_deletion(
            &c.tenant,
            &req.recordings,
            req.mode,
            &c.user.username,
            req.authorized_by.trim(),
            &req.note,
        )
        .await?;
    for id in &req.recordings {
        c.audit(
            &state,
            "delete.request",
            "call",
            id.to_string(),
            json!({ "mode": req.mode, "authorized_by": req.authorized_by, "note": req.note }),
        )
        .await?;
    }
    Ok(Json(json!({
        "requested": req.recordings.len(),
        "message": format!("{} call(s) will be processed in the next retention cycle", req.recordings.len()),
    })))
}

#[derive(Debug, Deserialize)]
pub struct Assign {
    pub user_id: Uuid,
    /// The party number of the call that identifies the user.
    pub number: String,
    /// "Apply this rule to all similar calls": every other unassigned call with the number.
    #[serde(default)]
    pub apply_to_similar: bool,
}

/// Assigns an unassigned call to a user; with `apply_to_similar`, also adds the number to the
/// user's extensions (so future calls match) and assigns every unassigned call of the number.
pub async fn assign(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<Assign>,
) -> ApiResult<Json<Value>> {
    c.require(AdminPermission::ConfigureSystem)?;
    let rec = c.recording(&state, id, Need::View).await?;
    if rec.owner_user_id.is_some() {
        return Err(ApiError::new(
            Code::Conflict,
            format!("recording {id} is already assigned to a user"),
        ));
    }
    let number = req.number.trim();
    let parties = [&rec.calling, &rec.called, &rec.answering];
    if !parties
        .iter()
        .map(|p| p.number.as_str())
        .chain(rec.participants.iter().map(|p| p.number.as_str()))
        .any(|n| !n.is_empty() && n == number)
    {
        return Err(ApiError::invalid(format!(
            "{number:?} is not a party number of recording {id}"
        )));
    }
    let user = state
        .db
        .user(&c.tenant, req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {}", req.user_id)))?;
    // No escalation: the calls must not give the user, or those scoped to their groups, an
    // action the admin does not hold on them (audio actions with the key grant).
    let user_groups = state.db.user_groups(&c.tenant, user.id).await?;
    let names: Vec<&str> = user_groups.iter().map(|g| g.name.as_str()).collect();
    let profiles = state.access.profiles(&c.tenant);
    let theirs = resolve(
        &user,
        &user_groups,
        &state.db.list_groups(&c.tenant).await?,
        &profiles,
    );
    let gained = gained_by_assignment(&theirs, &names, &profiles);
    let candidates = state
        .db
        .assignable_calls(&c.tenant, id, number, req.apply_to_similar)
        .await?;
    for rid in &candidates {
        let Some(call) = state.db.recording(&c.tenant, *rid).await? else {
            continue;
        };
        let audience = state.db.recording_audience(&c.tenant, *rid).await?;
        if let Some(a) = gained
            .iter()
            .find(|a| c.grants.check(**a, &call, &audience).is_err())
        {
            let key = if a.needs_key() {
                " (with its key grant)"
            } else {
                ""
            };
            return Err(ApiError::forbidden(format!(
                "assigning recording {rid} to {:?} would give them, or those whose scope names \
                 their groups, {} on it{key}, which you do not hold yourself",
                user.username,
                serde_json::to_string(a).unwrap_or_default()
            )));
        }
    }
    // A number another user has is refused either way (the conflict names them); only
    // "apply to all similar calls" makes it the user's, so that future calls match.
    if req.apply_to_similar {
        state.db.add_extension(&c.tenant, number, user.id).await?;
    } else {
        state.db.number_free_for(&c.tenant, number, user.id).await?;
    }
    let assigned = state
        .db
        .assign_calls(&c.tenant, &candidates, user.id)
        .await?;
    c.audit(
        &state,
        "call.assign",
        "call",
        id.to_string(),
        json!({ "user": user.username, "number": number, "apply_to_similar": req.apply_to_similar, "assigned": assigned.len() }),
    )
    .await?;
    Ok(Json(
        json!({ "assigned": assigned, "user": user.username, "number": number }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ZipRequest {
    pub recordings: Vec<Uuid>,
    /// The envelopes as stored plus a manifest, instead of decrypted audio.
    #[serde(default)]
    pub keep_encrypted: bool,
}

fn zip_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal("building the ZIP", e)
}

/// Bulk download: up to 50 calls as a ZIP with an HTML index that plays them offline.
pub async fn zip(State(state): St, c: Caller, Json(req): Json<ZipRequest>) -> ApiResult<Response> {
    batch(&req.recordings, MAX_ZIP)?;
    let mut recs = Vec::new();
    for id in &req.recordings {
        recs.push(c.recording(&state, *id, Need::Do(Action::Export)).await?);
    }
    let file = tempfile::tempfile().map_err(zip_err)?;
    let mut zw = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let mut index = Vec::new();
    let mut manifest = Vec::new();
    for rec in &recs {
        let media = Media::open(&state, rec).await?;
        let (name, data) = if req.keep_encrypted {
            let name = file_name(rec, "cvr");
            manifest.push(json!({
                "file": name, "recording_id": rec.id, "key_id": rec.key_id,
                "sha256": rec.sha256, "metadata_sha256": rec.metadata_digest, "seal": rec.signature,
                // The row as sealed: `callvault verify --row` checks its call details too.
                "recording": rec,
            }));
            (name, media.ciphertext().await?)
        } else {
            (
                file_name(rec, "ogg"),
                media.read(0..media.plaintext_len()).await?,
            )
        };
        zw.start_file(name.as_str(), opts).map_err(zip_err)?;
        zw.write_all(&data).map_err(zip_err)?;
        index.push((rec, name, !req.keep_encrypted));
    }
    let now = now_micros();
    let html = export::zip_index(&index, &c.user.username, now);
    zw.start_file("index.html", opts).map_err(zip_err)?;
    zw.write_all(html.as_bytes()).map_err(zip_err)?;
    if req.keep_encrypted {
        zw.start_file("manifest.json", opts).map_err(zip_err)?;
        let m = serde_json::to_vec_pretty(&manifest).map_err(zip_err)?;
        zw.write_all(&m).map_err(zip_err)?;
    }
    let mut file = zw.finish().map_err(zip_err)?;
    for rec in &recs {
        c.audit(
            &state,
            "export.zip",
            "call",
            rec.id.to_string(),
            json!({ "keep_encrypted": req.keep_encrypted, "calls": recs.len() }),
        )
        .await?;
    }
    use std::io::Seek;
    let len = file.stream_position().map_err(zip_err)?;
    file.rewind().map_err(zip_err)?;
    let body = Body::from_stream(tokio_util_stream(tokio::fs::File::from_std(file)));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::CONTENT_LENGTH, header_value(&len.to_string()));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"callvault-recordings.zip\""),
    );
    Ok(resp)
}

/// Reads a file as a stream of 64 KiB pieces.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), f)))
    })
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Xlsx,
}

#[derive(Debug, Deserialize)]
pub struct ExportRequest {
    pub format: ExportFormat,
    /// The selected calls; or else every call matching `query`.
    #[serde(default)]
    pub recordings: Option<Vec<Uuid>>,
    #[serde(default)]
    pub query: Option<SearchQuery>,
}

/// Exports the selected or filtered calls' details (no audio) to CSV or XLSX.
pub async fn export(
    State(state): St,
    c: Caller,
    Json(req): Json<ExportRequest>,
) -> ApiResult<Response> {
    let (recs, criteria) = match (&req.recordings, &req.query) {
        (Some(ids), _) => {
            batch(ids, MAX_BATCH)?;
            let mut recs = Vec::new();
            for id in ids {
                recs.push(c.recording(&state, *id, Need::Meta(Action::Export)).await?);
            }
            (recs, None)
        }
        (None, Some(q)) => {
            // The export action's scope in SQL: nothing outside it can be listed.
            let scope = c.grants.action_scope(Action::Export);
            if scope == AccessScope::None {
                return Err(ApiError::forbidden(
                    "your access profiles do not allow export",
                ));
            }
            let mut recs = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = state
                    .db
                    .search_recordings(&c.tenant, &scope, q, 1000, cursor.as_deref())
                    .await?;
                recs.extend(page.items);
                if recs.len() > MAX_EXPORT_ROWS {
                    return Err(ApiError::new(
                        Code::TooManyItems,
                        format!("more than {MAX_EXPORT_ROWS} calls match; narrow the search"),
                    ));
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            (recs, Some(serde_json::to_string(q).unwrap_or_default()))
        }
        (None, None) => {
            return Err(ApiError::invalid("give either recordings or query"));
        }
    };
    let users: HashMap<Uuid, (String, String)> = state
        .db
        .list_users(&c.tenant)
        .await?
        .into_iter()
        .map(|u| (u.id, (u.display_name, u.username)))
        .collect();
    let mut rows = Vec::with_capacity(recs.len());
    for rec in &recs {
        let (display, upn) = rec
            .owner_user_id
            .and_then(|id| users.get(&id).cloned())
            .unwrap_or_default();
        rows.push(Row {
            rec,
            owner_display: display,
            owner_username: upn,
            notes: state.db.notes(&c.tenant, rec.id).await?,
            tags: state.db.recording_tags(&c.tenant, rec.id).await?,
        });
    }
    let now = now_micros();
    let by = if c.user.display_name.is_empty() {
        c.user.username.clone()
    } else {
        c.user.display_name.clone()
    };
    let url = &state.config.public_url;
    let (body, ctype, ext) = match req.format {
        ExportFormat::Csv => (
            export::report_csv(&rows, &by, now, criteria.as_deref(), url).into_bytes(),
            "text/csv; charset=utf-8",
            "csv",
        ),
        ExportFormat::Xlsx => (
            export::report_xlsx(&rows, &by, now, criteria.as_deref(), url)
                .map_err(|e| ApiError::internal("building the XLSX", e))?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
    };
    c.audit(
        &state,
        &format!("export.{ext}"),
        "interactions",
        "",
        json!({ "calls": recs.len(), "recordings": recs.iter().map(|r| r.id).collect::<Vec<_>>(), "criteria": criteria }),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
            (
                header::CONTENT_DISPOSITION,
                header_value(&format!("attachment; filename=\"interactions.{ext}\"")),
            ),
        ],
        body,
    )
        .into_response())
}
