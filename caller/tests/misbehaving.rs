//! The client against servers that misbehave in ways sipp cannot be scripted to (garbage,
//! silence, a 200 without SDP, hanging up mid-call): a plain UDP socket in this test plays the
//! server, and the client must report each case clearly, clean up the dialog, and never hang.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callvault_caller::{CallOptions, Summary};
use callvault_recorder::sip::transaction::Timers;
use callvault_recorder::sip::{Method, SipMessage, parse_datagram};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// What the server sends back for one request it received (the list of requests so far given).
type Behaviour = dyn Fn(&SipMessage, &[SipMessage]) -> Vec<Vec<u8>> + Send + Sync;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SipMessage>>>,
}

async fn server(behaviour: Box<Behaviour>) -> Server {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            let Ok(msg) = parse_datagram(&buf[..n]) else {
                continue;
            };
            let replies = {
                let mut seen = log.lock().unwrap();
                seen.push(msg.clone());
                behaviour(&msg, &seen)
            };
            for r in replies {
                socket.send_to(&r, from).await.unwrap();
            }
        }
    });
    Server { addr, seen }
}

impl Server {
    /// Polls until the server has seen `method` (datagrams can still be in flight when the
    /// client returns), with a deadline.
    async fn wait_for(&self, method: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.methods().iter().any(|m| m == method) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never saw {method}: {:?}",
                self.methods()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn methods(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| m.method().map(|m| m.to_string()))
            .collect()
    }
}

const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
    m=audio 9 RTP/AVP 0\r\na=recvonly\r\nm=audio 9 RTP/AVP 0\r\na=recvonly\r\n";

fn reply(req: &SipMessage, status: u16, reason: &str, body: Option<&str>) -> Vec<u8> {
    let mut r = req.response(status, reason, "srs1").unwrap();
    r.headers.push("Contact", "<sip:srs@127.0.0.1>");
    match body {
        Some(b) => r
            .with_body("application/sdp", b.as_bytes().to_vec())
            .to_bytes(),
        None => r.to_bytes(),
    }
}

/// Fast timers so timeouts take a second, not 32.
async fn call(server: &Server, duration: f64, answer_timeout: f64) -> Summary {
    let mut config = CallOptions {
        to: format!("sip:srs@{}", server.addr),
        duration: Some(duration),
        answer_timeout,
        ..CallOptions::default()
    }
    .validate()
    .unwrap();
    config.timers = Timers {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(200),
    };
    let audio = callvault_caller::load_audio(&config).unwrap();
    let (_tx, stop) = watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(20),
        callvault_caller::run(config, audio, stop),
    )
    .await
    .expect("the client hung")
    .unwrap()
}

fn only_failure(s: &Summary) -> &str {
    assert_eq!(s.calls_failed, 1, "{s:#?}");
    assert!(!s.success());
    &s.failures[0].reason
}

#[tokio::test]
async fn garbage_then_silence_is_a_timeout_that_counts_the_garbage_after_retransmitting() {
    let srv = server(Box::new(|req, seen| {
        if req.method() == Some(&Method::Invite) && seen.len() == 1 {
            vec![b"SIP/2.0 200\r\nthis is not SIP\r\n\r\n".to_vec()]
        } else {
            vec![]
        }
    }))
    .await;
    let s = call(&srv, 1.0, 1.0).await;
    let reason = only_failure(&s);
    assert!(
        reason.contains("no final answer to INVITE within 1s"),
        "{reason}"
    );
    assert!(reason.contains("no response at all"), "{reason}");
    assert!(reason.contains("1 malformed"), "{reason}");
    assert_eq!(s.malformed_messages, 1);
    // Timer A: sent at 0, 50, 150, 350 and 750 ms.
    let invites = srv.methods().iter().filter(|m| *m == "INVITE").count();
    assert!((4..=6).contains(&invites), "{invites} INVITEs");
}

#[tokio::test]
async fn ringing_without_answer_times_out_and_cancels() {
    let srv = server(Box::new(|req, _| match req.method() {
        Some(Method::Invite) => vec![reply(req, 180, "Ringing", None)],
        Some(Method::Cancel) => vec![reply(req, 200, "OK", None)],
        _ => vec![],
    }))
    .await;
    let s = call(&srv, 1.0, 0.5).await;
    let reason = only_failure(&s);
    assert!(reason.contains("last response: 180"), "{reason}");
    srv.wait_for("CANCEL").await;
    let methods = srv.methods();
    // A provisional response stops retransmission.
    assert_eq!(
        methods.iter().filter(|m| *m == "INVITE").count(),
        1,
        "{methods:?}"
    );
}

#[tokio::test]
async fn answer_without_sdp_is_reported_and_the_dialog_is_still_hung_up() {
    let srv = server(Box::new(|req, _| match req.method() {
        Some(Method::Invite) => vec![reply(req, 200, "OK", None)],
        Some(Method::Bye) => vec![reply(req, 200, "OK", None)],
        _ => vec![],
    }))
    .await;
    let s = call(&srv, 1.0, 2.0).await;
    let reason = only_failure(&s);
    assert!(reason.contains("carries no SDP answer"), "{reason}");
    assert_eq!(s.calls_answered, 1);
    assert_eq!(s.rtp_packets_sent, 0);
    let methods = srv.methods();
    assert_eq!(methods, ["INVITE", "ACK", "BYE"]);
    let seen = srv.seen.lock().unwrap();
    assert_eq!(
        seen[2].to().unwrap().tag(),
        Some("srs1"),
        "BYE in the dialog"
    );
}

