//! Alarms: conditions an admin must see until they clear (media-manager F-50/F-52,
//! compliance-recorder F-110..F-112).
//!
//! Each check is a pure function from what was observed to an [`Observation`]: the alarm's
//! severity and text, or clear. [`Alarms::apply`] turns observations into transitions: a raise
//! (or a change of severity) and a clear are stored in the alarms table, mirrored to the
//! activity log, and emailed to every recipient; an alarm that stays raised is not mailed
//! again on every run. Clearing is automatic when the condition recovers; there is no manual
//! acknowledgement (F-112).

use callvault_config::{SmtpConfig, SmtpSecurity};
use callvault_store::db::{AlarmSeverity, Db, DbError};
use callvault_store::objstore::ProbeReport;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::archive::{ArchiveSummary, RunOutcome};
use crate::assurance::AssuranceReport;
use crate::vault::{SetupError, read_secret_file};

/// The alarms CallVault raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    /// A recorder's spool volume is nearly full: calls will soon be refused or lost.
    SpoolDiskFull,
    /// A StorageTarget failed its connection test.
    StorageUnreachable,
    /// A RecordingProfile has no ready recorder, or no free capacity.
    RecorderUnavailable,
    /// A Connector's archive run failed.
    ConnectorFailing,
    /// A configuration change was refused: the previous configuration keeps running.
    ConfigurationRefused,
    /// A RecordingProfile's recording assurance test call was not recorded intact.
    AssuranceFailed,
    /// A filesystem StorageTarget crossed its space-cleanup limit.
    StorageSpaceLow,
}

impl AlarmKind {
    const ALL: [AlarmKind; 7] = [
        AlarmKind::SpoolDiskFull,
        AlarmKind::StorageUnreachable,
        AlarmKind::RecorderUnavailable,
        AlarmKind::ConnectorFailing,
        AlarmKind::ConfigurationRefused,
        AlarmKind::AssuranceFailed,
        AlarmKind::StorageSpaceLow,
    ];

    /// The alarm whose `alarm_type` is `alarm_type`.
    pub fn from_type(alarm_type: &str) -> Option<AlarmKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == alarm_type)
    }

    /// The `alarm_type` stored in the alarms table.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::SpoolDiskFull => "SPOOL_DISK_FULL",
            AlarmKind::StorageUnreachable => "STORAGE_UNREACHABLE",
            AlarmKind::RecorderUnavailable => "RECORDER_UNAVAILABLE",
            AlarmKind::AssuranceFailed => "RECORDING_ASSURANCE_FAILED",
            AlarmKind::ConnectorFailing => "CONNECTOR_FAILING",
            AlarmKind::ConfigurationRefused => "CONFIGURATION_REFUSED",
            AlarmKind::StorageSpaceLow => "STORAGE_SPACE_LOW",
        }
    }

    /// A title for people (mail subjects, Events).
    pub fn title(self) -> &'static str {
        match self {
            AlarmKind::SpoolDiskFull => "Spool disk nearly full",
            AlarmKind::StorageUnreachable => "Connection Failed",
            AlarmKind::AssuranceFailed => "Recording assurance failed",
            AlarmKind::RecorderUnavailable => "Recording Resource Unavailable",
            AlarmKind::ConnectorFailing => "Archive connector failing",
            AlarmKind::ConfigurationRefused => "Configuration refused",
            AlarmKind::StorageSpaceLow => "Not enough storage space",
        }
    }
}

/// What a check found for one alarm source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub kind: AlarmKind,
    /// What the alarm is about: a recorder pod, a StorageTarget, a RecordingProfile, a
    /// Connector.
    pub source: String,
    /// Raised with this severity and text, or `None` when the condition is clear.
    pub raised: Option<(AlarmSeverity, String)>,
}

/// Spool usage at or above `alarm_percent` is Major; at 95 % or more, Critical.
pub fn spool_disk(
    source: &str,
    used_bytes: u64,
    total_bytes: u64,
    alarm_percent: u8,
) -> Observation {
    let percent = if total_bytes == 0 {
        100
    } else {
        (u128::from(used_bytes) * 100 / u128::from(total_bytes)) as u64
    };
    let raised = (percent >= u64::from(alarm_percent)).then(|| {
        let severity = if percent >= 95 {
            AlarmSeverity::Critical
        } else {
            AlarmSeverity::Major
        };
        (
            severity,
            format!(
                "Spool disk of {source} is {percent}% full ({used_bytes} of {total_bytes} bytes); \
                 recordings that cannot be spooled are refused"
            ),
        )
    });
    Observation {
        kind: AlarmKind::SpoolDiskFull,
        source: source.to_owned(),
        raised,
    }
}

