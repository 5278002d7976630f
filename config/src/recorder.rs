//! The recorder's configuration: rendered by the operator from a RecordingProfile and its
//! StorageTarget into a ConfigMap, or built in-process by `callvault standalone`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use callvault_store::objstore::{ConfigError as StorageError, StorageConfig, ValidatedConfig};
use serde::{Deserialize, Serialize};

use crate::problem::{Invalid, Problems};
use crate::rules::{RecordingRules, Rules};

/// Everything one recorder pod needs. Secrets are never inline: the database URL, the storage
/// credentials and the TLS key are read from the files named here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecorderConfig {
    /// Tenant: the RecordingProfile's namespace (`default` standalone).
    pub tenant: String,
    /// The RecordingProfile's name, stamped on each recording.
    pub profile: String,
    /// SIP listener.
    #[serde(default)]
    pub sip: SipConfig,
    /// Address RTP is bound to and the one written into SDP answers.
    #[serde(default)]
    pub media_address: MediaAddress,
    /// UDP ports for RTP (even) and RTCP (the next odd one).
    #[serde(default)]
    pub rtp_port_range: PortRange,
    /// Concurrent calls this pod records before it answers 503.
    #[serde(default = "default_sessions")]
    pub sessions_per_replica: u32,
    /// When full, answer 503 so the call source can fail the call instead of continuing it
    /// unrecorded.
    #[serde(default = "yes")]
    pub fail_closed: bool,
    /// Opus encoding.
    #[serde(default)]
    pub media: MediaConfig,
    /// Longest single recording segment; longer calls continue in a new segment.
    #[serde(default = "default_max_duration")]
    pub max_duration_seconds: u32,
    /// Days each recording is kept; stamped as its expiry.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Name of the StorageTarget, written in each recording row: the portal and the jobs open
    /// the media through the StorageTarget of that name.
    #[serde(default)]
    pub storage_target: String,
    /// The StorageTarget's spec.
    pub storage: StorageConfig,
    /// Directory where the StorageTarget's credentials Secret is mounted (one file per key);
    /// absent when the target needs none (filesystem, workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_credentials_dir: Option<PathBuf>,
    /// The public key every recording's key is wrapped with.
    pub encryption: EncryptionConfig,
    /// Crash-safe local spool, the source of truth until upload and DB row are committed.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// When the spool volume raises alarms and when it refuses new calls.
    #[serde(default)]
    pub spool: SpoolLimits,
    /// File holding the database URL (it may contain a password, so it is never inline).
    pub database_url_file: PathBuf,
    /// On SIGTERM, how long live calls may go on before the pod stops; their spool survives.
    #[serde(default = "default_drain_grace")]
    pub drain_grace_seconds: u32,
    /// Seconds without RTP on any stream the source sends on (a held call is not counted)
    /// before the recorder ends the session: BYE to the source, the recording committed with
    /// stop reason `media-timeout`. 0 turns the check off (session timers and the in-dialog
    /// probe still end dead sessions).
    #[serde(default = "default_media_timeout")]
    pub media_timeout_seconds: u32,
    /// Seconds between the recorder's in-dialog OPTIONS to the source; a 481, a 408 or no
    /// answer ends the session with stop reason `peer-unreachable`. 0 turns the probe off.
    #[serde(default = "default_options_probe")]
    pub options_probe_seconds: u32,
    /// Whether the media sources send must be SRTP (SDES keys, RFC 4568), may be, or must not.
    #[serde(default)]
    pub srtp: SrtpPolicy,
    /// Which calls are recorded.
    pub rules: Rules,
    /// A JSON file listing the tenant's other enabled RecordingProfiles ([`OtherProfile`]): a
    /// user this profile and an older one both select is recorded by the older one only, and
    /// is a conflict of this one (one profile per user), reported on `/status`. Read again every minute, so another profile's change needs no
    /// restart; absent: no conflicts are looked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_profiles_file: Option<PathBuf>,
    /// When this RecordingProfile was created (RFC 3339): of two profiles selecting a user,
    /// the older records them. Absent: newer than every profile with a creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_created: Option<String>,
}

/// Another RecordingProfile's user selection and age, as far as conflicts need them.
pub type OtherProfile = crate::profiles::Selection;

