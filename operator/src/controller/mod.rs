//! The controller runtime: one kube `Controller` per resource, the children they own watched
//! through our own reflectors (so a child is compared before it is applied), server-side apply
//! with one field manager, status conditions, Events, per-object back-off, and the HTTP
//! endpoints `/healthz`, `/readyz`, `/metrics`.

mod access_profile;
mod connector;
mod http;
mod recording_profile;
mod speech_job;
mod storage_target;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use callvault_crds::{Condition, condition_type as ct, reason};
use callvault_store::objstore::ProbeOptions;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::Failures;
use crate::build::job::KeyRingSecret;
use crate::build::meta::{COMPONENT_LABEL, MANAGED_BY_LABEL, MANAGER, MissingMetadata};
use crate::build::pod::DatabaseSecret;
use crate::conditions::{Observed, Transition};
use crate::drift;
use crate::metrics::Metrics;

/// Reconciles of one kind that run at once; more wait in the controller's queue.
const RECONCILE_CONCURRENCY: u16 = 48;

/// What the operator watches and how it builds workloads. Built by `callvault operator` from
/// its environment ([`Config::from_env`]) or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespaces to reconcile; empty means every namespace.
    pub namespaces: Vec<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// The image every workload runs (`callvault <subcommand>`).
    pub image: String,
    /// The database URL Secret the workloads mount, in each namespace.
    pub database: DatabaseSecret,
    /// The private keys Secret the decrypting jobs mount, in each namespace.
    pub key_ring: KeyRingSecret,
    /// Size of each recorder's spool volume.
    pub spool_size: String,
    /// StorageClass of the spool volumes (cluster default when absent).
    pub spool_storage_class: Option<String>,
    /// How often a StorageTarget is probed when nothing changes.
    pub probe_interval: Duration,
    /// The connection test's bounds.
    pub probe: ProbeOptions,
    /// How often a running recorder pool's load is read.
    pub load_interval: Duration,
    /// Identifies this operator in Events (its pod name).
    pub instance: Option<String>,
}

/// A problem with the operator's environment.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Config {
    /// Reads the settings the Helm chart passes (`CALLVAULT_*`); `var` looks one up.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let image = get("CALLVAULT_IMAGE").ok_or(ConfigError {
            variable: "CALLVAULT_IMAGE",
            problem: "required: the image the operator's workloads run".to_owned(),
        })?;
        let metrics_addr = match get("CALLVAULT_METRICS_ADDR") {
            None => Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            Some(a) if a == "off" => None,
            Some(a) => Some(a.parse().map_err(|e| ConfigError {
                variable: "CALLVAULT_METRICS_ADDR",
                problem: format!("{a:?} is not an address like 0.0.0.0:8080: {e}"),
            })?),
        };
        let namespaces = get("CALLVAULT_WATCH_NAMESPACES")
            .map(|v| {
                v.split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let seconds = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match get(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => match v.parse::<u64>() {
                    Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
                    _ => Err(ConfigError {
                        variable: name,
                        problem: format!("{v:?} is not a positive number of seconds"),
                    }),
                },
            }
        };
        Ok(Self {
            namespaces,
            metrics_addr,
            image,
            database: DatabaseSecret {
                name: get("CALLVAULT_DATABASE_SECRET_NAME")
                    .unwrap_or_else(|| "callvault-database".to_owned()),
                key: get("CALLVAULT_DATABASE_SECRET_KEY").unwrap_or_else(|| "url".to_owned()),
            },
            key_ring: KeyRingSecret {
                name: get("CALLVAULT_KEY_RING_SECRET_NAME")
                    .unwrap_or_else(|| "callvault-private-keys".to_owned()),
            },
            spool_size: get("CALLVAULT_SPOOL_SIZE").unwrap_or_else(|| "20Gi".to_owned()),
            spool_storage_class: get("CALLVAULT_SPOOL_STORAGE_CLASS"),
            probe_interval: seconds("CALLVAULT_PROBE_INTERVAL_SECONDS", 300)?,
            probe: ProbeOptions::default(),
            load_interval: seconds("CALLVAULT_LOAD_INTERVAL_SECONDS", 30)?,
            instance: get("CALLVAULT_POD_NAME"),
        })
    }
}

