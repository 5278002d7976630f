//! RTP port pairs from the profile's range: an even port for RTP, the next odd one for RTCP.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;

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
    // The kernel stamps each datagram as it arrives: the sockets are read on a tick, and a
    // recorder that did not run for a while (a busy machine) must not take packets that
    // waited in its socket for packets the network delayed.
    setsockopt(&rtp, sockopt::ReceiveTimestampns, &true)?;
    Ok(PortPair { port, rtp, rtcp })
}

/// Room for one `SCM_TIMESTAMPNS` control message.
pub fn stamp_buffer() -> Vec<u8> {
    nix::cmsg_space!(TimeSpec)
}

/// Reads one datagram (non-blocking) with its source and the time the kernel received it, or
/// `now` when the socket gave no stamp.
pub fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
    control: &mut [u8],
) -> std::io::Result<(usize, Option<SocketAddr>, Instant)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let stamp = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::ScmTimestampns(ts) => {
                Some(SystemTime::UNIX_EPOCH + Duration::from(ts))
            }
            _ => None,
        })
    });
    let source = msg.address.and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::from(*v4))
            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
    });
    let len = msg.bytes;
    let now = Instant::now();
    Ok((
        len,
        source,
        stamp.map_or(now, |s| arrival(now, SystemTime::now(), s)),
    ))
}

/// The `Instant` of a wall-clock arrival stamp, given the same moment on both clocks. A stamp
/// from the future or from more than 10 s ago (the wall clock was stepped) counts as `now`.
pub fn arrival(now: Instant, wall_now: SystemTime, stamp: SystemTime) -> Instant {
    match wall_now.duration_since(stamp) {
        Ok(age) if age <= Duration::from_secs(10) => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_datagram_that_waited_in_the_socket_keeps_its_arrival_time() {
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("probe");
        let base = probe.local_addr().expect("addr").port() & !1;
        drop(probe);
        let pair = PortPool::new(base, base + 9)
            .allocate(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .expect("pair");
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
        let mut control = stamp_buffer();
        let mut buf = [0u8; 64];
        // The kernel turns arrival stamping on shortly after the first socket asks for it
        // (until then it stamps at the read): a few tries.
        let waited = (0..20).any(|_| {
            let sent = Instant::now();
            sender
                .send_to(b"rtp", (Ipv4Addr::LOCALHOST, pair.port))
                .expect("send");
            // The reader comes late, as a recorder on a busy machine does.
            std::thread::sleep(Duration::from_millis(100));
            let (len, from, at) =
                recv_stamped(&pair.rtp, &mut buf, &mut control).expect("datagram");
            let read_at = Instant::now();
            assert_eq!(&buf[..len], b"rtp");
            assert_eq!(from, sender.local_addr().ok());
            // Clock reading granularity aside, never before the send.
            assert!(at + Duration::from_millis(5) >= sent);
            read_at.duration_since(at) >= Duration::from_millis(95)
        });
        assert!(waited, "the arrival time is the read's, not the datagram's");
        // Without a datagram the socket says so instead of blocking.
        let e = recv_stamped(&pair.rtp, &mut buf, &mut control).expect_err("empty");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_stepped_wall_clock_does_not_move_arrival_times() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let ago = |ms| wall - Duration::from_millis(ms);
        assert_eq!(
            now.duration_since(arrival(now, wall, ago(300))),
            Duration::from_millis(300)
        );
        assert_eq!(arrival(now, wall, wall + Duration::from_secs(1)), now);
        assert_eq!(arrival(now, wall, ago(60_000)), now);
    }

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
