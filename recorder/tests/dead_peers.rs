//! Sources that vanish without a BYE: the recorder's SIP server and session layer, with a call
//! source over real UDP (SIP and RTP), recording into a spool, storage and a database on both
//! backends. Each way a dead session is found must end it with a BYE to the source and commit
//! the recording with its stop reason: no RTP for the media timeout, a session timer the
//! source asked for and did not refresh, an in-dialog OPTIONS answered 481. A held call is no
//! dead session. Timeouts are configured short; every wait is a poll with a deadline.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use callvault_config::rules::Rules;
use callvault_recorder::call::CallContext;
use callvault_recorder::commit::{Backoff, Committer, DbSlot, StorageSlot, StorageSpec};
use callvault_recorder::media::{OpusConfig, g711};
use callvault_recorder::metrics::Metrics;
use callvault_recorder::ports::PortPool;
use callvault_recorder::sdp;
use callvault_recorder::session::{Recorder, SessionSettings};
use callvault_recorder::sip::server::{ServerConfig, SipServer};
use callvault_recorder::sip::transaction::Timers;
use callvault_recorder::sip::{self, SipMessage};
use callvault_recorder::spool::Spool;
use callvault_store::db::testing::TestDb;
use callvault_store::db::{Recording, RecordingStatus, ReleaseCause};
use callvault_store::format::decrypt_stream;
use callvault_store::keys::{KeyRing, PrivateKey};
use callvault_store::objstore::{self, Credentials, Storage};
use common::{OUT, read_ogg_opus, rtp};
use tokio::net::UdpSocket;

callvault_store::on_both_backends!(
    media_timeout_ends_a_silent_call_and_commits_it,
    a_held_call_outlives_the_media_timeout,
    an_unrefreshed_session_timer_ends_the_session,
    a_probe_answered_481_ends_the_session,
    a_probe_left_unanswered_ends_the_session,
);

const TENANT: &str = "default";

/// What a rig's recorder checks: media timeout, OPTIONS probe interval, smallest session
/// interval (the RFC's 90 s is lowered so a test takes seconds).
#[derive(Debug, Clone, Copy)]
struct Checks {
    media_timeout: Option<Duration>,
    probe: Option<Duration>,
    min_se: Duration,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            media_timeout: None,
            probe: None,
            min_se: Duration::from_secs(90),
        }
    }
}

fn private_key() -> PrivateKey {
    static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).unwrap())
        .clone()
}

/// Each rig gets its own RTP ports so tests running side by side never share one.
fn rtp_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst) % 16;
    let start = 16000 + (std::process::id() as u16 % 50) * 160 + n * 10;
    (start, start + 9)
}

/// A recorder (SIP server and session layer) with everything it records into.
struct Rig {
    _dir: tempfile::TempDir,
    db: TestDb,
    storage: Storage,
    committer: Committer,
    metrics: Arc<Metrics>,
    recorder: Arc<Recorder>,
    server: SipServer<Recorder>,
}

