//! The SIP server against sipp, an independent SIP implementation playing
//! the recording client (Debian package `sip-tester`), over UDP and TCP.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callvault_recorder::metadata;
use callvault_recorder::sdp::{self, AnswerParams, MediaPlan};
use callvault_recorder::sip::DialogId;
use callvault_recorder::sip::server::{
    EndReason, Rejection, ServerConfig, SessionHandler, SessionOffer, SipServer,
};
use callvault_recorder::sip::transport::Transport;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Seen {
    siprec: bool,
    transport: Transport,
    sdp_labels: Vec<String>,
    /// (label, sender's name) from the rs-metadata.
    metadata_senders: Vec<(String, String)>,
}

/// Records what the server delivered; holds back its answer for user "hold".
#[derive(Debug, Default)]
struct TestHandler {
    offers: Mutex<Vec<Seen>>,
    ended: Mutex<Vec<(DialogId, EndReason)>>,
    changed: Notify,
}

impl SessionHandler for TestHandler {
    async fn offer(&self, offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        if offer
            .request
            .headers
            .get("To")
            .unwrap_or_default()
            .contains("sip:hold@")
        {
            std::future::pending::<()>().await;
        }
        let parsed = sdp::parse(&offer.sdp).map_err(|e| Rejection::new(488, e.to_string()))?;
        let plans = sdp::plan(&parsed, sdp::SrtpPolicy::Preferred);
        let accepted = plans
            .iter()
            .filter(|p| matches!(p, MediaPlan::Accept { .. }))
            .count();
        // Ports P, P+2, ... as sipp's pcap replay expects.
        let ports: Vec<u16> = (0..accepted as u16).map(|i| 40000 + 2 * i).collect();
        let answer = sdp::build_answer(
            &parsed,
            &plans,
            &AnswerParams {
                address: Ipv4Addr::LOCALHOST.into(),
                ports: &ports,
                session_id: 1,
                session_version: 1,
            },
        )
        .map_err(|e| Rejection::new(500, e.to_string()))?;
        let metadata_senders = offer
            .metadata
            .as_deref()
            .map(|xml| {
                let md = metadata::parse(xml).unwrap();
                md.label_senders()
                    .iter()
                    .map(|s| {
                        let name = s.participant.and_then(|p| p.name.clone());
                        (s.label.to_owned(), name.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.offers.lock().unwrap().push(Seen {
            siprec: offer.siprec,
            transport: offer.transport,
            sdp_labels: parsed
                .media
                .iter()
                .filter_map(|m| m.label.clone())
                .collect(),
            metadata_senders,
        });
        self.changed.notify_waiters();
        Ok(answer.into_bytes())
    }

    async fn reoffer(&self, offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        self.offer(offer).await
    }

    async fn ended(&self, dialog: DialogId, reason: EndReason) {
        self.ended.lock().unwrap().push((dialog, reason));
        self.changed.notify_waiters();
    }
}

impl TestHandler {
    /// Waits (bounded) until `done` holds.
    async fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.changed.notified();
            if done(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}");
            }
        }
    }
}

async fn start() -> (SipServer<TestHandler>, Arc<TestHandler>) {
    let handler = Arc::new(TestHandler::default());
    let config = ServerConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ..ServerConfig::default()
    };
    let server = SipServer::start(config, handler.clone()).await.unwrap();
    (server, handler)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs one sipp call of `scenario` against `target` and fails with sipp's
/// own output when it does not complete. The ports handed to sipp were free when picked; when
/// another test took one meanwhile (sipp says it cannot bind), the call is placed again on
/// new ones.
async fn run_sipp(scenario: &str, target: SocketAddr, transport: Transport) {
    for _ in 0..4 {
        let out = sipp_once(scenario, target, transport).await;
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if out.status.success() || !said.contains("Unable to bind") {
            assert!(
                out.status.success(),
                "sipp {scenario} over {transport} failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
    }
    panic!("sipp {scenario} over {transport}: no free port in four tries");
}

async fn sipp_once(
    scenario: &str,
    target: SocketAddr,
    transport: Transport,
) -> std::process::Output {
    let path = format!("{}/../tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let mode = match transport {
        Transport::Udp => "u1",
        Transport::Tcp => "t1",
        // Debian's sipp is built without TLS: TLS calls are placed in tests/sip_tls.rs.
        Transport::Tls => panic!("sipp cannot place TLS calls here"),
    };
    let child = tokio::process::Command::new("sipp")
        .arg(target.to_string())
        .args(["-sf", &path, "-m", "1", "-nostdin", "-timeout", "20s"])
        .args(["-timeout_error", "-t", mode, "-i", "127.0.0.1"])
        .args(["-p", &free_udp_port().to_string()])
        .args(["-mp", &free_udp_port().to_string()])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "sipp is not installed: these tests need the Debian package sip-tester \
             (apt-get install sip-tester)"
        ),
        Err(e) => panic!("cannot start sipp: {e}"),
    };
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("sipp did not exit within 60 s")
        .unwrap()
}

async fn siprec_call(transport: Transport) {
    let (server, handler) = start().await;
    run_sipp(
        "siprec_invite.xml",
        server.udp_addr().expect("UDP listens"),
        transport,
    )
    .await;
    handler
        .wait_until("the BYE to end the session", |h| {
            !h.ended.lock().unwrap().is_empty()
        })
        .await;
    let offers = handler.offers.lock().unwrap().clone();
    assert_eq!(offers.len(), 1, "one session expected: {offers:?}");
    let seen = &offers[0];
    assert!(seen.siprec);
    assert_eq!(seen.transport, transport);
    assert_eq!(seen.sdp_labels, ["1", "2"]);
    assert_eq!(
        seen.metadata_senders,
        [
            ("1".to_owned(), "Alice Agent".to_owned()),
            ("2".to_owned(), "Bob Customer".to_owned())
        ]
    );
    let ended = handler.ended.lock().unwrap().clone();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].1, EndReason::Bye);
    assert_eq!(server.live_dialogs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siprec_call_over_udp_is_answered_with_its_metadata_and_ended_by_bye() {
    siprec_call(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siprec_call_over_tcp_is_answered_with_its_metadata_and_ended_by_bye() {
    siprec_call(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_ping_is_answered_over_udp_and_tcp() {
    let (server, _handler) = start().await;
    run_sipp(
        "options_ping.xml",
        server.udp_addr().expect("UDP listens"),
        Transport::Udp,
    )
    .await;
    run_sipp(
        "options_ping.xml",
        server.tcp_addr().expect("TCP listens"),
        Transport::Tcp,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_gets_200_and_487_and_leaves_no_session() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let (server, handler) = start().await;
        run_sipp(
            "cancel_before_answer.xml",
            server.udp_addr().expect("UDP listens"),
            transport,
        )
        .await;
        assert_eq!(server.live_dialogs(), 0);
        assert!(handler.offers.lock().unwrap().is_empty());
    }
}
