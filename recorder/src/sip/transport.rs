//! UDP, TCP and TLS listeners (RFC 3261 §18, §26.2). They parse what arrives, stamp the
//! top Via with where it really came from, answer 400 to requests that are
//! malformed but still answerable, and hand valid requests upwards together
//! with the way back to the sender. Only the transports the configuration names listen.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::header::{Headers, Param, Via, split_list};
use super::message::{Limits, SipMessage, parse_with_limits};
use super::tls::{TlsError, TlsFiles, TlsIdentity};
use super::{SipError, StreamFramer};

/// Largest datagram accepted; bigger SIPREC INVITEs must use TCP.
const MAX_DATAGRAM: usize = 65_535;
/// Responses queued for one TCP connection before it counts as stuck.
const TCP_QUEUE: usize = 256;
const DEFAULT_SIP_PORT: u16 = 5060;

/// How long a TCP connection may take over a message, stay silent, or not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTimeouts {
    /// From a message's first byte to its last (headers and body): a client that trickles a
    /// message (slow loris) is disconnected.
    pub message: Duration,
    /// Without a byte (keep-alives count), a connection no dialog or transaction uses is
    /// closed; one that carries a live call stays open for the recorder's own BYE.
    pub idle: Duration,
    /// One write to a peer that does not read its responses.
    pub write: Duration,
}

impl Default for TcpTimeouts {
    fn default() -> Self {
        Self {
            message: Duration::from_secs(10),
            idle: Duration::from_secs(120),
            write: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot bind SIP {transport} listener on {addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("no SIP transport to listen on")]
    NoTransport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Whether the transport retransmits by itself (no SIP timers needed).
    pub fn reliable(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }
}

/// What to listen on: UDP and TCP share the SIP port, TLS has its own.
#[derive(Debug, Clone)]
pub struct ListenOn {
    /// Address (and port for UDP and TCP; 0 picks a free one, the same for both).
    pub addr: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    /// TLS port (0: a free one) and the identity it serves.
    pub tls: Option<(u16, Arc<TlsIdentity>)>,
}

impl ListenOn {
    /// UDP and TCP on `addr`, no TLS: what a SIP peer expects by default.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            udp: true,
            tcp: true,
            tls: None,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where responses to one request go: the connection it came on (TCP), or
/// the address RFC 3261 §18.2.2 / RFC 3581 pick from its top Via (UDP).
#[derive(Debug, Clone)]
pub enum ReplyPath {
    Udp {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
    },
    /// A connection (TCP or TLS).
    Tcp {
        conn: mpsc::Sender<Vec<u8>>,
        peer: SocketAddr,
        transport: Transport,
    },
    /// In-memory peer for unit tests of the layers above.
    #[cfg(test)]
    Memory {
        tx: mpsc::UnboundedSender<SipMessage>,
        transport: Transport,
    },
}

impl ReplyPath {
    pub fn transport(&self) -> Transport {
        match self {
            Self::Udp { .. } => Transport::Udp,
            Self::Tcp { transport, .. } => *transport,
            #[cfg(test)]
            Self::Memory { transport, .. } => *transport,
        }
    }

    pub fn destination(&self) -> SocketAddr {
        match self {
            Self::Udp { to, .. } => *to,
            Self::Tcp { peer, .. } => *peer,
            #[cfg(test)]
            Self::Memory { .. } => SocketAddr::from(([127, 0, 0, 1], DEFAULT_SIP_PORT)),
        }
    }

    /// Sends without waiting, so transaction state can be updated under a
    /// lock. A failure is logged: SIP recovers lost messages through
    /// retransmission, and a dead TCP connection is the peer's to reopen.
    pub fn send(&self, msg: &SipMessage) {
        let bytes = msg.to_bytes();
        match self {
            Self::Udp { socket, to } => {
                if let Err(e) = socket.try_send_to(&bytes, *to) {
                    tracing::warn!(%to, error = %e, "UDP send failed");
                }
            }
            Self::Tcp {
                conn,
                peer,
                transport,
            } => {
                if let Err(e) = conn.try_send(bytes) {
                    tracing::warn!(%peer, %transport, error = %e, "connection cannot take a response");
                }
            }
            #[cfg(test)]
            Self::Memory { tx, .. } => {
                let _ = tx.send(msg.clone());
            }
        }
    }
}

/// A well-formed request, its top Via already carrying `received`/`rport`.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub msg: SipMessage,
    pub source: SocketAddr,
    /// Address of the listener it arrived on (for Contact).
    pub local: SocketAddr,
    pub reply: ReplyPath,
}

impl Inbound {
    pub fn transport(&self) -> Transport {
        self.reply.transport()
    }
}

/// One running listener: where it listens and the task that serves it.
#[derive(Debug)]
struct Bound {
    local: SocketAddr,
    task: JoinHandle<()>,
}

/// The TLS listener and the certificate files it serves.
#[derive(Debug)]
struct BoundTls {
    bound: Bound,
    files: TlsFiles,
}

/// Running listeners; dropping this does not stop them, [`Listeners::abort`] does. They are
/// changed in place ([`Listeners::reconcile`]), so that adding TLS or dropping TCP does not
/// need the UDP socket a live call uses to be closed and bound again.
#[derive(Debug)]
pub struct Listeners {
    udp: Option<Bound>,
    tcp: Option<Bound>,
    tls: Option<BoundTls>,
    limits: Limits,
    timeouts: watch::Receiver<TcpTimeouts>,
    tx: mpsc::Sender<Inbound>,
}

impl Listeners {
    /// Binds what `on` names and forwards requests to `tx`. TCP and TLS connections take their
    /// timeouts from `timeouts` as it is when they open.
    pub async fn bind(
        on: ListenOn,
        limits: Limits,
        timeouts: watch::Receiver<TcpTimeouts>,
        tx: mpsc::Sender<Inbound>,
    ) -> Result<Self, TransportError> {
        let mut out = Self {
            udp: None,
            tcp: None,
            tls: None,
            limits,
            timeouts,
            tx,
        };
        out.reconcile(on).await?;
        Ok(out)
    }

    pub fn udp(&self) -> Option<SocketAddr> {
        self.udp.as_ref().map(|b| b.local)
    }

    pub fn tcp(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|b| b.local)
    }

    pub fn tls(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|b| b.bound.local)
    }

