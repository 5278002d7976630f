//! Vendor-shaped SIPREC INVITEs parsed end to end: SIP → multipart → SDP
//! answer and rs-metadata → which party is on which label.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use callvault_recorder::media::{Codec, PayloadType};
use callvault_recorder::metadata::{self, DataMode, RecordingMetadata};
use callvault_recorder::multipart::{self, SiprecBody};
use callvault_recorder::sdp::{self, AnswerParams, Direction, MediaPlan, RejectReason};
use callvault_recorder::sip::{self, Method, SipMessage};
use callvault_recorder::srtp::{Crypto, Suite};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sip/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

fn load(name: &str) -> (SipMessage, SiprecBody) {
    let msg = sip::parse_datagram(&fixture(name)).unwrap();
    let ct = msg.content_type().unwrap().unwrap();
    let body = multipart::siprec_body(&ct, &msg.body).unwrap();
    (msg, body)
}

const RECORDER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50));

fn answer(offer: &sdp::SessionDescription, ports: &[u16]) -> String {
    let plans = sdp::plan(offer, sdp::SrtpPolicy::Preferred);
    sdp::build_answer(
        offer,
        &plans,
        &AnswerParams {
            address: RECORDER,
            ports,
            session_id: 42,
            session_version: 1,
        },
    )
    .unwrap()
}

fn sender_aor<'a>(md: &'a RecordingMetadata, label: &str) -> Option<&'a str> {
    md.sender_of_label(label).and_then(|p| p.aor.as_deref())
}

#[test]
fn acme_two_streams_answer_and_parties() {
    let (msg, body) = load("invite-acme-two-streams.sip");
    assert_eq!(msg.method(), Some(&Method::Invite));
    assert!(msg.requires("siprec"));
    assert!(msg.supports("100rel"));
    msg.validate_request().unwrap();

    let offer = sdp::parse(&body.sdp).unwrap();
    assert_eq!(offer.media.len(), 2);
    let text = answer(&offer, &[20000, 20002]);
    // First offered codec (PCMA) plus telephone-event, receive-only, same labels, in order.
    let expected_m1 = "m=audio 20000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=label:1775001\r\na=recvonly\r\n";
    assert!(text.contains(expected_m1), "{text}");
    assert!(text.contains("m=audio 20002 RTP/AVP 8 101\r\n"));
    assert!(text.find("a=label:1775001") < text.find("a=label:1775002"));
    assert!(text.contains("c=IN IP4 192.0.2.50\r\n"));
    // The answer is itself valid SDP.
    let reparsed = sdp::parse(text.as_bytes()).unwrap();
    assert_eq!(reparsed.media[1].direction, Some(Direction::RecvOnly));

    let md = metadata::parse(body.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(md.datamode, DataMode::Complete);
    assert_eq!(
        md.sessions[0].sip_session_ids,
        ["a1b2c3d4e5f60718293a4b5c6d7e8f90;remote=00112233445566778899aabbccddeeff"]
    );
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("Gq1xZ3JvdXAtMDAx")
    );
    let caller = md.sender_of_label("1775001").unwrap();
    assert_eq!(caller.name.as_deref(), Some("Jane & Co Ltd"));
    assert_eq!(
        sender_aor(&md, "1775002"),
        Some("sip:4021@pbx.bank.example")
    );
    // Vendor extension kept verbatim for evidence.
    assert!(
        md.sessions[0].extensions[0].contains("<apkt:ucid>00AB0C1D2E3F40;encoding=hex</apkt:ucid>")
    );
}

#[test]
fn response_to_invite_carries_answer_and_dialog() {
    let (msg, body) = load("invite-acme-two-streams.sip");
    let offer = sdp::parse(&body.sdp).unwrap();
    let sdp_answer = answer(&offer, &[30000, 30002]);
    let resp = msg
        .response(200, "OK", "cv-5e1d2a")
        .unwrap()
        .with_body("application/sdp", sdp_answer.clone());
    let wire = resp.to_bytes();
    let back = sip::parse_datagram(&wire).unwrap();
    assert_eq!(back.status(), Some(200));
    assert_eq!(back.to().unwrap().tag(), Some("cv-5e1d2a"));
    assert_eq!(back.from().unwrap().tag(), Some("8c21f0a7"));
    assert_eq!(back.call_id().unwrap(), msg.call_id().unwrap());
    assert_eq!(back.cseq().unwrap(), msg.cseq().unwrap());
    assert_eq!(
        back.top_via().unwrap().branch(),
        Some("z9hG4bK3a7f0c1e2d4b")
    );
    assert_eq!(back.body, sdp_answer.as_bytes());
    assert_eq!(
        back.headers.get("Content-Length").unwrap(),
        sdp_answer.len().to_string()
    );

    // The re-INVITE in that dialog maps to the same dialog id.
    let dialog = sip::DialogId::created_by(&msg, "cv-5e1d2a").unwrap();
    let reinvite = sip::parse_datagram(&fixture("reinvite-inactive-partial.sip")).unwrap();
    assert_eq!(
        sip::DialogId::for_incoming(&reinvite).unwrap(),
        Some(dialog)
    );
    assert_eq!(sip::DialogId::for_incoming(&msg).unwrap(), None);
}

