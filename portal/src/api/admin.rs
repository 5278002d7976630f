//! Users (list, create, delete, password reset), legal hold per user, impersonation, the tag
//! catalogue and saved queries.

use axum::extract::State;
use callvault_store::db::{Group, NewUser, SavedQuery, SearchQuery, Tag, User, now_micros};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::set_password;
use super::extract::{Json, Path};
use super::{Caller, SessionCaller, St};
use crate::AppState;
use crate::access::{Action, AdminPermission, Grants, resolve_subject, scope_covers_user};
use crate::auth::{new_token, token_hash};
use crate::error::{ApiError, ApiResult, Code};

/// The grants `username` has (or would have) with `group_names`; 403 naming the first right
/// the caller does not hold themselves, so no admin gives anyone more than they have.
async fn refuse_escalation(
    state: &AppState,
    c: &Caller,
    user_id: Uuid,
    username: &str,
    group_names: &[&str],
    what: &str,
) -> ApiResult<Grants> {
    let tenant_groups = state.db.list_groups(&c.tenant).await?;
    let grants = resolve_subject(
        user_id,
        username,
        group_names,
        &tenant_groups,
        &state.access.profiles(&c.tenant),
    );
    c.grants.covers(&grants).map_err(|right| {
        ApiError::forbidden(format!(
            "{what} would give {username:?} {right}, which you do not hold yourself"
        ))
    })?;
    Ok(grants)
}

fn names(groups: &[Group]) -> Vec<&str> {
    groups.iter().map(|g| g.name.as_str()).collect()
}

pub async fn list_users(State(state): St, c: Caller) -> ApiResult<Json<Vec<User>>> {
    c.require(AdminPermission::ConfigureSystem)?;
    Ok(Json(state.db.list_users(&c.tenant).await?))
}

#[derive(Debug, Deserialize)]
pub struct CreateUser {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    /// Initial password; the user must change it at first sign-in.
    pub password: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub extensions: Vec<String>,
}

/// Creates a local account (configureSystem) with groups (by name) and extensions.
pub async fn create_user(
    State(state): St,
    c: Caller,
    Json(req): Json<CreateUser>,
) -> ApiResult<Json<User>> {
    c.require(AdminPermission::ConfigureSystem)?;
    let groups = state.db.list_groups(&c.tenant).await?;
    let mut group_ids = Vec::new();
    for name in &req.groups {
        let g = groups
            .iter()
            .find(|g| &g.name == name)
            .ok_or_else(|| ApiError::invalid(format!("unknown group {name:?}")))?;
        group_ids.push(g.id);
    }
    if let Some(p) = crate::auth::password_problem(&req.username, &req.password) {
        return Err(ApiError::invalid(p));
    }
    // Profiles may name the user, or their groups: the new account gets what they give.
    let wanted: Vec<&str> = req.groups.iter().map(String::as_str).collect();
    refuse_escalation(
        &state,
        &c,
        Uuid::nil(),
        req.username.trim(),
        &wanted,
        "creating this account",
    )
    .await?;
    let mut nu = NewUser::local(req.username.trim(), &req.display_name);
    nu.email = req.email.clone();
    let user = state.db.create_user(&c.tenant, &nu).await?;
    set_password(&state, &c.tenant, &user, &req.password, true).await?;
    for g in group_ids {
        state.db.add_member(&c.tenant, g, user.id).await?;
    }
    for ext in &req.extensions {
        state.db.add_extension(&c.tenant, ext, user.id).await?;
    }
    c.audit(
        &state,
        "user.create",
        "user",
        user.id.to_string(),
        json!({ "username": user.username, "groups": req.groups, "extensions": req.extensions }),
    )
    .await?;
    let user = state
        .db
        .user(&c.tenant, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user))
}

