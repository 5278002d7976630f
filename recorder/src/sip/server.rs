//! The recorder's SIP server: transports + transactions + a dialog table,
//! dispatching session events to a [`SessionHandler`]. It knows SIP, not
//! media: the handler turns an offer into an answer.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::timer::{self, Negotiated, SessionTimer};
use super::tls::TlsIdentity;
use super::transaction::{Received, ServerTxn, Timers, Transactions, TxnEvent, new_tag};
use super::transport::{
    Inbound, ListenOn, Listeners, ReplyPath, TcpTimeouts, Transport, TransportError,
};
use super::{DialogId, Limits, Method, SipMessage};
use crate::multipart::{is_rs_metadata, siprec_body};

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";
const ACCEPT: &str =
    "application/sdp, multipart/mixed, application/rs-metadata+xml, application/rs-metadata";
/// The body of the recorder's request for a metadata snapshot (RFC 7866 §7.3).
const METADATA_REQUEST: &str = "application/rs-metadata-request";
/// Option tags the recorder understands in `Require`.
const SUPPORTED: &[&str] = &["siprec", "timer"];
/// `Supported` of the recorder's responses.
const SUPPORTED_HEADER: &str = "siprec, timer";
/// How long a stopping recorder waits for the answers to its BYEs: a source answers in
/// milliseconds, and over UDP the first two retransmissions (after 0.5 s and 1.5 s) fit.
const BYE_AT_EXIT_LIMIT: Duration = Duration::from_secs(2);

/// Where and how the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP and TCP listen address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Which of UDP and TCP listen on `bind`.
    pub listen_udp: bool,
    pub listen_tcp: bool,
    /// TLS port (on `bind`'s address; 0 picks a free one) and its identity.
    pub listen_tls: Option<(u16, Arc<TlsIdentity>)>,
    /// Host written in Contact (the pod IP when `bind` is a wildcard).
    pub advertised_host: Option<String>,
    pub timers: Timers,
    pub limits: Limits,
    pub tcp: TcpTimeouts,
    /// Retry-After on 503 while draining or full.
    pub retry_after: Duration,
    /// The smallest RFC 4028 session interval accepted (`Min-SE` of a 422); the RFC's 90 s.
    pub min_session_expires: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 5060)),
            listen_udp: true,
            listen_tcp: true,
            listen_tls: None,
            advertised_host: None,
            timers: Timers::default(),
            limits: Limits::default(),
            tcp: TcpTimeouts::default(),
            retry_after: Duration::from_secs(30),
            min_session_expires: timer::RFC_MIN_SE,
        }
    }
}

/// An SDP offer from the source: an initial INVITE, a re-INVITE or an UPDATE.
#[derive(Debug, Clone)]
pub struct SessionOffer {
    pub dialog: DialogId,
    pub sdp: Vec<u8>,
    /// RFC 7866 rs-metadata XML, when the body carried it.
    pub metadata: Option<Vec<u8>>,
    /// The source asked for SIPREC (`Require: siprec` or `+sip.src`).
    pub siprec: bool,
    /// The request as received, for headers the handler may want.
    pub request: SipMessage,
    pub source: SocketAddr,
    pub transport: Transport,
    /// Ends this offer's dialog from the recorder's side (a BYE to the source).
    pub hangup: Hangup,
}

/// Ends a dialog of the server an offer came to: the server sends the BYE and then tells the
/// handler the session [`ended`](SessionHandler::ended), as for a BYE from the source.
#[derive(Debug, Clone)]
pub struct Hangup(mpsc::UnboundedSender<(DialogId, EndReason)>);

impl Hangup {
    pub fn end(&self, dialog: &DialogId, reason: EndReason) {
        let _ = self.0.send((dialog.clone(), reason));
    }

    /// A hangup that ends nothing, for a handler driven without a SIP server.
    pub fn detached() -> Self {
        Hangup(mpsc::unbounded_channel().0)
    }
}

/// A handler's refusal, sent as the final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    /// Sent as Retry-After (a 503 the source may try again later).
    pub retry_after: Option<Duration>,
    /// Sent as a Warning (RFC 3261 §20.43, code 399): why, for a source's operator to read.
    pub warning: Option<String>,
}

