//! Broken or hostile input gets a typed error naming the problem.
#![allow(clippy::unwrap_used)]

use callvault_recorder::metadata::{self, MetadataError};
use callvault_recorder::multipart::{self, MultipartError};
use callvault_recorder::sdp::{self, SdpError};
use callvault_recorder::sip::{self, Limits, SipError, StreamFramer, TransactionKey};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sip/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

#[test]
fn truncated_datagram() {
    // Cut inside the body (a lost IP fragment): the message is incomplete.
    let cut = fixture("truncated.sip");
    assert!(matches!(
        sip::parse_datagram(&cut).unwrap_err(),
        SipError::TruncatedBody { actual, .. } if actual < 900
    ));
    // Cut inside the headers.
    assert_eq!(
        sip::parse_datagram(&cut[..200]).unwrap_err(),
        SipError::UnterminatedHeaders
    );
}

#[test]
fn content_length_larger_than_body() {
    let err = sip::parse_datagram(&fixture("bad-content-length.sip")).unwrap_err();
    assert!(
        matches!(err, SipError::TruncatedBody { declared, actual } if declared == actual + 400)
    );
    let mut bad = fixture("invite-plain-opus-single-stream.sip");
    let text = String::from_utf8(bad.clone()).unwrap();
    bad = text
        .replace("Content-Length: ", "Content-Length: -")
        .into_bytes();
    assert!(matches!(
        sip::parse_datagram(&bad).unwrap_err(),
        SipError::InvalidHeader {
            header: "Content-Length",
            ..
        }
    ));
}

#[test]
fn missing_boundary() {
    let msg = sip::parse_datagram(&fixture("missing-boundary.sip")).unwrap();
    let ct = msg.content_type().unwrap().unwrap();
    assert_eq!(
        multipart::siprec_body(&ct, &msg.body).unwrap_err(),
        MultipartError::MissingBoundary
    );
    let wrong = sip::MediaType::parse("multipart/mixed;boundary=not-there").unwrap();
    assert_eq!(
        multipart::parse(&wrong, &msg.body).unwrap_err(),
        MultipartError::NoParts
    );
}

#[test]
fn broken_xml_metadata() {
    let msg = sip::parse_datagram(&fixture("broken-xml.sip")).unwrap();
    let body = multipart::siprec_body(&msg.content_type().unwrap().unwrap(), &msg.body).unwrap();
    // The SDP is still usable, so the call can be recorded without metadata.
    assert_eq!(sdp::parse(&body.sdp).unwrap().media.len(), 2);
    let err = metadata::parse(body.metadata.as_deref().unwrap()).unwrap_err();
    assert!(matches!(err, MetadataError::Xml { .. }), "{err:?}");
}

#[test]
fn xml_entity_tricks_are_refused() {
    let bomb = br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><recording><datamode>&b;</datamode></recording>"#;
    assert_eq!(metadata::parse(bomb).unwrap_err(), MetadataError::Doctype);
    let external = br#"<recording><datamode>&xxe;</datamode></recording>"#;
    assert_eq!(
        metadata::parse(external).unwrap_err(),
        MetadataError::UnknownEntity("xxe".into())
    );
    let deep = format!(
        "<recording>{}{}</recording>",
        "<x>".repeat(100),
        "</x>".repeat(100)
    );
    assert_eq!(
        metadata::parse(deep.as_bytes()).unwrap_err(),
        MetadataError::TooDeep
    );
    assert!(matches!(
        metadata::parse(b"<html><body/></html>").unwrap_err(),
        MetadataError::NotRecording(n) if n == "html"
    ));
    assert_eq!(
        metadata::parse(b"<recording><datamode>sometimes</datamode></recording>").unwrap_err(),
        MetadataError::BadDataMode("sometimes".into())
    );
}

