//! API errors: every failure is JSON `{"code": "...", "message": "..."}` with a stable code.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callvault_store::db::DbError;
use callvault_store::format::FormatError;
use callvault_store::objstore::StorageError;
use serde::Serialize;

/// The stable error codes of the API (the `code` field). Clients branch on these, never on
/// the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// 400: the request is malformed or a value is out of range.
    InvalidRequest,
    /// 401: no session, or it ended.
    Unauthenticated,
    /// 401: the session ended by its idle or absolute timeout.
    SessionExpired,
    /// 401: wrong username or password.
    InvalidCredentials,
    /// 403: the account is locked after repeated failures.
    AccountLocked,
    /// 403: the account is disabled.
    AccountDisabled,
    /// 403: the password must be changed before anything else.
    PasswordChangeRequired,
    /// 403: the CSRF token is missing or wrong on an unsafe request.
    CsrfFailed,
    /// 403: the caller's AccessProfiles do not allow this.
    Forbidden,
    /// 403: the recording's encryption key is not granted to the caller.
    KeyNotGranted,
    /// 403: an impersonating admin tried to change something.
    ImpersonationReadOnly,
    /// 404: no such item, or not visible to the caller.
    NotFound,
    /// 405: the endpoint exists but not with this method.
    MethodNotAllowed,
    /// 409: the change conflicts with the current state.
    Conflict,
    /// 409: a user or call under legal hold cannot be deleted.
    LegalHold,
    /// 410: the recording's media is gone (deleted or expired, no archive copy).
    MediaGone,
    /// 413: more items than one request may carry.
    TooManyItems,
    /// 413: the request body is larger than the endpoint accepts.
    PayloadTooLarge,
    /// 416: the Range header does not fit the recording.
    RangeNotSatisfiable,
    /// 429: too many sign-in attempts; retry later.
    TooManyAttempts,
    /// 431: a request header, or all of them together, is too large (the message names it).
    HeadersTooLarge,
    /// 500: an unexpected failure (details in the portal's log, never in the response).
    Internal,
    /// 503: a dependency (database, storage, key ring) is unavailable.
    Unavailable,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::Unauthenticated | Code::SessionExpired | Code::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Code::AccountLocked
            | Code::AccountDisabled
            | Code::PasswordChangeRequired
            | Code::CsrfFailed
            | Code::Forbidden
            | Code::KeyNotGranted
            | Code::ImpersonationReadOnly => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict | Code::LegalHold => StatusCode::CONFLICT,
            Code::MediaGone => StatusCode::GONE,
            Code::TooManyItems | Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Code::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Every code, for the OpenAPI document.
    pub const ALL: &'static [Code] = &[
        Code::InvalidRequest,
        Code::Unauthenticated,
        Code::SessionExpired,
        Code::InvalidCredentials,
        Code::AccountLocked,
        Code::AccountDisabled,
        Code::PasswordChangeRequired,
        Code::CsrfFailed,
        Code::Forbidden,
        Code::KeyNotGranted,
        Code::ImpersonationReadOnly,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Conflict,
        Code::LegalHold,
        Code::MediaGone,
        Code::TooManyItems,
        Code::PayloadTooLarge,
        Code::RangeNotSatisfiable,
        Code::TooManyAttempts,
        Code::HeadersTooLarge,
        Code::Internal,
        Code::Unavailable,
    ];

    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// An API error: a code, a message for people, and optional response headers.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds, for `Retry-After` (throttling).
    pub retry_after: Option<u64>,
    /// Plaintext length, for `Content-Range: bytes */len` on 416.
    pub range_len: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            range_len: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(Code::NotFound, format!("{what} not found"))
    }

    /// An unexpected failure: logged in full, answered without details.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            Code::Internal,
            format!("{context} failed; see the portal log"),
        )
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: Code,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.code.status(),
            Json(Body {
                code: self.code,
                message: &self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let Some(len) = self.range_len
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound { kind, id, .. } => ApiError::not_found(format!("{kind} {id}")),
            DbError::Conflict(m) if m.contains("legal hold") => ApiError::new(Code::LegalHold, m),
            DbError::Conflict(m) => ApiError::new(Code::Conflict, m),
            e @ (DbError::Invalid { .. } | DbError::BadCursor) => ApiError::invalid(e.to_string()),
            DbError::Sql(sqlx_err) => {
                tracing::error!(error = %sqlx_err, "database");
                ApiError::new(Code::Unavailable, "the database is unavailable or failed")
            }
            other => ApiError::internal("database", other),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage");
        ApiError::new(Code::Unavailable, "recording storage is unavailable")
    }
}

impl From<FormatError> for ApiError {
    fn from(e: FormatError) -> Self {
        if e.is_tamper() {
            tracing::error!(error = %e, "a recording failed authentication");
            ApiError::new(
                Code::Internal,
                format!("the recording failed authentication: {e}"),
            )
        } else {
            ApiError::internal("decrypting the recording", e)
        }
    }
}
