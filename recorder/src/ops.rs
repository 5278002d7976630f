//! The operations endpoint on port 8080: `/healthz`, `/readyz`, `/metrics`, `/status`.
//! Four fixed GET routes need no web framework: a minimal HTTP/1.1 responder that closes each
//! connection after one answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::session::Recorder;

/// What the endpoints report on.
#[derive(Debug)]
pub struct OpsState {
    pub recorder: Arc<Recorder>,
    /// SIP listeners are bound.
    pub sip_ready: AtomicBool,
    pub draining: AtomicBool,
}

impl OpsState {
    pub fn new(recorder: Arc<Recorder>) -> Arc<Self> {
        Arc::new(OpsState {
            recorder,
            sip_ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    fn ready(&self) -> bool {
        self.sip_ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }
}

/// Binds the endpoint and serves it in the background.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<OpsState>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &state)).await;
            });
        }
    });
    Ok((local, task))
}

const MAX_REQUEST: usize = 8 * 1024;

async fn answer(mut stream: TcpStream, state: &OpsState) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = route(method, path, state);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

fn route(method: &str, path: &str, state: &OpsState) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    let draining = state.draining.load(Ordering::SeqCst);
    match path {
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if state.ready() => ("200 OK", TEXT, "ready\n".into()),
        "/readyz" if draining => ("503 Service Unavailable", TEXT, "draining\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "SIP not bound yet\n".into(),
        ),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            state
                .recorder
                .metrics()
                .render(state.recorder.settings().capacity, draining),
        ),
        "/status" => (
            "200 OK",
            "application/json",
            serde_json::to_string(&state.recorder.status(draining)).unwrap_or_default(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