impl Rig {
    async fn new(db: TestDb, checks: Checks) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let key = private_key();
        std::fs::create_dir(dir.path().join("storage")).unwrap();
        let storage_config: callvault_store::objstore::StorageConfig =
            serde_json::from_value(serde_json::json!({
                "type": "filesystem",
                "path": dir.path().join("storage"),
            }))
            .unwrap();
        let storage = objstore::open(&storage_config, &Credentials::none()).unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let slot = Arc::new(DbSlot::connected(db.db.clone()));
        let spec = StorageSpec {
            target: "vault".to_owned(),
            config: storage_config.clone(),
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
            chunk_size: 8 * 1024,
            max_duration: Duration::from_secs(3600),
            spool,
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
            media_timeout: checks.media_timeout,
            options_probe: checks.probe,
            created: None,
            srtp: sdp::SrtpPolicy::Preferred,
            channels: Default::default(),
        };
        let recorder = Arc::new(Recorder::new(settings, ctx));
        let server = SipServer::start(
            ServerConfig {
                bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                // Timer F (64*T1) is 6.4 s: an unanswered request gives up within a test.
                timers: Timers {
                    t1: Duration::from_millis(100),
                    t2: Duration::from_millis(400),
                },
                min_session_expires: checks.min_se,
                ..ServerConfig::default()
            },
            recorder.clone(),
        )
        .await
        .unwrap();
        Rig {
            _dir: dir,
            db,
            storage,
            committer,
            metrics,
            recorder,
            server,
        }
    }

    /// Waits for the one committed recording and returns its row and the seconds of audio
    /// its file holds.
    async fn committed(&self) -> (Recording, f64) {
        assert!(self.committer.wait_idle(Duration::from_secs(30)).await);
        let rows = self
            .db
            .db
            .recordings_to_archive(TENANT, "none", 10)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "one recording: {rows:?}");
        let row = rows.into_iter().next().unwrap();
        let data = self
            .storage
            .get(row.object_key.as_deref().unwrap())
            .await
            .unwrap();
        let mut ring = KeyRing::new();
        ring.insert(private_key());
        let mut ogg = Vec::new();
        decrypt_stream(&data[..], &ring, &mut ogg).unwrap();
        let audio = read_ogg_opus(&ogg).pcm[0].len() as f64 / OUT;
        (row, audio)
    }

    fn ended(&self, reason: &str) -> u64 {
        let text = self.metrics.render(4, false, true);
        let line = format!("callvault_recorder_sessions_ended_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.parse().unwrap())
    }
}

/// A call source: SIP over its own UDP socket, RTP from another.
struct Source {
    sip: UdpSocket,
    media: UdpSocket,
    recorder: SocketAddr,
    call_id: String,
    cseq: u32,
    /// The recorder's To (with its tag) once answered.
    to: String,
    /// Where the answer asked for RTP.
    rtp_to: Option<SocketAddr>,
    seq: u16,
    /// Via branch of the last request: an ACK of a non-2xx answer is in its transaction.
    branch: String,
}

impl Source {
    async fn new(recorder: SocketAddr) -> Source {
        Source {
            sip: UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap(),
            media: UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap(),
            recorder,
            call_id: format!("{}@src.example", uuid::Uuid::new_v4().simple()),
            cseq: 0,
            to: "<sip:recorder@127.0.0.1>".to_owned(),
            rtp_to: None,
            seq: 0,
            branch: String::new(),
        }
    }

    fn sdp(&self, direction: &str, version: u32) -> String {
        let media = self.media.local_addr().unwrap();
        format!(
            "v=0\r\no=src 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n",
            media.port()
        )
    }

    /// Sends a request of the dialog (`method` with `headers` and an optional SDP body) and
    /// returns its final response.
    async fn request(&mut self, method: &str, headers: &str, sdp: Option<String>) -> SipMessage {
        self.cseq += 1;
        self.branch = uuid::Uuid::new_v4().simple().to_string();
        let local = self.sip.local_addr().unwrap();
        let body = sdp.unwrap_or_default();
        let content_type = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        let text = format!(
            "{method} sip:recorder@{rec} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             From: <sip:4021@src.example>;tag=src-tag\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:src@{local}>\r\nMax-Forwards: 70\r\n{headers}\
             {content_type}Content-Length: {len}\r\n\r\n{body}",
            rec = self.recorder,
            branch = self.branch,
            to = self.to,
            call_id = self.call_id,
            cseq = self.cseq,
            len = body.len(),
        );
        self.sip
            .send_to(text.as_bytes(), self.recorder)
            .await
            .unwrap();
        loop {
            let msg = self.recv(Duration::from_secs(10)).await;
            match msg.status() {
                Some(s) if s >= 200 => {
                    if method == "INVITE" {
                        self.ack(&msg).await;
                    }
                    return msg;
                }
                Some(_) => {}
                None => panic!("a request while waiting for a response: {msg:?}"),
            }
        }
    }

