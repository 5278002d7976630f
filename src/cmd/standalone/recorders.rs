//! One in-process recorder per RecordingProfile, built from the same rendering the operator
//! puts in a ConfigMap, with local paths in place of the pod's mounts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use callvault_config::{Advertise, MediaAddress, RecorderConfig};
use callvault_crds::ResourceSet;
use callvault_recorder::service::{self, ServiceOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::TENANT;
use super::keys::ProfileKey;

/// How long live calls may go on after Ctrl-C or a profile change before they are cut (and
/// committed). Shorter than a pod's grace: a person at a terminal is waiting.
const DRAIN_GRACE_SECONDS: u32 = 30;

/// What standalone puts where the operator would mount volumes.
#[derive(Debug)]
pub struct Local {
    /// The data directory.
    pub data: PathBuf,
    /// Address to listen on and advertise for SIP and RTP.
    pub media_address: String,
    /// Public keys by `keySecretRef.name`.
    pub public_keys: BTreeMap<String, ProfileKey>,
}

impl Local {
    /// The recorder configuration of one profile.
    pub fn recorder_config(&self, set: &ResourceSet, name: &str) -> anyhow::Result<RecorderConfig> {
        let profile = &set.recording_profiles[name];
        let target_name = &profile.spec.storage_target_ref.name;
        let target = &set.storage_targets[target_name];
        let key_name = &profile.spec.encryption.key_secret_ref.name;
        let key = self
            .public_keys
            .get(key_name)
            .with_context(|| format!("no key {key_name:?} for RecordingProfile {name:?}"))?;
        let mut config = callvault_operator::render::render_recorder_config(
            TENANT,
            profile,
            target,
            &key.id.to_hex(),
        )
        .with_context(|| format!("RecordingProfile {name:?}"))?;
        config.media_address = MediaAddress {
            bind: self.media_address.clone(),
            advertise: Advertise {
                from_env: None,
                address: Some(self.media_address.clone()),
            },
        };
        config.encryption.public_key_path = key.public_path.clone();
        config.spool_dir = self.data.join("spool").join(name);
        config.database_url_file = self.data.join("database-url");
        config.storage_credentials_dir = super::credentials_dir(&self.data, target);
        config.drain_grace_seconds = DRAIN_GRACE_SECONDS;
        Ok(config)
    }
}

#[derive(Debug)]
struct Running {
    config: RecorderConfig,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running recorders, by profile name.
#[derive(Debug, Default)]
pub struct Pool {
    running: BTreeMap<String, Running>,
}

impl Pool {
    /// Brings the recorders in line with `set`: profiles added start, removed or disabled ones
    /// drain and stop, changed ones drain and restart with the new configuration. Nothing
    /// changes unless every profile's configuration is valid.
    pub fn apply(&mut self, local: &Local, set: &ResourceSet) -> anyhow::Result<()> {
        let url_file = local.data.join("database-url");
        std::fs::write(&url_file, super::database_url(&local.data))
            .with_context(|| format!("writing {}", url_file.display()))?;
        let mut wanted = BTreeMap::new();
        for (name, profile) in &set.recording_profiles {
            if profile.spec.disabled {
                continue;
            }
            let config = local.recorder_config(set, name)?;
            config
                .clone()
                .validate()
                .map_err(|e| anyhow::anyhow!("RecordingProfile {name:?}: {e}"))?;
            wanted.insert(name.clone(), config);
        }
        let names: Vec<String> = self.running.keys().cloned().collect();
        let mut draining = BTreeMap::new();
        for name in names {
            if wanted.get(&name) != self.running.get(&name).map(|r| &r.config) {
                let old = self.running.remove(&name).expect("listed above");
                let _ = old.stop.send(true);
                tracing::info!(profile = %name, "draining the recorder: live calls finish first");
                draining.insert(name, old.task);
            }
        }
        for (name, config) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let before = draining.remove(&name);
            self.running
                .insert(name.clone(), start(name, config, before));
        }
        // Removed profiles: nothing replaces them; their drain runs on by itself.
        drop(draining);
        Ok(())
    }

    /// `(profile, host:port)` of every running recorder.
    pub fn sip_addresses(&self) -> Vec<(String, String)> {
        self.running
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    format!("{}:{}", r.config.media_address.bind, r.config.sip.port),
                )
            })
            .collect()
    }

    /// Drains every recorder and waits until each has committed what it recorded.
    pub async fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        for (name, r) in std::mem::take(&mut self.running) {
            if let Err(e) = r.task.await {
                tracing::error!(profile = %name, error = %e, "recorder task failed");
            }
        }
    }
}

/// Starts a recorder once `before` (the same profile's previous recorder, which holds the SIP
/// port) has drained.
fn start(name: String, config: RecorderConfig, before: Option<JoinHandle<()>>) -> Running {
    let (stop, mut stopped) = watch::channel(false);
    let task_config = config.clone();
    let task = tokio::spawn(async move {
        if let Some(before) = before {
            let _ = before.await;
        }
        let valid = match task_config.validate() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(profile = %name, error = %e, "recorder configuration invalid");
                return;
            }
        };
        let options = ServiceOptions {
            // The operations endpoint is for the operator; standalone needs no fixed port.
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServiceOptions::default()
        };
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        match service::run(valid, options, shutdown).await {
            Ok(outcome) => tracing::info!(
                profile = %name,
                cut_calls = outcome.cut_calls,
                pending_commits = outcome.pending_commits,
                "recorder stopped"
            ),
            Err(e) => tracing::error!(profile = %name, error = %e, "recorder failed"),
        }
    });
    Running { config, stop, task }
}
