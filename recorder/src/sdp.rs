//! SDP offers from recording sources (RFC 4566) and the recorder's answer
//! (RFC 3264): one answer m-line per offered m-line, in order, receive-only.

use std::fmt::Write as _;
use std::net::IpAddr;

use thiserror::Error;

pub use callvault_config::SrtpPolicy;

use crate::media::codec::{Codec, PayloadType};
use crate::srtp::{Crypto, CryptoError, MasterKey};

/// Offers beyond these sizes are not from a recording source.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
pub const MAX_MEDIA: usize = 32;
pub const MAX_FORMATS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    #[error("SDP of {0} bytes exceeds the {MAX_SDP_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("SDP is not valid UTF-8")]
    NotUtf8,
    #[error("SDP does not start with v=0")]
    MissingVersion,
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("more than {MAX_MEDIA} m-lines")]
    TooManyMedia,
    #[error("m-line {index} has more than {MAX_FORMATS} formats")]
    TooManyFormats { index: usize },
    #[error("m-line {index} has no connection address (neither session nor media c=)")]
    NoConnection { index: usize },
    #[error("answer needs {needed} ports, {given} given")]
    PortCount { needed: usize, given: usize },
}

/// `a=sendonly` etc. Absent everywhere means sendrecv (RFC 4566 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sendrecv" => Self::SendRecv,
            "sendonly" => Self::SendOnly,
            "recvonly" => Self::RecvOnly,
            "inactive" => Self::Inactive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }
}

/// `c=IN IP4 192.0.2.1` (a multicast `/ttl` suffix is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub addr_type: String,
    pub address: String,
}

impl Connection {
    /// The address as an IP, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub session_version: String,
    pub address: String,
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub media: String,
    pub port: u16,
    pub proto: String,
    /// Formats as listed on the m-line, in preference order.
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<(u8, String)>,
    pub label: Option<String>,
    pub direction: Option<Direction>,
    pub ptime: Option<u32>,
    /// `a=rtcp:<port>` when RTCP is not on port + 1.
    pub rtcp_port: Option<u16>,
    /// Every `a=` line as (name, value), including the ones parsed above.
    pub attributes: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Option<Origin>,
    pub session_name: String,
    pub connection: Option<Connection>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaDescription>,
}

impl MediaDescription {
    /// Direction in force for this m-line: media level, else session level,
    /// else sendrecv.
    pub fn effective_direction(&self, session: &SessionDescription) -> Direction {
        self.direction
            .or(session.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Connection in force: media level, else session level.
    pub fn effective_connection<'a>(
        &'a self,
        session: &'a SessionDescription,
    ) -> Option<&'a Connection> {
        self.connection.as_ref().or(session.connection.as_ref())
    }

    /// The rtpmap of a format, falling back to the static table (RFC 3551).
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        self.rtpmaps
            .iter()
            .find(|m| m.payload_type == pt)
            .cloned()
            .or_else(|| {
                PayloadType::static_type(pt).map(|t| RtpMap {
                    payload_type: pt,
                    encoding: t.codec.encoding_name().to_owned(),
                    clock_rate: t.clock_rate,
                    channels: None,
                })
            })
    }

    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an SDP session description. Unknown lines and attributes are
