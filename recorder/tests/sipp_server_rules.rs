//! Server rules a recording source notices, driven by a hand-written UDP
//! client (sipp cannot script every malformed or out-of-dialog case).
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use callvault_recorder::sip::server::{
    EndReason, Rejection, ServerConfig, SessionHandler, SessionOffer, SipServer,
};
use callvault_recorder::sip::{DialogId, SipMessage, parse_datagram};
use tokio::net::UdpSocket;

#[derive(Debug, Default)]
struct Answering;

impl SessionHandler for Answering {
    async fn offer(&self, _offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        Ok(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=recvonly\r\n".to_vec())
    }
    async fn reoffer(&self, offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        self.offer(offer).await
    }
    async fn ended(&self, _dialog: DialogId, _reason: EndReason) {}
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        Self { sock, server }
    }

    fn request(&self, method: &str, branch: &str, to_tag: &str, cseq: u32, body: &str) -> String {
        let port = self.sock.local_addr().unwrap().port();
        // One call per test client, except the second INVITE of the drain test.
        let call = if branch == "i2" { "second" } else { "first" };
        let to_tag = if to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={to_tag}")
        };
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:rec@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n\
             From: <sip:src@127.0.0.1>;tag=src\r\nTo: <sip:rec@127.0.0.1>{to_tag}\r\nCall-ID: rules-{call}\r\n\
             CSeq: {cseq} {method}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    async fn send(&self, raw: &str) {
        self.sock
            .send_to(raw.as_bytes(), self.server)
            .await
            .unwrap();
    }

    /// Next response other than 100 Trying, within a deadline.
    async fn final_response(&self) -> SipMessage {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, _) =
                tokio::time::timeout(Duration::from_secs(10), self.sock.recv_from(&mut buf))
                    .await
                    .expect("no response within 10 s")
                    .unwrap();
            let msg = parse_datagram(&buf[..n]).unwrap();
            if msg.status() != Some(100) {
                return msg;
            }
        }
    }
}

async fn start() -> SipServer<Answering> {
    let config = ServerConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        retry_after: Duration::from_secs(45),
        ..ServerConfig::default()
    };
    SipServer::start(config, Arc::new(Answering)).await.unwrap()
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=sendonly\r\n";

#[tokio::test]
async fn garbage_and_malformed_requests_do_not_stop_the_server() {
    let server = start().await;
    let c = Client::new(server.udp_addr().expect("UDP listens")).await;
    c.send("\u{0}\u{1}not sip at all").await;
    // CSeq method differs from the request method: answerable, so 400.
    c.send(
        &c.request("OPTIONS", "bad", "", 1, "")
            .replace("1 OPTIONS", "1 INVITE"),
    )
    .await;
    assert_eq!(c.final_response().await.status(), Some(400));
    c.send(&c.request("OPTIONS", "ok", "", 1, "")).await;
    assert_eq!(c.final_response().await.status(), Some(200));
}

#[tokio::test]
async fn out_of_dialog_and_unknown_requests_get_the_rfc_answers() {
    let server = start().await;
    let c = Client::new(server.udp_addr().expect("UDP listens")).await;
    c.send(&c.request("BYE", "b", "nosuch", 2, "")).await;
    assert_eq!(c.final_response().await.status(), Some(481));
    c.send(&c.request("FROBNICATE", "f", "", 1, "")).await;
    let r = c.final_response().await;
    assert_eq!(r.status(), Some(501));
    assert!(r.headers.get("Allow").unwrap().contains("INVITE"));
    c.send(&c.request("REGISTER", "r", "", 1, "")).await;
    assert_eq!(c.final_response().await.status(), Some(405));
}

#[tokio::test]
async fn draining_refuses_new_calls_with_retry_after_and_waits_for_the_live_one() {
    let server = Arc::new(start().await);
    let c = Client::new(server.udp_addr().expect("UDP listens")).await;
    c.send(&c.request("INVITE", "i1", "", 1, SDP)).await;
    let ok = c.final_response().await;
    assert_eq!(ok.status(), Some(200));
    let tag = ok.to().unwrap().tag().unwrap().to_owned();
    c.send(&c.request("ACK", "a1", &tag, 1, "")).await;
    assert_eq!(server.live_dialogs(), 1);

    let drain = tokio::spawn({
        let server = server.clone();
        async move { server.drain(Duration::from_secs(30)).await }
    });
    // Wait until draining is visible, then a new call and a probe get 503.
    while !server.is_draining() {
        tokio::task::yield_now().await;
    }
    c.send(&c.request("INVITE", "i2", "", 1, SDP)).await;
    let r = c.final_response().await;
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.headers.get("Retry-After"), Some("45"));
    c.send(&c.request("OPTIONS", "o", "", 1, "")).await;
    assert_eq!(c.final_response().await.status(), Some(503));
    assert!(
        !drain.is_finished(),
        "drain returned with a call still live"
    );

    // The live call still ends normally, and that completes the drain.
    c.send(&c.request("BYE", "b1", &tag, 2, "")).await;
    assert_eq!(c.final_response().await.status(), Some(200));
    let report = tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.remaining, 0);
}