#[test]
fn avaya_draft_format_with_bare_lf_and_quoted_boundary() {
    let (msg, body) = load("invite-avaya-draft-lf.sip");
    assert_eq!(msg.top_via().unwrap().transport, "TCP");
    assert_eq!(msg.top_via().unwrap().rport(), Some(None));
    let offer = sdp::parse(&body.sdp).unwrap();
    let plans = sdp::plan(&offer, sdp::SrtpPolicy::Preferred);
    // G.729 is listed first but unsupported: PCMA is chosen instead.
    assert!(matches!(
        plans[0],
        MediaPlan::Accept {
            payload: PayloadType {
                codec: Codec::Pcma,
                pt: 8,
                ..
            },
            telephone_event: Some(101),
            ..
        }
    ));
    // Static PT 8 without an rtpmap line still resolves to PCMA.
    assert!(matches!(
        plans[1],
        MediaPlan::Accept {
            payload: PayloadType {
                codec: Codec::Pcma,
                ..
            },
            ..
        }
    ));

    let md = metadata::parse(body.metadata.as_deref().unwrap()).unwrap();
    // Draft-era `id=` attributes and send inside <participant>.
    assert_eq!(
        sender_aor(&md, "300101"),
        Some("sip:0612345678@198.51.100.77")
    );
    assert_eq!(
        sender_aor(&md, "300102"),
        Some("sip:5501@cc.hospital.example")
    );
    assert_eq!(
        md.sessions[0].start_time.as_deref(),
        Some("2025-03-04T16:20:45")
    );
}

