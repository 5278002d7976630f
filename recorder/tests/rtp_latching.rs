//! RTP latching and SRTP on the recorder's real media path: the session layer answers an offer,
//! the call reads its UDP sockets, records, seals and commits (SQLite, filesystem storage), and
//! the committed recording is decrypted and decoded. The genuine source sends a 440 Hz tone;
//! what an attacker injects is a 2 kHz tone. Each attack must leave the recording as a run
//! without it: the same length, the genuine tone in every 100 ms with the same level, no
//! foreign tone. SRTP sources are libsrtp (`CALLVAULT_TEST_SRTP_PYTHON`, set up by
//! `ensure_recorder_test_tools`), and their attackers send from the genuine address itself.
#![allow(clippy::unwrap_used)]

mod common;

use std::f64::consts::PI;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use callvault_config::rules::Rules;
use callvault_recorder::call::{CallContext, FOREIGN_ALARM, FOREIGN_ALARM_THRESHOLD};
use callvault_recorder::commit::{Backoff, Committer, DbSlot, StorageSlot, StorageSpec};
use callvault_recorder::media::{OpusConfig, g711};
use callvault_recorder::metrics::Metrics;
use callvault_recorder::ports::PortPool;
use callvault_recorder::sdp;
use callvault_recorder::session::{Recorder, SessionSettings};
use callvault_recorder::sip::server::{EndReason, Hangup, Rejection, SessionHandler, SessionOffer};
use callvault_recorder::sip::transport::Transport;
use callvault_recorder::sip::{self, DialogId};
use callvault_recorder::spool::Spool;
use callvault_recorder::srtp::{Crypto, MasterKey, Suite};
use callvault_store::db::Db;
use callvault_store::format::decrypt_stream;
use callvault_store::keys::{KeyRing, PrivateKey};
use callvault_store::objstore::{self, Credentials, Storage};
use common::{OUT, correlation, onset, read_ogg_opus, rms, rtp};

const GENUINE_HZ: f64 = 440.0;
const FOREIGN_HZ: f64 = 2000.0;
/// The genuine source's packets (20 ms each): a 3 s call.
const PACKETS: u32 = 150;
/// Attacks run during packets 40..90 (0.8 s to 1.8 s into the call).
const ATTACK: std::ops::Range<u32> = 40..90;
const TENANT: &str = "default";

/// One PCMU packet's payload of a tone, at sample `n` of the source's clock.
fn tone(hz: f64, n: u32) -> Vec<u8> {
    (0..160)
        .map(|i| {
            let t = f64::from(n + i) / 8000.0;
            g711::encode_ulaw((8000.0 * (2.0 * PI * hz * t).sin()) as i16)
        })
        .collect()
}

/// A recorder's session layer with everything it records into.
struct Rig {
    _dir: tempfile::TempDir,
    key: PrivateKey,
    db: Db,
    storage: Storage,
    committer: Committer,
    metrics: Arc<Metrics>,
    recorder: Recorder,
}

fn private_key() -> PrivateKey {
    static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).unwrap())
        .clone()
}

/// Each rig gets its own RTP ports so tests running side by side never share one.
fn rtp_range() -> (u16, u16) {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let start = 24000 + (std::process::id() as u16 % 50) * 120 + n * 10;
    (start, start + 9)
}

impl Rig {
    async fn new() -> Rig {
        Rig::with_srtp(sdp::SrtpPolicy::Preferred).await
    }

