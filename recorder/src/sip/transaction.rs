//! Server transactions (RFC 3261 §17.2 with the RFC 6026 "Accepted" state)
//! and the UAS retransmission of 2xx answers until ACK (§13.3.1.4).
//!
//! Timers run on tokio's clock, so tests drive them with
//! `tokio::time::pause` instead of waiting.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::transport::ReplyPath;
use super::{DialogId, Method, SipError, SipMessage, TransactionKey};

/// RFC 3261 timer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate: first retransmission interval.
    pub t1: Duration,
    /// Cap on the retransmission interval.
    pub t2: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
        }
    }
}

impl Timers {
    /// How long a final response waits for its ACK, and how long a
    /// completed transaction absorbs retransmissions (Timers H, J, L).
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxnError {
    #[error("transaction already has a final response (cancelled or answered)")]
    Completed,
    #[error("cannot build response: {0}")]
    Build(#[from] SipError),
}

/// What the transaction layer made of one incoming request.
#[derive(Debug)]
pub enum Received {
    /// A new request the transaction user must answer through the handle.
    /// INVITEs have already been sent 100 Trying.
    New(ServerTxn),
    /// A retransmission, answered from the transaction's last response.
    Absorbed,
    /// An ACK to a 2xx: the dialog is confirmed. `None` when it names no dialog.
    Ack(Option<DialogId>),
    /// A CANCEL ended a pending INVITE: 200 went to the CANCEL and 487 to
    /// the INVITE. The user must abandon whatever it was preparing for it.
    Cancelled { invite: TransactionKey },
}

/// Something that happened later, on a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnEvent {
    /// A 2xx to an INVITE got no ACK within 64*T1: the source never
    /// confirmed the session, so it must be torn down.
    AckTimeout { dialog: DialogId },
}

/// The server transaction table.
#[derive(Debug, Clone)]
pub struct Transactions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    timers: Timers,
    entries: Mutex<HashMap<TransactionKey, Entry>>,
    /// 2xx answers awaiting their ACK, keyed by dialog and CSeq number.
    awaiting_ack: Mutex<HashMap<(DialogId, u32), AbortHandle>>,
    events: mpsc::UnboundedSender<TxnEvent>,
}

#[derive(Debug)]
struct Entry {
    request: SipMessage,
    reply: ReplyPath,
    last: Option<SipMessage>,
    final_status: Option<u16>,
    /// Retransmission of a non-2xx final to an INVITE (Timer G).
    retransmit: Option<AbortHandle>,
}

/// Handle to answer one server transaction.
#[derive(Debug, Clone)]
pub struct ServerTxn {
    key: TransactionKey,
    request: SipMessage,
    reply: ReplyPath,
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take SIP handling down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh To tag: 64 random bits plus a process-wide counter so two tags
/// never collide even if the randomness repeats.
pub fn new_tag() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("cv{:016x}{:x}", h.finish(), COUNTER.load(Ordering::Relaxed))
}

impl Transactions {
    pub fn new(timers: Timers, events: mpsc::UnboundedSender<TxnEvent>) -> Self {
        Self {
            inner: Arc::new(Inner {
                timers,
                entries: Mutex::new(HashMap::new()),
                awaiting_ack: Mutex::new(HashMap::new()),
                events,
            }),
        }
    }

    pub fn timers(&self) -> Timers {
        self.inner.timers
    }