    /// Makes the listeners those `on` names, on `on.addr`'s address: new ones are bound first
    /// (if one cannot be, nothing changes), then those no longer named stop. Connections already
    /// open, and the calls on them, are not touched. A TLS listener whose port stays but whose
    /// certificate files change is replaced (its port must be free for the new one).
    pub async fn reconcile(&mut self, on: ListenOn) -> Result<(), TransportError> {
        if !(on.udp || on.tcp || on.tls.is_some()) {
            return Err(TransportError::NoTransport);
        }
        let plain_port = self
            .udp()
            .or(self.tcp())
            .map_or(on.addr.port(), |a| a.port());
        let plain = SocketAddr::new(on.addr.ip(), plain_port);
        let (new_udp, new_tcp) = match (on.udp && self.udp.is_none(), on.tcp && self.tcp.is_none())
        {
            (true, true) => {
                let (udp, tcp) = bind_pair(plain).await?;
                (Some(udp), Some(tcp))
            }
            (true, false) => (Some(bind_udp(plain).await?), None),
            (false, true) => (None, Some(bind_tcp(plain, Transport::Tcp).await?)),
            (false, false) => (None, None),
        };
        let wanted_tls = on
            .tls
            .as_ref()
            .map(|(port, id)| (*port, id.files().clone()));
        let current_tls = self
            .tls
            .as_ref()
            .map(|t| (t.bound.local.port(), t.files.clone()));
        let new_tls = match &on.tls {
            Some((port, identity)) if wanted_tls != current_tls => {
                let addr = SocketAddr::new(on.addr.ip(), *port);
                // The same port: the old listener has to let go of it first.
                if current_tls.as_ref().is_some_and(|(p, _)| p == port)
                    && let Some(old) = self.tls.take()
                {
                    old.bound.task.abort();
                    let _ = old.bound.task.await;
                }
                Some((bind_tcp(addr, Transport::Tls).await?, identity.clone()))
            }
            _ => None,
        };

        if let Some(udp) = new_udp {
            let local = local_addr(&udp, plain, Transport::Udp)?;
            let task = tokio::spawn(udp_loop(Arc::new(udp), local, self.limits, self.tx.clone()));
            self.udp = Some(Bound { local, task });
        }
        if let Some(tcp) = new_tcp {
            let local = local_addr(&tcp, plain, Transport::Tcp)?;
            let task = tokio::spawn(stream_accept_loop(
                tcp,
                local,
                None,
                self.limits,
                self.timeouts.clone(),
                self.tx.clone(),
            ));
            self.tcp = Some(Bound { local, task });
        }
        if let Some((listener, identity)) = new_tls {
            let local = local_addr(&listener, on.addr, Transport::Tls)?;
            let files = identity.files().clone();
            let task = tokio::spawn(stream_accept_loop(
                listener,
                local,
                Some(identity),
                self.limits,
                self.timeouts.clone(),
                self.tx.clone(),
            ));
            if let Some(old) = self.tls.replace(BoundTls {
                bound: Bound { local, task },
                files,
            }) {
                old.bound.task.abort();
            }
        }
        if !on.udp
            && let Some(old) = self.udp.take()
        {
            old.task.abort();
        }
        if !on.tcp
            && let Some(old) = self.tcp.take()
        {
            old.task.abort();
        }
        if on.tls.is_none()
            && let Some(old) = self.tls.take()
        {
            old.bound.task.abort();
        }
        tracing::info!(udp = ?self.udp(), tcp = ?self.tcp(), tls = ?self.tls(), "SIP listeners bound");
        Ok(())
    }

