//! Header storage and the typed header values a recorder needs.

use super::error::{SipError, preview};
use super::message::Method;

/// One header field as received, with compact names expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Header fields in wire order. Lookups are case-insensitive and accept
/// compact forms (`v`, `f`, `i`...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

/// Compact header forms (RFC 3261 §7.3.3 and later extensions).
const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Expands a one-letter compact header name to its full form; other names
/// are returned unchanged.
pub fn expand_compact_name(name: &str) -> &str {
    COMPACT
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
        .map_or(name, |(_, long)| long)
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header, expanding a compact name.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: expand_compact_name(name).to_owned(),
            value: value.into(),
        });
    }

    /// Replaces every header of this name by one value, at the position of
    /// the first one (or at the end).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let full = expand_compact_name(name);
        let value = value.into();
        match self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(full))
        {
            Some(pos) => {
                self.remove(full);
                self.0.insert(
                    pos.min(self.0.len()),
                    Header {
                        name: full.to_owned(),
                        value,
                    },
                );
            }
            None => self.push(full, value),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let full = expand_compact_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(full));
    }

    /// First value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every header line of this name, in order (not split on commas).
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let full = expand_compact_name(name).to_owned();
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&full))
            .map(|h| h.value.as_str())
    }

    /// Every value of a list header, split on top-level commas across all
    /// lines (`Via: a, b` and two `Via:` lines give the same list).
    pub fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.get_all(name).flat_map(split_list).collect()
    }

    /// Whether an option-tag header (Require, Supported...) lists `tag`.
    pub fn has_option_tag(&self, name: &str, tag: &str) -> bool {
        self.values(name)
            .iter()
            .any(|v| v.eq_ignore_ascii_case(tag))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits a header value on commas that are not inside quotes or `<...>`.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            ',' if !in_quote && !in_angle => {
                push_trimmed(&mut out, value.get(start..i));
                start = i + 1;
            }
            _ => {}
        }
    }
    push_trimmed(&mut out, value.get(start..));
    out
}

fn push_trimmed<'a>(out: &mut Vec<&'a str>, part: Option<&'a str>) {
    if let Some(p) = part.map(str::trim).filter(|p| !p.is_empty()) {
        out.push(p);
    }
}

/// A `;name=value` or `;flag` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Parses `;a=b;c;d="e f"` (the leading `;` optional), unquoting values.
fn parse_params(s: &str) -> Vec<Param> {
    split_outside_quotes(s, ';')
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => Param {
                name: n.trim().to_owned(),
                value: Some(unquote(v.trim())),
            },
            None => Param {
                name: p.to_owned(),
                value: None,
            },
        })
        .collect()
}

fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quote, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && in_quote {
            escaped = true;
        } else if c == '"' {
            in_quote = !in_quote;
        } else if c == sep && !in_quote {
            out.extend(s.get(start..i));
            start = i + c.len_utf8();
        }
    }
    out.extend(s.get(start..));
    out
}

/// Removes surrounding double quotes and backslash escapes.
fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => s.to_owned(),
    }
}

fn invalid(header: &'static str, value: &str) -> SipError {
    SipError::InvalidHeader {
        header,
        value: preview(value),
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...;received=...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

impl Via {
    pub fn parse(value: &str) -> Result<Self, SipError> {
        let value = value.trim();
        let (proto, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or_else(|| invalid("Via", value))?;
        let mut parts = proto.split('/').map(str::trim);
        let (name, version, transport) = (parts.next(), parts.next(), parts.next());
        if !name.is_some_and(|n| n.eq_ignore_ascii_case("SIP"))
            || version != Some("2.0")
            || parts.next().is_some()
        {
            return Err(invalid("Via", value));
        }
        let transport = transport
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("Via", value))?
            .to_ascii_uppercase();
        let rest = rest.trim();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by.trim()).ok_or_else(|| invalid("Via", value))?;
        Ok(Self {
            transport,
            host,
            port,
            params: parse_params(params),
        })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received").and_then(|p| p.value.as_deref())
    }

    /// `Some(None)` for a bare `;rport` request, `Some(Some(port))` once filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport")
            .map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// `host[:port]` as sent, lower-cased, for transaction matching.
    pub fn sent_by(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by())?;
        write_params(f, &self.params)
    }
}

