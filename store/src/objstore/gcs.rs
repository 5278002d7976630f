//! GCS writes through the JSON API upload endpoint (`POST /upload/storage/v1/b/{bucket}/o`).
//!
//! object_store's GCS client writes with the XML API, which GCS-compatible servers such as
//! fake-gcs-server do not all implement; every server implementing GCS implements the JSON
//! API uploads. Reads, lists and deletes stay on object_store.
//!
//! Every upload carries the MD5 and CRC32C of the bytes sent: an object that fits one request
//! goes up as a `multipart` upload declaring both in its metadata, which the server checks
//! before storing anything; a larger one goes up as a `resumable` upload in chunks, its
//! digests sent as `X-Goog-Hash` with the final chunk, which GCS checks before committing
//! (fake-gcs-server ignores it). Either way the digests the server reports for the object it
//! stored must equal ours, or the object is deleted and the upload fails: a successful upload
//! means the server holds exactly the bytes that were sent.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use object_store::gcp::GcpCredentialProvider;
use reqwest::{StatusCode, header};
use url::Url;

use super::StorageError;

/// Resumable chunks must be multiples of 256 KiB (except the last).
const CHUNK_GRANULE: usize = 256 * 1024;

/// Why a JSON API upload failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum GcsError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("could not get an access token: {0}")]
    Token(#[source] object_store::Error),
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl GcsError {
    pub(super) fn into_object_store(self) -> object_store::Error {
        match self {
            GcsError::Status {
                status: StatusCode::NOT_FOUND,
                body,
            } => object_store::Error::NotFound {
                path: String::new(),
                source: body.into(),
            },
            GcsError::Token(e) => e,
            other => object_store::Error::Generic {
                store: "GCS",
                source: Box::new(other),
            },
        }
    }
}

/// Digests of the bytes sent, as GCS spells them (base64 of the big-endian bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Digests {
    pub md5: String,
    pub crc32c: String,
}

struct Hasher {
    md5: Md5,
    crc: crc_fast::Digest,
}

impl Hasher {
    fn new() -> Self {
        Hasher {
            md5: Md5::new(),
            crc: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi),
        }
    }
    fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.crc.update(data);
    }
    fn finish(self) -> Digests {
        let crc = self.crc.finalize() as u32;
        Digests {
            md5: BASE64.encode(self.md5.finalize()),
            crc32c: BASE64.encode(crc.to_be_bytes()),
        }
    }
}

/// What the server says it stored (the object resource of the upload's answer).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredObject {
    #[serde(default)]
    md5_hash: Option<String>,
    #[serde(default)]
    crc32c: Option<String>,
    #[serde(default)]
    size: Option<String>,
}

/// The JSON API upload endpoint of one bucket.
pub(super) struct GcsUploads {
    http: reqwest::Client,
    /// `{base}/upload/storage/v1/b/{bucket}/o`.
    endpoint: Url,
    /// The target's prefix, without slashes at the ends.
    prefix: Option<String>,
    credentials: GcpCredentialProvider,
    timeouts: super::Timeouts,
}

impl std::fmt::Debug for GcsUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsUploads")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

/// How an upload ended.
pub(super) enum Outcome {
    Stored,
    /// The stream failed or did not have the expected size or SHA-256; nothing was committed.
    Refused(StorageError),
    /// The server stored other bytes than those sent (what differs); the caller deletes it.
    Mismatch(String),
}

/// Why streaming the chunks of a resumable upload stopped early.
enum Stop {
    Refused(StorageError),
    Failed(GcsError),
}

/// Checks run on the whole body before the object is committed (size, expected SHA-256).
pub(super) type Precommit<'a> = dyn FnOnce(u64) -> Option<StorageError> + Send + 'a;

