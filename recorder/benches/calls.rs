//! Concurrent recorded calls on this machine. The recorder service runs in this process
//! (SQLite and a filesystem StorageTarget, so only the recorder's own work is measured); a
//! load generator (this executable again, as a child process, so its CPU and memory are not
//! counted as the recorder's) places N SIPREC calls of two G.711 streams each: INVITE with
//! SDP and rs-metadata, ACK, 50 packets a second per stream to the ports the answer names,
//! BYE. All N calls are held together for a steady window; per level N it reports recordings
//! committed, packets late or lost, CPU and RSS per call. In the same run it measures how
//! many channels raw libopus encodes in real time at the recorder's settings (the physical
//! bound) and the ratio of the two.
//!
//! Run: `cargo bench -p callvault-recorder --bench calls`. Levels:
//! `CALLVAULT_BENCH_LEVELS=100,200,300` (default: 40 % to 110 % of the libopus bound);
//! steady window `CALLVAULT_BENCH_SECONDS` (default 20).

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use audiopus::{Application, Bitrate, Channels, SampleRate, Signal, coder::Encoder};
use callvault_config::RecorderConfig;
use callvault_recorder::media::g711;
use callvault_recorder::service::{self, ServiceOptions};
use callvault_store::keys::PrivateKey;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

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
/// encoders of 16 kHz audio, 16 kbit/s each, complexity 5, 20 ms frames): by the thread's
/// CPU time, and by wall time.
fn libopus_channels_per_core(seconds: usize, min_cpu: f64) -> (f64, f64) {
    let frames: Vec<Vec<i16>> = (0..seconds * 50)
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
    // Thread CPU time, not wall time: other processes on the machine take the core away
    // for a while now and then, which says nothing about libopus. The audio is encoded
    // again and again until the measurement is long enough to be precise.
    let (c0, t0) = (thread_cpu_seconds(), Instant::now());
    let mut encoded = 0usize;
    while encoded == 0 || thread_cpu_seconds() - c0 < min_cpu {
        for f in &frames {
            black_box(e.encode(f, &mut out).expect("encode"));
        }
        encoded += seconds;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - c0;
    (encoded as f64 / cpu, encoded as f64 / wall)
}

/// This thread's time on a CPU, to the nanosecond (the scheduler's own account).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| proc_cpu_seconds("/proc/thread-self/stat"), |ns| ns / 1e9)
}

fn free_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// User + system CPU time of a process or thread, from its `stat` file.
fn proc_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
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

/// The load generator: one thread, non-blocking sockets, every call's packets sent on a
/// 20 ms schedule of its own (a late wake-up sends the missed frames at once, with their
/// proper sequence numbers and timestamps, as a real network burst would).
mod loadgen {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum State {
        Inviting { provisional: bool },
        Media,
        Ending,
        Done,
        Failed,
    }

    struct Call {
        call_id: String,
        tag: String,
        branch: String,
        state: State,
        to: String,
        ports: Vec<u16>,
        frame: u32,
        next: Instant,
        sent_at: Instant,
        first_sent: Instant,
    }

    fn headers<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn invite(c: &Call, local: SocketAddr, target: SocketAddr, media_port: u16) -> String {
        let sdp = format!(
            "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=sendonly\r\n",
            media_port + 2
        );
        let md = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode>\
<group group_id=\"Z3JvdXAtMQ==\"/><session session_id=\"c2Vzc2lvbi0x\"/>\
<participant participant_id=\"cGEx\"><nameID aor=\"sip:1001@bank.example\"><name>Agent</name></nameID></participant>\
<participant participant_id=\"cGEy\"><nameID aor=\"sip:+15551234567@carrier.example\"><name>Customer</name></nameID></participant>\
<stream stream_id=\"czE=\" session_id=\"c2Vzc2lvbi0x\"><label>1</label></stream>\
<stream stream_id=\"czI=\" session_id=\"c2Vzc2lvbi0x\"><label>2</label></stream>\
<participantstreamassoc participant_id=\"cGEx\"><send>czE=</send></participantstreamassoc>\
<participantstreamassoc participant_id=\"cGEy\"><send>czI=</send></participantstreamassoc>\
</recording>\r\n";
        let body = format!(
            "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\n\
             Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{md}--b1--\r\n"
        );
        format!(
            "INVITE sip:recorder@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:src@{local}>;tag={}\r\nTo: <sip:recorder@{target}>\r\n\
             Call-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:src@{local}>;+sip.src\r\nRequire: siprec\r\n\
             Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
            c.branch,
            c.tag,
            c.call_id,
            body.len()
        )
    }

