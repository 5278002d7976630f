//! Key derivation, chunk sealing/opening and the row seal.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rsa::sha2::Sha256;
use zeroize::Zeroizing;

use super::*;
use crate::keys::{KeyRing, PrivateKey};

/// HKDF-SHA256 salt for every key derived from a file's data key.
const KDF_SALT: &[u8] = b"CallVault recording v1";
/// HKDF info of the AES-256-GCM payload key.
const KDF_INFO_PAYLOAD: &[u8] = b"payload";
/// HKDF info of the HMAC-SHA256 seal key.
const KDF_INFO_SEAL: &[u8] = b"seal";
/// Domain-separation prefix of the sealed message.
const SEAL_DOMAIN: &[u8; 8] = b"CVSEAL01";

/// The keys derived from a file's 32-byte data key.
pub(crate) struct DerivedKeys {
    pub(crate) cipher: Aes256Gcm,
    pub(crate) seal_key: Zeroizing<[u8; 32]>,
}

pub(crate) fn derive(data_key: &[u8; 32]) -> DerivedKeys {
    let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), data_key);
    let mut payload = Zeroizing::new([0u8; 32]);
    let mut seal_key = Zeroizing::new([0u8; 32]);
    // Expanding 32 bytes from HKDF-SHA256 cannot exceed its 255*32 byte limit.
    hk.expand(KDF_INFO_PAYLOAD, payload.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    hk.expand(KDF_INFO_SEAL, seal_key.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let cipher = Aes256Gcm::new(&(*payload).into());
    DerivedKeys { cipher, seal_key }
}

/// nonce = prefix (7) ‖ chunk index (u32 big-endian) ‖ 0x01 for the final chunk, else 0x00.
pub(crate) fn nonce(
    prefix: &[u8; NONCE_PREFIX_LEN],
    index: u64,
    is_final: bool,
) -> Result<Nonce<aes_gcm::aead::consts::U12>, FormatError> {
    let counter = u32::try_from(index).map_err(|_| FormatError::TooManyChunks)?;
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(is_final);
    Ok(n.into())
}

/// What a seal asserts about a recording; these are the values the database row stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealFacts {
    pub plaintext_len: u64,
    pub plaintext_sha256: [u8; 32],
    /// SHA-256 of the recording's metadata as the row stores it (computed by the caller;
    /// opaque to the format).
    pub metadata_sha256: [u8; 32],
    /// False for a recording recovered without its final chunk (`incomplete`).
    pub complete: bool,
}

/// HMAC-SHA256 under a key only the data key's holders can derive: the recorder (while
/// writing) and whoever holds the private key. Stored as the row's signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seal(pub [u8; 32]);

impl Seal {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits; `None` when malformed.
    pub fn from_hex(s: &str) -> Option<Seal> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(Seal(out))
    }
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seal({})", self.to_hex())
    }
}

impl std::fmt::Display for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn seal_mac(seal_key: &[u8; 32], header: &Header, facts: &SealFacts) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256>>::new_from_slice(seal_key).expect("HMAC-SHA256 accepts a key of any length");
    mac.update(SEAL_DOMAIN);
    mac.update(header.key_id().as_bytes());
    mac.update(header.digest());
    mac.update(&facts.plaintext_len.to_be_bytes());
    mac.update(&facts.plaintext_sha256);
    mac.update(&facts.metadata_sha256);
    mac.update(&[u8::from(facts.complete)]);
    mac
}

pub(crate) fn compute_seal(seal_key: &[u8; 32], header: &Header, facts: &SealFacts) -> Seal {
    Seal(
        seal_mac(seal_key, header, facts)
            .finalize()
            .into_bytes()
            .into(),
    )
}

/// An opened recording: its header and the keys unwrapped from it. Held by private-key
/// holders only. Debug output shows the header, never key material.
pub struct FileKey {
    header: Header,
    keys: DerivedKeys,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKey")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl FileKey {
    /// Unwraps the file's data key with `key`, which must be the key named in the header.
    pub fn open(header: Header, key: &PrivateKey) -> Result<FileKey, FormatError> {
        if key.id() != header.key_id() {
            return Err(FormatError::UnknownKeyId(header.key_id()));
        }
        let data_key = key
            .oaep_decrypt(header.wrapped_key())
            .ok_or(FormatError::KeyUnwrap(header.key_id()))?;
        let data_key: Zeroizing<[u8; 32]> = Zeroizing::new(
            data_key
                .as_slice()
                .try_into()
                .map_err(|_| FormatError::KeyUnwrap(header.key_id()))?,
        );
        Ok(FileKey {
            keys: derive(&data_key),
            header,
        })
    }

    /// Looks the header's key id up in the ring and unwraps the data key.
    pub fn open_with_ring(header: Header, ring: &KeyRing) -> Result<FileKey, FormatError> {
        let key = ring
            .get(&header.key_id())
            .map_err(|_| FormatError::UnknownKeyId(header.key_id()))?;
        Self::open(header, key)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decrypts one chunk (ciphertext ‖ tag) in place; on success `buf` holds the plaintext.
    pub fn decrypt_chunk_in_place(
        &self,
        index: u64,
        is_final: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let n = nonce(self.header.nonce_prefix(), index, is_final)?;
        self.keys
            .cipher
            .decrypt_in_place(&n, self.header.digest(), buf)
            .map_err(|_| FormatError::ChunkAuth { index })
    }

    /// The seal of `facts` for this file.
    pub fn seal(&self, facts: &SealFacts) -> Seal {
        compute_seal(&self.keys.seal_key, &self.header, facts)
    }

    /// Checks, in constant time, that `seal` was made for exactly these facts and this file.
    /// Needs only the header, so the portal can check a row without reading the payload.
    pub fn verify_seal(&self, facts: &SealFacts, seal: &Seal) -> Result<(), FormatError> {
        seal_mac(&self.keys.seal_key, &self.header, facts)
            .verify_slice(&seal.0)
            .map_err(|_| FormatError::SealMismatch)
    }
}
