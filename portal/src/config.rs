//! The portal's settings, typed and validated in one place.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::net::IpNet;
use callvault_store::keys::PrivateKey;

/// The key that signs audit checkpoints: a private key the database never holds, so whoever
/// can write the database cannot rewrite the audit trail unnoticed (equal by key id).
#[derive(Clone)]
pub struct AuditKey(pub Arc<PrivateKey>);

impl PartialEq for AuditKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for AuditKey {}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({})", self.0.id())
    }
}

/// Settings of one portal process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    /// Tenant of a sign-in that names none (standalone: the only one, `default`).
    pub default_tenant: String,
    /// Audit entries are kept this many days (1..=3650); the retention job purges older ones.
    pub audit_retention_days: u32,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub session_absolute: Duration,
    /// Mark cookies `Secure` (the portal is reached over TLS).
    pub secure_cookies: bool,
    /// Failed passwords in a row from one source that pause that source's sign-ins to the
    /// account (the owner's other sources are not affected).
    pub lockout_failures: i64,
    /// How long such a pause lasts.
    pub lockout: Duration,
    /// Failed sign-ins allowed per client address in one minute, and sign-in attempts per
    /// account in one minute from sources that have not signed in to it successfully.
    pub login_attempts_per_minute: usize,
    /// Failed sign-ins of one source within this window become one audit entry (the first)
    /// and one summary with their count: no client can grow the audit trail without bound.
    pub failed_login_audit_window: Duration,
    /// Proxies whose `X-Forwarded-For` is believed; every other peer is the client itself.
    pub trusted_proxies: Vec<IpNet>,
    /// Password hashes computed at once (each takes ~19 MiB and tens of milliseconds).
    pub hashing_concurrency: usize,
    /// Password checks that may wait for a hashing slot; more answer 503 with Retry-After.
    pub hashing_queue: usize,
    /// A request's headers must arrive within this time, and a kept-alive connection idle
    /// this long is closed.
    pub header_timeout: Duration,
    /// A request's body must arrive within this time of its headers.
    pub body_timeout: Duration,
    /// How long a password reset token works.
    pub reset_token_ttl: Duration,
    /// The portal's public base URL (the export's "Call Link"); empty = relative links.
    pub public_url: String,
    /// OpenID Connect single sign-on; `None` = local accounts only.
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// Bearer token of SCIM provisioning at `/scim/v2`; `None` = SCIM off.
    pub scim_token: Option<crate::oidc::Secret>,
    /// Signs checkpoints of every tenant's audit chain head; `None` = the chain is checked for
    /// consistency only (a database writer could rewrite it unnoticed).
    pub audit_key: Option<AuditKey>,
    /// How often the chain heads are checkpointed.
    pub audit_checkpoint_interval: Duration,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            default_tenant: "default".to_owned(),
            audit_retention_days: 365,
            session_idle: Duration::from_secs(15 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            secure_cookies: true,
            lockout_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            login_attempts_per_minute: 10,
            failed_login_audit_window: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            hashing_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            hashing_queue: 32,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            reset_token_ttl: Duration::from_secs(24 * 3600),
            public_url: String::new(),
            oidc: None,
            scim_token: None,
            audit_key: None,
            audit_checkpoint_interval: Duration::from_secs(60),
        }
    }
}

/// A setting out of range; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid portal setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn err(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

/// The setting of the header (and keep-alive idle) timeout, in seconds.
pub const HTTP_HEADER_TIMEOUT: &str = "CALLVAULT_HTTP_HEADER_TIMEOUT_SECONDS";
/// The setting of the body timeout, in seconds.
pub const HTTP_BODY_TIMEOUT: &str = "CALLVAULT_HTTP_BODY_TIMEOUT_SECONDS";
const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_BODY_TIMEOUT: Duration = Duration::from_secs(3600);

/// The setting naming the trusted proxies (environment, with `--trusted-proxies` and the
/// chart's `portal.trustedProxies`).
pub const TRUSTED_PROXIES: &str = "CALLVAULT_TRUSTED_PROXIES";

/// Parses a comma- or blank-separated list of addresses and CIDR blocks (`10.0.0.0/8`,
/// `fd00::/8`, `192.0.2.7`); an empty text trusts no proxy.
pub fn parse_trusted_proxies(text: &str) -> Result<Vec<IpNet>, ConfigError> {
    text.split([',', ' ', '\n', '\t'])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e: String| err(TRUSTED_PROXIES, e)))
        .collect()
}