impl Rejection {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            retry_after: None,
            warning: None,
        }
    }

    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn warning(mut self, text: impl Into<String>) -> Self {
        self.warning = Some(text.into());
        self
    }

    /// The rejection's extra headers on `resp`.
    fn decorate(&self, resp: &mut SipMessage) {
        if let Some(after) = self.retry_after {
            resp.headers
                .push("Retry-After", after.as_secs().to_string());
        }
        if let Some(text) = &self.warning {
            // A quoted-string: no quotes, backslashes or control characters inside.
            let text: String = text
                .chars()
                .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                .collect();
            resp.headers
                .push("Warning", format!("399 callvault \"{text}\""));
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The source sent BYE.
    Bye,
    /// The source cancelled the INVITE before the answer reached it.
    Cancelled,
    /// The source never acknowledged the 2xx.
    AckTimeout,
    /// The recording failed (its spool could not be written): the source must not believe
    /// the call is still recorded.
    RecordingFailed,
    /// The source sent no media for the profile's media timeout.
    MediaTimeout,
    /// The source asked for a session timer and did not refresh the session in time.
    SessionTimerExpired,
    /// The recorder's in-dialog OPTIONS got 481 or 408, or no answer.
    PeerUnreachable,
    /// The recorder stopped (its drain grace ran out) with the session still live: the source
    /// must learn the call is no longer recorded here, and may record it elsewhere.
    Shutdown,
}

impl EndReason {
    /// The RFC 3326 `Reason` of the recorder's BYE.
    fn bye_reason(self) -> &'static str {
        match self {
            EndReason::AckTimeout => "SIP;cause=408;text=\"ACK not received\"",
            EndReason::MediaTimeout => "SIP;cause=408;text=\"media timeout\"",
            EndReason::SessionTimerExpired => "SIP;cause=408;text=\"session timer expired\"",
            EndReason::PeerUnreachable => "SIP;cause=408;text=\"peer unreachable\"",
            EndReason::RecordingFailed => "SIP;cause=500;text=\"spool write failed\"",
            EndReason::Shutdown => "SIP;cause=503;text=\"recorder shutting down\"",
            EndReason::Bye | EndReason::Cancelled => "SIP;cause=200;text=\"call completed\"",
        }
    }
}

/// What the recording session layer provides. Futures must be `Send`
/// because each request is handled on its own task.
pub trait SessionHandler: Send + Sync + 'static {
    /// A new session: returns the SDP answer or a rejection.
    fn offer(&self, offer: SessionOffer)
    -> impl Future<Output = Result<Vec<u8>, Rejection>> + Send;

    /// A new offer within a live dialog (re-INVITE or UPDATE).
    fn reoffer(
        &self,
        offer: SessionOffer,
    ) -> impl Future<Output = Result<Vec<u8>, Rejection>> + Send;

    /// A metadata-only update within a live dialog: an UPDATE or re-INVITE whose body is
    /// rs-metadata alone (RFC 7866 §7.1.2); the media stay as they are.
    fn metadata(
        &self,
        _dialog: DialogId,
        _metadata: Vec<u8>,
    ) -> impl Future<Output = Result<(), Rejection>> + Send {
        async { Ok(()) }
    }

    /// The dialog is over; the recording must be finalised.
    fn ended(&self, dialog: DialogId, reason: EndReason) -> impl Future<Output = ()> + Send;

    /// Whether a new session could be taken now (OPTIONS and INVITE get 503 if not).
    fn has_capacity(&self) -> bool {
        true
    }

    /// Whether a new call offered now would be recorded, for OPTIONS pings (a source that
    /// probes marks the recorder down and sends elsewhere). An INVITE is refused by
    /// [`offer`](Self::offer) itself, which counts it.
    fn records_new_calls(&self) -> bool {
        true
    }

    /// How often a new session's source is probed with an in-dialog OPTIONS (`None`: not).
    fn probe_interval(&self) -> Option<Duration> {
        None
    }

    /// A new session was refused before [`SessionHandler::offer`] saw it (draining, or no
    /// capacity): counted with the offers the handler refuses itself.
    fn refused(&self) {}
}

#[derive(Debug, Clone)]
struct DialogState {
    /// Last answer sent, reused for an offerless re-INVITE.
    answer: Vec<u8>,
    /// The INVITE that created the dialog, its path and the listener it came to: what a BYE
    /// of the recorder's own needs.
    invite: SipMessage,
    reply: ReplyPath,
    local: SocketAddr,
    /// The RFC 4028 session timer in force, and when the session was last refreshed.
    timer: Option<SessionTimer>,
    refreshed: tokio::time::Instant,
    /// CSeq of the recorder's last request in the dialog.
    local_cseq: u32,
    /// Wakes the dialog's supervisor when its timer changes.
    wake: Arc<Notify>,
    /// A SIPREC session that came without metadata, from a source that accepts requests for
    /// it: once the ACK confirms the dialog, the recorder asks for a snapshot (RFC 7866 §7.3).
    snapshot_wanted: bool,
}

#[derive(Debug)]
struct Shared<H> {
    handler: Arc<H>,
    txns: Transactions,
    dialogs: Mutex<HashMap<DialogId, DialogState>>,
    /// The recorder's own requests waiting for a final response, by Via branch.
    client: Mutex<HashMap<String, oneshot::Sender<u16>>>,
    /// Dialogs the handler ends ([`Hangup`]).
    hangups: mpsc::UnboundedSender<(DialogId, EndReason)>,
    live: watch::Sender<usize>,
    draining: AtomicBool,
    config: ServerConfig,
}

/// Outcome of [`SipServer::drain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Dialogs still live when the grace period ran out (0: clean drain).
    pub remaining: usize,
}

