//! The portal's HTTP edge: who the client is (`X-Forwarded-For` is believed only from trusted
//! proxies), the limits every request meets before a handler runs (header sizes, body time),
//! the security headers every response carries, and the server loop with header and idle
//! timeouts.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::AppState;
use crate::error::{ApiError, Code};

/// Largest value of one request header, in bytes.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Largest sum of a request's header names and values, in bytes.
pub const MAX_HEADERS_TOTAL: usize = 32 * 1024;
/// `X-Forwarded-For` hops looked at, from the nearest proxy back.
const MAX_FORWARDED_HOPS: usize = 16;

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7` = `/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(net) ^ u32::from(ip)), 32, self.prefix) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(net) ^ u128::from(ip), 128, self.prefix) == 0
            }
            _ => false,
        }
    }
}

/// The bits of `x` (of `width` bits) covered by a prefix of `prefix` bits.
fn mask(x: u128, width: u8, prefix: u8) -> u128 {
    let host = u32::from(width.saturating_sub(prefix));
    x.checked_shr(host).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR block");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(width);
        if prefix > width {
            return Err(format!("{s:?}: the prefix is longer than {width} bits"));
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The client of a request as the portal believes it: the socket peer, or the address a
/// trusted proxy forwarded. `None` only for requests that came through no socket (in-process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// The key a source is throttled and its failures aggregated by: an IPv6 client by its
    /// /64, which one host usually owns whole (so rotating addresses inside it gains nothing).
    pub fn source(&self) -> String {
        match self.0 {
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(ip) => ip.to_string(),
            None => "unknown".to_owned(),
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or_default())
    }
}

/// The client behind `peer`: the peer itself unless it is a trusted proxy; then the nearest
/// `X-Forwarded-For` hop that is not a trusted proxy (walking back from the right, where each
/// proxy appends what it saw; what a client wrote further left is never believed).
pub fn resolve<'a>(
    peer: Option<IpAddr>,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
        // Garbage from a client stops the walk at the last hop a trusted proxy vouched for.
        let Some(ip) = parse_hop(hop.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The first problem with a request's headers: one too large, or all of them together.
pub fn header_problem(headers: &axum::http::HeaderMap) -> Option<String> {
    let mut total = 0usize;
    for (name, value) in headers {
        if value.len() > MAX_HEADER_VALUE {
            return Some(format!(
                "the {name} header has {} bytes; at most {MAX_HEADER_VALUE} are accepted",
                value.len()
            ));
        }
        total += name.as_str().len() + value.len();
    }
    (total > MAX_HEADERS_TOTAL).then(|| {
        format!("the request headers have {total} bytes; at most {MAX_HEADERS_TOTAL} are accepted")
    })
}

/// Headers every response carries unless its handler set its own.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::REFERRER_POLICY, "no-referrer"),
    // API answers, errors included, hold personal data: never cached.
    (header::CACHE_CONTROL, "no-store"),
];

/// The edge middleware: resolves the client, refuses oversized headers, bounds the time the
/// body may take, and adds the security headers to every response (errors included).
pub async fn edge(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = ClientAddr(resolve(peer, forwarded, &state.config.trusted_proxies));
    let mut resp = if let Some(problem) = header_problem(req.headers()) {
        ApiError::new(Code::HeadersTooLarge, problem).into_response()
    } else {
        req.extensions_mut().insert(client);
        let timeout = state.config.body_timeout;
        let req = req.map(|body| timed_body(body, timeout));
        next.run(req).await
    };
    let h = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

/// The request body, failing once `timeout` has passed before its end arrived (a client
/// trickling a body cannot hold a handler, or the hashing queue, forever).
fn timed_body(body: Body, timeout: Duration) -> Body {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = body.into_data_stream();
    Body::from_stream(futures::stream::unfold(
        Some(stream),
        move |stream| async move {
            let mut stream = stream?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(axum::Error::new(format!(
                        "the request body did not arrive within {} s",
                        timeout.as_secs()
                    ))),
                    None,
                )),
            }
        },
    ))
}

/// Server timeouts (from [`crate::PortalConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Headers must arrive within it; a kept-alive connection idle this long is closed.
    pub header_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: crate::PortalConfig::default().header_timeout,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests.
/// Each request carries its socket peer (`ConnectInfo`) for [`edge`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    // Every connection holds a sender; draining ends when the last one is dropped.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, "accepting a portal connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let mut close = close_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "portal connection ended");
                    }
                }
                () = async { drop(close.wait_for(|c| *c).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    let _ = close_tx.send(true);
    drop(open_tx);
    let _ = open_rx.recv().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().expect("net")).collect()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let n: IpNet = "10.1.0.0/16".parse().expect("net");
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.9")), "v4-mapped v6");
        let one: IpNet = "192.0.2.7".parse().expect("net");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: IpNet = "fd00::/8".parse().expect("net");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("::/129".parse::<IpNet>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = |v: &'static str| std::iter::once(v);
        // A client that is not a proxy: its header is ignored.
        assert_eq!(
            resolve(Some(ip("203.0.113.5")), xff("1.2.3.4"), &trusted),
            Some(ip("203.0.113.5"))
        );
        // Through the proxy: the hop the proxy appended, not what the client wrote before it.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), xff("1.2.3.4, 198.51.100.9"), &trusted),
            Some(ip("198.51.100.9"))
        );
        // Two trusted proxies in a row are skipped.
        assert_eq!(
            resolve(
                Some(ip("10.0.0.2")),
                xff("198.51.100.9, 10.0.0.3"),
                &trusted
            ),
            Some(ip("198.51.100.9"))
        );
        // Garbage stops at the last address a proxy vouched for.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), xff("evil, 10.0.0.3"), &trusted),
            Some(ip("10.0.0.3"))
        );
        // A proxy that forwards nothing is the client.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), std::iter::empty(), &trusted),
            Some(ip("10.0.0.2"))
        );
        // No proxy trusted: the header never counts.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), xff("1.2.3.4"), &[]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(resolve(None, xff("1.2.3.4"), &trusted), None);
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        let a = ClientAddr(Some(ip("2001:db8:1:2:aaaa::1")));
        let b = ClientAddr(Some(ip("2001:db8:1:2:bbbb::9")));
        assert_eq!(a.source(), b.source());
        assert_eq!(a.source(), "2001:db8:1:2::/64");
        assert_eq!(ClientAddr(Some(ip("192.0.2.1"))).source(), "192.0.2.1");
    }
}