#[tokio::test]
async fn recorder_hanging_up_mid_call_is_answered_and_reported() {
    let srv = server(Box::new(|req, _| match req.method() {
        Some(Method::Invite) => vec![reply(req, 200, "OK", Some(ANSWER))],
        Some(Method::Ack) => {
            // Hang up right away, as a recorder that hit its limit would.
            let mut bye = SipMessage::request(Method::Bye, "sip:callvault@127.0.0.1");
            bye.headers
                .push("Via", "SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKsrsbye");
            bye.headers.push("From", req.headers.get("To").unwrap());
            bye.headers.push("To", req.headers.get("From").unwrap());
            bye.headers.push("Call-ID", req.call_id().unwrap());
            bye.headers.push("CSeq", "1 BYE");
            vec![bye.to_bytes()]
        }
        _ => vec![],
    }))
    .await;
    let s = call(&srv, 5.0, 2.0).await;
    let reason = only_failure(&s);
    assert!(reason.contains("ended the call early"), "{reason}");
    assert!(s.elapsed_seconds < 4.0, "media stopped at the BYE: {s:#?}");
}

#[tokio::test]
async fn bye_without_answer_times_out_after_retransmitting() {
    let srv = server(Box::new(|req, _| match req.method() {
        Some(Method::Invite) => vec![reply(req, 200, "OK", Some(ANSWER))],
        _ => vec![],
    }))
    .await;
    let s = call(&srv, 0.1, 2.0).await;
    let reason = only_failure(&s);
    assert!(reason.contains("no answer to BYE within 3.2s"), "{reason}");
    let byes = srv.methods().iter().filter(|m| *m == "BYE").count();
    // Timer E: 50, 100, 200 ms, then every 200 ms until 3.2 s.
    assert!(byes >= 10, "{byes} BYEs");
}

/// libsrtp (pylibsrtp, recorder/tests/tools/srtp_oracle.py) unprotecting `packets` in order
/// under `key` (base64 of key and salt): `None` where it refused one.
fn libsrtp_unprotect(suite: &str, key: &str, packets: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let python = std::env::var("CALLVAULT_TEST_SRTP_PYTHON").unwrap_or_else(|_| {
        panic!("CALLVAULT_TEST_SRTP_PYTHON is not set: run `source scripts/services.sh; ensure_recorder_test_tools` first")
    });
    let script = format!(
        "{}/../recorder/tests/tools/srtp_oracle.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new(python)
        .args([script.as_str(), "unprotect", suite, key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = packets
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "srtp_oracle.py failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            (l != "-").then(|| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                    .collect()
            })
        })
        .collect()
}

/// `callvault call --srtp` for each suite against a server that answers SRTP: every packet
/// it receives, libsrtp decrypts under the key the INVITE offered, to the audio plain calls send.
#[tokio::test]
async fn srtp_calls_send_what_libsrtp_decrypts_to_the_plain_audio() {
    use callvault_recorder::media::rtp::{Packet, parse};
    use callvault_recorder::sdp;
    use callvault_recorder::srtp::{Crypto, MasterKey, Suite};
    for suite in Suite::ALL {
        let media = [(); 2].map(|_| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
        let ports = media.each_ref().map(|s| s.local_addr().unwrap().port());
        let srv = server(Box::new(move |req, _| match req.method() {
            Some(Method::Invite) => {
                let ours = MasterKey::generate(suite).unwrap();
                let mut answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n".to_owned();
                for port in ports {
                    answer += &format!(
                        "m=audio {port} RTP/SAVP 0\r\na=crypto:1 {suite} inline:{}\r\na=recvonly\r\n",
                        &*ours.inline()
                    );
                }
                vec![reply(req, 200, "OK", Some(&answer))]
            }
            Some(Method::Bye) => vec![reply(req, 200, "OK", None)],
            _ => vec![],
        }))
        .await;
        let mut config = CallOptions {
            to: format!("sip:srs@{}", srv.addr),
            duration: Some(1.0),
            srtp: Some(suite.name().to_owned()),
            ..CallOptions::default()
        }
        .validate()
        .unwrap();
        config.timers = Timers {
            t1: Duration::from_millis(50),
            t2: Duration::from_millis(200),
        };
        let audio = callvault_caller::load_audio(&config).unwrap();
        let (_tx, stop) = watch::channel(false);
        let summary = callvault_caller::run(config, audio.clone(), stop)
            .await
            .unwrap();
        assert!(summary.success(), "{suite}: {summary:#?}");
        assert_eq!(summary.rtp_packets_sent, 100);
        // The offered keys, from the INVITE the server saw.
        let invite = srv.seen.lock().unwrap()[0].clone();
        let body = callvault_recorder::multipart::siprec_body(
            &invite.content_type().unwrap().unwrap(),
            &invite.body,
        )
        .unwrap();
        let offer = sdp::parse(&body.sdp).unwrap();
        for (ch, (socket, m)) in media.iter().zip(&offer.media).enumerate() {
            assert_eq!(m.proto, "RTP/SAVP");
            let (_, value) = m.attributes.iter().find(|(n, _)| n == "crypto").unwrap();
            let key = Crypto::parse(value.as_deref().unwrap()).unwrap().key;
            socket.set_nonblocking(true).unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(n) = socket.recv(&mut buf) {
                received.push(buf[..n].to_vec());
            }
            assert_eq!(received.len(), 50, "{suite}: stream {ch}");
            let clear = libsrtp_unprotect(suite.name(), &key.inline(), &received);
            for (k, packet) in clear.into_iter().enumerate() {
                let packet =
                    packet.unwrap_or_else(|| panic!("{suite}: libsrtp refused packet {k}"));
                let Ok(Packet::Rtp(p)) = parse(&packet) else {
                    panic!("{suite}: not RTP once decrypted");
                };
                assert_eq!(
                    p.payload,
                    audio.payload(ch, k as u64),
                    "{suite}: packet {k}"
                );
            }
        }
    }
}
