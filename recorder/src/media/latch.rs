//! RTP latching: which source a stream's packets may come from.
//!
//! A stream's RTP port is reachable by anyone, and an SDP address often is not where the packets
//! come from (a source behind NAT). So a stream latches to one source (address, port, SSRC):
//! packets from anywhere else are foreign and never reach the recording. Candidates rank:
//!
//! 1. a packet from the address the SDP names (`c=`; any port, since many sources do not send
//!    from the port they receive on): final, nothing replaces it;
//! 2. after a re-offer, the source latched before it (it usually keeps sending);
//! 3. any other packet: the first one latches, for sources whose SDP address is private,
//!    unspecified or simply not where their packets come from (NAT).
//!
//! A higher-ranked source replaces a lower-ranked latch, so a foreign packet that races the
//! genuine source to the port loses as soon as a packet from the SDP's address or (after a
//! re-offer) from the previous source arrives. The latched source may change its SSRC (an SBC
//! does on transfer); no other source can. Pure: no sockets, no clocks.

use std::net::{IpAddr, SocketAddr};

/// Why a source was latched, in rank order (a higher one replaces a lower one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Basis {
    /// The first packet after the answer: nothing better had arrived.
    FirstPacket,
    /// The source latched before the re-offer.
    Previous,
    /// The address the SDP names.
    Sdp,
}

/// The source a stream is latched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub address: SocketAddr,
    pub ssrc: u32,
    pub basis: Basis,
}

/// What to do with one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched source.
    Accept,
    /// The packet's source is latched now; `replaced` is the source it displaced, if any.
    Latched { replaced: Option<Source> },
    /// The latched source changed its SSRC.
    SsrcChanged { from: u32 },
    /// Not from the latched source: dropped.
    Foreign { latched: Source },
}

/// One stream's latch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latch {
    /// The address the SDP names, when it is a literal, specified address.
    sdp: Option<IpAddr>,
    current: Option<Source>,
    /// The source latched before the last re-offer.
    previous: Option<SocketAddr>,
}

impl Latch {
    /// A new stream's latch; `sdp` is the offer's connection address for it.
    pub fn new(sdp: Option<IpAddr>) -> Latch {
        Latch {
            sdp: sdp.filter(|ip| !ip.is_unspecified()),
            current: None,
            previous: None,
        }
    }

    /// A re-offer: the stream latches again, preferring the new SDP address, then the source
    /// latched so far.
    pub fn relatch(&mut self, sdp: Option<IpAddr>) {
        let previous = self.current.map(|s| s.address).or(self.previous);
        *self = Latch {
            previous,
            ..Latch::new(sdp)
        };
    }

    pub fn source(&self) -> Option<Source> {
        self.current
    }

    /// Whether a datagram that is not RTP (RTCP, garbage) from `from` may reach the timeline,
    /// which counts and drops it: only from the latched source, or before any latch.
    pub fn admits(&self, from: SocketAddr) -> bool {
        self.current.is_none_or(|s| s.address == from)
    }

    fn basis(&self, from: SocketAddr) -> Basis {
        if self.sdp == Some(from.ip()) {
            Basis::Sdp
        } else if self.previous == Some(from) {
            Basis::Previous
        } else {
            Basis::FirstPacket
        }
    }

    /// The verdict on an RTP packet with `ssrc` from `from`, without changing the latch.
    pub fn verdict(&self, from: SocketAddr, ssrc: u32) -> Verdict {
        match self.current {
            None => Verdict::Latched { replaced: None },
            Some(s) if s.address == from && s.ssrc == ssrc => Verdict::Accept,
            Some(s) if s.address == from => Verdict::SsrcChanged { from: s.ssrc },
            Some(s) if self.basis(from) > s.basis => Verdict::Latched { replaced: Some(s) },
            Some(latched) => Verdict::Foreign { latched },
        }
    }