    /// Number of live transactions (for metrics and tests).
    pub fn len(&self) -> usize {
        lock(&self.inner.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Matches a validated request against the table.
    pub fn on_request(&self, req: SipMessage, reply: ReplyPath) -> Result<Received, SipError> {
        let key = TransactionKey::of(&req)?;
        match req.method() {
            Some(Method::Ack) => return self.on_ack(&req, &key),
            Some(Method::Cancel) => return self.on_cancel(req, key, reply),
            _ => {}
        }
        let mut entries = lock(&self.inner.entries);
        if let Some(e) = entries.get(&key) {
            if let Some(last) = &e.last {
                // Answer on the path of the retransmission: a NAT binding may have moved.
                reply.send(last);
            }
            return Ok(Received::Absorbed);
        }
        let mut last = None;
        if req.method() == Some(&Method::Invite) {
            // Stops the source retransmitting while the session is set up.
            let trying = req.response(100, "Trying", "")?;
            reply.send(&trying);
            last = Some(trying);
        }
        entries.insert(
            key.clone(),
            Entry {
                request: req.clone(),
                reply: reply.clone(),
                last,
                final_status: None,
                retransmit: None,
            },
        );
        Ok(Received::New(ServerTxn {
            key,
            request: req,
            reply,
            inner: self.inner.clone(),
        }))
    }

    fn on_ack(&self, ack: &SipMessage, key: &TransactionKey) -> Result<Received, SipError> {
        {
            let mut entries = lock(&self.inner.entries);
            if let Some(e) = entries.get_mut(key)
                && e.final_status.is_some_and(|s| s >= 300)
            {
                // ACK to our error answer: part of the INVITE transaction.
                if let Some(h) = e.retransmit.take() {
                    h.abort();
                }
                return Ok(Received::Absorbed);
            }
        }
        let dialog = DialogId::for_incoming(ack)?;
        if let Some(d) = &dialog {
            let seq = ack.cseq()?.seq;
            if let Some(h) = lock(&self.inner.awaiting_ack).remove(&(d.clone(), seq)) {
                h.abort();
            }
        }
        Ok(Received::Ack(dialog))
    }

    fn on_cancel(
        &self,
        cancel: SipMessage,
        key: TransactionKey,
        reply: ReplyPath,
    ) -> Result<Received, SipError> {
        let mut entries = lock(&self.inner.entries);
        if let Some(e) = entries.get(&key) {
            if let Some(last) = &e.last {
                reply.send(last);
            }
            return Ok(Received::Absorbed);
        }
        let invite_key = key.cancelled_invite();
        let mut outcome = Received::Absorbed;
        let response = match entries.get_mut(&invite_key) {
            None => cancel.response(481, "Call/Transaction Does Not Exist", &new_tag())?,
            Some(invite) if invite.final_status.is_some() => {
                // Too late: the answer stands (RFC 3261 §9.2), the CANCEL is still acknowledged.
                cancel.response(200, "OK", &new_tag())?
            }
            Some(invite) => {
                let tag = new_tag();
                let terminated = invite.request.response(487, "Request Terminated", &tag)?;
                let ok = cancel.response(200, "OK", &tag)?;
                // The CANCEL's 200 first, as sources script it (RFC 3261 §9.2 order).
                reply.send(&ok);
                self.inner.finalise(&invite_key, invite, terminated);
                outcome = Received::Cancelled {
                    invite: invite_key.clone(),
                };
                ok
            }
        };
        if !matches!(outcome, Received::Cancelled { .. }) {
            reply.send(&response);
        }
        entries.insert(
            key.clone(),
            Entry {
                request: cancel,
                reply,
                last: Some(response),
                final_status: Some(200),
                retransmit: None,
            },
        );
        drop(entries);
        self.inner.clone().expire_later(key);
        if let Received::Cancelled { invite } = &outcome {
            self.inner.clone().expire_later(invite.clone());
        }
        Ok(outcome)
    }
}

impl Inner {
    /// Sends a final response within an entry and starts what it needs:
    /// for INVITEs, retransmission over UDP until ACK.
    fn finalise(self: &Arc<Self>, key: &TransactionKey, e: &mut Entry, resp: SipMessage) {
        let status = resp.status().unwrap_or(500);
        e.reply.send(&resp);
        e.final_status = Some(status);
        e.last = Some(resp.clone());
        if key.method != Method::Invite {
            return;
        }
        if status >= 300 {
            e.retransmit = Some(self.clone().await_ack(resp, e.reply.clone(), None));
        } else if let Some(dialog) = dialog_of_response(&resp) {
            let seq = resp.cseq().map(|c| c.seq).unwrap_or_default();
            let handle = self
                .clone()
                .await_ack(resp, e.reply.clone(), Some(dialog.clone()));
            if let Some(old) = lock(&self.awaiting_ack).insert((dialog, seq), handle) {
                old.abort();
            }
        }
    }

    /// Retransmits `resp` over UDP at T1, 2*T1... capped at T2, until
    /// aborted by the ACK or 64*T1 pass; over TCP only waits.
    fn await_ack(
        self: Arc<Self>,
        resp: SipMessage,
        reply: ReplyPath,
        dialog: Option<DialogId>,
    ) -> AbortHandle {
        let timers = self.timers;
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + timers.timeout();
            let mut interval = timers.t1;
            let mut next = Instant::now() + interval;
            while next < deadline && !reply.transport().reliable() {
                tokio::time::sleep_until(next).await;
                reply.send(&resp);
                interval = (interval * 2).min(timers.t2);
                next += interval;
            }
            tokio::time::sleep_until(deadline).await;
            if let Some(dialog) = dialog {
                let seq = resp.cseq().map(|c| c.seq).unwrap_or_default();
                lock(&self.awaiting_ack).remove(&(dialog.clone(), seq));
                tracing::warn!(call_id = %dialog.call_id, "no ACK for 2xx within 64*T1");
                let _ = self.events.send(TxnEvent::AckTimeout { dialog });
            }
        });
        task.abort_handle()
    }

