//! Read-only admin views: groups, the declared resources (spec and status, as the access
//! source holds them: they are changed with kubectl or the resource files, not here), alarms
//! and the activity log; and the calls being recorded now (active calls within the caller's
//! scope, and the caller's own).

use std::collections::HashMap;

use axum::extract::State;
use callvault_config::profiles::{Conflict, Directory, Selection, conflict_message, ownership};
use callvault_crds::validate::Resource;
use callvault_crds::{condition_type as ct, reason};
use callvault_store::db::{
    AccessScope, ActivityEntry, Alarm, Group, Note, Recording, RecordingStatus, SearchQuery,
    SortDirection, Tag,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::extract::{Json, Path, Query};
use super::{Caller, St};
use crate::AppState;
use crate::access::AdminPermission;
use crate::access::{Action, Grants};
use crate::error::{ApiError, ApiResult};

/// Most rows one admin list returns.
const MAX_ROWS: i64 = 1000;

/// A group of the tenant's directory with its members' usernames.
#[derive(Debug, Serialize)]
pub struct GroupView {
    #[serde(flatten)]
    pub group: Group,
    pub members: Vec<String>,
}

pub async fn groups(State(state): St, c: Caller) -> ApiResult<Json<Vec<GroupView>>> {
    c.require_any(&[AdminPermission::ConfigureSystem])?;
    let mut out = Vec::new();
    for group in state.db.list_groups(&c.tenant).await? {
        let mut members: Vec<String> = state
            .db
            .group_members(&c.tenant, group.id)
            .await?
            .into_iter()
            .map(|u| u.username)
            .collect();
        members.sort();
        out.push(GroupView { group, members });
    }
    out.sort_by(|a, b| a.group.name.cmp(&b.group.name));
    Ok(Json(out))
}

/// One declared resource: its spec and its status as last observed (empty when no controller
/// has reported one, e.g. in standalone). `spec` and `status` keep the resource's own
/// camelCase field names, as in its YAML.
#[derive(Debug, Serialize, PartialEq)]
pub struct ResourceView {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub spec: Value,
    pub status: Value,
}

/// The resource kinds the admin screens list, by the path segment that names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RecordingProfiles,
    AccessProfiles,
    StorageTargets,
    Connectors,
    SpeechJobs,
}

impl Kind {
    fn matches(self, r: &Resource) -> bool {
        matches!(
            (self, r),
            (Kind::RecordingProfiles, Resource::RecordingProfile(_))
                | (Kind::AccessProfiles, Resource::AccessProfile(_))
                | (Kind::StorageTargets, Resource::StorageTarget(_))
                | (Kind::Connectors, Resource::Connector(_))
                | (Kind::SpeechJobs, Resource::SpeechJob(_))
        )
    }

    /// Who may see this kind: its own manage permission where one exists, and configureSystem.
    fn permissions(self) -> &'static [AdminPermission] {
        match self {
            Kind::RecordingProfiles => &[
                AdminPermission::ManageRecordingProfiles,
                AdminPermission::ConfigureSystem,
            ],
            Kind::AccessProfiles => &[
                AdminPermission::ManageAccessProfiles,
                AdminPermission::ConfigureSystem,
            ],
            Kind::StorageTargets | Kind::Connectors | Kind::SpeechJobs => {
                &[AdminPermission::ConfigureSystem]
            }
        }
    }
}

/// The spec and status of one resource, whatever its kind. Pure.
pub fn view(r: &Resource) -> ResourceView {
    let value = match r {
        Resource::RecordingProfile(x) => serde_json::to_value(x),
        Resource::AccessProfile(x) => serde_json::to_value(x),
        Resource::StorageTarget(x) => serde_json::to_value(x),
        Resource::Connector(x) => serde_json::to_value(x),
        Resource::SpeechJob(x) => serde_json::to_value(x),
    }
    .unwrap_or(Value::Null);
    ResourceView {
        kind: r.kind().to_owned(),
        name: r.name().to_owned(),
        namespace: value["metadata"]["namespace"].as_str().map(str::to_owned),
        spec: value.get("spec").cloned().unwrap_or(Value::Null),
        status: value.get("status").cloned().unwrap_or(Value::Null),
    }
}

async fn list_kind(state: &AppState, c: &Caller, kind: Kind) -> ApiResult<Json<Vec<ResourceView>>> {
    c.require_any(kind.permissions())?;
    let mut out: Vec<ResourceView> = state
        .access
        .resources(&c.tenant)
        .iter()
        .filter(|r| kind.matches(r))
        .map(view)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out))
}

