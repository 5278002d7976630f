//! Access control, in one place: AccessProfiles come from an [`AccessSource`] (files in
//! standalone, a live Kubernetes watch in a cluster); [`resolve`] turns the profiles naming a
//! user into [`Grants`]; every endpoint asks [`Grants`] (through `api::Caller`) and nothing
//! else. The same source also yields the other declared resources (RecordingProfiles,
//! StorageTargets, Connectors, SpeechJobs) that the admin screens show.
//!
//! Rules (compliance-recorder F-46..F-52, DESIGN §6):
//! - a user's permissions are the union of every AccessProfile naming them (as a user, or
//!   through one of their groups);
//! - an action is allowed on a call only if one profile grants that action *and* has the call
//!   in its scope (so a broad read-only profile and a narrow one with "delete" never combine
//!   into "delete everything");
//! - playing, downloading and exporting audio also need a grant of the recording's key id in
//!   any of the user's profiles; no admin permission overrides that;
//! - calls not assigned to a user are seen only with scope `All`;
//! - impersonation shows the other user's view but never widens rights: audio and admin
//!   permissions also need the impersonating admin's own grants (the intersection);
//! - no admin gives anyone a right they do not hold ([`Grants::covers`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use callvault_crds::access_profile::{AccessProfile, AccessProfileSpec, CallScope};
use callvault_crds::connector::Connector;
use callvault_crds::recording_profile::RecordingProfile;
use callvault_crds::speech_job::SpeechJob;
use callvault_crds::storage_target::StorageTarget;
use callvault_crds::validate::{Resource, validate_yaml};
use callvault_store::db::{AccessScope, Attendance, Audience, Group, Recording, User};
use serde::Serialize;
use uuid::Uuid;

/// One AccessProfile as the portal applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The tenant (namespace) it belongs to.
    pub tenant: String,
    pub name: String,
    pub spec: AccessProfileSpec,
}

impl Profile {
    pub fn from_resource(default_tenant: &str, ap: AccessProfile) -> Self {
        Profile {
            tenant: ap
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| default_tenant.to_owned()),
            name: ap.metadata.name.clone().unwrap_or_default(),
            spec: ap.spec,
        }
    }
}

/// The tenant (namespace) a resource belongs to.
fn tenant_of(default_tenant: &str, r: &Resource) -> String {
    let meta = match r {
        Resource::RecordingProfile(x) => &x.metadata,
        Resource::AccessProfile(x) => &x.metadata,
        Resource::StorageTarget(x) => &x.metadata,
        Resource::Connector(x) => &x.metadata,
        Resource::SpeechJob(x) => &x.metadata,
    };
    meta.namespace
        .clone()
        .unwrap_or_else(|| default_tenant.to_owned())
}

/// Where AccessProfiles (and the other declared resources) come from.
pub trait AccessSource: Send + Sync + fmt::Debug + 'static {
    /// The tenant's profiles as of now.
    fn profiles(&self, tenant: &str) -> Vec<Arc<Profile>>;
    /// The tenant's declared resources of every kind (AccessProfiles included), with their
    /// status as last observed, as of now.
    fn resources(&self, tenant: &str) -> Vec<Resource>;
    /// Whether the source has loaded its initial state (the portal is not ready before).
    fn is_ready(&self) -> bool;
}

/// Errors loading AccessProfiles.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Resources from YAML files (standalone): every `*.yaml`/`*.yml` in a directory, validated
/// like the API server would. AccessProfiles apply to access; the other kinds are shown.
#[derive(Debug)]
pub struct FileAccessSource {
    dir: Option<PathBuf>,
    tenant: String,
    profiles: RwLock<Vec<Arc<Profile>>>,
    /// Every resource but the AccessProfiles (those are in `profiles`), with its tenant.
    others: RwLock<Vec<(String, Resource)>>,
}

