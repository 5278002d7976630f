//! SRTP and SRTCP (RFC 3711; AES-GCM: RFC 7714) keyed by SDES (RFC 4568): the `a=crypto`
//! attributes of offers and answers, master keys that never print, and the per-stream
//! protection of what a source sends (the recorder's side) or sends itself (`callvault call`).
//!
//! The ciphers and replay windows are the `webrtc-srtp` crate's. Its contexts take any SSRC and
//! create state for it before authenticating, and it slices packets by lengths it trusts, so
//! every datagram is checked here first, and a context is kept for an SSRC only once a packet
//! under it authenticated: a stranger cannot grow a stream's state.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use thiserror::Error;
use webrtc_rtp::header::Header;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;
use webrtc_util::marshal::{MarshalSize as _, Unmarshal as _};
use zeroize::Zeroizing;

/// The crypto suites the recorder accepts, in the order it offers them (`callvault call`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl Suite {
    pub const ALL: [Suite; 4] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
    ];

    /// The name in `a=crypto` (RFC 4568 §6.2, RFC 7714 §14.2).
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Suite names are case-sensitive tokens (RFC 4568 §9.2).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn key_len(self) -> usize {
        match self {
            Suite::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    pub fn salt_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 14,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 12,
        }
    }

    /// The authentication tag an SRTP packet carries.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 16,
        }
    }

    /// The authentication tag an SRTCP packet carries (after its 4-byte index).
    fn rtcp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 10,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 16,
        }
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            Suite::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an `a=crypto` attribute cannot be used. The texts go into 488 reason phrases and logs:
/// none carries key material, and what they quote of the offer is a checked token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    #[error("malformed a=crypto ({0})")]
    Malformed(&'static str),
    #[error("crypto suite {0} is not supported")]
    UnknownSuite(String),
    #[error("{suite} needs a {need}-byte key and salt, the offer has {got} bytes")]
    KeyLength {
        suite: Suite,
        need: usize,
        got: usize,
    },
    #[error("key method {0} is not supported (only inline keys, RFC 4568 SDES)")]
    KeyMethod(String),
    #[error("MKI is not supported (one master key per stream)")]
    Mki,
    #[error("more than one master key per stream is not supported")]
    MultipleKeys,
    #[error("invalid key lifetime")]
    Lifetime,
    #[error("session parameter {0} is not supported")]
    SessionParameter(String),
}

/// An offer's token quoted in an error: visible ASCII only and bounded, so it is safe in a
/// SIP reason phrase.
fn quoted(token: &str) -> String {
    let clean: String = token
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"')
        .take(48)
        .collect();
    if clean.is_empty() {
        "?".to_owned()
    } else {
        clean
    }
}

/// RFC 4568 keys are base64; sources differ on the padding of lengths it needs it for.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A master key and salt of one suite. Wiped when dropped; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    suite: Suite,
    /// Key, then salt.
    material: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .field("material", &"<redacted>")
            .finish()
    }
}

/// The operating system could not supply random bytes for a key.
#[derive(Debug, Clone, Error)]
#[error("no random bytes for an SRTP key: {0}")]
pub struct KeyGenError(String);

impl MasterKey {
    /// A fresh random key and salt.
    pub fn generate(suite: Suite) -> Result<MasterKey, KeyGenError> {
        let mut material = Zeroizing::new(vec![0u8; suite.key_len() + suite.salt_len()]);
        getrandom::fill(&mut material).map_err(|e| KeyGenError(e.to_string()))?;
        Ok(MasterKey { suite, material })
    }

    /// Key and salt as one byte string (the inline key's form).
    pub fn from_bytes(suite: Suite, material: &[u8]) -> Result<MasterKey, CryptoError> {
        let need = suite.key_len() + suite.salt_len();
        if material.len() != need {
            return Err(CryptoError::KeyLength {
                suite,
                need,
                got: material.len(),
            });
        }
        Ok(MasterKey {
            suite,
            material: Zeroizing::new(material.to_vec()),
        })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    fn split(&self) -> (&[u8], &[u8]) {
        self.material.split_at(self.suite.key_len())
    }

    /// The base64 of key and salt, as `inline:` carries it.
    pub fn inline(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(&*self.material))
    }

