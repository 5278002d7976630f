//! Sign-in, sign-out, password change and reset, and web sessions.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callvault_store::db::{LiveSession, NewAuditEntry, User, UserSource, now_micros};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::extract::Path;
use super::{Caller, SessionCaller, St, json_body};
use crate::AppState;
use crate::access::AdminPermission;
use crate::auth::{
    Busy, Failure, MAX_PASSWORD, MAX_SIGN_IN_BODY, MAX_USERNAME, Refusal, burn_password_check,
    clear_cookies, csrf_token, hash_password, new_token, password_problem, session_cookies,
    token_hash, verify_password,
};
use crate::error::{ApiError, ApiResult, Code};
use crate::metrics::Metrics;
use crate::net::ClientAddr;

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    #[serde(default)]
    pub tenant: Option<String>,
    pub username: String,
    pub password: String,
}

/// A new session, as handed to the browser.
#[derive(Debug)]
pub struct SignedIn {
    pub set_cookies: [String; 2],
    pub csrf_token: String,
    pub session: LiveSession,
}

/// Starts a session for an authenticated user and audits the sign-in. Every sign-in method
/// (password here; single sign-on later) ends here.
pub async fn sign_in(
    state: &AppState,
    tenant: &str,
    user: &User,
    method: &str,
    client: ClientAddr,
    headers: &HeaderMap,
) -> ApiResult<SignedIn> {
    if user.disabled {
        return Err(ApiError::new(
            Code::AccountDisabled,
            "the account is disabled",
        ));
    }
    let token = new_token();
    let hash = token_hash(&token);
    let now = now_micros();
    let absolute = i64::try_from(state.config.session_absolute.as_micros()).unwrap_or(i64::MAX);
    let ip = client.to_string();
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(512)
        .collect::<String>();
    let s = state
        .db
        .create_session(
            tenant,
            &hash,
            user.id,
            now.saturating_add(absolute),
            &ip,
            &ua,
        )
        .await?;
    state.db.record_login_success(tenant, user.id).await?;
    state
        .db
        .append_audit(
            tenant,
            &NewAuditEntry::new(&user.username, "login")
                .item("user", user.id.to_string())
                .details(json!({ "method": method, "ip": ip, "user_agent": ua })),
        )
        .await?;
    Metrics::add(&state.metrics.logins_ok, 1);
    Ok(SignedIn {
        set_cookies: session_cookies(
            tenant,
            &token,
            state.config.secure_cookies,
            state.config.session_absolute,
        ),
        csrf_token: csrf_token(&token),
        session: LiveSession {
            id_hash: s.id_hash,
            user_id: s.user_id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            ip: s.ip,
            user_agent: s.user_agent,
            impersonating: None,
        },
    })
}

/// Counts a failed sign-in and audits it, aggregated per source and window
/// ([`crate::auth::FailedSignIns`]).
pub(crate) async fn failed_sign_in(state: &AppState, f: &Failure<'_>) -> ApiResult<()> {
    Metrics::add(&state.metrics.logins_failed, 1);
    if let Some((tenant, entry)) = state
        .failed_sign_ins
        .record(f, Instant::now(), now_micros())
    {
        state.db.append_audit(&tenant, &entry).await?;
    }
    Ok(())
}

/// Writes the failed sign-in summaries whose window ended.
pub(crate) async fn write_summaries(state: &AppState) {
    for (tenant, entry) in state.failed_sign_ins.due(Instant::now()) {
        if let Err(e) = state.db.append_audit(&tenant, &entry).await {
            tracing::error!(error = %e, %tenant, "writing a summary of failed sign-ins to the audit trail");
        }
    }
}

/// A throttled attempt: audited like a failure, answered 429 (or 403 for a source paused on
/// the account) with Retry-After.
async fn throttled(state: &AppState, f: &Failure<'_>, r: Refusal) -> ApiError {
    Metrics::add(&state.metrics.logins_throttled, 1);
    if let Err(e) = failed_sign_in(state, f).await {
        return e;
    }
    let wait = r.wait();
    let mut e = match r {
        Refusal::Paused(_) => ApiError::new(
            Code::AccountLocked,
            format!(
                "sign-ins to this account from your address are paused after repeated failures; \
                 retry in {wait} s, sign in from where you usually do, or ask an admin to reset \
                 the password"
            ),
        ),
        Refusal::Source(_) | Refusal::Account(_) => ApiError::new(
            Code::TooManyAttempts,
            format!("too many sign-in attempts; retry in {wait} s"),
        ),
    };
    e.retry_after = Some(wait);
    e
}