impl FileAccessSource {
    /// Loads `dir`; profiles without a namespace belong to `tenant`. Any invalid file fails
    /// the whole load, naming the file and the field.
    pub fn load_dir(dir: &Path, tenant: &str) -> Result<Self, AccessError> {
        let source = FileAccessSource {
            dir: Some(dir.to_owned()),
            tenant: tenant.to_owned(),
            profiles: RwLock::new(Vec::new()),
            others: RwLock::new(Vec::new()),
        };
        source.reload()?;
        Ok(source)
    }

    /// A fixed set of profiles (embedding, tests).
    pub fn from_profiles(tenant: &str, profiles: Vec<AccessProfile>) -> Self {
        FileAccessSource {
            dir: None,
            tenant: tenant.to_owned(),
            profiles: RwLock::new(
                profiles
                    .into_iter()
                    .map(|p| Arc::new(Profile::from_resource(tenant, p)))
                    .collect(),
            ),
            others: RwLock::new(Vec::new()),
        }
    }

    /// A fixed set of resources of any kind (embedding, standalone, tests).
    pub fn from_resources(tenant: &str, resources: Vec<Resource>) -> Self {
        let source = Self::from_profiles(tenant, vec![]);
        source.set_resources(resources);
        source
    }

    /// Replaces the profiles, keeping the other kinds (embedding, tests: "edit the file").
    pub fn set(&self, profiles: Vec<AccessProfile>) {
        let list = profiles
            .into_iter()
            .map(|p| Arc::new(Profile::from_resource(&self.tenant, p)))
            .collect();
        *self.profiles.write().unwrap_or_else(|e| e.into_inner()) = list;
    }

    /// Replaces every resource, AccessProfiles included.
    pub fn set_resources(&self, resources: Vec<Resource>) {
        let mut profiles = Vec::new();
        let mut others = Vec::new();
        for r in resources {
            match r {
                Resource::AccessProfile(ap) => {
                    profiles.push(Arc::new(Profile::from_resource(&self.tenant, ap)));
                }
                r => others.push((tenant_of(&self.tenant, &r), r)),
            }
        }
        *self.profiles.write().unwrap_or_else(|e| e.into_inner()) = profiles;
        *self.others.write().unwrap_or_else(|e| e.into_inner()) = others;
    }

    /// Re-reads the directory; on error the previous profiles stay in force.
    pub fn reload(&self) -> Result<usize, AccessError> {
        let Some(dir) = &self.dir else {
            return Ok(self.profiles(&self.tenant).len());
        };
        let entries = std::fs::read_dir(dir).map_err(|source| AccessError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        let mut list = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| AccessError::Io {
                path: path.clone(),
                source,
            })?;
            let resources = validate_yaml(&text).map_err(|errors| AccessError::Invalid {
                path: path.clone(),
                message: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
            list.extend(resources);
        }
        let n = list
            .iter()
            .filter(|r| matches!(r, Resource::AccessProfile(_)))
            .count();
        self.set_resources(list);
        Ok(n)
    }
}

impl AccessSource for FileAccessSource {
    fn profiles(&self, tenant: &str) -> Vec<Arc<Profile>> {
        self.profiles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| p.tenant == tenant)
            .cloned()
            .collect()
    }

    fn resources(&self, tenant: &str) -> Vec<Resource> {
        let profiles = self.profiles(tenant).into_iter().map(|p| {
            let mut ap = AccessProfile::new(&p.name, p.spec.clone());
            ap.metadata.namespace = Some(p.tenant.clone());
            Resource::AccessProfile(ap)
        });
        let others = self.others.read().unwrap_or_else(|e| e.into_inner());
        profiles
            .chain(
                others
                    .iter()
                    .filter(|(t, _)| t == tenant)
                    .map(|(_, r)| r.clone()),
            )
            .collect()
    }

    fn is_ready(&self) -> bool {
        true
    }
}

/// The reflector stores of one resource kind: one per watched namespace, or one over all.
type Stores<K> = Vec<kube::runtime::reflector::Store<K>>;

