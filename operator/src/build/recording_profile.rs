//! The objects a RecordingProfile owns: the recorder StatefulSet, its headless and SIP
//! Services, the ConfigMap with the rendered configuration, a PodDisruptionBudget and the daily
//! retention CronJob (the assurance CronJob is in [`super::assurance`]). Pure: the controller
//! fetches, these build, the controller applies.

use std::collections::BTreeMap;

use callvault_config::{RecorderConfig, SipTransport};
use callvault_crds::recording_profile::{RecorderPool, ResourceAmounts};
use callvault_crds::{RecordingProfile, StorageTarget};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretVolumeSource, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::job::{JobPod, Schedule, cron_job};
use super::meta::{MissingMetadata, Owner};
use super::names::child_name;
use super::pod::{
    DatabaseSecret, container_security, database_volume, mount, pod_security, secret_volume,
};
use crate::render::paths;

/// Port of the recorder's `/healthz`, `/readyz` and `/metrics`.
pub const HTTP_PORT: i32 = 8080;
/// When the retention job runs (daily, in [`RETENTION_TIME_ZONE`]).
pub const RETENTION_SCHEDULE: &str = "30 2 * * *";
/// Time zone of [`RETENTION_SCHEDULE`].
pub const RETENTION_TIME_ZONE: &str = "Etc/UTC";
/// Seconds added to the drain grace so the last segment can be finalised after it.
const TERMINATION_MARGIN_SECONDS: i64 = 30;

/// Settings of the operator's installation, the same for every profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderSettings {
    /// Container image with the `callvault` binary.
    pub image: String,
    /// Secret (in the profile's namespace) holding the database URL, and its key.
    pub database: DatabaseSecret,
    /// Size of each recorder's spool volume, e.g. `20Gi`.
    pub spool_size: String,
    /// StorageClass of the spool volumes; the cluster default when absent.
    pub spool_storage_class: Option<String>,
}

/// Why the children could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The profile lacks a field the API server always sets.
    #[error(transparent)]
    MissingMetadata(#[from] MissingMetadata),
    /// The rendered configuration could not be written as YAML.
    #[error("cannot write the recorder configuration as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The other profiles' selections could not be written as JSON.
    #[error("cannot write the other profiles' selections as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Every object a RecordingProfile owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The recorder pods.
    pub stateful_set: StatefulSet,
    /// Headless Service: per-pod DNS and SRV records.
    pub headless_service: Service,
    /// Service call sources send SIP to.
    pub sip_service: Service,
    /// The rendered recorder configuration.
    pub config_map: ConfigMap,
    /// At most one recorder down at a time for voluntary disruptions.
    pub pod_disruption_budget: PodDisruptionBudget,
    /// Daily deletion of expired recordings.
    pub retention_cron_job: CronJob,
    /// The recorders taking calls now, for call sources: filled by [`with_endpoints`].
    pub endpoints_config_map: ConfigMap,
}

/// Names of the children, derived only from the profile's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildNames {
    /// StatefulSet and PodDisruptionBudget.
    pub recorder: String,
    /// Headless Service (the StatefulSet's `serviceName`).
    pub headless: String,
    /// SIP Service.
    pub sip: String,
    /// ConfigMap.
    pub config: String,
    /// Retention CronJob.
    pub retention: String,
    /// ConfigMap of the recorders' SIP endpoints.
    pub endpoints: String,
}

impl ChildNames {
    /// The names for the profile called `profile`.
    pub fn new(profile: &str) -> Self {
        Self {
            recorder: child_name(profile, "recorder"),
            headless: child_name(profile, "recorder-headless"),
            sip: child_name(profile, "recorder-sip"),
            config: child_name(profile, "recorder-config"),
            retention: child_name(profile, "retention"),
            endpoints: child_name(profile, "recorder-endpoints"),
        }
    }
}

/// Builds every child of `profile`. `replicas` is what the scaler wants; a disabled profile
/// gets 0 (its children stay, so its Services and history do not vanish). `config` is the
/// output of [`crate::render_recorder_config`] for the same profile and target.
pub fn build(
    profile: &RecordingProfile,
    storage: &StorageTarget,
    config: &RecorderConfig,
    replicas: i32,
    settings: &RecorderSettings,
) -> Result<Children, BuildError> {
    let ctx = Ctx::new(profile)?;
    let config_yaml = serde_yaml::to_string(config)?;
    Ok(Children {
        stateful_set: stateful_set(&ctx, profile, storage, config, replicas, settings),
        headless_service: service(&ctx, &ctx.names.headless, config, true),
        sip_service: service(&ctx, &ctx.names.sip, config, false),
        config_map: config_map(&ctx, config_yaml),
        pod_disruption_budget: pod_disruption_budget(&ctx),
        retention_cron_job: retention_cron_job(&ctx, storage, settings),
        endpoints_config_map: ConfigMap {
            metadata: ctx.meta(&ctx.names.endpoints, RECORDER),
            ..ConfigMap::default()
        },
    })
}