impl GcsUploads {
    /// `base`: the JSON API base URL (`https://storage.googleapis.com` or an emulator's).
    pub(super) fn new(
        base: &str,
        bucket: &str,
        prefix: Option<&str>,
        credentials: GcpCredentialProvider,
        timeouts: super::Timeouts,
    ) -> Result<Self, String> {
        let mut endpoint = Url::parse(base.trim_end_matches('/'))
            .map_err(|e| format!("GCS endpoint {base:?}: {e}"))?;
        endpoint
            .path_segments_mut()
            .map_err(|()| format!("GCS endpoint {base:?} cannot be a base URL"))?
            .pop_if_empty()
            .extend(["upload", "storage", "v1", "b", bucket, "o"]);
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            // A resumable chunk is answered with 308 "Resume Incomplete", not a redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(GcsUploads {
            http,
            endpoint,
            prefix: prefix.map(str::to_owned),
            credentials,
            timeouts,
        })
    }

    fn upload_url(&self, upload_type: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("uploadType", upload_type);
        url
    }

    fn object_name(&self, key: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{key}"),
            None => key.to_owned(),
        }
    }

    async fn authorized(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, GcsError> {
        let token = self
            .credentials
            .get_credential()
            .await
            .map_err(GcsError::Token)?;
        // Emulators run with `disable_oauth`, whose token is empty: send no header then.
        Ok(if token.bearer.is_empty() {
            req
        } else {
            req.bearer_auth(&token.bearer)
        })
    }

    /// Uploads the stream under `key`: in one request when it has at most `chunk_size`
    /// bytes, else in resumable chunks of `chunk_size` (rounded up to 256 KiB). `precommit`
    /// sees the total size once every byte was read and can refuse the commit.
    pub(super) async fn upload<S>(
        &self,
        key: &str,
        chunks: S,
        len: u64,
        chunk_size: usize,
        precommit: Box<Precommit<'_>>,
    ) -> Result<Outcome, GcsError>
    where
        S: Stream<Item = Result<Bytes, StorageError>> + Send,
    {
        let name = self.object_name(key);
        let chunk_size = chunk_size.div_ceil(CHUNK_GRANULE).max(1) * CHUNK_GRANULE;
        let mut chunks = std::pin::pin!(chunks);
        let mut hasher = Hasher::new();
        if len <= chunk_size as u64 {
            let mut body = BytesMut::with_capacity(len as usize);
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(c) => body.extend_from_slice(&c),
                    Err(e) => return Ok(Outcome::Refused(e)),
                }
            }
            if let Some(e) = precommit(body.len() as u64) {
                return Ok(Outcome::Refused(e));
            }
            hasher.update(&body);
            let sent = hasher.finish();
            let stored = self.multipart(&name, body.freeze(), &sent).await?;
            return self.compare(&name, &sent, stored).await;
        }

        let session = self.start_resumable(&name).await?;
        let mut buf = BytesMut::with_capacity(chunk_size + super::READ_CHUNK);
        let mut offset = 0u64;
        let streamed: Result<(), Stop> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(Stop::Refused)?;
                buf.extend_from_slice(&chunk);
                // Send a full chunk only once more bytes follow it: the last chunk must be
                // held back until the whole body has passed the precommit checks.
                while buf.len() > chunk_size {
                    let part = buf.split_to(chunk_size).freeze();
                    hasher.update(&part);
                    self.put_chunk(&session, offset, part, None)
                        .await
                        .map_err(Stop::Failed)?;
                    offset += chunk_size as u64;
                }
            }
            Ok(())
        }
        .await;
        let stop = match streamed {
            Ok(()) => precommit(offset + buf.len() as u64).map(Stop::Refused),
            Err(stop) => Some(stop),
        };
        if let Some(stop) = stop {
            self.cancel(&session).await;
            return match stop {
                Stop::Refused(e) => Ok(Outcome::Refused(e)),
                Stop::Failed(e) => Err(e),
            };
        }
        hasher.update(&buf);
        let sent = hasher.finish();
        let total = offset + buf.len() as u64;
        let stored = self.put_chunk(&session, offset, buf.freeze(), Some((total, &sent)));
        match stored.await {
            Ok(Some(stored)) => self.compare(&name, &sent, stored).await,
            Ok(None) => Err(GcsError::Protocol(
                "the final chunk was answered as if more were expected".into(),
            )),
            Err(e) => {
                self.cancel(&session).await;
                Err(e)
            }
        }
    }

    /// Compares the server's digests of the stored object with those of the bytes sent.
    async fn compare(
        &self,
        name: &str,
        sent: &Digests,
        stored: StoredObject,
    ) -> Result<Outcome, GcsError> {
        let mut problems = Vec::new();
        match &stored.md5_hash {
            Some(md5) if *md5 != sent.md5 => {
                problems.push(format!("MD5 {md5}, {} was sent", sent.md5))
            }
            _ => {}
        }
        match &stored.crc32c {
            Some(crc) if *crc != sent.crc32c => {
                problems.push(format!("CRC32C {crc}, {} was sent", sent.crc32c))
            }
            None if stored.md5_hash.is_none() => {
                problems.push("the server reported no digest of the stored object".into())
            }
            _ => {}
        }
        if problems.is_empty() {
            return Ok(Outcome::Stored);
        }
        tracing::warn!(object = name, size = ?stored.size, problems = ?problems,
            "GCS stored other bytes than were sent");
        Ok(Outcome::Mismatch(format!(
            "stored object has {}",
            problems.join("; ")
        )))
    }

    /// Sends the request `build` makes, again after failures a later attempt may not meet
    /// (connection errors, timeouts, 408, 429, 5xx) within the target's retry bounds. Only
    /// for requests that are safe to repeat: a whole object, or opening a session. A chunk
    /// of a resumable upload is not retried: the whole upload fails and is retried by its
    /// caller (the recorder's commit loop, the next archive run).
    async fn send_retrying(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GcsError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let res = self.authorized(build()).await?.send().await;
            let transient = match &res {
                Ok(r) => matches!(r.status().as_u16(), 408 | 429 | 500..=599),
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if !transient
                || attempt >= self.timeouts.max_retries
                || started.elapsed() + delay > self.timeouts.retry_budget
            {
                return Ok(res?);
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// One-request upload: a `multipart/related` body of the JSON metadata, which declares
    /// the digests the server must find, and the media.
    async fn multipart(
        &self,
        name: &str,
        data: Bytes,
        sent: &Digests,
    ) -> Result<StoredObject, GcsError> {
        let metadata = serde_json::json!({
            "name": name,
            "md5Hash": sent.md5,
            "crc32c": sent.crc32c,
        });
        // The media part ends at the first delimiter, so the boundary must not occur in the
        // data: 128 random bits make that a 2^-128 chance per position.
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| GcsError::Protocol(format!("random: {e}")))?;
        let boundary = format!("callvault-{}", hex::encode(random));
        let head = format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let mut body = BytesMut::with_capacity(head.len() + data.len() + tail.len());
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(tail.as_bytes());
        let body = body.freeze();
        let content_type = format!("multipart/related; boundary={boundary}");
        let res = self
            .send_retrying(|| {
                self.http
                    .post(self.upload_url("multipart"))
                    .header(header::CONTENT_TYPE, &content_type)
                    .body(body.clone())
            })
            .await?;
        parse_object(check(res).await?).await
    }

    /// Opens a resumable upload session; returns its URL.
    async fn start_resumable(&self, name: &str) -> Result<Url, GcsError> {
        let metadata = serde_json::json!({ "name": name }).to_string();
        let res = self
            .send_retrying(|| {
                self.http
                    .post(self.upload_url("resumable"))
                    .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
                    .body(metadata.clone())
            })
            .await?;
        let res = check(res).await?;
        let location = res
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| GcsError::Protocol("resumable upload without a Location".into()))?;
        self.endpoint
            .join(location)
            .map_err(|e| GcsError::Protocol(format!("session URL {location:?}: {e}")))
    }

    /// Sends one chunk at `offset`. The final chunk carries the total size and the digests
    /// (`X-Goog-Hash`) and is answered with the stored object; others with 308.
    async fn put_chunk(
        &self,
        session: &Url,
        offset: u64,
        data: Bytes,
        last: Option<(u64, &Digests)>,
    ) -> Result<Option<StoredObject>, GcsError> {
        let end = offset + data.len() as u64;
        let range = match (last, data.is_empty()) {
            (Some((total, _)), true) => format!("bytes */{total}"),
            (Some((total, _)), false) => format!("bytes {offset}-{}/{total}", end - 1),
            (None, _) => format!("bytes {offset}-{}/*", end - 1),
        };
        let mut req = self
            .http
            .put(session.clone())
            .header(header::CONTENT_RANGE, range)
            .body(data);
        if let Some((_, sent)) = last {
            req = req.header(
                "X-Goog-Hash",
                format!("crc32c={},md5={}", sent.crc32c, sent.md5),
            );
        }
        let res = self.authorized(req).await?.send().await?;
        if res.status() == StatusCode::PERMANENT_REDIRECT {
            if last.is_some() {
                return Ok(None);
            }
            // The server says how much it holds; a short count means a lost chunk.
            let held = res
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.rsplit('-').next())
                .and_then(|n| n.trim().parse::<u64>().ok());
            return match held {
                Some(h) if h + 1 < end => Err(GcsError::Protocol(format!(
                    "server holds {} bytes after a chunk ending at {end}",
                    h + 1
                ))),
                _ => Ok(None),
            };
        }
        let res = check(res).await?;
        if last.is_none() {
            return Err(GcsError::Protocol(format!(
                "chunk ending at {end} was answered {} instead of 308",
                res.status()
            )));
        }
        parse_object(res).await.map(Some)
    }

    /// Cancels a resumable session so nothing is committed; failure is only logged, as an
    /// unfinished session stores nothing and expires on its own.
    async fn cancel(&self, session: &Url) {
        let res = match self.authorized(self.http.delete(session.clone())).await {
            Ok(req) => req.send().await.map_err(GcsError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "could not cancel a resumable GCS upload");
        }
    }
}

async fn check(res: reqwest::Response) -> Result<reqwest::Response, GcsError> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let body = res.text().await.unwrap_or_default();
    Err(GcsError::Status {
        status,
        body: body.chars().take(500).collect(),
    })
}

async fn parse_object(res: reqwest::Response) -> Result<StoredObject, GcsError> {
    let body = res.bytes().await?;
    serde_json::from_slice(&body)
        .map_err(|e| GcsError::Protocol(format!("object resource does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_spelled_as_gcs_reports_them() {
        // CRC32C("123456789") is the algorithm's published check value, 0xE3069283.
        let mut h = Hasher::new();
        h.update(b"12345");
        h.update(b"6789");
        let d = h.finish();
        assert_eq!(d.crc32c, BASE64.encode(0xE306_9283u32.to_be_bytes()));
        assert_eq!(d.md5, "JfnnlDI7RTiF9RgfG2JNCw==");
    }
}
