//! The portal's settings, typed and validated in one place.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// Failed passwords in a row that lock an account.
    pub lockout_failures: i64,
    /// How long a locked account stays locked.
    pub lockout: Duration,
    /// Sign-in attempts allowed per client address and per account in one minute.
    pub login_attempts_per_minute: usize,
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
    }
}
