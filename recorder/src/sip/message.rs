//! SIP requests and responses: parsing from bytes, serialising, and building
//! responses from a request.

use super::error::{SipError, preview};
use super::header::{CSeq, Headers, MediaType, NameAddr, Via};

/// Size limits applied while parsing. SIPREC INVITEs with two streams and
/// metadata are typically 3–6 KiB; the defaults leave ample room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, headers and body.
    pub max_message: usize,
    /// Number of header lines after unfolding.
    pub max_headers: usize,
    /// One unfolded header line.
    pub max_header_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 256 * 1024,
            max_headers: 200,
            max_header_line: 8 * 1024,
        }
    }
}

/// A SIP method. Methods are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Result<Self, SipError> {
        Ok(match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "REFER" => Self::Refer,
            "MESSAGE" => Self::Message,
            other if is_method_token(other) => Self::Other(other.to_owned()),
            other => return Err(SipError::BadMethod(preview(other))),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_method_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { status: u16, reason: String },
}

/// A parsed SIP message. The body is kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Parses one message from a UDP datagram with the default limits.
pub fn parse_datagram(buf: &[u8]) -> Result<SipMessage, SipError> {
    parse_with_limits(buf, &Limits::default())
}

/// Parses one complete message. Bytes after `Content-Length` are ignored
/// (RFC 3261 §18.3); without `Content-Length` the body runs to the end.
pub fn parse_with_limits(buf: &[u8], limits: &Limits) -> Result<SipMessage, SipError> {
    if buf.len() > limits.max_message {
        return Err(SipError::TooLarge {
            size: buf.len(),
            limit: limits.max_message,
        });
    }
    // RFC 3261 §7.5: tolerate empty lines before the start line.
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .ok_or(SipError::Empty)?;
    let buf = buf.get(start..).unwrap_or_default();
    let (head_len, body_start) = find_header_end(buf).ok_or(SipError::UnterminatedHeaders)?;
    let head = buf.get(..head_len).unwrap_or_default();
    let (start, headers) = parse_head(head, limits)?;
    let rest = buf.get(body_start..).unwrap_or_default();
    let body = match content_length(&headers)? {
        Some(declared) if declared > rest.len() => {
            return Err(SipError::TruncatedBody {
                declared,
                actual: rest.len(),
            });
        }
        Some(declared) => rest.get(..declared).unwrap_or_default(),
        None => rest,
    };
    Ok(SipMessage {
        start,
        headers,
        body: body.to_vec(),
    })
}

/// Finds the empty line ending the headers: returns (header bytes, body
/// offset). Accepts CRLF and bare LF line endings.
pub(crate) fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = buf.get(i..)?.iter().position(|b| *b == b'\n') {
        let nl = i + off;
        let next = buf.get(nl + 1..)?;
        if next.starts_with(b"\r\n") {
            return Some((nl + 1, nl + 3));
        }
        if next.starts_with(b"\n") {
            return Some((nl + 1, nl + 2));
        }
        i = nl + 1;
    }
    None
}

pub(crate) fn content_length(headers: &Headers) -> Result<Option<usize>, SipError> {
    headers
        .get("Content-Length")
        .map(|v| {
            let v = v.trim();
            // Cap digits so the parse cannot overflow into a wrapping value.
            if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SipError::InvalidHeader {
                    header: "Content-Length",
                    value: preview(v),
                });
            }
            v.parse::<usize>().map_err(|_| SipError::InvalidHeader {
                header: "Content-Length",
                value: preview(v),
            })
        })
        .transpose()
}

pub(crate) fn parse_head(head: &[u8], limits: &Limits) -> Result<(StartLine, Headers), SipError> {
    let text = std::str::from_utf8(head).map_err(|_| SipError::NotUtf8)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().ok_or(SipError::Empty)?;
    let start = parse_start_line(first)?;

    // Unfold continuation lines (leading SP/HT) into the previous header.
    let mut unfolded: Vec<String> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let prev = unfolded
                .last_mut()
                .ok_or_else(|| SipError::BadHeaderLine(preview(line)))?;
            prev.push(' ');
            prev.push_str(line.trim());
        } else {
            if unfolded.len() >= limits.max_headers {
                return Err(SipError::TooManyHeaders(limits.max_headers));
            }
            unfolded.push(line.to_owned());
        }
        if let Some(last) = unfolded.last()
            && last.len() > limits.max_header_line
        {
            return Err(SipError::HeaderTooLong {
                len: last.len(),
                limit: limits.max_header_line,
            });
        }
    }

    let mut headers = Headers::new();
    for line in &unfolded {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| SipError::BadHeaderLine(preview(line)))?;
        let name = name.trim();
        if name.is_empty() || !is_method_token(name) {
            return Err(SipError::BadHeaderLine(preview(line)));
        }
        headers.push(name, value.trim());
    }
    Ok((start, headers))
}