/// A running SIP server.
#[derive(Debug)]
pub struct SipServer<H> {
    shared: Arc<Shared<H>>,
    /// Changed only by [`SipServer::reconcile`]; the lock is never held across an await.
    listeners: Mutex<Option<Listeners>>,
    dispatcher: JoinHandle<()>,
    tcp_timeouts: watch::Sender<TcpTimeouts>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<H: SessionHandler> SipServer<H> {
    /// Binds the listeners and starts dispatching.
    pub async fn start(config: ServerConfig, handler: Arc<H>) -> Result<Self, TransportError> {
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(1024);
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let (tcp_timeouts, timeouts_rx) = watch::channel(config.tcp);
        let (hangup_tx, mut hangup_rx) = mpsc::unbounded_channel();
        let on = ListenOn {
            addr: config.bind,
            udp: config.listen_udp,
            tcp: config.listen_tcp,
            tls: config.listen_tls.clone(),
        };
        let listeners = Listeners::bind(on, config.limits, timeouts_rx, in_tx).await?;
        let shared = Arc::new(Shared {
            handler,
            txns: Transactions::new(config.timers, ev_tx),
            dialogs: Mutex::new(HashMap::new()),
            client: Mutex::new(HashMap::new()),
            hangups: hangup_tx,
            live: watch::channel(0).0,
            draining: AtomicBool::new(false),
            config,
        });
        let s = shared.clone();
        let dispatcher = tokio::spawn(async move {
            loop {
                tokio::select! {
                    inbound = in_rx.recv() => match inbound {
                        Some(inbound) => s.clone().on_inbound(inbound),
                        None => return,
                    },
                    // RFC 3261 §13.3.1.4: the UAS ends a dialog whose 2xx was never
                    // acknowledged with a BYE, so the source does not think the session is
                    // still being recorded.
                    Some(TxnEvent::AckTimeout { dialog }) = ev_rx.recv() => {
                        tokio::spawn(s.clone().end_dialog(dialog, EndReason::AckTimeout));
                    }
                    Some((dialog, reason)) = hangup_rx.recv() => {
                        tokio::spawn(s.clone().end_dialog(dialog, reason));
                    }
                }
            }
        });
        Ok(Self {
            shared,
            listeners: Mutex::new(Some(listeners)),
            dispatcher,
            tcp_timeouts,
        })
    }

    /// New TCP timeouts (a configuration change): connections opened from now on use them.
    pub fn set_tcp_timeouts(&self, timeouts: TcpTimeouts) {
        self.tcp_timeouts.send_replace(timeouts);
    }

    /// Where UDP listens, if it does.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        lock(&self.listeners).as_ref().and_then(Listeners::udp)
    }

    /// Where TCP listens, if it does.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        lock(&self.listeners).as_ref().and_then(Listeners::tcp)
    }

    /// Where TLS listens, if it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        lock(&self.listeners).as_ref().and_then(Listeners::tls)
    }

    /// Changes which transports listen, in place: what stays keeps its sockets, and with them
    /// the calls on them. On failure the listeners are as before (see
    /// [`Listeners::reconcile`]). Not to be called concurrently with itself.
    pub async fn reconcile(&self, on: ListenOn) -> Result<(), TransportError> {
        let Some(mut listeners) = lock(&self.listeners).take() else {
            return Err(TransportError::NoTransport);
        };
        let result = listeners.reconcile(on).await;
        *lock(&self.listeners) = Some(listeners);
        result
    }

    /// Number of live dialogs (sessions answered and not ended).
    pub fn live_dialogs(&self) -> usize {
        *self.shared.live.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Stops taking new sessions (503 with Retry-After to INVITE and
    /// OPTIONS) and waits up to `grace` for live dialogs to end. In-dialog
    /// requests, BYE above all, keep being served so no recording is cut.
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        self.shared.draining.store(true, Ordering::SeqCst);
        tracing::info!(live = self.live_dialogs(), ?grace, "SIP server draining");
        let mut rx = self.shared.live.subscribe();
        let _ = tokio::time::timeout(grace, rx.wait_for(|n| *n == 0)).await;
        DrainReport {
            remaining: self.live_dialogs(),
        }
    }

    /// Ends every live session with the recorder's BYE (`Reason` 503: the recorder is
    /// stopping), as the recorder stops after its drain grace. A retired listener is drained
    /// without this: its calls go on to their end.
    pub async fn hang_up_all(&self) {
        self.shared.clone().end_all(EndReason::Shutdown).await;
    }

    /// Takes new sessions again after [`drain`](Self::drain): a listener put back into
    /// service.
    pub fn resume(&self) {
        self.shared.draining.store(false, Ordering::SeqCst);
    }

    /// Stops the listeners and the dispatcher.
    pub fn shutdown(&self) {
        if let Some(l) = lock(&self.listeners).as_ref() {
            l.abort();
        }
        self.dispatcher.abort();
    }
}

impl<H> Drop for SipServer<H> {
    fn drop(&mut self) {
        if let Some(l) = lock(&self.listeners).as_ref() {
            l.abort();
        }
        self.dispatcher.abort();
    }
}