    fn in_dialog(
        c: &Call,
        method: &str,
        seq: u32,
        branch: &str,
        local: SocketAddr,
        target: SocketAddr,
    ) -> String {
        format!(
            "{method} sip:recorder@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:src@{local}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\n\
             CSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n",
            c.tag, c.to, c.call_id
        )
    }

    /// `--loadgen <recorder SIP address> <calls> <calls per second> <steady seconds>`.
    /// Prints `up` once every call is answered (or failed), `ending` when the steady window
    /// is over and the BYEs go out, then `done <answered> <completed> <failed> <packets>
    /// <packets sent more than 60 ms behind their schedule>`.
    pub fn run(args: &[String]) {
        let target: SocketAddr = args[0].parse().expect("recorder address");
        let n: usize = args[1].parse().expect("calls");
        let rate: f64 = args[2].parse().expect("rate");
        let steady = Duration::from_secs_f64(args[3].parse().expect("seconds"));
        let sip = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sip socket");
        sip.set_nonblocking(true).expect("nonblocking");
        let local = sip.local_addr().expect("addr");
        let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("rtp socket");
        let media_port = rtp.local_addr().expect("addr").port();
        // One second of each party's audio, looped.
        let audio: Vec<Vec<u8>> = [450.0, 1500.0]
            .iter()
            .map(|&base| {
                (0..8000)
                    .map(|s| g711::encode_ulaw(speechy(f64::from(s) / 8000.0, base) as i16))
                    .collect()
            })
            .collect();
        let pid = std::process::id();
        let mut calls: Vec<Call> = Vec::with_capacity(n);
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let t0 = Instant::now();
        let (mut up_at, mut ending) = (None::<Instant>, false);
        let (mut packets, mut behind) = (0u64, 0u64);
        let mut buf = vec![0u8; 65536];
        let mut pkt = vec![0u8; 172];
        let out = std::io::stdout();
        let say = |line: &str| {
            let mut o = out.lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        };
        loop {
            let now = Instant::now();
            while calls.len() < n && now >= t0 + Duration::from_secs_f64(calls.len() as f64 / rate)
            {
                let k = calls.len();
                let c = Call {
                    call_id: format!("bench-{pid}-{k}"),
                    tag: format!("t{k}"),
                    branch: format!("z9hG4bK-{pid}-{k}-i"),
                    state: State::Inviting { provisional: false },
                    to: String::new(),
                    ports: Vec::new(),
                    frame: 0,
                    next: now,
                    sent_at: now,
                    first_sent: now,
                };
                let _ = sip.send_to(invite(&c, local, target, media_port).as_bytes(), target);
                by_id.insert(c.call_id.clone(), k);
                calls.push(c);
            }
            while let Ok((len, _)) = sip.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                let Some(status) = text
                    .strip_prefix("SIP/2.0 ")
                    .and_then(|r| r.get(..3))
                    .and_then(|s| s.parse::<u16>().ok())
                else {
                    continue; // a request (the recorder's BYE): not expected here
                };
                let (Some(id), Some(cseq)) = (headers(&text, "Call-ID"), headers(&text, "CSeq"))
                else {
                    continue;
                };
                let Some(&k) = by_id.get(id) else { continue };
                let c = &mut calls[k];
                let to = headers(&text, "To").unwrap_or_default().to_owned();
                if cseq.ends_with("INVITE") {
                    match (&c.state, status) {
                        (State::Inviting { .. }, 100..=199) => {
                            c.state = State::Inviting { provisional: true };
                        }
                        (State::Inviting { .. } | State::Media, 200..=299) => {
                            c.to = to;
                            if c.state != State::Media {
                                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                                c.ports = body
                                    .lines()
                                    .filter_map(|l| l.strip_prefix("m=audio "))
                                    .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                                    .collect();
                                c.state = State::Media;
                                c.next = Instant::now();
                            }
                            let ack =
                                in_dialog(c, "ACK", 1, &format!("{}-a", c.branch), local, target);
                            let _ = sip.send_to(ack.as_bytes(), target);
                        }
                        (State::Inviting { .. }, 300..) => {
                            c.to = to;
                            let ack = in_dialog(c, "ACK", 1, &c.branch, local, target);
                            let _ = sip.send_to(ack.as_bytes(), target);
                            eprintln!("call {k} refused: {}", text.lines().next().unwrap_or(""));
                            c.state = State::Failed;
                        }
                        _ => {}
                    }
                } else if cseq.ends_with("BYE") && status >= 200 && c.state == State::Ending {
                    c.state = if status < 300 {
                        State::Done
                    } else {
                        State::Failed
                    };
                }
            }
            let now = Instant::now();
            for (k, c) in calls.iter_mut().enumerate() {
                let retransmit = now.duration_since(c.sent_at) >= Duration::from_millis(500);
                let given_up = now.duration_since(c.first_sent) >= Duration::from_secs(32);
                match c.state {
                    State::Inviting { provisional } if given_up => {
                        eprintln!("call {k}: no answer");
                        let _ = provisional;
                        c.state = State::Failed;
                    }
                    State::Inviting { provisional: false } if retransmit => {
                        let _ =
                            sip.send_to(invite(c, local, target, media_port).as_bytes(), target);
                        c.sent_at = now;
                    }
                    State::Ending if given_up => {
                        eprintln!("call {k}: no answer to BYE");
                        c.state = State::Failed;
                    }
                    State::Ending if retransmit => {
                        let bye = in_dialog(c, "BYE", 2, &format!("{}-b", c.branch), local, target);
                        let _ = sip.send_to(bye.as_bytes(), target);
                        c.sent_at = now;
                    }
                    State::Media if !ending => {
                        while c.next <= now {
                            if now.duration_since(c.next) > Duration::from_millis(60) {
                                // This process did not run in time: the packet leaves late.
                                behind += c.ports.len().min(2) as u64;
                            }
                            let f = c.frame;
                            for (s, port) in c.ports.iter().take(2).enumerate() {
                                pkt.clear();
                                pkt.extend_from_slice(&[0x80, 0]);
                                pkt.extend_from_slice(&(f as u16).to_be_bytes());
                                pkt.extend_from_slice(&(f.wrapping_mul(160)).to_be_bytes());
                                pkt.extend_from_slice(&((k as u32) << 1 | s as u32).to_be_bytes());
                                let at = (f as usize % 50) * 160;
                                pkt.extend_from_slice(&audio[s][at..at + 160]);
                                if rtp.send_to(&pkt, (Ipv4Addr::LOCALHOST, *port)).is_ok() {
                                    packets += 1;
                                }
                            }
                            c.frame += 1;
                            c.next += Duration::from_millis(20);
                        }
                    }
                    _ => {}
                }
            }
            let settled = |c: &Call| !matches!(c.state, State::Inviting { .. });
            if up_at.is_none() && calls.len() == n && calls.iter().all(settled) {
                up_at = Some(now);
                say("up");
            }
            if !ending && up_at.is_some_and(|t| now >= t + steady) {
                ending = true;
                say("ending");
                for c in calls.iter_mut().filter(|c| c.state == State::Media) {
                    let bye = in_dialog(c, "BYE", 2, &format!("{}-b", c.branch), local, target);
                    let _ = sip.send_to(bye.as_bytes(), target);
                    c.state = State::Ending;
                    (c.sent_at, c.first_sent) = (now, now);
                }
            }
            if ending
                && calls
                    .iter()
                    .all(|c| matches!(c.state, State::Done | State::Failed))
            {
                break;
            }
            let wake = calls
                .iter()
                .filter(|c| c.state == State::Media && !ending)
                .map(|c| c.next)
                .min()
                .unwrap_or(now + Duration::from_millis(5))
                .min(now + Duration::from_millis(5));
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
        let answered = calls.iter().filter(|c| !c.ports.is_empty()).count();
        let completed = calls.iter().filter(|c| c.state == State::Done).count();
        let failed = calls.iter().filter(|c| c.state == State::Failed).count();
        say(&format!(
            "done {answered} {completed} {failed} {packets} {behind}"
        ));
    }
}

