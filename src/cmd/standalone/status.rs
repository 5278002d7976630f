//! Status and alarms of standalone's resources, from the operator's own functions: the same
//! conditions and fields a cluster shows in `kubectl get` appear in the portal's resource
//! screens, and the same alarms are stored, listed and mailed.
//!
//! One task refreshes everything every [`TICK`]: each recorder's health and `/status` (read
//! in-process), each StorageTarget's connection test (at once when it is new or changed, then
//! every [`PROBE_INTERVAL`]), and the archive counters. The jobs add their part (last
//! archive, transcription, retention and recording assurance runs) as they finish. An alarm is
//! applied only when what it observes changes, so a steady state costs no database writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use callvault_crds::{
    Condition, ConnectorStatus, RecordingProfileStatus, ResourceSet, SpeechJobStatus,
    StorageTarget, StorageTargetStatus, StorageType, condition_type as ct, reason,
};
use callvault_jobs::alarms::{self, AlarmKind, Alarms, Mailer, Observation};
use callvault_jobs::archive::ArchiveSummary;
use callvault_jobs::assurance::AssuranceReport;
use callvault_operator::conditions::{self, Observed};
use callvault_operator::load::{RecorderStatus, aggregate};
use callvault_operator::status as shared;
use callvault_recorder::alarms::Listed;
use callvault_recorder::ops::{Health, HealthCell, StatusCell};
use callvault_store::db::Db;
use callvault_store::objstore::{Credentials, ProbeOptions, ProbeReport, StorageConfig};
use serde_json::Value;
use tokio::sync::{Notify, watch};

use super::TENANT;

/// How often recorder health and load are read into the status.
pub const TICK: Duration = Duration::from_secs(1);
/// How often each StorageTarget is probed when nothing about it changed (the operator's
/// default interval is longer: here a probe is a local file or one request).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// The alarm source of the resource files themselves.
const RESOURCE_FILES: &str = "resource files";

/// One running recorder as the status sees it.
#[derive(Debug, Clone)]
pub struct RecorderCells {
    pub health: HealthCell,
    pub status: StatusCell,
}

/// What the status task and the rest of standalone share.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the task before its next tick (recorders or resource files changed).
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    storage_targets: BTreeMap<String, StorageTargetStatus>,
    profiles: BTreeMap<String, RecordingProfileStatus>,
    connectors: BTreeMap<String, ConnectorStatus>,
    speech_jobs: BTreeMap<String, SpeechJobStatus>,
    /// Recorders by profile.
    recorders: BTreeMap<String, RecorderCells>,
    /// Probe results by target: when, of which spec, and what it found.
    probes: BTreeMap<String, Probe>,
    /// The alarm each StorageTarget's last probe raised or cleared.
    storage_alarms: BTreeMap<String, Observation>,
    /// The alarm each Connector's last archive run raised or cleared.
    archive_alarms: BTreeMap<String, Observation>,
    /// The alarm each profile's last recording assurance run raised or cleared.
    assurance_alarms: BTreeMap<String, Observation>,
    /// Why the resource files were last refused, until a load succeeds.
    files_refused: Option<String>,
    /// The last observation applied per alarm, so that only changes reach the database.
    applied: BTreeMap<(&'static str, String), Observation>,
}