/// Resources watched live through the Kubernetes API: AccessProfiles (applied to access) and
/// the kinds the admin screens show. Changes apply to the next request.
#[derive(Debug, Clone)]
pub struct KubeAccessSource {
    access_profiles: Stores<AccessProfile>,
    recording_profiles: Stores<RecordingProfile>,
    storage_targets: Stores<StorageTarget>,
    connectors: Stores<Connector>,
    speech_jobs: Stores<SpeechJob>,
    ready: Arc<AtomicBool>,
}

/// Starts watching one kind in `namespaces` (empty = every namespace) on the current tokio
/// runtime, until the process ends, retrying with backoff on API errors.
fn watch<K>(client: &kube::Client, namespaces: &[String]) -> Stores<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};

    let apis: Vec<kube::Api<K>> = if namespaces.is_empty() {
        vec![kube::Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| kube::Api::namespaced(client.clone(), ns))
            .collect()
    };
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    apis.into_iter()
        .map(|api| {
            let (reader, writer) = reflector::store();
            let stream = reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .touched_objects();
            let kind = kind.clone();
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(item) = stream.next().await {
                    if let Err(e) = item {
                        tracing::warn!(error = %e, kind, "watching resources");
                    }
                }
            });
            reader
        })
        .collect()
}

/// Waits until every store has its initial list; false if a watch ended first.
async fn all_ready<K>(stores: &Stores<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    for s in stores {
        if s.wait_until_ready().await.is_err() {
            return false;
        }
    }
    true
}

/// The objects of `stores` in namespace `tenant`, wrapped as [`Resource`]s.
fn in_tenant<K>(stores: &Stores<K>, tenant: &str, wrap: fn(K) -> Resource) -> Vec<Resource>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores
        .iter()
        .flat_map(|s| s.state())
        .filter(|o| o.meta().namespace.as_deref() == Some(tenant))
        .map(|o| wrap((*o).clone()))
        .collect()
}

impl KubeAccessSource {
    /// Connects with the in-cluster (or kubeconfig) credentials and starts watching; "Run
    /// now" goes through the same client.
    pub async fn connect(
        namespaces: &[String],
    ) -> Result<(Self, crate::jobs::AnnotateRunNow), kube::Error> {
        let client = kube::Client::try_default().await?;
        Ok((
            Self::start(client.clone(), namespaces),
            crate::jobs::AnnotateRunNow::new(client),
        ))
    }

    /// Starts watching every kind; `namespaces` empty = every namespace. Ready once each
    /// kind's initial list is loaded.
    pub fn start(client: kube::Client, namespaces: &[String]) -> Self {
        let source = KubeAccessSource {
            access_profiles: watch(&client, namespaces),
            recording_profiles: watch(&client, namespaces),
            storage_targets: watch(&client, namespaces),
            connectors: watch(&client, namespaces),
            speech_jobs: watch(&client, namespaces),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let waiting = source.clone();
        tokio::spawn(async move {
            let loaded = all_ready(&waiting.access_profiles).await
                && all_ready(&waiting.recording_profiles).await
                && all_ready(&waiting.storage_targets).await
                && all_ready(&waiting.connectors).await
                && all_ready(&waiting.speech_jobs).await;
            if loaded {
                waiting.ready.store(true, Ordering::SeqCst);
                tracing::info!("resources loaded from the Kubernetes API");
            }
        });
        source
    }
}

impl AccessSource for KubeAccessSource {
    fn profiles(&self, tenant: &str) -> Vec<Arc<Profile>> {
        self.access_profiles
            .iter()
            .flat_map(|s| s.state())
            .filter(|ap| ap.metadata.namespace.as_deref() == Some(tenant))
            .map(|ap| Arc::new(Profile::from_resource(tenant, (*ap).clone())))
            .collect()
    }