/// Runs a password hash on the bounded hashing pool; 503 with Retry-After when it is full.
async fn hashing<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    state.hasher.run(f).await.map_err(|Busy| {
        Metrics::add(&state.metrics.hashing_busy, 1);
        let mut e = ApiError::new(
            Code::Unavailable,
            "the portal is busy checking passwords; retry in a moment",
        );
        e.retry_after = Some(1);
        e
    })
}

/// Refuses a field longer than `max` bytes, naming it (before it is hashed or audited).
fn bounded(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(ApiError::invalid(format!(
            "{field} has {} bytes; at most {max} are accepted",
            value.len()
        )));
    }
    Ok(())
}

/// The tenant a sign-in names (a namespace name), else the default one.
fn sign_in_tenant(state: &AppState, tenant: Option<&str>) -> ApiResult<String> {
    match tenant.filter(|t| !t.is_empty()) {
        None => Ok(state.config.default_tenant.clone()),
        Some(t)
            if t.len() <= 63
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !t.starts_with('-')
                && !t.ends_with('-') =>
        {
            Ok(t.to_owned())
        }
        Some(_) => Err(ApiError::invalid(
            "tenant must be a namespace name (at most 63 lowercase letters, digits and '-')",
        )),
    }
}

fn with_cookies(status: StatusCode, cookies: &[String], body: serde_json::Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

pub async fn login(
    State(state): St,
    client: ClientAddr,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let req = json_body(body, MAX_SIGN_IN_BODY)?;
    bounded("username", &req.username, MAX_USERNAME)?;
    bounded("password", &req.password, MAX_PASSWORD)?;
    let tenant = sign_in_tenant(&state, req.tenant.as_deref())?;
    let (source, ip) = (client.source(), client.to_string());
    let fail = |reason| Failure {
        tenant: &tenant,
        source: &source,
        ip: &ip,
        username: &req.username,
        reason,
        method: "password",
    };
    if let Err(r) = state.throttle.source_check(&source, Instant::now()) {
        return Err(throttled(&state, &fail(r.reason()), r).await);
    }
    let user = state.db.user_by_username(&tenant, &req.username).await?;
    let Some(user) = user.filter(|u| u.source == UserSource::Local && u.password_hash.is_some())
    else {
        let password = req.password.clone();
        hashing(&state, move || burn_password_check(&password)).await?;
        state.throttle.source_failure(&source, Instant::now());
        failed_sign_in(&state, &fail("unknown user or no local password")).await?;
        return Err(ApiError::new(
            Code::InvalidCredentials,
            "wrong username or password",
        ));
    };
    let hash = user.password_hash.clone().unwrap_or_default();
    let account = format!("{tenant}/{}", user.id);
    let credential = token_hash(&hash);
    if let Err(r) = state
        .throttle
        .account_attempt(&account, &credential, &source, Instant::now())
    {
        return Err(throttled(&state, &fail(r.reason()), r).await);
    }
    let password = req.password.clone();
    if !hashing(&state, move || verify_password(&hash, &password)).await? {
        state.throttle.source_failure(&source, Instant::now());
        let paused = state
            .throttle
            .failure(&account, &credential, &source, Instant::now());
        let reason = if paused {
            "wrong password; this source is paused on the account"
        } else {
            "wrong password"
        };
        failed_sign_in(&state, &fail(reason)).await?;
        return Err(ApiError::new(
            Code::InvalidCredentials,
            "wrong username or password",
        ));
    }
    if user.disabled {
        failed_sign_in(&state, &fail("disabled")).await?;
        return Err(ApiError::new(
            Code::AccountDisabled,
            "the account is disabled",
        ));
    }
    state
        .throttle
        .success(&account, &credential, &source, Instant::now());
    let s = sign_in(&state, &tenant, &user, "password", client, &headers).await?;
    Ok(with_cookies(
        StatusCode::OK,
        &s.set_cookies,
        json!({
            "user": user,
            "csrf_token": s.csrf_token,
            "must_change_password": user.must_change_password,
            "expires_at": s.session.expires_at,
        }),
    ))
}

pub async fn logout(State(state): St, SessionCaller(c): SessionCaller) -> ApiResult<Response> {
    state.db.revoke_session(&c.tenant, &c.session_id).await?;
    let mut e =
        NewAuditEntry::new(&c.actor.username, "logout").item("user", c.actor.id.to_string());
    if c.impersonating {
        e = e.details(json!({ "ended_impersonation_of": c.user.username }));
    }
    state.db.append_audit(&c.tenant, &e).await?;
    Ok(with_cookies(
        StatusCode::OK,
        &clear_cookies(state.config.secure_cookies),
        json!({ "signed_out": true }),
    ))
}

/// What the signed-in caller is and may do (the UI's menus and the impersonation banner).
#[derive(Debug, Serialize)]
pub struct Me {
    pub user: User,
    pub actor: User,
    pub impersonating: bool,
    pub profiles: Vec<String>,
    pub scope: String,
    pub actions: Vec<crate::access::Action>,
    pub admin: Vec<AdminPermission>,
    pub keys: Vec<String>,
    pub must_change_password: bool,
}

pub async fn me(SessionCaller(c): SessionCaller) -> Json<Me> {
    let mut actions: Vec<_> = c
        .grants
        .actions
        .iter()
        .filter(|(_, s)| **s != callvault_store::db::AccessScope::None)
        .map(|(a, _)| *a)
        .collect();
    actions.sort();
    let scope = match &c.grants.view {
        callvault_store::db::AccessScope::None => "None",
        callvault_store::db::AccessScope::Own { .. } => "Own",
        callvault_store::db::AccessScope::OwnAndGroups { .. } => "OwnAndGroups",
        callvault_store::db::AccessScope::All => "All",
    };
    Json(Me {
        must_change_password: c.actor.must_change_password,
        user: c.user,
        actor: c.actor,
        impersonating: c.impersonating,
        profiles: c.grants.profiles,
        scope: scope.to_owned(),
        actions,
        admin: c.grants.admin.into_iter().collect(),
        keys: c.grants.keys.into_iter().collect(),
    })
}

#[derive(Debug, Deserialize)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// Sets a new password after checking the current one (also clears must-change-password);
/// every other session of the user ends.
pub async fn change_password(
    State(state): St,
    SessionCaller(c): SessionCaller,
    body: Result<Json<ChangePassword>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let req = json_body(body, MAX_SIGN_IN_BODY)?;
    bounded("current_password", &req.current_password, MAX_PASSWORD)?;
    bounded("new_password", &req.new_password, MAX_PASSWORD)?;
    if c.impersonating {
        return Err(ApiError::new(
            Code::ImpersonationReadOnly,
            "impersonation is read-only",
        ));
    }
    let u = &c.actor;
    let stored = u.password_hash.clone().ok_or_else(|| {
        ApiError::invalid("this account signs in through single sign-on and has no local password")
    })?;
    let current = req.current_password.clone();
    if !hashing(&state, move || verify_password(&stored, &current)).await? {
        return Err(ApiError::new(
            Code::InvalidCredentials,
            "the current password is wrong",
        ));
    }
    set_password(&state, &c.tenant, u, &req.new_password, false).await?;
    // Other sessions end; this one goes on.
    for s in state
        .db
        .live_user_sessions(&c.tenant, u.id, now_micros())
        .await?
    {
        if s.id_hash != c.session_id {
            state.db.revoke_session(&c.tenant, &s.id_hash).await?;
        }
    }
    c.audit(
        &state,
        "password.change",
        "user",
        u.id.to_string(),
        json!({}),
    )
    .await?;
    Ok(Json(json!({ "changed": true })))
}

/// Checks the policy, hashes and stores a password (clearing failures and lockout).
pub(super) async fn set_password(
    state: &AppState,
    tenant: &str,
    user: &User,
    password: &str,
    must_change: bool,
) -> ApiResult<()> {
    bounded("password", password, MAX_PASSWORD)?;
    if let Some(p) = password_problem(&user.username, password) {
        return Err(ApiError::invalid(p));
    }
    let pw = password.to_owned();
    let hash = hashing(state, move || hash_password(&pw))
        .await?
        .map_err(|e| ApiError::internal("password hashing", e))?;
    state
        .db
        .set_password_hash(tenant, user.id, &hash, must_change)
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct RedeemReset {
    #[serde(default)]
    pub tenant: Option<String>,
    pub token: String,
    pub new_password: String,
}

/// Sets a password with a one-time reset token (no session needed); ends every session of
/// the user.
pub async fn redeem_reset(
    State(state): St,
    client: ClientAddr,
    body: Result<Json<RedeemReset>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let req = json_body(body, MAX_SIGN_IN_BODY)?;
    bounded("token", &req.token, 128)?;
    bounded("new_password", &req.new_password, MAX_PASSWORD)?;
    let tenant = sign_in_tenant(&state, req.tenant.as_deref())?;
    let source = client.source();
    if let Err(r) = state.throttle.source_check(&source, Instant::now()) {
        Metrics::add(&state.metrics.logins_throttled, 1);
        let mut e = ApiError::new(
            Code::TooManyAttempts,
            format!("too many attempts; retry in {} s", r.wait()),
        );
        e.retry_after = Some(r.wait());
        return Err(e);
    }
    let Some((user_id, minted_by)) = state
        .db
        .consume_password_reset(&tenant, &token_hash(&req.token), now_micros())
        .await?
    else {
        state.throttle.source_failure(&source, Instant::now());
        return Err(ApiError::new(
            Code::InvalidCredentials,
            "the reset token is unknown, used or expired",
        ));
    };
    let user = state
        .db
        .user(&tenant, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if let Some(why) = stale_reset(&state, &tenant, &user, &minted_by).await? {
        state
            .db
            .append_audit(
                &tenant,
                &NewAuditEntry::new(&user.username, "password.reset.refused")
                    .item("user", user.id.to_string())
                    .details(json!({ "issued_by": minted_by, "reason": why })),
            )
            .await?;
        return Err(ApiError::forbidden(why));
    }
    set_password(&state, &tenant, &user, &req.new_password, false).await?;
    state.db.revoke_user_sessions(&tenant, user.id).await?;
    state
        .db
        .append_audit(
            &tenant,
            &NewAuditEntry::new(&user.username, "password.reset.redeem")
                .item("user", user.id.to_string()),
        )
        .await?;
    Ok(Json(json!({ "changed": true })))
}

/// Why a reset token minted by `minted_by` no longer opens `user`'s account (checked when it is
/// redeemed, since rights change after minting): the account has since got a key grant (such
/// passwords are reset offline), or a right its issuer does not hold now, or the issuer may no
/// longer reset passwords.
async fn stale_reset(
    state: &AppState,
    tenant: &str,
    user: &User,
    minted_by: &str,
) -> ApiResult<Option<String>> {
    let theirs = super::grants_of(state, tenant, user).await?;
    if !theirs.keys.is_empty() {
        return Ok(Some(
            "the account holds a key grant: its password is reset offline by a key holder \
             (`callvault keys reset-password`)"
                .to_owned(),
        ));
    }
    let issuer = match state.db.user_by_username(tenant, minted_by).await? {
        Some(m) if !m.disabled => Some(super::grants_of(state, tenant, &m).await?),
        _ => None,
    };
    let why = match issuer {
        None => format!("{minted_by:?}, who issued it, can no longer sign in"),
        Some(g) if !g.has_admin(AdminPermission::ConfigureSystem) => {
            format!("{minted_by:?}, who issued it, may no longer reset passwords")
        }
        Some(g) => match g.covers(&theirs) {
            Ok(()) => return Ok(None),
            Err(right) => {
                format!(
                    "the account now holds {right}, which {minted_by:?}, who issued it, does not"
                )
            }
        },
    };
    Ok(Some(format!(
        "this reset token no longer opens the account: {why}; ask an admin for a new one"
    )))
}

pub async fn my_sessions(State(state): St, c: Caller) -> ApiResult<Json<Vec<LiveSession>>> {
    Ok(Json(
        state
            .db
            .live_user_sessions(&c.tenant, c.actor.id, now_micros())
            .await?,
    ))
}

/// Every live session of the tenant ("User Web Sessions"): configureSystem.
pub async fn all_sessions(State(state): St, c: Caller) -> ApiResult<Json<Vec<LiveSession>>> {
    c.require(AdminPermission::ConfigureSystem)?;
    Ok(Json(state.db.live_sessions(&c.tenant, now_micros()).await?))
}

/// Ends a session: one's own, or anyone's with configureSystem.
pub async fn terminate_session(
    State(state): St,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let live = state.db.live_sessions(&c.tenant, now_micros()).await?;
    let s = live
        .iter()
        .find(|s| s.id_hash == id)
        .ok_or_else(|| ApiError::not_found("session"))?;
    if s.user_id != c.actor.id {
        c.require(AdminPermission::ConfigureSystem)?;
    }
    state.db.revoke_session(&c.tenant, &id).await?;
    c.audit(
        &state,
        "session.terminate",
        "session",
        &id,
        json!({ "user_id": s.user_id }),
    )
    .await?;
    Ok(Json(json!({ "terminated": true })))
}
