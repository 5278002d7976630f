//! Concurrent recorded calls on this machine: the recorder service runs in this process
//! (SQLite and a filesystem StorageTarget, so only the recorder's own work is measured) and
//! sipp places N calls of two G.711 streams each, replaying RTP from a pcap. Per level N it
//! reports packets late or lost, recordings committed, CPU and RSS per call; in the same run,
//! how many channels raw libopus sustains at the recorder's settings (the physical bound).
//!
//! Run (as root, sipp's pcap replay needs it): `cargo bench -p callvault-recorder --bench calls`.
//! Levels: `CALLVAULT_BENCH_LEVELS=50,100,200` (default below); call length
//! `CALLVAULT_BENCH_SECONDS` (default 30).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use audiopus::{Application, Bitrate, Channels, SampleRate, Signal, coder::Encoder};
use callvault_config::RecorderConfig;
use callvault_recorder::media::g711;
use callvault_recorder::service::{self, ServiceOptions};
use callvault_store::keys::PrivateKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn speechy(t: f64, base: f64) -> f64 {
    let env = (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin()).powi(2);
    6000.0
        * env
        * (2.0
            * std::f64::consts::PI
            * (base + 80.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin())
            * t)
            .sin()
}

/// Channels raw libopus encodes in real time on one core, at the recorder's settings (mono
/// encoders of 16 kHz audio, 16 kbit/s each, complexity 5, 20 ms frames).
fn libopus_channels_per_core() -> f64 {
    const SECONDS: usize = 60;
    let frames: Vec<Vec<i16>> = (0..SECONDS * 50)
        .map(|i| {
            (0..320)
                .map(|k| speechy((i * 320 + k) as f64 / 16000.0, 500.0) as i16)
                .collect()
        })
        .collect();
    let mut e = Encoder::new(SampleRate::Hz16000, Channels::Mono, Application::Voip).expect("enc");
    e.set_bitrate(Bitrate::BitsPerSecond(16_000))
        .expect("bitrate");
    e.set_complexity(5).expect("complexity");
    e.set_signal(Signal::Voice).expect("signal");
    let mut out = vec![0u8; 1500];
    let t0 = Instant::now();
    for f in &frames {
        black_box(e.encode(f, &mut out).expect("encode"));
    }
    SECONDS as f64 / t0.elapsed().as_secs_f64()
}