    async fn ack(&mut self, resp: &SipMessage) {
        let status = resp.status().unwrap();
        if status == 200 {
            self.to = resp.headers.get("To").unwrap().to_owned();
            let answer = sdp::parse(&resp.body).unwrap();
            self.rtp_to = Some(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                answer.media[0].port,
            )));
        }
        let local = self.sip.local_addr().unwrap();
        let branch = if status == 200 {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            self.branch.clone()
        };
        let text = format!(
            "ACK sip:recorder@{rec} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             From: <sip:4021@src.example>;tag=src-tag\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            rec = self.recorder,
            to = resp.headers.get("To").unwrap(),
            call_id = self.call_id,
            cseq = self.cseq,
        );
        self.sip
            .send_to(text.as_bytes(), self.recorder)
            .await
            .unwrap();
    }

    async fn recv(&self, limit: Duration) -> SipMessage {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = tokio::time::timeout(limit, self.sip.recv_from(&mut buf))
            .await
            .expect("no SIP message from the recorder")
            .unwrap();
        sip::parse_datagram(&buf[..n]).unwrap()
    }

    /// The next request of the recorder (responses to earlier requests are skipped).
    async fn next_request(&self, limit: Duration) -> SipMessage {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(left).await;
            if msg.is_request() {
                return msg;
            }
        }
    }

    async fn respond(&self, req: &SipMessage, status: u16, reason: &str) {
        let resp = req.response(status, reason, "src-tag").unwrap();
        self.sip
            .send_to(&resp.to_bytes(), self.recorder)
            .await
            .unwrap();
    }

    /// Sends `packets` of 20 ms of a tone, paced as a source sends them.
    async fn talk(&mut self, packets: u16) {
        let to = self.rtp_to.expect("answered");
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..packets {
            tick.tick().await;
            let payload: Vec<u8> = (0..160u32)
                .map(|i| {
                    let t = f64::from(u32::from(self.seq) * 160 + i) / 8000.0;
                    g711::encode_ulaw(
                        (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16,
                    )
                })
                .collect();
            let packet = rtp(0, self.seq, u32::from(self.seq) * 160, 0x5eed, &payload);
            self.media.send_to(&packet, to).await.unwrap();
            self.seq = self.seq.wrapping_add(1);
        }
    }
}

/// The BYE the recorder ends a session with, answered 200; its Reason.
async fn bye_from_recorder(source: &Source, limit: Duration) -> String {
    let bye = source.next_request(limit).await;
    assert_eq!(
        bye.method().map(ToString::to_string).as_deref(),
        Some("BYE")
    );
    source.respond(&bye, 200, "OK").await;
    bye.headers.get("Reason").unwrap_or_default().to_owned()
}

