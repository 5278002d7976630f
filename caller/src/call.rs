//! One call, as a UAC: the INVITE client transaction (retransmitted over UDP, RFC 3261
//! §17.1.1), ACK, paced RTP for the call's duration, and BYE (a non-INVITE client transaction,
//! §17.1.2). The recorder's own requests in the dialog are answered on the way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callvault_recorder::sip::transaction::Timers;
use callvault_recorder::sip::transport::Transport;
use callvault_recorder::sip::{Method, SipMessage};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use callvault_recorder::srtp::{Crypto, MasterKey, Outbound};

use crate::audio::Audio;
use crate::config::CallConfig;
use crate::error::CallError;
use crate::link::SipLink;
use crate::request::{self, CallIds, Dialog, Local, Offer};
use crate::rtp::{self, RtpStream};
use crate::stats::Histogram;

/// What a run shares with each of its calls.
#[derive(Debug)]
pub struct CallContext {
    pub link: SipLink,
    pub config: CallConfig,
    pub audio: Audio,
    pub duration: Duration,
}

/// How one call went.
#[derive(Debug, Default)]
pub struct CallOutcome {
    pub answered: bool,
    pub completed: bool,
    pub error: Option<CallError>,
    pub packets_sent: u64,
    pub lateness: Histogram,
    pub answer_time: Option<Duration>,
}

/// Places one call. `stop` turning true ends the media early (the call still hangs up cleanly).
pub async fn place(
    ctx: Arc<CallContext>,
    ids: CallIds,
    stop: watch::Receiver<bool>,
) -> CallOutcome {
    let mut outcome = CallOutcome::default();
    let rx = ctx.link.register(&ids.call_id);
    let result = run(&ctx, &ids, rx, stop, &mut outcome).await;
    ctx.link.unregister(&ids.call_id);
    match result {
        Ok(()) => {
            outcome.completed = true;
            tracing::info!(packets = outcome.packets_sent, "call completed");
        }
        Err(e) => {
            tracing::warn!(error = %e, "call failed");
            outcome.error = Some(e);
        }
    }
    outcome
}

async fn run(
    ctx: &CallContext,
    ids: &CallIds,
    mut rx: mpsc::UnboundedReceiver<SipMessage>,
    mut stop: watch::Receiver<bool>,
    outcome: &mut CallOutcome,
) -> Result<(), CallError> {
    let link = &ctx.link;
    let cfg = &ctx.config;
    let ip = link.local().ip();
    let mut sockets = Vec::with_capacity(2);
    for _ in 0..2 {
        let s = UdpSocket::bind((ip, 0))
            .await
            .map_err(|e| CallError::RtpSocket(e.to_string()))?;
        sockets.push(Arc::new(s));
    }
    let rtp_addr = |i: usize| {
        sockets[i]
            .local_addr()
            .map_err(|e| CallError::RtpSocket(e.to_string()))
    };
    let local = Local {
        sip: link.local(),
        transport: link.transport(),
        rtp: [rtp_addr(0)?, rtp_addr(1)?],
    };
    // A fresh key per stream and call (RFC 4568 §8.1: keys are never reused).
    let keys = match cfg.srtp {
        Some(suite) => {
            let key = |tag| {
                MasterKey::generate(suite)
                    .map(|key| Crypto { tag, key })
                    .map_err(|e| CallError::Srtp(e.to_string()))
            };
            Some([key(1)?, key(1)?])
        }
        None => None,
    };
    let start_time = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let offer = Offer {
        target: &cfg.target,
        caller: &cfg.caller,
        callee: &cfg.callee,
        codec: cfg.codec,
        ids,
        local,
        start_time: &start_time,
        srtp: keys.as_ref(),
    };
    let invite = request::invite(&offer, &request::new_branch());

    let sent_at = Instant::now();
    let ok = invite_transaction(link, &invite, &mut rx, cfg.timers, cfg.answer_timeout).await?;
    outcome.answered = true;
    outcome.answer_time = Some(sent_at.elapsed());
    let dialog = Dialog::from_2xx(&invite, &ok)?;
    let ack = dialog.request(
        Method::Ack,
        dialog.invite_seq,
        &local,
        &request::new_branch(),
    );
    link.send(&ack).await?;
    tracing::info!(
        answer_ms = sent_at.elapsed().as_millis() as u64,
        "call answered"
    );

    // An answer we cannot send media to still opened a dialog: hang it up before failing.
    let media_result = match request::media_destinations(&ok, cfg.codec, keys.as_ref()) {
        Ok(dests) => {
            let streams = [0, 1].map(|_| RtpStream::random(cfg.codec.payload_type()));
            let media = Media {
                sockets: [sockets[0].clone(), sockets[1].clone()],
                dests,
                streams,
                srtp: keys
                    .as_ref()
                    .map(|k| k.each_ref().map(|c| Outbound::new(&c.key))),
            };
            converse(ctx, media, &ack, &mut rx, &mut stop, outcome).await
        }
        Err(e) => Err(e),
    };
    if matches!(media_result, Err(CallError::EndedByRecorder)) {
        return media_result;
    }
    let bye = dialog.request(
        Method::Bye,
        dialog.invite_seq + 1,
        &local,
        &request::new_branch(),
    );
    let bye_result = bye_transaction(link, &bye, &ack, &mut rx, cfg.timers).await;
    media_result.and(bye_result)
}

