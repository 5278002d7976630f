//! The HTTP API under `/api/v1`, plus `/healthz` and `/readyz`; and the operations router
//! (`/metrics`, `/healthz`, `/readyz`) served on its own address.
//!
//! Every authenticated handler takes a [`Caller`]: the extractor checks the session (idle and
//! absolute timeouts), the CSRF token on unsafe methods, must-change-password, read-only
//! impersonation (audited per request), and resolves the user's grants. Every decision about
//! a call goes through [`Caller::recording`]; about administration, [`Caller::require`].
//!
//! JSON field names are snake_case throughout. A call outside the caller's scope answers 404
//! (its existence is not disclosed); a visible call with an action not granted answers 403.

mod admin;
mod audit;
mod auth;
pub(crate) mod extract;
mod recordings;
mod system;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use callvault_store::db::{Audience, NewAuditEntry, Recording, SessionLookup, User, now_micros};
use serde_json::json;
use uuid::Uuid;

use crate::AppState;
use crate::access::{Action, AdminPermission, Denial, Grants, resolve};
use crate::auth::{
    CSRF_HEADER, MAX_SIGN_IN_BODY, SESSION_COOKIE, cookie_value, csrf_token, parse_session_cookie,
    secret_eq, token_hash,
};
use crate::error::{ApiError, ApiResult, Code};

pub use audit::checkpoint_audit_chains;
pub(crate) use auth::failed_sign_in;
pub use auth::sign_in;

type St = State<Arc<AppState>>;

/// The whole application router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route(
            "/auth/login",
            post(auth::login).layer(DefaultBodyLimit::max(MAX_SIGN_IN_BODY)),
        )
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/auth/providers", get(crate::oidc::providers))
        .route("/auth/oidc/login", get(crate::oidc::login))
        .route("/auth/oidc/callback", get(crate::oidc::callback))
        .route(
            "/auth/password",
            post(auth::change_password).layer(DefaultBodyLimit::max(MAX_SIGN_IN_BODY)),
        )
        .route(
            "/auth/password-reset",
            post(auth::redeem_reset).layer(DefaultBodyLimit::max(MAX_SIGN_IN_BODY)),
        )
        .route("/auth/impersonation/stop", post(admin::stop_impersonation))
        .route("/sessions", get(auth::my_sessions))
        .route("/sessions/{id}", delete(auth::terminate_session))
        .route("/admin/sessions", get(auth::all_sessions))
        .route("/users", get(admin::list_users).post(admin::create_user))
        .route("/users/{id}", delete(admin::delete_user))
        .route("/users/{id}/password-reset", post(admin::reset_password))
        .route("/users/{id}/legal-hold", put(admin::set_legal_hold))
        .route("/users/{id}/impersonate", post(admin::start_impersonation))
        .route("/tags", get(admin::list_tags).post(admin::create_tag))
        .route("/tags/{id}", delete(admin::delete_tag))
        .route(
            "/saved-queries",
            get(admin::list_saved_queries).post(admin::save_query),
        )
        .route("/saved-queries/{id}", delete(admin::delete_saved_query))
        .route("/recordings", get(recordings::list))
        // A search is a read sent as POST (its query can be long): allowed while impersonating.
        .route(
            "/recordings/search",
            post(recordings::search).layer(axum::Extension(ReadOnlyPost)),
        )
        .route("/recordings/tags", put(recordings::set_tags))
        .route("/recordings/delete", post(recordings::request_delete))
        .route("/recordings/zip", post(recordings::zip))
        .route("/recordings/export", post(recordings::export))
        .route("/recordings/{id}", get(recordings::detail))
        .route("/recordings/{id}/media", get(recordings::media))
        .route("/recordings/{id}/download", get(recordings::download))
        .route("/recordings/{id}/integrity", get(recordings::integrity))
        .route(
            "/recordings/{id}/notes",
            get(recordings::notes).post(recordings::add_note),
        )
        .route("/recordings/{id}/assign", post(recordings::assign))
        .route("/notes/{id}", delete(recordings::delete_note))
        .route("/audit", get(audit::list))
        .route("/audit/export.csv", get(audit::export_csv))
        .route("/audit/verify", get(audit::verify))
        .route("/groups", get(system::groups))
        .route(
            "/resources/recording-profiles",
            get(system::recording_profiles),
        )
        .route("/resources/access-profiles", get(system::access_profiles))
        .route("/resources/storage-targets", get(system::storage_targets))
        .route(
            "/resources/storage-targets/{name}/test",
            post(system::test_storage_target),
        )
        .route("/resources/connectors", get(system::connectors))
        .route("/resources/speech-jobs", get(system::speech_jobs))
        .route(
            "/resources/speech-jobs/{name}/run",
            post(system::run_speech_job),
        )
        .route("/alarms", get(system::alarms))
        .route("/activity", get(system::activity))
        .route("/active-calls", get(system::active_calls))
        .route("/active-calls/mine", get(system::my_active_calls))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api/v1", api)
        .nest("/scim/v2", crate::scim::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// The operations router: `/metrics` beside the probes, for an address only the cluster's
/// monitoring reaches (never the users' listener).
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Writes the summaries of failed sign-ins whose window ended, until the portal is dropped.
pub(crate) async fn write_failed_sign_in_summaries(state: std::sync::Weak<AppState>) {
    let period = state.upgrade().map_or(Duration::from_secs(1), |s| {
        (s.failed_sign_ins.window() / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    });
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        auth::write_summaries(&state).await;
    }
}

/// A JSON body, or a named refusal: 413 when it exceeds the route's limit, else 400.
fn json_body<T>(body: Result<Json<T>, JsonRejection>, limit: usize) -> ApiResult<T> {
    body.map(|Json(v)| v)
        .map_err(|e| extract::json_rejection(&e, Some(limit)))
}

async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such API endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        "this endpoint does not take that method",
    )
}