/// Polls until the recorder has no session left.
async fn no_sessions(rig: &Rig) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.recorder.active_sessions() > 0 || rig.server.live_dialogs() > 0 {
        assert!(Instant::now() < deadline, "sessions still live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 1 s of audio, then the source goes silent without a BYE: after the 1 s media timeout the
/// recorder sends the BYE, and the recording holds the call until then (2 s: the audio and
/// the silence the recorder waited for), committed complete with stop reason media-timeout.
async fn media_timeout_ends_a_silent_call_and_commits_it(db: TestDb) {
    let rig = Rig::new(
        db,
        Checks {
            media_timeout: Some(Duration::from_secs(1)),
            ..Checks::default()
        },
    )
    .await;
    let mut source = Source::new(rig.server.udp_addr().expect("UDP listens")).await;
    let sdp = source.sdp("sendonly", 1);
    let answer = source.request("INVITE", "", Some(sdp)).await;
    assert_eq!(answer.status(), Some(200));
    let started = Instant::now();
    source.talk(50).await;
    let reason = bye_from_recorder(&source, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(reason.contains("media timeout"), "BYE Reason {reason:?}");
    assert!(
        waited >= Duration::from_millis(1900),
        "ended {waited:?} after the answer: before the timeout ran out"
    );
    no_sessions(&rig).await;
    let (row, audio) = rig.committed().await;
    assert_eq!(row.status, RecordingStatus::Available, "{row:?}");
    assert_eq!(row.stop_reason.as_deref(), Some("media-timeout"));
    assert_eq!(row.release_cause, Some(ReleaseCause::Failure));
    let session = (row.end_time.unwrap() - row.start_time) as f64 / 1e6;
    assert!(
        (audio - session).abs() <= 0.020,
        "the recording holds {audio:.3} s, its row says {session:.3} s"
    );
    assert!(
        (1.9..2.6).contains(&session),
        "1 s of audio and the 1 s timeout: {session:.3} s"
    );
    assert_eq!(rig.ended("media-timeout"), 1);
}

/// A source that holds the call (re-INVITE, a=inactive) sends no media, and that is no
/// inactivity: the call outlives three media timeouts on hold, resumes, and ends with the
/// source's own BYE as an ordinary recording.
async fn a_held_call_outlives_the_media_timeout(db: TestDb) {
    let rig = Rig::new(
        db,
        Checks {
            media_timeout: Some(Duration::from_secs(1)),
            ..Checks::default()
        },
    )
    .await;
    let mut source = Source::new(rig.server.udp_addr().expect("UDP listens")).await;
    let sdp = source.sdp("sendonly", 1);
    assert_eq!(
        source.request("INVITE", "", Some(sdp)).await.status(),
        Some(200)
    );
    source.talk(25).await;
    let hold = source.sdp("inactive", 2);
    assert_eq!(
        source.request("INVITE", "", Some(hold)).await.status(),
        Some(200)
    );
    // Nothing may come from the recorder while the call is held.
    let mut buf = [0u8; 2048];
    let quiet = tokio::time::timeout(Duration::from_secs(3), source.sip.recv_from(&mut buf)).await;
    assert!(
        quiet.is_err(),
        "the recorder sent something during the hold: {:?}",
        quiet.map(|r| r.map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned()))
    );
    assert_eq!(rig.recorder.active_sessions(), 1);
    let resume = source.sdp("sendonly", 3);
    assert_eq!(
        source.request("INVITE", "", Some(resume)).await.status(),
        Some(200)
    );
    source.talk(25).await;
    assert_eq!(source.request("BYE", "", None).await.status(), Some(200));
    no_sessions(&rig).await;
    let (row, _) = rig.committed().await;
    assert_eq!(row.status, RecordingStatus::Available);
    assert_eq!(row.stop_reason, None);
    assert_eq!(row.release_cause, Some(ReleaseCause::Normal));
    assert_eq!(rig.ended("media-timeout"), 0);
    assert_eq!(rig.ended("bye"), 1);
}

/// RFC 4028 with a 2 s minimum: an interval below it gets 422 with Min-SE; a 3 s one is
/// answered with the source as refresher. A refresh (UPDATE) moves the end; without another
/// the recorder ends the session a third of the interval early (2 s after the refresh) with
/// a BYE, and the recording says session-timer-expired.
async fn an_unrefreshed_session_timer_ends_the_session(db: TestDb) {
    let rig = Rig::new(
        db,
        Checks {
            min_se: Duration::from_secs(2),
            ..Checks::default()
        },
    )
    .await;
    let mut source = Source::new(rig.server.udp_addr().expect("UDP listens")).await;
    let sdp = source.sdp("sendonly", 1);
    let small = source
        .request(
            "INVITE",
            "Supported: timer\r\nSession-Expires: 1\r\n",
            Some(sdp.clone()),
        )
        .await;
    assert_eq!(small.status(), Some(422));
    assert_eq!(small.headers.get("Min-SE"), Some("2"));
    let ok = source
        .request(
            "INVITE",
            "Supported: timer\r\nSession-Expires: 3\r\nMin-SE: 2\r\n",
            Some(sdp),
        )
        .await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.headers.get("Session-Expires"), Some("3;refresher=uac"));
    assert!(ok.requires("timer"));
    source.talk(50).await;
    let refresh = source
        .request("UPDATE", "Supported: timer\r\nSession-Expires: 3\r\n", None)
        .await;
    assert_eq!(refresh.status(), Some(200));
    assert_eq!(
        refresh.headers.get("Session-Expires"),
        Some("3;refresher=uac")
    );
    let refreshed = Instant::now();
    // The media timeout is off here: only the timer ends the call.
    let reason = bye_from_recorder(&source, Duration::from_secs(10)).await;
    let after = refreshed.elapsed();
    assert!(reason.contains("session timer"), "BYE Reason {reason:?}");
    assert!(
        after >= Duration::from_millis(1900),
        "ended {after:?} after the refresh: the refresh was not taken"
    );
    no_sessions(&rig).await;
    let (row, _) = rig.committed().await;
    assert_eq!(row.status, RecordingStatus::Available);
    assert_eq!(row.stop_reason.as_deref(), Some("session-timer-expired"));
    assert_eq!(rig.ended("session-timer-expired"), 1);
}

/// The recorder probes its source with an in-dialog OPTIONS every second: answered 200 the
/// call goes on; answered 481 (the source lost the dialog) the recorder ends the session with
/// a BYE whose CSeq follows the probe's, and the recording says peer-unreachable.
async fn a_probe_answered_481_ends_the_session(db: TestDb) {
    let rig = Rig::new(
        db,
        Checks {
            probe: Some(Duration::from_secs(1)),
            ..Checks::default()
        },
    )
    .await;
    let mut source = Source::new(rig.server.udp_addr().expect("UDP listens")).await;
    let sdp = source.sdp("sendonly", 1);
    assert_eq!(
        source.request("INVITE", "", Some(sdp)).await.status(),
        Some(200)
    );
    let first = source.next_request(Duration::from_secs(5)).await;
    assert_eq!(
        first.method().map(ToString::to_string).as_deref(),
        Some("OPTIONS")
    );
    assert_eq!(first.call_id().unwrap(), source.call_id);
    assert!(first.to().unwrap().tag() == Some("src-tag"), "{first:?}");
    source.respond(&first, 200, "OK").await;
    let second = source.next_request(Duration::from_secs(5)).await;
    assert_eq!(
        second.method().map(ToString::to_string).as_deref(),
        Some("OPTIONS")
    );
    assert!(second.cseq().unwrap().seq > first.cseq().unwrap().seq);
    assert_eq!(
        rig.recorder.active_sessions(),
        1,
        "a probe answered 200 ends nothing"
    );
    source
        .respond(&second, 481, "Call/Transaction Does Not Exist")
        .await;
    let bye = source.next_request(Duration::from_secs(5)).await;
    assert_eq!(
        bye.method().map(ToString::to_string).as_deref(),
        Some("BYE")
    );
    assert!(bye.cseq().unwrap().seq > second.cseq().unwrap().seq);
    assert!(
        bye.headers
            .get("Reason")
            .is_some_and(|r| r.contains("peer unreachable")),
        "{bye:?}"
    );
    source.respond(&bye, 200, "OK").await;
    no_sessions(&rig).await;
    let (row, _) = rig.committed().await;
    assert_eq!(row.stop_reason.as_deref(), Some("peer-unreachable"));
    assert_eq!(rig.ended("peer-unreachable"), 1);
}

/// A source that answers nothing any more: the probe is retransmitted until Timer F (64*T1,
/// 6.4 s with this rig's T1) and then the session is ended as peer-unreachable.
async fn a_probe_left_unanswered_ends_the_session(db: TestDb) {
    let rig = Rig::new(
        db,
        Checks {
            probe: Some(Duration::from_secs(1)),
            ..Checks::default()
        },
    )
    .await;
    let mut source = Source::new(rig.server.udp_addr().expect("UDP listens")).await;
    let sdp = source.sdp("sendonly", 1);
    assert_eq!(
        source.request("INVITE", "", Some(sdp)).await.status(),
        Some(200)
    );
    let probed = Instant::now();
    let bye = loop {
        let req = source.next_request(Duration::from_secs(15)).await;
        if req.method().map(ToString::to_string).as_deref() == Some("BYE") {
            break req;
        }
        assert_eq!(
            req.method().map(ToString::to_string).as_deref(),
            Some("OPTIONS")
        );
    };
    source.respond(&bye, 200, "OK").await;
    assert!(
        probed.elapsed() >= Duration::from_secs(7),
        "ended {:?} after the answer: before the probe's Timer F",
        probed.elapsed()
    );
    no_sessions(&rig).await;
    let (row, _) = rig.committed().await;
    assert_eq!(row.stop_reason.as_deref(), Some("peer-unreachable"));
    assert_eq!(rig.ended("peer-unreachable"), 1);
}
