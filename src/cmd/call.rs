//! A SIPREC client: places test calls against a recorder, one or many.
//! `callvault call`.
//!
//! Prints a JSON summary on stdout; exits 0 when every call completed, 1 when any failed,
//! 130 when interrupted with Ctrl-C (live calls are hung up first).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use callvault_caller::CallOptions;
use tokio::sync::watch;

/// Options of `callvault call`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recorder: a SIP URI, e.g. sip:127.0.0.1:5060 or sips:recorder.example (also the
    /// INVITE's Request-URI).
    #[arg(long, value_name = "SIP-URI")]
    pub to: String,
    /// SIP transport: udp, tcp or tls (a sips: target needs tls).
    #[arg(long, default_value = "udp")]
    pub transport: String,
    /// TLS: CA certificates (PEM) the recorder's certificate must chain to. Required with tls.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// TLS: this client's certificate chain (PEM), for recorders that verify their sources.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: the name the recorder's certificate must carry [default: the --to host].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// The calling party's number (or sip: URI), as the recording metadata names it.
    #[arg(
        long = "from-number",
        visible_alias = "from",
        default_value = "+15550100001"
    )]
    pub from_number: String,
    /// The called party's number (or sip: URI).
    #[arg(long, default_value = "+15550100002")]
    pub to_number: String,
    /// The calling party's display name.
    #[arg(long, default_value = "Test Caller")]
    pub caller_name: String,
    /// The called party's display name.
    #[arg(long, default_value = "Test Callee")]
    pub callee_name: String,
    /// Seconds of audio per call [default: the WAV files' length, or 10 s of tones].
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// The caller's audio: a mono 16-bit PCM WAV (8 kHz, or resampled to it). Needs --right.
    #[arg(long, value_name = "WAV", requires = "right")]
    pub left: Option<PathBuf>,
    /// The callee's audio: a mono 16-bit PCM WAV. Needs --left.
    #[arg(long, value_name = "WAV", requires = "left")]
    pub right: Option<PathBuf>,
    /// Codec: pcmu (G.711 μ-law) or pcma (A-law).
    #[arg(long, default_value = "pcmu")]
    pub codec: String,
    /// Number of calls to place.
    #[arg(long, default_value_t = 1)]
    pub calls: u32,
    /// New calls per second; calls are held concurrently for their duration.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds to wait for the recorder's final answer to each INVITE.
    #[arg(long, value_name = "SECONDS", default_value_t = 32.0)]
    pub answer_timeout: f64,
    /// Send SRTP of this crypto suite (SDES keys, fresh per stream): AES_CM_128_HMAC_SHA1_80,
    /// AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM or AEAD_AES_256_GCM [default: plain RTP].
    #[arg(long, value_name = "SUITE")]
    pub srtp: Option<String>,
}

const INTERRUPTED: u8 = 130;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = CallOptions {
        to: args.to,
        transport: args.transport,
        from_number: args.from_number,
        to_number: args.to_number,
        caller_name: args.caller_name,
        callee_name: args.callee_name,
        duration: args.duration,
        left: args.left,
        right: args.right,
        codec: args.codec,
        calls: args.calls,
        rate: args.rate,
        answer_timeout: args.answer_timeout,
        srtp: args.srtp,
        tls_ca: args.tls_ca,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_server_name: args.tls_server_name,
    }
    .validate()?;
    let audio = callvault_caller::load_audio(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let interrupted = super::terminated();
        tokio::spawn(async move {
            interrupted.await;
            tracing::warn!("interrupted: no new calls; hanging up the live ones");
            let _ = stop_tx.send(true);
        });
        callvault_caller::run(config, audio, stop).await
    })?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(if summary.interrupted {
        ExitCode::from(INTERRUPTED)
    } else if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