    /// Keeps a completed transaction for 64*T1 to absorb retransmissions,
    /// then forgets it.
    fn expire_later(self: Arc<Self>, key: TransactionKey) {
        let after = self.timers.timeout();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            lock(&self.entries).remove(&key);
        });
    }
}

/// The dialog a 2xx creates, as its ACK will name it.
fn dialog_of_response(resp: &SipMessage) -> Option<DialogId> {
    Some(DialogId {
        call_id: resp.call_id().ok()?.to_owned(),
        local_tag: resp.to().ok()?.tag()?.to_owned(),
        remote_tag: resp.from().ok()?.tag().unwrap_or_default().to_owned(),
    })
}

impl ServerTxn {
    pub fn key(&self) -> &TransactionKey {
        &self.key
    }

    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    pub fn reply_path(&self) -> &ReplyPath {
        &self.reply
    }

    /// Sends a response. Provisional ones may repeat; after a final one
    /// (or after a CANCEL answered 487) this fails with [`TxnError::Completed`].
    pub fn respond(&self, resp: SipMessage) -> Result<(), TxnError> {
        let mut entries = lock(&self.inner.entries);
        let Some(e) = entries.get_mut(&self.key) else {
            return Err(TxnError::Completed);
        };
        if e.final_status.is_some() {
            return Err(TxnError::Completed);
        }
        if resp.status().is_some_and(|s| s < 200) {
            e.reply.send(&resp);
            e.last = Some(resp);
            return Ok(());
        }
        self.inner.finalise(&self.key, e, resp);
        drop(entries);
        if self.reply.transport().reliable() && self.key.method != Method::Invite {
            // Nothing retransmits over TCP (Timer J = 0).
            lock(&self.inner.entries).remove(&self.key);
        } else {
            self.inner.clone().expire_later(self.key.clone());
        }
        Ok(())
    }