    /// Judges an RTP packet and latches accordingly. Only a packet the stream can record
    /// (RTP with one of its payload types) should be offered: anything may latch.
    pub fn check(&mut self, from: SocketAddr, ssrc: u32) -> Verdict {
        let verdict = self.verdict(from, ssrc);
        match verdict {
            Verdict::Latched { .. } => {
                self.current = Some(Source {
                    address: from,
                    ssrc,
                    basis: self.basis(from),
                });
            }
            Verdict::SsrcChanged { .. } => {
                if let Some(s) = self.current.as_mut() {
                    s.ssrc = ssrc;
                }
            }
            Verdict::Accept | Verdict::Foreign { .. } => {}
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn the_first_packet_latches_and_every_other_source_is_foreign() {
        let mut l = Latch::new(None);
        assert!(l.admits(at("198.51.100.7:4000")));
        assert_eq!(
            l.check(at("198.51.100.7:4000"), 1),
            Verdict::Latched { replaced: None }
        );
        assert_eq!(l.check(at("198.51.100.7:4000"), 1), Verdict::Accept);
        let latched = l.source().expect("latched");
        assert_eq!(latched.basis, Basis::FirstPacket);
        // Another SSRC, the same SSRC from another port, or another host: all foreign.
        for (from, ssrc) in [
            ("203.0.113.9:4000", 2),
            ("203.0.113.9:4000", 1),
            ("198.51.100.7:4002", 1),
        ] {
            assert_eq!(l.check(at(from), ssrc), Verdict::Foreign { latched });
            assert!(!l.admits(at(from)));
        }
        assert_eq!(l.source(), Some(latched));
    }

    #[test]
    fn only_the_latched_source_may_change_its_ssrc() {
        let mut l = Latch::new(None);
        l.check(at("198.51.100.7:4000"), 1);
        assert_eq!(
            l.check(at("198.51.100.7:4000"), 7),
            Verdict::SsrcChanged { from: 1 }
        );
        assert_eq!(l.check(at("198.51.100.7:4000"), 7), Verdict::Accept);
        assert!(matches!(
            l.check(at("203.0.113.9:4000"), 8),
            Verdict::Foreign { .. }
        ));
        assert_eq!(l.source().map(|s| s.ssrc), Some(7));
    }

    #[test]
    fn the_sdp_address_wins_over_a_packet_that_raced_it_and_is_final() {
        let mut l = Latch::new(ip("192.0.2.10"));
        // A forged packet gets there first...
        l.check(at("203.0.113.9:5000"), 66);
        let forged = l.source().expect("latched");
        // ...and loses to the SDP's address, from whatever port it sends.
        assert_eq!(
            l.check(at("192.0.2.10:31000"), 1),
            Verdict::Latched {
                replaced: Some(forged)
            }
        );
        assert_eq!(l.source().map(|s| s.basis), Some(Basis::Sdp));
        // Nothing replaces it: not the racer, not another port of the same host.
        for (from, ssrc) in [("203.0.113.9:5000", 66), ("192.0.2.10:31002", 1)] {
            assert!(matches!(l.check(at(from), ssrc), Verdict::Foreign { .. }));
        }
    }

    #[test]
    fn a_source_behind_nat_latches_when_its_sdp_address_never_sends() {
        // The SDP names a private address; the packets come from the NAT's public one.
        let mut l = Latch::new(ip("10.1.2.3"));
        assert_eq!(
            l.check(at("198.51.100.7:40000"), 1),
            Verdict::Latched { replaced: None }
        );
        assert_eq!(l.check(at("198.51.100.7:40000"), 1), Verdict::Accept);
        assert!(matches!(
            l.check(at("203.0.113.9:40000"), 1),
            Verdict::Foreign { .. }
        ));
    }

    #[test]
    fn an_unspecified_sdp_address_names_no_source() {
        let mut l = Latch::new(ip("0.0.0.0"));
        l.check(at("198.51.100.7:4000"), 1);
        assert_eq!(l.source().map(|s| s.basis), Some(Basis::FirstPacket));
    }

    #[test]
    fn a_reoffer_moving_the_media_relatches_to_the_new_address() {
        let mut l = Latch::new(ip("192.0.2.10"));
        l.check(at("192.0.2.10:4000"), 1);
        l.relatch(ip("192.0.2.20"));
        // Trailing packets of the old source are taken until the new address sends...
        assert_eq!(
            l.check(at("192.0.2.10:4000"), 1),
            Verdict::Latched { replaced: None }
        );
        assert_eq!(l.source().map(|s| s.basis), Some(Basis::Previous));
        assert!(matches!(
            l.check(at("192.0.2.20:6000"), 2),
            Verdict::Latched { replaced: Some(_) }
        ));
        // ...and then the old one is foreign.
        assert!(matches!(
            l.check(at("192.0.2.10:4000"), 1),
            Verdict::Foreign { .. }
        ));
    }

    #[test]
    fn after_a_reoffer_the_previous_source_beats_a_racing_stranger() {
        // Behind NAT: the SDP address never matches.
        let mut l = Latch::new(ip("10.1.2.3"));
        l.check(at("198.51.100.7:40000"), 1);
        l.relatch(ip("10.1.2.3"));
        l.check(at("203.0.113.9:40000"), 66);
        assert!(matches!(
            l.check(at("198.51.100.7:40000"), 1),
            Verdict::Latched { replaced: Some(_) }
        ));
        assert!(matches!(
            l.check(at("203.0.113.9:40000"), 66),
            Verdict::Foreign { .. }
        ));
    }

    #[test]
    fn a_nat_source_that_moved_on_a_reoffer_still_latches() {
        let mut l = Latch::new(ip("10.1.2.3"));
        l.check(at("198.51.100.7:40000"), 1);
        l.relatch(ip("10.1.2.4"));
        // The old source is silent; the new one comes from yet another NAT mapping.
        assert_eq!(
            l.check(at("198.51.100.8:41000"), 2),
            Verdict::Latched { replaced: None }
        );
        assert_eq!(l.check(at("198.51.100.8:41000"), 2), Verdict::Accept);
    }
}