impl<H: SessionHandler> Shared<H> {
    fn remove_dialog(&self, d: &DialogId) -> Option<DialogState> {
        let mut dialogs = lock(&self.dialogs);
        let out = dialogs.remove(d);
        self.live.send_replace(dialogs.len());
        if let Some(state) = &out {
            // Its supervisor finds it gone and stops.
            state.wake.notify_one();
        }
        out
    }

    fn insert_dialog(&self, d: DialogId, state: DialogState) {
        let mut dialogs = lock(&self.dialogs);
        dialogs.insert(d, state);
        self.live.send_replace(dialogs.len());
    }

    /// The recorder's Contact: where in-dialog requests reach it, over the transport the
    /// request came on, with the `+sip.srs` feature tag (RFC 7866 §6.1.1).
    fn contact(&self, local: SocketAddr, transport: Transport) -> String {
        let t = transport.as_str().to_ascii_lowercase();
        format!(
            "<sip:callvault@{};transport={t}>;+sip.srs",
            self.contact_host(local)
        )
    }

    /// Runs on the dispatcher: matching is synchronous and ordered; each
    /// new request then gets its own task so a slow handler blocks nobody.
    fn on_inbound(self: Arc<Self>, inbound: Inbound) {
        let call_id = inbound.msg.call_id().unwrap_or_default().to_owned();
        let method = inbound
            .msg
            .method()
            .map(ToString::to_string)
            .unwrap_or_default();
        if !inbound.msg.is_request() {
            return self.on_response(&inbound.msg);
        }
        let span = tracing::info_span!("sip", %call_id, %method, source = %inbound.source);
        let _enter = span.enter();
        let Inbound {
            msg,
            source,
            local,
            reply,
        } = inbound;
        match self.txns.on_request(msg, reply) {
            Err(e) => tracing::warn!(error = %e, "request does not match a transaction"),
            Ok(Received::Absorbed) => tracing::debug!("retransmission absorbed"),
            Ok(Received::Ack(dialog)) => {
                tracing::debug!(confirmed = dialog.is_some(), "ACK");
                let wanted = dialog.as_ref().is_some_and(|d| {
                    lock(&self.dialogs)
                        .get_mut(d)
                        .is_some_and(|s| std::mem::take(&mut s.snapshot_wanted))
                });
                if let Some(dialog) = dialog.filter(|_| wanted) {
                    drop(_enter);
                    tokio::spawn(self.clone().request_snapshot(dialog).instrument(span));
                }
            }
            Ok(Received::Cancelled { .. }) => tracing::info!("INVITE cancelled by the source"),
            Ok(Received::New(txn)) => {
                let task = self.clone().handle(txn, source, local);
                drop(_enter);
                tokio::spawn(task.instrument(span));
            }
        }
    }

    async fn handle(self: Arc<Self>, txn: ServerTxn, source: SocketAddr, local: SocketAddr) {
        let req = txn.request().clone();
        let Some(method) = req.method().cloned() else {
            return;
        };
        let dialog = match DialogId::for_incoming(&req) {
            Ok(d) => d,
            Err(e) => {
                self.send(&txn, 400, &format!("Bad Request ({e})"), None);
                return;
            }
        };
        match (method, dialog) {
            (Method::Invite, None) => self.new_session(txn, source, local).await,
            (Method::Options, _) => self.options(&txn),
            (Method::Invite | Method::Update | Method::Bye, Some(d))
                if !lock(&self.dialogs).contains_key(&d) =>
            {
                self.send(&txn, 481, "Call/Transaction Does Not Exist", None);
            }
            (Method::Invite | Method::Update, Some(d)) => {
                self.reoffer(txn, d, source, local).await;
            }
            (Method::Bye, Some(d)) => {
                // Acknowledge first: the source should not retransmit while
                // the recording is finalised.
                self.send(&txn, 200, "OK", None);
                if self.remove_dialog(&d).is_some() {
                    tracing::info!("session ended by BYE");
                    self.handler.ended(d, EndReason::Bye).await;
                }
            }
            (Method::Bye | Method::Update, None) => {
                self.send(&txn, 481, "Call/Transaction Does Not Exist", None);
            }
            (Method::Other(_), _) => {
                let mut resp = self.build(&txn, 501, "Not Implemented", None);
                if let Some(r) = resp.as_mut() {
                    r.headers.push("Allow", ALLOW);
                }
                self.respond(&txn, resp);
            }
            _ => {
                let mut resp = self.build(&txn, 405, "Method Not Allowed", None);
                if let Some(r) = resp.as_mut() {
                    r.headers.push("Allow", ALLOW);
                }
                self.respond(&txn, resp);
            }
        }
    }

    fn unavailable(&self) -> bool {
        self.draining.load(Ordering::SeqCst) || !self.handler.has_capacity()
    }

