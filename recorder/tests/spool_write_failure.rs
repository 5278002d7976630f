//! A spool write that fails mid-call (the spool volume full): the recorder must not go on
//! answering for a call it no longer records. The call's source gets a BYE from the recorder,
//! what was written is committed `incomplete` with the error as its stop reason, and the
//! session's capacity is given back. The SIP server, session layer, spool, committer
//! (SQLite, filesystem storage) are the recorder's own; the source is a UDP socket speaking
//! SIP and RTP. The failure itself comes from a test seam ([`Spool::fail_writes_after`]): the
//! spool's media writes fail with "no space left" (`StorageFull`) once a byte budget is used,
//! as a full volume makes them fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use callvault_config::rules::Rules;
use callvault_recorder::call::CallContext;
use callvault_recorder::commit::{Backoff, Committer, DbSlot, StorageSlot, StorageSpec};
use callvault_recorder::media::{OpusConfig, g711};
use callvault_recorder::metrics::Metrics;
use callvault_recorder::ports::PortPool;
use callvault_recorder::sdp;
use callvault_recorder::session::{Recorder, SessionSettings};
use callvault_recorder::sip::server::{ServerConfig, SipServer};
use callvault_recorder::sip::{self, Method, SipMessage};
use callvault_recorder::spool::Spool;
use callvault_store::db::{Db, RecordingStatus};
use callvault_store::format::recover_truncated;
use callvault_store::keys::{KeyRing, PrivateKey};
use callvault_store::objstore::{self, Credentials};
use common::rtp;

const TENANT: &str = "default";
/// Plaintext bytes per encrypted chunk: small, so a few seconds of audio are several chunks.
const CHUNK: u32 = 1024;

fn rtp_range() -> (u16, u16) {
    let start = 31000 + (std::process::id() as u16 % 100) * 20;
    (start, start + 19)
}