    async fn with_srtp(srtp: sdp::SrtpPolicy) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let key = private_key();
        let db = Db::connect(&format!(
            "sqlite:{}",
            dir.path().join("callvault.db").display()
        ))
        .await
        .unwrap();
        std::fs::create_dir(dir.path().join("storage")).unwrap();
        let storage_config = serde_json::from_value(serde_json::json!({
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
            media_timeout: None,
            options_probe: None,
            created: None,
            srtp,
            channels: Default::default(),
        };
        Rig {
            _dir: dir,
            key,
            db,
            storage,
            committer,
            metrics,
            recorder: Recorder::new(settings, ctx),
        }
    }

    /// Offers (or re-offers) one PCMU stream whose SDP names `media`; returns the port the
    /// recorder answered.
    async fn offer(&self, dialog: &DialogId, media: SocketAddr, version: u32) -> u16 {
        let answer = self
            .offer_sdp(dialog, media, version, "RTP/AVP", "")
            .await
            .unwrap();
        sdp::parse(&answer).unwrap().media[0].port
    }

    /// Offers one PCMU stream of `proto` with `attributes` (whole `a=` lines); returns the
    /// answer or the rejection.
    async fn offer_sdp(
        &self,
        dialog: &DialogId,
        media: SocketAddr,
        version: u32,
        proto: &str,
        attributes: &str,
    ) -> Result<Vec<u8>, Rejection> {
        let sdp = format!(
            "v=0\r\no=src 1 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{attributes}a=sendonly\r\n",
            ip = media.ip(),
            port = media.port(),
        );
        let invite = format!(
            "INVITE sip:recorder@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{version}\r\n\
             From: <sip:4021@src.example>;tag={}\r\n\
             To: <sip:recorder@127.0.0.1>\r\n\
             Call-ID: {}\r\nCSeq: {version} INVITE\r\n\
             Contact: <sip:src@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            dialog.remote_tag,
            dialog.call_id,
            sdp.len()
        );
        let offer = SessionOffer {
            dialog: dialog.clone(),
            sdp: sdp.clone().into_bytes(),
            metadata: None,
            siprec: false,
            request: sip::parse_datagram(invite.as_bytes()).unwrap(),
            source: SocketAddr::from((Ipv4Addr::LOCALHOST, 5070)),
            transport: Transport::Udp,
            hangup: Hangup::detached(),
        };
        if version == 1 {
            self.recorder.offer(offer).await
        } else {
            self.recorder.reoffer(offer).await
        }
    }

    /// Ends the call and returns its committed recording: the row's metadata and the decoded
    /// audio of its (only) channel.
    async fn finish(&self, dialog: DialogId) -> (serde_json::Value, Vec<f64>) {
        self.recorder.ended(dialog, EndReason::Bye).await;
        assert!(self.committer.wait_idle(Duration::from_secs(30)).await);
        let objects = self.storage.list("").await.unwrap();
        assert_eq!(objects.len(), 1, "one recording: {objects:?}");
        let data = self.storage.get(&objects[0].key).await.unwrap();
        let mut ring = KeyRing::new();
        ring.insert(self.key.clone());
        let mut ogg = Vec::new();
        decrypt_stream(&data[..], &ring, &mut ogg).unwrap();
        let decoded = read_ogg_opus(&ogg);
        let [left, right] = decoded.pcm;
        assert_eq!(left, right, "a lone stream is recorded on both channels");
        let id: uuid::Uuid = objects[0]
            .key
            .rsplit('/')
            .next()
            .and_then(|name| name.split('.').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("recording id in {}", objects[0].key));
        let row = self.db.recording(TENANT, id).await.unwrap().unwrap();
        let metadata = serde_json::from_str(row.raw_metadata.as_deref().unwrap_or("{}")).unwrap();
        (metadata, left)
    }
}

fn dialog(name: &str) -> DialogId {
    DialogId {
        call_id: format!("{name}@src.example"),
        local_tag: String::new(),
        remote_tag: format!("tag-{name}"),
    }
}

fn bind(ip: [u8; 4]) -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::from(ip), 0)).unwrap()
}

/// What an attacker sends alongside genuine packet `i` (sequence `seq`, timestamp `ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    None,
    /// A stranger's stream with its own SSRC: without latching the channel switches to it
    /// and drops the genuine packets as late for the rest of the call.
    NewSsrc,
    /// The genuine SSRC with the next sequence number and timestamp, so each forged packet
    /// arrives before the genuine one and makes it a duplicate.
    SameSsrc,
    /// A flood: 20 datagrams per genuine packet, of every kind (new SSRCs, the genuine one,
    /// RTCP, garbage).
    Flood,
}

const GENUINE_SSRC: u32 = 0x1234_5678;

/// Datagrams the attack sends alongside genuine packet `i`.
fn forged(attack: Attack, i: u32, seq: u16, ts: u32) -> Vec<Vec<u8>> {
    if !ATTACK.contains(&i) {
        return Vec::new();
    }
    let foreign = tone(FOREIGN_HZ, ts);
    match attack {
        Attack::None => Vec::new(),
        Attack::NewSsrc => vec![rtp(0, 9000 + seq, ts.wrapping_add(80_000), 0xBAD, &foreign)],
        Attack::SameSsrc => vec![rtp(
            0,
            seq.wrapping_add(1),
            ts.wrapping_add(160),
            GENUINE_SSRC,
            &tone(FOREIGN_HZ, ts + 160),
        )],
        Attack::Flood => (0..20u32)
            .map(|k| match k % 4 {
                0 => rtp(0, seq ^ 0x5555, ts, 0xF000 + k, &foreign),
                1 => rtp(0, seq.wrapping_add(2), ts + 320, GENUINE_SSRC, &foreign),
                // RTCP receiver report.
                2 => vec![0x80, 201, 0, 1, 0, 0, 0, 7],
                _ => vec![0xde; 40],
            })
            .collect(),
    }
}

