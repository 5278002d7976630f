//! SCIM 2.0 provisioning (RFC 7643 resources, RFC 7644 protocol) at `/scim/v2`: an identity
//! provider creates, updates, deactivates and lists the portal's users and groups.
//!
//! Authentication is one bearer token (read from a file, compared in constant time); sessions
//! and cookies play no part, so CSRF does not apply. Users map to the users table (new ones get
//! source `scim`); their `phoneNumbers` are the numbers that associate calls with them;
//! `active: false` disables the account and ends its sessions. DELETE deprovisions: the account
//! is disabled and loses its numbers and groups, SCIM answers 404 for it from then on, but the
//! row stays so that its calls and audit history remain attributable; creating the same
//! userName again brings it back. Groups map to groups with their members. Every change is
//! audited with the actor `scim`. Errors use the SCIM error schema.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use callvault_store::db::{
    DbError, Group, NewAuditEntry, NewUser, User, UserFilter, UserProfile, UserSource,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::access::{Grants, Profile, resolve_subject};
use crate::auth::secret_eq;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ACTOR: &str = "scim";
/// Most resources one list response carries.
const MAX_COUNT: i64 = 1000;

type St = State<Arc<AppState>>;

/// A SCIM error (RFC 7644 §3.12).
#[derive(Debug)]
pub struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

type ScimResult<T> = Result<T, ScimError>;

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }

    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }
}

impl From<DbError> for ScimError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound { .. } => Self::not_found(e.to_string()),
            // A user on legal hold: no SCIM scimType fits; the detail says why.
            DbError::Conflict(m) if m.contains("legal hold") => {
                Self::new(StatusCode::CONFLICT, None, m)
            }
            DbError::Conflict(m) => Self::new(StatusCode::CONFLICT, Some("uniqueness"), m),
            DbError::Invalid { .. } => Self::invalid(e.to_string()),
            other => {
                tracing::error!(error = %other, "SCIM: database");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
            }
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut resp = scim_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        resp
    }
}

fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    resp
}

/// The SCIM routes, nested at `/scim/v2`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/Schemas", get(schemas))
        .route("/Users", get(list_users).post(create_user))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups).post(create_group))
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .fallback(|| async { ScimError::not_found("no such SCIM endpoint") })
}

/// Checks the bearer token. Without a configured token no request is authorized (401, like a
/// wrong token, so that a client cannot tell the two apart).
fn authorize(state: &AppState, headers: &HeaderMap) -> ScimResult<String> {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or_default();
    let valid = state
        .config
        .scim_token
        .as_ref()
        .is_some_and(|token| token_matches(sent.trim(), token.expose()));
    if !valid {
        return Err(ScimError::new(
            StatusCode::UNAUTHORIZED,
            None,
            "a valid bearer token is required",
        ));
    }
    Ok(state.config.default_tenant.clone())
}

/// Compares digests, so that the time taken reveals neither the token nor its length.
fn token_matches(sent: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    !sent.is_empty()
        && secret_eq(
            &hex::encode(Sha256::digest(sent.as_bytes())),
            &hex::encode(Sha256::digest(token.as_bytes())),
        )
}

fn parse_body(body: &Bytes) -> ScimResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            e.to_string(),
        )
    })
}

fn parse_id(id: &str, kind: &str) -> ScimResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ScimError::not_found(format!("{kind} {id}")))
}

async fn audit(
    state: &AppState,
    tenant: &str,
    action: &str,
    kind: &str,
    id: Uuid,
    details: Value,
) -> ScimResult<()> {
    state
        .db
        .append_audit(
            tenant,
            &NewAuditEntry::new(ACTOR, action)
                .item(kind, id.to_string())
                .details(details),
        )
        .await?;
    Ok(())
}

fn time(micros: i64) -> Value {
    chrono::DateTime::from_timestamp_micros(micros).map_or(Value::Null, |d| {
        json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    filter: Option<String>,
    #[serde(default, rename = "startIndex")]
    start_index: Option<i64>,
    #[serde(default)]
    count: Option<i64>,
}

/// A filter of the one form provisioning clients use: `<attribute> eq "<value>"`.
fn parse_filter(filter: &str, allowed: &[&str]) -> ScimResult<(String, String)> {
    let bad = || {
        ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
            format!(
                "unsupported filter {filter:?}: only `<attribute> eq \"value\"` on {}",
                allowed.join(", ")
            ),
        )
    };
    let mut it = filter.trim().splitn(3, ' ');
    let (Some(attr), Some(op), Some(value)) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let value = value.trim();
    if !op.eq_ignore_ascii_case("eq")
        || value.len() < 2
        || !value.starts_with('"')
        || !value.ends_with('"')
    {
        return Err(bad());
    }
    let attr = allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(attr))
        .ok_or_else(bad)?;
    let value: String = serde_json::from_str(value).map_err(|_| bad())?;
    Ok(((*attr).to_owned(), value))
}

