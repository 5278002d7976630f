//! The client's one SIP connection to the recorder, shared by every call of a run: a UDP socket,
//! or a TCP connection (TLS over it when the transport is TLS), and a reader that parses what
//! arrives and hands each message to its call by Call-ID. Unparseable messages are counted and
//! logged, never fatal over UDP; over a stream they cannot be resynchronised after one, so the
//! connection is closed and every call on it fails with the reason.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use callvault_recorder::sip::transport::Transport;
use callvault_recorder::sip::{Limits, Method, SipMessage, StreamFramer, parse_datagram};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::TlsClient;
use crate::error::{CallError, SetupError};

const MAX_DATAGRAM: usize = 65_535;
/// Messages queued for a TCP or TLS writer before a send waits.
const STREAM_QUEUE: usize = 1024;

#[derive(Debug, Clone)]
enum Out {
    Udp {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
    },
    /// TCP or TLS: a writer task owns the stream's sending half.
    Stream(mpsc::Sender<Vec<u8>>),
}

impl Out {
    async fn send(&self, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Self::Udp { socket, to } => socket
                .send_to(&bytes, *to)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Stream(tx) => tx
                .send(bytes)
                .await
                .map_err(|_| "the connection is closed".to_owned()),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<SipMessage>>>,
    malformed: AtomicU64,
    /// Why the link stopped, once it has.
    closed: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn close(&self, reason: String) {
        lock(&self.closed).get_or_insert(reason);
        // Dropping the senders wakes every call with the news.
        lock(&self.calls).clear();
    }

    fn malformed(&self, from: SocketAddr, e: &dyn std::fmt::Display) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%from, error = %e, "malformed SIP message from the recorder dropped");
    }
}

/// A SIP connection to one recorder address.
#[derive(Debug)]
pub struct SipLink {
    transport: Transport,
    local: SocketAddr,
    out: Out,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SipLink {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The local address that routes to `remote` (what Via, Contact and SDP must name).
fn route_source(remote: SocketAddr) -> Result<IpAddr, std::io::Error> {
    let any: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(remote)?;
    Ok(probe.local_addr()?.ip())
}

impl SipLink {
    /// Connects to `remote`; `tls` says what to trust when the transport is TLS.
    pub async fn open(
        transport: Transport,
        remote: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<Self, SetupError> {
        let shared = Arc::new(Shared::default());
        match transport {
            Transport::Udp => {
                let socket_err = |source| SetupError::Socket { remote, source };
                let ip = route_source(remote).map_err(socket_err)?;
                let socket = Arc::new(UdpSocket::bind((ip, 0)).await.map_err(socket_err)?);
                let local = socket.local_addr().map_err(socket_err)?;
                let out = Out::Udp {
                    socket: socket.clone(),
                    to: remote,
                };
                let reader = tokio::spawn(read_udp(socket, shared.clone(), out.clone()));
                Ok(Self {
                    transport,
                    local,
                    out,
                    shared,
                    tasks: vec![reader],
                })
            }
            Transport::Tcp | Transport::Tls => {
                let stream = TcpStream::connect(remote)
                    .await
                    .map_err(|source| SetupError::Connect { remote, source })?;
                let _ = stream.set_nodelay(true);
                let local = stream
                    .local_addr()
                    .map_err(|source| SetupError::Connect { remote, source })?;
                let (out, tasks) = if transport == Transport::Tls {
                    let tls = tls.ok_or(SetupError::TlsSettingsMissing)?;
                    let config = tls.files.load().map_err(SetupError::Tls)?;
                    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                        .map_err(|_| SetupError::TlsServerName(tls.server_name.clone()))?;
                    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                        .connect(name, stream)
                        .await
                        .map_err(|source| SetupError::TlsHandshake { remote, source })?;
                    spawn_stream(stream, remote, &shared)
                } else {
                    spawn_stream(stream, remote, &shared)
                };
                Ok(Self {
                    transport,
                    local,
                    out,
                    shared,
                    tasks,
                })
            }
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// This end's SIP address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Messages for `call_id` arrive on the returned channel until [`SipLink::unregister`]; it
    /// ends (yields `None`) when the link closes.
    pub fn register(&self, call_id: &str) -> mpsc::UnboundedReceiver<SipMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        if lock(&self.shared.closed).is_none() {
            lock(&self.shared.calls).insert(call_id.to_owned(), tx);
        }
        rx
    }

    pub fn unregister(&self, call_id: &str) {
        lock(&self.shared.calls).remove(call_id);
    }

    pub async fn send(&self, msg: &SipMessage) -> Result<(), CallError> {
        self.out
            .send(msg.to_bytes())
            .await
            .map_err(|e| CallError::LinkClosed(self.closed_reason().unwrap_or(e)))
    }

    /// Unparseable messages received so far.
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    pub fn closed_reason(&self) -> Option<String> {
        lock(&self.shared.closed).clone()
    }
}

/// Hands a message to its call. A request for no known call gets 481 (RFC 3261 §12.2.2),
/// except ACK, which is never answered.
async fn dispatch(msg: SipMessage, shared: &Shared, out: &Out) {
    let call_id = msg.call_id().unwrap_or_default().to_owned();
    let tx = lock(&shared.calls).get(&call_id).cloned();
    match tx {
        Some(tx) => {
            let _ = tx.send(msg);
        }
        None if msg.is_request() && msg.method() != Some(&Method::Ack) => {
            if let Ok(resp) = msg.response(481, "Call/Transaction Does Not Exist", "") {
                let _ = out.send(resp.to_bytes()).await;
            }
        }
        None => tracing::debug!(%call_id, "response for no live call ignored"),
    }
}

async fn read_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>, out: Out) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on some systems; keep listening.
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        match parse_datagram(&buf[..n]) {
            Ok(msg) => dispatch(msg, &shared, &out).await,
            Err(e) => shared.malformed(from, &e),
        }
    }
}

/// Starts the reader and the writer of a TCP or TLS connection.
fn spawn_stream<S>(
    stream: S,
    remote: SocketAddr,
    shared: &Arc<Shared>,
) -> (Out, Vec<JoinHandle<()>>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let writer_shared = shared.clone();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = write.write_all(&bytes).await {
                writer_shared.close(format!("writing to the recorder failed: {e}"));
                return;
            }
        }
    });
    let out = Out::Stream(tx);
    let reader = tokio::spawn(read_stream(read, remote, shared.clone(), out.clone()));
    (out, vec![reader, writer])
}

async fn read_stream(
    mut read: impl AsyncRead + Unpin,
    remote: SocketAddr,
    shared: Arc<Shared>,
    out: Out,
) {
    let mut framer = StreamFramer::new(Limits::default());
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => {
                shared.close("the recorder closed the connection".into());
                return;
            }
            Ok(n) => n,
            Err(e) => {
                shared.close(format!("reading from the recorder failed: {e}"));
                return;
            }
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_message() {
                Ok(Some(msg)) => dispatch(msg, &shared, &out).await,
                Ok(None) => break,
                Err(e) => {
                    shared.malformed(remote, &e);
                    shared.close(format!("unparseable SIP message from the recorder: {e}"));
                    return;
                }
            }
        }
    }
}
