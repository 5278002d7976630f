//! Stream framing, header forms and transaction keys.
#![allow(clippy::unwrap_used)]

use callvault_recorder::sip::{self, Limits, Method, SipError, StreamFramer, TransactionKey};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sip/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

#[test]
fn framer_handles_partial_reads_pipelining_and_keepalives() {
    let a = fixture("invite-acme-two-streams.sip");
    let b = fixture("invite-cisco-three-parts.sip");
    let mut stream = b"\r\n\r\n".to_vec(); // RFC 5626 keep-alive first
    stream.extend_from_slice(&a);
    stream.extend_from_slice(&b);
    stream.extend_from_slice(b"\r\n\r\n");

    // Feed 7 bytes at a time: every message must come out once, whole.
    let mut framer = StreamFramer::new(Limits::default());
    let mut got = Vec::new();
    for chunk in stream.chunks(7) {
        framer.push(chunk);
        while let Some(msg) = framer.next_message().unwrap() {
            got.push(msg);
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], sip::parse_datagram(&a).unwrap());
    assert_eq!(
        got[1].call_id().unwrap(),
        "C0FFEE01-1DD2-11B2-8A01-AABBCCDDEEFF@172.20.1.5"
    );
    assert_eq!(framer.pending(), 0);

    // Both in one read.
    let mut framer = StreamFramer::new(Limits::default());
    framer.push(&[a.clone(), b.clone()].concat());
    assert!(framer.next_message().unwrap().is_some());
    assert!(framer.next_message().unwrap().is_some());
    assert!(framer.next_message().unwrap().is_none());
}

#[test]
fn framer_requires_content_length_on_streams() {
    let mut framer = StreamFramer::new(Limits::default());
    framer.push(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n");
    assert_eq!(
        framer.next_message().unwrap_err(),
        SipError::MissingHeader("Content-Length")
    );
}

#[test]
fn datagram_ignores_bytes_past_content_length() {
    let mut d = fixture("invite-plain-opus-single-stream.sip");
    let body_len = sip::parse_datagram(&d).unwrap().body.len();
    d.extend_from_slice(b"garbage after the body");
    assert_eq!(sip::parse_datagram(&d).unwrap().body.len(), body_len);
}

#[test]
fn folding_compact_forms_and_multiple_values() {
    let raw = b"\r\nOPTIONS sip:srs@192.0.2.50 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKb;received=203.0.113.5\r\n\
VIA: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKc\r\n\
f: <sip:x@10.0.0.1>;tag=f1\r\nt: sip:srs@192.0.2.50\r\ni: opt-1\r\nCSEQ: 9 OPTIONS\r\n\
Subject: a long\r\n  folded\r\n\tsubject\r\n\
c: Application/SDP ; charset=\"utf-8\"\r\nl: 0\r\n\r\n";
    let msg = sip::parse_datagram(raw).unwrap();
    msg.validate_request().unwrap();
    let vias = msg.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[1].received(), Some("203.0.113.5"));
    assert_eq!(vias[1].port, None);
    assert_eq!(msg.headers.get("subject"), Some("a long folded subject"));
    let ct = msg.content_type().unwrap().unwrap();
    assert!(ct.is("application/sdp"));
    assert_eq!(ct.param("charset"), Some("utf-8"));
    assert_eq!(msg.to().unwrap().uri, "sip:srs@192.0.2.50");
    assert_eq!(msg.headers.get("Call-ID"), Some("opt-1"));

    // Serialising writes full names; re-parsing yields the same message.
    let back = sip::parse_datagram(&msg.to_bytes()).unwrap();
    assert_eq!(back.headers.values("Via").len(), 3);
    assert_eq!(back.headers.get("Subject"), Some("a long folded subject"));
    assert!(
        String::from_utf8(msg.to_bytes())
            .unwrap()
            .contains("\r\nCall-ID: opt-1\r\n")
    );
}

#[test]
fn transaction_keys_match_ack_and_cancel_to_invite() {
    let invite = sip::parse_datagram(&fixture("invite-acme-two-streams.sip")).unwrap();
    let key = TransactionKey::of(&invite).unwrap();
    assert_eq!(key.branch, "z9hG4bK3a7f0c1e2d4b");
    assert_eq!(key.sent_by, "198.51.100.20:5060");
    assert_eq!(key.method, Method::Invite);

    let ack = b"ACK sip:srs@192.0.2.50 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK3a7f0c1e2d4b\r\nFrom: <sip:src@198.51.100.20>;tag=8c21f0a7\r\nTo: <sip:srs@192.0.2.50>;tag=x\r\nCall-ID: 4f1e9d2c8b7a6e5f@198.51.100.20\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    let ack = sip::parse_datagram(ack).unwrap();
    assert_eq!(TransactionKey::of(&ack).unwrap(), key);

    let cancel = String::from_utf8(ack.to_bytes())
        .unwrap()
        .replace("ACK sip", "CANCEL sip")
        .replace("1 ACK", "1 CANCEL");
    let cancel_key = TransactionKey::of(&sip::parse_datagram(cancel.as_bytes()).unwrap()).unwrap();
    assert_ne!(cancel_key, key);
    assert_eq!(cancel_key.cancelled_invite(), key);

    // A different sent-by with the same branch is a different transaction.
    let other = String::from_utf8(invite.to_bytes())
        .unwrap()
        .replace("198.51.100.20:5060;branch", "198.51.100.99:5060;branch");
    assert_ne!(
        TransactionKey::of(&sip::parse_datagram(other.as_bytes()).unwrap()).unwrap(),
        key
    );
}

#[test]
fn trying_gets_no_to_tag_and_existing_tags_are_kept() {
    let invite = sip::parse_datagram(&fixture("invite-acme-two-streams.sip")).unwrap();
    let trying = invite.response(100, "Trying", "new").unwrap();
    assert_eq!(trying.to().unwrap().tag(), None);
    let reinvite = sip::parse_datagram(&fixture("reinvite-inactive-partial.sip")).unwrap();
    let ok = reinvite.response(200, "OK", "other").unwrap();
    assert_eq!(ok.to().unwrap().tag(), Some("cv-5e1d2a"));
    // Values with line breaks cannot smuggle headers into the output.
    let mut evil = invite.response(486, "Busy Here", "t").unwrap();
    evil.headers.push("Reason", "x\r\nInjected: yes");
    let parsed = sip::parse_datagram(&evil.to_bytes()).unwrap();
    assert_eq!(parsed.headers.get("Injected"), None);
}
