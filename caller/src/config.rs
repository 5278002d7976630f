//! The options of a run, validated in one place into a [`CallConfig`].

use std::path::PathBuf;
use std::time::Duration;

use callvault_recorder::media::g711;
use callvault_recorder::sip::tls::TlsClientFiles;
use callvault_recorder::sip::transaction::Timers;
use callvault_recorder::sip::transport::Transport;
use callvault_recorder::srtp::Suite;

use crate::error::ConfigError;

/// The G.711 law the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711 {
    Pcmu,
    Pcma,
}

impl G711 {
    /// Static RTP payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Self::Pcmu => g711::encode_ulaw(sample),
            Self::Pcma => g711::encode_alaw(sample),
        }
    }

    /// The name used on the command line and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pcmu => "pcmu",
            Self::Pcma => "pcma",
        }
    }
}

/// Where calls go: the Request-URI and the address it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URI as given, used as the Request-URI of the INVITE.
    pub uri: String,
    pub host: String,
    pub port: u16,
    /// A `sips:` URI: only TLS may carry it (RFC 3261 §26.2.2).
    pub sips: bool,
}

impl Target {
    /// Parses `sip:[user@]host[:port][;params]` or the same with `sips:`; IPv6 hosts in
    /// brackets. The port defaults to 5060, or 5061 for `sips:`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let bad = |problem| ConfigError::Target {
            value: value.to_owned(),
            problem,
        };
        let v = value.trim();
        let (sips, rest) = match (v.strip_prefix("sips:"), v.strip_prefix("sip:")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => {
                return Err(bad("must be a SIP URI such as sip:recorder.example:5060"));
            }
        };
        let hostport = rest
            .split([';', '?'])
            .next()
            .unwrap_or_default()
            .rsplit('@')
            .next()
            .unwrap_or_default();
        if hostport.is_empty() || hostport.contains(char::is_whitespace) {
            return Err(bad("names no host"));
        }
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("IPv6 host lacks its closing ]"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("names no host"));
        }
        let port = match port {
            None if sips => 5061,
            None => 5060,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port must be a number from 1 to 65535"))?,
        };
        Ok(Self {
            uri: v.to_owned(),
            host: host.to_owned(),
            port,
            sips,
        })
    }
}

/// Where the two channels' audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// A tone per channel (different frequencies, so the channels can be told apart).
    Tones,
    /// Left is the caller (stream label 1), right the callee (label 2).
    Wav { left: PathBuf, right: PathBuf },
}

/// The options as given, before validation (what `callvault call` parses).
#[derive(Debug, Clone, PartialEq)]
pub struct CallOptions {
    pub to: String,
    pub transport: String,
    pub from_number: String,
    pub to_number: String,
    pub caller_name: String,
    pub callee_name: String,
    /// Seconds of audio per call; `None`: the WAV files' length, or 10 s of tones.
    pub duration: Option<f64>,
    pub left: Option<PathBuf>,
    pub right: Option<PathBuf>,
    pub codec: String,
    pub calls: u32,
    /// New calls per second.
    pub rate: f64,
    /// Seconds to wait for a final answer to an INVITE.
    pub answer_timeout: f64,
    /// SRTP crypto suite of the streams (RFC 4568 name); `None`: plain RTP.
    pub srtp: Option<String>,
    /// TLS: the CA certificates (PEM) the recorder's certificate must chain to.
    pub tls_ca: Option<PathBuf>,
    /// TLS: this client's certificate chain and key (PEM), for recorders that verify sources.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// TLS: the name the recorder's certificate must carry; default the target's host.
    pub tls_server_name: Option<String>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            to: String::new(),
            transport: "udp".to_owned(),
            from_number: "+15550100001".to_owned(),
            to_number: "+15550100002".to_owned(),
            caller_name: "Test Caller".to_owned(),
            callee_name: "Test Callee".to_owned(),
            duration: None,
            left: None,
            right: None,
            codec: "pcmu".to_owned(),
            calls: 1,
            rate: 1.0,
            answer_timeout: 32.0,
            srtp: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_server_name: None,
        }
    }
}

/// A validated run.
#[derive(Debug, Clone, PartialEq)]
pub struct CallConfig {
    pub target: Target,
    pub transport: Transport,
    pub caller: Party,
    pub callee: Party,
    pub duration: Option<Duration>,
    pub audio: AudioSource,
    pub codec: G711,
    pub calls: u32,
    pub rate: f64,
    pub timers: Timers,
    pub answer_timeout: Duration,
    /// Both streams SRTP of this suite, each under a fresh key.
    pub srtp: Option<Suite>,
    /// What TLS trusts and presents; set exactly when the transport is TLS.
    pub tls: Option<TlsClient>,
}

/// The TLS side of a run over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClient {
    pub files: TlsClientFiles,
    /// The name the recorder's certificate is checked for (a DNS name or an IP address).
    pub server_name: String,
}