#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    spec: Value,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The recorders now running, by profile.
    pub fn set_recorders(&self, recorders: BTreeMap<String, RecorderCells>) {
        self.lock().recorders = recorders;
        self.0.wake.notify_one();
    }

    /// The resource files could not be loaded or applied (`Some(why)`), or were (`None`).
    pub fn files(&self, refused: Option<String>) {
        self.lock().files_refused = refused;
        self.0.wake.notify_one();
    }

    /// Why some recorder cannot record now, one line per profile; `None` when all can.
    pub fn cannot_record(&self) -> Option<String> {
        let state = self.lock();
        let reasons: Vec<String> = state
            .recorders
            .iter()
            .filter_map(|(name, cells)| {
                let health = cells.health.get();
                (!health.can_record()).then(|| format!("recorder {name:?}: {}\n", health.reason()))
            })
            .collect();
        (!reasons.is_empty()).then(|| reasons.concat())
    }

    /// An archive run finished: its part of the Connector's status.
    pub fn archive_ran(&self, connector: &str, summary: &ArchiveSummary, generation: Option<i64>) {
        let mut state = self.lock();
        let previous = state.connectors.get(connector).cloned().unwrap_or_default();
        let run = callvault_jobs::cluster::archive_status(summary, &previous, generation);
        if let Ok(run) = serde_json::from_value::<ConnectorStatus>(run) {
            let mut next = previous;
            next.pending_files = run.pending_files;
            next.archived_files = run.archived_files;
            next.last_run = run.last_run;
            if run.last_successful_archive_time.is_some() {
                next.last_successful_archive_time = run.last_successful_archive_time;
            }
            keep_condition(
                &mut next.conditions,
                &run.conditions,
                ct::LAST_RUN_SUCCEEDED,
            );
            state.connectors.insert(connector.to_owned(), next);
        }
        state
            .archive_alarms
            .insert(connector.to_owned(), alarms::connector(connector, summary));
    }

    /// A transcription run finished: its counters in the SpeechJob's status.
    pub fn transcription_ran(&self, speech_job: &str, patch: &Value) {
        let mut state = self.lock();
        let previous = state
            .speech_jobs
            .get(speech_job)
            .cloned()
            .unwrap_or_default();
        if let Ok(run) = serde_json::from_value::<SpeechJobStatus>(patch["status"].clone()) {
            let next = SpeechJobStatus {
                conditions: previous.conditions,
                observed_generation: previous.observed_generation,
                ..run
            };
            state.speech_jobs.insert(speech_job.to_owned(), next);
        }
    }

    /// A retention run finished: `status.retention` of the profile.
    pub fn retention_ran(&self, profile: &str, patch: &Value) {
        let mut state = self.lock();
        if let Ok(retention) = serde_json::from_value(patch["retention"].clone()) {
            state
                .profiles
                .entry(profile.to_owned())
                .or_default()
                .retention = Some(retention);
        }
    }

    /// A recording assurance run finished: the profile's `Assured` condition and
    /// `status.assurance`, as the job writes them in a cluster, and its alarm.
    pub fn assurance_ran(&self, report: &AssuranceReport, generation: Option<i64>) {
        let mut state = self.lock();
        let previous = state
            .profiles
            .get(&report.profile)
            .cloned()
            .unwrap_or_default();
        let patch = callvault_jobs::cluster::assurance_status(report, &previous, generation);
        if let Ok(run) = serde_json::from_value::<RecordingProfileStatus>(patch) {
            let status = state.profiles.entry(report.profile.clone()).or_default();
            status.assurance = run.assurance;
            keep_condition(&mut status.conditions, &run.conditions, ct::ASSURED);
        }
        state
            .assurance_alarms
            .insert(report.profile.clone(), alarms::assurance(report));
        self.0.wake.notify_one();
    }

    /// `set` with each resource's status as last computed, for the portal.
    pub fn with_status(&self, set: &ResourceSet) -> ResourceSet {
        let state = self.lock();
        let mut set = set.clone();
        for (name, r) in &mut set.storage_targets {
            r.status = state.storage_targets.get(name).cloned();
        }
        for (name, r) in &mut set.recording_profiles {
            r.status = state.profiles.get(name).cloned();
        }
        for (name, r) in &mut set.connectors {
            r.status = state.connectors.get(name).cloned();
        }
        for (name, r) in &mut set.speech_jobs {
            r.status = state.speech_jobs.get(name).cloned();
        }
        set
    }
}

/// Replaces the condition `type_` in `into` with the one in `from`, if any.
fn keep_condition(into: &mut Vec<Condition>, from: &[Condition], type_: &str) {
    if let Some(c) = from.iter().find(|c| c.type_ == type_) {
        into.retain(|c| c.type_ != type_);
        into.push(c.clone());
    }
}

/// What the status task works with.
#[derive(Debug)]
pub struct Context {
    pub db: Db,
    pub data: PathBuf,
    pub mailer: Option<Mailer>,
    /// Key ids by `keySecretRef.name`.
    pub key_ids: BTreeMap<String, String>,
    pub probe: ProbeOptions,
}