    fn send_unavailable(&self, txn: &ServerTxn) {
        let mut resp = self.build(txn, 503, "Service Unavailable", None);
        if let Some(r) = resp.as_mut() {
            r.headers
                .push("Retry-After", self.config.retry_after.as_secs().to_string());
        }
        self.respond(txn, resp);
    }

    fn options(&self, txn: &ServerTxn) {
        if self.unavailable() || !self.handler.records_new_calls() {
            return self.send_unavailable(txn);
        }
        let mut resp = self.build(txn, 200, "OK", None);
        if let Some(r) = resp.as_mut() {
            r.headers.push("Allow", ALLOW);
            r.headers.push("Accept", ACCEPT);
            r.headers.push("Supported", SUPPORTED_HEADER);
        }
        self.respond(txn, resp);
    }

    /// The session timer `txn`'s request asks for; a refusal (422, 400) is answered here.
    fn session_timer(&self, txn: &ServerTxn) -> Result<Option<SessionTimer>, ()> {
        match timer::negotiate(txn.request(), self.config.min_session_expires) {
            Ok(Negotiated::Off) => Ok(None),
            Ok(Negotiated::On(t)) => Ok(Some(t)),
            Ok(Negotiated::TooSmall(min)) => {
                let mut resp = self.build(txn, 422, "Session Interval Too Small", None);
                if let Some(r) = resp.as_mut() {
                    r.headers.push("Min-SE", min.as_secs().to_string());
                }
                self.respond(txn, resp);
                Err(())
            }
            Err(e) => {
                self.send(txn, 400, &format!("Bad Request ({e})"), None);
                Err(())
            }
        }
    }

