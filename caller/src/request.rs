//! What the client says and how it reads the answer, as pure functions: the SIPREC INVITE
//! (RFC 7866: multipart/mixed with an SDP offer of two labelled send-only streams and RFC 7865
//! metadata), ACK, BYE, responses to the recorder's own requests, and the media addresses in
//! the answer.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use callvault_recorder::multipart::siprec_body;
use callvault_recorder::sdp::{self, Direction};
use callvault_recorder::sip::transport::Transport;
use callvault_recorder::sip::{Method, NameAddr, SipMessage};
use callvault_recorder::srtp::Crypto;

use crate::config::{G711, Party, Target};
use crate::error::CallError;

/// Boundary of the multipart body; never occurs in the parts (they are SDP and XML we write).
const BOUNDARY: &str = "callvault-siprec-boundary";
/// Stream labels, in offer order: the caller (left channel) then the callee (right).
pub const LABELS: [&str; 2] = ["1", "2"];
const USER_AGENT: &str = concat!("CallVault/", env!("CARGO_PKG_VERSION"));

/// The identifiers of one call. Random for real calls, fixed in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIds {
    pub call_id: String,
    pub from_tag: String,
    /// SDP `o=` session id.
    pub sdp_session: u64,
    /// RFC 7865 ids (base64 of 128 bits): group, session, participants and streams.
    pub group: String,
    pub session: String,
    pub participants: [String; 2],
    pub streams: [String; 2],
}

impl CallIds {
    pub fn random(host: &IpAddr) -> Self {
        let id = || base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        Self {
            call_id: format!("{:032x}@{}", rand::random::<u128>(), host),
            from_tag: format!("cv{:016x}", rand::random::<u64>()),
            sdp_session: rand::random::<u32>().into(),
            group: id(),
            session: id(),
            participants: [id(), id()],
            streams: [id(), id()],
        }
    }
}

/// A fresh RFC 3261 branch (magic cookie + 64 random bits).
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

/// Where this end of the call is: its SIP address and the two RTP source ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub sip: SocketAddr,
    pub transport: Transport,
    pub rtp: [SocketAddr; 2],
}

impl Local {
    fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.transport, self.sip
        )
    }

    fn contact(&self) -> String {
        format!(
            "<sip:callvault@{};transport={}>;+sip.src",
            self.sip,
            self.transport.as_str().to_ascii_lowercase()
        )
    }
}

/// Everything the INVITE says.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    pub target: &'a Target,
    pub caller: &'a Party,
    pub callee: &'a Party,
    pub codec: G711,
    pub ids: &'a CallIds,
    pub local: Local,
    /// RFC 3339 UTC time written as the session's start.
    pub start_time: &'a str,
    /// Per stream, the SRTP key it is sent under; `None`: plain RTP.
    pub srtp: Option<&'a [Crypto; 2]>,
}

/// The SDP offer: one send-only m-line per party, labelled as the metadata's streams.
pub fn sdp_offer(o: &Offer<'_>) -> String {
    let ip = o.local.sip.ip();
    let ip_type = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let pt = o.codec.payload_type();
    let mut s = format!(
        "v=0\r\no=callvault {id} {id} IN {ip_type} {ip}\r\ns=CallVault test call\r\n\
         c=IN {ip_type} {ip}\r\nt=0 0\r\n",
        id = o.ids.sdp_session
    );
    for (i, (label, rtp)) in LABELS.iter().zip(o.local.rtp).enumerate() {
        let proto = if o.srtp.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        };
        let _ = write!(
            s,
            "m=audio {port} {proto} {pt}\r\na=rtpmap:{pt} {name}/8000\r\na=ptime:20\r\n",
            port = rtp.port(),
            name = o.codec.encoding_name()
        );
        if let Some(keys) = o.srtp {
            let _ = write!(s, "a=crypto:{}\r\n", &*keys[i].attribute());
        }
        let _ = write!(s, "a=label:{label}\r\na=sendonly\r\n");
    }
    s
}