/// One party of the recorded call, as the metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// A number (`+4420...`, `4021`) or a full `sip:` URI.
    pub number: String,
    pub name: String,
}

/// Longest call the client places; longer is a mistake, not a test.
const MAX_DURATION_SECS: f64 = 24.0 * 3600.0;
const MAX_RATE: f64 = 10_000.0;

impl CallOptions {
    /// Checks every option, naming the first one that is wrong.
    pub fn validate(self) -> Result<CallConfig, ConfigError> {
        let target = Target::parse(&self.to)?;
        let transport = match self.transport.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => {
                return Err(option(
                    "transport",
                    &self.transport,
                    "must be udp, tcp or tls",
                ));
            }
        };
        if target.sips && transport != Transport::Tls {
            return Err(option(
                "transport",
                &self.transport,
                "a sips: target is reached over TLS only: use --transport tls",
            ));
        }
        let tls = self.tls(transport, &target)?;
        let codec = match self.codec.to_ascii_lowercase().as_str() {
            "pcmu" => G711::Pcmu,
            "pcma" => G711::Pcma,
            _ => return Err(option("codec", &self.codec, "must be pcmu or pcma")),
        };
        let srtp = self
            .srtp
            .as_deref()
            .map(|name| {
                Suite::from_name(name).ok_or_else(|| {
                    option(
                        "srtp",
                        name,
                        "must be AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, \
                         AEAD_AES_128_GCM or AEAD_AES_256_GCM",
                    )
                })
            })
            .transpose()?;
        check_number("from-number", &self.from_number)?;
        check_number("to-number", &self.to_number)?;
        check_name("caller-name", &self.caller_name)?;
        check_name("callee-name", &self.callee_name)?;
        let duration = self
            .duration
            .map(|d| {
                if d.is_finite() && d > 0.0 && d <= MAX_DURATION_SECS {
                    Ok(Duration::from_secs_f64(d))
                } else {
                    Err(option(
                        "duration",
                        &d.to_string(),
                        "must be more than 0 and at most 86400 seconds",
                    ))
                }
            })
            .transpose()?;
        let audio = match (self.left, self.right) {
            (Some(left), Some(right)) => AudioSource::Wav { left, right },
            (None, None) => AudioSource::Tones,
            _ => return Err(ConfigError::OneWav),
        };
        if self.calls == 0 {
            return Err(option("calls", "0", "must be at least 1"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(option(
                "rate",
                &self.rate.to_string(),
                "must be more than 0 and at most 10000 calls per second",
            ));
        }
        if !(self.answer_timeout.is_finite()
            && self.answer_timeout > 0.0
            && self.answer_timeout <= 3600.0)
        {
            return Err(option(
                "answer-timeout",
                &self.answer_timeout.to_string(),
                "must be more than 0 and at most 3600 seconds",
            ));
        }
        Ok(CallConfig {
            target,
            transport,
            caller: Party {
                number: self.from_number,
                name: self.caller_name,
            },
            callee: Party {
                number: self.to_number,
                name: self.callee_name,
            },
            duration,
            audio,
            codec,
            srtp,
            tls,
            calls: self.calls,
            rate: self.rate,
            timers: Timers::default(),
            answer_timeout: Duration::from_secs_f64(self.answer_timeout),
        })
    }
}

impl CallOptions {
    /// The TLS settings: required with the TLS transport (the recorder's certificate is always
    /// checked), refused without it.
    fn tls(&self, transport: Transport, target: &Target) -> Result<Option<TlsClient>, ConfigError> {
        let given = |o: &Option<PathBuf>| o.as_ref().map(|p| p.display().to_string());
        if transport != Transport::Tls {
            let stray = [
                ("tls-ca", given(&self.tls_ca)),
                ("tls-cert", given(&self.tls_cert)),
                ("tls-key", given(&self.tls_key)),
                ("tls-server-name", self.tls_server_name.clone()),
            ]
            .into_iter()
            .find_map(|(name, value)| value.map(|v| (name, v)));
            return match stray {
                Some((name, value)) => Err(option(name, &value, "needs --transport tls")),
                None => Ok(None),
            };
        }
        let ca = self.tls_ca.clone().ok_or_else(|| {
            option(
                "tls-ca",
                "",
                "is required with TLS: the CA file (PEM) the recorder's certificate chains to",
            )
        })?;
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(option(
                    "tls-cert",
                    &cert.display().to_string(),
                    "needs --tls-key",
                ));
            }
            (None, Some(key)) => {
                return Err(option(
                    "tls-key",
                    &key.display().to_string(),
                    "needs --tls-cert",
                ));
            }
        };
        let server_name = self
            .tls_server_name
            .clone()
            .unwrap_or_else(|| target.host.clone());
        if rustls::pki_types::ServerName::try_from(server_name.as_str()).is_err() {
            return Err(option(
                "tls-server-name",
                &server_name,
                "must be a DNS name or an IP address",
            ));
        }
        Ok(Some(TlsClient {
            files: TlsClientFiles { ca, identity },
            server_name,
        }))
    }
}

