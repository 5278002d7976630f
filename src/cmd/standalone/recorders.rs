//! One in-process recorder per RecordingProfile, built from the same rendering the operator
//! puts in a ConfigMap, with local paths in place of the pod's mounts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use callvault_config::{Advertise, MediaAddress, RecorderConfig, ValidRecorderConfig};
use callvault_crds::ResourceSet;
use callvault_recorder::ops::{HealthCell, StatusCell};
use callvault_recorder::service::{self, ConfigUpdate, ServiceOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::TENANT;
use super::keys::ProfileKey;
use super::status::RecorderCells;

/// How long live calls may go on after SIGTERM or Ctrl-C, or after their profile was removed,
/// before they are cut (and committed), unless the profile says. Shorter than a pod's grace: a
/// person at a terminal is waiting.
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

/// The file under the data directory listing every enabled profile's user selection.
const OTHER_PROFILES: &str = "recording-profiles.json";

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
        // The TLS Secret's files, as for storage credentials.
        config.sip.tls_dir = profile
            .spec
            .recorder
            .sip
            .tls_secret_ref
            .as_ref()
            .map(|r| self.data.join("secrets").join(&r.name));
        if profile.spec.recorder.drain_grace_seconds.is_none() {
            config.drain_grace_seconds = DRAIN_GRACE_SECONDS;
        }
        config.other_profiles_file = Some(self.data.join(OTHER_PROFILES));
        Ok(config)
    }
}

#[derive(Debug)]
struct Running {
    config: RecorderConfig,
    /// New configurations for the running recorder, applied in place.
    updates: watch::Sender<ConfigUpdate>,
    health: HealthCell,
    status: StatusCell,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running recorders, by profile name.
#[derive(Debug, Default)]
pub struct Pool {
    running: BTreeMap<String, Running>,
    /// Recorders of removed or disabled profiles, finishing their live calls.
    draining: Vec<(String, JoinHandle<()>)>,
}

impl Pool {
    /// Brings the recorders in line with `set`: profiles added start, removed or disabled ones
    /// drain and stop, changed ones take the new configuration in place (the same path a
    /// cluster recorder's reloaded ConfigMap takes: nothing restarts, a new SIP port is bound
    /// before the old one stops taking calls). Nothing changes unless every profile's
    /// configuration is valid.
    pub fn apply(&mut self, local: &Local, set: &ResourceSet) -> anyhow::Result<()> {
        // Every enabled profile's selection: each recorder reads it every minute to leave out
        // the users an older profile records (one profile per user).
        let selections: Vec<_> = set
            .recording_profiles
            .values()
            .filter(|p| !p.spec.disabled)
            .map(callvault_operator::render::selection)
            .collect();
        std::fs::write(
            local.data.join(OTHER_PROFILES),
            serde_json::to_vec(&selections)?,
        )
        .context("writing the recording profiles' selections")?;
        let url_file = local.data.join("database-url");
        std::fs::write(&url_file, super::database_url(&local.data))
            .with_context(|| format!("writing {}", url_file.display()))?;
        let mut wanted = BTreeMap::new();
        for (name, profile) in &set.recording_profiles {
            if profile.spec.disabled {
                continue;
            }
            let config = local.recorder_config(set, name)?;
            let valid = config
                .clone()
                .validate()
                .map_err(|e| anyhow::anyhow!("RecordingProfile {name:?}: {e}"))?;
            wanted.insert(name.clone(), (config, valid));
        }
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if !wanted.contains_key(&name)
                && let Some(old) = self.running.remove(&name)
            {
                let _ = old.stop.send(true);
                tracing::info!(profile = %name, "draining the recorder: live calls finish first");
                self.draining.push((name, old.task));
            }
        }
        self.draining.retain(|(_, task)| !task.is_finished());
        for (name, (config, valid)) in wanted {
            match self.running.get_mut(&name) {
                // Stopped on an error (its configuration could not work): the new one starts it.
                Some(running) if running.task.is_finished() && running.config != config => {
                    self.running
                        .insert(name.clone(), start(name, config, valid));
                }
                Some(running) if running.config == config => {}
                Some(running) => {
                    tracing::info!(profile = %name, "applying the changed profile to its recorder");
                    let _ = running.updates.send(Ok(valid));
                    running.config = config;
                }
                None => {
                    self.running
                        .insert(name.clone(), start(name, config, valid));
                }
            }
        }
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

    /// Each running recorder's health and `/status`, by profile: what standalone's readiness,
    /// status and alarms report.
    pub fn cells(&self) -> BTreeMap<String, RecorderCells> {
        self.running
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    RecorderCells {
                        health: r.health.clone(),
                        status: r.status.clone(),
                    },
                )
            })
            .collect()
    }

    /// Drains every recorder and waits until each has committed what it recorded.
    pub async fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        let running = std::mem::take(&mut self.running)
            .into_iter()
            .map(|(name, r)| (name, r.task));
        for (name, task) in running.chain(std::mem::take(&mut self.draining)) {
            if let Err(e) = task.await {
                tracing::error!(profile = %name, error = %e, "recorder task failed");
            }
        }
    }
}

/// Starts the recorder of profile `name`.
fn start(name: String, config: RecorderConfig, valid: ValidRecorderConfig) -> Running {
    let (stop, mut stopped) = watch::channel(false);
    let (updates, configs) = watch::channel(Ok(valid));
    let health = HealthCell::default();
    let status = StatusCell::default();
    let options = ServiceOptions {
        // The operations endpoint is for the operator; standalone needs no fixed port.
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        health: health.clone(),
        status: status.clone(),
        // Its alarms are stored and mailed by standalone's status, from `/status`.
        stores_alarms: false,
        ..ServiceOptions::default()
    };
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        match service::run_with_updates(configs, options, shutdown).await {
            Ok(outcome) => tracing::info!(
                profile = %name,
                cut_calls = outcome.cut_calls,
                pending_commits = outcome.pending_commits,
                "recorder stopped"
            ),
            Err(e) => tracing::error!(profile = %name, error = %e, "recorder failed"),
        }
    });
    Running {
        config,
        updates,
        health,
        status,
        stop,
        task,
    }
}