struct Ctx {
    owner: Owner,
    names: ChildNames,
}

impl Ctx {
    fn new(profile: &RecordingProfile) -> Result<Self, BuildError> {
        let owner = Owner::of(profile)?;
        Ok(Self {
            names: ChildNames::new(&owner.name),
            owner,
        })
    }

    fn selector(&self, component: &str) -> BTreeMap<String, String> {
        self.owner.selector(component)
    }

    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        self.owner.labels(component)
    }

    fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        self.owner.meta(name, component)
    }
}

/// Component label of the recorder pods and their Services, ConfigMap and budget.
pub const RECORDER: &str = "recorder";
/// Component label of the retention CronJob.
pub const RETENTION: &str = "retention";

fn stateful_set(
    ctx: &Ctx,
    profile: &RecordingProfile,
    storage: &StorageTarget,
    config: &RecorderConfig,
    replicas: i32,
    settings: &RecorderSettings,
) -> StatefulSet {
    let replicas = if profile.spec.disabled {
        0
    } else {
        replicas.max(0)
    };

    let mut volumes = vec![
        config_volume(ctx),
        // Only the named public-key item is projected: a private key stored alongside it in
        // the same Secret never reaches a recorder.
        Volume {
            name: "public-key".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(profile.spec.encryption.key_secret_ref.name.clone()),
                items: Some(vec![KeyToPath {
                    key: profile.spec.encryption.key_secret_ref.key.clone(),
                    path: paths::PUBLIC_KEY_FILE.to_owned(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        database_volume(&settings.database),
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("config", paths::CONFIG_DIR),
        mount("public-key", paths::PUBLIC_KEY_DIR),
        mount("database", paths::DATABASE_DIR),
        VolumeMount {
            read_only: None,
            ..mount("tmp", "/tmp")
        },
        VolumeMount {
            read_only: None,
            ..mount("spool", paths::SPOOL_DIR)
        },
    ];
    if let Some(tls) = &profile.spec.recorder.sip.tls_secret_ref {
        volumes.push(secret_volume("sip-tls", &tls.name));
        mounts.push(mount("sip-tls", paths::SIP_TLS_DIR));
    }
    add_storage_volumes(storage, &mut volumes, &mut mounts);

    let mut ports = sip_ports(config)
        .into_iter()
        .map(|(name, protocol, number)| ContainerPort {
            name: Some(name.to_owned()),
            container_port: number,
            protocol: Some(protocol.to_owned()),
            ..ContainerPort::default()
        })
        .collect::<Vec<_>>();
    // RTP is not listed: each pod advertises its own IP in SDP, so media goes straight to the
    // pod and a range of thousands of ports has no place in a port list.
    ports.push(ContainerPort {
        name: Some("http".to_owned()),
        container_port: HTTP_PORT,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    });

    let container = Container {
        name: RECORDER.to_owned(),
        image: Some(settings.image.clone()),
        command: Some(
            ["callvault", "recorder", "--config", paths::CONFIG_FILE]
                .map(str::to_owned)
                .to_vec(),
        ),
        env: Some(vec![EnvVar {
            name: paths::POD_IP_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        }]),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        resources: Some(container_resources(&profile.spec.recorder)),
        ..Container::default()
    };

    let spool = &profile.spec.recorder.spool;
    let mut spool_resources = BTreeMap::new();
    spool_resources.insert(
        "storage".to_owned(),
        Quantity(
            spool
                .size
                .clone()
                .unwrap_or_else(|| settings.spool_size.clone()),
        ),
    );
    let spool_claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("spool".to_owned()),
            labels: Some(ctx.labels(RECORDER)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spool
                .storage_class_name
                .clone()
                .or_else(|| settings.spool_storage_class.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(spool_resources),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };

    StatefulSet {
        metadata: ctx.meta(&ctx.names.recorder, RECORDER),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(ctx.names.headless.clone()),
            // Recorders do not depend on each other: start and stop them all at once.
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(ctx.selector(RECORDER)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                // No digest of the configuration here: recorders apply a changed ConfigMap in
                // place, so an edit must not roll the pods (only a changed pod spec does).
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels(RECORDER)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(
                        i64::from(config.drain_grace_seconds) + TERMINATION_MARGIN_SECONDS,
                    ),
                    topology_spread_constraints: Some(spread(ctx)),
                    // Recorders never talk to the API server.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![spool_claim]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

/// What one call costs a recorder, measured by the load benchmark (docs/benchmarks.md): about
/// 2 % of a core and 300 KiB. The sized default reserves that per session with room to spare
/// for memory (buffers of a call that catches up after a stall), on a base for the process.
const CPU_MILLICORES_PER_SESSION: i32 = 20;
const BASE_CPU_MILLICORES: i32 = 100;
const MEMORY_MIB_PER_SESSION: i32 = 1;
const BASE_MEMORY_MIB: i32 = 64;

/// The recorder container's requests and limits: the profile's own, else sized from
/// `sessionsPerReplica` — CPU and memory requested for a full pod, memory limited at twice
/// that (a leak is stopped before it starves the node), CPU not limited (throttling drops
/// packets as late).
fn container_resources(pool: &RecorderPool) -> ResourceRequirements {
    let amounts = |a: &ResourceAmounts| {
        let mut map = BTreeMap::new();
        if let Some(cpu) = &a.cpu {
            map.insert("cpu".to_owned(), Quantity(cpu.clone()));
        }
        if let Some(memory) = &a.memory {
            map.insert("memory".to_owned(), Quantity(memory.clone()));
        }
        (!map.is_empty()).then_some(map)
    };
    if let Some(own) = &pool.resources {
        return ResourceRequirements {
            requests: amounts(&own.requests),
            limits: amounts(&own.limits),
            ..ResourceRequirements::default()
        };
    }
    let sessions = pool.sessions_per_replica.max(1);
    let memory = BASE_MEMORY_MIB + sessions * MEMORY_MIB_PER_SESSION;
    let cpu = BASE_CPU_MILLICORES + sessions * CPU_MILLICORES_PER_SESSION;
    ResourceRequirements {
        requests: amounts(&ResourceAmounts {
            cpu: Some(format!("{cpu}m")),
            memory: Some(format!("{memory}Mi")),
        }),
        limits: amounts(&ResourceAmounts {
            cpu: None,
            memory: Some(format!("{}Mi", 2 * memory)),
        }),
        ..ResourceRequirements::default()
    }
}

/// Recorders spread over nodes and zones where the cluster has room, so losing one takes as
/// few recorders as possible; never a reason to leave a pod unscheduled.
fn spread(ctx: &Ctx) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(ctx.selector(RECORDER)),
                match_expressions: None,
            }),
            ..TopologySpreadConstraint::default()
        })
        .to_vec()
}

/// The SIP ports the recorder listens on: name, protocol and number.
fn sip_ports(config: &RecorderConfig) -> Vec<(&'static str, &'static str, i32)> {
    let t = &config.sip.transports;
    let plain = i32::from(config.sip.port);
    let mut ports = Vec::new();
    if t.contains(&SipTransport::Udp) {
        ports.push(("sip-udp", "UDP", plain));
    }
    if t.contains(&SipTransport::Tcp) {
        ports.push(("sip-tcp", "TCP", plain));
    }
    if t.contains(&SipTransport::Tls) {
        ports.push(("sip-tls", "TCP", i32::from(config.sip.tls_port)));
    }
    ports
}

/// Where a recorder at `ip` takes SIP: `host:port` and transport (`udp`, `tcp`, `tls`), one
/// per port it listens on.
fn sip_addresses(ip: &str, config: &RecorderConfig) -> Vec<(String, &'static str)> {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    sip_ports(config)
        .into_iter()
        .map(|(name, _, port)| {
            let transport = name.strip_prefix("sip-").unwrap_or(name);
            (format!("{host}:{port}"), transport)
        })
        .collect()
}

/// Fills the endpoints ConfigMap with the recorders at `ips` (those taking calls now) and
/// returns their SIP URIs for the profile's status. Keys: `endpoints`, one URI per line;
/// `dispatcher.list`, Kamailio's dispatcher file (set 1, which OpenSIPS's dispatcher reads
/// through its text database too); `addresses`, `address:port transport` per line, as SBC
/// proxy sets and SRS lists take them.
pub fn with_endpoints(
    children: &mut Children,
    profile: &str,
    config: &RecorderConfig,
    ips: &[String],
) -> Vec<String> {
    let mut ips = ips.to_vec();
    ips.sort();
    let addresses: Vec<(String, &str)> = ips
        .iter()
        .flat_map(|ip| sip_addresses(ip, config))
        .collect();
    let uris: Vec<String> = addresses
        .iter()
        .map(|(hostport, transport)| format!("sip:{hostport};transport={transport}"))
        .collect();
    let mut dispatcher = format!(
        "# Recorders of RecordingProfile {profile} taking calls now (ready, not draining, not \
         full); rewritten as they come and go.\n# setid destination flags priority\n"
    );
    for uri in &uris {
        dispatcher.push_str(&format!("1 {uri} 0 0\n"));
    }
    children.endpoints_config_map.data = Some(BTreeMap::from([
        (
            "endpoints".to_owned(),
            uris.iter().map(|u| format!("{u}\n")).collect(),
        ),
        ("dispatcher.list".to_owned(), dispatcher),
        (
            "addresses".to_owned(),
            addresses
                .iter()
                .map(|(hostport, transport)| format!("{hostport} {transport}\n"))
                .collect(),
        ),
    ]));
    uris
}

fn service(ctx: &Ctx, name: &str, config: &RecorderConfig, headless: bool) -> Service {
    let ports = sip_ports(config)
        .into_iter()
        .map(|(port_name, protocol, number)| ServicePort {
            name: Some(port_name.to_owned()),
            port: number,
            protocol: Some(protocol.to_owned()),
            target_port: Some(IntOrString::String(port_name.to_owned())),
            ..ServicePort::default()
        })
        .collect();
    Service {
        metadata: ctx.meta(name, RECORDER),
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".to_owned()),
            selector: Some(ctx.selector(RECORDER)),
            ports: Some(ports),
            // A call's in-dialog requests should reach the pod that answered the INVITE.
            session_affinity: (!headless).then(|| "ClientIP".to_owned()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn config_map(ctx: &Ctx, config_yaml: String) -> ConfigMap {
    ConfigMap {
        metadata: ctx.meta(&ctx.names.config, RECORDER),
        data: Some(BTreeMap::from([
            (paths::CONFIG_KEY.to_owned(), config_yaml),
            (paths::OTHER_PROFILES_KEY.to_owned(), "[]".to_owned()),
        ])),
        ..ConfigMap::default()
    }
}

/// Puts the namespace's other enabled profiles' selections into the recorder ConfigMap: the
/// recorders leave out the users an older one records (one profile per user). A change here
/// is read by the running recorders, nothing restarts.
pub fn with_other_profiles(
    config_map: &mut ConfigMap,
    others: &[callvault_config::profiles::Selection],
) -> Result<(), BuildError> {
    let json = serde_json::to_string(others)?;
    config_map
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert(paths::OTHER_PROFILES_KEY.to_owned(), json);
    Ok(())
}

fn pod_disruption_budget(ctx: &Ctx) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ctx.meta(&ctx.names.recorder, RECORDER),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(ctx.selector(RECORDER)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

fn retention_cron_job(ctx: &Ctx, storage: &StorageTarget, settings: &RecorderSettings) -> CronJob {
    let mut pod = JobPod::new(
        RETENTION,
        &settings.image,
        &["retention", "--profile", &ctx.owner.name],
        &settings.database,
    );
    // The recorder's own configuration, at the path the retention job reads by default.
    pod.add(config_volume(ctx), paths::CONFIG_DIR);
    if let Some(creds) = &storage.spec.credentials_secret_ref {
        pod.add(
            secret_volume("storage-credentials", &creds.name),
            paths::STORAGE_CREDENTIALS_DIR,
        );
    }
    if let Some((claim, path)) = recordings_claim(storage) {
        // Deleting expired recordings writes there.
        pod.add_writable(claim, path);
    }
    cron_job(
        &ctx.owner,
        &ctx.names.retention,
        RETENTION,
        Schedule {
            cron: RETENTION_SCHEDULE.to_owned(),
            suspend: false,
            starting_deadline_seconds: Some(3600),
        },
        pod.job_spec(&ctx.owner),
    )
}

fn config_volume(ctx: &Ctx) -> Volume {
    Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: ctx.names.config.clone(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The StorageTarget's credentials (read-only) and, for a filesystem target on a claim, the
/// claim at the target's path (read-write: recordings are written there).
pub(crate) fn add_storage_volumes(
    storage: &StorageTarget,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    if let Some(creds) = &storage.spec.credentials_secret_ref {
        volumes.push(secret_volume("storage-credentials", &creds.name));
        mounts.push(mount("storage-credentials", paths::STORAGE_CREDENTIALS_DIR));
    }
    if let Some((claim, path)) = recordings_claim(storage) {
        mounts.push(VolumeMount {
            read_only: None,
            ..mount(&claim.name, path)
        });
        volumes.push(claim);
    }
}

/// A filesystem target's claim as the `recordings` volume, and the path it is mounted at.
fn recordings_claim(storage: &StorageTarget) -> Option<(Volume, &str)> {
    let (Some(claim), Some(path)) = (&storage.spec.claim_name, &storage.spec.path) else {
        return None;
    };
    let volume = Volume {
        name: "recordings".to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.clone(),
            read_only: None,
        }),
        ..Volume::default()
    };
    Some((volume, path))
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}
