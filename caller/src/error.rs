use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Problems with the options, found before any call is placed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("--to {value:?}: {problem}")]
    Target {
        value: String,
        problem: &'static str,
    },
    #[error("--{option} {value:?}: {problem}")]
    Option {
        option: &'static str,
        value: String,
        problem: String,
    },
    #[error("--left and --right go together: give both WAV files, or neither for generated tones")]
    OneWav,
}

/// A WAV file that cannot be played into a call.
#[derive(Debug, Error)]
pub enum AudioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Format { path: PathBuf, problem: String },
}

/// Why the run as a whole could not start.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot open a SIP socket towards {remote}: {source}")]
    Socket {
        remote: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect over TCP to {remote}: {source}")]
    Connect {
        remote: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS needs a CA file to check the recorder's certificate against")]
    TlsSettingsMissing,
    #[error(transparent)]
    Tls(callvault_recorder::sip::tls::TlsError),
    #[error("--tls-server-name {0:?} is not a DNS name or an IP address")]
    TlsServerName(String),
    #[error("TLS handshake with {remote} failed: {source}")]
    TlsHandshake {
        remote: SocketAddr,
        source: std::io::Error,
    },
}

/// Why one call failed. The text is the reason the summary groups calls by, so it carries no
/// per-call identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    #[error("recorder refused the call: {status} {reason}{detail}")]
    Refused {
        status: u16,
        reason: String,
        /// ` (Retry-After: 30)`, ` (Warning: ...)` or empty.
        detail: String,
    },
    #[error("no final answer to INVITE within {}s{}", .waited.as_secs_f32(), last_seen(.provisional, .malformed))]
    InviteTimeout {
        waited: Duration,
        /// Last provisional status seen (180...), if any.
        provisional: Option<u16>,
        malformed: u64,
    },
    #[error("no answer to BYE within {}s{}", .waited.as_secs_f32(), last_seen(&None, .malformed))]
    ByeTimeout { waited: Duration, malformed: u64 },
    #[error("BYE refused: {status} {reason}")]
    ByeRefused { status: u16, reason: String },
    #[error("recorder's answer is unusable: {0}")]
    BadAnswer(String),
    #[error("SRTP: {0}")]
    Srtp(String),
    #[error("recorder ended the call early with BYE")]
    EndedByRecorder,
    #[error("SIP connection lost: {0}")]
    LinkClosed(String),
    #[error("cannot open RTP socket: {0}")]
    RtpSocket(String),
    #[error("RTP send failed: {0}")]
    RtpSend(String),
}

fn last_seen(provisional: &Option<u16>, malformed: &u64) -> String {
    let mut s = match provisional {
        Some(p) => format!(" (last response: {p})"),
        None => " (no response at all)".to_owned(),
    };
    if *malformed > 0 {
        s.push_str(&format!(
            "; {malformed} malformed SIP message(s) from the recorder were dropped"
        ));
    }
    s
}
