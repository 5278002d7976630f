//! RTP port pairs from the profile's range: an even port for RTP, the next odd one for RTCP.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Mutex;

/// Both sockets of one media stream, bound and non-blocking.
#[derive(Debug)]
pub struct PortPair {
    pub port: u16,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

/// The free even ports of the range, handed out least recently used first so a port is not
/// reused while late packets of its previous call may still arrive.
#[derive(Debug)]
pub struct PortPool {
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    /// Every even port `p` of `start..=end` whose `p + 1` is in the range too.
    pub fn new(start: u16, end: u16) -> Self {
        let first = start + start % 2;
        let free = (first..end).step_by(2).collect();
        PortPool {
            free: Mutex::new(free),
        }
    }

    pub fn available(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u16>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the next free pair on `ip`. Ports another process holds are skipped (and kept in
    /// the pool for later). `None` when no pair can be bound.
    pub fn allocate(&self, ip: IpAddr) -> Option<PortPair> {
        let tries = self.available();
        for _ in 0..tries {
            let port = self.lock().pop_front()?;
            match bind_pair(ip, port) {
                Ok(pair) => return Some(pair),
                Err(e) => {
                    tracing::debug!(port, error = %e, "RTP port pair busy");
                    self.lock().push_back(port);
                }
            }
        }
        None
    }

    /// Returns a pair's port to the pool (its sockets must have been dropped).
    pub fn release(&self, port: u16) {
        self.lock().push_back(port);
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> std::io::Result<PortPair> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok(PortPair { port, rtp, rtcp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn pairs_are_even_and_busy_ports_are_skipped() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // Find a free even pair range by binding a probe.
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("probe");
        let base = probe.local_addr().expect("addr").port() & !1;
        drop(probe);
        let pool = PortPool::new(base, base + 5);
        assert_eq!(pool.available(), 3);
        let blocker = UdpSocket::bind((Ipv4Addr::LOCALHOST, base + 1));
        let a = pool.allocate(lo).expect("a pair");
        assert_eq!(a.port % 2, 0);
        if blocker.is_ok() {
            assert_ne!(a.port, base, "a pair whose RTCP port is taken is skipped");
        }
        let b = pool.allocate(lo).expect("another pair");
        assert_ne!(a.port, b.port);
        let port = a.port;
        drop(a);
        pool.release(port);
        assert!(pool.available() >= 1);
    }
}