    async fn new_session(self: &Arc<Self>, txn: ServerTxn, source: SocketAddr, local: SocketAddr) {
        if self.unavailable() {
            tracing::info!(
                draining = self.draining.load(Ordering::SeqCst),
                "refusing new session"
            );
            self.handler.refused();
            return self.send_unavailable(&txn);
        }
        let req = txn.request();
        let unsupported: Vec<&str> = req
            .headers
            .values("Require")
            .into_iter()
            .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            let mut resp = self.build(&txn, 420, "Bad Extension", None);
            if let Some(r) = resp.as_mut() {
                r.headers.push("Unsupported", unsupported.join(", "));
            }
            return self.respond(&txn, resp);
        }
        let tag = new_tag();
        let dialog = match DialogId::created_by(req, &tag) {
            Ok(d) => d,
            Err(e) => return self.send(&txn, 400, &format!("Bad Request ({e})"), None),
        };
        let Ok(session_timer) = self.session_timer(&txn) else {
            return;
        };
        let Some(offer) = self.offer_of(&txn, dialog.clone(), source) else {
            return;
        };
        let snapshot_wanted = offer.siprec
            && offer.metadata.is_none()
            && req.headers.values("Accept").iter().any(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case(METADATA_REQUEST))
            });
        let answer = match self.handler.offer(offer).await {
            Ok(a) => a,
            Err(rej) => {
                tracing::info!(status = rej.status, reason = %rej.reason, "session rejected");
                let mut resp = self.build(&txn, rej.status, &rej.reason, Some(&tag));
                if let Some(r) = resp.as_mut() {
                    rej.decorate(r);
                }
                return self.respond(&txn, resp);
            }
        };
        let Ok(mut resp) = req.response(200, "OK", &tag) else {
            return;
        };
        resp.headers
            .push("Contact", self.contact(local, txn.reply_path().transport()));
        resp.headers.push("Allow", ALLOW);
        resp.headers.push("Supported", SUPPORTED_HEADER);
        with_timer(&mut resp, session_timer);
        let resp = resp.with_body("application/sdp", answer.clone());
        // Register the dialog before the 200 leaves so a quick BYE finds it.
        self.insert_dialog(
            dialog.clone(),
            DialogState {
                answer,
                invite: req.clone(),
                reply: txn.reply_path().clone(),
                local,
                timer: session_timer,
                refreshed: tokio::time::Instant::now(),
                local_cseq: 0,
                wake: Arc::new(Notify::new()),
                snapshot_wanted,
            },
        );
        if txn.respond(resp).is_err() {
            // CANCEL won the race: the source got 487, the session never was.
            self.remove_dialog(&dialog);
            tracing::info!("answer dropped: the INVITE was cancelled meanwhile");
            self.handler.ended(dialog, EndReason::Cancelled).await;
        } else {
            tracing::info!(live = *self.live.borrow(), timer = ?session_timer, "session answered");
            let probe = self.handler.probe_interval();
            tokio::spawn(
                self.clone()
                    .supervise(dialog, probe)
                    .instrument(tracing::Span::current()),
            );
        }
    }

    async fn reoffer(
        &self,
        txn: ServerTxn,
        dialog: DialogId,
        source: SocketAddr,
        local: SocketAddr,
    ) {
        let req = txn.request();
        let Ok(session_timer) = self.session_timer(&txn) else {
            return;
        };
        // Metadata alone: applied, and then answered as a request without an offer.
        let metadata_only = matches!(req.content_type(), Ok(Some(ct)) if is_rs_metadata(&ct));
        if metadata_only
            && let Err(rej) = self
                .handler
                .metadata(dialog.clone(), req.body.clone())
                .await
        {
            let mut resp = self.build(&txn, rej.status, &rej.reason, None);
            if let Some(r) = resp.as_mut() {
                rej.decorate(r);
            }
            return self.respond(&txn, resp);
        }
        let answer = if req.body.is_empty() || metadata_only {
            if req.method() == Some(&Method::Update) {
                let Ok(mut resp) = req.response(200, "OK", "") else {
                    return;
                };
                self.refreshed(&dialog, session_timer);
                with_timer(&mut resp, session_timer);
                return self.respond(&txn, Some(resp));
            }
            // Offerless re-INVITE: our 200 carries the current description.
            lock(&self.dialogs)
                .get(&dialog)
                .map(|d| d.answer.clone())
                .unwrap_or_default()
        } else {
            let Some(offer) = self.offer_of(&txn, dialog.clone(), source) else {
                return;
            };
            match self.handler.reoffer(offer).await {
                Ok(a) => {
                    if let Some(d) = lock(&self.dialogs).get_mut(&dialog) {
                        d.answer = a.clone();
                    }
                    a
                }
                Err(rej) => {
                    let mut resp = self.build(&txn, rej.status, &rej.reason, None);
                    if let Some(r) = resp.as_mut() {
                        rej.decorate(r);
                    }
                    return self.respond(&txn, resp);
                }
            }
        };
        let Ok(mut resp) = req.response(200, "OK", "") else {
            return;
        };
        resp.headers
            .push("Contact", self.contact(local, txn.reply_path().transport()));
        // A re-INVITE or UPDATE accepted refreshes the session (RFC 4028 §10), and sets its
        // timer anew: one without Session-Expires turns it off.
        self.refreshed(&dialog, session_timer);
        with_timer(&mut resp, session_timer);
        let resp = resp.with_body("application/sdp", answer);
        let _ = txn.respond(resp);
    }

    /// The source refreshed the session: its timer restarts with what it asked for now.
    fn refreshed(&self, dialog: &DialogId, session_timer: Option<SessionTimer>) {
        if let Some(d) = lock(&self.dialogs).get_mut(dialog) {
            d.timer = session_timer;
            d.refreshed = tokio::time::Instant::now();
            d.wake.notify_one();
        }
    }

    /// Ends every live dialog from the recorder's side (BYE, the handler finishes each
    /// recording) and waits, at most [`BYE_AT_EXIT_LIMIT`], for the sources to answer the
    /// BYEs: the listeners close right after, and a BYE lost with them leaves a source that
    /// believes its call is still recorded.
    async fn end_all(self: Arc<Self>, reason: EndReason) {
        let live: Vec<DialogId> = lock(&self.dialogs).keys().cloned().collect();
        let mut byes = Vec::new();
        for dialog in live {
            byes.extend(self.clone().end_dialog(dialog, reason).await);
        }
        let deadline = tokio::time::Instant::now() + BYE_AT_EXIT_LIMIT;
        for bye in byes {
            let _ = tokio::time::timeout_at(deadline, bye).await;
        }
    }

    /// Ends `dialog` from the recorder's side, if it is still live: a BYE to the source, and
    /// the handler finishes the recording. Returns the BYE's transaction, for a caller that
    /// must not close the listeners before it is answered.
    async fn end_dialog(
        self: Arc<Self>,
        dialog: DialogId,
        reason: EndReason,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let state = self.remove_dialog(&dialog)?;
        tracing::info!(call_id = %dialog.call_id, ?reason, "the recorder ends the session");
        let bye = tokio::spawn(self.clone().send_bye(dialog.clone(), state, reason));
        self.handler.ended(dialog, reason).await;
        Some(bye)
    }

    /// Watches a live dialog until it ends: its session timer (if the source asked for one)
    /// and the in-dialog OPTIONS probe every `probe`. An expired timer, or a probe answered
    /// 481 or 408 or not at all, ends the session.
    async fn supervise(self: Arc<Self>, dialog: DialogId, probe: Option<Duration>) {
        let mut next_probe = probe.map(|p| tokio::time::Instant::now() + p);
        loop {
            let (expiry, wake) = match lock(&self.dialogs).get(&dialog) {
                Some(d) => (d.timer.map(|t| d.refreshed + t.end_after()), d.wake.clone()),
                None => return,
            };
            let now = tokio::time::Instant::now();
            if expiry.is_some_and(|at| at <= now) {
                tracing::warn!("the source did not refresh its session timer: ending the session");
                self.end_dialog(dialog, EndReason::SessionTimerExpired)
                    .await;
                return;
            }
            if let (Some(at), Some(every)) = (next_probe, probe)
                && at <= now
            {
                let status = self.probe(&dialog).await;
                if matches!(status, None | Some(408 | 481)) {
                    tracing::warn!(
                        ?status,
                        "the source does not answer in the dialog: ending the session"
                    );
                    self.end_dialog(dialog, EndReason::PeerUnreachable).await;
                    return;
                }
                next_probe = Some(tokio::time::Instant::now() + every);
                continue;
            }
            let Some(until) = [expiry, next_probe].into_iter().flatten().min() else {
                // Nothing to watch until the source asks for a timer.
                wake.notified().await;
                continue;
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = wake.notified() => {}
            }
        }
    }

    /// Sends an OPTIONS in the dialog; its final status, `None` when none came (Timer F).
    async fn probe(&self, dialog: &DialogId) -> Option<u16> {
        let (state, cseq) = self.next_request(dialog)?;
        self.request(&state, dialog, Method::Options, cseq, |_| {})
            .await
    }

    /// The dialog's state and the CSeq of the recorder's next request in it.
    fn next_request(&self, dialog: &DialogId) -> Option<(DialogState, u32)> {
        let mut dialogs = lock(&self.dialogs);
        let d = dialogs.get_mut(dialog)?;
        d.local_cseq += 1;
        Some((d.clone(), d.local_cseq))
    }

    /// Asks the source of a session that came without metadata for a snapshot: an UPDATE
    /// with an `application/rs-metadata-request` body (RFC 7866 §7.3). The source answers it
    /// and sends the metadata in a request of its own, which updates the call's participants.
    async fn request_snapshot(self: Arc<Self>, dialog: DialogId) {
        let Some((state, cseq)) = self.next_request(&dialog) else {
            return;
        };
        let status = self
            .request(&state, &dialog, Method::Update, cseq, |req| {
                req.headers.push("Content-Type", METADATA_REQUEST);
                req.headers.push("Content-Disposition", "recording-session");
                req.body = b"the session was offered without metadata\r\n".to_vec();
            })
            .await;
        match status {
            Some(200..=299) => tracing::info!("metadata snapshot requested"),
            status => tracing::warn!(?status, "the source refused the metadata snapshot request"),
        }
    }

    /// Extracts the offer from a request body, answering the error itself.
    fn offer_of(
        &self,
        txn: &ServerTxn,
        dialog: DialogId,
        source: SocketAddr,
    ) -> Option<SessionOffer> {
        let req = txn.request();
        let ct = match req.content_type() {
            Ok(Some(ct)) => ct,
            Ok(None) if req.body.is_empty() => {
                // Delayed offer: the recorder only answers, it never offers.
                self.send(txn, 488, "Not Acceptable Here (no SDP offer)", None);
                return None;
            }
            Ok(None) => {
                self.send(txn, 400, "Bad Request (body without Content-Type)", None);
                return None;
            }
            Err(e) => {
                self.send(txn, 400, &format!("Bad Request ({e})"), None);
                return None;
            }
        };
        if !ct.is("application/sdp") && ct.kind != "multipart" {
            let mut resp = self.build(txn, 415, "Unsupported Media Type", None);
            if let Some(r) = resp.as_mut() {
                r.headers.push("Accept", ACCEPT);
            }
            self.respond(txn, resp);
            return None;
        }
        let body = match siprec_body(&ct, &req.body) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "unusable INVITE body");
                self.send(txn, 400, &format!("Bad Request ({e})"), None);
                return None;
            }
        };
        let siprec = req.requires("siprec")
            || req
                .contacts()
                .unwrap_or_default()
                .iter()
                .any(|c| c.param("+sip.src").is_some());
        Some(SessionOffer {
            dialog,
            sdp: body.sdp,
            metadata: body.metadata,
            siprec,
            request: req.clone(),
            source,
            transport: txn.reply_path().transport(),
            hangup: Hangup(self.hangups.clone()),
        })
    }

    /// A final response to one of the recorder's requests ends its retransmissions.
    fn on_response(&self, resp: &SipMessage) {
        let Some(status) = resp.status().filter(|s| *s >= 200) else {
            return;
        };
        let Some(branch) = resp
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
        else {
            return;
        };
        if let Some(waiter) = lock(&self.client).remove(&branch) {
            let _ = waiter.send(status);
        }
    }

    /// A BYE to the source, saying why the recorder ends the session.
    async fn send_bye(self: Arc<Self>, dialog: DialogId, state: DialogState, reason: EndReason) {
        let cseq = state.local_cseq + 1;
        let span = tracing::info_span!("sip", call_id = %dialog.call_id, method = "BYE");
        let outcome = self
            .request(&state, &dialog, Method::Bye, cseq, |req| {
                req.headers.push("Reason", reason.bye_reason());
            })
            .instrument(span.clone())
            .await;
        span.in_scope(|| match outcome {
            Some(status) => tracing::info!(status, "session ended by the recorder's BYE"),
            None => tracing::warn!("no response to the recorder's BYE"),
        });
    }

    /// Sends a request of the recorder's own in `dialog`, retransmitted over UDP (Timer E: T1
    /// doubling up to T2) until a final response or 64*T1 (Timer F); its final status.
    async fn request(
        &self,
        state: &DialogState,
        dialog: &DialogId,
        method: Method,
        cseq: u32,
        decorate: impl FnOnce(&mut SipMessage),
    ) -> Option<u16> {
        let branch = format!("z9hG4bK{}", new_tag());
        let sent_by = self.contact_host(state.local);
        let req = match in_dialog_request(state, dialog, method, cseq, &branch, &sent_by) {
            Ok(mut r) => {
                decorate(&mut r);
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a request in the session's dialog");
                return None;
            }
        };
        let (tx, mut rx) = oneshot::channel();
        lock(&self.client).insert(branch.clone(), tx);
        let timers = self.config.timers;
        let deadline = tokio::time::Instant::now() + timers.timeout();
        let mut interval = timers.t1;
        let outcome = loop {
            state.reply.send(&req);
            let wait = if state.reply.transport().reliable() {
                timers.timeout()
            } else {
                interval
            };
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            match tokio::time::timeout_at(until, &mut rx).await {
                Ok(Ok(status)) => break Some(status),
                Ok(Err(_)) => break None,
                Err(_) if tokio::time::Instant::now() >= deadline => break None,
                Err(_) => interval = (interval * 2).min(timers.t2),
            }
        };
        lock(&self.client).remove(&branch);
        outcome
    }

    fn contact_host(&self, local: SocketAddr) -> String {
        let host = self
            .config
            .advertised_host
            .clone()
            .unwrap_or_else(|| local.ip().to_string());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        format!("{host}:{}", local.port())
    }

    fn build(
        &self,
        txn: &ServerTxn,
        status: u16,
        reason: &str,
        tag: Option<&str>,
    ) -> Option<SipMessage> {
        let tag = tag.map_or_else(new_tag, str::to_owned);
        match txn.request().response(status, reason, &tag) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, status, "cannot build response");
                None
            }
        }
    }

    fn respond(&self, txn: &ServerTxn, resp: Option<SipMessage>) {
        if let Some(resp) = resp
            && let Err(e) = txn.respond(resp)
        {
            tracing::debug!(error = %e, "response not sent");
        }
    }

    fn send(&self, txn: &ServerTxn, status: u16, reason: &str, tag: Option<&str>) {
        let resp = self.build(txn, status, reason, tag);
        self.respond(txn, resp);
    }
}