    /// Stops accepting; open TCP connections end with their peers.
    pub fn abort(&self) {
        let tls = self.tls.as_ref().map(|t| &t.bound);
        for b in self.udp.iter().chain(self.tcp.iter()).chain(tls) {
            b.task.abort();
        }
    }
}

/// The address a socket got (port 0 resolved).
fn local_addr<S: LocalAddr>(
    socket: &S,
    addr: SocketAddr,
    transport: Transport,
) -> Result<SocketAddr, TransportError> {
    socket.local_addr().map_err(|source| TransportError::Bind {
        transport,
        addr,
        source,
    })
}

trait LocalAddr {
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
}

impl LocalAddr for UdpSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

impl LocalAddr for TcpListener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, TransportError> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| TransportError::Bind {
            transport: Transport::Udp,
            addr,
            source,
        })
}

async fn bind_tcp(addr: SocketAddr, transport: Transport) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| TransportError::Bind {
            transport,
            addr,
            source,
        })
}

/// Binds UDP and TCP on one port, as SIP peers expect. With port 0 the UDP port is chosen by the
/// system and may already be taken on TCP by an unrelated socket, so a few fresh picks are made.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), TransportError> {
    const EPHEMERAL_ATTEMPTS: u32 = 16;
    let attempts = if addr.port() == 0 {
        EPHEMERAL_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp_err = |source| TransportError::Bind {
            transport: Transport::Udp,
            addr,
            source,
        };
        let udp = UdpSocket::bind(addr).await.map_err(udp_err)?;
        let udp_addr = udp.local_addr().map_err(udp_err)?;
        let tcp_addr = SocketAddr::new(addr.ip(), udp_addr.port());
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) if attempt < attempts && source.kind() == std::io::ErrorKind::AddrInUse => {
                continue;
            }
            Err(source) => {
                return Err(TransportError::Bind {
                    transport: Transport::Tcp,
                    addr: tcp_addr,
                    source,
                });
            }
        }
    }
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    limits: Limits,
    tx: mpsc::Sender<Inbound>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, source) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on some systems.
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        let data = buf.get(..n).unwrap_or_default();
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keep-alive
        }
        let msg = match parse_with_limits(data, &limits) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%source, error = %e, "dropping unparseable UDP datagram");
                continue;
            }
        };
        let Some(msg) = accept_request(msg, source, Transport::Udp) else {
            continue;
        };
        let via = match &msg {
            Ok(m) | Err(m) => m.top_via(),
        };
        let to = match via {
            Ok(via) => udp_response_target(&via, source),
            Err(_) => source,
        };
        let reply = ReplyPath::Udp {
            socket: socket.clone(),
            to,
        };
        match msg {
            Ok(msg) => {
                let inbound = Inbound {
                    msg,
                    source,
                    local,
                    reply,
                };
                if tx.send(inbound).await.is_err() {
                    return; // server gone
                }
            }
            Err(bad) => reply.send(&bad),
        }
    }
}

