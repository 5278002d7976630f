//! SIP over TLS, checked with an independent TLS implementation: OpenSSL's `s_client` places the
//! requests. TLS 1.2 and 1.3 are served; the answer's Contact says `transport=tls` and carries
//! `+sip.srs`; only TLS listens when only TLS is declared; mutual TLS refuses a source without a
//! certificate from the configured CA; a renewed certificate is served to the next connection
//! without a restart.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callvault_recorder::sip::server::{
    EndReason, Rejection, ServerConfig, SessionHandler, SessionOffer, SipServer,
};
use callvault_recorder::sip::tls::{CA_FILE, CERT_FILE, KEY_FILE, TlsFiles, TlsIdentity};
use callvault_recorder::sip::{DialogId, Limits, SipMessage, StreamFramer};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

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

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files in `dir`
/// (the server's under the Secret's names, the client's as `client.crt`/`client.key`).
fn issue(dir: &Path, server_name: &str) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Test SBC CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(CA_FILE), ca.pem()).unwrap();
    for (name, cert_file, key_file) in [
        (server_name, CERT_FILE, KEY_FILE),
        ("sbc.example", "client.crt", "client.key"),
    ] {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(cert_file), cert.pem()).unwrap();
        std::fs::write(dir.join(key_file), key.serialize_pem()).unwrap();
    }
}

async fn server(dir: &Path, verify_clients: bool) -> SipServer<Answering> {
    let identity = TlsIdentity::new(TlsFiles {
        dir: dir.to_owned(),
        verify_clients,
    })
    .unwrap();
    let config = ServerConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        listen_udp: false,
        listen_tcp: false,
        listen_tls: Some((0, Arc::new(identity))),
        ..ServerConfig::default()
    };
    SipServer::start(config, Arc::new(Answering)).await.unwrap()
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=sendonly\r\n";

fn invite(call: &str) -> String {
    format!(
        "INVITE sip:rec@localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{call}\r\n\
         From: <sip:src@127.0.0.1>;tag=src\r\nTo: <sip:rec@localhost>\r\nCall-ID: {call}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:src@127.0.0.1:5999;transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

/// `openssl s_client` connected to `addr`, trusting `ca.crt` in `dir`, with extra options.
fn s_client(addr: SocketAddr, dir: &Path, extra: &[&str]) -> Child {
    Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(dir.join(CA_FILE))
        .args(["-verify_return_error", "-ign_eof"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl is installed")
}

/// Sends `request` through `client` and returns the first final response, or what the client
/// printed when none came within 10 s (a refused handshake).
async fn exchange(mut client: Child, request: &str) -> Result<(SipMessage, String), String> {
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).await.unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // s_client prints its session summary first; the SIP bytes start at "SIP/2.0".
        if let Some(start) = find(&seen, b"SIP/2.0 ") {
            let mut framer = StreamFramer::new(Limits::default());
            framer.push(&seen[start..]);
            while let Ok(Some(msg)) = framer.next_message() {
                if msg.status() != Some(100) {
                    let summary = String::from_utf8_lossy(&seen[..start]).into_owned();
                    return Ok((msg, summary));
                }
            }
        }
        match tokio::time::timeout_at(deadline, stdout.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => {
                let _ = client.start_kill();
                let mut err = String::new();
                if let Some(mut e) = client.stderr.take() {
                    let _ = e.read_to_string(&mut err).await;
                }
                return Err(format!("{}{err}", String::from_utf8_lossy(&seen)));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_calls_are_answered_with_a_tls_contact_and_only_tls_listens() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "localhost");
    let server = server(dir.path(), false).await;
    assert_eq!(server.udp_addr(), None, "UDP is not declared");
    assert_eq!(server.tcp_addr(), None, "TCP is not declared");
    let addr = server.tls_addr().expect("TLS listens");

    for version in ["-tls1_2", "-tls1_3"] {
        let (resp, summary) = exchange(
            s_client(addr, dir.path(), &[version]),
            &invite(&format!("v{}", &version[4..])),
        )
        .await
        .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(resp.status(), Some(200), "{version}");
        let contact = resp.headers.get("Contact").unwrap();
        assert!(
            contact.contains("transport=tls>") && contact.ends_with(";+sip.srs"),
            "{version}: {contact}"
        );
        assert!(
            contact.contains(&format!(":{}", addr.port())),
            "{version}: in-dialog requests come back to the TLS port: {contact}"
        );
        let protocol = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(summary.contains(protocol), "{version}: {summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_source_without_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "localhost");
    let server = server(dir.path(), true).await;
    let addr = server.tls_addr().unwrap();

    let refused = exchange(s_client(addr, dir.path(), &[]), &invite("anonymous")).await;
    assert!(refused.is_err(), "no client certificate: no answer");

    // A certificate from another CA is refused as well.
    let other = tempfile::tempdir().unwrap();
    issue(other.path(), "localhost");
    let (cert, key) = (
        other.path().join("client.crt"),
        other.path().join("client.key"),
    );
    let args = [
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
    ];
    let foreign = exchange(s_client(addr, dir.path(), &args), &invite("foreign")).await;
    assert!(foreign.is_err(), "a certificate of another CA: no answer");

    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    let args = [
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
    ];
    let (resp, _) = exchange(s_client(addr, dir.path(), &args), &invite("sbc"))
        .await
        .unwrap();
    assert_eq!(resp.status(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_the_next_connection_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "localhost");
    let server = server(dir.path(), false).await;
    let addr = server.tls_addr().unwrap();
    let serial = |summary: &str| {
        summary
            .lines()
            .find(|l| l.contains("-----BEGIN CERTIFICATE-----"))
            .map(|_| {
                summary
                    .split("-----BEGIN CERTIFICATE-----")
                    .nth(1)
                    .unwrap()
                    .to_owned()
            })
            .unwrap()
    };
    let (_, before) = exchange(s_client(addr, dir.path(), &[]), &invite("one"))
        .await
        .unwrap();

    // A renewal (new CA and certificate, as a rotation would write them), newer on disk.
    issue(dir.path(), "localhost");
    let later = SystemTime::now() + Duration::from_secs(2);
    for f in [CERT_FILE, KEY_FILE] {
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(f))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    let (resp, after) = exchange(s_client(addr, dir.path(), &[]), &invite("two"))
        .await
        .expect("the renewed certificate verifies against the new CA");
    assert_eq!(resp.status(), Some(200));
    assert_ne!(serial(&before), serial(&after), "a different certificate");
}