/// The RecordingProfiles, each with the users it selects that an older profile records (one
/// profile per user): `status.conflicts` and a `Conflict` condition naming them, decided here
/// from the directory as it is now, as the recorders decide it, so the screen shows it in
/// both modes.
pub async fn recording_profiles(State(s): St, c: Caller) -> ApiResult<Json<Vec<ResourceView>>> {
    let Json(mut views) = list_kind(&s, &c, Kind::RecordingProfiles).await?;
    let selections: Vec<Selection> = s
        .access
        .resources(&c.tenant)
        .iter()
        .filter_map(|r| match r {
            Resource::RecordingProfile(p) if !p.spec.disabled => Some(selection(p)),
            _ => None,
        })
        .collect();
    let directory = Directory::load(&s.db, &c.tenant).await?;
    let owners = ownership(&selections, &directory);
    for v in &mut views {
        let Some(own) = owners.get(&v.name) else {
            continue;
        };
        with_conflicts(&mut v.status, &own.conflicts);
    }
    Ok(Json(views))
}

/// The profile's user selection and age (`metadata.creationTimestamp`; none for a profile from
/// a resource file, which then counts as newer than dated ones, and by name among undated).
fn selection(p: &callvault_crds::RecordingProfile) -> Selection {
    Selection {
        name: p.metadata.name.clone().unwrap_or_default(),
        all_users: p.spec.selector.all_users,
        groups: p.spec.selector.groups.clone(),
        created: p
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
    }
}

/// Sets `status.conflicts` and the `Conflict` condition (replacing a reported one).
fn with_conflicts(status: &mut Value, conflicts: &[Conflict]) {
    if !status.is_object() {
        *status = json!({});
    }
    let condition = if conflicts.is_empty() {
        json!({"type": ct::CONFLICT, "status": "False", "reason": reason::NO_CONFLICT,
               "message": "no user of this profile is recorded by another profile"})
    } else {
        json!({"type": ct::CONFLICT, "status": "True", "reason": reason::USER_CONFLICT,
               "message": conflict_message(conflicts.iter().map(|c| (c.user.as_str(), c.profile.as_str())))})
    };
    let mut list: Vec<Value> = status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != ct::CONFLICT)
        .collect();
    list.push(condition);
    status["conditions"] = Value::Array(list);
    status["conflicts"] = json!(conflicts);
}

pub async fn access_profiles(State(s): St, c: Caller) -> ApiResult<Json<Vec<ResourceView>>> {
    list_kind(&s, &c, Kind::AccessProfiles).await
}

pub async fn storage_targets(State(s): St, c: Caller) -> ApiResult<Json<Vec<ResourceView>>> {
    list_kind(&s, &c, Kind::StorageTargets).await
}

pub async fn connectors(State(s): St, c: Caller) -> ApiResult<Json<Vec<ResourceView>>> {
    list_kind(&s, &c, Kind::Connectors).await
}

pub async fn speech_jobs(State(s): St, c: Caller) -> ApiResult<Json<Vec<ResourceView>>> {
    list_kind(&s, &c, Kind::SpeechJobs).await
}

/// Whether the tenant declares a resource `name` of the kind `kind` accepts.
fn declared(state: &AppState, tenant: &str, name: &str, kind: fn(&Resource) -> bool) -> bool {
    state
        .access
        .resources(tenant)
        .iter()
        .any(|r| kind(r) && r.name() == name)
}

/// "Test connection": runs the StorageTarget's connection test (write, read back, delete a
/// probe object) now and answers with each step, as the status condition reports it. For
/// admins who configure the system; audited, since it writes to the target.
pub async fn test_storage_target(
    State(state): St,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_any(&[AdminPermission::ConfigureSystem])?;
    if !declared(&state, &c.tenant, &name, |r| {
        matches!(r, Resource::StorageTarget(_))
    }) {
        return Err(ApiError::not_found(format!("StorageTarget {name}")));
    }
    let Some(storage) = state.storages.get(&name) else {
        return Err(ApiError::new(
            crate::Code::Conflict,
            format!("StorageTarget {name} is not open in the portal: see its status for why"),
        ));
    };
    let report = storage
        .probe(&callvault_store::objstore::ProbeOptions::default())
        .await;
    let out = serde_json::json!({
        "name": name,
        "succeeded": report.succeeded(),
        "reason": report.condition_reason(),
        "message": report.condition_message(),
        "report": report,
    });
    c.audit(
        &state,
        "storage_target.test",
        "storage_target",
        name.clone(),
        serde_json::json!({ "succeeded": out["succeeded"], "reason": out["reason"] }),
    )
    .await?;
    Ok(Json(out))
}

/// "Run now": starts a SpeechJob's transcription outside its schedule. For admins who
/// configure the system; audited.
pub async fn run_speech_job(
    State(state): St,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    c.require_any(&[AdminPermission::ConfigureSystem])?;
    if !declared(&state, &c.tenant, &name, |r| {
        matches!(r, Resource::SpeechJob(_))
    }) {
        return Err(ApiError::not_found(format!("SpeechJob {name}")));
    }
    let how = state
        .jobs
        .run_speech_job(&c.tenant, &name)
        .await
        .map_err(|why| {
            ApiError::new(
                crate::Code::Conflict,
                format!("SpeechJob {name} cannot be started now: {why}"),
            )
        })?;
    c.audit(
        &state,
        "speech_job.run",
        "speech_job",
        name.clone(),
        serde_json::json!({ "how": how }),
    )
    .await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(serde_json::json!({ "name": name, "started": how })),
    ))
}