fn yes() -> bool {
    true
}
fn default_sessions() -> u32 {
    200
}
fn default_max_duration() -> u32 {
    18000
}
fn default_retention_days() -> u32 {
    365
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/callvault/spool")
}
fn default_drain_grace() -> u32 {
    600
}
/// What media relays and SBCs use for an established call's RTP timeout: rtpengine's and
/// rtpproxy's default is 60 s. Long enough for a network blip or a silence-suppressing
/// endpoint's comfort-noise gaps, short enough that a dead source frees its capacity quickly.
pub const DEFAULT_MEDIA_TIMEOUT_SECONDS: u32 = 60;
fn default_media_timeout() -> u32 {
    DEFAULT_MEDIA_TIMEOUT_SECONDS
}
/// The probe runs once a minute by default: it finds a vanished source during a hold (no
/// media to miss) or when media timeouts are off, at the cost of one request per call per
/// minute.
pub const DEFAULT_OPTIONS_PROBE_SECONDS: u32 = 60;
fn default_options_probe() -> u32 {
    DEFAULT_OPTIONS_PROBE_SECONDS
}

/// SIP listener settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SipConfig {
    /// Port for UDP and TCP.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// Port for TLS.
    #[serde(default = "default_tls_port")]
    pub tls_port: u16,
    /// Mutual TLS: clients must present a certificate signed by `ca.crt` in `tls_dir`.
    #[serde(default)]
    pub tls_verify_client: bool,
    /// Transports to listen on.
    #[serde(default = "default_transports")]
    pub transports: Vec<SipTransport>,
    /// Directory with `tls.crt` and `tls.key` (a mounted kubernetes.io/tls Secret, with
    /// `ca.crt` for `tls_verify_client`); required with TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
    /// How long a SIP connection over TCP (or TLS) may take over one message, stay silent,
    /// or not read its responses.
    #[serde(default, skip_serializing_if = "SipTcpTimeouts::is_default")]
    pub tcp_timeouts: SipTcpTimeouts,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            port: default_sip_port(),
            tls_port: default_tls_port(),
            tls_verify_client: false,
            transports: default_transports(),
            tls_dir: None,
            tcp_timeouts: SipTcpTimeouts::default(),
        }
    }
}

/// Timeouts of SIP connections over TCP (and TLS), so that no client holds one open: a changed
/// value applies to connections opened after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SipTcpTimeouts {
    /// From a message's first byte to its last: a client that trickles a message (slow loris)
    /// is disconnected. 1 to 300.
    #[serde(default = "default_message_seconds")]
    pub message_seconds: u32,
    /// Without a byte (keep-alives count), a connection that carries no call is closed; one
    /// that carries a call stays open for the recorder's own BYE. 1 to 3600.
    #[serde(default = "default_idle_seconds")]
    pub idle_seconds: u32,
    /// One write to a peer that does not read its responses. 1 to 300.
    #[serde(default = "default_write_seconds")]
    pub write_seconds: u32,
}

impl Default for SipTcpTimeouts {
    fn default() -> Self {
        Self {
            message_seconds: default_message_seconds(),
            idle_seconds: default_idle_seconds(),
            write_seconds: default_write_seconds(),
        }
    }
}

impl SipTcpTimeouts {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_message_seconds() -> u32 {
    10
}
fn default_idle_seconds() -> u32 {
    120
}
fn default_write_seconds() -> u32 {
    10
}

fn default_sip_port() -> u16 {
    5060
}
fn default_tls_port() -> u16 {
    5061
}
fn default_transports() -> Vec<SipTransport> {
    vec![SipTransport::Udp, SipTransport::Tcp]
}

/// Whether the media sources send must, may or must not be SRTP. An offer the policy refuses
/// is answered 488, its reason phrase and Warning saying which way to change it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SrtpPolicy {
    /// Only `RTP/SAVP`: plain RTP offers are refused.
    Required,
    /// `RTP/SAVP` and plain RTP alike, each answered in kind (RFC 4568 forbids answering one
    /// with the other). The default: a recorder takes the media its sources send, and the
    /// sources, not the recorder, decide whether their network needs it encrypted.
    #[default]
    Preferred,
    /// Only plain RTP: `RTP/SAVP` offers are refused.
    Disabled,
}

/// SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

/// Where RTP is received and what address is advertised for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaAddress {
    /// Local address RTP sockets bind to.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Address put in SDP answers.
    #[serde(default)]
    pub advertise: Advertise,
}