/// kept or skipped, never rejected: sources add vendor attributes freely.
pub fn parse(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
    if bytes.len() > MAX_SDP_BYTES {
        return Err(SdpError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SdpError::NotUtf8)?;
    let mut lines = text
        .split('\n')
        // Only ASCII blanks end a line: `trim_end` would also drop Unicode
        // spaces such as U+00A0, which a token of ours may not end with.
        .map(|l| {
            l.strip_suffix('\r')
                .unwrap_or(l)
                .trim_end_matches([' ', '\t'])
        })
        .enumerate()
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, "v=0")) => {}
        _ => return Err(SdpError::MissingVersion),
    }
    let mut sd = SessionDescription {
        origin: None,
        session_name: String::new(),
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    for (idx, line) in lines {
        let lineno = idx + 1;
        let bad = |reason: &str| SdpError::BadLine {
            line: lineno,
            reason: reason.to_owned(),
        };
        let (kind, value) = match line.split_once('=') {
            Some((k, v)) if k.len() == 1 => (k, v),
            _ => return Err(bad("expected <type>=<value>")),
        };
        match kind {
            "m" => {
                if sd.media.len() >= MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                let index = sd.media.len();
                sd.media.push(parse_media_line(value).map_err(|e| match e {
                    MediaLineError::Bad(r) => bad(r),
                    MediaLineError::TooManyFormats => SdpError::TooManyFormats { index },
                })?);
            }
            "c" => {
                let c = parse_connection(value).ok_or_else(|| bad("invalid c= line"))?;
                match sd.media.last_mut() {
                    Some(m) => m.connection = Some(c),
                    None => sd.connection = Some(c),
                }
            }
            "o" if sd.media.is_empty() => {
                let f: Vec<&str> = value.split_ascii_whitespace().collect();
                if let [user, id, version, _, _, addr] = f.as_slice() {
                    sd.origin = Some(Origin {
                        username: (*user).to_owned(),
                        session_id: (*id).to_owned(),
                        session_version: (*version).to_owned(),
                        address: (*addr).to_owned(),
                    });
                } else {
                    return Err(bad("o= needs 6 fields"));
                }
            }
            "s" if sd.media.is_empty() => sd.session_name = value.to_owned(),
            "a" => {
                let (name, val) = match value.split_once(':') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (value.trim(), None),
                };
                match sd.media.last_mut() {
                    Some(m) => apply_media_attribute(m, name, val).map_err(bad)?,
                    None => {
                        if let Some(d) = Direction::parse(name) {
                            sd.direction = Some(d);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(sd)
}

enum MediaLineError {
    Bad(&'static str),
    TooManyFormats,
}

fn parse_media_line(value: &str) -> Result<MediaDescription, MediaLineError> {
    // RFC 4566 §9: fields are tokens separated by a space. Tabs and repeated
    // spaces are tolerated as separators; anything else that is not a token
    // character (a control character, U+00A0, other Unicode) is refused here,
    // since the answer echoes these tokens and must parse again.
    let mut f = value.split([' ', '\t']).filter(|t| !t.is_empty());
    let mut token = |missing: &'static str| -> Result<Option<&str>, MediaLineError> {
        match f.next() {
            None if missing.is_empty() => Ok(None),
            None => Err(MediaLineError::Bad(missing)),
            Some(t) if t.chars().all(is_token_char) => Ok(Some(t)),
            Some(_) => Err(MediaLineError::Bad(
                "m= line has a character that is not allowed in a token",
            )),
        }
    };
    let media = token("empty m= line")?.unwrap_or_default();
    let port_field = token("m= line has no port")?.unwrap_or_default();
    // `port/count` is for layered multicast; only the base port matters here.
    let port = port_field
        .split('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or(MediaLineError::Bad("invalid m= port"))?;
    let proto = token("m= line has no protocol")?.unwrap_or_default();
    let mut formats = Vec::new();
    while let Some(fmt) = token("")? {
        if formats.len() >= MAX_FORMATS {
            return Err(MediaLineError::TooManyFormats);
        }
        formats.push(fmt.to_owned());
    }
    Ok(MediaDescription {
        media: media.to_ascii_lowercase(),
        port,
        proto: proto.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        label: None,
        direction: None,
        ptime: None,
        rtcp_port: None,
        attributes: Vec::new(),
    })
}

/// RFC 4566 §9 `token-char`: visible ASCII but for `"(),:;<=>?@[\]`. `/` is
/// allowed here because the protocol (`RTP/AVP`) is tokens joined by it.
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"\"(),:;<=>?@[\\]".contains(c)
}

fn parse_connection(value: &str) -> Option<Connection> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    match f.as_slice() {
        [net, addr_type, addr] if net.eq_ignore_ascii_case("IN") => Some(Connection {
            addr_type: addr_type.to_ascii_uppercase(),
            address: addr.split('/').next().unwrap_or_default().to_owned(),
        }),
        _ => None,
    }
}

fn apply_media_attribute(
    m: &mut MediaDescription,
    name: &str,
    val: Option<&str>,
) -> Result<(), &'static str> {
    if m.attributes.len() >= 4 * MAX_FORMATS {
        return Err("too many attributes on one m-line");
    }
    m.attributes.push((name.to_owned(), val.map(str::to_owned)));
    if let Some(d) = Direction::parse(name) {
        m.direction = Some(d);
        return Ok(());
    }
    let Some(val) = val else { return Ok(()) };
    match name {
        "rtpmap" => {
            let (pt, rest) = val.split_once(' ').ok_or("invalid rtpmap")?;
            let pt: u8 = pt.parse().map_err(|_| "invalid rtpmap payload type")?;
            let mut it = rest.trim().split('/');
            let encoding = it.next().unwrap_or_default().to_owned();
            let clock_rate = it
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or("invalid rtpmap clock rate")?;
            let channels = it.next().and_then(|c| c.parse().ok());
            m.rtpmaps.retain(|r| r.payload_type != pt);
            m.rtpmaps.push(RtpMap {
                payload_type: pt,
                encoding,
                clock_rate,
                channels,
            });
        }
        "fmtp" => {
            let (pt, rest) = val.split_once(' ').unwrap_or((val, ""));
            if let Ok(pt) = pt.parse() {
                m.fmtps.push((pt, rest.trim().to_owned()));
            }
        }
        "label" => m.label = Some(val.to_owned()),
        "ptime" => m.ptime = val.parse().ok(),
        "rtcp" => {
            m.rtcp_port = val
                .split_ascii_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
        }
        _ => {}
    }
    Ok(())
}

/// What the recorder does with one offered m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPlan {
    /// Receive this stream.
    Accept {
        label: Option<String>,
        /// The first offered codec the recorder decodes, with its payload type and clock.
        payload: PayloadType,
        /// RFC 4733 events payload type, if offered at a matching rate.
        telephone_event: Option<u8>,
        /// Direction the answer states: recvonly, or inactive when the
        /// offer is inactive (on hold / paused).
        direction: Direction,
        /// SRTP keys, for an `RTP/SAVP` stream.
        srtp: Option<SrtpKeys>,
    },
    /// Answered with port 0.
    Reject { reason: RejectReason },
}

/// The SDES keys of one SRTP stream (RFC 4568 §5.1.2): the offer's chosen attribute, which
/// decrypts what the source sends, and the recorder's own of the same tag and suite, fresh
/// for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub remote: Crypto,
    pub local: Crypto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    NotAudio,
    /// Offered with port 0 (the source removed the stream).
    Disabled,
    /// A transport profile the recorder cannot receive (DTLS-SRTP, plain UDP, ...).
    UnsupportedProtocol,
    /// None of the offered codecs is one the recorder decodes: what was offered, named
    /// (`G729/8000`, ...).
    NoCommonCodec(Vec<String>),
    /// Plain RTP, and the profile requires SRTP.
    SrtpRequired,
    /// SRTP, and the profile disables it.
    SrtpDisabled,
    /// SRTP without an `a=crypto` the recorder can use: why the first one is not.
    NoUsableCrypto(String),
}

impl RejectReason {
    /// Why an offer none of whose streams could be accepted is refused, when the source can
    /// change its offer to be accepted: the media's protection or its codecs.
    pub fn refusal(&self) -> Option<String> {
        match self {
            RejectReason::NoCommonCodec(offered) => Some(format!(
                "no codec the recorder decodes: offered {}; it decodes PCMU, PCMA, G722 and opus \
                 (G.729 has no implementation under a licence CallVault can ship)",
                offered.join(", ")
            )),
            RejectReason::SrtpRequired => Some(
                "SRTP required by the recording profile: offer RTP/SAVP with a=crypto, not plain RTP"
                    .to_owned(),
            ),
            RejectReason::SrtpDisabled => Some(
                "SRTP is disabled in the recording profile: offer plain RTP/AVP, not RTP/SAVP".to_owned(),
            ),
            RejectReason::NoUsableCrypto(why) => Some(format!("no usable SRTP key: {why}")),
            _ => None,
        }
    }
}

/// Decides, per offered m-line and in order, what the answer will say.
/// The caller allocates one port pair per `Accept` before building the answer.
pub fn plan(offer: &SessionDescription, srtp: SrtpPolicy) -> Vec<MediaPlan> {
    offer
        .media
        .iter()
        .map(|m| plan_one(offer, m, srtp))
        .collect()
}

fn plan_one(offer: &SessionDescription, m: &MediaDescription, policy: SrtpPolicy) -> MediaPlan {
    let reject = |reason| MediaPlan::Reject { reason };
    if m.media != "audio" {
        return reject(RejectReason::NotAudio);
    }
    if m.port == 0 {
        return reject(RejectReason::Disabled);
    }
    let secure = match m.proto.to_ascii_uppercase().as_str() {
        "RTP/AVP" | "RTP/AVPF" => false,
        "RTP/SAVP" | "RTP/SAVPF" => true,
        _ => return reject(RejectReason::UnsupportedProtocol),
    };
    match (secure, policy) {
        (false, SrtpPolicy::Required) => return reject(RejectReason::SrtpRequired),
        (true, SrtpPolicy::Disabled) => return reject(RejectReason::SrtpDisabled),
        _ => {}
    }
    let srtp = if secure {
        match choose_crypto(m) {
            Ok(keys) => Some(keys),
            Err(why) => return reject(RejectReason::NoUsableCrypto(why)),
        }
    } else {
        None
    };
    let chosen = m.formats.iter().find_map(|f| {
        let pt: u8 = f.parse().ok()?;
        let map = m.rtpmap(pt)?;
        let codec = Codec::from_rtpmap(&map.encoding, map.clock_rate)?;
        (codec != Codec::TelephoneEvent).then(|| PayloadType::dynamic(pt, codec, map.clock_rate))
    });
    let Some(payload) = chosen else {
        return reject(RejectReason::NoCommonCodec(offered_codecs(m)));
    };
    let clock_rate = payload.clock_rate;
    let telephone_event = m.formats.iter().find_map(|f| {
        let pt: u8 = f.parse().ok()?;
        let map = m.rtpmaps.iter().find(|r| r.payload_type == pt)?;
        (map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == clock_rate)
            .then_some(pt)
    });
    let direction = match m.effective_direction(offer) {
        Direction::SendOnly | Direction::SendRecv => Direction::RecvOnly,
        // A recorder never sends, so recvonly/inactive offers get inactive.
        Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
    };
    MediaPlan::Accept {
        label: m.label.clone(),
        payload,
        telephone_event,
        direction,
        srtp,
    }
}

/// The m-line's codecs by name, for a refusal: `NAME/rate` from its rtpmap, the RFC 3551 name
/// of a static payload type without one, else the number.
fn offered_codecs(m: &MediaDescription) -> Vec<String> {
    const STATIC: [(u8, &str); 8] = [
        (3, "GSM/8000"),
        (4, "G723/8000"),
        (5, "DVI4/8000"),
        (7, "LPC/8000"),
        (13, "CN/8000"),
        (15, "G728/8000"),
        (18, "G729/8000"),
        (34, "H263/90000"),
    ];
    m.formats
        .iter()
        .filter_map(|f| {
            let Ok(pt) = f.parse::<u8>() else {
                return Some(f.clone());
            };
            if let Some(map) = m.rtpmap(pt) {
                return (!map.encoding.eq_ignore_ascii_case("telephone-event"))
                    .then(|| format!("{}/{}", map.encoding, map.clock_rate));
            }
            Some(STATIC.iter().find(|(p, _)| *p == pt).map_or_else(
                || format!("payload type {pt}"),
                |(_, name)| (*name).to_owned(),
            ))
        })
        .collect()
}

/// The first `a=crypto` of the m-line the recorder can use (the offerer lists them in its
/// order of preference, RFC 4568 §7.1.1), with a fresh key of the recorder's for the answer
/// under the same tag and suite. Otherwise, why the first one is unusable.
fn choose_crypto(m: &MediaDescription) -> Result<SrtpKeys, String> {
    let mut first_error: Option<CryptoError> = None;
    for value in m
        .attributes
        .iter()
        .filter(|(name, _)| name == "crypto")
        .map(|(_, value)| value.as_deref().unwrap_or_default())
    {
        match Crypto::parse(value) {
            Ok(remote) => {
                let local = MasterKey::generate(remote.key.suite())
                    .map_err(|e| e.to_string())
                    .map(|key| Crypto {
                        tag: remote.tag,
                        key,
                    })?;
                return Ok(SrtpKeys { remote, local });
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.map_or_else(
        || "RTP/SAVP offered without a=crypto (SDES, RFC 4568)".to_owned(),
        |e| e.to_string(),
    ))
}

/// The recorder's side of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerParams<'a> {
    /// Address RTP should be sent to (the pod's media address).
    pub address: IpAddr,
    /// One RTP port per `Accept` in the plan, in order.
    pub ports: &'a [u16],
    /// `o=` session id and version; bump the version on every re-answer.
    pub session_id: u64,
    pub session_version: u64,
}

/// Builds the SDP answer text for `offer` following `plans` (from [`plan`]).
pub fn build_answer(
    offer: &SessionDescription,
    plans: &[MediaPlan],
    params: &AnswerParams<'_>,
) -> Result<String, SdpError> {
    let needed = plans
        .iter()
        .filter(|p| matches!(p, MediaPlan::Accept { .. }))
        .count();
    if needed != params.ports.len() || plans.len() != offer.media.len() {
        return Err(SdpError::PortCount {
            needed,
            given: params.ports.len(),
        });
    }
    let ip_type = if params.address.is_ipv6() {
        "IP6"
    } else {
        "IP4"
    };
    let mut s = String::with_capacity(256 + 160 * plans.len());
    let _ = write!(
        s,
        "v=0\r\no=callvault {} {} IN {ip_type} {addr}\r\ns=callvault\r\nc=IN {ip_type} {addr}\r\nt=0 0\r\n",
        params.session_id,
        params.session_version,
        addr = params.address
    );
    let mut ports = params.ports.iter();
    for (m, p) in offer.media.iter().zip(plans) {
        match p {
            MediaPlan::Reject { .. } => {
                let fmt = m.formats.first().map_or("0", String::as_str);
                let _ = write!(s, "m={} 0 {} {fmt}\r\n", m.media, m.proto);
            }
            MediaPlan::Accept {
                label,
                payload,
                telephone_event,
                direction,
                srtp,
            } => {
                let port = ports.next().copied().unwrap_or_default();
                let _ = write!(s, "m=audio {port} {} {}", m.proto, payload.pt);
                if let Some(te) = telephone_event {
                    let _ = write!(s, " {te}");
                }
                s.push_str("\r\n");
                for pt in std::iter::once(payload.pt).chain(*telephone_event) {
                    if let Some(map) = m.rtpmap(pt) {
                        let _ = write!(s, "a=rtpmap:{pt} {}/{}", map.encoding, map.clock_rate);
                        if let Some(ch) = map.channels {
                            let _ = write!(s, "/{ch}");
                        }
                        s.push_str("\r\n");
                    }
                    if let Some(f) = m.fmtp(pt) {
                        let _ = write!(s, "a=fmtp:{pt} {f}\r\n");
                    }
                }
                if let Some(pt) = m.ptime {
                    let _ = write!(s, "a=ptime:{pt}\r\n");
                }
                if let Some(l) = label {
                    let _ = write!(s, "a=label:{l}\r\n");
                }
                if let Some(keys) = srtp {
                    let _ = write!(s, "a=crypto:{}\r\n", &*keys.local.attribute());
                }
                let _ = write!(s, "a={}\r\n", direction.as_str());
            }
        }
    }
    Ok(s)
}