impl PortalConfig {
    /// Checks every setting; the first problem is returned with the setting's name.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.default_tenant.trim().is_empty() || self.default_tenant.contains('.') {
            return Err(err(
                "default tenant",
                "must be a namespace name (not empty, no dots)",
            ));
        }
        if !(1..=3650).contains(&self.audit_retention_days) {
            return Err(err(
                "CALLVAULT_AUDIT_RETENTION_DAYS",
                format!("{} is not within 1..=3650", self.audit_retention_days),
            ));
        }
        if self.session_idle.is_zero() {
            return Err(err(
                "CALLVAULT_SESSION_IDLE_TIMEOUT_MINUTES",
                "must be at least 1 minute",
            ));
        }
        if self.session_absolute < self.session_idle {
            return Err(err(
                "CALLVAULT_SESSION_ABSOLUTE_TIMEOUT_MINUTES",
                "must not be shorter than the idle timeout",
            ));
        }
        if self.lockout_failures < 1 {
            return Err(err("lockout failures", "must be at least 1"));
        }
        if self.login_attempts_per_minute < 1 {
            return Err(err("login attempts per minute", "must be at least 1"));
        }
        if self.failed_login_audit_window.is_zero() {
            return Err(err("failed sign-in audit window", "must not be zero"));
        }
        if let Some(all) = self.trusted_proxies.iter().find(|n| n.prefix() == 0) {
            return Err(err(
                TRUSTED_PROXIES,
                format!("{all} trusts every address: any client could forge X-Forwarded-For"),
            ));
        }
        if self.hashing_concurrency < 1 {
            return Err(err("hashing concurrency", "must be at least 1"));
        }
        // Zero would disable the slow-client defence; hours would let slow clients hold
        // connections as if there were none.
        if !(Duration::from_secs(1)..=MAX_HEADER_TIMEOUT).contains(&self.header_timeout) {
            return Err(err(
                HTTP_HEADER_TIMEOUT,
                format!(
                    "{} s is not within 1..={} seconds",
                    self.header_timeout.as_secs_f64(),
                    MAX_HEADER_TIMEOUT.as_secs()
                ),
            ));
        }
        if !(Duration::from_secs(1)..=MAX_BODY_TIMEOUT).contains(&self.body_timeout) {
            return Err(err(
                HTTP_BODY_TIMEOUT,
                format!(
                    "{} s is not within 1..={} seconds",
                    self.body_timeout.as_secs_f64(),
                    MAX_BODY_TIMEOUT.as_secs()
                ),
            ));
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        if self.audit_checkpoint_interval.is_zero() {
            return Err(err(
                "audit checkpoint interval",
                "must be at least 1 second",
            ));
        }
        if self
            .scim_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 32)
        {
            return Err(err(
                "CALLVAULT_SCIM_TOKEN_FILE",
                "the token must have at least 32 characters",
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(PortalConfig::default().validate().is_ok());
        let e = PortalConfig {
            audit_retention_days: 0,
            ..Default::default()
        }
        .validate()
        .expect_err("0 days");
        assert_eq!(e.setting, "CALLVAULT_AUDIT_RETENTION_DAYS");
        let e = PortalConfig {
            session_absolute: Duration::from_secs(60),
            ..Default::default()
        }
        .validate()
        .expect_err("absolute < idle");
        assert_eq!(e.setting, "CALLVAULT_SESSION_ABSOLUTE_TIMEOUT_MINUTES");
        for (header, body, setting) in [
            (0, 30, HTTP_HEADER_TIMEOUT),
            (301, 30, HTTP_HEADER_TIMEOUT),
            (10, 0, HTTP_BODY_TIMEOUT),
            (10, 3601, HTTP_BODY_TIMEOUT),
        ] {
            let e = PortalConfig {
                header_timeout: Duration::from_secs(header),
                body_timeout: Duration::from_secs(body),
                ..Default::default()
            }
            .validate()
            .expect_err("out of range");
            assert_eq!(e.setting, setting, "{e}");
        }
        assert!(
            PortalConfig {
                header_timeout: Duration::from_secs(300),
                body_timeout: Duration::from_secs(3600),
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn trusted_proxies_parse_and_refuse_everyone() {
        let nets = parse_trusted_proxies("10.0.0.0/8, 192.0.2.7 fd00::/8").expect("valid");
        assert_eq!(nets.len(), 3);
        assert!(parse_trusted_proxies("").expect("empty").is_empty());
        let e = parse_trusted_proxies("10.0.0.0/33").expect_err("prefix");
        assert_eq!(e.setting, TRUSTED_PROXIES);
        assert!(e.reason.contains("10.0.0.0/33"), "{e}");
        assert!(parse_trusted_proxies("proxy.local").is_err());
        let e = PortalConfig {
            trusted_proxies: parse_trusted_proxies("0.0.0.0/0").expect("parses"),
            ..Default::default()
        }
        .validate()
        .expect_err("everyone");
        assert_eq!(e.setting, TRUSTED_PROXIES);
    }
}