impl Default for MediaAddress {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            advertise: Advertise::default(),
        }
    }
}

fn default_bind() -> String {
    "0.0.0.0".to_owned()
}

/// The advertised media address: exactly one of `fromEnv` and `address`. One ConfigMap serves
/// every pod of a StatefulSet, so in a cluster each pod's own IP comes from an environment
/// variable (the downward API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advertise {
    /// Read the IP address from this environment variable at start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_env: Option<String>,
    /// This IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Default for Advertise {
    fn default() -> Self {
        Self {
            from_env: Some("POD_IP".to_owned()),
            address: None,
        }
    }
}

/// A UDP port range, both ends inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First port, even, at least 1024.
    #[serde(default = "default_rtp_start")]
    pub start: u16,
    /// Last port.
    #[serde(default = "default_rtp_end")]
    pub end: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            start: default_rtp_start(),
            end: default_rtp_end(),
        }
    }
}

fn default_rtp_start() -> u16 {
    20000
}
fn default_rtp_end() -> u16 {
    29999
}

/// Opus encoding of the stored recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaConfig {
    /// Bits per second, 6000 to 510000.
    #[serde(default = "default_bitrate")]
    pub bitrate: u32,
    /// Encoder complexity, 0 (fastest) to 10 (best).
    #[serde(default = "default_complexity")]
    pub complexity: u8,
    /// How the call's streams map to the recording's channels.
    #[serde(default)]
    pub channels: ChannelLayout,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bitrate: default_bitrate(),
            complexity: default_complexity(),
            channels: ChannelLayout::default(),
        }
    }
}

/// How a call's streams map to its recording's channels. Each channel is encoded at half
/// the profile's bitrate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelLayout {
    /// One channel: every stream mixed.
    Mono,
    /// Two channels: the first party's streams left, the others right.
    #[default]
    Stereo,
    /// A channel per stream the call starts with, up to [`ChannelLayout::MAX_CHANNELS`]: each
    /// SIPREC stream kept apart (conferences, multi-party calls); streams a re-INVITE adds,
    /// or past the last channel, are mixed into the last one.
    PerStream,
}

impl ChannelLayout {
    /// The most channels a recording has (Ogg Opus channel mapping family 1).
    pub const MAX_CHANNELS: usize = 8;

    /// The channels of a call that starts with `streams` accepted streams.
    pub fn channels(self, streams: usize) -> usize {
        match self {
            ChannelLayout::Mono => 1,
            ChannelLayout::Stereo => 2,
            ChannelLayout::PerStream => streams.clamp(1, Self::MAX_CHANNELS),
        }
    }
}

fn default_bitrate() -> u32 {
    32000
}
fn default_complexity() -> u8 {
    5
}

/// The spool volume's thresholds. Above `alarmPercent` used the recorder raises a Major
/// alarm, above `criticalPercent` a Critical one; with less than `minFreeMiB` free it refuses
/// new calls (503, so the source fails over) while live calls go on into the space left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpoolLimits {
    /// Percent of the volume used at which the Major alarm is raised, 1 to 99.
    #[serde(default = "default_spool_alarm_percent")]
    pub alarm_percent: u8,
    /// Percent used at which the alarm turns Critical, from `alarmPercent` to 100.
    #[serde(default = "default_spool_critical_percent")]
    pub critical_percent: u8,
    /// Free space below which new calls are refused, in MiB (about 4.5 hours of a call at
    /// 32 kbit/s per 64 MiB).
    #[serde(default = "default_spool_min_free", rename = "minFreeMiB")]
    pub min_free_mib: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            alarm_percent: default_spool_alarm_percent(),
            critical_percent: default_spool_critical_percent(),
            min_free_mib: default_spool_min_free(),
        }
    }
}

fn default_spool_alarm_percent() -> u8 {
    80
}
fn default_spool_critical_percent() -> u8 {
    95
}
fn default_spool_min_free() -> u64 {
    256
}

/// The profile's public key. The recorder never gets a private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfig {
    /// PEM file with the RSA public key (SPKI).
    pub public_key_path: PathBuf,
    /// SHA-256 of the key's SPKI DER, 64 lowercase hex digits, written into each recording.
    pub key_id: String,
}