/// A request the UAS sends within its dialog (RFC 3261 §12.2.1.1, §15): to the remote target
/// (the INVITE's Contact), From our To with our tag, To the source's From, the INVITE's
/// Record-Route as the route set, and a CSeq of the recorder's own.
fn in_dialog_request(
    state: &DialogState,
    dialog: &DialogId,
    method: Method,
    cseq: u32,
    branch: &str,
    sent_by: &str,
) -> Result<SipMessage, super::SipError> {
    let invite = &state.invite;
    let target = match invite.contacts().ok().and_then(|c| c.into_iter().next()) {
        Some(c) if !c.uri.is_empty() => c.uri,
        _ => invite.from()?.uri,
    };
    let name = method.to_string();
    let mut req = SipMessage::request(method, target);
    let transport = state.reply.transport().as_str().to_ascii_uppercase();
    req.headers.push(
        "Via",
        format!("SIP/2.0/{transport} {sent_by};branch={branch};rport"),
    );
    req.headers.push("Max-Forwards", "70");
    for route in invite.headers.get_all("Record-Route") {
        req.headers.push("Route", route);
    }
    let to = invite
        .headers
        .get("To")
        .ok_or(super::SipError::MissingHeader("To"))?;
    req.headers
        .push("From", format!("{to};tag={}", dialog.local_tag));
    let from = invite
        .headers
        .get("From")
        .ok_or(super::SipError::MissingHeader("From"))?;
    req.headers.push("To", from);
    req.headers.push("Call-ID", dialog.call_id.as_str());
    req.headers.push("CSeq", format!("{cseq} {name}"));
    Ok(req)
}

/// The session timer's headers on a 2xx (RFC 4028 §9): the interval and refresher, and
/// `Require: timer` since the source supports it.
fn with_timer(resp: &mut SipMessage, session_timer: Option<SessionTimer>) {
    if let Some(t) = session_timer {
        resp.headers.push("Session-Expires", t.header());
        resp.headers.push("Require", "timer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_says_why_in_a_warning_that_stays_a_quoted_string() {
        let mut resp = SipMessage::request(Method::Invite, "sip:srs@192.0.2.1");
        Rejection::new(488, "Not Acceptable Here (SRTP required)")
            .warning("SRTP \"required\"\r\nInjected: yes\\")
            .retry_after(Duration::from_secs(60))
            .decorate(&mut resp);
        assert_eq!(
            resp.headers.get("Warning"),
            Some("399 callvault \"SRTP requiredInjected: yes\"")
        );
        assert_eq!(resp.headers.get("Retry-After"), Some("60"));
        assert_eq!(resp.headers.get("Injected"), None);
    }
}
