//! The operations endpoint on port 8080: `/healthz`, `/readyz`, `/metrics`, `/status`.
//! Four fixed GET routes need no web framework: a minimal HTTP/1.1 responder that closes each
//! connection after one answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alarms;
use crate::session::Recorder;

/// Whether the recorder can take calls now, and why not: `/readyz`, `/status` and the
/// metrics report it, and standalone reads it (through [`HealthCell`]) for its status and
/// alarms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Health {
    /// The SIP listener is being bound.
    Starting,
    Ready,
    /// The configured SIP address cannot be bound; retried with back-off. Calls to it get no
    /// answer, so the call source must fail over.
    #[serde(rename_all = "camelCase")]
    NotListening {
        address: String,
        error: String,
        attempts: u32,
    },
    /// Stopping: new calls get 503, live ones finish.
    Draining,
    /// Stopped on an error no retry can fix (the configuration it started with cannot work).
    Failed {
        error: String,
    },
}

impl Health {
    /// "Can record now": what `/readyz` answers.
    pub fn can_record(&self) -> bool {
        *self == Health::Ready
    }

    /// One line for `/readyz`, a status message or an alarm.
    pub fn reason(&self) -> String {
        match self {
            Health::Starting => "SIP not bound yet".into(),
            Health::Ready => "ready".into(),
            Health::NotListening {
                address,
                error,
                attempts,
            } => format!(
                "not listening for SIP on {address}: {error} ({attempts} attempts, retrying)"
            ),
            Health::Draining => "draining".into(),
            Health::Failed { error } => format!("recorder stopped: {error}"),
        }
    }
}

/// A recorder's [`Health`], shared with whoever reports on it.
#[derive(Debug, Clone)]
pub struct HealthCell(Arc<watch::Sender<Health>>);

impl Default for HealthCell {
    fn default() -> Self {
        HealthCell(Arc::new(watch::channel(Health::Starting).0))
    }
}

impl HealthCell {
    pub fn get(&self) -> Health {
        self.0.borrow().clone()
    }

    /// Changes as the health does.
    pub fn subscribe(&self) -> watch::Receiver<Health> {
        self.0.subscribe()
    }

    pub fn set(&self, health: Health) {
        self.0.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
    }
}

/// The last configuration change: applied, or refused and why.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    pub applied: u64,
    pub refused: u64,
    /// Why the last change was refused (cleared by the next applied one).
    pub last_refusal: Option<String>,
}

/// What the endpoints report on.
#[derive(Debug)]
pub struct OpsState {
    pub recorder: Arc<Recorder>,
    health: HealthCell,
    configuration: Mutex<ConfigurationStatus>,
    /// The recorder's own alarms as last observed, by type; `None` before the first look.
    alarms: Mutex<Option<BTreeMap<&'static str, alarms::Listed>>>,
}

impl OpsState {
    pub fn new(recorder: Arc<Recorder>, health: HealthCell) -> Arc<Self> {
        Arc::new(OpsState {
            recorder,
            health,
            configuration: Mutex::new(ConfigurationStatus::default()),
            alarms: Mutex::new(None),
        })
    }

    /// What alarm `kind` (one of [`alarms::KINDS`]) of `source` observes now.
    pub fn set_alarm(&self, kind: &'static str, source: &str, raised: &alarms::Raised) {
        let listed = alarms::Listed {
            alarm_type: kind.to_owned(),
            source: source.to_owned(),
            raised: raised
                .as_ref()
                .map(|(severity, message)| alarms::ListedRaise {
                    severity: *severity,
                    message: message.clone(),
                }),
        };
        self.alarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_default()
            .insert(kind, listed);
    }

    /// The recorder's alarms, raised or clear; `None` until its conditions were first
    /// looked at.
    pub fn alarms(&self) -> Option<Vec<alarms::Listed>> {
        let alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        Some(alarms.as_ref()?.values().cloned().collect())
    }

    pub fn health(&self) -> Health {
        self.health.get()
    }

    pub fn set_health(&self, health: Health) {
        self.health.set(health);
    }

    fn configuration(&self) -> MutexGuard<'_, ConfigurationStatus> {
        self.configuration.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn configuration_applied(&self) {
        let mut c = self.configuration();
        c.applied += 1;
        c.last_refusal = None;
    }

    pub fn configuration_refused(&self, reason: String) {
        let mut c = self.configuration();
        c.refused += 1;
        c.last_refusal = Some(reason);
    }
}

/// `GET /status`: the recorder's load and directory figures, its health, its last
/// configuration change and the alarms it raises about itself.
pub fn status_document(state: &OpsState) -> serde_json::Value {
    let health = state.health();
    let mut status =
        serde_json::to_value(state.recorder.status(health == Health::Draining)).unwrap_or_default();
    if let Some(fields) = status.as_object_mut() {
        fields.insert(
            "health".into(),
            serde_json::to_value(&health).unwrap_or_default(),
        );
        fields.insert(
            "configuration".into(),
            serde_json::to_value(&*state.configuration()).unwrap_or_default(),
        );
        if let Some(alarms) = state.alarms() {
            fields.insert(
                "alarms".into(),
                serde_json::to_value(alarms).unwrap_or_default(),
            );
        }
        let live = state.recorder.live();
        fields.insert(
            "storage".into(),
            serde_json::to_value(live.ctx.committer.storage().health()).unwrap_or_default(),
        );
        if let Ok(space) = live.ctx.spool.space() {
            let level = crate::spool::SpoolLevel::of(space, &live.settings.spool);
            fields.insert(
                "spool".into(),
                serde_json::json!({
                    "freeBytes": space.free_bytes,
                    "totalBytes": space.total_bytes,
                    "usedPercent": space.used_percent(),
                    "level": level,
                }),
            );
        }
    }
    status
}

/// A running recorder's [`status_document`], for a process that embeds recorders (standalone)
/// and reports on them as the operator does from each pod's `/status`.
#[derive(Debug, Clone, Default)]
pub struct StatusCell(Arc<Mutex<Option<Arc<OpsState>>>>);

impl StatusCell {
    /// `None` until the recorder has started.
    pub fn get(&self) -> Option<serde_json::Value> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        state.map(|s| status_document(&s))
    }

    pub fn set(&self, state: Arc<OpsState>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
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
    let health = state.health();
    let draining = health == Health::Draining;
    match path {
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if !health.can_record() => (
            "503 Service Unavailable",
            TEXT,
            format!("{}\n", health.reason()),
        ),
        // A spool too full for a new call cannot record now either.
        "/readyz" => match crate::session::spool_full(&state.recorder.live()) {
            Some(full) => ("503 Service Unavailable", TEXT, format!("{full}\n")),
            None => ("200 OK", TEXT, "ready\n".into()),
        },
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            state.recorder.metrics().render(
                state.recorder.settings().capacity,
                draining,
                !matches!(health, Health::NotListening { .. } | Health::Starting),
            ),
        ),
        "/status" => (
            "200 OK",
            "application/json",
            status_document(state).to_string(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