    fn resources(&self, tenant: &str) -> Vec<Resource> {
        let mut all = in_tenant(&self.access_profiles, tenant, Resource::AccessProfile);
        all.extend(in_tenant(
            &self.recording_profiles,
            tenant,
            Resource::RecordingProfile,
        ));
        all.extend(in_tenant(
            &self.storage_targets,
            tenant,
            Resource::StorageTarget,
        ));
        all.extend(in_tenant(&self.connectors, tenant, Resource::Connector));
        all.extend(in_tenant(&self.speech_jobs, tenant, Resource::SpeechJob));
        all
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Actions on calls (AccessProfile `calls.actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Play,
    Download,
    Export,
    Tag,
    AddNotes,
    DeleteOthersNotes,
    DeleteCalls,
    LegalHold,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Play,
        Action::Download,
        Action::Export,
        Action::Tag,
        Action::AddNotes,
        Action::DeleteOthersNotes,
        Action::DeleteCalls,
        Action::LegalHold,
    ];

    /// Whether the action reveals audio, and so also needs a key grant.
    pub fn needs_key(self) -> bool {
        matches!(self, Action::Play | Action::Download | Action::Export)
    }

    fn granted_by(self, spec: &AccessProfileSpec) -> bool {
        let a = &spec.calls.actions;
        match self {
            Action::Play => a.play,
            Action::Download => a.download,
            Action::Export => a.export,
            Action::Tag => a.tag,
            Action::AddNotes => a.add_notes,
            Action::DeleteOthersNotes => a.delete_others_notes,
            Action::DeleteCalls => a.delete_calls,
            Action::LegalHold => a.legal_hold,
        }
    }
}

/// Administrative permissions (AccessProfile `admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AdminPermission {
    ManageRecordingProfiles,
    ManageAccessProfiles,
    ManageTags,
    ConfigureSystem,
    AuditTrail,
}

impl AdminPermission {
    pub const ALL: [AdminPermission; 5] = [
        AdminPermission::ManageRecordingProfiles,
        AdminPermission::ManageAccessProfiles,
        AdminPermission::ManageTags,
        AdminPermission::ConfigureSystem,
        AdminPermission::AuditTrail,
    ];

    fn granted_by(self, spec: &AccessProfileSpec) -> bool {
        let a = &spec.admin;
        match self {
            AdminPermission::ManageRecordingProfiles => a.manage_recording_profiles,
            AdminPermission::ManageAccessProfiles => a.manage_access_profiles,
            AdminPermission::ManageTags => a.manage_tags,
            AdminPermission::ConfigureSystem => a.configure_system,
            AdminPermission::AuditTrail => a.audit_trail,
        }
    }
}

/// What one user may see and do, resolved from their profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub user_id: Uuid,
    /// Names of the profiles that apply.
    pub profiles: Vec<String>,
    /// Calls visible at all: the union of every profile's scope.
    pub view: AccessScope,
    /// Per action, the calls it is allowed on (union over profiles granting it).
    pub actions: HashMap<Action, AccessScope>,
    pub admin: BTreeSet<AdminPermission>,
    /// Key ids (lowercase hex) granted.
    pub keys: BTreeSet<String>,
    /// While impersonating: the admin's own grants, which audio, key grants and admin
    /// permissions also need.
    pub impersonator: Option<Box<Grants>>,
}

/// The union of two scopes for the same user.
pub fn union(a: &AccessScope, b: &AccessScope) -> AccessScope {
    use AccessScope as S;
    match (a, b) {
        (S::All, _) | (_, S::All) => S::All,
        (S::None, x) | (x, S::None) => x.clone(),
        (S::Own { user_id }, S::Own { .. }) => S::Own { user_id: *user_id },
        (S::Own { user_id }, S::OwnAndGroups { groups, .. })
        | (S::OwnAndGroups { groups, .. }, S::Own { user_id }) => S::OwnAndGroups {
            user_id: *user_id,
            groups: groups.clone(),
        },
        (
            S::OwnAndGroups {
                user_id,
                groups: g1,
            },
            S::OwnAndGroups { groups: g2, .. },
        ) => {
            let mut groups: Vec<Uuid> = g1.iter().chain(g2).copied().collect();
            groups.sort();
            groups.dedup();
            S::OwnAndGroups {
                user_id: *user_id,
                groups,
            }
        }
    }
}

/// Whether a call (its owner, the groups captured on it, a meeting's attendees) is inside a
/// scope: a meeting a user attended is one of their own calls.
pub fn scope_contains(scope: &AccessScope, owner: Option<Uuid>, audience: &Audience) -> bool {
    in_scope(
        scope,
        |user| owner == Some(user) || audience.attendance(user).is_some(),
        &audience.groups,
    )
}

/// Whether a user (their id and current groups) is inside a scope: whose legal hold a
/// holder of the scope may set.
pub fn scope_covers_user(scope: &AccessScope, target: Uuid, target_groups: &[Uuid]) -> bool {
    in_scope(scope, |user| user == target, target_groups)
}

/// The one scope rule: `own` says whose the thing is, `groups` the groups it belongs to.
fn in_scope(scope: &AccessScope, own: impl Fn(Uuid) -> bool, groups: &[Uuid]) -> bool {
    match scope {
        AccessScope::None => false,
        AccessScope::All => true,
        AccessScope::Own { user_id } => own(*user_id),
        AccessScope::OwnAndGroups {
            user_id,
            groups: scoped,
        } => own(*user_id) || groups.iter().any(|g| scoped.contains(g)),
    }
}

/// Resolves a user's grants from the tenant's profiles. `user_groups` are the user's groups,
/// `tenant_groups` every group of the tenant (to map the group names profiles use to ids).
/// Pure, so every rule is unit-tested.
pub fn resolve(
    user: &User,
    user_groups: &[Group],
    tenant_groups: &[Group],
    profiles: &[Arc<Profile>],
) -> Grants {
    let names: Vec<&str> = user_groups.iter().map(|g| g.name.as_str()).collect();
    resolve_subject(user.id, &user.username, &names, tenant_groups, profiles)
}

/// [`resolve`] for a user by id, name and group names (one that does not exist yet, or with
/// the groups a change would give them).
pub fn resolve_subject(
    user_id: Uuid,
    username: &str,
    group_names: &[&str],
    tenant_groups: &[Group],
    profiles: &[Arc<Profile>],
) -> Grants {
    let mine: BTreeSet<&str> = group_names.iter().copied().collect();
    let ids: HashMap<&str, Uuid> = tenant_groups
        .iter()
        .map(|g| (g.name.as_str(), g.id))
        .collect();
    let mut grants = Grants {
        user_id,
        profiles: Vec::new(),
        view: AccessScope::None,
        actions: HashMap::new(),
        admin: BTreeSet::new(),
        keys: BTreeSet::new(),
        impersonator: None,
    };
    for p in profiles {
        let s = &p.spec.subjects;
        let applies = s.users.iter().any(|u| u == username)
            || s.groups.iter().any(|g| mine.contains(g.as_str()));
        if !applies {
            continue;
        }
        grants.profiles.push(p.name.clone());
        let scope = match p.spec.calls.scope {
            CallScope::None => AccessScope::None,
            CallScope::Own => AccessScope::Own { user_id },
            CallScope::OwnAndGroups => {
                let mut groups: Vec<Uuid> = p
                    .spec
                    .calls
                    .groups
                    .iter()
                    .filter_map(|n| ids.get(n.as_str()).copied())
                    .collect();
                groups.sort();
                groups.dedup();
                AccessScope::OwnAndGroups { user_id, groups }
            }
            CallScope::All => AccessScope::All,
        };
        grants.view = union(&grants.view, &scope);
        for action in Action::ALL {
            if action.granted_by(&p.spec) {
                let entry = grants.actions.entry(action).or_insert(AccessScope::None);
                *entry = union(entry, &scope);
            }
        }
        for perm in AdminPermission::ALL {
            if perm.granted_by(&p.spec) {
                grants.admin.insert(perm);
            }
        }
        grants
            .keys
            .extend(p.spec.keys.iter().map(|k| k.to_ascii_lowercase()));
    }
    grants
}

/// The actions on a call that assigning it to a user gives anyone (the call becomes theirs
/// and carries their groups): each action the user's grants allow on their own calls but not
/// already on every call, and each action of every profile whose scope names one of the
/// user's groups (that profile's subjects then have the call in scope). An admin may assign a
/// call only when they hold every one of these on it themselves.
pub fn gained_by_assignment(
    user: &Grants,
    user_group_names: &[&str],
    profiles: &[Arc<Profile>],
) -> BTreeSet<Action> {
    let mut gained: BTreeSet<Action> = user
        .actions
        .iter()
        .filter(|(_, scope)| !matches!(scope, AccessScope::None | AccessScope::All))
        .map(|(a, _)| *a)
        .collect();
    for p in profiles {
        let names_a_group = matches!(p.spec.calls.scope, CallScope::OwnAndGroups)
            && p.spec
                .calls
                .groups
                .iter()
                .any(|g| user_group_names.contains(&g.as_str()));
        if names_a_group {
            gained.extend(Action::ALL.into_iter().filter(|a| a.granted_by(&p.spec)));
        }
    }
    gained
}

/// Whether a holder of scope `mine` holds every call right that `theirs` gives its holder.
/// Scopes are relative to their holder: `Own` covers `Own` (each their own calls), and
/// `OwnAndGroups` covers the groups it names.
fn scope_covers(mine: &AccessScope, theirs: &AccessScope) -> bool {
    use AccessScope as S;
    match (mine, theirs) {
        (_, S::None) | (S::All, _) => true,
        (_, S::All) | (S::None, _) => false,
        (S::Own { .. } | S::OwnAndGroups { .. }, S::Own { .. }) => true,
        (S::Own { .. }, S::OwnAndGroups { groups, .. }) => groups.is_empty(),
        (S::OwnAndGroups { groups: a, .. }, S::OwnAndGroups { groups: b, .. }) => {
            b.iter().all(|g| a.contains(g))
        }
    }
}

fn scope_name(s: &AccessScope) -> &'static str {
    match s {
        AccessScope::None => "None",
        AccessScope::Own { .. } => "Own",
        AccessScope::OwnAndGroups { .. } => "OwnAndGroups",
        AccessScope::All => "All",
    }
}

/// Why an action on a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The call is not visible at all (answered as "not found", so its existence leaks not).
    NotVisible,
    /// Visible, but no profile grants the action on it.
    Action,
    /// Allowed, but the recording's key is not granted.
    Key,
}

impl Grants {
    /// The scope of an action (None when no profile grants it).
    pub fn action_scope(&self, action: Action) -> AccessScope {
        self.actions
            .get(&action)
            .cloned()
            .unwrap_or(AccessScope::None)
    }

