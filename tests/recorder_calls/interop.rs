//! The interop corpus: the SIPREC dialogs of the SBCs and recording clients CallVault is
//! deployed behind (docs/sbc.md), each a sipp scenario in tests/sipp/interop/ written from the
//! vendor's public documentation — its INVITE (headers, part order, metadata dialect, streams)
//! and what it sends in the dialog mid-call (a session refresh, a metadata update, a pause).
//! Every source places its call over UDP, TCP and TLS against one recorder process; TLS is
//! sipp's TCP carried by socat with OpenSSL (Debian's sipp is built without TLS), which checks
//! the recorder's certificate against the test CA. Each call is checked as a user would: the
//! answer (sipp matches it on the wire), who took part, and what each channel carries.

use super::*;

/// What the first and the second m-line's party say: short enough that 24 calls stay quick,
/// long enough for the envelope match.
const SENTENCES: [&str; 2] = [
    "Thank you for calling the ward, how can I help you?",
    "Hello, I would like to ask about my mother, please.",
];

/// One recording client's shape, and what its recording must hold.
struct Source {
    scenario: &'static str,
    /// What the pcap sends on every m-line.
    codec: Codec,
    /// m-lines the source offers; the pcap sends sentence k on the k-th (a single m-line is
    /// the call's mix).
    streams: usize,
    /// Which m-line's sentence each output channel carries.
    channels: [usize; 2],
    /// The call's participants when it ended, as (number, name).
    participants: &'static [(&'static str, &'static str)],
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// As the Via header names it.
    fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Gives the rig a TLS listener (server certificate for `localhost` from a CA of the test's)
/// beside UDP and TCP; returns its address and the CA's certificate file.
fn serve_tls(rig: &Rig) -> (SocketAddr, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = rig.dir.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Interop test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let ca_file = rig.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let port = free_tcp_port();
    rig.edit(|c| {
        c["sip"]["transports"] = serde_json::json!(["UDP", "TCP", "TLS"]);
        c["sip"]["tlsPort"] = serde_json::json!(port);
        c["sip"]["tlsDir"] = serde_json::json!(dir);
    });
    (SocketAddr::from((Ipv4Addr::LOCALHOST, port)), ca_file)
}

/// socat accepting one TCP connection on loopback and carrying it over TLS to `tls`,
/// verifying the server's certificate for `localhost` against `ca`.
async fn tls_tunnel(tls: SocketAddr, ca: &Path) -> (Child, SocketAddr) {
    loop {
        let port = free_tcp_port();
        let mut child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
            .arg(format!(
                "OPENSSL:{tls},cafile={},commonname=localhost,verify=1",
                ca.display()
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("socat is not installed (Debian package socat)");
        // Listening once the port cannot be bound; a port taken by another process makes
        // socat exit, and another is picked.
        let listening = poll("socat to listen", Duration::from_secs(10), || {
            let exited = child.try_wait().unwrap().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                StdTcpListener::bind((Ipv4Addr::LOCALHOST, port))
                    .is_err()
                    .then_some(true)
            }
        })
        .await;
        if listening {
            return (child, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
}

/// Places `source`'s call over each transport in turn and checks each recording.
async fn interop(source: Source) {
    let mut rig = Rig::new(None, 10).await;
    let (tls, ca) = serve_tls(&rig);
    rig.start().await;
    let rate = source.codec.pcm_rate();
    let speech = SENTENCES.map(|text| self::speech(rig.dir.path(), text, rate));
    let streams: Vec<Stream> = (0..source.streams)
        .map(|k| {
            rtp_stream(
                source.codec,
                &speech[k],
                0x1000 + k as u32,
                Duration::ZERO,
                None,
            )
        })
        .collect();
    let pcap = rig.dir.path().join("call.pcap");
    write_pcap(&pcap, &streams);
    let talk = speech[..source.streams]
        .iter()
        .map(|s| s.len() as u64 * 1000 / u64::from(rate))
        .max()
        .unwrap();
    for (n, transport) in [Transport::Udp, Transport::Tcp, Transport::Tls]
        .into_iter()
        .enumerate()
    {
        let vars = [
            ("PCAP", pcap.display().to_string()),
            ("TALK_MS", (talk + 300).to_string()),
            ("VIA", transport.via().to_owned()),
            ("CONTACT_TRANSPORT", transport.via().to_lowercase()),
        ];
        let out = match transport {
            Transport::Udp => sipp(&rig, source.scenario, &vars, "u1").await,
            Transport::Tcp => sipp(&rig, source.scenario, &vars, "t1").await,
            Transport::Tls => {
                let (_socat, tunnel) = tls_tunnel(tls, &ca).await;
                run_sipp(tunnel, rig.dir.path(), source.scenario, &vars, "t1").await
            }
        };
        assert!(
            out.status.success(),
            "{} over {transport:?}: sipp failed ({}):\n{}\n{}\nrecorder log:\n{}",
            source.scenario,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            rig.logs()
        );
        let row = rig
            .wait_finished(n + 1, Duration::from_secs(30))
            .await
            .remove(n);
        let what = format!("{} over {transport:?}", source.scenario);
        let pcm = check_recording(&rig, &row).await;
        for (channel, &line) in source.channels.iter().enumerate() {
            let (heard, _) = match_audio(&pcm[channel], &speech[line], rate as usize);
            assert!(
                heard > 0.8,
                "{what}: channel {channel} carries m-line {line}'s sentence ({heard:.2})"
            );
            if source.streams == 2 {
                let (other, _) = match_audio(&pcm[channel], &speech[1 - line], rate as usize);
                assert!(
                    heard > other + 0.2,
                    "{what}: channel {channel} is not the other party's ({heard:.2}, {other:.2})"
                );
            }
        }
        let parties: Vec<(&str, &str)> = row
            .participants
            .iter()
            .map(|p| (p.number.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(parties, source.participants, "{what}");
    }
}

/// Oracle (Acme Packet) ESBC: two labelled streams, `application/rs-metadata` with the
/// `apkt` extension, and a session-timer refresh re-INVITE with the SDP unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_esbc() {
    interop(Source {
        scenario: "interop/oracle_esbc.xml",
        codec: Codec::Pcma,
        streams: 2,
        channels: [0, 1],
        participants: &[("+442071234567", "Jane & Co Ltd"), ("4021", "Agent 4021")],
    })
    .await;
}

/// Avaya SBCE: draft-format metadata, a quoted boundary with spaces, G.729 offered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avaya_sbce() {
    interop(Source {
        scenario: "interop/avaya_sbce.xml",
        codec: Codec::Pcma,
        streams: 2,
        channels: [0, 1],
        participants: &[("0612345678", "0612345678"), ("5501", "5501")],
    })
    .await;
}

/// BroadWorks: compact headers, metadata first, one mixed stream, an UPDATE refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadworks() {
    interop(Source {
        scenario: "interop/broadworks.xml",
        codec: Codec::G722,
        streams: 1,
        channels: [0, 0],
        participants: &[("+13125550142", ""), ("2207", "Front Desk")],
    })
    .await;
}

/// Cisco CUBE: three body parts, media-level connection lines, hold and resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cisco_cube() {
    interop(Source {
        scenario: "interop/cisco_cube.xml",
        codec: Codec::G722,
        streams: 2,
        channels: [0, 1],
        participants: &[("2001", ""), ("+4930123456", "Müller")],
    })
    .await;
}

/// Ribbon SBC: prefixed namespace, no closing delimiter, the first participant on the second
/// stream (so it leads the left channel), a metadata-only UPDATE naming the customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ribbon_sbc() {
    interop(Source {
        scenario: "interop/ribbon_sbc.xml",
        codec: Codec::Pcmu,
        streams: 2,
        channels: [1, 0],
        participants: &[("7007", "Ward 7"), ("+441632960123", "Mr Patel")],
    })
    .await;
}

/// AudioCodes SBC: `;src`, legacy metadata, streams offered inactive until the call answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiocodes_sbc() {
    interop(Source {
        scenario: "interop/audiocodes_sbc.xml",
        codec: Codec::Pcma,
        streams: 2,
        channels: [0, 1],
        participants: &[("+14158536006", "Sam Jones"), ("4420", "Agent 4420")],
    })
    .await;
}

/// OpenSIPS siprec: labels from 0, the whole body again on pause and resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensips() {
    interop(Source {
        scenario: "interop/opensips.xml",
        codec: Codec::Pcmu,
        streams: 2,
        channels: [0, 1],
        participants: &[("+447700900123", "Alex Smith"), ("3001", "Support")],
    })
    .await;
}

/// FreeSWITCH mod_siprec: metadata first with wrong part lengths, one mixed stream, pause and
/// resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch() {
    interop(Source {
        scenario: "interop/freeswitch.xml",
        codec: Codec::Pcmu,
        streams: 1,
        channels: [0, 0],
        participants: &[("1000", ""), ("+15551230000", "")],
    })
    .await;
}
