//! SpeechJob → transcription job ConfigMap and CronJob (scheduled) or Job (run once). The
//! counters in its status belong to the job (its own field manager); the operator writes only
//! its conditions.

use std::sync::Arc;

use callvault_crds::{RecordingProfile, SpeechJob, StorageTarget, condition_type as ct, reason};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Context, Error, Scope, current_conditions, refusal, secret_changes, succeeded};
use crate::build::speech_job::{Workload, build, config_map_name};
use crate::conditions::{self, Observed};

/// Controller name in metrics and logs.
pub(super) const NAME: &str = "speechjob";

/// The controller; its sources are the StorageTargets of the namespace's profiles, so a
/// profile or target change reconciles the namespace's SpeechJobs, as does the private keys
/// Secret appearing.
pub(super) fn controller(
    client: &Client,
    scope: &Scope,
    key_ring: &str,
    database: &str,
) -> Controller<SpeechJob> {
    let jobs = Controller::new(scope.api::<SpeechJob>(client), Default::default());
    let store = jobs.store();
    let in_namespace = move |ns: Option<String>| {
        store
            .state_filter(|j| j.namespace() == ns)
            .iter()
            .map(|j| ObjectRef::from_obj(&**j))
            .collect::<Vec<_>>()
    };
    let by_target = in_namespace.clone();
    // The private keys Secret appearing lets the job's pods start: say so at once.
    let by_secret = in_namespace.clone();
    let key_ring = key_ring.to_owned();
    let database = database.to_owned();
    jobs.watches_stream(secret_changes(client, scope), move |secret| {
        let name = secret.name_any();
        if name == key_ring || name == database {
            by_secret(secret.namespace())
        } else {
            Vec::new()
        }
    })
    .watches(
        scope.api::<RecordingProfile>(client),
        Default::default(),
        move |profile: RecordingProfile| in_namespace(profile.namespace()),
    )
    .watches(
        scope.api::<StorageTarget>(client),
        Default::default(),
        move |target: StorageTarget| by_target(target.namespace()),
    )
}

#[tracing::instrument(skip_all, fields(namespace = job.namespace(), name = job.name_any()))]
pub(super) async fn reconcile(job: Arc<SpeechJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(NAME);
    let generation = job.metadata.generation;
    let uid = job.uid().unwrap_or_default();
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let children = &ctx.children;
    let sources = ctx.profile_targets(&ns, &job.spec.filter.recording_profiles);
    let sources: Vec<&StorageTarget> = sources.iter().map(|s| &**s).collect();

    let mut keep_config = Vec::new();
    let mut keep_cron = Vec::new();
    let mut keep_job = Vec::new();
    let built = build(
        &job,
        &sources,
        &ctx.config.image,
        &ctx.config.database,
        &ctx.config.key_ring,
    );
    let mut ready = match built {
        Err(e) if sources.is_empty() => Observed::no(
            ct::READY,
            reason::STORAGE_TARGET_NOT_FOUND,
            if job.spec.filter.recording_profiles.is_empty() {
                format!(
                    "no RecordingProfile with a StorageTarget in namespace {ns}: nothing to transcribe ({e})"
                )
            } else {
                format!(
                    "none of the RecordingProfiles {} has a StorageTarget in namespace {ns}: nothing to transcribe ({e})",
                    job.spec.filter.recording_profiles.join(", ")
                )
            },
        ),
        Err(e) => Observed::no(ct::READY, reason::INVALID_SPEC, e.to_string()),
        Ok(built) => {
            keep_config.push(config_map_name(&name));
            let run_now = built.run_now;
            if let Some(run) = &run_now {
                keep_job.push(run.metadata.name.clone().unwrap_or_default());
            }
            let applied = async {
                ctx.apply(&children.transcribe_config_maps, built.config_map)
                    .await?;
                if let Some(run) = run_now {
                    ctx.apply(&children.transcribe_jobs, *run).await?;
                }
                Ok(match built.workload {
                    Workload::Scheduled(cron) => {
                        keep_cron.push(cron.metadata.name.clone().unwrap_or_default());
                        ctx.apply(&children.transcribe_cron_jobs, *cron).await?;
                        crate::status::speech_job_ready(&job, "")
                    }
                    Workload::Once(once) => {
                        let job_name = once.metadata.name.clone().unwrap_or_default();
                        keep_job.push(job_name.clone());
                        ctx.apply(&children.transcribe_jobs, *once).await?;
                        crate::status::speech_job_ready(&job, &format!("as Job {job_name}"))
                    }
                })
            };
            refusal(applied.await)?
                .unwrap_or_else(|message| Observed::no(ct::READY, reason::INVALID_SPEC, message))
        }
    };
    ctx.delete_orphans(&children.transcribe_cron_jobs, &uid, &keep_cron)
        .await?;
    ctx.delete_orphans(&children.transcribe_jobs, &uid, &keep_job)
        .await?;
    ctx.delete_orphans(&children.transcribe_config_maps, &uid, &keep_config)
        .await?;

    // The pods cannot start without the private keys; say so rather than let them hang. Only
    // the Secret's metadata is fetched: the operator never holds a private key.
    let ring = &ctx.config.key_ring.name;
    let keys_missing = !ctx.secret_exists(&ns, ring).await?;
    if ready.status == callvault_crds::ConditionStatus::True
        && let Some(missing) = ctx.database_secret_missing(&ns, "the job's pods").await?
    {
        ready = missing;
    }
    if keys_missing && ready.status == callvault_crds::ConditionStatus::True {
        ready = Observed::no(
            ct::READY,
            reason::KEY_SECRET_NOT_FOUND,
            format!(
                "Secret {ring} (the private keys transcription decrypts recordings with) does not exist in namespace {ns}; the job's pods cannot start until it does"
            ),
        );
    }

    let current = current_conditions(job.status.as_ref().map(|s| &s.conditions));
    let merged = conditions::merge(current, &[ready], generation, &conditions::now());
    let transitions = conditions::transitions(current, &merged);
    ctx.apply_status(
        &*job,
        json!({"observedGeneration": generation, "conditions": merged}),
        &transitions,
    )
    .await?;
    succeeded(NAME, &*job, &ctx);
    Ok(Action::await_change())
}