/// A [`RecorderConfig`] that passed [`RecorderConfig::validate`], with the parts the recorder
/// uses already parsed and compiled.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ValidRecorderConfig {
    /// The configuration as given.
    pub config: RecorderConfig,
    /// Parsed bind address.
    pub bind: IpAddr,
    /// The validated storage location.
    pub storage: ValidatedConfig,
    /// The compiled recording rules.
    pub rules: RecordingRules,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a recorder configuration.
    #[error("not a recorder configuration: {0}")]
    Parse(String),
    /// It parsed but some settings are wrong.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl RecorderConfig {
    /// Parses YAML or JSON (JSON is YAML).
    pub fn parse(text: &str) -> Result<Self, LoadError> {
        serde_yaml::from_str(text).map_err(|e| LoadError::Parse(e.to_string()))
    }

    /// Reads, parses and validates the file the operator mounted (or standalone wrote).
    pub fn load(path: &Path) -> Result<ValidRecorderConfig, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::parse(&text)?.validate()?)
    }

    /// The one place the recorder configuration is checked. Returns every problem found.
    pub fn validate(&self) -> Result<ValidRecorderConfig, Invalid> {
        let mut p = Problems::default();
        p.check(
            is_dns_label(&self.tenant),
            "tenant",
            "must be a namespace name (lowercase letters, digits, `-`; at most 63)",
        );
        p.check(
            is_dns_subdomain(&self.profile),
            "profile",
            "must be a resource name (lowercase letters, digits, `-`, `.`; at most 253)",
        );

        let sip = &self.sip;
        p.check(sip.port != 0, "sip.port", "must be 1 to 65535");
        p.check(
            !sip.transports.is_empty(),
            "sip.transports",
            "name at least one of UDP, TCP, TLS",
        );
        let tls = sip.transports.contains(&SipTransport::Tls);
        p.check(
            !tls || sip.tls_dir.is_some(),
            "sip.tlsDir",
            "required when transports include TLS",
        );
        // Zero would close every connection at once; beyond the bounds a slow client holds a
        // connection as if there were no timeout.
        let t = &sip.tcp_timeouts;
        for (path, value, max) in [
            ("sip.tcpTimeouts.messageSeconds", t.message_seconds, 300),
            ("sip.tcpTimeouts.idleSeconds", t.idle_seconds, 3600),
            ("sip.tcpTimeouts.writeSeconds", t.write_seconds, 300),
        ] {
            p.check(
                (1..=max).contains(&value),
                path,
                format!("{value} is not within 1..={max} seconds"),
            );
        }
        p.check(
            !tls || sip.tls_port != 0,
            "sip.tlsPort",
            "must be 1 to 65535",
        );
        p.check(
            !(tls && sip.transports.contains(&SipTransport::Tcp)) || sip.tls_port != sip.port,
            "sip.tlsPort",
            "must differ from sip.port when both TCP and TLS listen",
        );
        p.check(
            !sip.tls_verify_client || tls,
            "sip.tlsVerifyClient",
            "needs TLS in transports",
        );

        let bind = self.media_address.bind.parse::<IpAddr>().ok();
        p.check(
            bind.is_some(),
            "mediaAddress.bind",
            format!("{:?} is not an IP address", self.media_address.bind),
        );
        let advertise = &self.media_address.advertise;
        match (&advertise.from_env, &advertise.address) {
            (Some(var), None) => p.check(
                is_env_name(var),
                "mediaAddress.advertise.fromEnv",
                format!("{var:?} is not an environment variable name"),
            ),
            (None, Some(addr)) => p.check(
                addr.parse::<IpAddr>()
                    .is_ok_and(|ip| !ip.is_unspecified() && !ip.is_multicast()),
                "mediaAddress.advertise.address",
                format!("{addr:?} is not a unicast IP address callers can send media to"),
            ),
            _ => p.add(
                "mediaAddress.advertise",
                "set exactly one of fromEnv and address",
            ),
        }

        let rtp = &self.rtp_port_range;
        p.check(
            rtp.start >= 1024,
            "rtpPortRange.start",
            "must be at least 1024",
        );
        p.check(
            rtp.start.is_multiple_of(2),
            "rtpPortRange.start",
            "must be even (RTP uses even ports, RTCP the next odd one)",
        );
        p.check(
            rtp.start < rtp.end,
            "rtpPortRange.end",
            "must be above rtpPortRange.start",
        );
        p.check(
            (1..=5000).contains(&self.sessions_per_replica),
            "sessionsPerReplica",
            "must be 1 to 5000",
        );
        // Each session takes RTP and RTCP for both directions.
        let ports = u64::from(rtp.end.saturating_sub(rtp.start)) + 1;
        p.check(
            rtp.start >= rtp.end || ports >= 4 * u64::from(self.sessions_per_replica),
            "rtpPortRange",
            format!(
                "{ports} ports cannot carry {} sessions: each needs 4",
                self.sessions_per_replica
            ),
        );
        p.check(
            !(rtp.start..=rtp.end).contains(&sip.port),
            "sip.port",
            "must lie outside rtpPortRange",
        );

        p.check(
            (6000..=510_000).contains(&self.media.bitrate),
            "media.bitrate",
            "must be 6000 to 510000 bits per second",
        );
        p.check(
            self.media.complexity <= 10,
            "media.complexity",
            "must be 0 to 10",
        );
        p.check(
            (60..=86_400).contains(&self.max_duration_seconds),
            "maxDurationSeconds",
            "must be 60 to 86400",
        );
        p.check(
            (1..=36_500).contains(&self.retention_days),
            "retentionDays",
            "must be 1 to 36500 (there is no keep-forever: use legal hold)",
        );

        let storage = check_storage(&mut p, "storage", &self.storage);
        check_path(
            &mut p,
            "storageCredentialsDir",
            self.storage_credentials_dir.as_deref(),
        );
        check_path(&mut p, "sip.tlsDir", sip.tls_dir.as_deref());
        check_path(
            &mut p,
            "encryption.publicKeyPath",
            Some(&self.encryption.public_key_path),
        );
        let key_id = &self.encryption.key_id;
        p.check(
            key_id.len() == 64
                && key_id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "encryption.keyId",
            "must be the SHA-256 of the public key's SPKI DER: 64 lowercase hex digits",
        );
        p.check(
            !self.storage_target.trim().is_empty(),
            "storageTarget",
            "must name the StorageTarget the recordings are stored on",
        );
        check_path(&mut p, "spoolDir", Some(&self.spool_dir));
        let spool = &self.spool;
        p.check(
            (1..=99).contains(&spool.alarm_percent),
            "spool.alarmPercent",
            "must be 1 to 99",
        );
        p.check(
            (spool.alarm_percent..=100).contains(&spool.critical_percent),
            "spool.criticalPercent",
            "must be from spool.alarmPercent to 100",
        );
        p.check(
            spool.min_free_mib <= 1 << 30,
            "spool.minFreeMiB",
            "must be at most 1073741824 (1 PiB)",
        );
        check_path(&mut p, "databaseUrlFile", Some(&self.database_url_file));
        p.check(
            self.drain_grace_seconds <= 86_400,
            "drainGraceSeconds",
            "must be at most 86400",
        );

        p.check(
            self.media_timeout_seconds <= 3600,
            "mediaTimeoutSeconds",
            "must be 0 (off) to 3600",
        );
        p.check(
            self.options_probe_seconds <= 3600,
            "optionsProbeSeconds",
            "must be 0 (off) to 3600",
        );

        let rules = self.rules.compile("rules.", &mut p);
        match (bind, storage, rules) {
            (Some(bind), Some(storage), Some(rules)) => p.into_result(ValidRecorderConfig {
                config: self.clone(),
                bind,
                storage,
                rules,
            }),
            _ => Err(Invalid { problems: p.0 }),
        }
    }
}

/// Validates a StorageTarget spec found at `at`, reporting its problem at the field's path.
pub(crate) fn check_storage(
    p: &mut Problems,
    at: &str,
    storage: &StorageConfig,
) -> Option<ValidatedConfig> {
    match storage.validate() {
        Ok(v) => Some(v),
        Err(e) => {
            let field = match &e {
                StorageError::Missing { field, .. }
                | StorageError::NotApplicable { field, .. }
                | StorageError::Invalid { field, .. } => *field,
            };
            p.add(format!("{at}.{field}"), e.to_string());
            None
        }
    }
}

pub(crate) fn check_path(p: &mut Problems, field: &str, path: Option<&Path>) {
    if let Some(path) = path {
        p.check(!path.as_os_str().is_empty(), field, "must not be empty");
    }
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns_label)
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