/// A failed connection test is Critical ("Connection To Storage <name> Lost", F-111).
pub fn storage(target: &str, probe: &ProbeReport) -> Observation {
    storage_unreachable(
        target,
        (!probe.succeeded())
            .then(|| probe.condition_message())
            .as_deref(),
    )
}

/// A target that could not be tested at all (`why`: its credentials or settings), or clear.
pub fn storage_unreachable(target: &str, why: Option<&str>) -> Observation {
    Observation {
        kind: AlarmKind::StorageUnreachable,
        source: target.to_owned(),
        raised: why.map(|why| {
            (
                AlarmSeverity::Critical,
                format!("Connection to storage {target} lost: {why}"),
            )
        }),
    }
}

/// Whatever alarm of `kind` was raised for `source` is cleared (the source is gone, or was
/// disabled).
pub fn clear(kind: AlarmKind, source: &str) -> Observation {
    Observation {
        kind,
        source: source.to_owned(),
        raised: None,
    }
}

/// The archive destination failing its connection test at the start of a run.
pub fn archive_destination(target: &str, summary: &ArchiveSummary) -> Observation {
    Observation {
        kind: AlarmKind::StorageUnreachable,
        source: target.to_owned(),
        raised: summary.unreachable.as_ref().map(|why| {
            (
                AlarmSeverity::Critical,
                format!("Connection to storage {target} lost: {why}"),
            )
        }),
    }
}

/// No ready recorder pod, or no capacity, is Critical (calls go unrecorded or are refused);
/// every session slot in use is Major (the next call is refused until the pool scales).
pub fn recorders(
    profile: &str,
    ready_pods: u32,
    capacity: u32,
    active_sessions: u32,
) -> Observation {
    let raised = if ready_pods == 0 {
        Some((
            AlarmSeverity::Critical,
            format!("RecordingProfile {profile} has no ready recorder: calls are not recorded"),
        ))
    } else if capacity == 0 {
        Some((
            AlarmSeverity::Critical,
            format!("RecordingProfile {profile} has no recording capacity: calls are not recorded"),
        ))
    } else if active_sessions >= capacity {
        Some((
            AlarmSeverity::Major,
            format!(
                "RecordingProfile {profile} is at capacity ({active_sessions} of {capacity} \
                 sessions): new calls are refused until it scales"
            ),
        ))
    } else {
        None
    };
    Observation {
        kind: AlarmKind::RecorderUnavailable,
        source: profile.to_owned(),
        raised,
    }
}

/// A failed archive run is Critical; a run where some recordings failed is Minor (they are
/// retried), clearing on the next run that archives everything.
pub fn connector(name: &str, summary: &ArchiveSummary) -> Observation {
    let message = || summary.message().unwrap_or_default();
    let raised = match summary.outcome() {
        RunOutcome::Succeeded => None,
        RunOutcome::PartiallyFailed => Some((
            AlarmSeverity::Minor,
            format!("Connector {name}: {}", message()),
        )),
        RunOutcome::Failed => Some((
            AlarmSeverity::Critical,
            format!(
                "Connector {name} archived nothing: {}; {} recordings pending",
                message(),
                summary.counts.pending
            ),
        )),
    };
    Observation {
        kind: AlarmKind::ConnectorFailing,
        source: name.to_owned(),
        raised,
    }
}

/// A configuration change `source` (a recorder, the resource files) refused, and why, is Major:
/// recording goes on with the previous configuration, but what was asked for is not in force.
/// It clears when a change is applied.
pub fn configuration(source: &str, refused: Option<&str>) -> Observation {
    Observation {
        kind: AlarmKind::ConfigurationRefused,
        source: source.to_owned(),
        raised: refused.map(|why| {
            (
                AlarmSeverity::Major,
                format!(
                    "Configuration of {source} refused: {why}; the previous configuration keeps running"
                ),
            )
        }),
    }
}

/// A failed recording assurance run is Critical: the profile's test call, placed the way a
/// call source places real ones, was not recorded intact, so real calls may not be either. It
/// clears on the next run that passes.
pub fn assurance(report: &AssuranceReport) -> Observation {
    let profile = &report.profile;
    Observation {
        kind: AlarmKind::AssuranceFailed,
        source: profile.clone(),
        raised: report.failure.as_ref().map(|f| {
            (
                AlarmSeverity::Critical,
                format!(
                    "RecordingProfile {profile}: the recording assurance test call was not recorded intact ({}): {}",
                    f.reason, f.message
                ),
            )
        }),
    }
}

