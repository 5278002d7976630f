//! StorageTarget → connection test (write, read, delete a probe object) on create, on change,
//! when its credentials Secret appears or changes, and every `probe_interval`; the `Reachable`
//! condition names the failing step and `Ready` follows it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use callvault_crds::{Connector, StorageTarget, condition_type as ct, reason};
use callvault_store::objstore::{Credentials, Secret as Sensitive, StorageConfig, test_connection};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use super::{
    Context, Error, Scope, current_conditions, deletion_blocked, lock, refusal, set_finalizer,
    succeeded,
};
use crate::build::storage_target::{build, config_map_name, cron_job_name};
use crate::conditions::{self, Observed};

/// Controller name in metrics and logs.
pub(super) const NAME: &str = "storagetarget";
/// Finalizer held while a RecordingProfile or Connector of the namespace stores on the target
/// (those stay while they hold recordings or copies, so the target does too).
pub const FINALIZER: &str = "callvault.io/in-use";

/// The controller, and the store of the Secrets' metadata it watches: a credentials Secret
/// created or changed after its StorageTarget is probed at once, not at the next interval.
pub(super) fn controller(
    client: &Client,
    scope: &Scope,
) -> (Controller<StorageTarget>, Store<PartialObjectMeta<Secret>>) {
    let targets = Controller::new(scope.api::<StorageTarget>(client), Default::default());
    let by_secret = targets.store();
    let (secrets, writer) = reflector::store();
    // Metadata only: the operator keeps no secret values in memory.
    let secret_changes = watcher(
        scope.api::<PartialObjectMeta<Secret>>(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let targets = targets.watches_stream(secret_changes, move |secret| {
        let ns = secret.namespace();
        let name = secret.name_any();
        by_secret
            .state_filter(|t| {
                t.namespace() == ns
                    && t.spec
                        .credentials_secret_ref
                        .as_ref()
                        .is_some_and(|r| r.name == name)
            })
            .iter()
            .map(|t| ObjectRef::from_obj(&**t))
            .collect::<Vec<_>>()
    });
    (targets, secrets)
}

#[tracing::instrument(skip_all, fields(namespace = target.namespace(), name = target.name_any()))]
pub(super) async fn reconcile(
    target: Arc<StorageTarget>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(NAME);
    if target.metadata.deletion_timestamp.is_some() {
        return deleting(&target, &ctx).await;
    }
    set_finalizer(&ctx, &*target, FINALIZER, true).await?;
    // The space cleanup CronJob follows the spec on every reconcile, probe due or not.
    let cleanup_invalid = space_cleanup(&target, &ctx).await?;
    let generation = target.metadata.generation;
    let status = target.status.as_ref();
    let now = conditions::now();
    let interval = ctx.config.probe_interval;

    // Probe when the spec changed, when never probed, or when the last probe is due again;
    // a reconcile caused by our own status write finds nothing due and writes nothing.
    let since_probe = status
        .and_then(|s| s.last_probe_time.as_ref())
        .map(|t| now.0.duration_since(t.0).unsigned_abs());
    let changed = status.and_then(|s| s.observed_generation) != generation;
    let ns = target.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", target.name_any());
    let secret_version = target.spec.credentials_secret_ref.as_ref().and_then(|r| {
        ctx.secrets
            .get(&ObjectRef::new(&r.name).within(&ns))
            .and_then(|s| s.resource_version())
    });
    let credentials_missing = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ct::REACHABLE))
        .is_some_and(|c| c.reason == reason::CREDENTIALS_NOT_FOUND);
    let secret_changed = lock(&ctx.probed_secrets)
        .get(&key)
        .map_or(credentials_missing && secret_version.is_some(), |seen| {
            *seen != secret_version
        });
    if let Some(elapsed) = since_probe
        && !changed
        && !secret_changed
        && elapsed < interval
    {
        succeeded(NAME, &*target, &ctx);
        return Ok(Action::requeue(interval - elapsed + Duration::from_secs(1)));
    }

    lock(&ctx.probed_secrets).insert(key, secret_version);
    let (reachable, usage) = match credentials(&ctx, &ns, &target).await? {
        Err(missing) => (missing, None),
        Ok(credentials) => {
            let config = StorageConfig::from_spec(&serde_json::to_value(&target.spec)?);
            match config {
                Err(e) => (
                    Observed::no(ct::REACHABLE, reason::INVALID_SPEC, e.to_string()),
                    None,
                ),
                Ok(config) => {
                    let report = test_connection(&config, &credentials, &ctx.config.probe).await;
                    (crate::status::reachable(&report), report.usage)
                }
            }
        }
    };
    tracing::info!(reachable = ?reachable.status, reason = %reachable.reason, "probed");

    let current = current_conditions(status.map(|s| &s.conditions));
    let ready = match cleanup_invalid {
        Some(problem) => Observed::no(ct::READY, reason::INVALID_SPEC, problem),
        None => crate::status::storage_target_ready(&reachable),
    };
    let merged = conditions::merge(current, &[ready, reachable], generation, &now);
    let transitions = conditions::transitions(current, &merged);
    let desired = crate::status::storage_target_status(generation, &merged, &now, usage.as_ref());
    ctx.apply_status(&*target, desired, &transitions).await?;
    succeeded(NAME, &*target, &ctx);
    Ok(Action::requeue(interval))
}