/// 1-based start index and page size of a list request (RFC 7644 §3.4.2.4).
fn page(q: &ListQuery) -> (i64, i64) {
    (
        q.start_index.unwrap_or(1).max(1),
        q.count.unwrap_or(100).clamp(0, MAX_COUNT),
    )
}

/// The total and the page of `all` that starts at the 1-based `start` and holds at most `count`,
/// for the lists filtered in memory (the store pages users by name itself).
fn page_of<T>(all: Vec<T>, start: i64, count: i64) -> (i64, Vec<T>) {
    let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
    let skip = usize::try_from(start - 1).unwrap_or(usize::MAX);
    let take = usize::try_from(count).unwrap_or(0);
    (total, all.into_iter().skip(skip).take(take).collect())
}

fn list_response(total: i64, start: i64, resources: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

// ---- Users ----

async fn user_resource(state: &AppState, tenant: &str, u: &User) -> ScimResult<Value> {
    let numbers = state.db.user_extensions(tenant, u.id).await?;
    let groups = state.db.user_groups(tenant, u.id).await?;
    Ok(user_json(u, &numbers, &groups))
}

/// The resources of a page of users, their numbers and groups read for the whole page at once.
async fn user_resources(state: &AppState, tenant: &str, users: &[User]) -> ScimResult<Vec<Value>> {
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let mut numbers: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (user, number) in state.db.extensions_of_users(tenant, &ids).await? {
        numbers.entry(user).or_default().push(number);
    }
    let mut groups: HashMap<Uuid, Vec<Group>> = HashMap::new();
    for (user, group) in state.db.groups_of_users(tenant, &ids).await? {
        groups.entry(user).or_default().push(group);
    }
    Ok(users
        .iter()
        .map(|u| {
            user_json(
                u,
                numbers.get(&u.id).map_or(&[], Vec::as_slice),
                groups.get(&u.id).map_or(&[], Vec::as_slice),
            )
        })
        .collect())
}

fn user_json(u: &User, numbers: &[String], groups: &[Group]) -> Value {
    let mut v = json!({
        "schemas": [USER_SCHEMA],
        "id": u.id,
        "userName": u.username,
        "displayName": u.display_name,
        "name": {"formatted": u.display_name},
        "active": !u.disabled,
        "emails": if u.email.is_empty() { json!([]) } else { json!([{"value": u.email, "type": "work", "primary": true}]) },
        "phoneNumbers": numbers.iter().map(|n| json!({"value": n, "type": "work"})).collect::<Vec<_>>(),
        "groups": groups.iter().map(|g| json!({"value": g.id, "display": g.name, "$ref": format!("/scim/v2/Groups/{}", g.id)})).collect::<Vec<_>>(),
        "meta": {
            "resourceType": "User",
            "created": time(u.created_at),
            "lastModified": time(u.updated_at),
            "location": format!("/scim/v2/Users/{}", u.id),
        },
    });
    if let Some(x) = &u.external_id {
        v["externalId"] = json!(x);
    }
    v
}

/// The attributes of a user that SCIM writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserDoc {
    username: String,
    display_name: String,
    email: String,
    external_id: Option<String>,
    active: bool,
    numbers: Vec<String>,
}

impl UserDoc {
    async fn load(state: &AppState, tenant: &str, u: &User) -> ScimResult<Self> {
        Ok(UserDoc {
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            external_id: u.external_id.clone(),
            active: !u.disabled,
            numbers: state.db.user_extensions(tenant, u.id).await?,
        })
    }

    /// A whole resource (POST, PUT): what it omits is cleared, except `active` (true).
    fn from_resource(v: &Value) -> ScimResult<Self> {
        let mut d = UserDoc {
            username: String::new(),
            display_name: String::new(),
            email: String::new(),
            external_id: None,
            active: true,
            numbers: Vec::new(),
        };
        let obj = v
            .as_object()
            .ok_or_else(|| ScimError::invalid("the body must be a User object"))?;
        for (k, val) in obj {
            if !k.eq_ignore_ascii_case("schemas") {
                d.set(k, val, Op::Replace)?;
            }
        }
        d.check()?;
        Ok(d)
    }

    fn check(&self) -> ScimResult<()> {
        if self.username.trim().is_empty() {
            return Err(ScimError::invalid("userName is required"));
        }
        Ok(())
    }