/// Accepts TCP connections; with an identity, each first completes a TLS handshake (bounded
/// by the message timeout, so a peer that stalls it holds nothing for long).
async fn stream_accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<Arc<TlsIdentity>>,
    limits: Limits,
    timeouts: watch::Receiver<TcpTimeouts>,
    tx: mpsc::Sender<Inbound>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                continue;
            }
        };
        let tx = tx.clone();
        let timeouts = *timeouts.borrow();
        match &tls {
            None => {
                tokio::spawn(stream_connection(
                    stream,
                    Transport::Tcp,
                    peer,
                    local,
                    limits,
                    timeouts,
                    tx,
                ));
            }
            Some(identity) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(identity.config());
                tokio::spawn(async move {
                    match tokio::time::timeout(timeouts.message, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            stream_connection(
                                tls,
                                Transport::Tls,
                                peer,
                                local,
                                limits,
                                timeouts,
                                tx,
                            )
                            .await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake refused");
                        }
                        Err(_) => {
                            tracing::warn!(%peer, timeout = ?timeouts.message,
                                "TLS handshake not completed in time");
                        }
                    }
                });
            }
        }
    }
}

async fn stream_connection<S>(
    stream: S,
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    limits: Limits,
    timeouts: TcpTimeouts,
    tx: mpsc::Sender<Inbound>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            // A flush too: TLS holds written bytes until its records go out.
            let write = async {
                wr.write_all(&bytes).await?;
                wr.flush().await
            };
            match tokio::time::timeout(timeouts.write, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TCP write failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, timeout = ?timeouts.write,
                        "closing TCP connection: the peer does not read its responses");
                    return;
                }
            }
        }
    });
    let reply = ReplyPath::Tcp {
        conn: out_tx.clone(),
        peer,
        transport,
    };
    let mut framer = StreamFramer::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    // When the first byte of the message being received arrived.
    let mut message_started: Option<tokio::time::Instant> = None;
    'read: loop {
        let now = tokio::time::Instant::now();
        let deadline = match message_started {
            Some(started) => started + timeouts.message,
            None => now + timeouts.idle,
        };
        let n = match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TCP read failed");
                break;
            }
            Err(_) if message_started.is_some() => {
                tracing::warn!(%peer, pending = framer.pending(), timeout = ?timeouts.message,
                    "closing TCP connection: a message did not arrive whole in time");
                break;
            }
            // Dialogs and transactions hold a handle of the connection: one that carries a
            // call stays open however quiet.
            Err(_) if out_tx.strong_count() > 2 => continue,
            Err(_) => {
                tracing::debug!(%peer, timeout = ?timeouts.idle, "closing idle TCP connection");
                break;
            }
        };
        framer.push(buf.get(..n).unwrap_or_default());
        let mut completed = false;
        loop {
            let msg = match framer.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be resynchronised after a framing error.
                    tracing::warn!(%peer, error = %e, "closing TCP connection after bad SIP framing");
                    break 'read;
                }
            };
            completed = true;
            match accept_request(msg, peer, transport) {
                Some(Ok(msg)) => {
                    let inbound = Inbound {
                        msg,
                        source: peer,
                        local,
                        reply: reply.clone(),
                    };
                    if tx.send(inbound).await.is_err() {
                        break 'read;
                    }
                }
                Some(Err(bad)) => reply.send(&bad),
                None => {}
            }
        }
        message_started = match framer.pending() {
            0 => None,
            // The rest belongs to the next message, which started in this read.
            _ if completed => Some(tokio::time::Instant::now()),
            _ => message_started.or(Some(tokio::time::Instant::now())),
        };
    }
    drop((reply, out_tx));
    // Let queued responses (a final 400, a BYE's 200) go out before closing.
    let _ = writer.await;
}

/// Stamps the Via of a request and validates it; a response passes as it is (to the
/// recorder's own requests: the BYE that ends an unacknowledged session). `None`: dropped (a
/// request too broken to answer); `Some(Err(resp))`: answer `resp` (400) and go no further.
fn accept_request(
    msg: SipMessage,
    source: SocketAddr,
    transport: Transport,
) -> Option<Result<SipMessage, SipMessage>> {
    if !msg.is_request() {
        tracing::debug!(%source, %transport, status = msg.status(), "response received");
        return Some(Ok(msg));
    }
    let mut msg = msg;
    if let Err(e) = stamp_top_via(&mut msg, source) {
        return bad_request(&msg, source, &e);
    }
    if let Err(e) = msg.validate_request() {
        return bad_request(&msg, source, &e);
    }
    Some(Ok(msg))
}