fn write_params(f: &mut std::fmt::Formatter<'_>, params: &[Param]) -> std::fmt::Result {
    for p in params {
        match &p.value {
            Some(v) if v.is_empty() || v.contains([' ', ';', ',', '"']) => write!(
                f,
                ";{}=\"{}\"",
                p.name,
                v.replace('\\', "\\\\").replace('"', "\\\"")
            )?,
            Some(v) => write!(f, ";{}={}", p.name, v)?,
            None => write!(f, ";{}", p.name)?,
        }
    }
    Ok(())
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match s.split_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_owned(), Some(p.trim().parse().ok()?))),
        Some(_) => None,
        None => Some((s.to_owned(), None)),
    }
}

/// From, To or Contact: `"Name" <uri>;tag=x` or `uri;tag=x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn parse(header: &'static str, value: &str) -> Result<Self, SipError> {
        let v = value.trim();
        let bad = || invalid(header, value);
        if let Some(lt) = find_unquoted(v, '<') {
            let display = v.get(..lt).map(str::trim).filter(|d| !d.is_empty());
            let after = v.get(lt + 1..).ok_or_else(bad)?;
            let (uri, params) = after.split_once('>').ok_or_else(bad)?;
            if uri.trim().is_empty() {
                return Err(bad());
            }
            Ok(Self {
                display: display.map(unquote),
                uri: uri.trim().to_owned(),
                params: parse_params(params),
            })
        } else {
            // Without angle brackets, parameters belong to the header, not the URI.
            let (uri, params) = v.split_once(';').unwrap_or((v, ""));
            if uri.is_empty() || uri.contains(char::is_whitespace) {
                return Err(bad());
            }
            Ok(Self {
                display: None,
                uri: uri.to_owned(),
                params: parse_params(params),
            })
        }
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }
}

impl std::fmt::Display for NameAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let (mut in_quote, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && in_quote {
            escaped = true;
        } else if c == '"' {
            in_quote = !in_quote;
        } else if c == target && !in_quote {
            return Some(i);
        }
    }
    None
}

/// `CSeq: 314159 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<Self, SipError> {
        let mut it = value.split_ascii_whitespace();
        let (seq, method) = (it.next(), it.next());
        match (seq.and_then(|s| s.parse().ok()), method, it.next()) {
            (Some(seq), Some(m), None) => Ok(Self {
                seq,
                method: Method::parse(m).map_err(|_| invalid("CSeq", value))?,
            }),
            _ => Err(invalid("CSeq", value)),
        }
    }
}

/// A Content-Type value: `type/subtype;param=value`, type and subtype
/// lower-cased, parameter values unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub kind: String,
    pub subtype: String,
    pub params: Vec<Param>,
}

impl MediaType {
    pub fn parse(value: &str) -> Result<Self, SipError> {
        let v = value.trim();
        let (essence, params) = match v.find(';') {
            Some(i) => (v.get(..i).unwrap_or(""), v.get(i..).unwrap_or("")),
            None => (v, ""),
        };
        let (kind, subtype) = essence
            .split_once('/')
            .map(|(k, s)| (k.trim(), s.trim()))
            .filter(|(k, s)| is_token(k) && is_token(s))
            .ok_or_else(|| invalid("Content-Type", value))?;
        Ok(Self {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            params: parse_params(params),
        })
    }

    /// `type/subtype` without parameters.
    pub fn essence(&self) -> String {
        format!("{}/{}", self.kind, self.subtype)
    }

    pub fn is(&self, essence: &str) -> bool {
        essence.split_once('/').is_some_and(|(k, s)| {
            self.kind.eq_ignore_ascii_case(k) && self.subtype.eq_ignore_ascii_case(s)
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name).and_then(|p| p.value.as_deref())
    }
}

impl std::fmt::Display for MediaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.subtype)?;
        write_params(f, &self.params)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""Doe, J" <sip:a@b;x=1,2>, <sip:c@d>"#),
            vec![r#""Doe, J" <sip:a@b;x=1,2>"#, "<sip:c@d>"]
        );
    }

    #[test]
    fn via_ipv6_and_params() {
        let v = Via::parse("SIP/2.0/tcp [2001:db8::1]:5061;branch=z9hG4bKx;rport=5062").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "2001:db8::1");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(v.sent_by(), "[2001:db8::1]:5061");
    }

    #[test]
    fn name_addr_without_brackets_keeps_tag_on_header() {
        let n = NameAddr::parse("From", "sip:alice@example.org;tag=abc").unwrap();
        assert_eq!(n.uri, "sip:alice@example.org");
        assert_eq!(n.tag(), Some("abc"));
    }
}
