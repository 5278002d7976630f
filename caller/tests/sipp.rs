//! The client against sipp (Debian package `sip-tester`), an independent SIP implementation
//! playing the recording server. sipp checks the INVITE (multipart with SDP and rs-metadata,
//! two labelled send-only streams) and answers with an SDP pointing each stream at a UDP socket
//! this test owns, so the test sees the RTP exactly as a recorder would receive it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callvault_caller::{CallOptions, G711, Summary};
use callvault_recorder::media::g711::{decode_alaw, decode_ulaw};
use callvault_recorder::media::rtp::{Packet, parse};
use callvault_recorder::sip::transport::Transport;
use tokio::sync::watch;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

fn free_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// sipp running a server scenario on a free port.
struct Sipp {
    child: tokio::process::Child,
    port: u16,
    messages: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts sipp as a UAS of `scenario_file` and waits until it listens. The ports handed
    /// to it were free when picked; when another test took one meanwhile (sipp says it cannot
    /// bind and exits), it is started again on new ones.
    async fn start(
        scenario_file: &str,
        transport: Transport,
        calls: u32,
        keys: &[(&str, String)],
    ) -> Self {
        for _ in 0..4 {
            let mut sipp = Self::spawn(scenario_file, transport, calls, keys);
            if sipp.wait_listening(transport).await {
                return sipp;
            }
            let out = sipp.child.wait_with_output().await.unwrap();
            let said = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(
                said.contains("Unable to bind"),
                "sipp exited ({}) before it listened:\n{said}",
                out.status
            );
        }
        panic!("sipp {scenario_file}: no free port in four tries");
    }

    fn spawn(
        scenario_file: &str,
        transport: Transport,
        calls: u32,
        keys: &[(&str, String)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let messages = dir.path().join("messages.log");
        let port = free_port();
        let mode = match transport {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
            Transport::Tls => panic!("Debian's sipp is built without TLS"),
        };
        let mut cmd = tokio::process::Command::new("sipp");
        cmd.args(["-sf", scenario(scenario_file).to_str().unwrap()])
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", mode])
            .args(["-mp", &free_port().to_string()])
            .args([
                "-m",
                &calls.to_string(),
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
            ])
            .args(["-trace_msg", "-message_file", messages.to_str().unwrap()])
            .current_dir(dir.path())
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in keys {
            cmd.args(["-key", k, v]);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("sipp is not installed: these tests need the Debian package sip-tester")
            }
            Err(e) => panic!("cannot start sipp: {e}"),
        };
        Self {
            child,
            port,
            messages,
            _dir: dir,
        }
    }

    /// Polls until sipp holds its port (binding it ourselves fails): `true`; `false` when sipp
    /// exited first. Fails after a deadline.
    async fn wait_listening(&mut self, transport: Transport) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let taken = match transport {
                Transport::Udp => UdpSocket::bind((Ipv4Addr::LOCALHOST, self.port)).is_err(),
                Transport::Tcp | Transport::Tls => {
                    TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).is_err()
                }
            };
            if taken {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "sipp did not bind port {} within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn target(&self) -> String {
        format!("sip:srs@127.0.0.1:{}", self.port)
    }

    /// Waits for sipp to finish its calls and fails with its output if it saw a problem.
    async fn finish(self) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .expect("sipp did not exit within 60 s")
            .unwrap();
        let log = std::fs::read_to_string(&self.messages).unwrap_or_default();
        assert!(
            out.status.success(),
            "sipp failed ({}):\n{}\n{}\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        log
    }
}

/// One received RTP packet: marker, payload type, sequence number, timestamp, payload.
type RtpSeen = (bool, u8, u16, u32, Vec<u8>);

/// RTP packets received on one socket, grouped by SSRC.
#[derive(Debug, Default, Clone)]
struct Received {
    by_ssrc: BTreeMap<u32, Vec<RtpSeen>>,
}

/// A UDP socket standing where a recorder's RTP port would be.
fn rtp_sink() -> (u16, Arc<Mutex<Received>>) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let seen = Arc::new(Mutex::new(Received::default()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        // Ends when the test drops its handle and the socket stays idle.
        while Arc::strong_count(&out) > 1 {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            if let Ok(Packet::Rtp(p)) = parse(&buf[..n]) {
                out.lock()
                    .unwrap()
                    .by_ssrc
                    .entry(p.ssrc)
                    .or_default()
                    .push((
                        p.marker,
                        p.payload_type,
                        p.sequence,
                        p.timestamp,
                        p.payload.to_vec(),
                    ));
            }
        }
    });
    (port, seen)
}