#[test]
fn broadworks_metadata_first_single_mixed_stream_compact_headers() {
    let (msg, body) = load("invite-broadworks-metadata-first.sip");
    assert_eq!(msg.call_id().unwrap(), "BW09415526712345@198.51.100.140");
    assert_eq!(msg.from().unwrap().display.as_deref(), Some("Rec Platform"));
    assert!(msg.supports("siprec"));
    let contact = &msg.contacts().unwrap()[0];
    assert!(contact.param("+sip.src").is_some());

    let offer = sdp::parse(&body.sdp).unwrap();
    let text = answer(&offer, &[41000]);
    // G.729 first, then G.722: G.722 chosen.
    assert!(
        text.contains("m=audio 41000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n"),
        "{text}"
    );

    let md = metadata::parse(body.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(md.streams.len(), 1);
    assert_eq!(
        md.participants[0].aor.as_deref(),
        Some("sip:+13125550142@198.51.100.140;user=phone")
    );
    assert!(md.extensions[0].contains("<bwext:callType>network</bwext:callType>"));
}

#[test]
fn cisco_three_parts_media_level_connection() {
    let (msg, body) = load("invite-cisco-three-parts.sip");
    assert_eq!(msg.headers.get("session-id").map(|s| s.len()), Some(72));
    let offer = sdp::parse(&body.sdp).unwrap();
    let m = &offer.media[0];
    assert_eq!(
        m.effective_connection(&offer).unwrap().address,
        "172.20.1.6"
    );
    assert_eq!(offer.connection.as_ref().unwrap().address, "172.20.1.5");
    assert_eq!(m.fmtp(101), Some("0-16"));

    let md = metadata::parse(body.metadata.as_deref().unwrap()).unwrap();
    let senders: Vec<(&str, Option<&str>)> = md
        .label_senders()
        .iter()
        .map(|s| (s.label, s.participant.and_then(|p| p.name.as_deref())))
        .collect();
    assert_eq!(senders, [("1", None), ("2", Some("Müller"))]);
    assert_eq!(sender_aor(&md, "1"), Some("sip:2001@172.20.1.5"));
}

#[test]
fn sonus_prefixed_namespace_and_missing_close_delimiter() {
    let msg = sip::parse_datagram(&fixture("invite-sonus-prefixed-no-close.sip")).unwrap();
    let ct = msg.content_type().unwrap().unwrap();
    let mp = multipart::parse(&ct, &msg.body).unwrap();
    assert!(!mp.terminated);
    assert_eq!(mp.parts.len(), 2);
    assert_eq!(
        mp.parts[1].disposition().as_deref(),
        Some("recording-session")
    );

    let body = multipart::siprec_body(&ct, &msg.body).unwrap();
    let offer = sdp::parse(&body.sdp).unwrap();
    assert!(offer.connection.is_none());
    assert_eq!(
        offer.media[1].effective_connection(&offer).unwrap().address,
        "10.40.1.12"
    );
    let md = metadata::parse(body.metadata.as_deref().unwrap()).unwrap();
    // Label 1 is sent by the external party, label 2 by the ward.
    assert_eq!(sender_aor(&md, "1"), Some("+441632960123@10.40.3.3"));
    assert_eq!(
        md.sender_of_label("2").unwrap().name.as_deref(),
        Some("Ward 7")
    );
    // Whitespace-only name means no name.
    assert_eq!(md.sender_of_label("1").unwrap().name, None);
    assert!(md.groups[0].extensions[0].contains("&lt;sip:7007@10.40.2.2&gt;"));
}

#[test]
fn plain_single_stream_opus_offer() {
    let (msg, body) = load("invite-plain-opus-single-stream.sip");
    assert!(!msg.requires("siprec"));
    assert!(body.metadata.is_none());
    let offer = sdp::parse(&body.sdp).unwrap();
    let text = answer(&offer, &[22222]);
    // No label, no direction in the offer → sendrecv → answer recvonly.
    // telephone-event at 48 kHz pairs with Opus, not the 8 kHz one.
    assert!(text.contains("m=audio 22222 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1; minptime=10\r\na=rtpmap:101 telephone-event/48000\r\n"), "{text}");
    assert!(text.contains("a=recvonly\r\n"));
    assert!(!text.contains("a=label"));
}

#[test]
fn reinvite_inactive_and_partial_metadata_merge() {
    let (_, first) = load("invite-acme-two-streams.sip");
    let mut state = metadata::parse(first.metadata.as_deref().unwrap()).unwrap();

    let (msg, body) = load("reinvite-inactive-partial.sip");
    assert_eq!(msg.cseq().unwrap().seq, 2);
    let offer = sdp::parse(&body.sdp).unwrap();
    let text = answer(&offer, &[20000, 20002]);
    assert_eq!(text.matches("a=inactive\r\n").count(), 2, "{text}");
    assert!(!text.contains("recvonly"));

    let update = metadata::parse(body.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(update.datamode, DataMode::Partial);
    state.apply(update);
    // Stop time added, start time and streams kept, agent renamed.
    assert_eq!(
        state.sessions[0].stop_time.as_deref(),
        Some("2025-02-11T09:31:40Z")
    );
    assert_eq!(
        state.sessions[0].start_time.as_deref(),
        Some("2025-02-11T09:14:02Z")
    );
    assert_eq!(
        sender_aor(&state, "1775002"),
        Some("sip:4022@pbx.bank.example")
    );
    assert_eq!(
        sender_aor(&state, "1775001"),
        Some("sip:+442071234567@carrier.example.net")
    );
    assert_eq!(state.participants.len(), 2);
}

#[test]
fn rejected_lines_keep_position_with_port_zero() {
    let offer = sdp::parse(
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n\
m=audio 5000 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:sha-256 AB:CD\r\na=label:a\r\n\
m=video 5002 RTP/AVP 96\r\n\
m=audio 5004 RTP/AVP 18\r\na=label:c\r\n\
m=audio 5006 RTP/AVP 0\r\na=label:d\r\na=sendonly\r\n",
    )
    .unwrap();
    let plans = sdp::plan(&offer, sdp::SrtpPolicy::Preferred);
    assert_eq!(
        plans[..3],
        [
            MediaPlan::Reject {
                reason: RejectReason::UnsupportedProtocol
            },
            MediaPlan::Reject {
                reason: RejectReason::NotAudio
            },
            MediaPlan::Reject {
                reason: RejectReason::NoCommonCodec(vec!["G729/8000".into()])
            },
        ]
    );
    let text = answer(&offer, &[7000]);
    let m_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        m_lines,
        [
            "m=audio 0 UDP/TLS/RTP/SAVP 0",
            "m=video 0 RTP/AVP 96",
            "m=audio 0 RTP/AVP 18",
            "m=audio 7000 RTP/AVP 0"
        ]
    );
    // Too few ports for the accepted lines is an error, not a guess.
    let err = sdp::build_answer(
        &offer,
        &plans,
        &AnswerParams {
            address: RECORDER,
            ports: &[],
            session_id: 1,
            session_version: 1,
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        sdp::SdpError::PortCount {
            needed: 1,
            given: 0
        }
    );
}

/// An SDES offer (RFC 4568): several keys, the first the recorder can use chosen per stream.
const SRTP_OFFER: &str = "v=0\r\no=sbc 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|2^31|1:1\r\n\
a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|2^31\r\n\
a=crypto:4 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBka\r\na=label:1\r\na=sendonly\r\n\
m=audio 40002 RTP/SAVP 0\r\na=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:AAECAw\r\na=label:2\r\na=sendonly\r\n\
m=audio 40004 RTP/AVP 0\r\na=label:3\r\na=sendonly\r\n";

#[test]
fn srtp_offers_are_answered_with_the_first_usable_suite_and_a_fresh_key() {
    let offer = sdp::parse(SRTP_OFFER.as_bytes()).unwrap();
    let plans = sdp::plan(&offer, sdp::SrtpPolicy::Preferred);
    // Tag 1's suite is unknown, tag 2 has an MKI: tag 3 is the first usable one.
    let MediaPlan::Accept {
        srtp: Some(keys), ..
    } = &plans[0]
    else {
        panic!("{:?}", plans[0]);
    };
    assert_eq!(keys.remote.tag, 3);
    assert_eq!(keys.remote.key.suite(), Suite::AesCm128HmacSha1_32);
    assert_eq!(
        (keys.local.tag, keys.local.key.suite()),
        (3, Suite::AesCm128HmacSha1_32)
    );
    assert_ne!(keys.local.key, keys.remote.key);
    // A key too short to be one: the stream is refused, saying so.
    assert_eq!(
        plans[1],
        MediaPlan::Reject {
            reason: RejectReason::NoUsableCrypto(
                "AES_CM_128_HMAC_SHA1_80 needs a 30-byte key and salt, the offer has 4 bytes"
                    .to_owned()
            )
        }
    );
    assert!(matches!(plans[2], MediaPlan::Accept { srtp: None, .. }));
    let text = answer(&offer, &[7000, 7002]);
    let answer = sdp::parse(text.as_bytes()).unwrap();
    assert_eq!(answer.media[0].proto, "RTP/SAVP");
    let crypto: Vec<_> = answer.media[0]
        .attributes
        .iter()
        .filter(|(n, _)| n == "crypto")
        .filter_map(|(_, v)| v.as_deref())
        .collect();
    assert_eq!(crypto.len(), 1, "{text}");
    // The answer is planned afresh: the same tag and suite, a key of its own again.
    let ours = Crypto::parse(crypto[0]).unwrap();
    assert_eq!(
        (ours.tag, ours.key.suite()),
        (3, Suite::AesCm128HmacSha1_32)
    );
    assert_ne!(ours.key, keys.remote.key);
    assert_eq!(answer.media[1].port, 0);
    assert_eq!(answer.media[2].proto, "RTP/AVP");
    assert!(
        !text.contains("AAECAwQF"),
        "the offer's keys are not echoed"
    );
}

#[test]
fn the_srtp_policy_refuses_the_other_kind_of_stream() {
    let offer = sdp::parse(SRTP_OFFER.as_bytes()).unwrap();
    let required = sdp::plan(&offer, sdp::SrtpPolicy::Required);
    assert!(matches!(
        required[0],
        MediaPlan::Accept { srtp: Some(_), .. }
    ));
    assert_eq!(
        required[2],
        MediaPlan::Reject {
            reason: RejectReason::SrtpRequired
        }
    );
    let off = sdp::plan(&offer, sdp::SrtpPolicy::Disabled);
    for p in &off[..2] {
        assert_eq!(
            *p,
            MediaPlan::Reject {
                reason: RejectReason::SrtpDisabled
            }
        );
    }
    assert!(matches!(off[2], MediaPlan::Accept { srtp: None, .. }));
    for (reason, says) in [
        (RejectReason::SrtpRequired, "SRTP required"),
        (RejectReason::SrtpDisabled, "SRTP is disabled"),
        (
            RejectReason::NoUsableCrypto("MKI".into()),
            "no usable SRTP key: MKI",
        ),
    ] {
        assert!(reason.refusal().unwrap().contains(says));
    }
    assert_eq!(RejectReason::NotAudio.refusal(), None);
}