/// `sip:` URI of a party: a number becomes the user part; a URI is kept as given.
fn party_aor(p: &Party) -> String {
    if p.number.starts_with("sip:") || p.number.starts_with("tel:") {
        p.number.clone()
    } else {
        format!("sip:{}@callvault.invalid", p.number)
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 7865 metadata: the session, both participants with AOR and name, both streams by
/// label, and who sends and receives which stream.
pub fn metadata(o: &Offer<'_>) -> String {
    let ids = o.ids;
    let mut x = String::with_capacity(2048);
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n\
         <datamode>complete</datamode>\r\n\
         <group group_id=\"{g}\">\r\n<associate-time>{t}</associate-time>\r\n</group>\r\n\
         <session session_id=\"{s}\">\r\n<group-ref>{g}</group-ref>\r\n\
         <start-time>{t}</start-time>\r\n</session>\r\n",
        g = ids.group,
        s = ids.session,
        t = xml_escape(o.start_time),
    );
    for (party, pid) in [o.caller, o.callee].into_iter().zip(&ids.participants) {
        let _ = write!(
            x,
            "<participant participant_id=\"{pid}\">\r\n<nameID aor=\"{aor}\">\r\n\
             <name xml:lang=\"en\">{name}</name>\r\n</nameID>\r\n</participant>\r\n",
            aor = xml_escape(&party_aor(party)),
            name = xml_escape(&party.name),
        );
    }
    for (label, sid) in LABELS.iter().zip(&ids.streams) {
        let _ = write!(
            x,
            "<stream stream_id=\"{sid}\" session_id=\"{s}\">\r\n<label>{label}</label>\r\n\
             </stream>\r\n",
            s = ids.session
        );
    }
    for (i, pid) in ids.participants.iter().enumerate() {
        let _ = write!(
            x,
            "<participantstreamassoc participant_id=\"{pid}\">\r\n<send>{}</send>\r\n\
             <recv>{}</recv>\r\n</participantstreamassoc>\r\n",
            ids.streams[i],
            ids.streams[1 - i]
        );
    }
    x.push_str("</recording>\r\n");
    x
}

/// The SIPREC INVITE (RFC 7866 §6.1: `Require: siprec`, `+sip.src` in Contact, the metadata
/// part with disposition `recording-session`).
pub fn invite(o: &Offer<'_>, branch: &str) -> SipMessage {
    let mut body = String::with_capacity(4096);
    let _ = write!(
        body,
        "--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n{}\r\n\
         --{BOUNDARY}\r\nContent-Type: application/rs-metadata+xml\r\n\
         Content-Disposition: recording-session\r\n\r\n{}\r\n--{BOUNDARY}--\r\n",
        sdp_offer(o),
        metadata(o)
    );
    let mut m = SipMessage::request(Method::Invite, o.target.uri.clone());
    let h = &mut m.headers;
    h.push("Via", o.local.via(branch));
    h.push("Max-Forwards", "70");
    h.push(
        "From",
        format!(
            "<sip:callvault@{}>;tag={}",
            o.local.sip.ip_uri(),
            o.ids.from_tag
        ),
    );
    h.push("To", format!("<{}>", o.target.uri));
    h.push("Call-ID", o.ids.call_id.clone());
    h.push("CSeq", "1 INVITE");
    h.push("Contact", o.local.contact());
    h.push("Require", "siprec");
    h.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS");
    h.push("Accept", "application/sdp");
    h.push("User-Agent", USER_AGENT);
    m.with_body(
        &format!("multipart/mixed;boundary={BOUNDARY}"),
        body.into_bytes(),
    )
}

trait IpUri {
    fn ip_uri(&self) -> String;
}

impl IpUri for SocketAddr {
    /// The host part of a URI: IPv6 in brackets.
    fn ip_uri(&self) -> String {
        match self.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        }
    }
}

/// The ACK to a non-2xx final response: part of the INVITE transaction (RFC 3261 §17.1.1.3),
/// same branch and Request-URI, To from the response.
pub fn ack_failure(invite: &SipMessage, response: &SipMessage) -> SipMessage {
    let uri = match &invite.start {
        callvault_recorder::sip::StartLine::Request { uri, .. } => uri.clone(),
        callvault_recorder::sip::StartLine::Response { .. } => String::new(),
    };
    let mut m = SipMessage::request(Method::Ack, uri);
    for name in ["Via", "Max-Forwards", "From"] {
        if let Some(v) = invite.headers.get(name) {
            m.headers.push(name, v);
        }
    }
    let to = response
        .headers
        .get("To")
        .or_else(|| invite.headers.get("To"))
        .unwrap_or_default();
    m.headers.push("To", to);
    m.headers
        .push("Call-ID", invite.headers.get("Call-ID").unwrap_or_default());
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    m.headers.push("CSeq", format!("{seq} ACK"));
    m
}