/// Waits until the sink holds `packets` packets in total (RTP can trail the BYE by a moment).
async fn wait_for_packets(sink: &Arc<Mutex<Received>>, packets: usize) -> Received {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = sink.lock().unwrap().clone();
        let n: usize = got.by_ssrc.values().map(Vec::len).sum();
        if n >= packets || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks one stream's packets: one payload type, consecutive sequence numbers, timestamps
/// 160 apart, the marker only first; returns the decoded audio.
fn check_stream(packets: &[(bool, u8, u16, u32, Vec<u8>)], codec: G711) -> Vec<i16> {
    let mut pcm = Vec::new();
    for (i, (marker, pt, seq, ts, payload)) in packets.iter().enumerate() {
        assert_eq!(*pt, codec.payload_type());
        assert_eq!(*marker, i == 0, "marker on packet {i}");
        assert_eq!(payload.len(), 160);
        if i > 0 {
            let (_, _, pseq, pts, _) = &packets[i - 1];
            assert_eq!(
                *seq,
                pseq.wrapping_add(1),
                "sequence after packet {}",
                i - 1
            );
            assert_eq!(
                *ts,
                pts.wrapping_add(160),
                "timestamp after packet {}",
                i - 1
            );
        }
        match codec {
            G711::Pcmu => decode_ulaw(payload, &mut pcm),
            G711::Pcma => decode_alaw(payload, &mut pcm),
        }
    }
    pcm
}

/// Dominant frequency by zero crossings.
fn frequency(pcm: &[i16]) -> f64 {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (pcm.len() as f64 / 8000.0)
}

async fn place(options: CallOptions) -> Summary {
    let config = options.validate().unwrap();
    let audio = callvault_caller::load_audio(&config).unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    callvault_caller::run(config, audio, stop).await.unwrap()
}

fn options(target: String, transport: &str, codec: &str) -> CallOptions {
    CallOptions {
        to: target,
        transport: transport.to_owned(),
        codec: codec.to_owned(),
        ..CallOptions::default()
    }
}

fn keys(rtp: [u16; 2], codec: G711) -> Vec<(&'static str, String)> {
    vec![
        ("rtp1", rtp[0].to_string()),
        ("rtp2", rtp[1].to_string()),
        ("pt", codec.payload_type().to_string()),
    ]
}

/// One call: sipp saw INVITE (checked), ACK and BYE; each stream's RTP is one paced,
/// well-numbered stream of the expected tone.
async fn one_tone_call(transport: Transport, codec: G711) {
    let (p1, s1) = rtp_sink();
    let (p2, s2) = rtp_sink();
    let sipp = Sipp::start("siprec_uas.xml", transport, 1, &keys([p1, p2], codec)).await;
    let summary = place(CallOptions {
        duration: Some(1.0),
        ..options(
            sipp.target(),
            &transport.as_str().to_ascii_lowercase(),
            codec.as_str(),
        )
    })
    .await;
    let log = sipp.finish().await;
    assert!(summary.success(), "{summary:#?}");
    assert_eq!(
        (
            summary.calls_attempted,
            summary.calls_answered,
            summary.calls_completed
        ),
        (1, 1, 1)
    );
    assert_eq!(
        summary.rtp_packets_sent, 100,
        "50 packets of 20 ms per stream"
    );
    assert_eq!(summary.send_lateness_micros.samples, 50);
    assert_eq!(summary.answer_time_micros.samples, 1);
    for method in [
        "INVITE sip:srs@127.0.0.1",
        "ACK sip:srs@127.0.0.1",
        "BYE sip:srs@127.0.0.1",
    ] {
        assert!(log.contains(method), "sipp did not see {method}:\n{log}");
    }
    for (sink, hz) in [(s1, 440.0), (s2, 660.0)] {
        let got = wait_for_packets(&sink, 50).await;
        assert_eq!(got.by_ssrc.len(), 1, "one SSRC per stream");
        let packets = got.by_ssrc.values().next().unwrap();
        assert_eq!(packets.len(), 50);
        let pcm = check_stream(packets, codec);
        let f = frequency(&pcm);
        assert!((f - hz).abs() < 5.0, "stream tone {f} Hz, expected {hz}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_pcmu_call_is_checked_by_sipp_and_streams_each_party_tone() {
    one_tone_call(Transport::Udp, G711::Pcmu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pcma_call_is_checked_by_sipp_and_streams_each_party_tone() {
    one_tone_call(Transport::Tcp, G711::Pcma).await;
}

/// A 16 kHz WAV of a tone, half a second.
fn write_wav(path: &Path, hz: f64) {
    let rate = 16000u32;
    let samples: Vec<i16> = (0..rate / 2)
        .map(|n| {
            (9000.0 * (2.0 * std::f64::consts::PI * hz * f64::from(n) / f64::from(rate)).sin())
                as i16
        })
        .collect();
    std::fs::write(path, callvault_caller::audio::mono_wav(rate, &samples)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_files_play_for_their_length_resampled_to_8khz() {
    let dir = tempfile::tempdir().unwrap();
    let (left, right) = (dir.path().join("left.wav"), dir.path().join("right.wav"));
    write_wav(&left, 300.0);
    write_wav(&right, 1000.0);
    let (p1, s1) = rtp_sink();
    let (p2, s2) = rtp_sink();
    let sipp = Sipp::start(
        "siprec_uas.xml",
        Transport::Udp,
        1,
        &keys([p1, p2], G711::Pcmu),
    )
    .await;
    let summary = place(CallOptions {
        left: Some(left),
        right: Some(right),
        ..options(sipp.target(), "udp", "pcmu")
    })
    .await;
    sipp.finish().await;
    assert!(summary.success(), "{summary:#?}");
    assert_eq!(summary.rtp_packets_sent, 50, "0.5 s: 25 packets per stream");
    for (sink, hz) in [(s1, 300.0), (s2, 1000.0)] {
        let got = wait_for_packets(&sink, 25).await;
        let packets = got.by_ssrc.values().next().unwrap();
        assert_eq!(packets.len(), 25);
        let pcm = check_stream(packets, G711::Pcmu);
        // Skip the resampler's first milliseconds.
        let f = frequency(&pcm[80..]);
        assert!((f - hz).abs() < 10.0, "stream tone {f} Hz, expected {hz}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_of_concurrent_calls_all_complete_with_their_own_streams() {
    let (p1, s1) = rtp_sink();
    let (p2, s2) = rtp_sink();
    let calls = 6;
    let sipp = Sipp::start(
        "siprec_uas.xml",
        Transport::Udp,
        calls,
        &keys([p1, p2], G711::Pcmu),
    )
    .await;
    let summary = place(CallOptions {
        calls,
        rate: 20.0,
        duration: Some(0.6),
        ..options(sipp.target(), "udp", "pcmu")
    })
    .await;
    let log = sipp.finish().await;
    assert!(summary.success(), "{summary:#?}");
    assert_eq!(
        (summary.calls_attempted, summary.calls_completed),
        (calls, calls)
    );
    assert_eq!(summary.rtp_packets_sent, u64::from(calls) * 30 * 2);
    assert_eq!(log.matches("BYE sip:").count() as u32, calls, "{log}");
    for sink in [s1, s2] {
        let got = wait_for_packets(&sink, calls as usize * 30).await;
        assert_eq!(got.by_ssrc.len(), calls as usize, "one SSRC per call");
        for packets in got.by_ssrc.values() {
            assert_eq!(packets.len(), 30);
            check_stream(packets, G711::Pcmu);
        }
    }
    // 50 calls/s of 0.6 s each overlap: the calls were held concurrently.
    assert!(
        summary.elapsed_seconds < 0.6 * f64::from(calls),
        "{summary:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_is_reported_with_status_and_retry_after_and_acknowledged() {
    let sipp = Sipp::start("siprec_uas_busy.xml", Transport::Udp, 1, &[]).await;
    let summary = place(options(sipp.target(), "udp", "pcmu")).await;
    let log = sipp.finish().await;
    assert!(
        log.contains("ACK sip:"),
        "the 503 was not acknowledged:\n{log}"
    );
    assert!(!summary.success());
    assert_eq!(
        (
            summary.calls_attempted,
            summary.calls_answered,
            summary.calls_failed
        ),
        (1, 0, 1)
    );
    assert_eq!(summary.failures.len(), 1);
    let reason = &summary.failures[0].reason;
    assert!(
        reason.contains("503 Service Unavailable") && reason.contains("Retry-After: 30"),
        "{reason}"
    );
    assert_eq!(summary.rtp_packets_sent, 0);
}

#[tokio::test]
async fn tcp_to_a_closed_port_is_a_setup_error_naming_the_address() {
    let port = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let config = options(format!("sip:127.0.0.1:{port}"), "tcp", "pcmu")
        .validate()
        .unwrap();
    let audio = callvault_caller::load_audio(&config).unwrap();
    let (_tx, stop) = watch::channel(false);
    let e = callvault_caller::run(config, audio, stop)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).to_string()),
        "{e}"
    );
    assert!(e.contains("TCP"), "{e}");
}