/// Receives the next SIP message on `socket`, failing after `limit`.
fn recv_sip(socket: &UdpSocket, limit: Duration) -> SipMessage {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = socket
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no SIP message within {limit:?}: {e}"));
    sip::parse_datagram(&buf[..n]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spool_write_ends_the_call_with_a_bye_and_commits_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(2048).unwrap();
    let db = Db::connect(&format!(
        "sqlite:{}",
        dir.path().join("callvault.db").display()
    ))
    .await
    .unwrap();
    std::fs::create_dir(dir.path().join("storage")).unwrap();
    let storage_config: objstore::StorageConfig = serde_json::from_value(serde_json::json!({
        "type": "filesystem",
        "path": dir.path().join("storage"),
    }))
    .unwrap();
    let storage = objstore::open(&storage_config, &Credentials::none()).unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let metrics = Arc::new(Metrics::default());
    let slot = Arc::new(DbSlot::connected(db.clone()));
    let spec = StorageSpec {
        target: "vault".to_owned(),
        config: storage_config,
        credentials_dir: None,
    };
    let committer = Committer::new(
        spool.clone(),
        Arc::new(StorageSlot::new(spec, Some(storage.clone()))),
        slot.clone(),
        Backoff::default(),
        metrics.clone(),
    );
    let (start, end) = rtp_range();
    let ctx = Arc::new(CallContext {
        tenant: TENANT.to_owned(),
        key: key.public_key().clone(),
        opus: OpusConfig::default(),
        chunk_size: CHUNK,
        max_duration: Duration::from_secs(3600),
        spool: spool.clone(),
        committer: committer.clone(),
        db: slot,
        metrics: metrics.clone(),
        ports: Arc::new(PortPool::new(start, end)),
        encoders: tokio::sync::Semaphore::new(2),
    });
    let settings = SessionSettings {
        profile: "compliance".to_owned(),
        storage_target: "vault".to_owned(),
        key_id: key.id().to_hex(),
        media_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
        capacity: 4,
        fail_closed: true,
        retention_days: 30,
        rules: Rules::parse("allUsers: true").unwrap().validate().unwrap(),
        spool: Default::default(),
        media_timeout: None,
        options_probe: None,
        created: None,
        srtp: sdp::SrtpPolicy::Preferred,
        channels: Default::default(),
    };
    let recorder = Arc::new(Recorder::new(settings, ctx));
    let server = SipServer::start(
        ServerConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..ServerConfig::default()
        },
        recorder.clone(),
    )
    .await
    .unwrap();

    // The file's header and about 15 chunks (some 3.5 s of audio at 32 kbit/s, in Ogg pages
    // of a second) fit; then the volume is "full".
    spool.fail_writes_after(16 * 1024);

    let source = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let media = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let here = source.local_addr().unwrap();
    let sdp_offer = format!(
        "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
        media.local_addr().unwrap().port()
    );
    let invite = format!(
        "INVITE sip:recorder@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {here};branch=z9hG4bK-full-1\r\n\
         From: <sip:4021@src.example>;tag=src-full\r\n\
         To: <sip:recorder@127.0.0.1>\r\n\
         Call-ID: spool-full@src.example\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:src@{here}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp_offer}",
        sdp_offer.len()
    );
    source
        .send_to(invite.as_bytes(), server.udp_addr().expect("UDP listens"))
        .unwrap();
    let ok = loop {
        let m = recv_sip(&source, Duration::from_secs(10));
        if m.status() == Some(200) {
            break m;
        }
        assert_eq!(m.status(), Some(100), "{m:?}");
    };
    let to = ok.headers.get("To").unwrap().to_owned();
    let answered = sdp::parse(&ok.body).unwrap().media[0].port;
    let ack = format!(
        "ACK sip:callvault@{} SIP/2.0\r\nVia: SIP/2.0/UDP {here};branch=z9hG4bK-full-2\r\n\
         From: <sip:4021@src.example>;tag=src-full\r\nTo: {to}\r\n\
         Call-ID: spool-full@src.example\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        server.udp_addr().expect("UDP listens")
    );
    source
        .send_to(ack.as_bytes(), server.udp_addr().expect("UDP listens"))
        .unwrap();

    // The source talks (a 440 Hz tone) until the recorder hangs up, at most 20 s.
    let rtp_to = SocketAddr::from((Ipv4Addr::LOCALHOST, answered));
    let talking = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let talker = {
        let talking = talking.clone();
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            for i in 0..1000u32 {
                if !talking.load(Ordering::SeqCst) {
                    return i;
                }
                pace.tick().await;
                let ts = 160 * i;
                let payload: Vec<u8> = (0..160)
                    .map(|k| {
                        let t = f64::from(ts + k) / 8000.0;
                        g711::encode_ulaw(
                            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16,
                        )
                    })
                    .collect();
                let _ = media.send_to(&rtp(0, i as u16, ts, 0x5151, &payload), rtp_to);
            }
            1000
        })
    };
    let source_rx = source.try_clone().unwrap();
    let bye = tokio::task::spawn_blocking(move || recv_sip(&source_rx, Duration::from_secs(20)))
        .await
        .unwrap();
    talking.store(false, Ordering::SeqCst);
    let sent = talker.await.unwrap();
    assert_eq!(bye.method(), Some(&Method::Bye), "{bye:?}");
    let reason = bye.headers.get("Reason").unwrap_or_default().to_owned();
    assert!(reason.contains("spool write failed"), "{reason}");
    let resp = bye.response(200, "OK", "").unwrap();
    source
        .send_to(&resp.to_bytes(), server.udp_addr().expect("UDP listens"))
        .unwrap();
    assert!(
        sent < 500,
        "the BYE came within seconds of the failure ({sent} packets sent)"
    );

    // The session is over and what was written is committed.
    assert!(committer.wait_idle(Duration::from_secs(30)).await);
    assert_eq!(server.live_dialogs(), 0);
    assert_eq!(
        recorder.active_sessions(),
        0,
        "the session's capacity is back"
    );
    let rows = db.recordings_to_archive(TENANT, "none", 10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.status, RecordingStatus::Incomplete);
    let stop = row.stop_reason.as_deref().unwrap_or_default();
    assert!(
        stop.starts_with("spool write failed at ") && stop.contains("the call was ended"),
        "{stop}"
    );
    assert!(
        stop.contains("(write failed: no storage space)"),
        "the error is named: {stop}"
    );
    assert_eq!(metrics.spool_write_failures.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.commits_incomplete.load(Ordering::SeqCst), 1);

    // The object holds the audio written before the failure, and the row's duration is it.
    let data = storage
        .get(row.object_key.as_deref().unwrap())
        .await
        .unwrap();
    let mut ring = KeyRing::new();
    ring.insert(key.clone());
    let mut ogg = Vec::new();
    recover_truncated(&data[..], &ring, &mut ogg).unwrap();
    assert!(
        ogg.len() >= 2 * CHUNK as usize,
        "{} bytes of Ogg",
        ogg.len()
    );
    let duration = row.end_time.unwrap() - row.start_time;
    assert!(
        (1_000_000..5_000_000).contains(&duration),
        "duration {duration} µs: the audio of the whole pages the whole chunks hold"
    );
    server.shutdown();
}