    pub fn has_admin(&self, perm: AdminPermission) -> bool {
        self.admin.contains(&perm) && self.impersonator.as_ref().is_none_or(|g| g.has_admin(perm))
    }

    pub fn can_see(&self, rec: &Recording, audience: &Audience) -> bool {
        scope_contains(&self.view, rec.owner_user_id, audience)
    }

    /// The part of a meeting `action` is limited to: `Some` when the caller reaches the call
    /// only because they attended it (F-40: a user plays the part they attended), `None` when
    /// their scope reaches the whole call.
    pub fn attended_part(
        &self,
        action: Action,
        owner: Option<Uuid>,
        audience: &Audience,
    ) -> Option<Attendance> {
        let attendance = *audience.attendance(self.user_id)?;
        // Whether the call is in reach without counting attendance.
        let reaches = |scope: &AccessScope| in_scope(scope, |u| owner == Some(u), &audience.groups);
        let whole = reaches(&self.view) && reaches(&self.action_scope(action));
        (!whole).then_some(attendance)
    }

    pub fn key_granted(&self, key_id: Option<&str>) -> bool {
        key_id.is_some_and(|k| self.keys.contains(&k.to_ascii_lowercase()))
            && self
                .impersonator
                .as_ref()
                .is_none_or(|g| g.key_granted(key_id))
    }

