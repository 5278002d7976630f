//! Connector → archive CronJob, and a finalizer that keeps a Connector which archived anything
//! from being deleted (its archive copies must stay traceable to it).

use std::sync::Arc;

use callvault_crds::{Connector, RecordingProfile, StorageTarget, reason};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{
    Context, Error, Scope, current_conditions, deletion_blocked, refusal, secret_changes,
    set_finalizer, succeeded,
};
use crate::build::connector::{build, config_map_name, cron_job_name};
use crate::conditions;

/// Controller name in metrics and logs.
pub(super) const NAME: &str = "connector";
/// Finalizer held while a Connector may have archive copies.
pub const FINALIZER: &str = "callvault.io/archive-copies";

pub(super) fn controller(client: &Client, scope: &Scope, database: &str) -> Controller<Connector> {
    let connectors = Controller::new(scope.api::<Connector>(client), Default::default());
    let store = connectors.store();
    // The database URL Secret appearing lets the archive pods start: say so at once.
    let by_secret = store.clone();
    let database = database.to_owned();
    let connectors = connectors.watches_stream(secret_changes(client, scope), move |secret| {
        if secret.name_any() != database {
            return Vec::new();
        }
        let ns = secret.namespace();
        by_secret
            .state_filter(|c| c.namespace() == ns)
            .iter()
            .map(|c| ObjectRef::from_obj(&**c))
            .collect::<Vec<_>>()
    });
    // Its sources are the StorageTargets of the namespace's profiles.
    let by_profile = store.clone();
    let connectors = connectors.watches(
        scope.api::<RecordingProfile>(client),
        Default::default(),
        move |profile: RecordingProfile| {
            let ns = profile.namespace();
            by_profile
                .state_filter(|c| c.namespace() == ns)
                .iter()
                .map(|c| ObjectRef::from_obj(&**c))
                .collect::<Vec<_>>()
        },
    );
    // A destination that becomes (un)reachable changes the Connector's Reachable condition.
    connectors.watches(
        scope.api::<StorageTarget>(client),
        Default::default(),
        move |target: StorageTarget| {
            let ns = target.namespace();
            let name = target.name_any();
            store
                .state_filter(|c| c.namespace() == ns && c.spec.storage_target_ref.name == name)
                .iter()
                .map(|c| ObjectRef::from_obj(&**c))
                .collect::<Vec<_>>()
        },
    )
}

#[tracing::instrument(skip_all, fields(namespace = connector.namespace(), name = connector.name_any()))]
pub(super) async fn reconcile(
    connector: Arc<Connector>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(NAME);
    let ns = connector.namespace().unwrap_or_default();
    let generation = connector.metadata.generation;
    let status = connector.status.as_ref();
    let current = current_conditions(status.map(|s| &s.conditions));
    let archived = status.map(|s| s.archived_files).unwrap_or(0);

    if connector.metadata.deletion_timestamp.is_some() {
        if archived > 0 {
            deletion_blocked(
                &ctx,
                &*connector,
                status.map(|s| &s.conditions),
                reason::ARCHIVES_EXIST,
                format!(
                    "{archived} recordings were archived through this Connector; it cannot be \
                     deleted while its archive copies exist (status.archivedFiles must be 0)"
                ),
            )
            .await?;
            succeeded(NAME, &*connector, &ctx);
            // The archive job's status write (archivedFiles) triggers the next look.
            return Ok(Action::await_change());
        }
        set_finalizer(&ctx, &*connector, FINALIZER, false).await?;
        tracing::info!("no archive copies: deletion allowed");
        succeeded(NAME, &*connector, &ctx);
        return Ok(Action::await_change());
    }

    set_finalizer(&ctx, &*connector, FINALIZER, true).await?;

    let target_name = &connector.spec.storage_target_ref.name;
    let target = ctx
        .storage_targets
        .get(&ObjectRef::new(target_name).within(&ns));
    // Sources: the StorageTargets of the profiles it archives.
    let sources = ctx.profile_targets(&ns, &connector.spec.source.recording_profiles);
    let mut invalid = None;
    if let Some(destination) = &target {
        let refs: Vec<&StorageTarget> = sources.iter().map(|s| &**s).collect();
        match build(
            &connector,
            destination,
            &refs,
            &ctx.config.image,
            &ctx.config.database,
            &ctx.config.key_ring,
        ) {
            Ok(children) => {
                let applied = async {
                    ctx.apply(&ctx.children.archive_config_maps, children.config_map)
                        .await?;
                    ctx.apply(&ctx.children.archive_cron_jobs, children.cron_job)
                        .await
                };
                invalid = refusal(applied.await)?.err();
            }
            Err(e) => invalid = Some(e.to_string()),
        }
    }
    let uid = connector.uid().unwrap_or_default();
    let name = connector.name_any();
    ctx.delete_orphans(
        &ctx.children.archive_cron_jobs,
        &uid,
        &[cron_job_name(&name)],
    )
    .await?;
    ctx.delete_orphans(
        &ctx.children.archive_config_maps,
        &uid,
        &[config_map_name(&name)],
    )
    .await?;

    let reachable = crate::status::connector_reachable(
        target_name,
        &ns,
        target.as_ref().map(|t| {
            t.status
                .as_ref()
                .and_then(|s| crate::status::reachable_of(&s.conditions))
        }),
    );
    let mut ready = crate::status::connector_ready(
        target.is_some(),
        &reachable,
        invalid,
        connector.spec.active,
        &connector.spec.schedule,
    );
    if ready.status == callvault_crds::ConditionStatus::True
        && let Some(missing) = ctx.database_secret_missing(&ns, "the archive pods").await?
    {
        ready = missing;
    }
    let merged = conditions::merge(current, &[ready, reachable], generation, &conditions::now());
    let transitions = conditions::transitions(current, &merged);
    ctx.apply_status(
        &*connector,
        json!({"observedGeneration": generation, "conditions": merged}),
        &transitions,
    )
    .await?;
    succeeded(NAME, &*connector, &ctx);
    Ok(Action::await_change())
}