fn parse_start_line(line: &str) -> Result<StartLine, SipError> {
    let bad = || SipError::BadStartLine(preview(line));
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').ok_or_else(bad)?;
        check_version(version)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| SipError::BadStatus(preview(code)))?;
        return Ok(StartLine::Response {
            status,
            reason: reason.trim().to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    match (method, uri, version, parts.next()) {
        (Some(m), Some(uri), Some(v), None) if !uri.is_empty() => {
            let v = v.strip_prefix("SIP/").ok_or_else(bad)?;
            check_version(v)?;
            Ok(StartLine::Request {
                method: Method::parse(m)?,
                uri: uri.to_owned(),
            })
        }
        _ => Err(bad()),
    }
}

fn check_version(v: &str) -> Result<(), SipError> {
    if v == "2.0" {
        Ok(())
    } else {
        Err(SipError::BadVersion(preview(v)))
    }
}

impl SipMessage {
    /// A new request with no headers.
    pub fn request(method: Method, uri: impl Into<String>) -> Self {
        Self {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn call_id(&self) -> Result<&str, SipError> {
        self.headers
            .get("Call-ID")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(SipError::MissingHeader("Call-ID"))
    }

    pub fn cseq(&self) -> Result<CSeq, SipError> {
        CSeq::parse(
            self.headers
                .get("CSeq")
                .ok_or(SipError::MissingHeader("CSeq"))?,
        )
    }

    pub fn from(&self) -> Result<NameAddr, SipError> {
        NameAddr::parse(
            "From",
            self.headers
                .get("From")
                .ok_or(SipError::MissingHeader("From"))?,
        )
    }

    pub fn to(&self) -> Result<NameAddr, SipError> {
        NameAddr::parse(
            "To",
            self.headers
                .get("To")
                .ok_or(SipError::MissingHeader("To"))?,
        )
    }

    /// Every Via, topmost first.
    pub fn vias(&self) -> Result<Vec<Via>, SipError> {
        self.headers
            .values("Via")
            .into_iter()
            .map(Via::parse)
            .collect()
    }

    pub fn top_via(&self) -> Result<Via, SipError> {
        self.headers
            .values("Via")
            .first()
            .ok_or(SipError::MissingHeader("Via"))
            .and_then(|v| Via::parse(v))
    }

    /// Contact addresses; `Contact: *` yields an empty list.
    pub fn contacts(&self) -> Result<Vec<NameAddr>, SipError> {
        self.headers
            .values("Contact")
            .into_iter()
            .filter(|v| *v != "*")
            .map(|v| NameAddr::parse("Contact", v))
            .collect()
    }

    pub fn content_type(&self) -> Result<Option<MediaType>, SipError> {
        self.headers
            .get("Content-Type")
            .map(MediaType::parse)
            .transpose()
    }

    /// Whether `Require` lists an option tag (such as `siprec`).
    pub fn requires(&self, tag: &str) -> bool {
        self.headers.has_option_tag("Require", tag)
    }

    pub fn supports(&self, tag: &str) -> bool {
        self.headers.has_option_tag("Supported", tag)
    }

    /// Checks the headers every request needs (RFC 3261 §8.1.1) so a
    /// transaction layer can answer 400 naming the first problem.
    pub fn validate_request(&self) -> Result<(), SipError> {
        self.call_id()?;
        let cseq = self.cseq()?;
        self.from()?;
        self.to()?;
        self.top_via()?;
        if let Some(m) = self.method()
            && *m != cseq.method
        {
            return Err(SipError::InvalidHeader {
                header: "CSeq",
                value: preview(self.headers.get("CSeq").unwrap_or_default()),
            });
        }
        Ok(())
    }

    /// Serialises to wire form with CRLF line ends and a Content-Length that
    /// matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.push_str(&format!("{method} {uri} SIP/2.0\r\n"));
            }
            StartLine::Response { status, reason } => {
                out.push_str(&format!("SIP/2.0 {status} {reason}\r\n"));
            }
        }
        for h in self.headers.iter() {
            if h.name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            // Strip line breaks so a value cannot inject extra headers.
            let value: String = h
                .value
                .chars()
                .filter(|c| *c != '\r' && *c != '\n')
                .collect();
            out.push_str(&format!("{}: {}\r\n", h.name, value));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Builds a response to this request (RFC 3261 §8.2.6): copies Via,
    /// From, Call-ID and CSeq, copies To adding `to_tag` when it has none
    /// (not on 100 Trying), and Record-Route for dialog-creating answers.
    pub fn response(
        &self,
        status: u16,
        reason: &str,
        to_tag: &str,
    ) -> Result<SipMessage, SipError> {
        let mut headers = Headers::new();
        for v in self.headers.get_all("Via") {
            headers.push("Via", v);
        }
        if headers.get("Via").is_none() {
            return Err(SipError::MissingHeader("Via"));
        }
        let from = self
            .headers
            .get("From")
            .ok_or(SipError::MissingHeader("From"))?;
        headers.push("From", from);
        let to_raw = self
            .headers
            .get("To")
            .ok_or(SipError::MissingHeader("To"))?;
        let to = NameAddr::parse("To", to_raw)?;
        if to.tag().is_none() && status > 100 && !to_tag.is_empty() {
            headers.push("To", format!("{to_raw};tag={to_tag}"));
        } else {
            headers.push("To", to_raw);
        }
        headers.push("Call-ID", self.call_id()?);
        let cseq = self
            .headers
            .get("CSeq")
            .ok_or(SipError::MissingHeader("CSeq"))?;
        CSeq::parse(cseq)?;
        headers.push("CSeq", cseq);
        if (101..300).contains(&status) {
            for rr in self.headers.get_all("Record-Route") {
                headers.push("Record-Route", rr);
            }
        }
        Ok(SipMessage {
            start: StartLine::Response {
                status,
                reason: reason.to_owned(),
            },
            headers,
            body: Vec::new(),
        })
    }

    /// Sets the body and its Content-Type.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers.set("Content-Type", content_type);
        self.body = body.into();
        self
    }
}
