//! Keys a transaction or dialog layer matches messages on.

use super::error::SipError;
use super::message::{Method, SipMessage};

/// RFC 3261 magic cookie marking a branch as globally unique.
const MAGIC_COOKIE: &str = "z9hG4bK";

/// Server transaction key (RFC 3261 §17.2.3): top Via branch + sent-by +
/// method, where ACK maps to the INVITE transaction it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

impl TransactionKey {
    /// Key for a request or a response (responses carry the same top Via
    /// and CSeq method). Requests from RFC 2543 peers, whose branch lacks
    /// the magic cookie, are keyed on Call-ID, From tag and CSeq instead.
    pub fn of(msg: &SipMessage) -> Result<Self, SipError> {
        let via = msg.top_via()?;
        let cseq = msg.cseq()?;
        let method = match cseq.method {
            Method::Ack => Method::Invite,
            m => m,
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.to_owned(),
            _ => {
                let from = msg.from()?;
                format!(
                    "legacy|{}|{}|{}",
                    msg.call_id()?,
                    from.tag().unwrap_or_default(),
                    cseq.seq
                )
            }
        };
        Ok(Self {
            branch,
            sent_by: via.sent_by(),
            method,
        })
    }

    /// For a CANCEL: the key of the INVITE transaction it cancels.
    pub fn cancelled_invite(&self) -> Self {
        Self {
            method: Method::Invite,
            ..self.clone()
        }
    }
}

/// Dialog identifier (RFC 3261 §12) seen from the recorder as UAS: the
/// local tag is the To tag it generated, the remote tag the From tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// Dialog of an in-dialog request received by the UAS (re-INVITE, BYE).
    /// `Ok(None)` when the request has no To tag, i.e. starts a new dialog.
    pub fn for_incoming(req: &SipMessage) -> Result<Option<Self>, SipError> {
        let to = req.to()?;
        let Some(local) = to.tag() else {
            return Ok(None);
        };
        Ok(Some(Self {
            call_id: req.call_id()?.to_owned(),
            local_tag: local.to_owned(),
            remote_tag: req.from()?.tag().unwrap_or_default().to_owned(),
        }))
    }

    /// Dialog a UAS creates by answering `req` with `local_tag`.
    pub fn created_by(req: &SipMessage, local_tag: &str) -> Result<Self, SipError> {
        Ok(Self {
            call_id: req.call_id()?.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: req.from()?.tag().unwrap_or_default().to_owned(),
        })
    }
}