#[derive(Debug, Deserialize)]
pub struct AlarmParams {
    /// Also cleared alarms (the history), newest first.
    #[serde(default)]
    pub history: bool,
    pub limit: Option<i64>,
}

pub async fn alarms(
    State(state): St,
    c: Caller,
    Query(p): Query<AlarmParams>,
) -> ApiResult<Json<Vec<Alarm>>> {
    c.require_any(&[AdminPermission::ConfigureSystem])?;
    let limit = limit(p.limit)?;
    Ok(Json(
        state.db.list_alarms(&c.tenant, p.history, limit).await?,
    ))
}

#[derive(Debug, Deserialize)]
pub struct ActivityParams {
    /// Entries older than this id (the last id of the previous page).
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

pub async fn activity(
    State(state): St,
    c: Caller,
    Query(p): Query<ActivityParams>,
) -> ApiResult<Json<Vec<ActivityEntry>>> {
    c.require_any(&[AdminPermission::ConfigureSystem])?;
    let limit = limit(p.limit)?;
    Ok(Json(state.db.activity(&c.tenant, p.before, limit).await?))
}

fn limit(asked: Option<i64>) -> ApiResult<i64> {
    match asked {
        None => Ok(200),
        Some(n) if (1..=MAX_ROWS).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!("limit must be 1..={MAX_ROWS}"))),
    }
}

/// A call being recorded, with its user's names for the list.
#[derive(Debug, Serialize)]
pub struct ActiveCall {
    #[serde(flatten)]
    pub recording: Recording,
    pub user_name: Option<String>,
    pub user_display_name: Option<String>,
    /// Its tags and notes, as the list shows them (set from the list while the call lasts).
    pub tags: Vec<Tag>,
    pub notes: Vec<Note>,
    /// What the caller may do on it (as on the call's details), for the list's buttons.
    pub allowed: Vec<Action>,
}

/// The calls being recorded within `scope`, oldest first, with their users' names. The scope
/// is applied by the same query as the Interactions search, so no call outside it is read.
async fn active_in(
    state: &AppState,
    tenant: &str,
    scope: &AccessScope,
    grants: &Grants,
) -> ApiResult<Vec<ActiveCall>> {
    let q = SearchQuery {
        statuses: vec![RecordingStatus::Recording],
        direction: SortDirection::Asc,
        ..Default::default()
    };
    let limit = u32::try_from(MAX_ROWS).unwrap_or(1000);
    let page = state
        .db
        .search_recordings(tenant, scope, &q, limit, None)
        .await?;
    // Annotations of the calls in scope only, two queries for the whole list.
    let ids: Vec<Uuid> = page.items.iter().map(|r| r.id).collect();
    let mut tags: HashMap<Uuid, Vec<Tag>> = HashMap::new();
    for (rec, tag) in state.db.tags_of(tenant, &ids).await? {
        tags.entry(rec).or_default().push(tag);
    }
    let mut notes: HashMap<Uuid, Vec<Note>> = HashMap::new();
    for note in state.db.notes_of(tenant, &ids).await? {
        notes.entry(note.recording_id).or_default().push(note);
    }
    let mut audiences = state.db.audiences_of(tenant, &ids).await?;
    let mut names: HashMap<Uuid, Option<(String, String)>> = HashMap::new();
    let mut out = Vec::with_capacity(page.items.len());
    for recording in page.items {
        let user = match recording.owner_user_id {
            Some(id) => match names.get(&id) {
                Some(known) => known.clone(),
                None => {
                    let u = state.db.user(tenant, id).await?;
                    let u = u.map(|u| (u.username, u.display_name));
                    names.insert(id, u.clone());
                    u
                }
            },
            None => None,
        };
        let audience = audiences.remove(&recording.id).unwrap_or_default();
        let allowed = Action::ALL
            .into_iter()
            .filter(|a| grants.check(*a, &recording, &audience).is_ok())
            .collect();
        out.push(ActiveCall {
            allowed,
            tags: tags.remove(&recording.id).unwrap_or_default(),
            notes: notes.remove(&recording.id).unwrap_or_default(),
            recording,
            user_name: user.as_ref().map(|u| u.0.clone()),
            user_display_name: user.map(|u| u.1),
        });
    }
    Ok(out)
}

/// Active calls the caller's call scope covers (none for scope None).
pub async fn active_calls(State(state): St, c: Caller) -> ApiResult<Json<Vec<ActiveCall>>> {
    Ok(Json(
        active_in(&state, &c.tenant, &c.grants.view, &c.grants).await?,
    ))
}

/// The caller's own active calls (several at once are possible), whatever their call scope.
pub async fn my_active_calls(State(state): St, c: Caller) -> ApiResult<Json<Vec<ActiveCall>>> {
    let own = AccessScope::Own { user_id: c.user.id };
    Ok(Json(active_in(&state, &c.tenant, &own, &c.grants).await?))
}