/// Sends the genuine stream from `genuine` to `port`, in real time, with `attack` from
/// `attacker`; returns how many datagrams the attacker sent.
async fn send_call(genuine: &UdpSocket, port: u16, attack: Attack, attacker: &UdpSocket) -> u64 {
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let mut sent = 0;
    for i in 0..PACKETS {
        pace.tick().await;
        let (seq, ts) = (1000 + i as u16, 50_000 + 160 * i);
        for datagram in forged(attack, i, seq, ts) {
            attacker.send_to(&datagram, to).unwrap();
            sent += 1;
        }
        genuine
            .send_to(&rtp(0, seq, ts, GENUINE_SSRC, &tone(GENUINE_HZ, ts)), to)
            .unwrap();
    }
    sent
}

/// Records a call from the genuine source at 127.0.0.1 under `attack` from 127.0.0.2.
async fn record(attack: Attack) -> (Rig, serde_json::Value, Vec<f64>, u64) {
    let rig = Rig::new().await;
    let genuine = bind([127, 0, 0, 1]);
    let attacker = bind([127, 0, 0, 2]);
    let call = dialog(&format!("{attack:?}"));
    let port = rig.offer(&call, genuine.local_addr().unwrap(), 1).await;
    let sent = send_call(&genuine, port, attack, &attacker).await;
    let (metadata, audio) = rig.finish(call).await;
    (rig, metadata, audio, sent)
}

/// The stretch of the recording that carries the call's audio: from the genuine tone's onset
/// for the 3 s it lasts, less a block at each end.
fn speech(audio: &[f64]) -> (f64, f64) {
    let start = onset(audio, 0.0);
    assert!(start.is_finite(), "the recording is silent");
    let end = start + f64::from(PACKETS) * 0.02;
    assert!(
        end * OUT <= audio.len() as f64 + 0.05 * OUT,
        "the recording ends {:.2} s before the call's audio does",
        end - audio.len() as f64 / OUT
    );
    (start + 0.1, end - 0.1)
}

/// Where the audio ends: the end of the last 2.5 ms whose level is a quarter of the tone's.
fn end_of_audio(x: &[f64]) -> f64 {
    let w = 120;
    let mut n = x.len();
    while n > w && rms(x, (n - w) as f64 / OUT, n as f64 / OUT) <= 1400.0 {
        n -= 24;
    }
    n as f64 / OUT
}

/// The attacked recording is the baseline's: the audio lasts as long (to two Opus frames: the
/// two runs start at different instants, so each of the audio's two edges may fall a frame
/// apart; the recordings' own lengths follow the calls' signalling, not the audio), and per
/// 100 ms the genuine tone dominates with the baseline's level, and the foreign tone is absent.
/// A take-over (the foreign tone, or silence after it) fails the block and share checks.
fn assert_same_audio(baseline: &[f64], attacked: &[f64]) {
    let span = |x: &[f64]| end_of_audio(x) - onset(x, 0.0);
    let (want, got) = (span(baseline), span(attacked));
    assert!(
        (want - got).abs() < 0.04,
        "the audio lasts {got:.4} s where the run without the attack has {want:.4} s"
    );
    let (b0, b1) = speech(baseline);
    let (a0, a1) = speech(attacked);
    let genuine = correlation(attacked, |_| GENUINE_HZ, a0, a1);
    let foreign = correlation(attacked, |_| FOREIGN_HZ, a0, a1);
    assert!(genuine > 0.9, "the genuine tone's share is {genuine:.3}");
    assert!(foreign < 0.01, "the foreign tone's share is {foreign:.3}");
    let blocks = ((b1 - b0) * 10.0) as usize;
    for k in 0..blocks {
        let t = k as f64 / 10.0;
        let (want, got) = (
            rms(baseline, b0 + t, b0 + t + 0.1),
            rms(attacked, a0 + t, a0 + t + 0.1),
        );
        assert!(
            (got / want - 1.0).abs() < 0.1,
            "block at {t:.1} s: level {got:.0} where the run without the attack has {want:.0}"
        );
    }
}

