//! `callvault recorder` as a process, with sipp (Debian `sip-tester`) as the SIPREC client,
//! PostgreSQL for the rows and MinIO for the objects: each call's recording is fetched,
//! decrypted with the profile's private key and checked (two channels, the session's length,
//! each channel carrying the audio sent on it), and its row and metadata are checked. Then the
//! faults: SIGKILL mid-call, storage unreachable during calls, SIGTERM with calls live.
//!
//! Needs `source scripts/services.sh; start_postgres; start_object_stores;
//! ensure_recorder_test_tools` (scripts/test does it). Nothing here is skipped when a service
//! is missing: the tests fail and say what is missing.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use callvault_recorder::media::{g711, g722};
use callvault_recorder::srtp::{Crypto, MasterKey, Suite};
use callvault_store::db::{
    AlarmSeverity, CallType, Db, Direction, NewUser, Recording, RecordingStatus, SealedFields,
};
use callvault_store::format::{decrypt_stream, recover_truncated, sha256};
use callvault_store::keys::{KeyRing, PrivateKey};
use callvault_store::objstore::{self, Credentials, StorageConfig};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

mod interop;

const BIN: &str = env!("CARGO_BIN_EXE_callvault");

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `source scripts/services.sh; start_postgres; start_object_stores` first")
    })
}

/// A port free for SIP over both UDP and TCP: the recorder listens on both, and a port free
/// for UDP may be the local end of one of this test's TCP connections.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if StdTcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

fn free_tcp_port() -> u16 {
    StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Each rig gets its own RTP range so tests running side by side never share a port. The
/// ranges lie below the kernel's ephemeral ports (32768 up), where `free_port` finds the SIP
/// and HTTP ports: a SIP port inside another rig's RTP range would keep that recorder from
/// ever becoming ready.
fn rtp_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst) % 20;
    let start = 10000 + (std::process::id() as u16 % 15) * 800 + n * 40;
    (start, start + 39)
}

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A recorder process with its own tenant, key pair, spool and storage prefix.
struct Rig {
    dir: tempfile::TempDir,
    tenant: String,
    key: PrivateKey,
    sip: SocketAddr,
    http: SocketAddr,
    db: Db,
    storage: objstore::Storage,
    child: Option<Child>,
    log: PathBuf,
}

impl Rig {
    /// Writes the configuration; `s3_endpoint` overrides MinIO's (a proxy in the outage test).
    async fn new(s3_endpoint: Option<String>, capacity: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let tenant = format!("t{}", &uuid_hex()[..12]);
        let key = PrivateKey::generate(2048).unwrap();
        let pem = key.public_key().to_pem().unwrap();
        std::fs::write(dir.path().join("key.pem"), pem).unwrap();
        let db_url = env("CALLVAULT_TEST_DATABASE_URL");
        std::fs::write(dir.path().join("db-url"), format!("{db_url}\n")).unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(
            creds.join(Credentials::ACCESS_KEY_ID),
            env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"),
        )
        .unwrap();
        std::fs::write(
            creds.join(Credentials::SECRET_ACCESS_KEY),
            env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"),
        )
        .unwrap();
        let storage_spec = serde_json::json!({
            "type": "s3",
            "bucket": env("CALLVAULT_TEST_S3_BUCKET"),
            "endpoint": s3_endpoint.clone().unwrap_or_else(|| env("CALLVAULT_TEST_S3_ENDPOINT")),
            "region": env("CALLVAULT_TEST_S3_REGION"),
            "prefix": format!("recorder-tests/{tenant}"),
        });
        let rtp = rtp_range();
        let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        let config = serde_json::json!({
            "tenant": tenant,
            "profile": "compliance",
            "sip": {"port": sip.port()},
            "mediaAddress": {"bind": "127.0.0.1", "advertise": {"address": "127.0.0.1"}},
            "rtpPortRange": {"start": rtp.0, "end": rtp.1},
            "sessionsPerReplica": capacity,
            "storageTarget": "vault",
            "storage": storage_spec,
            "storageCredentialsDir": creds,
            "encryption": {
                "publicKeyPath": dir.path().join("key.pem"),
                "keyId": key.id().to_hex(),
            },
            "spoolDir": dir.path().join("spool"),
            "databaseUrlFile": dir.path().join("db-url"),
            "drainGraceSeconds": 30,
            "rules": {"allUsers": true},
        });
        std::fs::write(dir.path().join("recorder.yaml"), config.to_string()).unwrap();
        let db = Db::connect(&db_url).await.unwrap();
        // The test reads objects from MinIO itself, never through the proxy.
        let mut direct: StorageConfig = serde_json::from_value(storage_spec).unwrap();
        direct.endpoint = Some(env("CALLVAULT_TEST_S3_ENDPOINT"));
        let storage = objstore::open(
            &direct,
            &Credentials::s3(
                env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"),
                env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"),
            ),
        )
        .unwrap();
        let log = dir.path().join("recorder.log");
        Rig {
            dir,
            tenant,
            key,
            sip,
            http,
            db,
            storage,
            child: None,
            log,
        }
    }

