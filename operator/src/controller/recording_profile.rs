//! RecordingProfile → recorder StatefulSet, Services, ConfigMap, PodDisruptionBudget and
//! retention CronJob; replicas follow the load the recorder pods report.

use std::sync::Arc;
use std::time::Duration;

use callvault_crds::{RecordingProfile, StorageTarget, condition_type as ct, reason};
use callvault_store::keys::PublicKey;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, ResourceExt};

use super::{
    Context, Error, Scope, current_conditions, deletion_blocked, refusal, secret_changes,
    set_finalizer, succeeded,
};
use crate::build::Owner;
use crate::build::assurance;
use crate::build::recording_profile::{
    ChildNames, HTTP_PORT, RECORDER, RecorderSettings, build, with_endpoints, with_other_profiles,
};
use crate::conditions::{self, Observed};
use crate::load::{PoolLoad, RecorderStatus, aggregate};
use crate::{desired_replicas, render_recorder_config};

/// Controller name in metrics and logs.
pub(super) const NAME: &str = "recordingprofile";
/// Finalizer held while recordings of the profile are stored: they must stay traceable to the
/// profile that recorded them (its retention, key and storage).
pub const FINALIZER: &str = "callvault.io/recordings";

/// The controller, reconciling on spec changes (its own status writes do not trigger it), on
/// changes of the StorageTargets its profiles use and of their key Secrets, and, once a profile
/// is being deleted, on the retention job's count of its stored recordings.
pub(super) fn controller(
    client: &Client,
    scope: &Scope,
    database: &str,
) -> Controller<RecordingProfile> {
    let (store, writer) = reflector::store();
    let profiles = watcher(
        scope.api::<RecordingProfile>(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        |p: &RecordingProfile| {
            let deleting = p.metadata.deletion_timestamp.is_some();
            let stored = deleting.then(|| stored_recordings(p));
            predicates::generation(p).map(|g| {
                use std::hash::{Hash as _, Hasher as _};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (g, deleting, stored).hash(&mut h);
                h.finish()
            })
        },
        Default::default(),
    );
    let by_target = store.clone();
    let by_secret = store.clone();
    let database = database.to_owned();
    Controller::for_stream(profiles, store)
        .watches_stream(secret_changes(client, scope), move |secret| {
            let ns = secret.namespace();
            let name = secret.name_any();
            // Its key, or the database URL every recorder of the namespace mounts.
            by_secret
                .state_filter(|p| {
                    p.namespace() == ns
                        && (p.spec.encryption.key_secret_ref.name == name || name == database)
                })
                .iter()
                .map(|p| ObjectRef::from_obj(&**p))
                .collect::<Vec<_>>()
        })
        .watches(
            scope.api::<StorageTarget>(client),
            watcher::Config::default(),
            move |target: StorageTarget| {
                let ns = target.namespace();
                let name = target.name_any();
                by_target
                    .state_filter(|p| p.namespace() == ns && p.spec.storage_target_ref.name == name)
                    .iter()
                    .map(|p| ObjectRef::from_obj(&**p))
                    .collect::<Vec<_>>()
            },
        )
}

/// The storage binding: the target and the key id, or the condition saying what is missing.
struct Binding {
    target: Arc<StorageTarget>,
    key_id: String,
    condition: Observed,
}

#[tracing::instrument(skip_all, fields(namespace = profile.namespace(), name = profile.name_any()))]
pub(super) async fn reconcile(
    profile: Arc<RecordingProfile>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(NAME);
    if profile.metadata.deletion_timestamp.is_some() {
        return deleting(&profile, &ctx).await;
    }
    set_finalizer(&ctx, &*profile, FINALIZER, true).await?;
    let owner = Owner::of(&*profile)?;
    let names = ChildNames::new(&owner.name);
    let spec = &profile.spec;
    let generation = profile.metadata.generation;

    let binding = bind(&ctx, &profile, &owner.namespace).await?;
    let stateful_set = ctx
        .children
        .stateful_sets
        .get(&ObjectRef::new(&names.recorder).within(&owner.namespace));
    let pods_status = stateful_set.as_ref().and_then(|s| s.status.clone());
    let ready = pods_status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let existing = pods_status.as_ref().map(|s| s.replicas).unwrap_or(0);
    let (load, complete, taking_calls) = if ready > 0 && !spec.disabled {
        pool_load(&ctx, &owner).await?
    } else {
        (PoolLoad::default(), true, Vec::new())
    };
    let mut endpoints = Vec::new();
    let per = u32::try_from(spec.recorder.sessions_per_replica).unwrap_or(1);
    let min = u32::try_from(spec.recorder.min_replicas).unwrap_or(1);
    let max = u32::try_from(spec.recorder.max_replicas).unwrap_or(min);
    let mut replicas =
        i32::try_from(desired_replicas(load.active_sessions, per, min, max)).unwrap_or(i32::MAX);
    if !complete {
        // A pod whose load could not be read may be busy: never scale down blind.
        let current = stateful_set
            .as_ref()
            .and_then(|s| s.spec.replicas)
            .unwrap_or(0);
        replicas = replicas.max(current);
    }

    let mut problem: Option<Observed> = None;
    let storage_bound = match &binding {
        Ok(b) => {
            let settings = RecorderSettings {
                image: ctx.config.image.clone(),
                database: ctx.config.database.clone(),
                spool_size: ctx.config.spool_size.clone(),
                spool_storage_class: ctx.config.spool_storage_class.clone(),
            };
            match render_recorder_config(&owner.namespace, &profile, &b.target, &b.key_id) {
                Ok(config) => {
                    let mut c = build(&profile, &b.target, &config, replicas, &settings)?;
                    with_other_profiles(&mut c.config_map, &other_profiles(&ctx, &profile))?;
                    endpoints = with_endpoints(&mut c, &owner.name, &config, &taking_calls);
                    let s = &ctx.children;
                    let applied = async {
                        ctx.apply(&s.config_maps, c.config_map).await?;
                        ctx.apply(&s.config_maps, c.endpoints_config_map).await?;
                        ctx.apply(&s.services, c.headless_service).await?;
                        ctx.apply(&s.services, c.sip_service).await?;
                        ctx.apply(&s.pod_disruption_budgets, c.pod_disruption_budget)
                            .await?;
                        ctx.apply(&s.stateful_sets, c.stateful_set).await?;
                        ctx.apply(&s.retention_cron_jobs, c.retention_cron_job)
                            .await
                    };
                    if let Err(message) = refusal(applied.await)? {
                        problem = Some(Observed::no(ct::READY, reason::INVALID_SPEC, message));
                    }
                    if let Err(message) = apply_assurance(&ctx, &profile, &b.target, &owner).await?
                    {
                        problem.get_or_insert(Observed::no(
                            ct::READY,
                            reason::INVALID_SPEC,
                            message,
                        ));
                    }
                }
                Err(e) => {
                    problem = Some(Observed::no(
                        ct::READY,
                        reason::INVALID_SPEC,
                        format!("cannot render the recorder configuration: {e}"),
                    ));
                }
            }
            b.condition.clone()
        }
        Err(condition) => condition.clone(),
    };
    let storage_bound = crate::status::storage_bound_as_recorded(storage_bound, &load);
    let problem = match problem {
        None if !spec.disabled => {
            ctx.database_secret_missing(&owner.namespace, "the recorder pods")
                .await?
        }
        problem => problem,
    };
    let can_scale = replicas < spec.recorder.max_replicas;
    let problem = problem
        .or_else(|| crate::status::recorder_problem(&load, can_scale, spec.recorder.fail_closed));

    let recorders = crate::status::recorders_available(spec.disabled, ready, replicas, None);
    let ready_condition =
        crate::status::profile_ready(spec.disabled, problem, &storage_bound, &recorders);

    let conflict = conflict_condition(&load.conflicts);
    let status = profile.status.as_ref();
    let current = current_conditions(status.map(|s| &s.conditions));
    let merged = conditions::merge(
        current,
        &[ready_condition, recorders, storage_bound, conflict],
        generation,
        &conditions::now(),
    );
    let transitions = conditions::transitions(current, &merged);
    let desired =
        crate::status::profile_status(generation, &merged, existing, ready, &load, &endpoints);
    ctx.apply_status(&*profile, desired, &transitions).await?;
    succeeded(NAME, &*profile, &ctx);

    Ok(if spec.disabled {
        Action::await_change()
    } else if ready > 0 {
        Action::requeue(ctx.config.load_interval)
    } else {
        Action::requeue(Duration::from_secs(300))
    })
}

/// Applies the assurance CronJob and its ConfigMap, or deletes them when `spec.assurance` is
/// gone. `Err` says why they cannot be built (a TLS-only profile the test client cannot call).
async fn apply_assurance(
    ctx: &Context,
    profile: &RecordingProfile,
    target: &StorageTarget,
    owner: &Owner,
) -> Result<Result<(), String>, Error> {
    let s = &ctx.children;
    let built = assurance::build(
        profile,
        target,
        &ChildNames::new(&owner.name).sip,
        &ctx.config.image,
        &ctx.config.database,
        &ctx.config.key_ring,
    );
    let keep = match built {
        Err(e) => return Ok(Err(format!("recording assurance: {e}"))),
        Ok(None) => Vec::new(),
        Ok(Some(a)) => {
            let keep = vec![
                a.config_map.metadata.name.clone().unwrap_or_default(),
                a.cron_job.metadata.name.clone().unwrap_or_default(),
            ];
            let applied = async {
                ctx.apply(&s.assurance_config_maps, a.config_map).await?;
                ctx.apply(&s.assurance_cron_jobs, a.cron_job).await
            };
            if let Err(message) = refusal(applied.await)? {
                return Ok(Err(message));
            }
            keep
        }
    };
    let uid = profile.metadata.uid.clone().unwrap_or_default();
    ctx.delete_orphans(&s.assurance_cron_jobs, &uid, &keep)
        .await?;
    ctx.delete_orphans(&s.assurance_config_maps, &uid, &keep)
        .await?;
    Ok(Ok(()))
}

/// The selections of the other enabled RecordingProfiles of `profile`'s namespace.
fn other_profiles(
    ctx: &Context,
    profile: &RecordingProfile,
) -> Vec<callvault_config::profiles::Selection> {
    let mut others: Vec<_> = ctx
        .recording_profiles
        .state()
        .iter()
        .filter(|p| {
            p.metadata.namespace == profile.metadata.namespace
                && p.metadata.name != profile.metadata.name
                && !p.spec.disabled
        })
        .map(|p| crate::render::selection(p))
        .collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    others
}

/// The Conflict condition: True naming the users an older profile records (reported by the
/// recorders, which leave them out), else False.
fn conflict_condition(conflicts: &[callvault_crds::recording_profile::UserConflict]) -> Observed {
    if conflicts.is_empty() {
        return Observed::no(
            ct::CONFLICT,
            reason::NO_CONFLICT,
            "no user of this profile is recorded by another profile",
        );
    }
    Observed::yes(
        ct::CONFLICT,
        reason::USER_CONFLICT,
        callvault_config::profiles::conflict_message(
            conflicts
                .iter()
                .map(|c| (c.user.as_str(), c.profile.as_str())),
        ),
    )
}

/// Resolves the StorageTarget and the public key, or says which is missing.
async fn bind(
    ctx: &Context,
    profile: &RecordingProfile,
    ns: &str,
) -> Result<Result<Binding, Observed>, Error> {
    let target_name = &profile.spec.storage_target_ref.name;
    let Some(target) = ctx
        .storage_targets
        .get(&ObjectRef::new(target_name).within(ns))
    else {
        return Ok(Err(Observed::no(
            ct::STORAGE_BOUND,
            reason::STORAGE_TARGET_NOT_FOUND,
            format!("StorageTarget {target_name} does not exist in namespace {ns}"),
        )));
    };
    let key_ref = &profile.spec.encryption.key_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = secrets.get_opt(&key_ref.name).await? else {
        return Ok(Err(Observed::no(
            ct::STORAGE_BOUND,
            reason::KEY_SECRET_NOT_FOUND,
            format!(
                "Secret {} (the encryption public key) does not exist",
                key_ref.name
            ),
        )));
    };
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key_ref.key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let Some(pem) = pem else {
        return Ok(Err(Observed::no(
            ct::STORAGE_BOUND,
            reason::KEY_SECRET_NOT_FOUND,
            format!("Secret {} has no key {}", key_ref.name, key_ref.key),
        )));
    };
    let key_id = match PublicKey::from_pem(&pem) {
        Ok(key) => key.id().to_hex(),
        Err(e) => {
            return Ok(Err(Observed::no(
                ct::STORAGE_BOUND,
                reason::INVALID_KEY,
                format!("Secret {} key {}: {e}", key_ref.name, key_ref.key),
            )));
        }
    };
    let reachable = target
        .status
        .as_ref()
        .and_then(|s| crate::status::reachable_of(&s.conditions));
    let condition = crate::status::storage_bound(target_name, ns, Some(reachable), &key_id);
    Ok(Ok(Binding {
        target,
        key_id,
        condition,
    }))
}

/// Reads `GET /status` of every ready recorder pod. The flag is false when some ready pod
/// did not answer.
/// What the ready recorder pods report: their summed load, whether every ready pod answered,
/// and the addresses of those taking calls now (not draining, not full).
async fn pool_load(ctx: &Context, owner: &Owner) -> Result<(PoolLoad, bool, Vec<String>), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let selector = owner
        .selector(RECORDER)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let mut reports: Vec<RecorderStatus> = Vec::new();
    let mut taking_calls = Vec::new();
    let mut complete = true;
    for pod in list.items.iter().filter(|p| is_ready(p)) {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
            continue;
        };
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let url = format!("http://{host}:{HTTP_PORT}/status");
        match ctx.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => match r.json::<RecorderStatus>().await {
                Ok(status) => {
                    if !status.draining && status.active_sessions < status.capacity {
                        taking_calls.push(ip.to_owned());
                    }
                    reports.push(status);
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "unreadable /status");
                    complete = false;
                }
            },
            Ok(r) => {
                tracing::warn!(pod = %pod.name_any(), status = %r.status(), "/status failed");
                complete = false;
            }
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, "/status unreachable");
                complete = false;
            }
        }
    }
    Ok((aggregate(&reports), complete, taking_calls))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Recordings of the profile still stored, as its retention job last counted them: `None` when