async fn attack_leaves_the_recording_unchanged(attack: Attack) -> (Rig, serde_json::Value, u64) {
    let ((_, _, baseline, _), (rig, metadata, attacked, sent)) =
        tokio::join!(record(Attack::None), record(attack));
    assert_same_audio(&baseline, &attacked);
    assert_eq!(
        rig.metrics.rtp_foreign.load(Ordering::Relaxed),
        sent,
        "every forged datagram is counted as foreign"
    );
    assert_eq!(metadata["rtpForeign"]["dropped"], sent);
    assert_eq!(
        metadata["rtpForeign"]["lastSource"]
            .as_str()
            .map(|s| s.starts_with("127.0.0.2:")),
        Some(true),
        "{metadata}"
    );
    (rig, metadata, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ssrc_from_a_foreign_address_does_not_take_over_the_channel() {
    let (rig, _, sent) = attack_leaves_the_recording_unchanged(Attack::NewSsrc).await;
    assert_eq!(sent, u64::from(ATTACK.end - ATTACK.start));
    // 50 datagrams: at the threshold, the call raised the alarm.
    assert_eq!(rig.metrics.rtp_foreign_alarms.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_genuine_ssrc_from_a_foreign_address_is_dropped() {
    attack_leaves_the_recording_unchanged(Attack::SameSsrc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_foreign_datagrams_is_dropped_and_raises_an_alarm_while_the_call_lasts() {
    let (rig, _, sent) = attack_leaves_the_recording_unchanged(Attack::Flood).await;
    assert!(sent >= 20 * FOREIGN_ALARM_THRESHOLD);
    assert_eq!(rig.metrics.rtp_foreign_alarms.load(Ordering::Relaxed), 1);
    let rendered = rig.metrics.render(4, false, true);
    assert!(
        rendered.contains(&format!("callvault_recorder_rtp_foreign_total {sent}\n")),
        "{rendered}"
    );
    // The alarm was stored, naming the call, and cleared when the call ended.
    let alarms = rig.db.list_alarms(TENANT, true, 10).await.unwrap();
    let alarm = alarms
        .iter()
        .find(|a| a.alarm_type == FOREIGN_ALARM)
        .unwrap_or_else(|| panic!("no {FOREIGN_ALARM} alarm in {alarms:?}"));
    assert_eq!(alarm.source, "call Flood@src.example");
    assert!(alarm.message.contains("127.0.0.2:"), "{}", alarm.message);
    // The clear runs after the call's end, in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig
        .db
        .list_alarms(TENANT, false, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the alarm was not cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = rig.db.activity(TENANT, None, 10).await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.kind == "alarm" && e.message.contains("Flood@src.example")),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_behind_nat_records_although_its_sdp_names_a_private_address() {
    let rig = Rig::new().await;
    let genuine = bind([127, 0, 0, 1]);
    let call = dialog("nat");
    // The SDP names the source's private address; its packets come through the NAT.
    let port = rig
        .offer(&call, SocketAddr::from(([10, 20, 30, 40], 4000)), 1)
        .await;
    send_call(&genuine, port, Attack::None, &bind([127, 0, 0, 2])).await;
    let (metadata, audio) = rig.finish(call).await;
    let (t0, t1) = speech(&audio);
    assert!(correlation(&audio, |_| GENUINE_HZ, t0, t1) > 0.9);
    assert_eq!(rig.metrics.rtp_foreign.load(Ordering::Relaxed), 0);
    assert!(metadata.get("rtpForeign").is_none(), "{metadata}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinvite_moving_the_media_relatches_to_the_new_address() {
    let rig = Rig::new().await;
    let (first, second) = (bind([127, 0, 0, 1]), bind([127, 0, 0, 3]));
    let call = dialog("moved");
    let port = rig.offer(&call, first.local_addr().unwrap(), 1).await;
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    // 1 s from the first address; then the media moves (a new SSRC, another tone) and the old
    // address sends a packet of a third SSRC with every new one: it must not be recorded any
    // more (with the old SSRC the timeline would drop them as late anyway).
    for i in 0..50u32 {
        pace.tick().await;
        let ts = 160 * i;
        first
            .send_to(&rtp(0, i as u16, ts, 1, &tone(GENUINE_HZ, ts)), to)
            .unwrap();
    }
    let same_port = rig.offer(&call, second.local_addr().unwrap(), 2).await;
    assert_eq!(same_port, port, "a re-offer keeps the stream's port");
    for i in 0..100u32 {
        pace.tick().await;
        let ts = 160 * i;
        second
            .send_to(&rtp(0, i as u16, ts, 2, &tone(660.0, ts)), to)
            .unwrap();
        first
            .send_to(
                &rtp(0, 50 + i as u16, 8000 + ts, 3, &tone(FOREIGN_HZ, ts)),
                to,
            )
            .unwrap();
    }
    let (metadata, audio) = rig.finish(call).await;
    let start = onset(&audio, 0.0);
    assert!(correlation(&audio, |_| GENUINE_HZ, start + 0.1, start + 0.9) > 0.9);
    let (m0, m1) = (start + 1.2, start + 2.8);
    let moved = correlation(&audio, |_| 660.0, m0, m1);
    let stale = correlation(&audio, |_| FOREIGN_HZ, m0, m1);
    assert!(
        moved > 0.9,
        "the new address's audio has a share of {moved:.3}"
    );
    assert!(
        stale < 0.01,
        "the old address's audio has a share of {stale:.3}"
    );
    // At most the stale packets that beat the new address's first one were recorded.
    let dropped = rig.metrics.rtp_foreign.load(Ordering::Relaxed);
    assert!((98..=100).contains(&dropped), "{dropped} dropped");
    assert_eq!(metadata["rtpForeign"]["dropped"], dropped);
}

// ---------------------------------------------------------------------------------------------
// SRTP.

/// libsrtp (recorder/tests/tools/srtp_oracle.py) protecting `packets` in order under `key`.
fn libsrtp_protect(key: &MasterKey, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let python = std::env::var("CALLVAULT_TEST_SRTP_PYTHON").unwrap_or_else(|_| {
        panic!("CALLVAULT_TEST_SRTP_PYTHON is not set: run `source scripts/services.sh; ensure_recorder_test_tools` first")
    });
    let script = format!("{}/tests/tools/srtp_oracle.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new(python)
        .args([
            script.as_str(),
            "protect",
            key.suite().name(),
            &key.inline(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = packets
        .iter()
        .map(|p| format!("{}\n", hex::encode(p)))
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "srtp_oracle.py failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| hex::decode(l).expect("libsrtp protects every packet"))
        .collect()
}

/// The datagrams of an SRTP call, protected by libsrtp before the call starts (the Python
/// process must not hold up the runtime while calls are timed): the genuine stream under the
/// offered key, and forgeries of the next sequence number with the foreign tone under another.
struct SrtpCall {
    key: MasterKey,
    genuine: Vec<Vec<u8>>,
    forged: Vec<Vec<u8>>,
}

impl SrtpCall {
    fn new(suite: Suite) -> SrtpCall {
        let key = MasterKey::generate(suite).unwrap();
        let packets = |first: u32, hz: f64| -> Vec<Vec<u8>> {
            (first..first + PACKETS)
                .map(|i| {
                    let ts = 50_000 + 160 * i;
                    rtp(0, 1000 + i as u16, ts, GENUINE_SSRC, &tone(hz, ts))
                })
                .collect()
        };
        SrtpCall {
            genuine: libsrtp_protect(&key, &packets(0, GENUINE_HZ)),
            forged: libsrtp_protect(
                &MasterKey::generate(suite).unwrap(),
                &packets(1, FOREIGN_HZ),
            ),
            key,
        }
    }
}

/// An SRTP call from 127.0.0.1. During the attack window the genuine address itself also
/// sends, before each genuine packet, the previous genuine packet again (a replay) and a
/// forgery (which, taken, would make the genuine packet a duplicate). Returns the recording
/// and the replays and forgeries sent.
async fn record_srtp(rig: &Rig, srtp: &SrtpCall) -> (Vec<f64>, u64, u64) {
    let suite = srtp.key.suite();
    let genuine = bind([127, 0, 0, 1]);
    let call = dialog(&format!("srtp-{suite}"));
    let crypto = Crypto {
        tag: 1,
        key: srtp.key.clone(),
    };
    let answer = rig
        .offer_sdp(
            &call,
            genuine.local_addr().unwrap(),
            1,
            "RTP/SAVP",
            &format!("a=crypto:{}\r\n", &*crypto.attribute()),
        )
        .await
        .unwrap();
    let answer = sdp::parse(&answer).unwrap();
    let port = answer.media[0].port;
    let theirs = answer.media[0]
        .attributes
        .iter()
        .find(|(n, _)| n == "crypto")
        .and_then(|(_, v)| Crypto::parse(v.as_deref()?).ok())
        .expect("the answer has the recorder's key");
    assert_eq!((theirs.tag, theirs.key.suite()), (1, suite));
    assert_ne!(theirs.key, srtp.key, "the recorder's key is its own");
    let (protected, forged) = (&srtp.genuine, &srtp.forged);
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let (mut replays, mut forgeries) = (0, 0);
    for i in 0..PACKETS as usize {
        pace.tick().await;
        if ATTACK.contains(&(i as u32)) {
            genuine.send_to(&protected[i - 1], to).unwrap();
            genuine.send_to(&forged[i], to).unwrap();
            replays += 1;
            forgeries += 1;
        }
        genuine.send_to(&protected[i], to).unwrap();
    }
    let (_, audio) = rig.finish(call).await;
    (audio, replays, forgeries)
}

async fn srtp_attack_leaves_the_recording_unchanged(suite: Suite) {
    let secure = Rig::new().await;
    let srtp = SrtpCall::new(suite);
    let ((_, _, baseline, _), (attacked, replays, forgeries)) =
        tokio::join!(record(Attack::None), record_srtp(&secure, &srtp));
    assert_same_audio(&baseline, &attacked);
    let m = &secure.metrics;
    assert_eq!(m.srtp_replayed.load(Ordering::Relaxed), replays);
    assert_eq!(m.srtp_unauthenticated.load(Ordering::Relaxed), forgeries);
    assert_eq!(m.rtp_foreign.load(Ordering::Relaxed), 0);
    let rendered = m.render(4, false, true);
    assert!(
        rendered.contains(&format!(
            "callvault_recorder_srtp_replayed_total {replays}\n"
        )),
        "{rendered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_replays_and_forgeries_leave_the_recording_unchanged_aes_cm_80() {
    srtp_attack_leaves_the_recording_unchanged(Suite::AesCm128HmacSha1_80).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_replays_and_forgeries_leave_the_recording_unchanged_aes_cm_32() {
    srtp_attack_leaves_the_recording_unchanged(Suite::AesCm128HmacSha1_32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_replays_and_forgeries_leave_the_recording_unchanged_gcm_128() {
    srtp_attack_leaves_the_recording_unchanged(Suite::AeadAes128Gcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_replays_and_forgeries_leave_the_recording_unchanged_gcm_256() {
    srtp_attack_leaves_the_recording_unchanged(Suite::AeadAes256Gcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_srtp_policy_refuses_offers_with_488_saying_why() {
    let media = SocketAddr::from(([127, 0, 0, 1], 4000));
    let key = Crypto {
        tag: 1,
        key: MasterKey::generate(Suite::AesCm128HmacSha1_80).unwrap(),
    };
    let crypto = format!("a=crypto:{}\r\n", &*key.attribute());
    let cases = [
        (sdp::SrtpPolicy::Required, "RTP/AVP", "", "SRTP required"),
        (
            sdp::SrtpPolicy::Disabled,
            "RTP/SAVP",
            crypto.as_str(),
            "SRTP is disabled",
        ),
        (
            sdp::SrtpPolicy::Preferred,
            "RTP/SAVP",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|2^20|1:4\r\n",
            "MKI is not supported",
        ),
        (
            sdp::SrtpPolicy::Preferred,
            "RTP/SAVP",
            "a=crypto:1 NULL_HMAC_SHA1_80 inline:AAECAw\r\n",
            "crypto suite NULL_HMAC_SHA1_80 is not supported",
        ),
        (
            sdp::SrtpPolicy::Preferred,
            "RTP/SAVP",
            "",
            "without a=crypto",
        ),
    ];
    for (policy, proto, attributes, says) in cases {
        let rig = Rig::with_srtp(policy).await;
        let rejection = rig
            .offer_sdp(&dialog("refused"), media, 1, proto, attributes)
            .await
            .expect_err(says);
        assert_eq!(rejection.status, 488);
        assert!(rejection.reason.starts_with("Not Acceptable Here ("));
        assert!(rejection.reason.contains(says), "{}", rejection.reason);
        assert!(
            rejection
                .warning
                .as_deref()
                .is_some_and(|w| w.contains(says)),
            "{rejection:?}"
        );
    }
    // What the policy allows is recorded.
    let rig = Rig::with_srtp(sdp::SrtpPolicy::Required).await;
    assert!(
        rig.offer_sdp(&dialog("allowed"), media, 1, "RTP/SAVP", &crypto)
            .await
            .is_ok()
    );
}