async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

async fn readyz(State(state): St) -> Response {
    if !state.access.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "access profiles not loaded yet",
        )
            .into_response();
    }
    match state.db.list_groups(&state.config.default_tenant).await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn metrics(State(state): St) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn count_requests(State(state): St, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    state
        .metrics
        .request(&method, &route, resp.status().as_u16());
    resp
}

/// The signed-in caller of a request, with their grants resolved.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    /// Hash of the session token (the session's id in the API).
    pub session_id: String,
    /// The user whose view and permissions apply (the impersonated user while impersonating).
    pub user: User,
    /// The signed-in user (the admin while impersonating).
    pub actor: User,
    pub impersonating: bool,
    pub grants: Grants,
}

/// Marks a POST route that changes nothing, so read-only impersonation may use it.
#[derive(Debug, Clone, Copy)]
struct ReadOnlyPost;

/// A caller for the few endpoints that must work while a password change is due or during
/// impersonation (who am I, sign out, change password, stop impersonating).
#[derive(Debug, Clone)]
pub struct SessionCaller(pub Caller);

fn is_unsafe(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn authenticate(state: &AppState, parts: &Parts, strict: bool) -> ApiResult<Caller> {
    let cookies = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let (tenant, token) = cookie_value(&cookies, SESSION_COOKIE)
        .and_then(parse_session_cookie)
        .ok_or_else(|| ApiError::new(Code::Unauthenticated, "sign in first"))?;
    let hash = token_hash(token);
    let idle = i64::try_from(state.config.session_idle.as_micros()).unwrap_or(i64::MAX);
    let session = match state
        .db
        .use_session(tenant, &hash, now_micros(), idle)
        .await?
    {
        SessionLookup::Live(s) => s,
        SessionLookup::Expired => {
            return Err(ApiError::new(
                Code::SessionExpired,
                "the session ended (idle or absolute timeout); sign in again",
            ));
        }
        SessionLookup::Missing => {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
        }
    };
    let actor = state
        .db
        .user(tenant, session.user_id)
        .await?
        .ok_or_else(|| ApiError::new(Code::Unauthenticated, "sign in first"))?;
    if actor.disabled {
        state.db.revoke_session(tenant, &hash).await?;
        return Err(ApiError::new(
            Code::AccountDisabled,
            "the account is disabled",
        ));
    }
    if is_unsafe(&parts.method) {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !secret_eq(sent, &csrf_token(token)) {
            return Err(ApiError::new(
                Code::CsrfFailed,
                format!("missing or wrong {CSRF_HEADER} header"),
            ));
        }
    }
    if strict && actor.must_change_password {
        return Err(ApiError::new(
            Code::PasswordChangeRequired,
            "change your password first (POST /api/v1/auth/password)",
        ));
    }
    let target = match session.impersonating {
        Some(id) => state.db.user(tenant, id).await?,
        None => None,
    };
    let impersonating = target.is_some();
    let changes = is_unsafe(&parts.method) && parts.extensions.get::<ReadOnlyPost>().is_none();
    if strict && impersonating && changes {
        return Err(ApiError::new(
            Code::ImpersonationReadOnly,
            "impersonation is read-only; stop impersonating to make changes",
        ));
    }
    let user = target.unwrap_or_else(|| actor.clone());
    let mut grants = grants_of(state, tenant, &user).await?;
    if impersonating {
        // The other user's view, never more than the admin's own rights.
        grants.impersonator = Some(Box::new(grants_of(state, tenant, &actor).await?));
    }
    let caller = Caller {
        tenant: tenant.to_owned(),
        session_id: hash,
        user,
        actor,
        impersonating,
        grants,
    };
    if impersonating {
        caller
            .audit(
                state,
                "impersonation.request",
                "request",
                parts.uri.path(),
                json!({ "method": parts.method.as_str(), "path": parts.uri.path() }),
            )
            .await?;
    }
    Ok(caller)
}

/// A user's grants as their AccessProfiles give them now.
pub(crate) async fn grants_of(state: &AppState, tenant: &str, user: &User) -> ApiResult<Grants> {
    Ok(resolve(
        user,
        &state.db.user_groups(tenant, user.id).await?,
        &state.db.list_groups(tenant).await?,
        &state.access.profiles(tenant),
    ))
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> ApiResult<Self> {
        authenticate(state, parts, true).await
    }
}

impl FromRequestParts<Arc<AppState>> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> ApiResult<Self> {
        authenticate(state, parts, false).await.map(SessionCaller)
    }
}