fn option(option: &'static str, value: &str, problem: &str) -> ConfigError {
    ConfigError::Option {
        option,
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

/// A number goes into an XML attribute and a SIP URI: printable, no spaces or delimiters.
fn check_number(name: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 256 {
        return Err(option(name, value, "must be 1 to 256 characters"));
    }
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "<>\"'&".contains(c))
    {
        return Err(option(
            name,
            value,
            "must not contain spaces, control characters or any of < > \" ' &",
        ));
    }
    Ok(())
}

/// A name goes into XML text (escaped); only line breaks and control characters are refused.
fn check_name(name: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.len() > 256 {
        return Err(option(name, value, "must be at most 256 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(option(name, value, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts(to: &str) -> CallOptions {
        CallOptions {
            to: to.to_owned(),
            ..CallOptions::default()
        }
    }

    #[test]
    fn targets_parse_with_default_port_user_params_and_ipv6() {
        let t = Target::parse("sip:10.0.0.5").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 5060));
        let t = Target::parse("sip:srs@recorder.example:5080;transport=tcp").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("recorder.example", 5080));
        assert_eq!(t.uri, "sip:srs@recorder.example:5080;transport=tcp");
        let t = Target::parse("sip:[::1]:5062").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 5062));
        let t = Target::parse("sips:recorder.example").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.sips),
            ("recorder.example", 5061, true)
        );
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (value, needle) in [
            ("recorder:5060", "must be a SIP URI"),
            ("sip:", "no host"),
            ("sip:host:0", "port"),
            ("sip:host:99999", "port"),
            ("sip:[::1:5060", "closing ]"),
        ] {
            let e = Target::parse(value).unwrap_err().to_string();
            assert!(e.contains(needle), "{value}: {e}");
            assert!(e.contains("--to"), "{value}: {e}");
        }
    }

    #[test]
    fn every_option_is_checked_and_named() {
        let cases: Vec<(CallOptions, &str)> = vec![
            (
                CallOptions {
                    transport: "sctp".into(),
                    ..opts("sip:h")
                },
                "--transport",
            ),
            (
                CallOptions {
                    transport: "tcp".into(),
                    ..opts("sips:h")
                },
                "--transport",
            ),
            (
                CallOptions {
                    transport: "tls".into(),
                    ..opts("sip:h")
                },
                "--tls-ca",
            ),
            (
                CallOptions {
                    tls_ca: Some("ca.pem".into()),
                    ..opts("sip:h")
                },
                "--tls-ca",
            ),
            (
                CallOptions {
                    transport: "tls".into(),
                    tls_ca: Some("ca.pem".into()),
                    tls_cert: Some("client.pem".into()),
                    ..opts("sip:h")
                },
                "--tls-cert",
            ),
            (
                CallOptions {
                    transport: "tls".into(),
                    tls_ca: Some("ca.pem".into()),
                    tls_server_name: Some("not a name".into()),
                    ..opts("sip:h")
                },
                "--tls-server-name",
            ),
            (
                CallOptions {
                    codec: "opus".into(),
                    ..opts("sip:h")
                },
                "--codec",
            ),
            (
                CallOptions {
                    from_number: "a b".into(),
                    ..opts("sip:h")
                },
                "--from-number",
            ),
            (
                CallOptions {
                    to_number: String::new(),
                    ..opts("sip:h")
                },
                "--to-number",
            ),
            (
                CallOptions {
                    caller_name: "x\r\nVia: evil".into(),
                    ..opts("sip:h")
                },
                "--caller-name",
            ),
            (
                CallOptions {
                    duration: Some(0.0),
                    ..opts("sip:h")
                },
                "--duration",
            ),
            (
                CallOptions {
                    duration: Some(f64::NAN),
                    ..opts("sip:h")
                },
                "--duration",
            ),
            (
                CallOptions {
                    calls: 0,
                    ..opts("sip:h")
                },
                "--calls",
            ),
            (
                CallOptions {
                    rate: 0.0,
                    ..opts("sip:h")
                },
                "--rate",
            ),
            (
                CallOptions {
                    left: Some("a.wav".into()),
                    ..opts("sip:h")
                },
                "--left and --right",
            ),
        ];
        for (o, needle) in cases {
            let e = o.clone().validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{o:?}: {e}");
        }
    }

    #[test]
    fn defaults_validate_to_one_udp_pcmu_tone_call() {
        let c = opts("sip:127.0.0.1:5060").validate().unwrap();
        assert_eq!(c.transport, Transport::Udp);
        assert_eq!(c.codec, G711::Pcmu);
        assert_eq!(c.audio, AudioSource::Tones);
        assert_eq!((c.calls, c.duration), (1, None));
        let c = CallOptions {
            transport: "TCP".into(),
            codec: "PCMA".into(),
            ..opts("sip:h")
        }
        .validate()
        .unwrap();
        assert_eq!((c.transport, c.codec), (Transport::Tcp, G711::Pcma));
    }
}