/// Deletes a user (configureSystem) as an identity provider's delete does: the account is
/// disabled and leaves its groups and numbers; its calls stay until their retention ends.
/// Refused (409 `legal_hold`) while the user is on legal hold, and for one's own account.
pub async fn delete_user(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    c.require(AdminPermission::ConfigureSystem)?;
    let user = state
        .db
        .user(&c.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    if user.id == c.actor.id {
        return Err(ApiError::new(
            Code::Conflict,
            "you cannot delete your own account",
        ));
    }
    let numbers = state.db.user_extensions(&c.tenant, id).await?;
    let groups: Vec<String> = state
        .db
        .user_groups(&c.tenant, id)
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    state.db.deprovision_user(&c.tenant, id).await?;
    c.audit(
        &state,
        "user.delete",
        "user",
        id.to_string(),
        json!({ "username": user.username, "numbers_released": numbers, "groups_left": groups }),
    )
    .await?;
    Ok(Json(json!({ "user_id": id, "deleted": true })))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ResetPassword {
    /// "Create a new password for user".
    Set {
        new_password: String,
        #[serde(default = "yes")]
        must_change: bool,
    },
    /// A one-time token for the user to set their own password (delivered out of band).
    Token,
}

fn yes() -> bool {
    true
}

/// Resets a local user's password (configureSystem); every session of theirs ends.
pub async fn reset_password(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<ResetPassword>,
) -> ApiResult<Json<Value>> {
    c.require(AdminPermission::ConfigureSystem)?;
    let user = state
        .db
        .user(&c.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    // Whoever sets a password can sign in as the account: never one with rights the admin
    // lacks, and never a key holder's (that is done offline by a key holder).
    let groups = state.db.user_groups(&c.tenant, user.id).await?;
    let theirs = refuse_escalation(
        &state,
        &c,
        user.id,
        &user.username,
        &names(&groups),
        "resetting this password",
    )
    .await?;
    if !theirs.keys.is_empty() {
        return Err(ApiError::forbidden(format!(
            "{:?} holds a key grant ({}): a password reset in the portal would let its admin \
             sign in as a key holder. A holder of that key resets it offline with \
             `callvault keys reset-password --key <private key> --username {}`",
            user.username,
            theirs.keys.iter().cloned().collect::<Vec<_>>().join(", "),
            user.username
        )));
    }
    let out = match req {
        ResetPassword::Set {
            new_password,
            must_change,
        } => {
            set_password(&state, &c.tenant, &user, &new_password, must_change).await?;
            json!({ "mode": "set", "must_change": must_change })
        }
        ResetPassword::Token => {
            let token = new_token();
            let ttl = i64::try_from(state.config.reset_token_ttl.as_micros()).unwrap_or(i64::MAX);
            let expires = now_micros().saturating_add(ttl);
            state
                .db
                .create_password_reset(
                    &c.tenant,
                    &token_hash(&token),
                    user.id,
                    &c.actor.username,
                    expires,
                )
                .await?;
            json!({ "mode": "token", "token": token, "expires_at": expires })
        }
    };
    state.db.revoke_user_sessions(&c.tenant, user.id).await?;
    c.audit(
        &state,
        "password.reset",
        "user",
        user.id.to_string(),
        json!({ "mode": out["mode"], "username": user.username }),
    )
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
pub struct LegalHold {
    pub hold: bool,
}

/// Places or lifts a user's legal hold: needs the legalHold action with the user in its
/// scope (their own calls, their groups', or all).
pub async fn set_legal_hold(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<LegalHold>,
) -> ApiResult<Json<Value>> {
    let target = state.db.user(&c.tenant, id).await?;
    let target_groups: Vec<Uuid> = match &target {
        Some(_) => state
            .db
            .user_groups(&c.tenant, id)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect(),
        None => Vec::new(),
    };
    let visible = target.is_some() && scope_covers_user(&c.grants.view, id, &target_groups);
    let Some(target) = target.filter(|_| visible) else {
        return Err(ApiError::not_found(format!("user {id}")));
    };
    if !scope_covers_user(
        &c.grants.action_scope(Action::LegalHold),
        id,
        &target_groups,
    ) {
        return Err(ApiError::forbidden(
            "your access profiles do not allow legalHold for this user",
        ));
    }
    state
        .db
        .set_user_legal_hold(&c.tenant, id, req.hold)
        .await?;
    c.audit(
        &state,
        if req.hold {
            "legal_hold.set"
        } else {
            "legal_hold.clear"
        },
        "user",
        id.to_string(),
        json!({ "username": target.username }),
    )
    .await?;
    Ok(Json(json!({ "user_id": id, "legal_hold": req.hold })))
}

/// Starts read-only impersonation of a user (configureSystem); audited.
pub async fn start_impersonation(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    c.require(AdminPermission::ConfigureSystem)?;
    if id == c.actor.id {
        return Err(ApiError::invalid("you cannot impersonate yourself"));
    }
    let target = state
        .db
        .user(&c.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    state
        .db
        .set_impersonation(&c.tenant, &c.session_id, Some(id))
        .await?;
    c.audit(
        &state,
        "impersonation.start",
        "user",
        id.to_string(),
        json!({ "target": target.username }),
    )
    .await?;
    Ok(Json(json!({ "impersonating": target.username })))
}

/// Ends impersonation; audited.
pub async fn stop_impersonation(
    State(state): St,
    SessionCaller(c): SessionCaller,
) -> ApiResult<Json<Value>> {
    if !c.impersonating {
        return Err(ApiError::invalid("not impersonating anyone"));
    }
    state
        .db
        .set_impersonation(&c.tenant, &c.session_id, None)
        .await?;
    state
        .db
        .append_audit(
            &c.tenant,
            &callvault_store::db::NewAuditEntry::new(&c.actor.username, "impersonation.end")
                .item("user", c.user.id.to_string())
                .details(json!({ "target": c.user.username })),
        )
        .await?;
    Ok(Json(json!({ "impersonating": null })))
}

pub async fn list_tags(State(state): St, c: Caller) -> ApiResult<Json<Vec<Tag>>> {
    Ok(Json(state.db.list_tags(&c.tenant).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewTag {
    pub name: String,
    #[serde(default)]
    pub color: String,
}

pub async fn create_tag(
    State(state): St,
    c: Caller,
    Json(req): Json<NewTag>,
) -> ApiResult<Json<Tag>> {
    c.require(AdminPermission::ManageTags)?;
    if req.name.trim().is_empty() || req.name.chars().count() > 100 {
        return Err(ApiError::invalid("a tag name has 1 to 100 characters"));
    }
    let tag = state
        .db
        .create_tag(&c.tenant, req.name.trim(), &req.color)
        .await?;
    c.audit(
        &state,
        "tag.create",
        "tag",
        tag.id.to_string(),
        json!({ "name": tag.name }),
    )
    .await?;
    Ok(Json(tag))
}

pub async fn delete_tag(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    c.require(AdminPermission::ManageTags)?;
    let tag = state
        .db
        .list_tags(&c.tenant)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::not_found(format!("tag {id}")))?;
    state.db.delete_tag(&c.tenant, id).await?;
    c.audit(
        &state,
        "tag.delete",
        "tag",
        id.to_string(),
        json!({ "name": tag.name }),
    )
    .await?;
    Ok(Json(json!({ "deleted": true })))
}

pub async fn list_saved_queries(State(state): St, c: Caller) -> ApiResult<Json<Vec<SavedQuery>>> {
    Ok(Json(state.db.saved_queries(&c.tenant, c.user.id).await?))
}

#[derive(Debug, Deserialize)]
pub struct SaveQuery {
    pub name: String,
    pub query: SearchQuery,
}

pub async fn save_query(
    State(state): St,
    c: Caller,
    Json(req): Json<SaveQuery>,
) -> ApiResult<Json<SavedQuery>> {
    Ok(Json(
        state
            .db
            .save_query(&c.tenant, c.user.id, &req.name, &req.query)
            .await?,
    ))
}

pub async fn delete_saved_query(
    State(state): St,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    state
        .db
        .delete_saved_query(&c.tenant, c.user.id, id)
        .await?;
    Ok(Json(json!({ "deleted": true })))
}