fn free_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Process CPU time (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A pcap of two G.711 streams (to the answer's port and port + 2), `seconds` long.
fn write_pcap(path: &std::path::Path, seconds: usize) {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..seconds * 50 {
        for (k, base) in [(0u16, 450.0), (1, 1500.0)] {
            let mut rtp = vec![0x80, 0];
            rtp.extend_from_slice(&(i as u16).to_be_bytes());
            rtp.extend_from_slice(&((i * 160) as u32).to_be_bytes());
            rtp.extend_from_slice(&(0x1000 + u32::from(k)).to_be_bytes());
            rtp.extend(
                (0..160).map(|s| {
                    g711::encode_ulaw(speechy((i * 160 + s) as f64 / 8000.0, base) as i16)
                }),
            );
            let port = 6000 + 2 * k;
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[
                0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
            ]);
            let ip_len = (20 + 8 + rtp.len()) as u16;
            frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
            frame.extend_from_slice(&(port + 1000).to_be_bytes());
            frame.extend_from_slice(&port.to_be_bytes());
            frame.extend_from_slice(&((8 + rtp.len()) as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(&rtp);
            let us = (i * 20_000) as u64;
            out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
        }
    }
    std::fs::write(path, out).expect("pcap");
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("callvault_recorder_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: a load run of minutes
    // does not belong in the test suite, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "calls: a benchmark; run it with `cargo bench -p callvault-recorder --bench calls`"
        );
        return;
    }
    let levels: Vec<usize> = std::env::var("CALLVAULT_BENCH_LEVELS")
        .unwrap_or_else(|_| "50,100,150,200,250".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let seconds: usize = std::env::var("CALLVAULT_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let per_core = libopus_channels_per_core();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let bound_calls = per_core * cores as f64 / 2.0;
    println!(
        "raw libopus: {per_core:.0} channels per core in real time; {cores} cores → bound {bound_calls:.0} two-channel calls"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let key = PrivateKey::generate(2048).expect("key");
    std::fs::write(
        dir.path().join("key.pem"),
        key.public_key().to_pem().expect("pem"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("db-url"),
        format!("sqlite:{}", dir.path().join("vault.db").display()),
    )
    .expect("write");
    std::fs::create_dir(dir.path().join("store")).expect("store dir");
    let sip_port = free_port();
    let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = serde_json::json!({
        "tenant": "bench", "profile": "bench",
        "sip": {"port": sip_port},
        "mediaAddress": {"bind": "127.0.0.1", "advertise": {"address": "127.0.0.1"}},
        "rtpPortRange": {"start": 40000, "end": 59999},
        "sessionsPerReplica": 4000,
        "storageTarget": "bench",
        "storage": {"type": "filesystem", "path": dir.path().join("store")},
        "encryption": {"publicKeyPath": dir.path().join("key.pem"), "keyId": key.id().to_hex()},
        "spoolDir": dir.path().join("spool"),
        "databaseUrlFile": dir.path().join("db-url"),
        "rules": {"allUsers": true},
    });
    let valid = RecorderConfig::parse(&config.to_string())
        .expect("config")
        .validate()
        .expect("valid");
    let pcap = dir.path().join("calls.pcap");
    write_pcap(&pcap, seconds);
    let scenario = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/sipp/record_two_streams.xml"
    ))
    .expect("scenario")
    .replace("@PT@", "0")
    .replace("@RTPMAP@", "PCMU/8000")
    .replace("@PCAP@", &pcap.display().to_string())
    .replace("@PAUSE_MS@", &(seconds * 1000 + 500).to_string());
    let scenario_path = dir.path().join("calls.xml");
    std::fs::write(&scenario_path, scenario).expect("scenario");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service::run(
            valid,
            ServiceOptions { http, ..ServiceOptions::default() },
            async move {
                let _ = stop_rx.await;
            },
        ));
        while get(http, "/readyz").await.trim() != "ready" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("| calls | rate (calls/s) | recordings committed | packets | late or lost | CPU per call (% of a core) | RSS per call |");
        println!("|---|---|---|---|---|---|---|");
        let mut committed_before = 0;
        let mut best = 0;
        for n in levels {
            let before = get(http, "/metrics").await;
            let rss0 = rss_bytes();
            let rate = (n / 10).max(5);
            let mut sipp = tokio::process::Command::new("sipp")
                .arg(format!("127.0.0.1:{sip_port}"))
                .arg("-sf")
                .arg(&scenario_path)
                .args(["-m", &n.to_string(), "-l", &n.to_string(), "-r", &rate.to_string()])
                .args(["-nostdin", "-t", "u1", "-i", "127.0.0.1", "-timeout", "300s"])
                .args(["-p", &free_port().to_string(), "-mp", &free_port().to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("sipp (Debian package sip-tester)");
            // Steady state: all N calls up.
            let mut peak_rss = rss0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while metric(&get(http, "/metrics").await, "sessions_active") < n as u64 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (t1, c1) = (Instant::now(), cpu_seconds());
            let mut t2 = t1;
            let mut c2 = c1;
            loop {
                peak_rss = peak_rss.max(rss_bytes());
                let active = metric(&get(http, "/metrics").await, "sessions_active");
                if active < n as u64 {
                    break;
                }
                (t2, c2) = (Instant::now(), cpu_seconds());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let _ = sipp.wait().await;
            while metric(&get(http, "/metrics").await, "commits_pending") > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let after = get(http, "/metrics").await;
            let d = |name: &str| metric(&after, name).saturating_sub(metric(&before, name));
            let committed = metric(&after, "commits_total") - committed_before;
            committed_before = metric(&after, "commits_total");
            let packets = d("rtp_packets_total");
            let bad = d("rtp_lost_total") + d("rtp_late_total");
            let ratio = bad as f64 / packets.max(1) as f64;
            let steady = (t2 - t1).as_secs_f64();
            let cpu = if steady > 0.0 { (c2 - c1) / steady / n as f64 * 100.0 } else { f64::NAN };
            let rss = peak_rss.saturating_sub(rss0) as f64 / n as f64 / 1024.0;
            println!(
                "| {n} | {rate} | {committed}/{n} | {packets} | {:.3} % | {cpu:.2} | {rss:.0} KiB |",
                ratio * 100.0
            );
            if committed as usize == n && ratio <= 0.001 {
                best = best.max(n);
            }
        }
        println!(
            "most calls held with zero lost recordings and ≤ 0.1 % late or lost: {best}; libopus bound {bound_calls:.0}; ratio {:.0} %",
            best as f64 / bound_calls * 100.0
        );
        let _ = stop_tx.send(());
        let _ = server.await;
    });
}
