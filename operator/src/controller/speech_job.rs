//! SpeechJob → transcription CronJob (scheduled) or Job (run once). The counters in its status
//! belong to the job (its own field manager); the operator writes only its conditions.

use std::sync::Arc;

use callvault_crds::{SpeechJob, condition_type as ct, reason};
use kube::runtime::controller::{Action, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Context, Error, Scope, current_conditions, succeeded};
use crate::build::speech_job::{Workload, workload};
use crate::conditions::{self, Observed};

/// Controller name in metrics and logs.
pub(super) const NAME: &str = "speechjob";

pub(super) fn controller(client: &Client, scope: &Scope) -> Controller<SpeechJob> {
    Controller::new(scope.api(client), Default::default())
}

#[tracing::instrument(skip_all, fields(namespace = job.namespace(), name = job.name_any()))]
pub(super) async fn reconcile(job: Arc<SpeechJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(NAME);
    let generation = job.metadata.generation;
    let uid = job.uid().unwrap_or_default();
    let children = &ctx.children;
    let ready = match workload(&job, &ctx.config.image, &ctx.config.database)? {
        Workload::Scheduled(cron) => {
            let name = cron.metadata.name.clone().unwrap_or_default();
            ctx.apply(&children.transcribe_cron_jobs, *cron).await?;
            ctx.delete_orphans(&children.transcribe_cron_jobs, &uid, &[name])
                .await?;
            ctx.delete_orphans(&children.transcribe_jobs, &uid, &[])
                .await?;
            let schedule = job.spec.schedule.clone().unwrap_or_default();
            if job.spec.suspend {
                Observed::yes(
                    ct::READY,
                    reason::RECONCILED,
                    "suspended: no new runs start",
                )
            } else {
                Observed::yes(
                    ct::READY,
                    reason::RECONCILED,
                    format!("transcribing on schedule {schedule}"),
                )
            }
        }
        Workload::Once(once) => {
            let name = once.metadata.name.clone().unwrap_or_default();
            ctx.apply(&children.transcribe_jobs, *once).await?;
            ctx.delete_orphans(&children.transcribe_jobs, &uid, std::slice::from_ref(&name))
                .await?;
            ctx.delete_orphans(&children.transcribe_cron_jobs, &uid, &[])
                .await?;
            Observed::yes(
                ct::READY,
                reason::RECONCILED,
                format!("runs once as Job {name}"),
            )
        }
    };
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