/// A change of an alarm's state, which is stored, mailed and emitted as an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Raised {
        kind: AlarmKind,
        source: String,
        severity: AlarmSeverity,
        message: String,
    },
    Cleared {
        kind: AlarmKind,
        source: String,
    },
}

impl Transition {
    /// Mail subject and Event text.
    pub fn subject(&self, tenant: &str) -> String {
        match self {
            Transition::Raised {
                kind,
                source,
                severity,
                ..
            } => format!(
                "[CallVault {tenant}] {} alarm: {} ({source})",
                severity_word(*severity),
                kind.title()
            ),
            Transition::Cleared { kind, source } => {
                format!("[CallVault {tenant}] Cleared: {} ({source})", kind.title())
            }
        }
    }

    pub fn body(&self, tenant: &str) -> String {
        match self {
            Transition::Raised {
                kind,
                source,
                severity,
                message,
            } => format!(
                "{message}\n\nAlarm: {} ({})\nSeverity: {}\nSource: {source}\nTenant: {tenant}\n\n\
                 The alarm clears by itself when the condition recovers.\n",
                kind.title(),
                kind.as_str(),
                severity_word(*severity)
            ),
            Transition::Cleared { kind, source } => format!(
                "The condition has recovered.\n\nAlarm: {} ({})\nSource: {source}\nTenant: {tenant}\n",
                kind.title(),
                kind.as_str()
            ),
        }
    }

    pub fn is_raise(&self) -> bool {
        matches!(self, Transition::Raised { .. })
    }
}

fn severity_word(s: AlarmSeverity) -> &'static str {
    match s {
        AlarmSeverity::Info => "Information",
        AlarmSeverity::Minor => "Minor",
        AlarmSeverity::Major => "Major",
        AlarmSeverity::Critical => "Critical",
    }
}

/// Errors of alarm handling.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    #[error("alarm store: {0}")]
    Db(#[from] DbError),
    #[error("SMTP settings: {0}")]
    Setup(#[from] SetupError),
    #[error("alarm mail: invalid address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("alarm mail could not be built: {0}")]
    Build(String),
    #[error("alarm mail to {server} failed: {reason}")]
    Send { server: String, reason: String },
}

/// Sends alarm mail through one SMTP server to every configured recipient.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("recipients", &self.to.len())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the transport from validated settings, reading the credentials files.
    pub fn new(config: &SmtpConfig) -> Result<Mailer, AlarmError> {
        let mailbox = |address: &str| -> Result<Mailbox, AlarmError> {
            address
                .parse()
                .map_err(|e: lettre::address::AddressError| AlarmError::Address {
                    address: address.to_owned(),
                    reason: e.to_string(),
                })
        };
        let from = mailbox(&config.from)?;
        let to = config
            .to
            .iter()
            .map(|a| mailbox(a))
            .collect::<Result<Vec<_>, _>>()?;
        let server = format!("{}:{}", config.host, config.port);
        let send_err = |e: lettre::transport::smtp::Error| AlarmError::Send {
            server: server.clone(),
            reason: e.to_string(),
        };
        let builder = match config.security {
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                    .map_err(send_err)?
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(send_err)?
            }
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            }
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(std::time::Duration::from_secs(30)));
        if let (Some(user), Some(pass)) = (&config.username_file, &config.password_file) {
            let user = read_secret_file(user, "the SMTP user name")?;
            let pass = read_secret_file(pass, "the SMTP password")?;
            builder = builder.credentials(Credentials::new(user.to_string(), pass.to_string()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to,
            server,
        })
    }

    /// Sends one mail addressed to every recipient.
    pub async fn send(&self, subject: &str, body: String) -> Result<(), AlarmError> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| AlarmError::Build(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| AlarmError::Send {
                server: self.server.clone(),
                reason: e.to_string(),
            })
    }
}

/// Applies observations to one tenant's alarms.
#[derive(Debug)]
pub struct Alarms<'a> {
    pub db: &'a Db,
    pub tenant: &'a str,
    /// Mail on raise and clear; `None` = no mail (F-52: no server, no mail).
    pub mailer: Option<&'a Mailer>,
}

