//! AccessProfile → validated: every key it grants is checked against the public keys of the
//! namespace's RecordingProfiles. Subjects are resolved by the portal, which owns those status
//! fields; the operator writes only its `Ready` condition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use callvault_crds::{AccessProfile, condition_type as ct, reason};
use callvault_store::keys::PublicKey;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Context, Error, Scope, current_conditions, succeeded};
use crate::conditions::{self, Observed};

/// Controller name in metrics and logs.
pub(super) const NAME: &str = "accessprofile";

pub(super) fn controller(client: &Client, scope: &Scope) -> Controller<AccessProfile> {
    Controller::new(scope.api(client), Default::default())
}

#[tracing::instrument(skip_all, fields(namespace = profile.namespace(), name = profile.name_any()))]
pub(super) async fn reconcile(
    profile: Arc<AccessProfile>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.synced().await;
    let _timer = ctx.metrics.reconcile(NAME);
    let ns = profile.namespace().unwrap_or_default();
    let known = namespace_keys(&ctx, &ns).await?;
    let ready = describe_keys(&profile.spec.keys, &known);
    let current = current_conditions(profile.status.as_ref().map(|s| &s.conditions));
    let merged = conditions::merge(
        current,
        &[ready],
        profile.metadata.generation,
        &conditions::now(),
    );
    let transitions = conditions::transitions(current, &merged);
    ctx.apply_status(&*profile, json!({"conditions": merged}), &transitions)
        .await?;
    succeeded(NAME, &*profile, &ctx);
    // Keys of profiles created later are noticed on the next look.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Key id → the RecordingProfiles (of namespace `ns`) that encrypt with it.
async fn namespace_keys(ctx: &Context, ns: &str) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut by_secret: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for p in ctx
        .recording_profiles
        .state_filter(|p| p.namespace().as_deref() == Some(ns))
    {
        let r = &p.spec.encryption.key_secret_ref;
        by_secret
            .entry((r.name.clone(), r.key.clone()))
            .or_default()
            .push(p.name_any());
    }
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((secret, item), profiles) in by_secret {
        let pem = secrets
            .get_opt(&secret)
            .await?
            .and_then(|s| s.data)
            .and_then(|d| {
                d.get(&item)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            });
        if let Some(key) = pem.and_then(|pem| PublicKey::from_pem(&pem).ok()) {
            keys.entry(key.id().to_hex()).or_default().extend(profiles);
        }
    }
    Ok(keys)
}

/// The Ready condition: granted keys that no current profile uses are named (they may be
/// retired keys still needed for old recordings, or a typo).
fn describe_keys(granted: &[String], known: &BTreeMap<String, Vec<String>>) -> Observed {
    let unused: BTreeSet<&String> = granted.iter().filter(|k| !known.contains_key(*k)).collect();
    if granted.is_empty() {
        Observed::yes(
            ct::READY,
            reason::RECONCILED,
            "grants no key: audio cannot be played or downloaded",
        )
    } else if unused.is_empty() {
        Observed::yes(
            ct::READY,
            reason::RECONCILED,
            format!(
                "all {} granted keys are in use by RecordingProfiles",
                granted.len()
            ),
        )
    } else {
        Observed::yes(
            ct::READY,
            reason::RECONCILED,
            format!(
                "granted keys not used by any RecordingProfile in this namespace (retired keys, or a typo): {}",
                unused.into_iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_granted_keys_are_named() {
        let known = BTreeMap::from([("a".repeat(64), vec!["sales".to_owned()])]);
        let ok = describe_keys(&["a".repeat(64)], &known);
        assert!(ok.message.contains("all 1 granted keys"), "{ok:?}");
        let odd = describe_keys(&["a".repeat(64), "b".repeat(64)], &known);
        assert!(odd.message.contains(&"b".repeat(64)), "{odd:?}");
        assert!(!odd.message.contains(&"a".repeat(64)), "{odd:?}");
    }
}
