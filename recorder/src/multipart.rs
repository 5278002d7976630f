//! `multipart/mixed` bodies (RFC 2046 §5.1) as SIPREC sources send them:
//! an SDP part and an rs-metadata part, in any order, with CRLF or bare LF.

use thiserror::Error;

use crate::sip::{MediaType, SipError};

/// At most this many parts; SIPREC uses two or three.
pub const MAX_PARTS: usize = 16;
/// RFC 2046 limits boundaries to 70 characters.
const MAX_BOUNDARY: usize = 70;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MultipartError {
    #[error("body is {0}, not multipart")]
    NotMultipart(String),
    #[error("multipart Content-Type has no boundary parameter")]
    MissingBoundary,
    #[error("invalid multipart boundary {0:?}")]
    BadBoundary(String),
    #[error("boundary delimiter not found in the body")]
    NoParts,
    #[error("more than {MAX_PARTS} parts")]
    TooManyParts,
    #[error("part {index} has a malformed header line")]
    BadPartHeader { index: usize },
    #[error("part {index}: {source}")]
    BadPartContentType { index: usize, source: SipError },
    #[error("SIPREC body has no application/sdp part")]
    NoSdp,
}

/// One body part with its own headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Header names as received; look up with [`Part::header`].
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Content-Type of the part; RFC 2046 defaults to text/plain.
    pub fn content_type(&self) -> Result<MediaType, SipError> {
        MediaType::parse(self.header("Content-Type").unwrap_or("text/plain"))
    }

    /// Disposition type (`recording-session`, `session`...), lower-cased.
    pub fn disposition(&self) -> Option<String> {
        self.header("Content-Disposition").map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    }
}

/// A parsed multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    pub parts: Vec<Part>,
    /// False when the closing `--boundary--` was missing. Parts are still
    /// returned: losing a recording over a missing trailer helps nobody.
    pub terminated: bool,
}

/// Parses a multipart body given its Content-Type.
pub fn parse(content_type: &MediaType, body: &[u8]) -> Result<Multipart, MultipartError> {
    if content_type.kind != "multipart" {
        return Err(MultipartError::NotMultipart(content_type.essence()));
    }
    let boundary = content_type
        .param("boundary")
        .ok_or(MultipartError::MissingBoundary)?;
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY || boundary.contains(['\r', '\n']) {
        return Err(MultipartError::BadBoundary(
            boundary.chars().take(80).collect(),
        ));
    }
    split(boundary, body)
}

/// Splits `body` on `boundary`.
pub fn split(boundary: &str, body: &[u8]) -> Result<Multipart, MultipartError> {
    let delim = format!("--{boundary}").into_bytes();
    let mut starts = delimiter_positions(body, &delim).into_iter().peekable();
    let mut parts = Vec::new();
    let mut terminated = false;
    while let Some((_, after)) = starts.next() {
        let rest = body.get(after..).unwrap_or_default();
        if rest.starts_with(b"--") {
            terminated = true;
            break;
        }
        // Skip transport padding up to the end of the delimiter line.
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            break;
        };
        let content_start = after + nl + 1;
        let content_end = starts.peek().map_or(body.len(), |(ls, _)| *ls);
        let content = body.get(content_start..content_end).unwrap_or_default();
        if parts.len() >= MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        parts.push(parse_part(content, parts.len())?);
    }
    if parts.is_empty() && !terminated {
        return Err(MultipartError::NoParts);
    }
    Ok(Multipart { parts, terminated })
}