/// Why a reconcile or the operator failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object lacks metadata the API server always sets.
    #[error(transparent)]
    Metadata(#[from] MissingMetadata),
    /// A RecordingProfile's children could not be built.
    #[error(transparent)]
    Build(#[from] crate::build::recording_profile::BuildError),
    /// An object could not be serialized.
    #[error("serializing: {0}")]
    Json(#[from] serde_json::Error),
    /// The HTTP endpoints could not be served.
    #[error("serving /metrics on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The API server refused a child the operator built (a value the CRD schema accepts but
    /// the child's own validation does not): shown as a False condition with its message.
    #[error("the API server refused {kind} {name}: {message}")]
    Refused {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// A watch ended with an error the controller could not recover from.
    #[error("{controller} controller stopped: {message}")]
    Stopped {
        /// Which controller.
        controller: &'static str,
        /// Why.
        message: String,
    },
}

impl Error {
    /// A short, stable label for the errors metric.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Metadata(_) => "metadata",
            Error::Build(_) => "build",
            Error::Json(_) => "json",
            Error::Http { .. } => "http",
            Error::Refused { .. } => "refused",
            Error::Stopped { .. } => "stopped",
        }
    }
}

/// Stores of the children each controller owns (without their managed fields): what a
/// reconcile compares the desired children with, and where it reads availability.
#[derive(Clone)]
pub(crate) struct ChildStores {
    pub stateful_sets: Store<k8s_openapi::api::apps::v1::StatefulSet>,
    pub services: Store<k8s_openapi::api::core::v1::Service>,
    pub config_maps: Store<k8s_openapi::api::core::v1::ConfigMap>,
    pub pod_disruption_budgets: Store<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    pub retention_cron_jobs: Store<k8s_openapi::api::batch::v1::CronJob>,
    pub assurance_cron_jobs: Store<k8s_openapi::api::batch::v1::CronJob>,
    pub assurance_config_maps: Store<k8s_openapi::api::core::v1::ConfigMap>,
    pub archive_cron_jobs: Store<k8s_openapi::api::batch::v1::CronJob>,
    pub archive_config_maps: Store<k8s_openapi::api::core::v1::ConfigMap>,
    pub transcribe_cron_jobs: Store<k8s_openapi::api::batch::v1::CronJob>,
    pub transcribe_jobs: Store<k8s_openapi::api::batch::v1::Job>,
    pub transcribe_config_maps: Store<k8s_openapi::api::core::v1::ConfigMap>,
    pub space_cleanup_cron_jobs: Store<k8s_openapi::api::batch::v1::CronJob>,
    pub space_cleanup_config_maps: Store<k8s_openapi::api::core::v1::ConfigMap>,
}

/// What every reconcile shares.
pub(crate) struct Context {
    pub client: Client,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub failures: Failures,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    pub storage_targets: Store<callvault_crds::StorageTarget>,
    /// The Secrets' metadata (never their values).
    pub secrets: Store<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>,
    /// Per StorageTarget (`namespace/name`), the resourceVersion of the credentials Secret its
    /// last probe used: a newer one is probed at once.
    pub probed_secrets: Mutex<HashMap<String, Option<String>>>,
    pub recording_profiles: Store<callvault_crds::RecordingProfile>,
    pub children: ChildStores,
    /// Completes once every store above holds its first full list.
    pub synced: Shared<BoxFuture<'static, ()>>,
}

impl Context {
    /// Waits until every store is filled. Each controller only waits for its own store, so
    /// without this a reconcile right after a start would see no children or StorageTargets
    /// yet, conclude something false (no recorders ready, target missing) and write it, then
    /// write the truth again a moment later: a restarted operator must write nothing.
    pub async fn synced(&self) {
        self.synced.clone().await;
    }

    /// The StorageTargets of the RecordingProfiles in `ns` named in `wanted` (all of the
    /// namespace's when it names none), each once, by name: where a job reads recordings.
    pub fn profile_targets(
        &self,
        ns: &str,
        wanted: &[String],
    ) -> Vec<Arc<callvault_crds::StorageTarget>> {
        let mut names: Vec<String> = self
            .recording_profiles
            .state_filter(|p| {
                p.namespace().as_deref() == Some(ns)
                    && (wanted.is_empty() || wanted.contains(&p.name_any()))
            })
            .iter()
            .map(|p| p.spec.storage_target_ref.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
            .iter()
            .filter_map(|n| self.storage_targets.get(&ObjectRef::new(n).within(ns)))
            .collect()
    }

    /// Server-side applies `desired` unless the stored child already holds every field of it
    /// ([`drift::holds`]): a child edited by hand is applied again, an unchanged one costs no
    /// write. Returns whether it wrote; a child the API server refuses is [`Error::Refused`].
    pub async fn apply<K>(&self, store: &Store<K>, desired: K) -> Result<bool, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let kind = K::kind(&());
        let missing = |field| MissingMetadata {
            kind: kind.clone().into_owned(),
            field,
        };
        let name = desired.meta().name.clone().ok_or_else(|| missing("name"))?;
        let ns = desired
            .meta()
            .namespace
            .clone()
            .ok_or_else(|| missing("namespace"))?;
        let wanted = serde_json::to_value(&desired)?;
        if let Some(existing) = store.get(&ObjectRef::new(&name).within(&ns)) {
            match drift::first_difference(&serde_json::to_value(&*existing)?, &wanted) {
                None => return Ok(false),
                Some(field) => {
                    tracing::info!(%kind, namespace = %ns, %name, %field, "drifted; applying again");
                }
            }
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(|e| refused(e, &kind, &name))?;
        self.metrics.applied(&kind);
        tracing::info!(%kind, namespace = %ns, %name, "applied");
        if let Some(field) = drift::first_difference(&serde_json::to_value(&applied)?, &wanted) {
            // Would be applied again on every reconcile: a build bug worth a loud line.
            tracing::warn!(%kind, namespace = %ns, %name, %field, "the API server stores this field differently from how it is built");
        }
        Ok(true)
    }

    /// Deletes the children in `store` controlled by `owner_uid` whose names are not in `keep`.
    pub async fn delete_orphans<K>(
        &self,
        store: &Store<K>,
        owner_uid: &str,
        keep: &[String],
    ) -> Result<usize, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let orphans = store.state_filter(|child| {
            child
                .owner_references()
                .iter()
                .any(|o| o.uid == owner_uid && o.controller == Some(true))
                && !keep.contains(&child.name_any())
        });
        for orphan in &orphans {
            let ns = orphan.namespace().unwrap_or_default();
            let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
            match api
                .delete(&orphan.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {
                    tracing::info!(kind = %K::kind(&()), namespace = %ns, name = %orphan.name_any(), "deleted orphan");
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(orphans.len())
    }

    /// Server-side applies `status` (only the fields the operator owns, so fields written by
    /// the jobs under their own field managers stay) unless the object already shows it.
    /// Publishes an Event per transition when it wrote. Returns whether it wrote.
    pub async fn apply_status<K>(
        &self,
        object: &K,
        status: serde_json::Value,
        transitions: &[Transition],
    ) -> Result<bool, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let current = serde_json::to_value(object)?;
        if status_shown(&current["status"], &status) {
            return Ok(false);
        }
        let name = object.name_any();
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        self.publish(object, transitions).await;
        Ok(true)
    }

    /// Publishes one Event per transition; a failure is logged, never fails the reconcile.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        transitions: &[Transition],
    ) {
        let reference = object.object_ref(&());
        for t in transitions {
            let event = Event {
                type_: if t.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: t.reason.clone(),
                note: Some(truncate(&t.note, 1000)),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "publishing an Event failed");
            }
        }
    }
}

/// Whether `current` status already shows every field of `desired`. Conditions are compared
/// by type (other writers' conditions are not ours to compare).
pub(crate) fn status_shown(current: &serde_json::Value, desired: &serde_json::Value) -> bool {
    let Some(desired) = desired.as_object() else {
        return false;
    };
    desired.iter().all(|(key, want)| {
        let have = &current[key];
        if key == "conditions" {
            let mine: Vec<&serde_json::Value> = want.as_array().into_iter().flatten().collect();
            let theirs: Vec<&serde_json::Value> = mine
                .iter()
                .filter_map(|w| have.as_array()?.iter().find(|h| h["type"] == w["type"]))
                .collect();
            mine == theirs
        } else {
            have == want
        }
    })
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A refusal of the API server to store a child (invalid or malformed) as [`Error::Refused`];
/// any other failure as it is.
fn refused(error: kube::Error, kind: &str, name: &str) -> Error {
    match error {
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => Error::Refused {
            kind: kind.to_owned(),
            name: name.to_owned(),
            message: status.message,
        },
        other => other.into(),
    }
}

/// Splits a refused child off `result`: `Ok(Err(message))` when the API server refused it
/// (for the False condition that shows its message), other failures stay errors.
pub(crate) fn refusal<T>(result: Result<T, Error>) -> Result<Result<T, String>, Error> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(e @ Error::Refused { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Locks `mutex`, also after a panic elsewhere (the maps it guards stay usable).
/// Says why `object`, being deleted, stays: the `DeletionBlocked` condition with `reason` and
/// `message`, merged into its `conditions`. The object's watch (or a requeue) looks again.
pub(crate) async fn deletion_blocked<K>(
    ctx: &Context,
    object: &K,
    conditions: Option<&Vec<Condition>>,
    reason: &'static str,
    message: String,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let current = current_conditions(conditions);
    let blocked = crate::conditions::Observed::yes(
        callvault_crds::condition_type::DELETION_BLOCKED,
        reason,
        message,
    );
    let generation = object.meta().generation;
    let merged =
        crate::conditions::merge(current, &[blocked], generation, &crate::conditions::now());
    let transitions = crate::conditions::transitions(current, &merged);
    ctx.apply_status(
        object,
        serde_json::json!({"observedGeneration": generation, "conditions": merged}),
        &transitions,
    )
    .await?;
    Ok(())
}

/// Adds or removes `finalizer` on `object`, guarded by the resourceVersion read (a concurrent
/// change makes the patch fail and the reconcile retry with fresh data).
pub(crate) async fn set_finalizer<K>(
    ctx: &Context,
    object: &K,
    finalizer: &str,
    present: bool,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let has = object.finalizers().iter().any(|f| f == finalizer);
    if has == present {
        return Ok(());
    }
    let mut finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    if present {
        finalizers.push(finalizer.to_owned());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": object.resource_version(),
    }});
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to guard.
        Err(kube::Error::Api(s)) if s.code == 404 && !present => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    /// Whether Secret `name` exists in `ns`, asked of the API server (its metadata only): the
    /// Secret watch that triggers a reconcile can run ahead of the operator's own Secret
    /// store, which would still say "missing" with nothing left to trigger another look.
    pub(crate) async fn secret_exists(&self, ns: &str, name: &str) -> Result<bool, Error> {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), ns);
        Ok(secrets.get_metadata_opt(name).await?.is_some())
    }

    /// Ready False `DatabaseSecretNotFound` when the Secret with the database URL does not
    /// exist in `ns`: every workload there mounts it, so `pods` (what the resource runs) would
    /// wait for it unseen.
    pub(crate) async fn database_secret_missing(
        &self,
        ns: &str,
        pods: &str,
    ) -> Result<Option<Observed>, Error> {
        let DatabaseSecret { name, key } = &self.config.database;
        Ok((!self.secret_exists(ns, name).await?).then(|| {
            Observed::no(
                ct::READY,
                reason::DATABASE_SECRET_NOT_FOUND,
                format!(
                    "Secret {name} (the database URL, key {key}) does not exist in namespace \
                     {ns}; {pods} cannot start until it does"
                ),
            )
        }))
    }
}