/// Refreshes the status every [`TICK`] (or when woken) until `stop`; `publish` hands each
/// resource set with its status to the portal.
pub async fn run(
    ctx: Context,
    board: Board,
    mut resources: watch::Receiver<Arc<ResourceSet>>,
    mut stop: watch::Receiver<bool>,
    publish: impl Fn(ResourceSet) + Send,
) {
    loop {
        let set = resources.borrow_and_update().clone();
        refresh(&ctx, &board, &set).await;
        publish(board.with_status(&set));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = resources.changed() => {}
            () = board.0.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One refresh of every resource's status, and the alarms that follow from it.
async fn refresh(ctx: &Context, board: &Board, set: &ResourceSet) {
    let mut observations = Vec::new();
    probe_due(ctx, board, set).await;
    profiles(ctx, board, set, &mut observations);
    connectors(ctx, board, set).await;
    speech_jobs(board, set);
    {
        let state = board.lock();
        observations.extend(state.storage_alarms.values().cloned());
        observations.extend(state.assurance_alarms.values().cloned());
        observations.extend(
            state
                .archive_alarms
                .iter()
                .filter(|(name, _)| set.connectors.contains_key(*name))
                .map(|(_, obs)| obs.clone()),
        );
        observations.push(alarms::configuration(
            RESOURCE_FILES,
            state.files_refused.as_deref(),
        ));
    }
    apply_alarms(ctx, board, observations).await;
}

/// Probes every target that is new, changed, due or asked for; forgets removed ones.
async fn probe_due(ctx: &Context, board: &Board, set: &ResourceSet) {
    let due: Vec<(String, StorageTarget)> = {
        let mut state = board.lock();
        state
            .storage_targets
            .retain(|name, _| set.storage_targets.contains_key(name));
        state
            .probes
            .retain(|name, _| set.storage_targets.contains_key(name));
        state
            .storage_alarms
            .retain(|name, _| set.storage_targets.contains_key(name));
        set.storage_targets
            .iter()
            .filter(|(name, target)| {
                let spec = serde_json::to_value(&target.spec).unwrap_or_default();
                state
                    .probes
                    .get(*name)
                    .is_none_or(|p| p.spec != spec || p.at.elapsed() >= PROBE_INTERVAL)
            })
            .map(|(name, target)| (name.clone(), target.clone()))
            .collect()
    };
    for (name, target) in due {
        let (reachable, report) = probe(&ctx.data, &name, &target, &ctx.probe).await;
        tracing::info!(target = %name, reachable = ?reachable.status, reason = %reachable.reason, "probed");
        let alarm = match &report {
            Some(report) => alarms::storage(&name, report),
            None => alarms::storage_unreachable(&name, Some(&reachable.message)),
        };
        let mut state = board.lock();
        state.storage_alarms.insert(name.clone(), alarm);
        let previous = state
            .storage_targets
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let ready = shared::storage_target_ready(&reachable);
        let now = conditions::now();
        let generation = target.metadata.generation;
        let merged = conditions::merge(&previous.conditions, &[ready, reachable], generation, &now);
        let usage = report.as_ref().and_then(|r| r.usage.as_ref());
        let status = shared::storage_target_status(generation, &merged, &now, usage);
        if let Ok(status) = serde_json::from_value(status) {
            state.storage_targets.insert(name.clone(), status);
        }
        state.probes.insert(
            name,
            Probe {
                at: Instant::now(),
                spec: serde_json::to_value(&target.spec).unwrap_or_default(),
            },
        );
    }
}

/// The connection test of one target, as the operator runs it: a local directory is created
/// first (as at start), credentials come from `<data>/secrets/<name>/`. `Reachable` says which
/// step failed and why; the report is absent when the test could not even start.
pub async fn probe(
    data: &Path,
    name: &str,
    target: &StorageTarget,
    options: &ProbeOptions,
) -> (Observed, Option<ProbeReport>) {
    if target.spec.type_ == StorageType::Filesystem
        && let Some(path) = &target.spec.path
        && let Err(e) = std::fs::create_dir_all(path)
    {
        let message = format!("connect step failed: cannot create {path}: {e}");
        return (
            Observed::no(ct::REACHABLE, reason::CONNECT_FAILED, message),
            None,
        );
    }
    let config = match serde_json::to_value(&target.spec)
        .map_err(|e| e.to_string())
        .and_then(|spec| StorageConfig::from_spec(&spec).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(e) => {
            return (Observed::no(ct::REACHABLE, reason::INVALID_SPEC, e), None);
        }
    };
    let credentials = match super::credentials_dir(data, target) {
        None => Credentials::none(),
        Some(dir) => match Credentials::from_dir(&dir) {
            Ok(c) => c,
            Err(e) => {
                return (
                    Observed::no(
                        ct::REACHABLE,
                        reason::CREDENTIALS_NOT_FOUND,
                        format!("credentials of StorageTarget {name}: {e}"),
                    ),
                    None,
                );
            }
        },
    };
    let report = callvault_store::objstore::test_connection(&config, &credentials, options).await;
    (shared::reachable(&report), Some(report))
}

/// Each profile's conditions and figures from its recorder, as the operator derives them
/// from its pods.
fn profiles(ctx: &Context, board: &Board, set: &ResourceSet, observations: &mut Vec<Observation>) {
    let mut state = board.lock();
    state
        .profiles
        .retain(|name, _| set.recording_profiles.contains_key(name));
    // Assurance removed from a profile takes its results (and alarm) with it.
    state.assurance_alarms.retain(|name, _| {
        set.recording_profiles
            .get(name)
            .is_some_and(|p| p.spec.assurance.is_some())
    });
    for (name, profile) in &set.recording_profiles {
        let spec = &profile.spec;
        let cells = state.recorders.get(name).cloned();
        let health = cells.as_ref().map(|c| c.health.get());
        let document = cells.as_ref().and_then(|c| c.status.get());
        observations.extend(recorder_alarms(document.as_ref()));
        let report: Option<RecorderStatus> = document.and_then(|v| serde_json::from_value(v).ok());
        let replicas = i32::from(cells.is_some());
        let ready = i32::from(health.as_ref().is_some_and(Health::can_record));
        let load = aggregate(report.as_slice());
        let not_ready = health
            .as_ref()
            .map_or_else(|| "the recorder has not started".to_owned(), Health::reason);
        let target_name = &spec.storage_target_ref.name;
        let target = set.storage_targets.get(target_name).map(|_| {
            state
                .storage_targets
                .get(target_name)
                .and_then(|s| shared::reachable_of(&s.conditions))
        });
        let key_name = &spec.encryption.key_secret_ref.name;
        let storage_bound = match ctx.key_ids.get(key_name) {
            Some(key_id) => shared::storage_bound(target_name, TENANT, target, key_id),
            None => Observed::no(
                ct::STORAGE_BOUND,
                reason::KEY_SECRET_NOT_FOUND,
                format!("no key {key_name} in the data directory's keys"),
            ),
        };
        let storage_bound = shared::storage_bound_as_recorded(storage_bound, &load);
        let recorders =
            shared::recorders_available(spec.disabled, ready, replicas, Some(&not_ready));
        let refusal = report_refusal(cells.as_ref());
        let problem = refusal
            .as_ref()
            .map(|why| Observed::no(ct::READY, reason::INVALID_SPEC, why.clone()))
            // One recorder per profile here: a full one cannot be joined by another.
            .or_else(|| shared::recorder_problem(&load, false, spec.recorder.fail_closed));
        let ready_condition =
            shared::profile_ready(spec.disabled, problem, &storage_bound, &recorders);
        let previous = state.profiles.get(name).cloned().unwrap_or_default();
        let generation = profile.metadata.generation;
        let merged = conditions::merge(
            &previous.conditions,
            &[ready_condition, recorders, storage_bound],
            generation,
            &conditions::now(),
        );
        // No endpoints list: standalone's one recorder listens where the resource files say.
        let status = shared::profile_status(generation, &merged, replicas, ready, &load, &[]);
        if let Ok(mut status) = serde_json::from_value::<RecordingProfileStatus>(status) {
            status.retention = previous.retention;
            if spec.assurance.is_some() {
                status.assurance = previous.assurance;
                keep_condition(&mut status.conditions, &previous.conditions, ct::ASSURED);
            }
            state.profiles.insert(name.clone(), status);
        }
        let source = format!("RecordingProfile {name}");
        if spec.disabled {
            observations.push(alarms::clear(AlarmKind::RecorderUnavailable, name));
        } else {
            observations.push(alarms::recorders(
                name,
                u32::try_from(ready).unwrap_or(0),
                u32::try_from(load.capacity).unwrap_or(u32::MAX),
                u32::try_from(load.active_sessions).unwrap_or(u32::MAX),
            ));
        }
        observations.push(alarms::configuration(&source, refusal.as_deref()));
    }
}

/// The alarms a recorder raises about itself (storage, spool), from its `/status`: standalone's
/// recorders do not store them, so they are stored and mailed here with the rest.
fn recorder_alarms(document: Option<&Value>) -> Vec<Observation> {
    let Some(listed) = document
        .and_then(|d| d.get("alarms"))
        .and_then(|a| serde_json::from_value::<Vec<Listed>>(a.clone()).ok())
    else {
        return Vec::new();
    };
    listed
        .into_iter()
        .filter_map(|l| {
            Some(Observation {
                kind: AlarmKind::from_type(&l.alarm_type)?,
                source: l.source,
                raised: l.raised.map(|r| (r.severity, r.message)),
            })
        })
        .collect()
}

/// Why the recorder refused its last configuration change, from its `/status`.
fn report_refusal(cells: Option<&RecorderCells>) -> Option<String> {
    let status = cells?.status.get()?;
    status["configuration"]["lastRefusal"]
        .as_str()
        .map(str::to_owned)
}

/// Each Connector's conditions from its destination, and its pending and archived counts.
async fn connectors(ctx: &Context, board: &Board, set: &ResourceSet) {
    let mut counts = BTreeMap::new();
    for (name, c) in &set.connectors {
        match ctx
            .db
            .archive_counts(TENANT, name, &c.spec.source.recording_profiles)
            .await
        {
            Ok(n) => {
                counts.insert(name.clone(), n);
            }
            Err(e) => tracing::warn!(connector = %name, error = %e, "archive counts"),
        }
    }
    let mut state = board.lock();
    state
        .connectors
        .retain(|name, _| set.connectors.contains_key(name));
    for (name, c) in &set.connectors {
        let target_name = &c.spec.storage_target_ref.name;
        let target = set.storage_targets.get(target_name).map(|_| {
            state
                .storage_targets
                .get(target_name)
                .and_then(|s| shared::reachable_of(&s.conditions))
        });
        let exists = target.is_some();
        let reachable = shared::connector_reachable(target_name, TENANT, target);
        let ready =
            shared::connector_ready(exists, &reachable, None, c.spec.active, &c.spec.schedule);
        let mut status = state.connectors.get(name).cloned().unwrap_or_default();
        let generation = c.metadata.generation;
        let mut merged = conditions::merge(
            &status.conditions,
            &[ready, reachable],
            generation,
            &conditions::now(),
        );
        keep_condition(&mut merged, &status.conditions, ct::LAST_RUN_SUCCEEDED);
        status.conditions = merged;
        status.observed_generation = generation;
        if let Some(n) = counts.get(name) {
            status.pending_files = n.pending;
            status.archived_files = n.archived;
        }
        state.connectors.insert(name.clone(), status);
    }
}

/// Each SpeechJob's `Ready`; its counters come from its runs.
fn speech_jobs(board: &Board, set: &ResourceSet) {
    let mut state = board.lock();
    state
        .speech_jobs
        .retain(|name, _| set.speech_jobs.contains_key(name));
    for (name, job) in &set.speech_jobs {
        let ready = shared::speech_job_ready(job, "in this process");
        let mut status = state.speech_jobs.get(name).cloned().unwrap_or_default();
        let generation = job.metadata.generation;
        status.conditions =
            conditions::merge(&status.conditions, &[ready], generation, &conditions::now());
        status.observed_generation = generation;
        state.speech_jobs.insert(name.clone(), status);
    }
}

/// Applies each observation that differs from the last one applied for its alarm (all of
/// them on the first refresh, which also clears what recovered while standalone was down).
async fn apply_alarms(ctx: &Context, board: &Board, observations: Vec<Observation>) {
    let alarms = Alarms {
        db: &ctx.db,
        tenant: TENANT,
        mailer: ctx.mailer.as_ref(),
    };
    // Alarms of resources that are gone clear with them, and are then forgotten.
    let gone: Vec<Observation> = {
        let state = board.lock();
        state
            .applied
            .values()
            .filter(|a| {
                !observations
                    .iter()
                    .any(|o| o.kind == a.kind && o.source == a.source)
            })
            .map(|a| alarms::clear(a.kind, &a.source))
            .collect()
    };
    let all = observations
        .into_iter()
        .map(|o| (o, false))
        .chain(gone.into_iter().map(|o| (o, true)));
    for (obs, is_gone) in all {
        let key = (obs.kind.as_str(), obs.source.clone());
        if board.lock().applied.get(&key) == Some(&obs) {
            continue;
        }
        match alarms.apply(&obs).await {
            Ok(_) if is_gone => {
                board.lock().applied.remove(&key);
            }
            Ok(_) => {
                board.lock().applied.insert(key, obs);
            }
            Err(e) => tracing::error!(alarm = key.0, source = %key.1, error = %e,
                "the alarm could not be stored; tried again at the next refresh"),
        }
    }
}