    fn context(&self) -> Context {
        let (key, salt) = self.split();
        // Key and salt lengths are the suite's (checked when the key was made), the only
        // thing the constructor refuses.
        Context::new(
            key,
            salt,
            self.suite.profile(),
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        )
        .unwrap_or_else(|e| unreachable!("SRTP context for a checked key: {e}"))
    }
}

/// One usable `a=crypto` attribute: `<tag> <suite> inline:<key||salt>[|lifetime]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub key: MasterKey,
}

impl Crypto {
    /// Parses an `a=crypto` value (RFC 4568 §9.1). Lifetimes are checked and accepted (the
    /// source re-keys by re-offer); MKIs, several keys, and the session parameters that would
    /// weaken the media (`UNENCRYPTED_*`, `UNAUTHENTICATED_SRTP`, a key derivation rate, FEC
    /// keys) are refused, as are unknown ones unless marked optional with `-` (§6.3.7).
    pub fn parse(value: &str) -> Result<Crypto, CryptoError> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next().ok_or(CryptoError::Malformed("empty"))?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Malformed("the tag must be 1 to 9 digits"));
        }
        let tag: u32 = tag
            .parse()
            .map_err(|_| CryptoError::Malformed("the tag must be 1 to 9 digits"))?;
        let suite_name = fields
            .next()
            .ok_or(CryptoError::Malformed("no crypto suite"))?;
        let suite = Suite::from_name(suite_name)
            .ok_or_else(|| CryptoError::UnknownSuite(quoted(suite_name)))?;
        let key_params = fields.next().ok_or(CryptoError::Malformed("no key"))?;
        let key = parse_key_params(suite, key_params)?;
        for param in fields {
            check_session_parameter(param)?;
        }
        Ok(Crypto { tag, key })
    }

    /// The value of the `a=crypto` attribute that states this key. Holds the key: only for
    /// an SDP body.
    pub fn attribute(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite.name(),
            &*self.key.inline()
        ))
    }
}

fn parse_key_params(suite: Suite, params: &str) -> Result<MasterKey, CryptoError> {
    if params.contains(';') {
        return Err(CryptoError::MultipleKeys);
    }
    let (method, info) = params
        .split_once(':')
        .ok_or(CryptoError::Malformed("the key must be <method>:<key>"))?;
    if !method.eq_ignore_ascii_case("inline") {
        return Err(CryptoError::KeyMethod(quoted(method)));
    }
    let mut parts = info.split('|');
    let encoded = parts.next().unwrap_or_default();
    let material = Zeroizing::new(
        BASE64
            .decode(encoded)
            .map_err(|_| CryptoError::Malformed("the key is not base64"))?,
    );
    let key = MasterKey::from_bytes(suite, &material)?;
    let mut lifetime_seen = false;
    for part in parts {
        if part.contains(':') {
            return Err(CryptoError::Mki);
        }
        if lifetime_seen {
            return Err(CryptoError::Malformed("more than one lifetime"));
        }
        lifetime_seen = true;
        check_lifetime(part)?;
    }
    Ok(key)
}

/// `2^n` or a decimal count of packets, at most 2^48 (RFC 3711 §9.2); never zero.
fn check_lifetime(s: &str) -> Result<(), CryptoError> {
    let packets: u64 = match s.strip_prefix("2^") {
        Some(exp) => {
            let exp: u32 = digits(exp).ok_or(CryptoError::Lifetime)?;
            if exp > 48 {
                return Err(CryptoError::Lifetime);
            }
            1 << exp
        }
        None => digits(s).ok_or(CryptoError::Lifetime)?,
    };
    if packets == 0 || packets > 1 << 48 {
        return Err(CryptoError::Lifetime);
    }
    Ok(())
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn check_session_parameter(param: &str) -> Result<(), CryptoError> {
    let (name, value) = param.split_once('=').unwrap_or((param, ""));
    match name {
        // A window-size hint: the recorder's window is its own.
        "WSH" if digits::<u32>(value).is_some() => Ok(()),
        // A key derivation rate of 0 is the default (no re-derivation).
        "KDR" if value == "0" => Ok(()),
        // The order of FEC and SRTP is moot without FEC.
        "FEC_ORDER" => Ok(()),
        _ if name.starts_with('-') => Ok(()),
        _ => Err(CryptoError::SessionParameter(quoted(name))),
    }
}

/// Packets an SRTP replay window covers (RFC 3711 §3.3.2 asks at least 64; libsrtp keeps 128).
const REPLAY_WINDOW: usize = 128;

/// SSRCs with a context per stream. A source has one, or a few over transfers; past this the
/// least recently used one is forgotten (its replay window with it).
const MAX_SSRCS: usize = 8;

/// Why a datagram was dropped before the recording saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Authentic, but already received (or older than the replay window).
    Replayed,
    /// Failed authentication: forged, corrupted, under another key, or not SRTP at all.
    Unauthenticated,
}