    /// Builds a response to the request with `to_tag` and sends it.
    pub fn reply(&self, status: u16, reason: &str, to_tag: &str) -> Result<(), TxnError> {
        let resp = self.request.response(status, reason, to_tag)?;
        self.respond(resp)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sip::parse_datagram;
    use crate::sip::transport::Transport;

    const T1: Duration = Duration::from_millis(500);

    fn msg(method: &str, branch: &str, to_tag: Option<&str>, cseq: u32) -> SipMessage {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let raw = format!(
            "{method} sip:rec@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             From: <sip:src@192.0.2.1>;tag=src1\r\nTo: <sip:rec@192.0.2.10>{to_tag}\r\nCall-ID: call-1\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        );
        parse_datagram(raw.as_bytes()).unwrap()
    }

    struct Peer {
        rx: mpsc::UnboundedReceiver<SipMessage>,
        path: ReplyPath,
    }

    fn peer(transport: Transport) -> Peer {
        let (tx, rx) = mpsc::unbounded_channel();
        Peer {
            rx,
            path: ReplyPath::Memory { tx, transport },
        }
    }

    impl Peer {
        async fn next(&mut self) -> Option<SipMessage> {
            tokio::time::timeout(Duration::from_secs(3600), self.rx.recv())
                .await
                .ok()
                .flatten()
        }
    }

    fn layer() -> (Transactions, mpsc::UnboundedReceiver<TxnEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Transactions::new(Timers::default(), tx), rx)
    }

    fn new_txn(r: Received) -> ServerTxn {
        match r {
            Received::New(t) => t,
            other => panic!("expected a new transaction, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn invite_2xx_is_retransmitted_with_doubling_until_ack() {
        let (txns, mut events) = layer();
        let mut p = peer(Transport::Udp);
        let invite = msg("INVITE", "z9hG4bKinv", None, 1);
        let txn = new_txn(txns.on_request(invite.clone(), p.path.clone()).unwrap());
        assert_eq!(p.next().await.unwrap().status(), Some(100));

        // A retransmitted INVITE before the answer gets 100 again.
        assert!(matches!(
            txns.on_request(invite.clone(), p.path.clone()).unwrap(),
            Received::Absorbed
        ));
        assert_eq!(p.next().await.unwrap().status(), Some(100));

        let start = Instant::now();
        txn.reply(200, "OK", "rec1").unwrap();
        assert_eq!(p.next().await.unwrap().status(), Some(200));
        let mut gaps = Vec::new();
        let mut last = start;
        for _ in 0..5 {
            assert_eq!(p.next().await.unwrap().status(), Some(200));
            gaps.push(Instant::now() - last);
            last = Instant::now();
        }
        assert_eq!(gaps, [T1, 2 * T1, 4 * T1, 8 * T1, 8 * T1]);

        // A retransmitted INVITE after the answer is answered 200 again (RFC 6026).
        txns.on_request(invite, p.path.clone()).unwrap();
        assert_eq!(p.next().await.unwrap().status(), Some(200));

        let ack = msg("ACK", "z9hG4bKack", Some("rec1"), 1);
        match txns.on_request(ack, p.path.clone()).unwrap() {
            Received::Ack(Some(d)) => assert_eq!(d.local_tag, "rec1"),
            other => panic!("expected ACK for the dialog, got {other:?}"),
        }
        assert!(p.next().await.is_none(), "2xx retransmitted after ACK");
        assert!(events.try_recv().is_err(), "ACK timeout despite ACK");
        assert!(txns.is_empty(), "transactions not expired after 64*T1");
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_2xx_gives_up_after_64_t1_and_reports_it() {
        let (txns, mut events) = layer();
        let mut p = peer(Transport::Udp);
        let start = Instant::now();
        let txn = new_txn(
            txns.on_request(msg("INVITE", "z9hG4bKa", None, 1), p.path.clone())
                .unwrap(),
        );
        txn.reply(200, "OK", "rec2").unwrap();
        let ev = events.recv().await.unwrap();
        assert_eq!(Instant::now() - start, 64 * T1);
        let mut sent = 0;
        while p.rx.try_recv().is_ok() {
            sent += 1;
        }
        // 100, the 200, then retransmissions at 0.5,1.5,3.5,7.5,11.5,...,31.5 s.
        assert_eq!(sent, 2 + 10);
        assert!(
            p.next().await.is_none(),
            "2xx retransmitted after giving up"
        );
        assert!(matches!(ev, TxnEvent::AckTimeout { dialog } if dialog.local_tag == "rec2"));
    }

    #[tokio::test(start_paused = true)]
    async fn tcp_2xx_is_not_retransmitted() {
        let (txns, _events) = layer();
        let mut p = peer(Transport::Tcp);
        let txn = new_txn(
            txns.on_request(msg("INVITE", "z9hG4bKt", None, 1), p.path.clone())
                .unwrap(),
        );
        txn.reply(200, "OK", "rec3").unwrap();
        assert_eq!(p.next().await.unwrap().status(), Some(100));
        assert_eq!(p.next().await.unwrap().status(), Some(200));
        assert!(p.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_before_answer_gives_200_and_487_and_blocks_the_late_answer() {
        let (txns, _events) = layer();
        let mut p = peer(Transport::Udp);
        let txn = new_txn(
            txns.on_request(msg("INVITE", "z9hG4bKc", None, 1), p.path.clone())
                .unwrap(),
        );
        assert_eq!(p.next().await.unwrap().status(), Some(100));
        let cancel = msg("CANCEL", "z9hG4bKc", None, 1);
        assert!(matches!(
            txns.on_request(cancel.clone(), p.path.clone()).unwrap(),
            Received::Cancelled { .. }
        ));
        let a = p.next().await.unwrap();
        let b = p.next().await.unwrap();
        let mut got: Vec<(u16, String)> = [a, b]
            .iter()
            .map(|m| (m.status().unwrap(), m.cseq().unwrap().method.to_string()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [(200, "CANCEL".to_owned()), (487, "INVITE".to_owned())]
        );
        assert_eq!(txn.reply(200, "OK", "late"), Err(TxnError::Completed));

        // The 487 is retransmitted until its ACK (same branch as the INVITE).
        assert_eq!(p.next().await.unwrap().status(), Some(487));
        txns.on_request(msg("ACK", "z9hG4bKc", Some("x"), 1), p.path.clone())
            .unwrap();
        assert!(p.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_final_is_replayed_and_unknown_cancel_gets_481() {
        let (txns, _events) = layer();
        let mut p = peer(Transport::Udp);
        let opts = msg("OPTIONS", "z9hG4bKo", None, 7);
        let txn = new_txn(txns.on_request(opts.clone(), p.path.clone()).unwrap());
        txn.reply(200, "OK", "t").unwrap();
        assert_eq!(p.next().await.unwrap().status(), Some(200));
        assert!(matches!(
            txns.on_request(opts, p.path.clone()).unwrap(),
            Received::Absorbed
        ));
        assert_eq!(p.next().await.unwrap().status(), Some(200));

        txns.on_request(msg("CANCEL", "z9hG4bKnone", None, 1), p.path.clone())
            .unwrap();
        assert_eq!(p.next().await.unwrap().status(), Some(481));
        assert!(
            p.next().await.is_none(),
            "non-INVITE answers are never retransmitted"
        );
    }
}