/// One level's figures.
struct Level {
    calls: usize,
    answered: usize,
    /// Objects that appeared in the StorageTarget.
    stored: u64,
    committed: u64,
    incomplete: u64,
    sent: u64,
    received: u64,
    behind: u64,
    lost: u64,
    late: u64,
    bad: u64,
    cpu_per_call: f64,
    generator_cpu: f64,
    rss_per_call: f64,
    /// Longest delay of the runtime's 10 ms timer during the level (ms).
    stall_ms: u64,
}

impl Level {
    fn ok(&self) -> bool {
        self.answered == self.calls
            && self.committed == self.calls as u64
            && self.stored >= self.calls as u64
            && self.incomplete == 0
            && (self.bad as f64) <= 0.001 * self.sent as f64
    }
}

/// Files under `dir`, at any depth: the recordings the StorageTarget holds.
fn files_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

async fn level(
    n: usize,
    sip: SocketAddr,
    http: SocketAddr,
    store: &std::path::Path,
    seconds: u64,
    idle_rss: u64,
) -> Level {
    // Start from an idle recorder.
    while metric(&get(http, "/metrics").await, "sessions_active") > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = get(http, "/metrics").await;
    let stored_before = files_under(store);
    let rate = 25.0;
    // The generator plays the network: it runs at a raised priority (when allowed) so the
    // other work on the machine delays its packets less.
    let mut child = tokio::process::Command::new("nice")
        .args(["-n", "-5"])
        .arg(std::env::current_exe().expect("exe"))
        .args([
            "--loadgen",
            &sip.to_string(),
            &n.to_string(),
            &rate.to_string(),
            &seconds.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("load generator");
    let gen_stat = format!("/proc/{}/stat", child.id().expect("pid"));
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut steady_start = None;
    let mut steady_end = None;
    let mut peak_rss = 0u64;
    let mut done = String::new();
    let mut sampler = tokio::time::interval(Duration::from_millis(250));
    // How late a 10 ms timer on the recorder's runtime fires: a worker thread held by
    // blocking work delays every call's media tick with it.
    let stall = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let probe = tokio::spawn({
        let stall = stall.clone();
        async move {
            loop {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let late = t.elapsed().saturating_sub(Duration::from_millis(10));
                stall.fetch_max(
                    late.as_millis() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    });
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) if l == "up" => {
                    steady_start = Some((Instant::now(), proc_cpu_seconds("/proc/self/stat"), proc_cpu_seconds(&gen_stat)));
                }
                Ok(Some(l)) if l == "ending" => {
                    steady_end = Some((Instant::now(), proc_cpu_seconds("/proc/self/stat"), proc_cpu_seconds(&gen_stat)));
                }
                Ok(Some(l)) if l.starts_with("done") => done = l,
                Ok(Some(_)) => {}
                _ => break,
            },
            _ = sampler.tick() => {
                if steady_start.is_some() && steady_end.is_none() {
                    peak_rss = peak_rss.max(rss_bytes());
                }
            }
        }
    }
    let _ = child.wait().await;
    probe.abort();
    let f: Vec<u64> = done
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let (answered, sent) = (
        f.first().copied().unwrap_or(0) as usize,
        f.get(3).copied().unwrap_or(0),
    );
    // Every answered call's recording committed (or a deadline).
    let deadline = Instant::now() + Duration::from_secs(120);
    let before_commits = metric(&before, "commits_total");
    loop {
        let m = get(http, "/metrics").await;
        let committed = metric(&m, "commits_total") - before_commits;
        if (committed >= answered as u64 && metric(&m, "commits_pending") == 0)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = get(http, "/metrics").await;
    let d = |name: &str| metric(&after, name).saturating_sub(metric(&before, name));
    let received = d("rtp_packets_total");
    // Packets missing from the recordings: those that arrived after their playout point
    // (each also leaves a sequence gap) and those that never arrived; at least the gaps.
    let bad = (d("rtp_late_total") + sent.saturating_sub(received)).max(d("rtp_lost_total"));
    let (cpu_per_call, generator_cpu) = match (steady_start, steady_end) {
        (Some((t1, c1, g1)), Some((t2, c2, g2))) => {
            let wall = (t2 - t1).as_secs_f64();
            (
                (c2 - c1) / wall / n as f64 * 100.0,
                (g2 - g1) / wall * 100.0,
            )
        }
        _ => (f64::NAN, f64::NAN),
    };
    Level {
        calls: n,
        answered,
        stored: files_under(store) - stored_before,
        committed: d("commits_total"),
        incomplete: d("commits_incomplete_total"),
        sent,
        received,
        behind: f.get(4).copied().unwrap_or(0),
        lost: d("rtp_lost_total"),
        late: d("rtp_late_total"),
        bad,
        cpu_per_call,
        generator_cpu,
        rss_per_call: peak_rss.saturating_sub(idle_rss) as f64 / n as f64 / 1024.0,
        stall_ms: stall.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--loadgen") {
        loadgen::run(&args[i + 1..]);
        return;
    }
    // `cargo test --all-targets` runs bench targets without `--bench`: there it is a smoke
    // of a few calls for two seconds (every recording must still be committed); the load
    // run of minutes only runs under `cargo bench`.
    let smoke = !args.iter().any(|a| a == "--bench");
    let seconds: u64 = match std::env::var("CALLVAULT_BENCH_SECONDS") {
        Ok(v) => v.parse().expect("CALLVAULT_BENCH_SECONDS"),
        Err(_) if smoke => 2,
        Err(_) => 20,
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (per_core, per_core_wall) = {
        let (audio, cpu) = if smoke { (2, 0.1) } else { (60, 5.0) };
        libopus_channels_per_core(audio, cpu)
    };
    let bound_calls = per_core * cores as f64 / 2.0;
    println!(
        "raw libopus: {per_core:.0} channels per core in real time by CPU time ({per_core_wall:.0} by wall time); {cores} cores → bound {bound_calls:.0} two-channel calls"
    );
    // Fixed levels from the environment, or a search: from 40 % of the bound up by 10 % of it
    // until two levels in a row fail; while no level has held yet, a failed level is halved.
    let fixed: Option<Vec<usize>> = std::env::var("CALLVAULT_BENCH_LEVELS")
        .ok()
        .map(|v| v.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .or_else(|| smoke.then(|| vec![4]));
    let round10 = |f: f64| ((bound_calls * f / 10.0).round() as usize * 10).max(10);
    let (first, step, last) = (round10(0.4), round10(0.1), round10(1.3));

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
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("store dir");
    let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = serde_json::json!({
        "tenant": "bench", "profile": "bench",
        "sip": {"port": sip.port()},
        "mediaAddress": {"bind": "127.0.0.1", "advertise": {"address": "127.0.0.1"}},
        "rtpPortRange": {"start": 20000, "end": 31999},
        "sessionsPerReplica": 2000,
        "storageTarget": "bench",
        "storage": {"type": "filesystem", "path": &store},
        "encryption": {"publicKeyPath": dir.path().join("key.pem"), "keyId": key.id().to_hex()},
        "spoolDir": dir.path().join("spool"),
        "databaseUrlFile": dir.path().join("db-url"),
        "rules": {"allUsers": true},
    });
    let valid = RecorderConfig::parse(&config.to_string())
        .expect("config")
        .validate()
        .expect("valid");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (best, best_cpu, best_rss) = rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service::run(
            valid,
            ServiceOptions {
                http,
                ..ServiceOptions::default()
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        while get(http, "/readyz").await.trim() != "ready" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let idle_rss = rss_bytes();
        println!(
            "steady window {seconds} s per level, all calls held at once; recorder idle RSS {:.1} MiB",
            idle_rss as f64 / 1048576.0
        );
        println!(
            "| calls | answered | committed (incomplete) | objects stored | packets sent | sent > 60 ms behind schedule | received | gaps | late | late or lost | recorder CPU per call (% of a core) | load generator CPU (% of a core) | recorder RSS per call | longest runtime stall |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let (mut best, mut best_cpu, mut best_rss) = (0, f64::NAN, f64::NAN);
        let mut failures = 0;
        let mut fixed = fixed.map(std::collections::VecDeque::from);
        let mut next = Some(fixed.as_mut().and_then(|f| f.pop_front()).unwrap_or(first));
        while let Some(n) = next {
            let l = level(n, sip, http, &store, seconds, idle_rss).await;
            println!(
                "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} ({:.3} %) | {:.3} | {:.0} | {:.0} KiB | {} ms |",
                l.calls,
                l.answered,
                l.committed,
                l.incomplete,
                l.stored,
                l.sent,
                l.behind,
                l.received,
                l.lost,
                l.late,
                l.bad,
                l.bad as f64 / l.sent.max(1) as f64 * 100.0,
                l.cpu_per_call,
                l.generator_cpu,
                l.rss_per_call,
                l.stall_ms
            );
            if smoke {
                // Packet timing on a busy machine in an unoptimised build says little; a
                // recording lost says everything.
                assert_eq!(
                    (l.answered, l.committed, l.incomplete),
                    (n, n as u64, 0),
                    "every call answered and its recording committed whole"
                );
                assert!(l.stored >= n as u64, "{} objects stored for {n} calls", l.stored);
            }
            let held = l.ok();
            if held {
                if n > best {
                    (best, best_cpu, best_rss) = (n, l.cpu_per_call, l.rss_per_call);
                }
                failures = 0;
            } else {
                failures += 1;
            }
            next = match fixed.as_mut() {
                Some(f) => f.pop_front(),
                None if !held && best == 0 && n > 5 => Some((n / 2).max(5)),
                None if failures == 2 || n + step > last => None,
                None => Some(n + step),
            };
        }
        let _ = stop_tx.send(());
        let _ = server.await;
        (best, best_cpu, best_rss)
    });
    println!(
        "most calls held with zero lost recordings and ≤ 0.1 % late or lost: {best}; libopus bound {bound_calls:.0}; ratio {:.0} %",
        best as f64 / bound_calls * 100.0
    );
    // The same comparison in CPU time: what the recorder's cost per call would fit in these
    // cores with nothing else running, against libopus's bound measured the same way.
    let projected = cores as f64 * 100.0 / best_cpu;
    println!(
        "by CPU time: {best_cpu:.3} % of a core per call at {best} calls → {projected:.0} calls on {cores} cores; ratio to the bound {:.0} %",
        projected / bound_calls * 100.0
    );
    println!("recorder RSS per call at {best} calls: {best_rss:.0} KiB");
}
