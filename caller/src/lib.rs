//! A SIPREC client (the role a session border controller plays, RFC 7866): places recorded test
//! calls against a recorder, one to check an installation or many as the benchmarks' load
//! generator, and reports what happened as a [`Summary`].
//!
//! Pure parts (request building, audio, RTP schedule, statistics) are separate from the thin
//! I/O (`link`, `call`) so they are tested without sockets.

pub mod audio;
pub mod call;
pub mod config;
pub mod error;
pub mod link;
pub mod request;
pub mod rtp;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

pub use audio::Audio;
pub use config::{AudioSource, CallConfig, CallOptions, G711, Party, Target};
pub use error::{AudioError, CallError, ConfigError, SetupError};
pub use stats::Summary;

pub use call::CallOutcome;
pub use request::CallIds;

use call::CallContext;
use link::SipLink;
use stats::{Histogram, group_failures};

/// Length of a tone call when no `--duration` is given.
pub const DEFAULT_TONE_DURATION: Duration = Duration::from_secs(10);

/// Loads the audio the configuration names.
pub fn load_audio(config: &CallConfig) -> Result<Audio, AudioError> {
    match &config.audio {
        AudioSource::Tones => Ok(Audio::tones(config.codec)),
        AudioSource::Wav { left, right } => Audio::from_wavs(left, right, config.codec),
    }
}

/// The target's address: an IP literal, or the first address its name resolves to.
pub async fn resolve(target: &Target) -> Result<SocketAddr, SetupError> {
    let mut addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|source| SetupError::Resolve {
            host: target.host.clone(),
            source,
        })?;
    addrs.next().ok_or_else(|| SetupError::NoAddress {
        host: target.host.clone(),
    })
}

/// Places `config.calls` calls, `config.rate` new ones per second, each held for the call
/// duration, and reports. When `stop` turns true no new call starts and live calls hang up.
pub async fn run(
    config: CallConfig,
    audio: Audio,
    stop: watch::Receiver<bool>,
) -> Result<Summary, SetupError> {
    let remote = resolve(&config.target).await?;
    let link = SipLink::open(config.transport, remote, config.tls.as_ref()).await?;
    let duration = config.duration.unwrap_or(match config.audio {
        AudioSource::Tones => DEFAULT_TONE_DURATION,
        AudioSource::Wav { .. } => audio.length(),
    });
    tracing::info!(
        target = %config.target.uri, %remote, transport = %config.transport,
        calls = config.calls, rate = config.rate, duration_s = duration.as_secs_f64(),
        "placing calls"
    );
    let ctx = Arc::new(CallContext {
        link,
        config,
        audio,
        duration,
    });
    let started = Instant::now();
    let mut calls = JoinSet::new();
    let mut stopped = stop.clone();
    for n in 0..ctx.config.calls {
        let at = started + Duration::from_secs_f64(f64::from(n) / ctx.config.rate);
        tokio::select! {
            () = sleep_until(at) => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        if *stop.borrow() {
            break;
        }
        let ids = CallIds::random(&ctx.link.local().ip());
        let span = tracing::info_span!("call", n, call_id = %ids.call_id);
        calls.spawn(call::place(ctx.clone(), ids, stop.clone()).instrument(span));
    }
    let mut outcomes = Vec::with_capacity(ctx.config.calls as usize);
    while let Some(joined) = calls.join_next().await {
        outcomes.push(joined.unwrap_or_else(|e| CallOutcome {
            error: Some(CallError::RtpSend(format!("call task failed: {e}"))),
            ..CallOutcome::default()
        }));
    }
    Ok(summarise(
        &ctx,
        &outcomes,
        started.elapsed(),
        *stop.borrow(),
    ))
}

/// Places one call with `ids` (chosen by the caller, who can then find its recording by its
/// Call-ID) and says how it went: recording assurance's test call.
pub async fn place_one(
    config: CallConfig,
    audio: Audio,
    ids: CallIds,
) -> Result<CallOutcome, SetupError> {
    let remote = resolve(&config.target).await?;
    let link = SipLink::open(config.transport, remote, config.tls.as_ref()).await?;
    let duration = config.duration.unwrap_or_else(|| audio.length());
    let ctx = Arc::new(CallContext {
        link,
        config,
        audio,
        duration,
    });
    // Never stopped early: the sender lives until the call ends.
    let (_keep, stop) = watch::channel(false);
    let span = tracing::info_span!("call", call_id = %ids.call_id);
    Ok(call::place(ctx, ids, stop).instrument(span).await)
}

fn summarise(
    ctx: &CallContext,
    outcomes: &[CallOutcome],
    elapsed: Duration,
    interrupted: bool,
) -> Summary {
    let mut lateness = Histogram::default();
    let mut answer = Histogram::default();
    for o in outcomes {
        lateness.merge(&o.lateness);
        if let Some(t) = o.answer_time {
            answer.record_duration(t);
        }
    }
    let reasons: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(ToString::to_string))
        .collect();
    let count = |f: fn(&CallOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u32;
    Summary {
        target: ctx.config.target.uri.clone(),
        transport: ctx.config.transport.as_str().to_ascii_lowercase(),
        codec: ctx.config.codec.as_str().to_owned(),
        calls_attempted: outcomes.len() as u32,
        calls_answered: count(|o| o.answered),
        calls_completed: count(|o| o.completed),
        calls_failed: count(|o| o.error.is_some()),
        failures: group_failures(reasons.iter().map(String::as_str)),
        rtp_packets_sent: outcomes.iter().map(|o| o.packets_sent).sum(),
        send_lateness_micros: lateness.summary(),
        answer_time_micros: answer.summary(),
        malformed_messages: ctx.link.malformed(),
        elapsed_seconds: elapsed.as_secs_f64(),
        interrupted,
    }
}