/// Positions of delimiter lines: (start of the line break that belongs to
/// the delimiter, offset just after the delimiter).
fn delimiter_positions(body: &[u8], delim: &[u8]) -> Vec<(usize, usize)> {
    // The delimiter must be followed by `--`, padding or the line end, so a
    // boundary that prefixes a longer line in the content is not a match.
    let ends_delimiter = |at: usize| {
        body.get(at)
            .is_none_or(|b| matches!(b, b'-' | b' ' | b'\t' | b'\r' | b'\n'))
    };
    let mut out = Vec::new();
    if body.starts_with(delim) && ends_delimiter(delim.len()) {
        out.push((0, delim.len()));
    }
    let mut i = 0;
    while let Some(off) = body
        .get(i..)
        .and_then(|b| b.iter().position(|c| *c == b'\n'))
    {
        let nl = i + off;
        let after_nl = nl + 1;
        if body.get(after_nl..).is_some_and(|r| r.starts_with(delim))
            && ends_delimiter(after_nl + delim.len())
        {
            let line_start = if nl > 0 && body.get(nl - 1) == Some(&b'\r') {
                nl - 1
            } else {
                nl
            };
            out.push((line_start, after_nl + delim.len()));
        }
        i = after_nl;
    }
    out
}

fn parse_part(content: &[u8], index: usize) -> Result<Part, MultipartError> {
    // A part starting with an empty line has no headers.
    let (head, body) = if content.starts_with(b"\r\n") {
        (&b""[..], content.get(2..).unwrap_or_default())
    } else if content.starts_with(b"\n") {
        (&b""[..], content.get(1..).unwrap_or_default())
    } else {
        match crate::sip::find_header_end(content) {
            Some((h, b)) => (
                content.get(..h).unwrap_or_default(),
                content.get(b..).unwrap_or_default(),
            ),
            // Headers but no body.
            None => (content, &b""[..]),
        }
    };
    let text = std::str::from_utf8(head).map_err(|_| MultipartError::BadPartHeader { index })?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let (_, v) = headers
                .last_mut()
                .ok_or(MultipartError::BadPartHeader { index })?;
            v.push(' ');
            v.push_str(line.trim());
            continue;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or(MultipartError::BadPartHeader { index })?;
        let n = n.trim();
        if n.is_empty() || n.contains(char::is_whitespace) {
            return Err(MultipartError::BadPartHeader { index });
        }
        // Parts may use compact SIP header names (`c:` for Content-Type).
        headers.push((
            crate::sip::expand_compact_name(n).to_owned(),
            v.trim().to_owned(),
        ));
    }
    Ok(Part {
        headers,
        body: body.to_vec(),
    })
}

/// The parts a SIPREC INVITE carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiprecBody {
    pub sdp: Vec<u8>,
    /// The rs-metadata XML, if any (absent in some re-INVITEs and from
    /// sources that send SDP only).
    pub metadata: Option<Vec<u8>>,
}

/// Whether a media type is RFC 7866 recording metadata, in either spelling.
pub fn is_rs_metadata(ct: &MediaType) -> bool {
    ct.is("application/rs-metadata") || ct.is("application/rs-metadata+xml")
}

/// Extracts SDP and metadata from a SIPREC INVITE body, multipart or a
/// bare SDP. Parts are found by Content-Type, in any order; a part with
/// disposition `recording-session` and an XML-ish type counts as metadata.
pub fn siprec_body(content_type: &MediaType, body: &[u8]) -> Result<SiprecBody, MultipartError> {
    if content_type.is("application/sdp") {
        return Ok(SiprecBody {
            sdp: body.to_vec(),
            metadata: None,
        });
    }
    let mp = parse(content_type, body)?;
    let mut sdp = None;
    let mut metadata = None;
    for (index, part) in mp.parts.iter().enumerate() {
        let ct = part
            .content_type()
            .map_err(|source| MultipartError::BadPartContentType { index, source })?;
        if ct.is("application/sdp") && sdp.is_none() {
            sdp = Some(part.body.clone());
        } else if metadata.is_none()
            && (is_rs_metadata(&ct)
                || (part.disposition().as_deref() == Some("recording-session")
                    && ct.subtype.contains("xml")))
        {
            metadata = Some(part.body.clone());
        }
    }
    Ok(SiprecBody {
        sdp: sdp.ok_or(MultipartError::NoSdp)?,
        metadata,
    })
}