    /// Starts the recorder and waits until it is ready. A SIP or HTTP port another process
    /// took between picking and binding (a test's connections use ephemeral ports too) is
    /// picked again.
    async fn start(&mut self) {
        for attempt in 0.. {
            let logged_before = self.logs().len();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            let mut child = Command::new(BIN)
                .args(["recorder", "--config"])
                .arg(self.dir.path().join("recorder.yaml"))
                .args(["--http", &self.http.to_string()])
                .env("RUST_LOG", "info,callvault_recorder=debug")
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let exited = loop {
                if get(self.http, "/readyz").await.map(|(s, _)| s) == Some(200) {
                    break None;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                // The recorder keeps retrying a SIP port it cannot bind (and says so on
                // /readyz); here that only means the port was taken after it was picked.
                if self.logs()[logged_before..].contains("cannot bind SIP") {
                    child.kill().await.unwrap();
                    break Some(child.wait().await.unwrap());
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for the recorder to be ready; its log:\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let Some(status) = exited else {
                self.child = Some(child);
                return;
            };
            assert!(
                attempt < 3 && self.logs()[logged_before..].contains("in use"),
                "the recorder exited ({status}) before it was ready; its log:\n{}",
                self.logs()
            );
            self.sip.set_port(free_port());
            self.http.set_port(free_tcp_port());
            let port = self.sip.port();
            self.edit(|c| c["sip"]["port"] = serde_json::json!(port));
        }
    }

    /// Replaces the profile's recording rules in the written configuration.
    fn set_rules(&self, rules: serde_json::Value) {
        self.edit(|config| config["rules"] = rules);
    }

    /// Rewrites the configuration file (renamed into place, as the kubelet swaps a ConfigMap).
    fn edit(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let path = self.dir.path().join("recorder.yaml");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut config);
        let tmp = self.dir.path().join("recorder.yaml.tmp");
        std::fs::write(&tmp, config.to_string()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Waits until `/status` counts `applied` configuration changes applied and `refused`
    /// refused, and returns it.
    async fn configuration(&self, applied: u64, refused: u64) -> serde_json::Value {
        let http = self.http;
        poll(
            "the configuration change taken",
            Duration::from_secs(20),
            || async move {
                let (_, body) = get(http, "/status").await?;
                let status: serde_json::Value = serde_json::from_str(&body).ok()?;
                let c = &status["configuration"];
                (c["applied"] == applied && c["refused"] == refused).then_some(status)
            },
        )
        .await
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id().unwrap() as i32
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Finished recordings (available or incomplete) of this rig's tenant, oldest first.
    async fn finished(&self) -> Vec<Recording> {
        self.db
            .recordings_to_archive(&self.tenant, "none", 100)
            .await
            .unwrap()
    }

    async fn wait_finished(&self, n: usize, limit: Duration) -> Vec<Recording> {
        let what = format!("{n} committed recordings");
        let logs = || self.logs();
        let rows = tokio::time::timeout(limit, async {
            loop {
                let rows = self.finished().await;
                if rows.len() >= n {
                    return rows;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        rows.unwrap_or_else(|_| panic!("timed out waiting for {what}; recorder log:\n{}", logs()))
    }

    /// The decrypted Ogg of a committed recording.
    async fn plaintext(&self, row: &Recording) -> Vec<u8> {
        let data = self
            .storage
            .get(row.object_key.as_deref().unwrap())
            .await
            .unwrap();
        let mut ring = KeyRing::new();
        ring.insert(self.key.clone());
        let mut out = Vec::new();
        decrypt_stream(&data[..], &ring, &mut out).unwrap();
        out
    }
}

fn uuid_hex() -> String {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A GET on the recorder's operations endpoint: status and body.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

// ---------------------------------------------------------------------------------------------
// Audio: two parties speaking different sentences (espeak-ng, resampled by sox).

/// `text` spoken at `rate` Hz, mono 16-bit.
fn speech(dir: &Path, text: &str, rate: u32) -> Vec<i16> {
    let wav = dir.join(format!("{}.wav", &hex(sha256(text.as_bytes()))[..12]));
    if !wav.exists() {
        let st = std::process::Command::new("espeak-ng")
            .args(["-s", "150", "-w"])
            .arg(&wav)
            .arg(text)
            .status()
            .expect("espeak-ng is not installed (Debian package espeak-ng)");
        assert!(st.success());
    }
    let out = std::process::Command::new("sox")
        .arg(&wav)
        .args([
            "-t",
            "raw",
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
            "-r",
        ])
        .arg(rate.to_string())
        .arg("-")
        .output()
        .expect("sox is not installed (Debian package sox)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn hex(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const PARTY_A: &str =
    "Good morning, this is Alice from the bank. How can I help you today with your account?";
const PARTY_B: &str =
    "Hello. Yes. I would like to move five thousand pounds to my savings, please. Thanks!";

#[derive(Debug, Clone, Copy)]
enum Codec {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

impl Codec {
    fn pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
            Codec::Opus => 111,
        }
    }
    fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::G722 => "G722/8000",
            Codec::Opus => "opus/48000/2",
        }
    }
    /// PCM rate the encoder takes and RTP clock ticks per 20 ms.
    fn pcm_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 => 16000,
            Codec::Opus => 48000,
        }
    }
    fn ticks(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 160,
            Codec::Opus => 960,
        }
    }
    /// 20 ms payloads of `pcm`.
    fn payloads(self, pcm: &[i16]) -> Vec<Vec<u8>> {
        let frame = self.pcm_rate() as usize / 50;
        let mut g722 = g722::G722Encoder::new();
        let opus = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).unwrap();
        pcm.chunks(frame)
            .map(|f| {
                let mut f = f.to_vec();
                f.resize(frame, 0);
                match self {
                    Codec::Pcmu => f.iter().map(|&s| g711::encode_ulaw(s)).collect(),
                    Codec::Pcma => f.iter().map(|&s| g711::encode_alaw(s)).collect(),
                    Codec::G722 => {
                        let mut out = Vec::new();
                        g722.encode(&f, &mut out);
                        out
                    }
                    Codec::Opus => {
                        let mut out = vec![0u8; 400];
                        let n = opus.encode(&f, &mut out).unwrap();
                        out.truncate(n);
                        out
                    }
                }
            })
            .collect()
    }
}

/// One stream's packets: (send time, RTP datagram).
fn rtp_stream(
    codec: Codec,
    pcm: &[i16],
    ssrc: u32,
    start: Duration,
    skip: Option<(Duration, Duration)>,
) -> Vec<(Duration, Vec<u8>)> {
    codec
        .payloads(pcm)
        .into_iter()
        .enumerate()
        .filter_map(|(i, payload)| {
            let at = start + Duration::from_millis(20 * i as u64);
            if let Some((from, to)) = skip
                && at >= from
                && at < to
            {
                return None;
            }
            let mut p = vec![0x80, codec.pt()];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * codec.ticks()).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&payload);
            Some((at, p))
        })
        .collect()
}

/// A pcap sipp replays: stream k goes to the answer's first port + 2k.
fn write_pcap(path: &Path, streams: &[Vec<(Duration, Vec<u8>)>]) {
    let mut all: Vec<(Duration, u16, &Vec<u8>)> = streams
        .iter()
        .enumerate()
        .flat_map(|(k, s)| s.iter().map(move |(t, p)| (*t, 6000 + 2 * k as u16, p)))
        .collect();
    all.sort_by_key(|(t, port, _)| (*t, *port));
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (t, port, rtp) in all {
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&(port + 1000).to_be_bytes());
        frame.extend_from_slice(&port.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(rtp);
        out.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&t.subsec_micros().to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap();
}

/// Fills a scenario template from tests/sipp and runs one call of it with sipp.
async fn sipp(
    rig: &Rig,
    scenario: &str,
    vars: &[(&str, String)],
    transport: &str,
) -> std::process::Output {
    run_sipp(rig.sip, rig.dir.path(), scenario, vars, transport).await
}

async fn run_sipp(
    target: SocketAddr,
    dir: &Path,
    scenario: &str,
    vars: &[(&str, String)],
    transport: &str,
) -> std::process::Output {
    let path = format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    // What plain-RTP calls leave out of the scenarios that can offer SRTP.
    for (k, v) in [("PROTO", "RTP/AVP"), ("CRYPTO_1", ""), ("CRYPTO_2", "")] {
        text = text.replace(&format!("@{k}@"), v);
    }
    let name = Path::new(scenario).file_name().unwrap().to_string_lossy();
    let filled = dir.join(format!("{}-{name}", uuid_hex()));
    std::fs::write(&filled, text).unwrap();
    let child = Command::new("sipp")
        .arg(target.to_string())
        .arg("-sf")
        .arg(&filled)
        .args([
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
            "-t",
            transport,
        ])
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-mp", &free_port().to_string()])
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp is not installed (Debian package sip-tester)");
    tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("sipp did not finish")
        .unwrap()
}

fn assert_ok(out: &std::process::Output, rig: &Rig) {
    assert!(
        out.status.success(),
        "sipp failed ({}):\n{}\n{}\nrecorder log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        rig.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// Reading recordings back.

/// Every channel of an Ogg Opus recording (mapping family 0, or family 1 with an uncoupled
/// mono stream per channel), decoded by libopus at 48 kHz and trimmed by pre-skip and the
/// final granule as a player does.
fn decode_ogg_channels(data: &[u8]) -> Vec<Vec<f32>> {
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut partial = Vec::new();
    let mut pos = 0;
    let mut granule = 0u64;
    while pos + 27 <= data.len() {
        assert_eq!(&data[pos..pos + 4], b"OggS", "Ogg page at {pos}");
        let g = u64::from_le_bytes(data[pos + 6..pos + 14].try_into().unwrap());
        if g != u64::MAX {
            granule = g;
        }
        let n = usize::from(data[pos + 26]);
        let lacing = &data[pos + 27..pos + 27 + n];
        let mut body = pos + 27 + n;
        for &l in lacing {
            partial.extend_from_slice(&data[body..body + usize::from(l)]);
            body += usize::from(l);
            if l < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        pos = body;
    }
    let head = &packets[0];
    assert_eq!(&head[..8], b"OpusHead");
    let channels = usize::from(head[9]);
    let pre_skip = usize::from(u16::from_le_bytes([head[10], head[11]]));
    if channels > 1 {
        assert_eq!(head[18], 1, "mapping family 1");
        assert_eq!(
            (usize::from(head[19]), head[20]),
            (channels, 0),
            "uncoupled streams"
        );
    } else {
        assert_eq!(head[18], 0, "mapping family 0");
    }
    let mut decs: Vec<Decoder> = (0..channels)
        .map(|_| Decoder::new(SampleRate::Hz48000, Channels::Mono).unwrap())
        .collect();
    let mut chans = vec![Vec::new(); channels];
    let mut buf = vec![0i16; 5760];
    for p in &packets[2..] {
        // Every stream but the last is self-delimited (RFC 6716 appendix B).
        let mut rest = &p[..];
        for c in 0..channels {
            let pkt = if c + 1 == channels {
                rest.to_vec()
            } else {
                let toc = rest[0];
                let (len, hdr) = if rest[1] < 252 {
                    (usize::from(rest[1]), 2)
                } else {
                    (usize::from(rest[1]) + 4 * usize::from(rest[2]), 3)
                };
                let len = if toc & 3 == 1 { 2 * len } else { len };
                let mut one = vec![toc];
                one.extend_from_slice(&rest[hdr..hdr + len]);
                rest = &rest[hdr + len..];
                one
            };
            let n = decs[c].decode(Some(&pkt[..]), &mut buf[..], false).unwrap();
            chans[c].extend(buf[..n].iter().map(|&s| f32::from(s)));
        }
    }
    let total = granule as usize - pre_skip;
    chans
        .into_iter()
        .map(|c| c[pre_skip..(pre_skip + total).min(c.len())].to_vec())
        .collect()
}

/// Milliseconds of audio in the whole Ogg/Opus pages of `data` (a recovered recording may end
/// mid-page): the last complete page's granule less the pre-skip, at 48 kHz.
fn ogg_audio_ms(data: &[u8]) -> i64 {
    let (mut pos, mut granule, mut pre_skip) = (0usize, 0u64, 0u64);
    while pos + 27 <= data.len() {
        assert_eq!(&data[pos..pos + 4], b"OggS", "Ogg page at {pos}");
        let n = usize::from(data[pos + 26]);
        if pos + 27 + n > data.len() {
            break;
        }
        let body: usize = data[pos + 27..pos + 27 + n]
            .iter()
            .map(|&l| usize::from(l))
            .sum();
        let end = pos + 27 + n + body;
        if end > data.len() {
            break;
        }
        if pos == 0 {
            let head = &data[pos + 27 + n..end];
            pre_skip = u64::from(u16::from_le_bytes([head[10], head[11]]));
        }
        let g = u64::from_le_bytes(data[pos + 6..pos + 14].try_into().unwrap());
        if g != u64::MAX {
            granule = g;
        }
        pos = end;
    }
    (granule.saturating_sub(pre_skip) * 1000 / 48_000) as i64
}

/// Log energy per 20 ms of a signal at `rate` Hz.
fn envelope(x: &[f32], rate: usize) -> Vec<f64> {
    x.chunks(rate / 50)
        .map(|c| {
            (c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / c.len() as f64 + 1.0)
                .ln()
        })
        .collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt().max(1e-9)
}

/// Best correlation of a recorded channel's envelope with the sent audio's, over the lags a
/// call's set-up can introduce (0 to 3 s), and that lag in 20 ms frames.
fn match_audio(channel: &[f32], sent: &[i16], sent_rate: usize) -> (f64, usize) {
    let rec = envelope(channel, 48_000);
    let sent: Vec<f32> = sent.iter().map(|&s| f32::from(s)).collect();
    let reference = envelope(&sent, sent_rate);
    (0..150)
        .filter(|lag| lag + reference.len() <= rec.len())
        .map(|lag| (pearson(&rec[lag..lag + reference.len()], &reference), lag))
        .fold((f64::MIN, 0), |best, x| if x.0 > best.0 { x } else { best })
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// The checks every recorded call gets: committed row, digest, seal, decrypted two-channel
/// Ogg exactly the session's length (within one 20 ms frame).
async fn check_recording(rig: &Rig, row: &Recording) -> [Vec<f32>; 2] {
    check_recording_channels(rig, row, 2)
        .await
        .try_into()
        .unwrap()
}

/// [`check_recording`] of a recording of `channels` channels.
async fn check_recording_channels(rig: &Rig, row: &Recording, channels: i64) -> Vec<Vec<f32>> {
    assert_eq!(row.status, RecordingStatus::Available, "{row:?}");
    assert_eq!(row.codec, "opus");
    assert_eq!(row.channels, channels);
    assert_eq!(row.profile, "compliance");
    assert_eq!(row.key_id.as_deref(), Some(rig.key.id().to_hex().as_str()));
    assert!(
        row.signature.as_deref().is_some_and(|s| s.len() == 64),
        "sealed"
    );
    let ogg = rig.plaintext(row).await;
    assert_eq!(
        row.sha256.as_deref(),
        Some(hex(sha256(&ogg)).as_str()),
        "row digest is the plaintext's"
    );
    let pcm = decode_ogg_channels(&ogg);
    assert_eq!(pcm.len() as i64, channels);
    let session = (row.end_time.unwrap() - row.start_time) as f64 / 1e6;
    let file = pcm[0].len() as f64 / 48_000.0;
    assert!(
        (file - session).abs() <= 0.020,
        "recording {file:.3} s, session {session:.3} s"
    );
    pcm
}

// ---------------------------------------------------------------------------------------------
// The call scenarios.

/// One stream's packets: (send time, datagram).
type Stream = Vec<(Duration, Vec<u8>)>;

/// Each party's stream of a call, protected with libsrtp (`protect`) under a key of its own:
/// the streams and the `a=crypto` lines that offer their keys.
fn srtp_streams(suite: Suite, streams: [Stream; 2]) -> ([Stream; 2], [String; 2]) {
    let keys = [1u32, 2].map(|tag| Crypto {
        tag,
        key: MasterKey::generate(suite).unwrap(),
    });
    let lines = keys
        .each_ref()
        .map(|c| format!("a=crypto:{}", &*c.attribute()));
    let mut k = keys.iter();
    let streams = streams.map(|s| {
        let key = k.next().unwrap().key.inline();
        let packets: Vec<Vec<u8>> = s.iter().map(|(_, p)| p.clone()).collect();
        let protected = libsrtp("protect", suite, &key, &packets);
        s.into_iter()
            .zip(protected)
            .map(|((at, _), p)| (at, p.expect("libsrtp protects every packet")))
            .collect()
    });
    (streams, lines)
}

/// libsrtp (pylibsrtp, recorder/tests/tools/srtp_oracle.py) applied to `packets` in order:
/// `protect` or `unprotect` under `key` (base64 of key and salt); `None` where it refused one.
fn libsrtp(direction: &str, suite: Suite, key: &str, packets: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let python = std::env::var("CALLVAULT_TEST_SRTP_PYTHON").unwrap_or_else(|_| {
        panic!("CALLVAULT_TEST_SRTP_PYTHON is not set: run `source scripts/services.sh; ensure_recorder_test_tools` first")
    });
    let script = format!(
        "{}/recorder/tests/tools/srtp_oracle.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let input: String = packets
        .iter()
        .map(|p| format!("{}\n", ::hex::encode(p)))
        .collect();
    let mut child = std::process::Command::new(python)
        .args([script.as_str(), direction, suite.name(), key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
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
        .map(|l| (l != "-").then(|| ::hex::decode(l).unwrap()))
        .collect()
}

async fn two_stream_call(codec: Codec, transport: &str) {
    two_stream_call_with(codec, transport, None).await;
}

/// A call of two parties, each on a stream of its own; `srtp`: both streams SRTP of this
/// suite, protected by libsrtp.
async fn two_stream_call_with(codec: Codec, transport: &str, srtp: Option<Suite>) {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let a = speech(rig.dir.path(), PARTY_A, codec.pcm_rate());
    let b = speech(rig.dir.path(), PARTY_B, codec.pcm_rate());
    let pcap = rig.dir.path().join("call.pcap");
    let streams = [
        rtp_stream(codec, &a, 0x1111, Duration::ZERO, None),
        rtp_stream(codec, &b, 0x2222, Duration::ZERO, None),
    ];
    let talk = a.len().max(b.len()) as u64 * 1000 / u64::from(codec.pcm_rate());
    let mut vars = vec![
        ("PT", codec.pt().to_string()),
        ("RTPMAP", codec.rtpmap().into()),
        ("PCAP", pcap.display().to_string()),
        ("PAUSE_MS", (talk + 500).to_string()),
    ];
    let mut offered = Vec::new();
    let streams = match srtp {
        None => streams,
        Some(suite) => {
            let (streams, [line_a, line_b]) = srtp_streams(suite, streams);
            offered = vec![line_a.clone(), line_b.clone()];
            vars.extend([
                ("PROTO", "RTP/SAVP".to_owned()),
                ("CRYPTO_1", line_a),
                ("CRYPTO_2", line_b),
            ]);
            streams
        }
    };
    write_pcap(&pcap, &streams);
    let out = sipp(&rig, "record_two_streams.xml", &vars, transport).await;
    assert_ok(&out, &rig);
    let rows = rig.wait_finished(1, Duration::from_secs(30)).await;
    let row = &rows[0];
    let pcm = check_recording(&rig, row).await;
    let rate = codec.pcm_rate() as usize;
    let (aa, lag_a) = match_audio(&pcm[0], &a, rate);
    let (bb, lag_b) = match_audio(&pcm[1], &b, rate);
    let (ab, _) = match_audio(&pcm[0], &b, rate);
    let (ba, _) = match_audio(&pcm[1], &a, rate);
    assert!(
        aa > 0.8 && bb > 0.8,
        "{codec:?}: channels follow their party: A {aa:.2}, B {bb:.2}"
    );
    assert!(
        aa > ab + 0.2 && bb > ba + 0.2,
        "{codec:?}: no party in the other's channel: A~B {ab:.2}, B~A {ba:.2}"
    );
    assert!(
        lag_a.abs_diff(lag_b) <= 2,
        "both channels aligned (lags {lag_a}, {lag_b} frames)"
    );
    // Metadata: parties, participants, stream associations, vendor extension kept raw.
    assert_eq!(row.calling.number, "1001");
    assert_eq!(row.calling.name, "Alice Agent");
    assert_eq!(row.called.number, "+15551234567");
    let names: Vec<&str> = row.participants.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Alice Agent", "Bob Customer"]);
    let md: serde_json::Value = serde_json::from_str(row.raw_metadata.as_deref().unwrap()).unwrap();
    assert_eq!(md["streams"][0]["label"], "1");
    assert_eq!(md["streams"][0]["sender"], "cGFydHktYWxpY2U=");
    assert_eq!(md["streams"][1]["sender"], "cGFydHktYm9i");
    assert!(
        md["extensions"][0]
            .as_str()
            .unwrap()
            .contains("<acme:ucid>00001234567890</acme:ucid>"),
        "{md}"
    );
    assert_eq!(row.session_id, "Z3JvdXAtMQ==");
    // The seal's metadata digest covers the row's call details as committed.
    let mut digest = [0u8; 32];
    hex::decode_to_slice(row.metadata_digest.as_deref().unwrap(), &mut digest).unwrap();
    assert_eq!(
        row.sealed_fields(&digest),
        Some(callvault_store::db::SealedFields::CallDetails)
    );
    assert_eq!(
        rig.db.active_recordings(&rig.tenant).await.unwrap().len(),
        0
    );
    if srtp.is_some() {
        // Nothing was dropped, and no key is anywhere the recorder writes: not the offered
        // ones, not the recorder's own (which the log would show as `inline:` too).
        let (_, metrics) = get(rig.http, "/metrics").await.unwrap();
        for counter in ["srtp_unauthenticated_total", "srtp_replayed_total"] {
            assert!(
                metrics.contains(&format!("callvault_recorder_{counter} 0\n")),
                "{metrics}"
            );
        }
        let (log, row) = (rig.logs(), format!("{row:?}"));
        for line in &offered {
            let key = line.rsplit("inline:").next().unwrap();
            for (what, text) in [("log", &log), ("metrics", &metrics), ("row", &row)] {
                assert!(!text.contains(key), "an offered key is in the {what}");
            }
        }
        assert!(!log.contains("inline:"), "a key is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_g711_streams_with_metadata_over_udp() {
    two_stream_call(Codec::Pcmu, "u1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_g722_streams_over_tcp() {
    two_stream_call(Codec::G722, "t1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_opus_streams() {
    two_stream_call(Codec::Opus, "u1").await;
}

/// SRTP from libsrtp, over UDP and TCP signalling, records what the plain call records; no
/// key reaches the log, the metrics or the row.
async fn srtp_call(suite: Suite) {
    for transport in ["u1", "t1"] {
        two_stream_call_with(Codec::Pcmu, transport, Some(suite)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_aes_cm_128_hmac_sha1_80_streams() {
    srtp_call(Suite::AesCm128HmacSha1_80).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_aes_cm_128_hmac_sha1_32_streams() {
    srtp_call(Suite::AesCm128HmacSha1_32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_aead_aes_128_gcm_streams() {
    srtp_call(Suite::AeadAes128Gcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_aead_aes_256_gcm_streams() {
    srtp_call(Suite::AeadAes256Gcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mixed_stream_fills_both_channels() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let a = speech(rig.dir.path(), PARTY_A, 8000);
    let pcap = rig.dir.path().join("mixed.pcap");
    write_pcap(
        &pcap,
        &[rtp_stream(Codec::Pcma, &a, 0x3333, Duration::ZERO, None)],
    );
    let talk = a.len() as u64 / 8;
    let out = sipp(
        &rig,
        "record_mixed_stream.xml",
        &[
            ("PCAP", pcap.display().to_string()),
            ("PAUSE_MS", (talk + 500).to_string()),
        ],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    let pcm = check_recording(&rig, &row).await;
    for ch in &pcm {
        let (c, _) = match_audio(ch, &a, 8000);
        assert!(c > 0.8, "the mixed stream is in both channels ({c:.2})");
    }
    assert_eq!(row.calling.number, "+442071234567");
    assert_eq!(row.calling.name, "Carol Caller");
    assert_eq!(row.called.number, "2002");
}

/// G.729, which many SBCs send, has no implementation under a licence CallVault can ship (the
/// maintained ones are GPL-3.0): an offer of G.729 alone gets 488 whose Warning names the codec
/// and the codecs the recorder decodes, as sipp checks on the wire; nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g729_only_offer_is_refused_with_488_naming_the_codec() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let out = sipp(&rig, "record_g729_refused.xml", &[], "u1").await;
    assert_ok(&out, &rig);
    assert!(rig.finished().await.is_empty());
    assert!(
        rig.db
            .active_recordings(&rig.tenant)
            .await
            .unwrap()
            .is_empty()
    );
}

const PARTY_C: &str =
    "This is Carol from compliance joining the call. Please confirm the amount before we proceed.";

/// A profile with `channels: PerStream` keeps each SIPREC stream of a three-party call in a
/// channel of its own: decoded by libopus, each channel holds its participant and not the
/// others, aligned, and the row says three channels. Stereo and mono profiles record the same
/// call in two channels (the third party with the second) and in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_stream_profile_keeps_each_participant_in_a_channel_of_their_own() {
    let mut rig = Rig::new(None, 10).await;
    let texts = [PARTY_A, PARTY_B, PARTY_C];
    let voices: Vec<Vec<i16>> = texts
        .iter()
        .map(|t| speech(rig.dir.path(), t, 8000))
        .collect();
    let pcap = rig.dir.path().join("call.pcap");
    let streams: Vec<_> = voices
        .iter()
        .enumerate()
        .map(|(k, v)| {
            rtp_stream(
                Codec::Pcmu,
                v,
                0x1111 * (k as u32 + 1),
                Duration::ZERO,
                None,
            )
        })
        .collect();
    write_pcap(&pcap, &streams);
    let talk = voices.iter().map(Vec::len).max().unwrap() as u64 / 8;
    let vars = [
        ("PT", Codec::Pcmu.pt().to_string()),
        ("RTPMAP", Codec::Pcmu.rtpmap().into()),
        ("PCAP", pcap.display().to_string()),
        ("PAUSE_MS", (talk + 500).to_string()),
    ];
    rig.edit(|c| c["media"] = serde_json::json!({"channels": "PerStream"}));
    rig.start().await;
    let mut finished = 0;
    let mut call = async |rig: &Rig| {
        let out = sipp(rig, "record_three_streams.xml", &vars, "u1").await;
        assert_ok(&out, rig);
        finished += 1;
        let mut rows = rig.wait_finished(finished, Duration::from_secs(30)).await;
        rows.sort_by_key(|r| r.start_time);
        rows.pop().unwrap()
    };
    let row = call(&rig).await;
    let pcm = check_recording_channels(&rig, &row, 3).await;
    let mut lags = Vec::new();
    for (c, channel) in pcm.iter().enumerate() {
        let scores: Vec<(f64, usize)> = voices
            .iter()
            .map(|v| match_audio(channel, v, 8000))
            .collect();
        let (own, lag) = scores[c];
        let other = scores
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != c)
            .map(|(_, (s, _))| *s)
            .fold(0.0, f64::max);
        assert!(
            own > 0.8 && own > other + 0.2,
            "channel {c} holds participant {c} ({own:.2}) and no other ({other:.2})"
        );
        lags.push(lag);
    }
    assert!(
        lags.iter().max().unwrap() - lags.iter().min().unwrap() <= 2,
        "channels aligned (lags {lags:?} frames)"
    );
    assert_eq!(row.participants.len(), 3);
    assert_eq!(row.direction, Direction::Conference);

    // The same call under a stereo profile, then a mono one: the channels hold the mixes.
    let mix = |parts: &[&Vec<i16>]| {
        let len = parts.iter().map(|p| p.len()).max().unwrap();
        (0..len)
            .map(|i| {
                parts
                    .iter()
                    .map(|p| i32::from(p.get(i).copied().unwrap_or(0)))
                    .sum::<i32>()
            })
            .map(|s| s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16)
            .collect::<Vec<i16>>()
    };
    rig.edit(|c| c["media"] = serde_json::json!({"channels": "Stereo"}));
    rig.configuration(1, 0).await;
    let row = call(&rig).await;
    let pcm = check_recording(&rig, &row).await;
    let left = match_audio(&pcm[0], &voices[0], 8000).0;
    let right = match_audio(&pcm[1], &mix(&[&voices[1], &voices[2]]), 8000).0;
    assert!(
        left > 0.8 && right > 0.8,
        "Stereo: the first party left ({left:.2}), the others right ({right:.2})"
    );
    rig.edit(|c| c["media"] = serde_json::json!({"channels": "Mono"}));
    rig.configuration(2, 0).await;
    let row = call(&rig).await;
    let pcm = check_recording_channels(&rig, &row, 1).await;
    let all = match_audio(&pcm[0], &mix(&[&voices[0], &voices[1], &voices[2]]), 8000).0;
    assert!(all > 0.8, "Mono: every party in the one channel ({all:.2})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_by_reinvite_is_silence_and_the_call_resumes() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let a = speech(rig.dir.path(), PARTY_A, 8000);
    let b = speech(rig.dir.path(), PARTY_B, 8000);
    // 2 s of talk, 2 s of hold (nothing sent), then the rest.
    let (talk, hold) = (Duration::from_secs(2), Duration::from_secs(2));
    let shift = |pcm: &[i16]| -> Vec<i16> {
        let cut = 16_000.min(pcm.len());
        let mut v = pcm[..cut].to_vec();
        v.extend(std::iter::repeat_n(0, 16_000));
        v.extend_from_slice(&pcm[cut..]);
        v
    };
    let (a2, b2) = (shift(&a), shift(&b));
    let skip = Some((talk, talk + hold));
    let pcap = rig.dir.path().join("hold.pcap");
    write_pcap(
        &pcap,
        &[
            rtp_stream(Codec::Pcmu, &a2, 0x4444, Duration::ZERO, skip),
            rtp_stream(Codec::Pcmu, &b2, 0x5555, Duration::ZERO, skip),
        ],
    );
    let rest = (a2.len().max(b2.len()) as u64 / 8).saturating_sub(4000) + 500;
    let out = sipp(
        &rig,
        "record_hold.xml",
        &[
            ("PCAP", pcap.display().to_string()),
            ("TALK_MS", "2000".into()),
            ("HOLD_MS", "2000".into()),
            ("PAUSE_MS", rest.to_string()),
        ],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    let pcm = check_recording(&rig, &row).await;
    let (aa, lag) = match_audio(&pcm[0], &a2, 8000);
    assert!(aa > 0.8, "party A around the hold ({aa:.2})");
    // The hold itself (with a margin for set-up lag) is silence on both channels.
    let from = (lag * 960) + 48_000 * 2 + 9_600;
    let to = (lag * 960) + 48_000 * 4 - 9_600;
    for ch in &pcm {
        assert!(
            rms(&ch[from..to]) < 50.0,
            "silence during hold: rms {:.1}",
            rms(&ch[from..to])
        );
    }
    assert!(
        rms(&pcm[0][to + 19_200..]) > 300.0,
        "audio after the call resumed"
    );
}

/// An OnDemand profile records a call paused until the source resumes it: the source sends
/// audio all along, offers its streams sendonly (still paused: nobody started the
/// recording), then inactive, then sendonly again (the resume). Only what follows the resume
/// is heard; before it the recording is silence, and the file keeps the session's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_recording_starts_paused_until_the_source_resumes() {
    let mut rig = Rig::new(None, 10).await;
    rig.set_rules(serde_json::json!({"allUsers": true, "mode": "OnDemand"}));
    rig.start().await;
    let twice = |pcm: Vec<i16>| [pcm.clone(), pcm].concat();
    let a = twice(speech(rig.dir.path(), PARTY_A, 8000));
    let b = twice(speech(rig.dir.path(), PARTY_B, 8000));
    let pcap = rig.dir.path().join("on-demand.pcap");
    write_pcap(
        &pcap,
        &[
            rtp_stream(Codec::Pcmu, &a, 0x6666, Duration::ZERO, None),
            rtp_stream(Codec::Pcmu, &b, 0x7777, Duration::ZERO, None),
        ],
    );
    let rest = (a.len().max(b.len()) as u64 / 8).saturating_sub(4000) + 500;
    let out = sipp(
        &rig,
        "record_hold.xml",
        &[
            ("PCAP", pcap.display().to_string()),
            ("TALK_MS", "2000".into()),
            ("HOLD_MS", "2000".into()),
            ("PAUSE_MS", rest.to_string()),
        ],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    let pcm = check_recording(&rig, &row).await;
    // The resume comes 4 s after the ACK at the earliest; a margin for the jitter delay.
    let resumed = 48_000 * 4 - 9_600;
    for ch in &pcm {
        assert!(
            rms(&ch[..resumed]) < 50.0,
            "silence until the source resumes: rms {:.1}",
            rms(&ch[..resumed])
        );
    }
    let after = 48_000 * 5;
    assert!(
        rms(&pcm[0][after..]) > 300.0 && rms(&pcm[1][after..]) > 300.0,
        "both parties heard after the resume: rms {:.1} and {:.1}",
        rms(&pcm[0][after..]),
        rms(&pcm[1][after..])
    );
    assert!(rig.logs().contains("recording starts paused"));
}

/// A row's participants as (number, name).
fn numbers_and_names(row: &Recording) -> Vec<(&str, &str)> {
    row.participants
        .iter()
        .map(|p| (p.number.as_str(), p.name.as_str()))
        .collect()
}

/// A started recorder, one call of `scenario` over UDP (its pauses `pause_ms` long), and the
/// call's committed row.
async fn one_call(scenario: &str, pause_ms: &str) -> (Rig, Recording) {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let out = sipp(&rig, scenario, &[("PAUSE_MS", pause_ms.into())], "u1").await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    (rig, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_rtp_is_recorded_as_silence_of_its_length() {
    let (rig, row) = one_call("record_no_rtp.xml", "1500").await;
    let pcm = check_recording(&rig, &row).await;
    assert!(pcm[0].len() >= 48_000 * 3 / 2, "{} samples", pcm[0].len());
    assert!(rms(&pcm[0]) < 5.0 && rms(&pcm[1]) < 5.0);
}

/// A metadata-only UPDATE (RFC 7866 §7.1.2: rs-metadata alone, a partial snapshot) is
/// answered 200 and adds its participant to the live call's row: the supervisor who joined is
/// listed after the two the INVITE named, each once, and the parties stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_only_update_adds_a_participant_to_the_call() {
    let (_rig, row) = one_call("record_metadata_update.xml", "700").await;
    let parties = numbers_and_names(&row);
    assert_eq!(
        parties,
        [
            ("1001", "Alice Agent"),
            ("+15551234567", "Bob Customer"),
            ("2002", "Carol Supervisor")
        ]
    );
    assert_eq!(
        (row.calling.number.as_str(), row.called.number.as_str()),
        ("1001", "+15551234567")
    );
}

/// A SIPREC session offered without metadata, by a source that accepts metadata requests, is
/// asked for a snapshot once it is confirmed (RFC 7866 §7.3: an UPDATE whose body is an
/// `application/rs-metadata-request`, which sipp checks); the snapshot the source then sends
/// fills the call's participants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_metadata_asks_for_a_snapshot_and_lists_its_participants() {
    let (_rig, row) = one_call("record_metadata_snapshot.xml", "700").await;
    let parties = numbers_and_names(&row);
    assert_eq!(
        parties,
        [("1001", "Alice Agent"), ("+15551234567", "Bob Customer")]
    );
}

/// A recorded call carries the groups of the users its parties' numbers belong to, as they
/// were when it was made: the profile records alice (1001, desk); the other party's number is
/// bob's (sales). A later move of alice leaves the recording with desk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_the_groups_of_its_parties_users_at_call_time() {
    let mut rig = Rig::new(None, 10).await;
    let (db, t) = (&rig.db, rig.tenant.as_str());
    let mut groups = Vec::new();
    for name in ["desk", "sales", "audit"] {
        groups.push(db.create_group(t, name, "").await.unwrap().id);
    }
    let (desk, sales, audit) = (groups[0], groups[1], groups[2]);
    let mut users = Vec::new();
    for (name, group, number) in [("alice", desk, "1001"), ("bob", sales, "+15551234567")] {
        let u = db
            .create_user(t, &NewUser::local(name, name))
            .await
            .unwrap();
        db.add_member(t, group, u.id).await.unwrap();
        db.add_extension(t, number, u.id).await.unwrap();
        users.push(u.id);
    }
    rig.set_rules(serde_json::json!({"groups": ["desk"]}));
    rig.start().await;
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "500".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(row.owner_user_id, Some(users[0]), "recorded for alice");
    let (db, t) = (&rig.db, rig.tenant.as_str());
    let captured = |id| async move {
        let mut g = db.recording_group_ids(t, id).await.unwrap();
        g.sort();
        g
    };
    let mut both = vec![desk, sales];
    both.sort();
    assert_eq!(captured(row.id).await, both);
    db.remove_member(t, desk, users[0]).await.unwrap();
    db.add_member(t, audit, users[0]).await.unwrap();
    assert_eq!(captured(row.id).await, both, "a later move changes nothing");
}

/// A call with more than two participants is a meeting (compliance-recorder F-23, F-24, F-40):
/// Alice (1001) and Carol (2002) are users, the guest is not, so it is an internal meeting with
/// external participants, owned by Alice (listed first). Dave (3003) joins one pause in, Carol
/// leaves after two: the row keeps when, and each user who attended has the part they attended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_more_than_two_participants_is_a_meeting_with_each_users_part() {
    let mut rig = Rig::new(None, 10).await;
    let (db, t) = (&rig.db, rig.tenant.as_str());
    let mut users = Vec::new();
    for (name, number) in [("alice", "1001"), ("carol", "2002"), ("dave", "3003")] {
        let u = db
            .create_user(t, &NewUser::local(name, name))
            .await
            .unwrap();
        db.add_extension(t, number, u.id).await.unwrap();
        users.push(u.id);
    }
    let (alice, carol, dave) = (users[0], users[1], users[2]);
    rig.start().await;
    let pause = 800;
    let out = sipp(
        &rig,
        "record_meeting.xml",
        &[("PAUSE_MS", pause.to_string())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(row.direction, Direction::Conference);
    assert_eq!(row.call_type, CallType::InternalMeetingExternalParticipants);
    assert_eq!(row.owner_user_id, Some(alice));
    let windows: Vec<(&str, Option<i64>, Option<i64>)> = row
        .participants
        .iter()
        .map(|p| (p.number.as_str(), p.joined_ms, p.left_ms))
        .collect();
    let [
        ("1001", None, None),
        ("2002", None, Some(left)),
        ("+15551234567", None, None),
        ("3003", Some(joined), None),
    ] = windows[..]
    else {
        panic!("participants and their windows: {windows:?}");
    };
    assert!(
        (pause..2 * pause).contains(&joined),
        "Dave joined at {joined} ms"
    );
    assert!(
        (2 * pause..3 * pause).contains(&left),
        "Carol left at {left} ms"
    );
    // The attendance is sealed with the call's other details.
    check_recording(&rig, &row).await;
    let hex_digest = row.metadata_digest.as_deref().expect("sealed");
    let digest: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&hex_digest[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    assert_eq!(row.sealed_fields(&digest), Some(SealedFields::CallDetails));
    let mut edited = row.clone();
    edited.participants[3].joined_ms = Some(0);
    assert_eq!(
        edited.sealed_fields(&digest),
        None,
        "a widened part is noticed"
    );
    let mut attendees = rig
        .db
        .recording_audience(&rig.tenant, row.id)
        .await
        .unwrap()
        .attendees;
    attendees.sort_by_key(|a| users.iter().position(|u| *u == a.user_id));
    let parts: Vec<_> = attendees
        .iter()
        .map(|a| (a.user_id, a.joined_ms, a.left_ms))
        .collect();
    assert_eq!(
        parts,
        [
            (alice, 0, None),
            (carol, 0, Some(left)),
            (dave, joined, None)
        ]
    );
}

/// One profile per user: alice (1001, desk) is selected by this profile and by an older one.
/// The recorder reports the conflict on `/status` and answers her call without recording it
/// (not even as an unassigned call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_an_older_profile_selects_is_left_to_it() {
    let mut rig = Rig::new(None, 10).await;
    let (db, t) = (&rig.db, rig.tenant.as_str());
    let desk = db.create_group(t, "desk", "").await.unwrap().id;
    let alice = db
        .create_user(t, &NewUser::local("alice", "Alice"))
        .await
        .unwrap();
    db.add_member(t, desk, alice.id).await.unwrap();
    db.add_extension(t, "1001", alice.id).await.unwrap();
    let others = rig.dir.path().join("other-profiles.json");
    let older = |groups: &[&str]| {
        serde_json::json!([{"name": "older", "groups": groups, "created": "2020-01-01T00:00:00Z"}])
            .to_string()
    };
    std::fs::write(&others, older(&["desk"])).unwrap();
    rig.edit(|c| {
        c["rules"] = serde_json::json!({"groups": ["desk"]});
        c["otherProfilesFile"] = serde_json::json!(others);
        c["profileCreated"] = serde_json::json!("2026-01-01T00:00:00Z");
    });
    rig.start().await;
    let http = rig.http;
    let status = poll(
        "the conflict on /status",
        Duration::from_secs(30),
        || async move {
            let (_, body) = get(http, "/status").await?;
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status["conflicts"].as_array()?.len() == 1).then_some(status)
        },
    )
    .await;
    assert_eq!(
        status["conflicts"],
        serde_json::json!([{"user": "alice", "profile": "older"}])
    );
    assert_eq!(status["usersMatched"], 0);
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "300".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let metrics = get(http, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("callvault_recorder_sessions_not_recorded_total 1"),
        "{metrics}"
    );
    assert!(rig.finished().await.is_empty(), "not recorded here");
    assert!(
        rig.db
            .active_recordings(&rig.tenant)
            .await
            .unwrap()
            .is_empty()
    );
}

/// RFC 3261 §13.3.1.4: a 2xx never acknowledged within 64*T1 (32 s) ends the dialog with a
/// BYE from the recorder; what was recorded until then is committed. sipp fails unless the
/// BYE arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_never_acknowledged_is_ended_by_the_recorders_bye_and_committed() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let out = sipp(&rig, "record_no_ack.xml", &[], "u1").await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    let pcm = check_recording(&rig, &row).await;
    // The session lasted until the recorder gave up waiting for the ACK.
    assert!(pcm[0].len() >= 48_000 * 30, "{} samples", pcm[0].len());
    let status = get(rig.http, "/status").await.unwrap().1;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["activeSessions"], 0, "{status}");
}

/// A source that vanishes mid-call (no BYE, no more RTP) is ended by the profile's media
/// timeout (2 s here) with a BYE of the recorder's (sipp fails unless it arrives). The
/// recording is committed complete with stop reason media-timeout; it holds the call's audio
/// and the 2 s the recorder waited, and its row's duration is that audio. The session's
/// capacity is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_vanishes_is_ended_by_the_media_timeout() {
    let mut rig = Rig::new(None, 10).await;
    rig.edit(|config| config["mediaTimeoutSeconds"] = serde_json::json!(2));
    rig.start().await;
    let a = speech(rig.dir.path(), PARTY_A, 8000);
    let b = speech(rig.dir.path(), PARTY_B, 8000);
    let pcap = rig.dir.path().join("vanish.pcap");
    write_pcap(
        &pcap,
        &[
            rtp_stream(Codec::Pcmu, &a, 0x8888, Duration::ZERO, None),
            rtp_stream(Codec::Pcmu, &b, 0x9999, Duration::ZERO, None),
        ],
    );
    let out = sipp(
        &rig,
        "record_vanish.xml",
        &[("PCAP", pcap.display().to_string())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    let pcm = check_recording(&rig, &row).await;
    assert_eq!(row.stop_reason.as_deref(), Some("media-timeout"), "{row:?}");
    assert_eq!(
        row.release_cause,
        Some(callvault_store::db::ReleaseCause::Failure)
    );
    let talk = a.len().max(b.len()) as f64 / 8000.0;
    let session = (row.end_time.unwrap() - row.start_time) as f64 / 1e6;
    assert!(
        session >= talk + 1.9 && session < talk + 3.5,
        "{talk:.2} s of audio and the 2 s timeout, not {session:.2} s"
    );
    let held = pcm[0].len() as f64 / 48_000.0;
    assert!(
        (row.duration_ms as f64 / 1000.0 - held).abs() <= 0.021,
        "duration {} ms, audio held {held:.3} s",
        row.duration_ms
    );
    let (aa, _) = match_audio(&pcm[0], &a, 8000);
    assert!(aa > 0.8, "the call's audio is recorded ({aa:.2})");
    let (_, metrics) = get(rig.http, "/metrics").await.unwrap();
    assert!(
        metrics.contains("callvault_recorder_sessions_ended_total{reason=\"media-timeout\"} 1"),
        "{metrics}"
    );
    let status = get(rig.http, "/status").await.unwrap().1;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["activeSessions"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_a_clean_4xx_and_no_recording() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    for scenario in ["record_malformed_metadata.xml", "record_malformed_sdp.xml"] {
        let out = sipp(&rig, scenario, &[], "u1").await;
        assert_ok(&out, &rig);
    }
    // Still serving: a normal call right after is recorded.
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "300".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let rows = rig.wait_finished(1, Duration::from_secs(30)).await;
    assert_eq!(rows.len(), 1, "only the well-formed call was recorded");
    let (status, body) = get(rig.http, "/status").await.unwrap();
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["profile"], "compliance");
    assert_eq!(status["activeSessions"], 0);
    assert_eq!(status["capacity"], 10);
    assert_eq!(status["draining"], false);
    assert!(status["lastRecordingTime"].as_str().is_some(), "{status}");
    let (_, metrics) = get(rig.http, "/metrics").await.unwrap();
    assert!(
        metrics.contains("callvault_recorder_sessions_rejected_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("callvault_recorder_commits_total 1"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// Starts a long call in the background and waits until its row shows it being recorded.
async fn live_calls(
    rig: &Rig,
    n: usize,
    pause_ms: u64,
) -> Vec<tokio::task::JoinHandle<std::process::Output>> {
    let a = speech(rig.dir.path(), PARTY_A, 8000);
    let pcap = rig.dir.path().join("long.pcap");
    write_pcap(
        &pcap,
        &[
            rtp_stream(Codec::Pcmu, &a, 0x6666, Duration::ZERO, None),
            rtp_stream(Codec::Pcmu, &a, 0x7777, Duration::ZERO, None),
        ],
    );
    let mut calls = Vec::new();
    for _ in 0..n {
        let vars = [
            ("PT", "0".to_owned()),
            ("RTPMAP", "PCMU/8000".to_owned()),
            ("PCAP", pcap.display().to_string()),
            ("PAUSE_MS", pause_ms.to_string()),
        ];
        let (sip, dir) = (rig.sip, rig.dir.path().to_owned());
        calls.push(tokio::spawn(async move {
            let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (*k, v.clone())).collect();
            run_sipp(sip, &dir, "record_two_streams.xml", &vars, "u1").await
        }));
    }
    let (db, tenant) = (rig.db.clone(), rig.tenant.clone());
    poll("the calls to be recorded", Duration::from_secs(20), || {
        let (db, tenant) = (db.clone(), tenant.clone());
        async move { (db.active_recordings(&tenant).await.unwrap().len() >= n).then_some(()) }
    })
    .await;
    calls
}

/// Size of the largest media file in the spool.
fn spooled_bytes(rig: &Rig) -> u64 {
    std::fs::read_dir(rig.dir.path().join("spool"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "cvr"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

async fn wait_exit(rig: &mut Rig, limit: Duration) -> std::process::ExitStatus {
    let child = rig.child.as_mut().unwrap();
    let status = tokio::time::timeout(limit, child.wait()).await;
    let status =
        status.unwrap_or_else(|_| panic!("the recorder did not exit; log:\n{}", rig.logs()));
    rig.child = None;
    status.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_call_is_recovered_at_restart_as_incomplete() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let calls = live_calls(&rig, 1, 20_000).await;
    // Some whole encrypted chunks (8 KiB each) reached the spool.
    let rig_ref = &rig;
    poll(
        "audio in the spool",
        Duration::from_secs(20),
        || async move { (spooled_bytes(rig_ref) > 20_000).then_some(()) },
    )
    .await;
    rig.signal("-KILL");
    wait_exit(&mut rig, Duration::from_secs(10)).await;
    for c in calls {
        c.abort();
    }
    assert_eq!(
        rig.db.active_recordings(&rig.tenant).await.unwrap().len(),
        1,
        "the row still says recording"
    );
    rig.start().await;
    let row = rig
        .wait_finished(1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(row.status, RecordingStatus::Incomplete);
    assert_eq!(
        row.sha256, None,
        "the recorder cannot digest what it cannot decrypt"
    );
    assert_eq!(row.signature, None);
    assert!(row.end_time.unwrap() > row.start_time);
    let data = rig
        .storage
        .get(row.object_key.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(row.size_bytes, Some(data.len() as i64));
    let mut ring = KeyRing::new();
    ring.insert(rig.key.clone());
    let mut ogg = Vec::new();
    let rec = recover_truncated(&data[..], &ring, &mut ogg).unwrap();
    assert!(!rec.complete);
    assert_eq!(
        rec.discarded_bytes, 0,
        "the spool file was cut at a chunk boundary"
    );
    assert!(ogg.len() >= 16 * 1024, "{} bytes recovered", ogg.len());
    assert_eq!(&ogg[..4], b"OggS");
    // The recording lasts as long as the audio it holds, not until the restart.
    let audio_ms = ogg_audio_ms(&ogg);
    assert!(audio_ms > 1_000, "{audio_ms} ms of audio recovered");
    assert!(
        (row.duration_ms - audio_ms).abs() <= 1,
        "duration {} ms, audio {audio_ms} ms",
        row.duration_ms
    );
    let reason = row.stop_reason.as_deref().unwrap_or_default();
    let at: jiff::Timestamp = reason
        .strip_prefix("recovered after crash at ")
        .unwrap_or_else(|| panic!("stop reason {reason:?}"))
        .parse()
        .unwrap();
    assert!(
        at.as_microsecond() >= row.start_time && at.as_microsecond() <= row.updated_at,
        "crash time {at} outside the call"
    );
    assert_eq!(
        row.release_cause, None,
        "how the call itself ended is unknown"
    );
    assert!(
        rig.db
            .active_recordings(&rig.tenant)
            .await
            .unwrap()
            .is_empty()
    );
    // The spool files go once object and row are committed: just after the row.
    let rig_ref = &rig;
    poll(
        "the spool empty once committed",
        Duration::from_secs(10),
        || async move { (spooled_bytes(rig_ref) == 0).then_some(()) },
    )
    .await;
}

/// The cluster path of issue 15: the recorder reads its mounted configuration again and
/// applies it in place. With a call in flight, the SIP port and the bitrate change: the new
/// port answers at once, the live call goes on to its end on the old port, and both are
/// committed. A broken file is refused (visible in `/status` and the metrics) while the last
/// good configuration keeps recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configuration_file_applies_in_place_with_a_call_in_flight() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let calls = live_calls(&rig, 1, 8_000).await;
    let moved = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    rig.edit(|c| {
        c["sip"]["port"] = moved.port().into();
        c["media"] = serde_json::json!({"bitrate": 24_000});
    });
    let status = rig.configuration(1, 0).await;
    assert_eq!(status["health"]["state"], "ready", "{status}");
    assert_eq!(get(rig.http, "/readyz").await.unwrap().0, 200);
    // The old port takes no new call (a source's probe gets 503) but still ends its own.
    let old = std::mem::replace(&mut rig.sip, moved);
    let refused = run_sipp(old, rig.dir.path(), "options_refused.xml", &[], "u1").await;
    assert_ok(&refused, &rig);
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "500".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    for c in calls {
        assert_ok(&c.await.unwrap(), &rig);
    }
    let rows = rig.wait_finished(2, Duration::from_secs(30)).await;
    for row in &rows {
        assert_eq!(row.status, RecordingStatus::Available);
    }

    std::fs::write(rig.dir.path().join("recorder.yaml"), "sip: [not, a, map]").unwrap();
    let status = rig.configuration(1, 1).await;
    assert!(
        status["configuration"]["lastRefusal"]
            .as_str()
            .is_some_and(|r| r.contains("recorder.yaml")),
        "{status}"
    );
    let (_, metrics) = get(rig.http, "/metrics").await.unwrap();
    assert!(
        metrics.contains("callvault_recorder_config_refused_total 1"),
        "{metrics}"
    );
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "500".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    rig.wait_finished(3, Duration::from_secs(30)).await;
}

/// A TCP forwarder in front of MinIO that can be cut, as a storage outage.
struct Proxy {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(addr: SocketAddr) -> Proxy {
        let upstream: SocketAddr = env("CALLVAULT_TEST_S3_ENDPOINT")
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Proxy {
            addr,
            task: Some(task),
        }
    }

    /// Closes the listener and every forwarded connection.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_delays_commits_and_loses_nothing() {
    let mut proxy = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await;
    let mut rig = Rig::new(Some(format!("http://{}", proxy.addr)), 10).await;
    rig.start().await;
    proxy.cut();
    for _ in 0..2 {
        let out = sipp(
            &rig,
            "record_no_rtp.xml",
            &[("PAUSE_MS", "800".into())],
            "u1",
        )
        .await;
        assert_ok(&out, &rig);
    }
    let http = rig.http;
    poll(
        "commit attempts to fail",
        Duration::from_secs(30),
        || async move {
            let (_, m) = get(http, "/metrics").await?;
            (!m.contains("callvault_recorder_commit_failures_total 0")).then_some(())
        },
    )
    .await;
    assert!(
        rig.finished().await.is_empty(),
        "nothing can be committed while storage is down"
    );
    assert_eq!(
        rig.db.active_recordings(&rig.tenant).await.unwrap().len(),
        2
    );
    let _proxy = Proxy::start(proxy.addr).await;
    let rows = rig.wait_finished(2, Duration::from_secs(90)).await;
    for row in &rows {
        check_recording(&rig, row).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_live_calls_and_commits_them_all() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let calls = live_calls(&rig, 3, 4_000).await;
    rig.signal("-TERM");
    let http = rig.http;
    poll(
        "readiness to drop while draining",
        Duration::from_secs(5),
        || async move {
            match get(http, "/readyz").await {
                Some((503, body)) if body.contains("draining") => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let (_, status) = get(http, "/status").await.unwrap();
    assert!(status.contains(r#""draining":true"#), "{status}");
    for c in calls {
        let out = c.await.unwrap();
        assert_ok(&out, &rig);
    }
    let exit = wait_exit(&mut rig, Duration::from_secs(40)).await;
    assert!(exit.success(), "{exit}");
    let rows = rig.finished().await;
    assert_eq!(rows.len(), 3, "every live call committed before exit");
    for row in &rows {
        assert_eq!(row.status, RecordingStatus::Available);
    }
}

/// A call still live when the drain grace runs out is cut, and its source told: the
/// recorder's BYE carries `Reason: SIP;cause=503` (sipp checks it and answers), the recording
/// is committed with stop reason `shutdown`, and the recorder exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_live_after_the_drain_grace_gets_the_recorders_bye() {
    let mut rig = Rig::new(None, 10).await;
    rig.edit(|config| config["drainGraceSeconds"] = serde_json::json!(1));
    rig.start().await;
    let (sip, dir) = (rig.sip, rig.dir.path().to_owned());
    let call =
        tokio::spawn(
            async move { run_sipp(sip, &dir, "record_until_shutdown.xml", &[], "u1").await },
        );
    let (db, tenant) = (rig.db.clone(), rig.tenant.clone());
    poll("the call to be recorded", Duration::from_secs(20), || {
        let (db, tenant) = (db.clone(), tenant.clone());
        async move { (db.active_recordings(&tenant).await.ok()?.len() == 1).then_some(()) }
    })
    .await;
    rig.signal("-TERM");
    let out = call.await.unwrap();
    assert_ok(&out, &rig);
    let exit = wait_exit(&mut rig, Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit}");
    let rows = rig.finished().await;
    assert_eq!(rows.len(), 1, "the cut call is committed");
    assert_eq!(
        rows[0].stop_reason.as_deref(),
        Some("shutdown"),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[0].status, RecordingStatus::Available);
}

/// The active alarm of type `kind` in the rig's tenant, if there is one.
async fn active_alarm(rig: &Rig, kind: &str) -> Option<callvault_store::db::Alarm> {
    rig.db
        .list_alarms(&rig.tenant, false, 50)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.alarm_type == kind)
}

/// Polls `/metrics` until it has the line `line`.
async fn metrics_line(rig: &Rig, line: &str) {
    let http = rig.http;
    let what = format!("the metric line {line:?}");
    poll(&what, Duration::from_secs(30), || async move {
        let (_, m) = get(http, "/metrics").await?;
        m.lines().any(|l| l == line).then_some(())
    })
    .await;
}

/// A StorageTarget that cannot even be opened (its credentials Secret not mounted yet) does
/// not stop the recorder: it takes calls into its spool, says so (alarm, metric, `/status`),
/// and once the credentials appear commits what waited, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_that_cannot_be_opened_spools_calls_and_recovers_without_restart() {
    let mut rig = Rig::new(None, 10).await;
    let secret = rig
        .dir
        .path()
        .join("creds")
        .join(Credentials::SECRET_ACCESS_KEY);
    let saved = std::fs::read(&secret).unwrap();
    std::fs::remove_file(&secret).unwrap();
    rig.start().await;
    let alarm = poll("the storage alarm", Duration::from_secs(30), || async {
        active_alarm(&rig, "STORAGE_UNREACHABLE").await
    })
    .await;
    assert_eq!(alarm.severity, AlarmSeverity::Critical);
    assert!(
        alarm.message.contains("StorageTarget vault") && alarm.message.contains("secretAccessKey"),
        "{}",
        alarm.message
    );
    metrics_line(&rig, "callvault_recorder_storage_reachable 0").await;
    let (_, status) = get(rig.http, "/status").await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["storage"]["state"], "unreachable", "{status}");

    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "800".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let http = rig.http;
    poll(
        "commit attempts to fail",
        Duration::from_secs(30),
        || async move {
            let (_, m) = get(http, "/metrics").await?;
            (!m.contains("callvault_recorder_commit_failures_total 0")).then_some(())
        },
    )
    .await;
    assert!(rig.finished().await.is_empty(), "nothing stored yet");

    // The Secret is mounted: the next retry opens the storage.
    std::fs::write(&secret, saved).unwrap();
    let rows = rig.wait_finished(1, Duration::from_secs(60)).await;
    check_recording(&rig, &rows[0]).await;
    assert_eq!(rows[0].status, RecordingStatus::Available);
    poll(
        "the storage alarm to clear",
        Duration::from_secs(30),
        || async {
            active_alarm(&rig, "STORAGE_UNREACHABLE")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    metrics_line(&rig, "callvault_recorder_storage_reachable 1").await;
    let log = rig.db.list_alarms(&rig.tenant, true, 50).await.unwrap();
    assert!(
        log.iter()
            .any(|a| a.alarm_type == "STORAGE_UNREACHABLE" && a.cleared_at.is_some()),
        "the alarm is kept, cleared: {log:?}"
    );
}

/// The spool's thresholds with the real volume's free space (read with statvfs): set so the
/// volume is above the alarm threshold the recorder raises a Major alarm and still records;
/// set so it has less free space than a new call needs, an offer gets 503 with Retry-After
/// (counted), `/readyz` says why, the alarm turns Critical; set back, calls are recorded
/// again. Each change is a configuration edit applied in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_new_calls_with_503_and_alarms() {
    let mut rig = Rig::new(None, 10).await;
    rig.edit(|c| c["spool"] = serde_json::json!({"alarmPercent": 1, "criticalPercent": 100}));
    rig.start().await;
    let major = poll("the spool alarm", Duration::from_secs(30), || async {
        active_alarm(&rig, "SPOOL_DISK_FULL").await
    })
    .await;
    assert_eq!(major.severity, AlarmSeverity::Major, "{}", major.message);
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "300".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    rig.wait_finished(1, Duration::from_secs(30)).await;

    // More free space needed than any volume has (1 PiB).
    rig.edit(|c| c["spool"]["minFreeMiB"] = serde_json::json!(1u64 << 30));
    rig.configuration(1, 0).await;
    let out = sipp(&rig, "record_refused.xml", &[], "u1").await;
    assert_ok(&out, &rig);
    // A source probing with OPTIONS marks the recorder down too.
    let out = sipp(&rig, "options_refused.xml", &[], "u1").await;
    assert_ok(&out, &rig);
    let (ready, body) = get(rig.http, "/readyz").await.unwrap();
    assert_eq!(ready, 503);
    assert!(body.contains("spool full"), "{body}");
    let critical = poll(
        "the alarm to turn Critical",
        Duration::from_secs(30),
        || async {
            active_alarm(&rig, "SPOOL_DISK_FULL")
                .await
                .filter(|a| a.severity == AlarmSeverity::Critical)
        },
    )
    .await;
    assert!(
        critical.message.contains("new calls are refused (503)"),
        "{}",
        critical.message
    );
    metrics_line(&rig, "callvault_recorder_spool_refusals_total 1").await;
    metrics_line(&rig, "callvault_recorder_sessions_rejected_total 1").await;

    rig.edit(|c| c["spool"] = serde_json::json!({"alarmPercent": 99, "criticalPercent": 100}));
    rig.configuration(2, 0).await;
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "300".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    rig.wait_finished(2, Duration::from_secs(30)).await;
    poll(
        "the spool alarm to clear",
        Duration::from_secs(30),
        || async {
            active_alarm(&rig, "SPOOL_DISK_FULL")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// Storage that fails while the recorder runs, fixed by editing the StorageTarget (here: its
/// endpoint): the edit is applied in place and the recordings waiting in the spool are
/// committed to the new endpoint at once, without a restart and without waiting out the
/// retry back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_target_fixed_by_an_edit_takes_the_waiting_recordings_at_once() {
    let mut proxy = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await;
    let mut rig = Rig::new(Some(format!("http://{}", proxy.addr)), 10).await;
    rig.start().await;
    proxy.cut();
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "500".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);
    let alarm = poll("the storage alarm", Duration::from_secs(60), || async {
        active_alarm(&rig, "STORAGE_UNREACHABLE").await
    })
    .await;
    assert!(
        alarm.message.contains("1 recordings wait"),
        "{}",
        alarm.message
    );
    assert!(rig.finished().await.is_empty());
    rig.edit(|c| c["storage"]["endpoint"] = env("CALLVAULT_TEST_S3_ENDPOINT").into());
    rig.configuration(1, 0).await;
    // Well inside the back-off the failed attempts reached.
    let rows = rig.wait_finished(1, Duration::from_secs(10)).await;
    check_recording(&rig, &rows[0]).await;
    poll(
        "the storage alarm to clear",
        Duration::from_secs(30),
        || async {
            active_alarm(&rig, "STORAGE_UNREACHABLE")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// A self-signed server certificate for `name` made by OpenSSL (an independent issuer): a
/// server's, not a CA's, as TLS clients other than OpenSSL refuse a CA certificate presented as
/// a server's.
fn self_signed(key: &Path, cert: &Path, name: &str) {
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
}

/// A TLS transport added without a usable certificate does not listen and says so at once
/// (`/readyz` 503 naming the missing file, a bind failure in the metrics) while the recorder
/// goes on recording over UDP; when the certificate is written, TLS listens without a restart
/// and an independent TLS client (OpenSSL) gets its OPTIONS answered; then `callvault call`
/// records a call over TLS with SRTP, and refuses a recorder whose certificate it cannot check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_transport_without_its_certificate_is_refused_visibly_until_the_certificate_comes() {
    let mut rig = Rig::new(None, 10).await;
    rig.start().await;
    let tls_dir = rig.dir.path().join("sip-tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let tls = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
    rig.edit(|c| {
        c["sip"]["transports"] = serde_json::json!(["UDP", "TLS"]);
        c["sip"]["tlsPort"] = tls.port().into();
        c["sip"]["tlsDir"] = serde_json::json!(tls_dir);
    });
    let http = rig.http;
    let reason = poll(
        "/readyz to refuse",
        Duration::from_secs(30),
        || async move {
            get(http, "/readyz")
                .await
                .filter(|(s, _)| *s == 503)
                .map(|(_, body)| body)
        },
    )
    .await;
    assert!(reason.contains("tls.crt"), "{reason}");
    let (_, metrics) = get(rig.http, "/metrics").await.unwrap();
    assert!(
        !metrics.contains("callvault_recorder_sip_bind_failures_total 0"),
        "{metrics}"
    );
    // The previous listener still takes calls meanwhile.
    let out = sipp(
        &rig,
        "record_no_rtp.xml",
        &[("PAUSE_MS", "500".into())],
        "u1",
    )
    .await;
    assert_ok(&out, &rig);

    self_signed(
        &tls_dir.join("tls.key"),
        &tls_dir.join("tls.crt"),
        "localhost",
    );
    poll("the TLS listener", Duration::from_secs(30), || async move {
        (get(http, "/readyz").await.map(|(s, _)| s) == Some(200)).then_some(())
    })
    .await;

    let options = "OPTIONS sip:rec@localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\n\
                   From: <sip:src@127.0.0.1>;tag=src\r\nTo: <sip:rec@localhost>\r\nCall-ID: tls-probe\r\n\
                   CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let mut client = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &tls.to_string()])
        .arg("-CAfile")
        .arg(tls_dir.join("tls.crt"))
        .args([
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(options.as_bytes())
        .await
        .unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut stdout, &mut buf)
                .await
                .unwrap();
            assert!(
                n > 0,
                "connection closed: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    assert!(
        answered.is_ok() && text.starts_with("SIP/2.0 200"),
        "{text}"
    );

    // The call client over TLS, with SRTP: the secure call records like a plain one.
    let tls_call = |ca: PathBuf| {
        tokio::process::Command::new(BIN)
            .args(["call", "--to", &format!("sips:localhost:{}", tls.port())])
            .args(["--transport", "tls", "--tls-ca"])
            .arg(ca)
            .args(["--srtp", "AES_CM_128_HMAC_SHA1_80", "--duration", "2"])
            .args(["--from-number", "+15550177001"])
            .output()
    };
    let out = tls_call(tls_dir.join("tls.crt")).await.unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && summary.contains("\"callsCompleted\": 1"),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rig.wait_finished(2, Duration::from_secs(30)).await;
    let row = rows
        .iter()
        .find(|r| r.calling.number == "+15550177001")
        .expect("the TLS call's recording");
    for (channel, pcm) in check_recording(&rig, row).await.iter().enumerate() {
        let rms = (pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len().max(1) as f32).sqrt();
        assert!(
            rms > 0.05,
            "channel {channel} of the TLS call is silent ({rms})"
        );
    }
    // A certificate it cannot check is refused before any call is placed.
    let other = rig.dir.path().join("other-ca.pem");
    self_signed(&rig.dir.path().join("other-ca.key"), &other, "other");
    let out = tls_call(other).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("TLS handshake"),
        "{stderr}"
    );
}