/// The dialog a 2xx to the INVITE created (RFC 3261 §12.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    /// Our From header, with our tag.
    pub from: String,
    /// The To header of the 2xx, with the recorder's tag.
    pub to: String,
    /// Request-URI of in-dialog requests: the 2xx's Contact.
    pub remote_target: String,
    /// Route headers for in-dialog requests: Record-Route of the 2xx, reversed.
    pub route_set: Vec<String>,
    pub invite_seq: u32,
}

impl Dialog {
    pub fn from_2xx(invite: &SipMessage, ok: &SipMessage) -> Result<Self, CallError> {
        let bad = |what: String| CallError::BadAnswer(what);
        let to = ok
            .headers
            .get("To")
            .ok_or_else(|| bad("200 OK has no To header".into()))?;
        let parsed = NameAddr::parse("To", to).map_err(|e| bad(e.to_string()))?;
        if parsed.tag().is_none() {
            return Err(bad("200 OK has no To tag".into()));
        }
        let remote_target = match ok.contacts() {
            Ok(c) => c.first().map(|c| c.uri.clone()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let remote_target = match remote_target {
            Some(uri) => uri,
            None => match &invite.start {
                callvault_recorder::sip::StartLine::Request { uri, .. } => uri.clone(),
                callvault_recorder::sip::StartLine::Response { .. } => String::new(),
            },
        };
        let mut route_set: Vec<String> = ok
            .headers
            .values("Record-Route")
            .into_iter()
            .map(str::to_owned)
            .collect();
        route_set.reverse();
        Ok(Self {
            call_id: invite.headers.get("Call-ID").unwrap_or_default().to_owned(),
            from: invite.headers.get("From").unwrap_or_default().to_owned(),
            to: to.to_owned(),
            remote_target,
            route_set,
            invite_seq: invite.cseq().map(|c| c.seq).unwrap_or(1),
        })
    }

    /// An in-dialog request: ACK for the 2xx (CSeq of the INVITE) or BYE (next CSeq).
    pub fn request(&self, method: Method, seq: u32, local: &Local, branch: &str) -> SipMessage {
        let mut m = SipMessage::request(method.clone(), self.remote_target.clone());
        let h = &mut m.headers;
        h.push("Via", local.via(branch));
        h.push("Max-Forwards", "70");
        for r in &self.route_set {
            h.push("Route", r.clone());
        }
        h.push("From", self.from.clone());
        h.push("To", self.to.clone());
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{seq} {method}"));
        if method == Method::Bye {
            h.push("User-Agent", USER_AGENT);
        }
        m
    }
}

/// `Retry-After` and `Warning` of a refusal, so the error says what the recorder said.
pub fn refusal_detail(response: &SipMessage) -> String {
    let mut d = String::new();
    for name in ["Retry-After", "Warning", "Reason"] {
        if let Some(v) = response.headers.get(name) {
            let v: String = v.chars().take(120).collect();
            let _ = write!(d, " ({name}: {v})");
        }
    }
    d
}

/// The address each stream's RTP goes to, from the SDP answer in a 2xx (bare or multipart),
/// checking the recorder accepted both streams with our codec and, for SRTP, with the offered
/// suite under its tag and a key of its own (RFC 4568 §7.1.2).
pub fn media_destinations(
    ok: &SipMessage,
    codec: G711,
    srtp: Option<&[Crypto; 2]>,
) -> Result<[SocketAddr; 2], CallError> {
    let bad = |what: String| CallError::BadAnswer(what);
    let ct = ok
        .content_type()
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("200 OK carries no SDP answer".into()))?;
    let body = siprec_body(&ct, &ok.body).map_err(|e| bad(format!("answer body: {e}")))?;
    let answer = sdp::parse(&body.sdp).map_err(|e| bad(format!("SDP answer: {e}")))?;
    if answer.media.len() != LABELS.len() {
        return Err(bad(format!(
            "SDP answer has {} m-lines for the {} offered",
            answer.media.len(),
            LABELS.len()
        )));
    }
    let pt = codec.payload_type().to_string();
    let mut out = [SocketAddr::from(([0, 0, 0, 0], 0)); 2];
    for (i, (m, label)) in answer.media.iter().zip(LABELS).enumerate() {
        if m.port == 0 {
            return Err(bad(format!("recorder rejected stream {label} (port 0)")));
        }
        if !m.formats.contains(&pt) {
            return Err(bad(format!(
                "stream {label} answered with payload types {:?}, not {} ({pt})",
                m.formats,
                codec.encoding_name()
            )));
        }
        match m.effective_direction(&answer) {
            Direction::RecvOnly | Direction::SendRecv => {}
            d => {
                return Err(bad(format!(
                    "stream {label} answered {}: the recorder will not receive it",
                    d.as_str()
                )));
            }
        }
        if let Some(keys) = srtp {
            let offered = &keys[i];
            let answered = m
                .attributes
                .iter()
                .filter(|(name, _)| name == "crypto")
                .filter_map(|(_, v)| Crypto::parse(v.as_deref()?).ok())
                .find(|c| c.tag == offered.tag);
            match answered {
                Some(c) if c.key.suite() == offered.key.suite() => {}
                Some(c) => {
                    return Err(bad(format!(
                        "stream {label} answered SRTP suite {} for tag {}, offered {}",
                        c.key.suite(),
                        c.tag,
                        offered.key.suite()
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "stream {label} answered without a usable a=crypto for tag {}",
                        offered.tag
                    )));
                }
            }
        }
        let ip = m
            .effective_connection(&answer)
            .and_then(|c| c.ip())
            .ok_or_else(|| bad(format!("stream {label} has no IP address in c=")))?;
        out[i] = SocketAddr::new(ip, m.port);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use callvault_recorder::metadata;
    use callvault_recorder::sip::parse_datagram;

    fn ids() -> CallIds {
        CallIds {
            call_id: "c0ffee@192.0.2.7".into(),
            from_tag: "cvtag".into(),
            sdp_session: 42,
            group: "Z3JvdXA=".into(),
            session: "c2Vzcw==".into(),
            participants: ["cGEx".into(), "cGEy".into()],
            streams: ["c3Qx".into(), "c3Qy".into()],
        }
    }

    fn local() -> Local {
        Local {
            sip: "192.0.2.7:5070".parse().unwrap(),
            transport: Transport::Udp,
            rtp: [
                "192.0.2.7:30000".parse().unwrap(),
                "192.0.2.7:30002".parse().unwrap(),
            ],
        }
    }

    fn with_offer<T>(f: impl FnOnce(&Offer<'_>) -> T) -> T {
        with_srtp_offer(None, f)
    }

    fn with_srtp_offer<T>(srtp: Option<&[Crypto; 2]>, f: impl FnOnce(&Offer<'_>) -> T) -> T {
        let target = Target::parse("sip:srs@192.0.2.50:5060").unwrap();
        let caller = Party {
            number: "+442071234567".into(),
            name: "Jane & Co <Ltd>".into(),
        };
        let callee = Party {
            number: "sip:4021@pbx.example".into(),
            name: "Desk 4021".into(),
        };
        let ids = ids();
        f(&Offer {
            target: &target,
            caller: &caller,
            callee: &callee,
            codec: G711::Pcma,
            ids: &ids,
            local: local(),
            start_time: "2026-01-02T03:04:05Z",
            srtp,
        })
    }

    #[test]
    fn invite_is_a_siprec_multipart_the_recorder_parser_accepts() {
        let bytes = with_offer(|o| invite(o, "z9hG4bKabc").to_bytes());
        let msg = parse_datagram(&bytes).unwrap();
        msg.validate_request().unwrap();
        assert_eq!(msg.method(), Some(&Method::Invite));
        assert!(msg.requires("siprec"));
        assert!(msg.headers.get("Contact").unwrap().contains("+sip.src"));
        assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bKabc"));
        assert_eq!(msg.from().unwrap().tag(), Some("cvtag"));
        let ct = msg.content_type().unwrap().unwrap();
        assert!(ct.is("multipart/mixed"));
        let body = siprec_body(&ct, &msg.body).unwrap();

        let offer = sdp::parse(&body.sdp).unwrap();
        assert_eq!(offer.media.len(), 2);
        for (m, (label, port)) in offer.media.iter().zip([("1", 30000), ("2", 30002)]) {
            assert_eq!(m.label.as_deref(), Some(label));
            assert_eq!(m.port, port);
            assert_eq!(m.formats, ["8"]);
            assert_eq!(m.rtpmap(8).unwrap().encoding, "PCMA");
            assert_eq!(m.ptime, Some(20));
            assert_eq!(m.effective_direction(&offer), Direction::SendOnly);
            let c = m.effective_connection(&offer).unwrap();
            assert_eq!(c.address, "192.0.2.7");
        }
        // The recorder would accept both streams.
        assert!(
            sdp::plan(&offer, sdp::SrtpPolicy::Preferred)
                .iter()
                .all(|p| matches!(p, sdp::MediaPlan::Accept { .. }))
        );

        let md = metadata::parse(&body.metadata.unwrap()).unwrap();
        assert_eq!(md.sessions.len(), 1);
        assert_eq!(
            md.sessions[0].start_time.as_deref(),
            Some("2026-01-02T03:04:05Z")
        );
        let senders: Vec<_> = md
            .label_senders()
            .iter()
            .map(|s| {
                let p = s.participant.unwrap();
                (
                    s.label.to_owned(),
                    p.aor.clone().unwrap(),
                    p.name.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            senders,
            [
                (
                    "1".to_owned(),
                    "sip:+442071234567@callvault.invalid".to_owned(),
                    "Jane & Co <Ltd>".to_owned()
                ),
                (
                    "2".to_owned(),
                    "sip:4021@pbx.example".to_owned(),
                    "Desk 4021".to_owned()
                ),
            ]
        );
        let caller = md.participant("cGEx").unwrap();
        assert_eq!(
            (caller.send.as_slice(), caller.recv.as_slice()),
            (&["c3Qx".to_owned()][..], &["c3Qy".to_owned()][..])
        );
    }

    fn response(status: u16, extra: &[(&str, &str)], body: Option<(&str, &str)>) -> SipMessage {
        let inv = with_offer(|o| invite(o, "z9hG4bKabc"));
        let mut r = inv.response(status, "Reason", "srs-tag").unwrap();
        for (n, v) in extra {
            r.headers.push(n, *v);
        }
        match body {
            Some((ct, b)) => r.with_body(ct, b.as_bytes().to_vec()),
            None => r,
        }
    }

    const ANSWER: &str = "v=0\r\no=callvault 1 1 IN IP4 198.51.100.9\r\ns=-\r\n\
        c=IN IP4 198.51.100.9\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=label:1\r\na=recvonly\r\n\
        m=audio 40002 RTP/AVP 8\r\nc=IN IP4 198.51.100.10\r\na=label:2\r\na=recvonly\r\n";

    #[test]
    fn media_goes_where_the_answer_says_per_stream() {
        let ok = response(200, &[], Some(("application/sdp", ANSWER)));
        let d = media_destinations(&ok, G711::Pcma, None).unwrap();
        assert_eq!(d[0], "198.51.100.9:40000".parse().unwrap());
        assert_eq!(d[1], "198.51.100.10:40002".parse().unwrap());
    }

    #[test]
    fn unusable_answers_are_reported_not_guessed() {
        let cases = [
            (None, "no SDP answer"),
            (Some(("application/sdp", "garbage")), "SDP answer"),
            (
                Some(("application/sdp", &ANSWER.replace("40002", "0")[..])),
                "rejected stream 2",
            ),
            (
                Some((
                    "application/sdp",
                    &ANSWER.replace("RTP/AVP 8", "RTP/AVP 0")[..],
                )),
                "not PCMA",
            ),
            (
                Some((
                    "application/sdp",
                    &ANSWER.replacen("a=recvonly", "a=inactive", 1)[..],
                )),
                "stream 1 answered inactive",
            ),
            (
                Some((
                    "application/sdp",
                    &ANSWER.split("m=audio 40002").next().unwrap().to_owned()[..],
                )),
                "1 m-lines for the 2",
            ),
        ];
        for (body, needle) in cases {
            let ok = response(200, &[], body);
            let e = media_destinations(&ok, G711::Pcma, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn srtp_offers_keys_the_recorder_takes_and_checks_its_answer() {
        use callvault_recorder::srtp::{MasterKey, Suite};
        let keys = [1, 1].map(|tag| Crypto {
            tag,
            key: MasterKey::generate(Suite::AeadAes128Gcm).unwrap(),
        });
        let sdp_text = with_srtp_offer(Some(&keys), sdp_offer);
        let offer = sdp::parse(sdp_text.as_bytes()).unwrap();
        let plans = sdp::plan(&offer, sdp::SrtpPolicy::Required);
        for (plan, key) in plans.iter().zip(&keys) {
            let sdp::MediaPlan::Accept {
                srtp: Some(chosen), ..
            } = plan
            else {
                panic!("{plan:?}");
            };
            assert_eq!(&chosen.remote, key);
        }
        let answer = |key: &MasterKey| {
            ANSWER.replace("RTP/AVP", "RTP/SAVP").replace(
                "a=recvonly",
                &format!(
                    "a=crypto:1 {} inline:{}\r\na=recvonly",
                    key.suite(),
                    &*key.inline()
                ),
            )
        };
        let ours = MasterKey::generate(Suite::AeadAes128Gcm).unwrap();
        let ok = response(200, &[], Some(("application/sdp", &answer(&ours))));
        assert!(media_destinations(&ok, G711::Pcma, Some(&keys)).is_ok());
        let other = MasterKey::generate(Suite::AeadAes256Gcm).unwrap();
        let ok = response(200, &[], Some(("application/sdp", &answer(&other))));
        let e = media_destinations(&ok, G711::Pcma, Some(&keys)).unwrap_err();
        assert!(
            e.to_string()
                .contains("answered SRTP suite AEAD_AES_256_GCM"),
            "{e}"
        );
        let ok = response(200, &[], Some(("application/sdp", ANSWER)));
        let e = media_destinations(&ok, G711::Pcma, Some(&keys)).unwrap_err();
        assert!(e.to_string().contains("without a usable a=crypto"), "{e}");
    }

    #[test]
    fn dialog_routes_acks_and_byes_to_the_contact_via_record_routes_reversed() {
        let inv = with_offer(|o| invite(o, "z9hG4bKabc"));
        let ok = response(
            200,
            &[
                ("Contact", "<sip:srs@198.51.100.9:5060>"),
                ("Record-Route", "<sip:p1.example;lr>, <sip:p2.example;lr>"),
            ],
            Some(("application/sdp", ANSWER)),
        );
        let d = Dialog::from_2xx(&inv, &ok).unwrap();
        let bye = d.request(Method::Bye, 2, &local(), "z9hG4bKbye");
        let bye = parse_datagram(&bye.to_bytes()).unwrap();
        bye.validate_request().unwrap();
        assert_eq!(
            bye.start,
            callvault_recorder::sip::StartLine::Request {
                method: Method::Bye,
                uri: "sip:srs@198.51.100.9:5060".into()
            }
        );
        assert_eq!(bye.to().unwrap().tag(), Some("srs-tag"));
        assert_eq!(bye.from().unwrap().tag(), Some("cvtag"));
        assert_eq!(bye.cseq().unwrap().seq, 2);
        assert_eq!(
            bye.headers.values("Route"),
            ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
        );
        let ack = d.request(Method::Ack, d.invite_seq, &local(), "z9hG4bKack");
        assert_eq!(ack.cseq().unwrap().seq, 1);
    }

    #[test]
    fn a_2xx_without_to_tag_is_refused() {
        let inv = with_offer(|o| invite(o, "z9hG4bKabc"));
        let mut ok = response(200, &[], None);
        ok.headers.set("To", "<sip:srs@192.0.2.50:5060>");
        let e = Dialog::from_2xx(&inv, &ok).unwrap_err().to_string();
        assert!(e.contains("no To tag"), "{e}");
    }

    #[test]
    fn failure_ack_stays_in_the_invite_transaction() {
        let inv = with_offer(|o| invite(o, "z9hG4bKabc"));
        let busy = response(503, &[("Retry-After", "30")], None);
        let ack = parse_datagram(&ack_failure(&inv, &busy).to_bytes()).unwrap();
        ack.validate_request().unwrap();
        assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKabc"));
        assert_eq!(ack.to().unwrap().tag(), Some("srs-tag"));
        assert_eq!(ack.cseq().unwrap().method, Method::Ack);
        assert_eq!(refusal_detail(&busy), " (Retry-After: 30)");
    }
}