/// A datagram that authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unprotected {
    /// The RTP packet in the clear.
    Rtp(Vec<u8>),
    /// SRTCP: authenticated, and not needed for the recording.
    Rtcp,
}

/// The receiving side of one stream.
pub struct Inbound {
    key: MasterKey,
    /// (SSRC, its context, when last used).
    contexts: Vec<(u32, Context, u64)>,
    clock: u64,
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("suite", &self.key.suite)
            .field("ssrcs", &self.contexts.len())
            .finish_non_exhaustive()
    }
}

impl Inbound {
    pub fn new(key: MasterKey) -> Inbound {
        Inbound {
            key,
            contexts: Vec::new(),
            clock: 0,
        }
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// Authenticates and decrypts one datagram from the stream's port: SRTP, or SRTCP
    /// multiplexed on it (RFC 5761), told apart by the RTCP packet types.
    pub fn unprotect(&mut self, datagram: &[u8]) -> Result<Unprotected, Rejected> {
        if datagram.len() >= 2 && (192..=223).contains(&datagram[1]) {
            return self.unprotect_rtcp(datagram).map(|()| Unprotected::Rtcp);
        }
        let suite = self.key.suite;
        let header = srtp_header(datagram, suite).ok_or(Rejected::Unauthenticated)?;
        let ssrc = header.ssrc;
        self.with_context(ssrc, |ctx| ctx.decrypt_rtp_with_header(datagram, &header))
            .map(|b| Unprotected::Rtp(Vec::from(b)))
    }

    /// Authenticates an SRTCP packet (from the RTCP port, or multiplexed).
    pub fn unprotect_rtcp(&mut self, datagram: &[u8]) -> Result<(), Rejected> {
        // Header, sender SSRC, E flag and index, tag. The crate reads the index at the end
        // before checking the length, and returns a packet whose E flag is clear without
        // authenticating it: neither may reach it (no UNENCRYPTED_SRTCP is negotiated).
        let min = 8 + 4 + self.key.suite.rtcp_tag_len();
        if datagram.len() < min || datagram[0] >> 6 != 2 {
            return Err(Rejected::Unauthenticated);
        }
        let index_at = match self.key.suite {
            // AEAD: the tag is inside the encrypted part, the index at the very end (RFC 7714 §9.1).
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => datagram.len() - 4,
            _ => datagram.len() - self.key.suite.rtcp_tag_len() - 4,
        };
        if datagram[index_at] & 0x80 == 0 {
            return Err(Rejected::Unauthenticated);
        }
        let ssrc = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        self.with_context(ssrc, |ctx| ctx.decrypt_rtcp(datagram))
            .map(|_| ())
    }

    /// Runs `op` with the SSRC's context; an SSRC without one gets a fresh context that is
    /// kept only if `op` authenticates under it.
    fn with_context<T>(
        &mut self,
        ssrc: u32,
        op: impl FnOnce(&mut Context) -> Result<T, webrtc_srtp::Error>,
    ) -> Result<T, Rejected> {
        self.clock += 1;
        let now = self.clock;
        if let Some((_, ctx, used)) = self.contexts.iter_mut().find(|(s, ..)| *s == ssrc) {
            let result = op(ctx).map_err(rejected);
            if result.is_ok() {
                *used = now;
            }
            return result;
        }
        let mut ctx = self.key.context();
        let out = op(&mut ctx).map_err(rejected)?;
        if self.contexts.len() >= MAX_SSRCS
            && let Some(oldest) = (0..self.contexts.len()).min_by_key(|&i| self.contexts[i].2)
        {
            self.contexts.swap_remove(oldest);
        }
        self.contexts.push((ssrc, ctx, now));
        Ok(out)
    }
}

fn rejected(e: webrtc_srtp::Error) -> Rejected {
    match e {
        webrtc_srtp::Error::SrtpSsrcDuplicated(..)
        | webrtc_srtp::Error::SrtcpSsrcDuplicated(..) => Rejected::Replayed,
        _ => Rejected::Unauthenticated,
    }
}

/// The RTP header of an SRTP packet, if the packet is one: version 2, a header whose parsed
/// length is its length on the wire (the crate slices by the former), and room for the tag.
fn srtp_header(datagram: &[u8], suite: Suite) -> Option<Header> {
    let wire = wire_header_len(datagram)?;
    let mut buf = datagram;
    let header = Header::unmarshal(&mut buf).ok()?;
    (header.marshal_size() == wire && datagram.len() >= wire + suite.rtp_tag_len())
        .then_some(header)
}

/// The RTP header's length as the packet states it (RFC 3550 §5.1, §5.3.1), if the header is
/// well formed: the `rtp` crate reads RFC 8285 extension elements without bounds checks, so an
/// element that runs past its block is refused here rather than panicking there.
fn wire_header_len(p: &[u8]) -> Option<usize> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(len..len + 4)?;
        let profile = u16::from_be_bytes([ext[0], ext[1]]);
        let start = len + 4;
        len = start + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        if !extension_elements_fit(profile, p.get(start..len)?) {
            return None;
        }
    }
    (len <= p.len()).then_some(len)
}