fn bad_request(
    msg: &SipMessage,
    source: SocketAddr,
    e: &SipError,
) -> Option<Result<SipMessage, SipMessage>> {
    // ACKs are never answered (RFC 3261 §17.2.1).
    if msg.method() == Some(&super::Method::Ack) {
        tracing::warn!(%source, error = %e, "dropping malformed ACK");
        return None;
    }
    let reason = format!("Bad Request ({e})");
    match msg.response(400, &reason, "") {
        Ok(resp) => {
            tracing::warn!(%source, error = %e, "answering malformed request with 400");
            Some(Err(resp))
        }
        Err(_) => {
            tracing::warn!(%source, error = %e, "dropping malformed request that cannot be answered");
            None
        }
    }
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: add `received` when the sent-by host is
/// not the packet's source address, and fill a bare `rport`.
fn stamp_top_via(msg: &mut SipMessage, source: SocketAddr) -> Result<(), SipError> {
    let mut via = msg.top_via()?;
    let wants_rport = matches!(via.rport(), Some(None));
    let host_is_source = via
        .host
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip == source.ip());
    if !host_is_source || wants_rport {
        set_param(&mut via.params, "received", source.ip().to_string());
    }
    if wants_rport {
        set_param(&mut via.params, "rport", source.port().to_string());
    }
    let mut headers = Headers::new();
    let mut done = false;
    for h in msg.headers.iter() {
        if !done && h.name.eq_ignore_ascii_case("Via") {
            done = true;
            let mut values: Vec<String> = split_list(&h.value)
                .into_iter()
                .map(str::to_owned)
                .collect();
            if let Some(first) = values.first_mut() {
                *first = via.to_string();
            }
            headers.push(&h.name, values.join(", "));
        } else {
            headers.push(&h.name, h.value.clone());
        }
    }
    msg.headers = headers;
    Ok(())
}

fn set_param(params: &mut Vec<Param>, name: &str, value: String) {
    match params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        Some(p) => p.value = Some(value),
        None => params.push(Param {
            name: name.to_owned(),
            value: Some(value),
        }),
    }
}

/// RFC 3261 §18.2.2 (unicast) with RFC 3581: the `received` address, at
/// the `rport` port if filled, else the sent-by port, else 5060. A sent-by
/// that is a host name and no `received` falls back to the source address.
pub fn udp_response_target(via: &Via, source: SocketAddr) -> SocketAddr {
    let ip = via
        .received()
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .or_else(|| via.host.trim_matches(['[', ']']).parse().ok());
    let Some(ip) = ip else {
        return source;
    };
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(DEFAULT_SIP_PORT),
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stamped(via: &str, source: SocketAddr) -> SipMessage {
        let mut m = req(via);
        stamp_top_via(&mut m, source).unwrap();
        m
    }

    fn req(via: &str) -> SipMessage {
        let raw = format!(
            "OPTIONS sip:rec@example.com SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:rec@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        super::super::parse_datagram(raw.as_bytes()).unwrap()
    }

    #[test]
    fn rport_sends_responses_to_the_packet_source_behind_nat() {
        let source: SocketAddr = "203.0.113.9:40123".parse().unwrap();
        let msg = stamped("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport", source);
        let via = msg.top_via().unwrap();
        assert_eq!(via.received(), Some("203.0.113.9"));
        assert_eq!(via.rport(), Some(Some(40123)));
        assert_eq!(udp_response_target(&via, source), source);
        // The second Via is untouched.
        assert_eq!(msg.vias().unwrap().len(), 2);
    }

    #[test]
    fn without_rport_responses_go_to_received_at_the_sent_by_port() {
        let source: SocketAddr = "203.0.113.9:40123".parse().unwrap();
        let msg = stamped("SIP/2.0/UDP sbc.example.com:5070;branch=z9hG4bKa", source);
        let via = msg.top_via().unwrap();
        assert_eq!(via.received(), Some("203.0.113.9"));
        assert_eq!(
            udp_response_target(&via, source),
            "203.0.113.9:5070".parse().unwrap()
        );
        // Same IP as the source: no received, default port.
        let source: SocketAddr = "192.0.2.1:6000".parse().unwrap();
        let msg = stamped("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa", source);
        let via = msg.top_via().unwrap();
        assert_eq!(via.received(), None);
        assert_eq!(
            udp_response_target(&via, source),
            "192.0.2.1:5060".parse().unwrap()
        );
    }

    #[test]
    fn request_with_mismatched_cseq_is_answered_400() {
        let raw = "OPTIONS sip:rec@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\n\
                   From: <sip:a@example.com>;tag=1\r\nTo: <sip:rec@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let msg = super::super::parse_datagram(raw.as_bytes()).unwrap();
        let out = accept_request(msg, "192.0.2.1:5060".parse().unwrap(), Transport::Udp);
        assert!(matches!(out, Some(Err(ref r)) if r.status() == Some(400)));
    }
}