/// Applies the space cleanup ConfigMap and CronJob when the target asks for them and removes
/// them when it no longer does; returns why they could not be built or applied, if so.
async fn space_cleanup(target: &StorageTarget, ctx: &Context) -> Result<Option<String>, Error> {
    let mut keep = Vec::new();
    let mut invalid = None;
    match build(target, &ctx.config.image, &ctx.config.database) {
        Ok(Some(children)) => {
            let name = target.name_any();
            keep = vec![cron_job_name(&name), config_map_name(&name)];
            let applied = async {
                ctx.apply(&ctx.children.space_cleanup_config_maps, children.config_map)
                    .await?;
                ctx.apply(&ctx.children.space_cleanup_cron_jobs, children.cron_job)
                    .await
            };
            invalid = refusal(applied.await)?.err();
        }
        Ok(None) => {}
        Err(e) => invalid = Some(format!("space cleanup: {e}")),
    }
    let uid = target.uid().unwrap_or_default();
    ctx.delete_orphans(&ctx.children.space_cleanup_cron_jobs, &uid, &keep)
        .await?;
    ctx.delete_orphans(&ctx.children.space_cleanup_config_maps, &uid, &keep)
        .await?;
    Ok(invalid)
}

/// The credentials from the target's Secret, or the condition saying what is missing.
async fn credentials(
    ctx: &Context,
    ns: &str,
    target: &StorageTarget,
) -> Result<Result<Credentials, Observed>, Error> {
    let Some(reference) = &target.spec.credentials_secret_ref else {
        return Ok(Ok(Credentials::none()));
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match secrets.get_opt(&reference.name).await? {
        None => Ok(Err(Observed::no(
            ct::REACHABLE,
            reason::CREDENTIALS_NOT_FOUND,
            format!("credentials Secret {} does not exist", reference.name),
        ))),
        Some(secret) => Ok(Ok(from_secret(&secret.data.unwrap_or_default()))),
    }
}

/// Credentials from a Secret's data, with the same key names as the mounted files
/// ([`Credentials::from_dir`]); trailing newlines trimmed.
fn from_secret(data: &BTreeMap<String, ByteString>) -> Credentials {
    let get = |key: &str| {
        data.get(key)
            .map(|b| {
                String::from_utf8_lossy(&b.0)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned()
            })
            .filter(|v| !v.is_empty())
            .map(Sensitive::new)
    };
    Credentials {
        access_key_id: get(Credentials::ACCESS_KEY_ID),
        secret_access_key: get(Credentials::SECRET_ACCESS_KEY),
        account_key: get(Credentials::ACCOUNT_KEY),
        sas_token: get(Credentials::SAS_TOKEN),
        service_account_json: get(Credentials::SERVICE_ACCOUNT_JSON),
    }
}

/// A target being deleted goes once no RecordingProfile or Connector of its namespace stores on
/// it; until then it stays, naming them (`DeletionBlocked`), and is looked at again shortly.
async fn deleting(target: &StorageTarget, ctx: &Context) -> Result<Action, Error> {
    let ns = target.namespace().unwrap_or_default();
    let name = target.name_any();
    let mut users: Vec<String> = ctx
        .recording_profiles
        .state_filter(|p| {
            p.namespace().as_deref() == Some(ns.as_str()) && p.spec.storage_target_ref.name == name
        })
        .iter()
        .map(|p| format!("RecordingProfile {}", p.name_any()))
        .collect();
    let connectors: Api<Connector> = Api::namespaced(ctx.client.clone(), &ns);
    users.extend(
        connectors
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|c| c.spec.storage_target_ref.name == name)
            .map(|c| format!("Connector {}", c.name_any())),
    );
    users.sort();
    if users.is_empty() {
        set_finalizer(ctx, target, FINALIZER, false).await?;
        tracing::info!("no profile or connector stores here: deletion allowed");
        succeeded(NAME, target, ctx);
        return Ok(Action::await_change());
    }
    deletion_blocked(
        ctx,
        target,
        target.status.as_ref().map(|s| &s.conditions),
        reason::STORAGE_IN_USE,
        format!(
            "{} stores recordings here; the target cannot be deleted while it is in use",
            users.join(", ")
        ),
    )
    .await?;
    succeeded(NAME, target, ctx);
    // Profiles and Connectors are not watched from here: look again shortly.
    Ok(Action::requeue(Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_map_to_credentials_like_mounted_files() {
        let data = BTreeMap::from([
            ("accessKeyId".to_owned(), ByteString(b"AKIA\n".to_vec())),
            ("secretAccessKey".to_owned(), ByteString(b"s3cr3t".to_vec())),
            ("accountKey".to_owned(), ByteString(Vec::new())),
        ]);
        let c = from_secret(&data);
        assert_eq!(
            c.access_key_id.as_ref().map(Sensitive::expose),
            Some("AKIA")
        );
        assert_eq!(
            c.secret_access_key.as_ref().map(Sensitive::expose),
            Some("s3cr3t")
        );
        assert!(c.account_key.is_none());
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