/// Whether every RFC 8285 element of a one-byte (`0xBEDE`) or two-byte (`0x1000`) extension block
/// lies inside the block; other profiles are one opaque block (RFC 3550 §5.3.1).
fn extension_elements_fit(profile: u16, block: &[u8]) -> bool {
    const ONE_BYTE: u16 = 0xBEDE;
    const TWO_BYTE: u16 = 0x1000;
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        at += 1;
        if b == 0 {
            continue; // padding
        }
        let len = match profile {
            ONE_BYTE if b >> 4 == 15 => return true, // reserved id: parsing stops here
            ONE_BYTE => usize::from(b & 0x0f) + 1,
            TWO_BYTE => {
                let Some(&len) = block.get(at) else {
                    return false;
                };
                at += 1;
                usize::from(len)
            }
            _ => return true,
        };
        at += len;
        if at > block.len() {
            return false;
        }
    }
    true
}

/// Why a packet could not be protected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot protect the packet: {0}")]
pub struct ProtectError(String);

/// The sending side of one stream (`callvault call`, and the tests' sources).
pub struct Outbound {
    ctx: Context,
    suite: Suite,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(key: &MasterKey) -> Outbound {
        Outbound {
            ctx: key.context(),
            suite: key.suite,
        }
    }

    /// Encrypts and authenticates an RTP packet.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, ProtectError> {
        let Some(wire) = wire_header_len(packet) else {
            return Err(ProtectError("not an RTP packet".to_owned()));
        };
        let mut buf = packet;
        let header = Header::unmarshal(&mut buf).map_err(|e| ProtectError(e.to_string()))?;
        if header.marshal_size() != wire {
            return Err(ProtectError("unsupported RTP header extension".to_owned()));
        }
        self.ctx
            .encrypt_rtp_with_header(packet, &header)
            .map(Vec::from)
            .map_err(|e| ProtectError(e.to_string()))
    }

    /// Encrypts and authenticates an RTCP compound packet.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, ProtectError> {
        if packet.len() < 8 || packet[0] >> 6 != 2 {
            return Err(ProtectError("not an RTCP packet".to_owned()));
        }
        self.ctx
            .encrypt_rtcp(packet)
            .map(Vec::from)
            .map_err(|e| ProtectError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(suite: Suite, byte: u8) -> MasterKey {
        MasterKey::from_bytes(suite, &vec![byte; suite.key_len() + suite.salt_len()]).expect("key")
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn crypto_attributes_parse_with_lifetimes_and_optional_parameters() {
        let c = Crypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        )
        .expect("valid");
        assert_eq!(c.tag, 1);
        assert_eq!(c.key.suite(), Suite::AesCm128HmacSha1_80);
        // Unpadded and padded base64 of a 28-byte GCM key and salt.
        let k = BASE64.encode([7u8; 28]);
        for encoded in [k.trim_end_matches('=').to_owned(), k.clone()] {
            let c = Crypto::parse(&format!("7 AEAD_AES_128_GCM inline:{encoded} WSH=64 -FOO"))
                .expect("valid");
            assert_eq!(*c.key.material, [7u8; 28]);
        }
        let k = BASE64.encode([9u8; 44]);
        assert!(Crypto::parse(&format!("2 AEAD_AES_256_GCM inline:{k}|1048576 KDR=0")).is_ok());
    }

    #[test]
    fn unusable_crypto_attributes_say_why() {
        let k30 = BASE64.encode([1u8; 30]);
        let cases = [
            ("", "malformed"),
            ("x AES_CM_128_HMAC_SHA1_80 inline:{k30}", "tag"),
            ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{k30}", "tag"),
            (
                "1 F8_128_HMAC_SHA1_80 inline:{k30}",
                "F8_128_HMAC_SHA1_80 is not supported",
            ),
            ("1 AES_CM_128_HMAC_SHA1_80", "no key"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!", "base64"),
            (
                "1 AEAD_AES_256_GCM inline:{k30}",
                "needs a 44-byte key and salt, the offer has 30",
            ),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|2^20|1:4", "MKI"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|1:4", "MKI"),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:{k30};inline:{k30}",
                "more than one",
            ),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|2^49", "lifetime"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|0", "lifetime"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|2^x", "lifetime"),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:https://kms/k", "key method"),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:{k30} UNENCRYPTED_SRTP",
                "UNENCRYPTED_SRTP",
            ),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:{k30} KDR=24", "KDR"),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:{k30} NEW_THING",
                "NEW_THING",
            ),
        ];
        for (value, why) in cases {
            let value = value.replace("{k30}", &k30);
            let e = Crypto::parse(&value).expect_err(&value).to_string();
            assert!(e.contains(why), "{value}: {e}");
            assert!(!e.contains(&k30), "no key in {e}");
        }
    }

    #[test]
    fn keys_never_print() {
        let c = Crypto::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{}",
            BASE64.encode([0x5a; 30])
        ))
        .expect("valid");
        let shown = format!("{c:?} {:?}", Inbound::new(c.key.clone()));
        assert!(!shown.contains(&*c.key.inline()), "{shown}");
        assert!(!shown.contains("90, 90"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn generated_keys_are_fresh_and_round_trip() {
        for suite in Suite::ALL {
            let a = MasterKey::generate(suite).expect("random");
            let b = MasterKey::generate(suite).expect("random");
            assert_ne!(a, b);
            let c = Crypto { tag: 3, key: a };
            assert_eq!(Crypto::parse(&c.attribute()).expect("own attribute"), c);
        }
    }

    #[test]
    fn every_suite_round_trips_and_drops_replays_and_forgeries() {
        for suite in Suite::ALL {
            let k = key(suite, 0x42);
            let mut tx = Outbound::new(&k);
            let mut rx = Inbound::new(k.clone());
            let plain = rtp(1000, 0xabc, &[0x11; 160]);
            let sent = tx.protect_rtp(&plain).expect("protect");
            assert_eq!(sent.len(), plain.len() + suite.rtp_tag_len());
            assert_ne!(
                &sent[12..172],
                &plain[12..],
                "{suite}: the payload is encrypted"
            );
            assert_eq!(rx.unprotect(&sent), Ok(Unprotected::Rtp(plain.clone())));
            assert_eq!(rx.unprotect(&sent), Err(Rejected::Replayed), "{suite}");
            // A flipped payload bit, a wrong key, a truncated packet.
            let mut forged = tx
                .protect_rtp(&rtp(1001, 0xabc, &[0x11; 160]))
                .expect("protect");
            forged[20] ^= 1;
            assert_eq!(rx.unprotect(&forged), Err(Rejected::Unauthenticated));
            let mut other = Outbound::new(&key(suite, 0x43));
            let foreign = other
                .protect_rtp(&rtp(1002, 0xabc, &[0x22; 160]))
                .expect("protect");
            assert_eq!(rx.unprotect(&foreign), Err(Rejected::Unauthenticated));
            assert_eq!(rx.unprotect(&sent[..14]), Err(Rejected::Unauthenticated));
            // The forgery did not use up the genuine packet's sequence number.
            forged[20] ^= 1;
            assert!(matches!(rx.unprotect(&forged), Ok(Unprotected::Rtp(_))));
            // SRTCP: a receiver report, then its replay and a forgery.
            let rr = [0x80, 201, 0, 1, 0, 0, 0x0a, 0xbc];
            let srtcp = tx.protect_rtcp(&rr).expect("protect");
            assert_eq!(rx.unprotect(&srtcp), Ok(Unprotected::Rtcp));
            assert_eq!(rx.unprotect(&srtcp), Err(Rejected::Replayed));
            let mut bad = tx.protect_rtcp(&rr).expect("protect");
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert_eq!(rx.unprotect(&bad), Err(Rejected::Unauthenticated));
        }
    }

    #[test]
    fn extension_elements_past_their_block_are_refused_not_panicked_on() {
        // A two-byte-profile block of one word whose element claims 226 bytes, then 70 bytes of
        // payload: the `rtp` crate would read past the datagram (found by the srtp fuzz target).
        let mut p = vec![
            0x90, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9, 0x10, 0x00, 0, 1, 1, 226, 0, 0,
        ];
        p.extend_from_slice(&[0xab; 70]);
        let k = key(Suite::AesCm128HmacSha1_80, 4);
        assert!(Outbound::new(&k).protect_rtp(&p).is_err());
        assert_eq!(
            Inbound::new(k).unprotect(&p),
            Err(Rejected::Unauthenticated)
        );
        // One-byte profile: an element of 16 bytes in a one-word block.
        let mut one = p.clone();
        one[12..20].copy_from_slice(&[0xbe, 0xde, 0, 1, 0x1f, 0, 0, 0]);
        assert_eq!(wire_header_len(&one), None);
        // Well-formed elements of both profiles still protect.
        one[16] = 0x12; // id 1, three bytes
        assert_eq!(wire_header_len(&one), Some(20));
        let mut two = p.clone();
        two[17] = 2;
        assert_eq!(wire_header_len(&two), Some(20));
        assert!(
            Outbound::new(&key(Suite::AesCm128HmacSha1_80, 4))
                .protect_rtp(&two)
                .is_ok()
        );
    }

    #[test]
    fn strangers_ssrcs_leave_no_state_and_short_datagrams_never_panic() {
        let k = key(Suite::AesCm128HmacSha1_80, 1);
        let mut rx = Inbound::new(k);
        let mut other = Outbound::new(&key(Suite::AesCm128HmacSha1_80, 2));
        for ssrc in 0..1000 {
            let p = other.protect_rtp(&rtp(1, ssrc, &[0; 20])).expect("protect");
            assert_eq!(rx.unprotect(&p), Err(Rejected::Unauthenticated));
        }
        assert_eq!(rx.contexts.len(), 0);
        for suite in Suite::ALL {
            let mut rx = Inbound::new(key(suite, 3));
            for len in 0..64 {
                for first in [0x80u8, 0x90, 0x8f, 0xa0] {
                    for second in [0u8, 200, 201] {
                        let mut d = vec![0u8; len];
                        if len > 1 {
                            d[0] = first;
                            d[1] = second;
                        }
                        let _ = rx.unprotect(&d);
                    }
                }
            }
        }
    }
}