/// The INVITE client transaction: returns the 2xx, or why there was none. Non-2xx finals are
/// ACKed here, as the transaction requires.
async fn invite_transaction(
    link: &SipLink,
    invite: &SipMessage,
    rx: &mut mpsc::UnboundedReceiver<SipMessage>,
    timers: Timers,
    answer_timeout: Duration,
) -> Result<SipMessage, CallError> {
    let branch = invite
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
        .unwrap_or_default();
    link.send(invite).await?;
    let deadline = Instant::now() + answer_timeout;
    let udp = link.transport() == Transport::Udp;
    let mut interval = timers.t1;
    let mut next_retransmit = Instant::now() + interval;
    let mut provisional: Option<u16> = None;
    loop {
        let retransmitting = udp && provisional.is_none();
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    return Err(closed(link));
                };
                if !is_response_to(&msg, &Method::Invite, &branch) {
                    answer_stray(link, &msg).await;
                    continue;
                }
                let status = msg.status().unwrap_or_default();
                match status {
                    100..=199 => {
                        tracing::debug!(status, "provisional response");
                        provisional = Some(status);
                    }
                    200..=299 => return Ok(msg),
                    _ => {
                        link.send(&request::ack_failure(invite, &msg)).await?;
                        return Err(CallError::Refused {
                            status,
                            reason: reason_phrase(&msg),
                            detail: request::refusal_detail(&msg),
                        });
                    }
                }
            }
            _ = sleep_until(next_retransmit), if retransmitting => {
                // Timer A: T1, doubling, until a response or Timer B.
                link.send(invite).await?;
                interval = interval.saturating_mul(2);
                next_retransmit = Instant::now() + interval;
            }
            _ = sleep_until(deadline) => {
                if provisional.is_some() {
                    // The recorder is alive but never answered: cancel (RFC 3261 §9.1).
                    let _ = link.send(&cancel(invite)).await;
                }
                return Err(CallError::InviteTimeout {
                    waited: answer_timeout,
                    provisional,
                    malformed: link.malformed(),
                });
            }
        }
    }
}

/// CANCEL for a pending INVITE: same Request-URI, Via, From, To, Call-ID and CSeq number.
fn cancel(invite: &SipMessage) -> SipMessage {
    let mut m = invite.clone();
    if let callvault_recorder::sip::StartLine::Request { method, .. } = &mut m.start {
        *method = Method::Cancel;
    }
    m.body.clear();
    for h in [
        "Content-Type",
        "Require",
        "Contact",
        "Accept",
        "Allow",
        "User-Agent",
    ] {
        m.headers.remove(h);
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    m.headers.set("CSeq", format!("{seq} CANCEL"));
    m
}

fn reason_phrase(msg: &SipMessage) -> String {
    match &msg.start {
        callvault_recorder::sip::StartLine::Response { reason, .. } => {
            reason.chars().take(120).collect()
        }
        callvault_recorder::sip::StartLine::Request { .. } => String::new(),
    }
}

fn closed(link: &SipLink) -> CallError {
    CallError::LinkClosed(
        link.closed_reason()
            .unwrap_or_else(|| "connection closed".to_owned()),
    )
}

fn is_response_to(msg: &SipMessage, method: &Method, branch: &str) -> bool {
    msg.status().is_some()
        && msg.cseq().is_ok_and(|c| &c.method == method)
        && msg
            .top_via()
            .ok()
            .is_some_and(|v| v.branch() == Some(branch))
}

/// Answers a request of the recorder's that the current phase does not expect.
async fn answer_stray(link: &SipLink, msg: &SipMessage) {
    let (status, reason) = match msg.method() {
        None | Some(Method::Ack) => return,
        Some(Method::Options) => (200, "OK"),
        Some(Method::Invite | Method::Update) => (488, "Not Acceptable Here"),
        Some(Method::Bye) => (200, "OK"),
        Some(_) => (501, "Not Implemented"),
    };
    if let Ok(resp) = msg.response(status, reason, "") {
        let _ = link.send(&resp).await;
    }
}

#[derive(Debug)]
struct Media {
    sockets: [Arc<UdpSocket>; 2],
    dests: [SocketAddr; 2],
    streams: [RtpStream; 2],
    /// Per stream, its SRTP protection.
    srtp: Option<[Outbound; 2]>,
}

/// The call itself: RTP on both streams for the call's duration, while answering the
/// recorder's requests and re-sending ACK if the 2xx is retransmitted (our ACK was lost).
async fn converse(
    ctx: &CallContext,
    media: Media,
    ack: &SipMessage,
    rx: &mut mpsc::UnboundedReceiver<SipMessage>,
    stop: &mut watch::Receiver<bool>,
    outcome: &mut CallOutcome,
) -> Result<(), CallError> {
    let (end_tx, end_rx) = watch::channel(false);
    let packets = rtp::packet_count(ctx.duration);
    let audio = ctx.audio.clone();
    let mut sender = tokio::spawn(send_media(media, audio, packets, end_rx));
    let stopped = async {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let mut ended_by_recorder = false;
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            r = &mut sender => {
                break r.unwrap_or_else(|e| MediaResult {
                    error: Some(CallError::RtpSend(e.to_string())),
                    ..MediaResult::default()
                });
            }
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    let _ = end_tx.send(true);
                    let _ = (&mut sender).await;
                    return Err(closed(&ctx.link));
                };
                if msg.status().is_some_and(|s| (200..300).contains(&s))
                    && msg.cseq().is_ok_and(|c| c.method == Method::Invite)
                {
                    ctx.link.send(ack).await?;
                } else if msg.method() == Some(&Method::Bye) {
                    answer_stray(&ctx.link, &msg).await;
                    ended_by_recorder = true;
                    let _ = end_tx.send(true);
                } else {
                    answer_stray(&ctx.link, &msg).await;
                }
            }
            () = &mut stopped, if !stopping => {
                stopping = true;
                let _ = end_tx.send(true);
            }
        }
    };
    outcome.packets_sent = result.packets;
    outcome.lateness = result.lateness;
    if let Some(e) = result.error {
        return Err(e);
    }
    if ended_by_recorder {
        return Err(CallError::EndedByRecorder);
    }
    Ok(())
}