/// A watch of the Secrets' metadata in `scope`: what triggers the reconciles of the resources
/// that name a Secret, so one created or changed later is noticed at once.
pub(crate) fn secret_changes(
    client: &Client,
    scope: &Scope,
) -> impl Stream<
    Item = Result<
        kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>,
        watcher::Error,
    >,
> + Send
+ 'static {
    watcher(scope.api(client), watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

/// The current conditions of a status, for merging.
pub(crate) fn current_conditions(conditions: Option<&Vec<Condition>>) -> &[Condition] {
    conditions.map(Vec::as_slice).unwrap_or_default()
}

/// The error policy shared by every controller: count the failure and back off per object.
pub(crate) fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    object: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.error(controller, error.label());
    let delay = ctx.failures.failed(&key(controller, object));
    tracing::warn!(
        controller,
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        name = object.meta().name.as_deref().unwrap_or_default(),
        error = %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Resets the back-off of `object` after a successful reconcile.
pub(crate) fn succeeded<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    object: &K,
    ctx: &Context,
) {
    ctx.failures.succeeded(&key(controller, object));
}

fn key<K: Resource<DynamicType = ()>>(controller: &'static str, object: &K) -> String {
    format!(
        "{controller}/{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// Which objects one set of controllers sees: every namespace, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// One namespace.
    Namespace(String),
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// A watch of one kind of child (managed by the operator, of one component), kept in a store
/// with only what `strip` leaves, and the stream that triggers the owners' reconciles.
fn children<K>(
    api: Api<K>,
    component: &str,
    strip: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&format!(
        "{MANAGED_BY_LABEL}={MANAGER},{COMPONENT_LABEL}={component}"
    ));
    let stream = watcher(api, config)
        .modify(move |child: &mut K| {
            child.meta_mut().managed_fields = None;
            strip(child);
        })
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// A client for the cluster the operator runs in (its service account), or the one
/// `KUBECONFIG` names when run outside.
pub async fn connect() -> Result<Client, Error> {
    // Without a process-wide provider, a binary that links rustls with both ring and aws-lc-rs
    // panics on its first TLS connection. Another part of the program may have installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Client::try_default().await?)
}

/// Runs every controller until `shutdown` completes, serving the HTTP endpoints meanwhile.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let shutdown: ShutdownSignal = shutdown.boxed().shared();
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let scopes = if config.namespaces.is_empty() {
        vec![Scope::All]
    } else {
        config
            .namespaces
            .iter()
            .map(|n| Scope::Namespace(n.clone()))
            .collect()
    };
    let server = match config.metrics_addr {
        Some(addr) => {
            Some(http::serve(addr, metrics.clone(), ready.clone(), shutdown.clone()).await?)
        }
        None => None,
    };
    tracing::info!(?scopes, "operator starting");
    let mut sets = Vec::new();
    let mut ready_waits = Vec::new();
    for scope in scopes {
        let (set, wait) = controllers(&client, &config, &metrics, &scope, shutdown.clone());
        sets.push(set);
        ready_waits.push(wait);
    }
    let ready_flag = ready.clone();
    let readiness = async move {
        for wait in ready_waits {
            wait.await;
        }
        ready_flag.store(true, Ordering::Relaxed);
        tracing::info!("caches synced; ready");
    };
    let (results, ()) = futures::join!(futures::future::join_all(sets), readiness);
    ready.store(false, Ordering::Relaxed);
    if let Some(server) = server {
        let _ = server.await;
    }
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    Ok(())
}

/// The five controllers of one scope, and a future that completes once their caches are
/// filled.
fn controllers(
    client: &Client,
    config: &Arc<Config>,
    metrics: &Arc<Metrics>,
    scope: &Scope,
    shutdown: ShutdownSignal,
) -> (
    BoxFuture<'static, Result<(), Error>>,
    BoxFuture<'static, ()>,
) {
    use crate::build::assurance::ASSURANCE;
    use crate::build::connector::ARCHIVE;
    use crate::build::recording_profile::{RECORDER, RETENTION};
    use crate::build::speech_job::TRANSCRIBE;
    use crate::build::storage_target::SPACE_CLEANUP;

    // Each store keeps the whole child (to compare with the desired one) but not the status
    // the operator does not read.
    let (stateful_sets, ss_stream) = children(
        scope.api(client),
        RECORDER,
        |_: &mut k8s_openapi::api::apps::v1::StatefulSet| {},
    );
    let (services, svc_stream) = children(
        scope.api(client),
        RECORDER,
        |s: &mut k8s_openapi::api::core::v1::Service| s.status = None,
    );
    let (config_maps, cm_stream) = children(scope.api(client), RECORDER, |_| {});
    let (pdbs, pdb_stream) = children(
        scope.api(client),
        RECORDER,
        |p: &mut k8s_openapi::api::policy::v1::PodDisruptionBudget| p.status = None,
    );
    let strip_cron = |c: &mut k8s_openapi::api::batch::v1::CronJob| c.status = None;
    let (retention_cron_jobs, ret_stream) = children(scope.api(client), RETENTION, strip_cron);
    let (assurance_cron_jobs, asr_stream) = children(scope.api(client), ASSURANCE, strip_cron);
    let (assurance_config_maps, asr_cm_stream) = children(scope.api(client), ASSURANCE, |_| {});
    let (archive_cron_jobs, arch_stream) = children(scope.api(client), ARCHIVE, strip_cron);
    let (archive_config_maps, arch_cm_stream) = children(scope.api(client), ARCHIVE, |_| {});
    let (transcribe_cron_jobs, tcj_stream) = children(scope.api(client), TRANSCRIBE, strip_cron);
    let (transcribe_jobs, tj_stream) = children(
        scope.api(client),
        TRANSCRIBE,
        |j: &mut k8s_openapi::api::batch::v1::Job| j.status = None,
    );
    let (transcribe_config_maps, tcm_stream) = children(scope.api(client), TRANSCRIBE, |_| {});
    let (space_cleanup_cron_jobs, scj_stream) =
        children(scope.api(client), SPACE_CLEANUP, strip_cron);
    let (space_cleanup_config_maps, scm_stream) =
        children(scope.api(client), SPACE_CLEANUP, |_| {});

    // Bounded so that applying a thousand resources at once queues their reconciles instead of
    // holding a thousand sets of built children and API responses in memory together.
    let bounded = || controller::Config::default().concurrency(RECONCILE_CONCURRENCY);
    let (st, secrets) = storage_target::controller(client, scope);
    let st = st.with_config(bounded());
    let database = &config.database.name;
    let rp = recording_profile::controller(client, scope, database).with_config(bounded());
    let ap = access_profile::controller(client, scope).with_config(bounded());
    let conn = connector::controller(client, scope, database).with_config(bounded());
    let sj = speech_job::controller(client, scope, &config.key_ring.name, database)
        .with_config(bounded());
    let children = ChildStores {
        stateful_sets,
        services,
        config_maps,
        pod_disruption_budgets: pdbs,
        retention_cron_jobs,
        assurance_cron_jobs,
        assurance_config_maps,
        archive_cron_jobs,
        archive_config_maps,
        transcribe_cron_jobs,
        transcribe_jobs,
        transcribe_config_maps,
        space_cleanup_cron_jobs,
        space_cleanup_config_maps,
    };
    let synced = {
        let (st_store, rp_store) = (st.store(), rp.store());
        let (ap_store, conn_store, sj_store) = (ap.store(), conn.store(), sj.store());
        let s = children.clone();
        let secrets = secrets.clone();
        async move {
            let _ = st_store.wait_until_ready().await;
            let _ = secrets.wait_until_ready().await;
            let _ = rp_store.wait_until_ready().await;
            let _ = ap_store.wait_until_ready().await;
            let _ = conn_store.wait_until_ready().await;
            let _ = sj_store.wait_until_ready().await;
            let _ = s.stateful_sets.wait_until_ready().await;
            let _ = s.services.wait_until_ready().await;
            let _ = s.config_maps.wait_until_ready().await;
            let _ = s.pod_disruption_budgets.wait_until_ready().await;
            let _ = s.retention_cron_jobs.wait_until_ready().await;
            let _ = s.assurance_cron_jobs.wait_until_ready().await;
            let _ = s.assurance_config_maps.wait_until_ready().await;
            let _ = s.archive_cron_jobs.wait_until_ready().await;
            let _ = s.archive_config_maps.wait_until_ready().await;
            let _ = s.transcribe_cron_jobs.wait_until_ready().await;
            let _ = s.transcribe_jobs.wait_until_ready().await;
            let _ = s.transcribe_config_maps.wait_until_ready().await;
            let _ = s.space_cleanup_cron_jobs.wait_until_ready().await;
            let _ = s.space_cleanup_config_maps.wait_until_ready().await;
        }
        .boxed()
        .shared()
    };
    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        failures: Failures::default(),
        recorder: Recorder::new(client.clone(), reporter),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default(),
        storage_targets: st.store(),
        secrets,
        probed_secrets: Mutex::default(),
        recording_profiles: rp.store(),
        children,
        synced: synced.clone(),
    });
    let stores_ready = synced.boxed();

    let rp_run = rp
        .owns_stream(ss_stream)
        .owns_stream(svc_stream)
        .owns_stream(cm_stream)
        .owns_stream(pdb_stream)
        .owns_stream(ret_stream)
        .owns_stream(asr_stream)
        .owns_stream(asr_cm_stream)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            recording_profile::reconcile,
            |o, e, c| error_policy(recording_profile::NAME, &*o, e, &c),
            ctx.clone(),
        );
    let st_run = st
        .owns_stream(scj_stream)
        .owns_stream(scm_stream)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            storage_target::reconcile,
            |o, e, c| error_policy(storage_target::NAME, &*o, e, &c),
            ctx.clone(),
        );
    let ap_run = ap.graceful_shutdown_on(shutdown.clone()).run(
        access_profile::reconcile,
        |o, e, c| error_policy(access_profile::NAME, &*o, e, &c),
        ctx.clone(),
    );
    let conn_run = conn
        .owns_stream(arch_stream)
        .owns_stream(arch_cm_stream)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            connector::reconcile,
            |o, e, c| error_policy(connector::NAME, &*o, e, &c),
            ctx.clone(),
        );
    let sj_run = sj
        .owns_stream(tcj_stream)
        .owns_stream(tj_stream)
        .owns_stream(tcm_stream)
        .graceful_shutdown_on(shutdown)
        .run(
            speech_job::reconcile,
            |o, e, c| error_policy(speech_job::NAME, &*o, e, &c),
            ctx,
        );
    let all = async move {
        futures::join!(
            drain(recording_profile::NAME, rp_run),
            drain(storage_target::NAME, st_run),
            drain(access_profile::NAME, ap_run),
            drain(connector::NAME, conn_run),
            drain(speech_job::NAME, sj_run),
        );
        Ok(())
    }
    .boxed();
    (all, stores_ready)
}

