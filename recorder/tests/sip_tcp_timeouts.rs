//! SIP over TCP against clients that hold connections open: a slow-loris client trickling its
//! messages and a silent one are disconnected, while a source's call on its own connection is
//! answered meanwhile and its connection, quiet for longer than the idle timeout, stays open
//! until the call ends.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use callvault_recorder::sip::server::{
    EndReason, Rejection, ServerConfig, SessionHandler, SessionOffer, SipServer,
};
use callvault_recorder::sip::transport::TcpTimeouts;
use callvault_recorder::sip::{DialogId, Limits, SipMessage, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

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

const TIMEOUTS: TcpTimeouts = TcpTimeouts {
    message: Duration::from_millis(800),
    idle: Duration::from_millis(800),
    write: Duration::from_secs(2),
};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=sendonly\r\n";

fn request(method: &str, call: &str, branch: &str, to_tag: &str, cseq: u32, body: &str) -> String {
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
        "{method} sip:rec@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n\
         From: <sip:src@127.0.0.1>;tag=src\r\nTo: <sip:rec@127.0.0.1>{to_tag}\r\nCall-ID: {call}\r\n\
         CSeq: {cseq} {method}\r\nContact: <sip:src@127.0.0.1:5999;transport=tcp>\r\n{ct}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The next final response on `conn`, within 5 s.
async fn final_response(conn: &mut TcpStream, framer: &mut StreamFramer) -> SipMessage {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(msg) = framer.next_message().unwrap() {
            if msg.status() != Some(100) {
                return msg;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("no response within 5 s")
            .unwrap();
        assert!(n > 0, "the server closed a connection that carries a call");
        framer.push(&buf[..n]);
    }
}

/// Whether the server closed `conn` within `limit` (reads until end of stream or reset).
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_silent_connections_are_closed_and_do_not_hold_up_calls() {
    let config = ServerConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tcp: TIMEOUTS,
        ..ServerConfig::default()
    };
    let server = SipServer::start(config, Arc::new(Answering)).await.unwrap();
    let addr = server.tcp_addr().expect("TCP listens");

    // Twenty clients each trickle an INVITE a byte every 50 ms (it would take 20 s); one more
    // connects and says nothing.
    let trickled = request("INVITE", "loris", "l1", "", 1, SDP);
    let mut lorises = Vec::new();
    for _ in 0..20 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let bytes = trickled.clone().into_bytes();
        lorises.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            for b in bytes {
                pace.tick().await;
                if conn.write_all(&[b]).await.is_err() {
                    break;
                }
            }
            let closed = closed_within(&mut conn, Duration::from_secs(5)).await;
            (closed, started.elapsed())
        }));
    }
    let mut silent = TcpStream::connect(addr).await.unwrap();

    // Meanwhile a source places a call on its own connection and gets it answered.
    let mut source = TcpStream::connect(addr).await.unwrap();
    let mut framer = StreamFramer::new(Limits::default());
    let asked = Instant::now();
    source
        .write_all(request("INVITE", "real", "r1", "", 1, SDP).as_bytes())
        .await
        .unwrap();
    let ok = final_response(&mut source, &mut framer).await;
    assert_eq!(ok.status(), Some(200));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the call waited {:?} behind the slow clients",
        asked.elapsed()
    );
    let tag = ok.to().unwrap().tag().unwrap().to_owned();
    source
        .write_all(request("ACK", "real", "r2", &tag, 1, "").as_bytes())
        .await
        .unwrap();

    assert!(
        closed_within(&mut silent, TIMEOUTS.idle * 4).await,
        "a silent connection stays open"
    );
    for loris in lorises {
        let (closed, after) = loris.await.unwrap();
        assert!(closed, "a slow-loris connection stays open");
        assert!(
            after < TIMEOUTS.message * 4,
            "a slow-loris connection was closed only after {after:?}"
        );
    }

    // A connection opened after the ACK is closed as idle: the source's connection has been
    // quiet for longer than that, but it carries the call, so it is still open and the call
    // ends on it.
    let mut later = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut later, TIMEOUTS.idle * 4).await);
    source
        .write_all(request("BYE", "real", "r3", &tag, 2, "").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        final_response(&mut source, &mut framer).await.status(),
        Some(200)
    );
    assert_eq!(server.live_dialogs(), 0);
}

/// The timeouts are settings applied in place: a connection opened after a change gets the new
/// ones, while one opened before keeps those it opened with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_timeouts_apply_to_connections_opened_after_the_change() {
    let patient = TcpTimeouts {
        idle: Duration::from_secs(60),
        ..TIMEOUTS
    };
    let config = ServerConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tcp: patient,
        ..ServerConfig::default()
    };
    let server = SipServer::start(config, Arc::new(Answering)).await.unwrap();
    let addr = server.tcp_addr().expect("TCP listens");
    let mut before = TcpStream::connect(addr).await.unwrap();
    // The accept loop has taken `before` once it answers a request on it.
    let mut framer = StreamFramer::new(Limits::default());
    before
        .write_all(request("OPTIONS", "probe", "o1", "", 1, "").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        final_response(&mut before, &mut framer).await.status(),
        Some(200)
    );

    server.set_tcp_timeouts(TIMEOUTS);
    let mut after = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut after, TIMEOUTS.idle * 4).await,
        "a silent connection opened after the change stays open"
    );
    assert!(
        !closed_within(&mut before, Duration::from_millis(100)).await,
        "the connection opened before the change lost its timeouts"
    );
}