#[test]
fn huge_headers_are_bounded() {
    let long = format!(
        "OPTIONS sip:a@b SIP/2.0\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(matches!(
        sip::parse_datagram(long.as_bytes()).unwrap_err(),
        SipError::HeaderTooLong { len, .. } if len > 20_000
    ));
    let many = format!(
        "OPTIONS sip:a@b SIP/2.0\r\n{}\r\n",
        "X-A: 1\r\n".repeat(500)
    );
    assert_eq!(
        sip::parse_datagram(many.as_bytes()).unwrap_err(),
        SipError::TooManyHeaders(200)
    );
    let big = vec![b'a'; 300 * 1024];
    assert!(matches!(
        sip::parse_datagram(&big).unwrap_err(),
        SipError::TooLarge { .. }
    ));

    // A stream that never ends its headers is cut off at the limit.
    let mut framer = StreamFramer::new(Limits {
        max_message: 4096,
        ..Limits::default()
    });
    framer.push(b"INVITE sip:a@b SIP/2.0\r\n");
    for _ in 0..100 {
        framer.push(b"X-Flood: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n");
        if let Err(e) = framer.next_message() {
            assert!(matches!(e, SipError::TooLarge { .. }));
            assert_eq!(framer.pending(), 0);
            return;
        }
    }
    panic!("framer accepted an unbounded header section");
}

#[test]
fn bad_start_lines_and_headers() {
    let cases: [(&[u8], SipError); 6] = [
        (b"", SipError::Empty),
        (b"HELLO\r\n\r\n", SipError::BadStartLine("HELLO".into())),
        (
            b"INVITE sip:a@b SIP/3.0\r\n\r\n",
            SipError::BadVersion("3.0".into()),
        ),
        (b"SIP/2.0 99 Odd\r\n\r\n", SipError::BadStatus("99".into())),
        (
            b"INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n",
            SipError::BadHeaderLine("NoColonHere".into()),
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\n\tfolded-first: x\r\n\r\n",
            SipError::BadHeaderLine("\tfolded-first: x".into()),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(sip::parse_datagram(input).unwrap_err(), want);
    }
    let no_callid = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCSeq: 3 BYE\r\n\r\n";
    let msg = sip::parse_datagram(no_callid).unwrap();
    assert_eq!(
        msg.validate_request().unwrap_err(),
        SipError::MissingHeader("Call-ID")
    );
    assert_eq!(
        msg.response(200, "OK", "t").unwrap_err(),
        SipError::MissingHeader("Call-ID")
    );
    let bad_via = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let msg = sip::parse_datagram(bad_via).unwrap();
    assert!(matches!(
        TransactionKey::of(&msg).unwrap_err(),
        SipError::InvalidHeader { header: "Via", .. }
    ));
}

#[test]
fn sdp_errors_name_the_line() {
    assert_eq!(
        sdp::parse(b"o=- 1 1 IN IP4 h\r\n").unwrap_err(),
        SdpError::MissingVersion
    );
    assert!(matches!(
        sdp::parse(b"v=0\r\nm=audio notaport RTP/AVP 0\r\n").unwrap_err(),
        SdpError::BadLine { line: 2, .. }
    ));
    assert!(matches!(
        sdp::parse(b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n").unwrap_err(),
        SdpError::BadLine { line: 2, .. }
    ));
    assert!(matches!(
        sdp::parse(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:300 X/8000\r\n").unwrap_err(),
        SdpError::BadLine { line: 3, .. }
    ));
    // A no-break space is not a separator (RFC 4566 allows ASCII space only):
    // the m-line is refused by name instead of yielding a protocol the answer
    // would echo and that then does not parse.
    for line in [
        "m=audio 4000 \u{a0} 0",
        "m=audio 4000 RTP/AVP 0\u{a0}",
        "m=aud\u{a0}io 4000 RTP/AVP 0",
    ] {
        let err = sdp::parse(format!("v=0\r\n{line}\r\n").as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("line 2: m= line has a character"),
            "{line:?}: {err}"
        );
    }
    // Tabs and repeated spaces still separate: real sources send them.
    let tabs = sdp::parse(b"v=0\r\nm=audio\t4000  RTP/AVP\t0 8\r\n").unwrap();
    assert_eq!(tabs.media[0].formats, ["0", "8"]);
    let many = format!("v=0\r\n{}", "m=audio 4000 RTP/AVP 0\r\n".repeat(40));
    assert_eq!(
        sdp::parse(many.as_bytes()).unwrap_err(),
        SdpError::TooManyMedia
    );
}

#[test]
fn boundary_prefix_inside_content_is_not_a_delimiter() {
    let ct = sip::MediaType::parse("multipart/mixed; boundary=\"b1\"").unwrap();
    let body = b"preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nline\r\n--b1x not a delimiter\r\n--b1--\r\nepilogue";
    let mp = multipart::parse(&ct, body).unwrap();
    assert!(mp.terminated);
    assert_eq!(mp.parts.len(), 1);
    assert_eq!(mp.parts[0].body, b"line\r\n--b1x not a delimiter");
}