    /// Whether these grants hold every right `other` gives (admin permissions, key grants,
    /// the visible calls and each action's calls); else the first right missing, named. An
    /// admin may give a user (by creating them in groups, resetting their password, ...) only
    /// rights this says they hold.
    pub fn covers(&self, other: &Grants) -> Result<(), String> {
        if let Some(p) = other.admin.iter().find(|p| !self.has_admin(**p)) {
            return Err(format!(
                "the admin permission {}",
                serde_json::to_string(p).unwrap_or_default()
            ));
        }
        if let Some(k) = other
            .keys
            .iter()
            .find(|k| !self.key_granted(Some(k.as_str())))
        {
            return Err(format!("the key grant {k}"));
        }
        if !scope_covers(&self.view, &other.view) {
            return Err(format!("the call scope {}", scope_name(&other.view)));
        }
        for (action, scope) in &other.actions {
            if !scope_covers(&self.action_scope(*action), scope) {
                return Err(format!(
                    "{} on calls in scope {}",
                    serde_json::to_string(action).unwrap_or_default(),
                    scope_name(scope)
                ));
            }
        }
        Ok(())
    }

    /// The one check for an action on a call.
    pub fn check(
        &self,
        action: Action,
        rec: &Recording,
        audience: &Audience,
    ) -> Result<(), Denial> {
        if !self.can_see(rec, audience) {
            return Err(Denial::NotVisible);
        }
        if !scope_contains(&self.action_scope(action), rec.owner_user_id, audience) {
            return Err(Denial::Action);
        }
        if action.needs_key() && !self.key_granted(rec.key_id.as_deref()) {
            return Err(Denial::Key);
        }
        // Audio while impersonating: the admin's own scope, action and key grant too.
        if action.needs_key()
            && let Some(admin) = &self.impersonator
        {
            return admin.check(action, rec, audience).map_err(|d| match d {
                Denial::NotVisible => Denial::Action,
                d => d,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callvault_crds::access_profile::{CallActions, CallPermissions, Subjects};

    fn user(name: &str) -> User {
        User {
            tenant: "t".into(),
            id: Uuid::new_v4(),
            username: name.into(),
            display_name: name.into(),
            email: String::new(),
            password_hash: None,
            must_change_password: false,
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            legal_hold: false,
            time_zone: "UTC".into(),
            source: callvault_store::db::UserSource::Local,
            external_id: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn group(name: &str) -> Group {
        Group {
            tenant: "t".into(),
            id: Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            external_id: None,
        }
    }

    fn profile(
        name: &str,
        users: &[&str],
        scope: CallScope,
        groups: &[&str],
        delete: bool,
    ) -> Arc<Profile> {
        Arc::new(Profile {
            tenant: "t".into(),
            name: name.into(),
            spec: AccessProfileSpec {
                description: None,
                subjects: Subjects {
                    groups: Default::default(),
                    users: users.iter().map(|s| s.to_string()).collect(),
                },
                calls: CallPermissions {
                    scope,
                    groups: groups.iter().map(|s| s.to_string()).collect(),
                    actions: CallActions {
                        delete_calls: delete,
                        ..Default::default()
                    },
                },
                admin: Default::default(),
                keys: vec![],
            },
        })
    }

    #[test]
    fn actions_do_not_combine_across_profiles() {
        let u = user("sup");
        let sales = group("sales");
        let all_read = profile("read-all", &["sup"], CallScope::All, &[], false);
        let own_delete = profile("delete-own", &["sup"], CallScope::Own, &[], true);
        let g = resolve(
            &u,
            &[],
            std::slice::from_ref(&sales),
            &[all_read, own_delete],
        );
        assert_eq!(g.view, AccessScope::All);
        assert_eq!(
            g.action_scope(Action::DeleteCalls),
            AccessScope::Own { user_id: u.id }
        );
        assert_eq!(g.action_scope(Action::Play), AccessScope::None);
    }

    #[test]
    fn scopes_union_and_group_names_map_to_ids() {
        let u = user("sup");
        let (a, b) = (group("a"), group("b"));
        let p1 = profile("p1", &["sup"], CallScope::OwnAndGroups, &["a"], false);
        let p2 = profile(
            "p2",
            &["sup"],
            CallScope::OwnAndGroups,
            &["b", "ghost"],
            false,
        );
        let g = resolve(&u, &[], &[a.clone(), b.clone()], &[p1, p2]);
        let mut want = vec![a.id, b.id];
        want.sort();
        assert_eq!(
            g.view,
            AccessScope::OwnAndGroups {
                user_id: u.id,
                groups: want
            }
        );
    }

    #[test]
    fn profiles_for_others_do_not_apply() {
        let u = user("agent");
        let p = profile("p", &["someone-else"], CallScope::All, &[], true);
        let g = resolve(&u, &[], &[], &[p]);
        assert_eq!(g.view, AccessScope::None);
        assert!(g.profiles.is_empty());
    }

    #[test]
    fn assigning_a_call_gives_the_own_and_group_scoped_actions() {
        let u = user("agent");
        let groups = [group("sales"), group("other")];
        let own_delete = profile("own-delete", &["agent"], CallScope::Own, &[], true);
        let mut all_play = profile("all-play", &["agent"], CallScope::All, &[], false);
        Arc::make_mut(&mut all_play).spec.calls.actions.play = true;
        let mut sales_play = profile(
            "sales-sup",
            &["sup"],
            CallScope::OwnAndGroups,
            &["sales"],
            false,
        );
        Arc::make_mut(&mut sales_play).spec.calls.actions.download = true;
        let mut other_tag = profile(
            "other-sup",
            &["sup"],
            CallScope::OwnAndGroups,
            &["other"],
            false,
        );
        Arc::make_mut(&mut other_tag).spec.calls.actions.tag = true;
        let profiles = [own_delete, all_play, sales_play, other_tag];
        let g = resolve(&u, &groups[..1], &groups, &profiles);
        // Own-scoped delete is gained; play on every call was held already; the sales
        // supervisor's download comes with the call's group; the other group's tag does not.
        assert_eq!(
            gained_by_assignment(&g, &["sales"], &profiles),
            BTreeSet::from([Action::Download, Action::DeleteCalls])
        );
    }

    #[test]
    fn unassigned_calls_need_scope_all() {
        let uid = Uuid::new_v4();
        let own = AccessScope::Own { user_id: uid };
        let grp = AccessScope::OwnAndGroups {
            user_id: uid,
            groups: vec![Uuid::new_v4()],
        };
        let none = Audience::default();
        assert!(!scope_contains(&own, None, &none));
        assert!(!scope_contains(&grp, None, &none));
        assert!(scope_contains(&AccessScope::All, None, &none));
    }

    #[test]
    fn a_meeting_attended_is_an_own_call_limited_to_the_part_attended() {
        let (me, owner, team) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let attended = Attendance {
            user_id: me,
            joined_ms: 60_000,
            left_ms: Some(120_000),
        };
        let audience = Audience {
            groups: vec![team],
            attendees: vec![attended],
        };
        let own = AccessScope::Own { user_id: me };
        assert!(scope_contains(&own, Some(owner), &audience));
        assert!(!scope_contains(&own, Some(owner), &Audience::default()));
        let grants = |scope: AccessScope| Grants {
            user_id: me,
            profiles: Vec::new(),
            view: scope.clone(),
            actions: HashMap::from([(Action::Play, scope)]),
            admin: BTreeSet::new(),
            keys: BTreeSet::new(),
            impersonator: None,
        };
        let rec = Some(owner);
        assert_eq!(
            grants(own).attended_part(Action::Play, rec, &audience),
            Some(attended)
        );
        // A supervisor of the owner's team, or an admin, hears the whole meeting.
        let team_scope = AccessScope::OwnAndGroups {
            user_id: me,
            groups: vec![team],
        };
        assert_eq!(
            grants(team_scope).attended_part(Action::Play, rec, &audience),
            None
        );
        assert_eq!(
            grants(AccessScope::All).attended_part(Action::Play, rec, &audience),
            None
        );
    }
}