#[derive(Debug, Default)]
struct MediaResult {
    /// Packets sent, counting each stream's packet.
    packets: u64,
    lateness: Histogram,
    error: Option<CallError>,
}

/// Sends `packets` ticks of both streams on the fixed 20 ms schedule, until done or `end`.
async fn send_media(
    mut media: Media,
    audio: Audio,
    packets: u64,
    mut end: watch::Receiver<bool>,
) -> MediaResult {
    let mut r = MediaResult::default();
    let mut buf = Vec::with_capacity(256);
    let start = Instant::now();
    for k in 0..packets {
        tokio::select! {
            () = sleep_until(start + rtp::due(k)) => {}
            _ = end.wait_for(|e| *e) => break,
        }
        r.lateness
            .record_duration(rtp::lateness(rtp::due(k), start.elapsed()));
        for ch in 0..2 {
            media.streams[ch].packet(k, audio.payload(ch, k), &mut buf);
            if let Some(srtp) = media.srtp.as_mut() {
                match srtp[ch].protect_rtp(&buf) {
                    Ok(protected) => buf = protected,
                    Err(e) => {
                        r.error = Some(CallError::Srtp(e.to_string()));
                        return r;
                    }
                }
            }
            if let Err(e) = media.sockets[ch].send_to(&buf, media.dests[ch]).await {
                r.error = Some(CallError::RtpSend(format!("to {}: {e}", media.dests[ch])));
                return r;
            }
            r.packets += 1;
        }
    }
    r
}

/// The BYE client transaction: Timer E retransmits over UDP (T1 doubling up to T2), Timer F
/// gives up after 64×T1.
async fn bye_transaction(
    link: &SipLink,
    bye: &SipMessage,
    ack: &SipMessage,
    rx: &mut mpsc::UnboundedReceiver<SipMessage>,
    timers: Timers,
) -> Result<(), CallError> {
    let branch = bye
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
        .unwrap_or_default();
    link.send(bye).await?;
    let udp = link.transport() == Transport::Udp;
    let deadline = Instant::now() + timers.timeout();
    let mut interval = timers.t1;
    let mut next_retransmit = Instant::now() + interval;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    return Err(closed(link));
                };
                if is_response_to(&msg, &Method::Bye, &branch) {
                    match msg.status().unwrap_or_default() {
                        100..=199 => {}
                        200..=299 => return Ok(()),
                        status => {
                            return Err(CallError::ByeRefused {
                                status,
                                reason: reason_phrase(&msg),
                            });
                        }
                    }
                } else if msg.status().is_some_and(|s| (200..300).contains(&s))
                    && msg.cseq().is_ok_and(|c| c.method == Method::Invite)
                {
                    link.send(ack).await?;
                } else if msg.method() == Some(&Method::Bye) {
                    // Both ends hung up at once: the dialog is over either way.
                    answer_stray(link, &msg).await;
                    return Ok(());
                } else {
                    answer_stray(link, &msg).await;
                }
            }
            _ = sleep_until(next_retransmit), if udp => {
                link.send(bye).await?;
                interval = interval.saturating_mul(2).min(timers.t2);
                next_retransmit = Instant::now() + interval;
            }
            _ = sleep_until(deadline) => {
                return Err(CallError::ByeTimeout {
                    waited: timers.timeout(),
                    malformed: link.malformed(),
                });
            }
        }
    }
}