impl Alarms<'_> {
    /// Stores `obs`; returns the transition it caused, if any. A mail that cannot be sent is
    /// logged, never lost silently, and does not undo the stored alarm.
    pub async fn apply(&self, obs: &Observation) -> Result<Option<Transition>, AlarmError> {
        let kind = obs.kind.as_str();
        let active = self
            .db
            .list_alarms(self.tenant, false, 1000)
            .await?
            .into_iter()
            .find(|a| a.alarm_type == kind && a.source == obs.source);
        let transition = match &obs.raised {
            Some((severity, message)) => {
                self.db
                    .raise_alarm(self.tenant, kind, &obs.source, *severity, message)
                    .await?;
                // A raise, or a change of severity, is news; the same alarm again is not.
                (active.as_ref().map(|a| a.severity) != Some(*severity)).then(|| {
                    Transition::Raised {
                        kind: obs.kind,
                        source: obs.source.clone(),
                        severity: *severity,
                        message: message.clone(),
                    }
                })
            }
            None => self
                .db
                .clear_alarm(self.tenant, kind, &obs.source)
                .await?
                .then(|| Transition::Cleared {
                    kind: obs.kind,
                    source: obs.source.clone(),
                }),
        };
        let Some(t) = transition else {
            return Ok(None);
        };
        let (log_kind, text) = match &t {
            Transition::Raised { message, .. } => ("alarm", message.clone()),
            Transition::Cleared { kind, source } => (
                "alarm Clear",
                format!("{} ({source}) cleared", kind.title()),
            ),
        };
        self.db.log_activity(self.tenant, log_kind, &text).await?;
        if t.is_raise() {
            tracing::warn!(tenant = self.tenant, alarm = kind, source = %obs.source, "{text}");
        } else {
            tracing::info!(tenant = self.tenant, alarm = kind, source = %obs.source, "{text}");
        }
        if let Some(mailer) = self.mailer
            && let Err(e) = mailer
                .send(&t.subject(self.tenant), t.body(self.tenant))
                .await
        {
            tracing::error!(tenant = self.tenant, alarm = kind, error = %e,
                "alarm stored but its mail could not be sent");
        }
        Ok(Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alarm_type_names_its_kind() {
        for kind in AlarmKind::ALL {
            assert_eq!(AlarmKind::from_type(kind.as_str()), Some(kind));
        }
        assert_eq!(AlarmKind::from_type("NO_SUCH_ALARM"), None);
    }

    #[test]
    fn spool_thresholds() {
        assert_eq!(spool_disk("rec-0", 79, 100, 80).raised, None);
        let major = spool_disk("rec-0", 80, 100, 80).raised.expect("raised");
        assert_eq!(major.0, AlarmSeverity::Major);
        assert!(major.1.contains("80% full"), "{}", major.1);
        assert_eq!(
            spool_disk("rec-0", 96, 100, 80).raised.map(|r| r.0),
            Some(AlarmSeverity::Critical)
        );
        assert_eq!(
            spool_disk("rec-0", 0, 0, 80).raised.map(|r| r.0),
            Some(AlarmSeverity::Critical),
            "a volume of no size is full"
        );
    }

    #[test]
    fn the_recorder_raises_its_own_alarms_under_the_same_types() {
        use callvault_recorder::alarms as recorder;
        assert_eq!(AlarmKind::SpoolDiskFull.as_str(), recorder::SPOOL_DISK_FULL);
        assert_eq!(
            AlarmKind::StorageUnreachable.as_str(),
            recorder::STORAGE_UNREACHABLE
        );
    }

    #[test]
    fn recorder_availability() {
        assert_eq!(
            recorders("traders", 0, 0, 0).raised.map(|r| r.0),
            Some(AlarmSeverity::Critical)
        );
        assert_eq!(
            recorders("traders", 2, 0, 0).raised.map(|r| r.0),
            Some(AlarmSeverity::Critical)
        );
        let full = recorders("traders", 2, 400, 400).raised.expect("full");
        assert_eq!(full.0, AlarmSeverity::Major);
        assert!(full.1.contains("400 of 400"));
        assert_eq!(recorders("traders", 2, 400, 399).raised, None);
    }

    #[test]
    fn subjects_name_severity_title_and_source() {
        let t = Transition::Raised {
            kind: AlarmKind::StorageUnreachable,
            source: "primary".into(),
            severity: AlarmSeverity::Critical,
            message: "Connection to storage primary lost".into(),
        };
        assert_eq!(
            t.subject("bank"),
            "[CallVault bank] Critical alarm: Connection Failed (primary)"
        );
        assert!(
            t.body("bank")
                .starts_with("Connection to storage primary lost")
        );
        let c = Transition::Cleared {
            kind: AlarmKind::ConnectorFailing,
            source: "offsite".into(),
        };
        assert_eq!(
            c.subject("bank"),
            "[CallVault bank] Cleared: Archive connector failing (offsite)"
        );
    }
}