/// What an endpoint needs on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Only to see it.
    View,
    Do(Action),
    /// An action on the call's details only (no audio): the key grant is not needed.
    Meta(Action),
}

impl Caller {
    /// Appends an audit entry in the caller's name (and the impersonating admin's).
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        item_type: &str,
        item_id: impl Into<String>,
        details: serde_json::Value,
    ) -> ApiResult<()> {
        let mut e = NewAuditEntry::new(&self.user.username, action)
            .item(item_type, item_id)
            .details(details);
        if self.impersonating {
            e.impersonator = Some(self.actor.username.clone());
        }
        state.db.append_audit(&self.tenant, &e).await?;
        Ok(())
    }

    /// An admin permission, or 403.
    pub fn require(&self, perm: AdminPermission) -> ApiResult<()> {
        if self.grants.has_admin(perm) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "your access profiles do not grant the admin permission {}",
                serde_json::to_string(&perm).unwrap_or_default()
            )))
        }
    }

    /// Any one of `perms`, or 403 naming them.
    pub fn require_any(&self, perms: &[AdminPermission]) -> ApiResult<()> {
        match perms.iter().find(|p| self.grants.has_admin(**p)) {
            Some(_) => Ok(()),
            None => Err(ApiError::forbidden(format!(
                "your access profiles grant none of the admin permissions {}",
                serde_json::to_string(perms).unwrap_or_default()
            ))),
        }
    }

    /// Loads a call and checks `need` on it: the one gate for every call endpoint.
    pub async fn recording(&self, state: &AppState, id: Uuid, need: Need) -> ApiResult<Recording> {
        Ok(self.recording_and_audience(state, id, need).await?.0)
    }

    /// [`Self::recording`] with who else the call reaches (its groups, a meeting's attendees),
    /// which the check read. A caller who reaches a meeting only by having attended part of
    /// it (F-40) may play that part ([`Grants::attended_part`]) and cannot download the
    /// meeting: the file would hold what they did not attend.
    pub async fn recording_and_audience(
        &self,
        state: &AppState,
        id: Uuid,
        need: Need,
    ) -> ApiResult<(Recording, Audience)> {
        let rec = state
            .db
            .recording(&self.tenant, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("recording {id}")))?;
        let audience = state.db.recording_audience(&self.tenant, id).await?;
        let denial = match need {
            Need::View => (!self.grants.can_see(&rec, &audience)).then_some(Denial::NotVisible),
            Need::Do(action) => self.grants.check(action, &rec, &audience).err(),
            Need::Meta(action) => self
                .grants
                .check(action, &rec, &audience)
                .err()
                .filter(|d| *d != Denial::Key),
        };
        match (denial, need) {
            (None, Need::Do(Action::Download))
                if self
                    .grants
                    .attended_part(Action::Download, rec.owner_user_id, &audience)
                    .is_some() =>
            {
                Err(ApiError::forbidden(format!(
                    "recording {id} is a meeting you attended part of: you may play your part; \
                     only those who may hear the whole meeting may download it"
                )))
            }
            (None, _) => Ok((rec, audience)),
            (Some(Denial::NotVisible), _) => Err(ApiError::not_found(format!("recording {id}"))),
            (Some(Denial::Action), Need::Do(a) | Need::Meta(a)) => {
                Err(ApiError::forbidden(format!(
                    "your access profiles do not allow {} on recording {id}",
                    serde_json::to_string(&a).unwrap_or_default()
                )))
            }
            (Some(Denial::Key), _) if self.impersonating => Err(ApiError::new(
                Code::KeyNotGranted,
                format!(
                    "the encryption key of recording {id} is not granted to both you and the \
                     user you impersonate: impersonation never widens audio rights"
                ),
            )),
            (Some(Denial::Key), _) => Err(ApiError::new(
                Code::KeyNotGranted,
                format!(
                    "the encryption key of recording {id} is not granted to you (AccessProfile keys)"
                ),
            )),
            (Some(Denial::Action), Need::View) => Err(ApiError::forbidden("not allowed")),
        }
    }
}