/// Consumes a controller's result stream, logging what failed.
async fn drain<T: Debug, E: std::fmt::Display>(
    controller: &'static str,
    stream: impl Stream<Item = Result<T, E>>,
) {
    stream
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller, error = %e, "reconcile result");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_status_already_shown_is_not_written_again() {
        let current = json!({
            "observedGeneration": 2,
            "archivedFiles": 7,
            "conditions": [
                {"type": "LastRunSucceeded", "status": "True", "reason": "RunSucceeded"},
                {"type": "Ready", "status": "True", "reason": "Reconciled"}
            ]
        });
        let desired = json!({
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}]
        });
        assert!(status_shown(&current, &desired));
        let newer = json!({"observedGeneration": 3, "conditions": desired["conditions"]});
        assert!(!status_shown(&current, &newer));
        let changed = json!({
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Disabled"}]
        });
        assert!(!status_shown(&current, &changed));
        assert!(!status_shown(&json!(null), &desired));
    }

    #[test]
    fn environment_settings_are_read_and_checked_in_one_place() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = Config::from_env(env(&[
            ("CALLVAULT_IMAGE", "callvault:1"),
            ("CALLVAULT_WATCH_NAMESPACES", "bank, , shop"),
            ("CALLVAULT_METRICS_ADDR", "127.0.0.1:9090"),
        ]))
        .expect("valid");
        assert_eq!(c.namespaces, ["bank", "shop"]);
        assert_eq!(
            c.metrics_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert_eq!(c.database.name, "callvault-database");
        assert_eq!(c.database.key, "url");
        assert_eq!(c.key_ring.name, "callvault-private-keys");

        let e = Config::from_env(env(&[])).expect_err("image required");
        assert_eq!(e.variable, "CALLVAULT_IMAGE");
        let e = Config::from_env(env(&[
            ("CALLVAULT_IMAGE", "callvault:1"),
            ("CALLVAULT_METRICS_ADDR", "everywhere"),
        ]))
        .expect_err("bad address");
        assert!(e.to_string().contains("CALLVAULT_METRICS_ADDR"), "{e}");
    }
}