/// no run has counted them yet.
fn stored_recordings(profile: &RecordingProfile) -> Option<i64> {
    profile
        .status
        .as_ref()
        .and_then(|s| s.retention.as_ref())
        .filter(|r| r.last_run_time.is_some())
        .map(|r| r.stored_recordings)
}

/// A profile being deleted goes once none of its recordings is stored; until then it stays,
/// saying why (`DeletionBlocked`). One that never recorded goes at once.
async fn deleting(profile: &RecordingProfile, ctx: &Context) -> Result<Action, Error> {
    let recorded = profile
        .status
        .as_ref()
        .is_some_and(|s| s.last_recording_time.is_some());
    let why = match stored_recordings(profile) {
        Some(0) => None,
        None if !recorded => None,
        Some(n) => Some(format!(
            "{n} recordings of this profile are stored; it cannot be deleted until retention \
             has removed them (status.retention.storedRecordings must be 0)"
        )),
        None => Some(
            "it recorded calls and no retention run has counted them yet; it cannot be deleted \
             until one reports status.retention.storedRecordings 0"
                .to_owned(),
        ),
    };
    let Some(why) = why else {
        set_finalizer(ctx, profile, FINALIZER, false).await?;
        tracing::info!("no stored recordings: deletion allowed");
        succeeded(NAME, profile, ctx);
        return Ok(Action::await_change());
    };
    deletion_blocked(
        ctx,
        profile,
        profile.status.as_ref().map(|s| &s.conditions),
        reason::RECORDINGS_EXIST,
        why,
    )
    .await?;
    succeeded(NAME, profile, ctx);
    Ok(Action::await_change())
}