    /// Applies one attribute: `path` is the attribute (simple paths and the common
    /// `emails[type eq "work"].value`, `phoneNumbers[value eq "x"]` forms).
    fn set(&mut self, path: &str, value: &Value, op: Op) -> ScimResult<()> {
        let lower = path.to_ascii_lowercase();
        let lower = lower
            .strip_prefix(&format!("{}:", USER_SCHEMA.to_ascii_lowercase()))
            .unwrap_or(&lower);
        let text = || -> ScimResult<String> {
            match value {
                Value::String(s) => Ok(s.trim().to_owned()),
                Value::Null => Ok(String::new()),
                _ => Err(ScimError::invalid(format!("{path} must be a string"))),
            }
        };
        match lower {
            "username" => {
                self.username = if op == Op::Remove {
                    String::new()
                } else {
                    text()?
                }
            }
            "displayname" | "name.formatted" => {
                self.display_name = if op == Op::Remove {
                    String::new()
                } else {
                    text()?
                }
            }
            "name" => {
                if let Some(f) = value.get("formatted").and_then(Value::as_str) {
                    self.display_name = f.trim().to_owned();
                } else if op == Op::Remove {
                    self.display_name.clear();
                }
            }
            "externalid" => {
                self.external_id = if op == Op::Remove {
                    None
                } else {
                    Some(text()?).filter(|s| !s.is_empty())
                }
            }
            "active" => {
                self.active = match (op, value) {
                    (Op::Remove, _) => false,
                    (_, Value::Bool(b)) => *b,
                    // Some providers send booleans as strings.
                    (_, Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
                    (_, Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
                    _ => return Err(ScimError::invalid("active must be a boolean")),
                }
            }
            p if p == "emails" || p.starts_with("emails[") => {
                self.email = match op {
                    Op::Remove => String::new(),
                    _ if p.ends_with(".value") => text()?,
                    _ => multi_values(value)?.first().cloned().unwrap_or_default(),
                }
            }
            p if p == "phonenumbers" || p.starts_with("phonenumbers[") => {
                let selected = filter_value(p);
                match op {
                    Op::Remove => match selected {
                        Some(n) => self.numbers.retain(|x| *x != n),
                        None => self.numbers.clear(),
                    },
                    Op::Add => {
                        for n in multi_values(value)? {
                            if !self.numbers.contains(&n) {
                                self.numbers.push(n);
                            }
                        }
                    }
                    Op::Replace => match (selected, p.ends_with(".value")) {
                        (Some(old), true) => {
                            let new = text()?;
                            self.numbers.retain(|x| *x != old);
                            if !new.is_empty() && !self.numbers.contains(&new) {
                                self.numbers.push(new);
                            }
                        }
                        _ => self.numbers = multi_values(value)?,
                    },
                }
            }
            // Read-only or not kept by the portal (RFC 7643: `groups` is set through Groups).
            "id" | "meta" | "groups" | "password" | "title" | "usertype" | "locale"
            | "timezone" | "preferredlanguage" | "nickname" | "profileurl" | "addresses" => {}
            p if p.starts_with("urn:") => {}
            _ => {
                return Err(ScimError::new(
                    StatusCode::BAD_REQUEST,
                    Some("invalidPath"),
                    format!("unsupported attribute {path:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// The `value` of a multi-valued attribute's items (or of plain strings).
fn multi_values(v: &Value) -> ScimResult<Vec<String>> {
    let items = match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    let mut out = Vec::new();
    for it in items {
        let s = match &it {
            Value::String(s) => s.trim().to_owned(),
            Value::Object(o) => o
                .get("value")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_owned())
                .ok_or_else(|| ScimError::invalid("a multi-valued item lacks value"))?,
            _ => return Err(ScimError::invalid("a multi-valued item must be an object")),
        };
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// `x` of a value path like `members[value eq "x"]` (lower-cased path; ids and numbers are
/// case-insensitive enough for this).
fn filter_value(path: &str) -> Option<String> {
    let inner = path.split_once('[')?.1.split_once(']')?.0;
    let (_, v) = parse_filter(inner, &["value", "type"]).ok()?;
    Some(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// The operations of a PATCH request (RFC 7644 §3.5.2).
fn patch_ops(body: &Value) -> ScimResult<Vec<(Op, Option<String>, Value)>> {
    if !body["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == PATCH_SCHEMA))
    {
        return Err(ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            format!("a PATCH body names the schema {PATCH_SCHEMA}"),
        ));
    }
    let ops = body["Operations"].as_array().ok_or_else(|| {
        ScimError::new(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "Operations is required",
        )
    })?;
    ops.iter()
        .map(|o| {
            let op = match o["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("add") => Op::Add,
                Some("replace") => Op::Replace,
                Some("remove") => Op::Remove,
                other => {
                    return Err(ScimError::new(
                        StatusCode::BAD_REQUEST,
                        Some("invalidSyntax"),
                        format!("unknown op {other:?}"),
                    ));
                }
            };
            let path = o["path"]
                .as_str()
                .map(str::to_owned)
                .filter(|p| !p.is_empty());
            if op == Op::Remove && path.is_none() {
                return Err(ScimError::new(
                    StatusCode::BAD_REQUEST,
                    Some("noTarget"),
                    "remove needs a path",
                ));
            }
            Ok((op, path, o.get("value").cloned().unwrap_or(Value::Null)))
        })
        .collect()
}

/// A user SCIM can see: existing and not deprovisioned.
async fn find_user(state: &AppState, tenant: &str, id: &str) -> ScimResult<User> {
    let id = parse_id(id, "user")?;
    match state.db.user(tenant, id).await? {
        Some(u) if !state.db.is_deprovisioned(tenant, id).await? => Ok(u),
        _ => Err(ScimError::not_found(format!("user {id}"))),
    }
}

/// Stores `doc` over `before` (profile, active, numbers) and audits what changed; false when
/// nothing did.
async fn save_user(
    state: &AppState,
    tenant: &str,
    user: &User,
    before: &UserDoc,
    doc: &UserDoc,
    action: &str,
) -> ScimResult<bool> {
    doc.check()?;
    if before == doc {
        return Ok(false);
    }
    refuse_user_widening(state, tenant, user, &doc.username).await?;
    let db = &state.db;
    let profile = UserProfile {
        username: doc.username.clone(),
        display_name: doc.display_name.clone(),
        email: doc.email.clone(),
        external_id: doc.external_id.clone(),
    };
    if (
        &before.username,
        &before.display_name,
        &before.email,
        &before.external_id,
    ) != (
        &doc.username,
        &doc.display_name,
        &doc.email,
        &doc.external_id,
    ) {
        db.update_user_profile(tenant, user.id, &profile).await?;
    }
    for n in &before.numbers {
        if !doc.numbers.contains(n) {
            db.remove_extension(tenant, n).await?;
        }
    }
    for n in &doc.numbers {
        if !before.numbers.contains(n) {
            db.add_extension(tenant, n, user.id).await?;
        }
    }
    if before.active != doc.active {
        db.set_user_disabled(tenant, user.id, !doc.active).await?;
        if !doc.active {
            db.revoke_user_sessions(tenant, user.id).await?;
        }
    }
    audit(
        state,
        tenant,
        action,
        "user",
        user.id,
        json!({
            "userName": doc.username,
            "active": doc.active,
            "phoneNumbers": doc.numbers,
            "previous": {"userName": before.username, "active": before.active, "phoneNumbers": before.numbers},
        }),
    )
    .await?;
    Ok(true)
}

async fn list_users(
    State(state): St,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let (start, count) = page(&q);
    let filter = q
        .filter
        .as_deref()
        .map(|f| parse_filter(f, &["userName", "externalId"]))
        .transpose()?;
    let which = match &filter {
        Some((attr, value)) if attr == "externalId" => UserFilter::ExternalId(value),
        Some((_, value)) => UserFilter::Username(value),
        None => UserFilter::All,
    };
    let (total, users) = state
        .db
        .users_page(&tenant, which, start - 1, count)
        .await?;
    let resources = user_resources(&state, &tenant, &users).await?;
    Ok(list_response(total, start, resources))
}

async fn get_user(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let u = find_user(&state, &tenant, &id).await?;
    Ok(scim_json(
        StatusCode::OK,
        &user_resource(&state, &tenant, &u).await?,
    ))
}

async fn create_user(State(state): St, headers: HeaderMap, body: Bytes) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let doc = UserDoc::from_resource(&parse_body(&body)?)?;
    let db = &state.db;
    let existing = db.user_by_username(&tenant, &doc.username).await?;
    let returning = match &existing {
        Some(u) if db.is_deprovisioned(&tenant, u.id).await? => Some(u.clone()),
        Some(_) => {
            return Err(ScimError::new(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                format!("userName {:?} already exists", doc.username),
            ));
        }
        None => None,
    };
    for n in &doc.numbers {
        if db.extension_owner(&tenant, n).await?.is_some() {
            return Err(ScimError::new(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                format!("the number {n} belongs to another user"),
            ));
        }
    }
    if let Some(u) = returning {
        return reprovision(&state, &tenant, &u, &doc).await;
    }
    let u = db
        .create_user(
            &tenant,
            &NewUser {
                username: doc.username.clone(),
                display_name: doc.display_name.clone(),
                email: doc.email.clone(),
                password_hash: None,
                must_change_password: false,
                time_zone: "UTC".into(),
                source: UserSource::Scim,
                external_id: doc.external_id.clone(),
            },
        )
        .await?;
    for n in &doc.numbers {
        db.add_extension(&tenant, n, u.id).await?;
    }
    if !doc.active {
        db.set_user_disabled(&tenant, u.id, true).await?;
    }
    audit(
        &state,
        &tenant,
        "scim.user.create",
        "user",
        u.id,
        json!({"userName": doc.username, "externalId": doc.external_id, "active": doc.active, "phoneNumbers": doc.numbers}),
    )
    .await?;
    let u = find_user(&state, &tenant, &u.id.to_string()).await?;
    let mut resp = scim_json(
        StatusCode::CREATED,
        &user_resource(&state, &tenant, &u).await?,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/scim/v2/Users/{}", u.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// A deprovisioned user provisioned again: same account (and history), enabled, with `doc`.
async fn reprovision(
    state: &AppState,
    tenant: &str,
    u: &User,
    doc: &UserDoc,
) -> ScimResult<Response> {
    state.db.reprovision_user(tenant, u.id).await?;
    let u = find_user(state, tenant, &u.id.to_string()).await?;
    let before = UserDoc::load(state, tenant, &u).await?;
    let changed = save_user(state, tenant, &u, &before, doc, "scim.user.reprovision").await?;
    if !changed {
        // The return is a change of its own.
        let details = json!({"userName": doc.username, "active": doc.active});
        audit(
            state,
            tenant,
            "scim.user.reprovision",
            "user",
            u.id,
            details,
        )
        .await?;
    }
    let u = find_user(state, tenant, &u.id.to_string()).await?;
    let mut resp = scim_json(
        StatusCode::CREATED,
        &user_resource(state, tenant, &u).await?,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/scim/v2/Users/{}", u.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn replace_user(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let u = find_user(&state, &tenant, &id).await?;
    let before = UserDoc::load(&state, &tenant, &u).await?;
    let doc = UserDoc::from_resource(&parse_body(&body)?)?;
    save_user(&state, &tenant, &u, &before, &doc, "scim.user.replace").await?;
    let u = find_user(&state, &tenant, &id).await?;
    Ok(scim_json(
        StatusCode::OK,
        &user_resource(&state, &tenant, &u).await?,
    ))
}

async fn patch_user(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let u = find_user(&state, &tenant, &id).await?;
    let before = UserDoc::load(&state, &tenant, &u).await?;
    let mut doc = before.clone();
    for (op, path, value) in patch_ops(&parse_body(&body)?)? {
        match path {
            Some(p) => doc.set(&p, &value, op)?,
            None => {
                let obj = value.as_object().ok_or_else(|| {
                    ScimError::new(
                        StatusCode::BAD_REQUEST,
                        Some("invalidValue"),
                        "an operation without path carries an object",
                    )
                })?;
                for (k, v) in obj {
                    doc.set(k, v, op)?;
                }
            }
        }
    }
    save_user(&state, &tenant, &u, &before, &doc, "scim.user.patch").await?;
    let u = find_user(&state, &tenant, &id).await?;
    Ok(scim_json(
        StatusCode::OK,
        &user_resource(&state, &tenant, &u).await?,
    ))
}

/// Deprovisions: sign-in stops and SCIM no longer sees the user; the account and its history
/// stay.
async fn delete_user(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let u = find_user(&state, &tenant, &id).await?;
    let numbers = state.db.user_extensions(&tenant, u.id).await?;
    let groups: Vec<String> = state
        .db
        .user_groups(&tenant, u.id)
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    state.db.deprovision_user(&tenant, u.id).await?;
    audit(
        &state,
        &tenant,
        "scim.user.delete",
        "user",
        u.id,
        json!({"userName": u.username, "phoneNumbersReleased": numbers, "groupsLeft": groups}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- Groups ----

async fn group_resource(state: &AppState, tenant: &str, g: &Group) -> ScimResult<Value> {
    let members = state.db.group_members(tenant, g.id).await?;
    let mut v = json!({
        "schemas": [GROUP_SCHEMA],
        "id": g.id,
        "displayName": g.name,
        "members": members.iter().map(|u| json!({"value": u.id, "display": u.username, "type": "User", "$ref": format!("/scim/v2/Users/{}", u.id)})).collect::<Vec<_>>(),
        "meta": {"resourceType": "Group", "location": format!("/scim/v2/Groups/{}", g.id)},
    });
    if let Some(x) = &g.external_id {
        v["externalId"] = json!(x);
    }
    Ok(v)
}

async fn find_group(state: &AppState, tenant: &str, id: &str) -> ScimResult<Group> {
    let id = parse_id(id, "group")?;
    state
        .db
        .group(tenant, id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("group {id}")))
}

/// Member ids of a `members` value, each an existing user.
async fn member_ids(state: &AppState, tenant: &str, v: &Value) -> ScimResult<Vec<Uuid>> {
    let mut out = Vec::new();
    for s in multi_values(v)? {
        let id = Uuid::parse_str(&s)
            .map_err(|_| ScimError::invalid(format!("member {s:?} is not a user id")))?;
        if state.db.user(tenant, id).await?.is_none()
            || state.db.is_deprovisioned(tenant, id).await?
        {
            return Err(ScimError::invalid(format!("member {id} is not a user")));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupDoc {
    name: String,
    external_id: Option<String>,
    members: Vec<Uuid>,
}

impl GroupDoc {
    async fn apply(
        &mut self,
        state: &AppState,
        tenant: &str,
        path: &str,
        value: &Value,
        op: Op,
    ) -> ScimResult<()> {
        let lower = path.to_ascii_lowercase();
        match lower.as_str() {
            "displayname" => {
                self.name = value.as_str().map(str::trim).unwrap_or_default().to_owned();
            }
            "externalid" => {
                self.external_id = if op == Op::Remove {
                    None
                } else {
                    value.as_str().map(str::to_owned)
                };
            }
            p if p == "members" || p.starts_with("members[") => {
                let selected = filter_value(p).and_then(|s| Uuid::parse_str(&s).ok());
                match op {
                    Op::Remove => match (selected, value) {
                        (Some(id), _) => self.members.retain(|m| *m != id),
                        (None, Value::Null) => self.members.clear(),
                        (None, v) => {
                            let gone = member_ids(state, tenant, v).await?;
                            self.members.retain(|m| !gone.contains(m));
                        }
                    },
                    Op::Add => {
                        for id in member_ids(state, tenant, value).await? {
                            if !self.members.contains(&id) {
                                self.members.push(id);
                            }
                        }
                    }
                    Op::Replace => self.members = member_ids(state, tenant, value).await?,
                }
            }
            "id" | "meta" | "schemas" => {}
            _ => {
                return Err(ScimError::new(
                    StatusCode::BAD_REQUEST,
                    Some("invalidPath"),
                    format!("unsupported attribute {path:?}"),
                ));
            }
        }
        Ok(())
    }

    async fn from_resource(state: &AppState, tenant: &str, v: &Value) -> ScimResult<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| ScimError::invalid("the body must be a Group object"))?;
        let mut d = GroupDoc {
            name: String::new(),
            external_id: None,
            members: Vec::new(),
        };
        for (k, val) in obj {
            d.apply(state, tenant, k, val, Op::Replace).await?;
        }
        if d.name.is_empty() {
            return Err(ScimError::invalid("displayName is required"));
        }
        Ok(d)
    }
}

async fn save_group(
    state: &AppState,
    tenant: &str,
    g: &Group,
    before: &GroupDoc,
    doc: &GroupDoc,
    action: &str,
) -> ScimResult<()> {
    if doc.name.is_empty() {
        return Err(ScimError::invalid("displayName is required"));
    }
    if before == doc {
        return Ok(());
    }
    refuse_group_widening(state, tenant, g.id, &doc.name, &doc.members).await?;
    if before.name != doc.name || before.external_id != doc.external_id {
        state
            .db
            .update_group(tenant, g.id, &doc.name, doc.external_id.as_deref())
            .await?;
    }
    if before.members != doc.members {
        state
            .db
            .set_group_members(tenant, g.id, &doc.members)
            .await?;
    }
    let added: Vec<_> = doc
        .members
        .iter()
        .filter(|m| !before.members.contains(m))
        .collect();
    let removed: Vec<_> = before
        .members
        .iter()
        .filter(|m| !doc.members.contains(m))
        .collect();
    audit(
        state,
        tenant,
        action,
        "group",
        g.id,
        json!({
            "displayName": doc.name, "previousDisplayName": before.name,
            "membersAdded": added, "membersRemoved": removed,
        }),
    )
    .await
}

async fn group_doc(state: &AppState, tenant: &str, g: &Group) -> ScimResult<GroupDoc> {
    Ok(GroupDoc {
        name: g.name.clone(),
        external_id: g.external_id.clone(),
        members: state
            .db
            .group_members(tenant, g.id)
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect(),
    })
}

async fn list_groups(
    State(state): St,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let (start, count) = page(&q);
    let filter = q
        .filter
        .as_deref()
        .map(|f| parse_filter(f, &["displayName", "externalId"]))
        .transpose()?;
    let all: Vec<Group> = state
        .db
        .list_groups(&tenant)
        .await?
        .into_iter()
        .filter(|g| match &filter {
            Some((a, v)) if a == "displayName" => g.name.eq_ignore_ascii_case(v),
            Some((_, v)) => g.external_id.as_deref() == Some(v.as_str()),
            None => true,
        })
        .collect();
    let (total, groups) = page_of(all, start, count);
    let mut resources = Vec::with_capacity(groups.len());
    for g in &groups {
        resources.push(group_resource(&state, &tenant, g).await?);
    }
    Ok(list_response(total, start, resources))
}

async fn get_group(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let g = find_group(&state, &tenant, &id).await?;
    Ok(scim_json(
        StatusCode::OK,
        &group_resource(&state, &tenant, &g).await?,
    ))
}

async fn create_group(State(state): St, headers: HeaderMap, body: Bytes) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let doc = GroupDoc::from_resource(&state, &tenant, &parse_body(&body)?).await?;
    refuse_group_widening(&state, &tenant, Uuid::new_v4(), &doc.name, &doc.members).await?;
    let g = state.db.create_group(&tenant, &doc.name, "").await?;
    if doc.external_id.is_some() {
        state
            .db
            .update_group(&tenant, g.id, &doc.name, doc.external_id.as_deref())
            .await?;
    }
    state
        .db
        .set_group_members(&tenant, g.id, &doc.members)
        .await?;
    audit(
        &state,
        &tenant,
        "scim.group.create",
        "group",
        g.id,
        json!({
            "displayName": doc.name, "externalId": doc.external_id, "members": doc.members,
        }),
    )
    .await?;
    let g = find_group(&state, &tenant, &g.id.to_string()).await?;
    let mut resp = scim_json(
        StatusCode::CREATED,
        &group_resource(&state, &tenant, &g).await?,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/scim/v2/Groups/{}", g.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn replace_group(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let g = find_group(&state, &tenant, &id).await?;
    let before = group_doc(&state, &tenant, &g).await?;
    let doc = GroupDoc::from_resource(&state, &tenant, &parse_body(&body)?).await?;
    save_group(&state, &tenant, &g, &before, &doc, "scim.group.replace").await?;
    let g = find_group(&state, &tenant, &id).await?;
    Ok(scim_json(
        StatusCode::OK,
        &group_resource(&state, &tenant, &g).await?,
    ))
}

async fn patch_group(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let g = find_group(&state, &tenant, &id).await?;
    let before = group_doc(&state, &tenant, &g).await?;
    let mut doc = before.clone();
    for (op, path, value) in patch_ops(&parse_body(&body)?)? {
        match path {
            Some(p) => doc.apply(&state, &tenant, &p, &value, op).await?,
            None => {
                let obj = value.as_object().cloned().ok_or_else(|| {
                    ScimError::invalid("an operation without path carries an object")
                })?;
                for (k, v) in &obj {
                    doc.apply(&state, &tenant, k, v, op).await?;
                }
            }
        }
    }
    save_group(&state, &tenant, &g, &before, &doc, "scim.group.patch").await?;
    let g = find_group(&state, &tenant, &id).await?;
    Ok(scim_json(
        StatusCode::OK,
        &group_resource(&state, &tenant, &g).await?,
    ))
}

async fn delete_group(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let tenant = authorize(&state, &headers)?;
    let g = find_group(&state, &tenant, &id).await?;
    state.db.delete_group(&tenant, g.id).await?;
    audit(
        &state,
        &tenant,
        "scim.group.delete",
        "group",
        g.id,
        json!({"displayName": g.name}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- No escalation ----

/// The local password accounts (each with its groups' ids) and the tenant's groups, as they
/// are or as a SCIM change would leave them. The identity provider owns its own accounts (a
/// profile naming a group delegates that group's membership to the directory), but a local
/// account's rights come from an admin, who may give only what they hold: SCIM must never
/// widen them. A SCIM client holds no right of its own, so it cannot give one this way.
#[derive(Debug, Clone)]
struct Accounts {
    groups: Vec<Group>,
    users: Vec<(User, Vec<Uuid>)>,
}

impl Accounts {
    /// The tenant's local accounts, plus `also` (an account of another source being renamed).
    async fn load(state: &AppState, tenant: &str, also: Option<&User>) -> ScimResult<Self> {
        let users: Vec<User> = state
            .db
            .list_users(tenant)
            .await?
            .into_iter()
            .filter(|u| u.source == UserSource::Local || also.is_some_and(|a| a.id == u.id))
            .collect();
        let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
        let pairs = state.db.groups_of_users(tenant, &ids).await?;
        let users = users
            .into_iter()
            .map(|u| {
                let mine = pairs
                    .iter()
                    .filter(|(id, _)| *id == u.id)
                    .map(|(_, g)| g.id)
                    .collect();
                (u, mine)
            })
            .collect();
        Ok(Accounts {
            groups: state.db.list_groups(tenant).await?,
            users,
        })
    }

    /// After one user is renamed.
    fn with_username(&self, id: Uuid, username: &str) -> Self {
        let mut next = self.clone();
        for (u, _) in next.users.iter_mut().filter(|(u, _)| u.id == id) {
            username.clone_into(&mut u.username);
        }
        next
    }

    /// After a group (a new one when `id` is not in the tenant yet) gets `name` and exactly
    /// `members`.
    fn with_group(&self, tenant: &str, id: Uuid, name: &str, members: &[Uuid]) -> Self {
        let mut next = self.clone();
        match next.groups.iter_mut().find(|g| g.id == id) {
            Some(g) => name.clone_into(&mut g.name),
            None => next.groups.push(Group {
                tenant: tenant.to_owned(),
                id,
                name: name.to_owned(),
                description: String::new(),
                external_id: None,
            }),
        }
        for (u, mine) in &mut next.users {
            mine.retain(|g| *g != id);
            if members.contains(&u.id) {
                mine.push(id);
            }
        }
        next
    }

    /// What `user` (one of `self.users`) may do, group names mapped to ids with `ids` (the
    /// same for both sides of a comparison, so that only memberships and names count). Whether
    /// the account is enabled does not count: only SCIM disables accounts, and enabling one
    /// again gives back what it had.
    fn grants(
        &self,
        user: &User,
        mine: &[Uuid],
        ids: &[Group],
        profiles: &[Arc<Profile>],
    ) -> Grants {
        let names: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| mine.contains(&g.id))
            .map(|g| g.name.as_str())
            .collect();
        resolve_subject(user.id, &user.username, &names, ids, profiles)
    }
}

/// Refuses (403) a SCIM change after which any account of `before` may do more than it could;
/// the refusal is audited (`scim.refused`), since it is what a stolen SCIM token would try.
async fn refuse_widening(
    state: &AppState,
    tenant: &str,
    before: &Accounts,
    after: &Accounts,
) -> ScimResult<()> {
    let profiles = state.access.profiles(tenant);
    for (u, mine) in &after.users {
        let Some((was, was_mine)) = before.users.iter().find(|(b, _)| b.id == u.id) else {
            continue;
        };
        let then = before.grants(was, was_mine, &after.groups, &profiles);
        let now = after.grants(u, mine, &after.groups, &profiles);
        if let Err(right) = then.covers(&now) {
            let whose = if u.source == UserSource::Local {
                "the local account"
            } else {
                "the account"
            };
            let detail = format!(
                "this change would give {whose} {:?} {right}: SCIM never widens a local \
                 password account (its rights come from an admin in the portal) and a rename \
                 never changes what an account may do",
                was.username
            );
            audit(
                state,
                tenant,
                "scim.refused",
                "user",
                u.id,
                json!({"userName": was.username, "detail": detail}),
            )
            .await?;
            return Err(ScimError::new(StatusCode::FORBIDDEN, None, detail));
        }
    }
    Ok(())
}

/// [`refuse_widening`] for a user getting `username` (AccessProfiles may name users).
async fn refuse_user_widening(
    state: &AppState,
    tenant: &str,
    user: &User,
    username: &str,
) -> ScimResult<()> {
    if user.username == username {
        return Ok(());
    }
    let before = Accounts::load(state, tenant, Some(user)).await?;
    let after = before.with_username(user.id, username);
    refuse_widening(state, tenant, &before, &after).await
}

/// [`refuse_widening`] for a group getting `name` and `members`.
async fn refuse_group_widening(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    name: &str,
    members: &[Uuid],
) -> ScimResult<()> {
    let before = Accounts::load(state, tenant, None).await?;
    let after = before.with_group(tenant, id, name, members);
    refuse_widening(state, tenant, &before, &after).await
}

// ---- Discovery (RFC 7644 §4) ----

async fn service_provider_config(State(state): St, headers: HeaderMap) -> ScimResult<Response> {
    authorize(&state, &headers)?;
    Ok(scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_COUNT},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{
                "type": "oauthbearertoken", "name": "Bearer token",
                "description": "The token configured in CALLVAULT_SCIM_TOKEN_FILE",
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"},
        }),
    ))
}

async fn resource_types(State(state): St, headers: HeaderMap) -> ScimResult<Response> {
    authorize(&state, &headers)?;
    let types = vec![
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User", "name": "User",
               "endpoint": "/Users", "schema": USER_SCHEMA, "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/User"}}),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "Group", "name": "Group",
               "endpoint": "/Groups", "schema": GROUP_SCHEMA, "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/Group"}}),
    ];
    Ok(list_response(2, 1, types))
}

fn attr(name: &str, kind: &str, multi: bool, required: bool, mutability: &str) -> Value {
    json!({"name": name, "type": kind, "multiValued": multi, "required": required,
           "caseExact": false, "mutability": mutability, "returned": "default", "uniqueness": if name == "userName" { "server" } else { "none" }})
}

async fn schemas(State(state): St, headers: HeaderMap) -> ScimResult<Response> {
    authorize(&state, &headers)?;
    let user = json!({"id": USER_SCHEMA, "name": "User", "attributes": [
        attr("userName", "string", false, true, "readWrite"),
        attr("displayName", "string", false, false, "readWrite"),
        attr("active", "boolean", false, false, "readWrite"),
        attr("emails", "complex", true, false, "readWrite"),
        attr("phoneNumbers", "complex", true, false, "readWrite"),
        attr("groups", "complex", true, false, "readOnly"),
    ], "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{USER_SCHEMA}")}});
    let group = json!({"id": GROUP_SCHEMA, "name": "Group", "attributes": [
        attr("displayName", "string", false, true, "readWrite"),
        attr("members", "complex", true, false, "readWrite"),
    ], "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{GROUP_SCHEMA}")}});
    Ok(list_response(2, 1, vec![user, group]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_of_the_supported_form_parse() {
        assert_eq!(
            parse_filter(r#"userName eq "a b""#, &["userName"]).expect("ok"),
            ("userName".into(), "a b".into())
        );
        assert_eq!(
            parse_filter(r#"USERNAME Eq "x""#, &["userName"])
                .expect("ok")
                .0,
            "userName"
        );
        for bad in [r#"userName co "x""#, "userName eq x", r#"title eq "x""#, ""] {
            assert!(parse_filter(bad, &["userName"]).is_err(), "{bad}");
        }
        assert_eq!(
            filter_value(r#"members[value eq "abc"]"#),
            Some("abc".into())
        );
    }

    #[test]
    fn user_attributes_apply() {
        let mut d = UserDoc::from_resource(&json!({
            "schemas": [USER_SCHEMA], "userName": "ann", "emails": [{"value": "a@x", "primary": true}],
            "phoneNumbers": [{"value": "100"}, {"value": "101"}], "active": true,
        }))
        .expect("doc");
        assert_eq!(d.numbers, vec!["100", "101"]);
        d.set("active", &json!("False"), Op::Replace)
            .expect("string boolean");
        assert!(!d.active);
        d.set(r#"phoneNumbers[value eq "100"]"#, &Value::Null, Op::Remove)
            .expect("remove one");
        assert_eq!(d.numbers, vec!["101"]);
        d.set("phoneNumbers", &json!([{"value": "102"}]), Op::Add)
            .expect("add");
        assert_eq!(d.numbers, vec!["101", "102"]);
        assert!(d.set("nonsense", &json!(1), Op::Replace).is_err());
        assert!(
            UserDoc::from_resource(&json!({"displayName": "x"})).is_err(),
            "userName required"
        );
    }
}
