use thiserror::Error;

/// Why a SIP message was rejected. Values quoted from the wire are cut to a
/// short preview so a hostile message cannot blow up logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SipError {
    #[error("empty message")]
    Empty,
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("headers are not terminated by an empty line")]
    UnterminatedHeaders,
    #[error("header section is not valid UTF-8")]
    NotUtf8,
    #[error("invalid start line {0:?}")]
    BadStartLine(String),
    #[error("unsupported SIP version {0:?}")]
    BadVersion(String),
    #[error("invalid status code {0:?}")]
    BadStatus(String),
    #[error("invalid method {0:?}")]
    BadMethod(String),
    #[error("header line without a name and colon: {0:?}")]
    BadHeaderLine(String),
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("header line of {len} bytes exceeds the {limit}-byte limit")]
    HeaderTooLong { len: usize, limit: usize },
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    #[error("invalid {header} header {value:?}")]
    InvalidHeader { header: &'static str, value: String },
    #[error("Content-Length says {declared} bytes but only {actual} arrived")]
    TruncatedBody { declared: usize, actual: usize },
}

/// Shortens text quoted in an error to at most 80 characters.
pub(crate) fn preview(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
