//! RFC 4028 session timers, as the recorder (always the UAS) takes part in them: what a
//! request's `Session-Expires`, `Min-SE` and `Supported: timer` ask for and what the answer
//! says. Pure functions over the request; the server keeps the timer per dialog.

use std::time::Duration;

use super::{SipError, SipMessage};

/// The smallest session interval RFC 4028 allows (§4: `Min-SE` is never below 90 s).
pub const RFC_MIN_SE: Duration = Duration::from_secs(90);

/// Which side refreshes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// A session timer in force for a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: Duration,
    pub refresher: Refresher,
}

impl SessionTimer {
    /// `Session-Expires` of the 2xx.
    pub fn header(&self) -> String {
        let refresher = match self.refresher {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        };
        format!("{};refresher={refresher}", self.interval.as_secs())
    }

    /// How long after the last refresh the session is ended: slightly before it expires, by
    /// the smaller of 32 s and a third of the interval (RFC 4028 §10), so the BYE leaves
    /// while the source may still hold the session.
    pub fn end_after(&self) -> Duration {
        self.interval - (self.interval / 3).min(Duration::from_secs(32))
    }
}

/// What the recorder does with a request's session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// No session timer: the request has none, or its sender does not support the extension
    /// (the recorder never refreshes a session itself; the in-dialog probe covers those).
    Off,
    /// Answered with this timer; the source refreshes.
    On(SessionTimer),
    /// 422 Session Interval Too Small, with this `Min-SE`.
    TooSmall(Duration),
}

/// The session timer a request (INVITE, re-INVITE or UPDATE) asks for, against the recorder's
/// smallest interval `min_se`. The source refreshes: it says `refresher=uac`, or leaves the
/// choice to the recorder, which picks the source. A source that asks the recorder to
/// refresh (`refresher=uas`) gets no timer: the recorder sends no re-INVITEs of its own.
pub fn negotiate(req: &SipMessage, min_se: Duration) -> Result<Negotiated, SipError> {
    let Some(value) = req.headers.get("Session-Expires") else {
        return Ok(Negotiated::Off);
    };
    let mut parts = value.split(';').map(str::trim);
    let secs: u64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| SipError::InvalidHeader {
            header: "Session-Expires",
            value: super::error::preview(value),
        })?;
    let refresher = parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("refresher"))
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    // The request's Min-SE binds the answer too (§9); below what the recorder accepts
    // nothing is agreed.
    let floor = req
        .headers
        .get("Min-SE")
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(min_se, |s| min_se.max(Duration::from_secs(s)));
    let interval = Duration::from_secs(secs);
    if interval < floor {
        return Ok(Negotiated::TooSmall(floor));
    }
    if !req.supports("timer") && !req.requires("timer") {
        return Ok(Negotiated::Off);
    }
    match refresher.as_deref() {
        Some("uas") => Ok(Negotiated::Off),
        _ => Ok(Negotiated::On(SessionTimer {
            interval,
            refresher: Refresher::Uac,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(headers: &str) -> SipMessage {
        let text = format!(
            "INVITE sip:r@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:r@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
             {headers}Content-Length: 0\r\n\r\n"
        );
        super::super::parse_datagram(text.as_bytes()).expect("request")
    }

    const MIN: Duration = RFC_MIN_SE;

    #[test]
    fn a_source_that_supports_timers_refreshes_the_interval_it_asked_for() {
        let got = negotiate(
            &invite("Supported: timer\r\nSession-Expires: 1800\r\n"),
            MIN,
        );
        let timer = SessionTimer {
            interval: Duration::from_secs(1800),
            refresher: Refresher::Uac,
        };
        assert_eq!(got, Ok(Negotiated::On(timer)));
        assert_eq!(timer.header(), "1800;refresher=uac");
        // 1800 s less 32 s.
        assert_eq!(timer.end_after(), Duration::from_secs(1768));
        let compact = negotiate(&invite("k: timer\r\nx: 600;refresher=uac\r\n"), MIN);
        assert!(matches!(compact, Ok(Negotiated::On(t)) if t.interval.as_secs() == 600));
    }

    #[test]
    fn an_interval_below_the_minimum_is_refused_with_the_minimum() {
        let got = negotiate(&invite("Supported: timer\r\nSession-Expires: 30\r\n"), MIN);
        assert_eq!(got, Ok(Negotiated::TooSmall(MIN)));
        // The request's own Min-SE is a floor too.
        let got = negotiate(
            &invite("Supported: timer\r\nSession-Expires: 100\r\nMin-SE: 120\r\n"),
            MIN,
        );
        assert_eq!(got, Ok(Negotiated::TooSmall(Duration::from_secs(120))));
    }

    #[test]
    fn no_timer_without_support_or_with_the_recorder_as_refresher() {
        assert_eq!(negotiate(&invite(""), MIN), Ok(Negotiated::Off));
        assert_eq!(
            negotiate(&invite("Session-Expires: 1800\r\n"), MIN),
            Ok(Negotiated::Off)
        );
        assert_eq!(
            negotiate(
                &invite("Supported: timer\r\nSession-Expires: 1800;refresher=uas\r\n"),
                MIN
            ),
            Ok(Negotiated::Off)
        );
        assert!(
            negotiate(
                &invite("Supported: timer\r\nSession-Expires: soon\r\n"),
                MIN
            )
            .is_err()
        );
    }

    #[test]
    fn a_short_interval_ends_a_third_early() {
        let t = SessionTimer {
            interval: Duration::from_secs(3),
            refresher: Refresher::Uac,
        };
        assert_eq!(t.end_after(), Duration::from_secs(2));
    }
}
