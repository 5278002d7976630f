//! The versioned file header and its strict parser.

use std::io::Read;

use rsa::sha2::{Digest, Sha256};

use super::*;

/// A parsed (or freshly built) file header. The exact bytes are kept: their SHA-256 is the
/// associated data of every chunk, so any header edit fails every chunk.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    chunk_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    key_id: KeyId,
    wrapped_key: Vec<u8>,
    bytes: Vec<u8>,
    digest: [u8; 32],
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("version", &VERSION)
            .field("chunk_size", &self.chunk_size)
            .field("key_id", &self.key_id)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("len", &self.bytes.len())
            .finish()
    }
}

fn check_chunk_size(chunk_size: u32) -> Result<(), FormatError> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(FormatError::BadChunkSize(chunk_size))
    }
}

fn check_wrapped_len(len: usize) -> Result<(), FormatError> {
    if matches!(len, 256 | 384 | 512) {
        Ok(())
    } else {
        Err(FormatError::BadWrappedKeyLen(len))
    }
}

impl Header {
    /// Encodes a version-1 header.
    pub(crate) fn build(
        chunk_size: u32,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        key_id: KeyId,
        wrapped_key: Vec<u8>,
    ) -> Result<Header, FormatError> {
        check_chunk_size(chunk_size)?;
        check_wrapped_len(wrapped_key.len())?;
        let len = FIXED_HEADER_LEN + wrapped_key.len();
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&(len as u16).to_be_bytes());
        b.push(AEAD_AES_256_GCM);
        b.push(WRAP_RSA_OAEP_SHA256);
        b.extend_from_slice(&0u16.to_be_bytes()); // flags
        b.extend_from_slice(&chunk_size.to_be_bytes());
        b.extend_from_slice(&nonce_prefix);
        b.push(0); // reserved
        b.extend_from_slice(key_id.as_bytes());
        b.extend_from_slice(&(wrapped_key.len() as u16).to_be_bytes());
        b.extend_from_slice(&wrapped_key);
        debug_assert_eq!(b.len(), len);
        let digest = Sha256::digest(&b).into();
        Ok(Header {
            chunk_size,
            nonce_prefix,
            key_id,
            wrapped_key,
            bytes: b,
            digest,
        })
    }

    /// From the first [`HEADER_PREFIX_LEN`] bytes of a file, the whole header's length:
    /// lets a reader fetch the header with two small range requests (or one of
    /// [`MAX_HEADER_LEN`] bytes).
    pub fn declared_len(prefix: &[u8]) -> Result<usize, FormatError> {
        let n = prefix.len().min(MAGIC.len());
        if prefix[..n] != MAGIC[..n] {
            return Err(FormatError::BadMagic);
        }
        if prefix.len() < HEADER_PREFIX_LEN {
            return Err(FormatError::TruncatedHeader {
                needed: HEADER_PREFIX_LEN,
                got: prefix.len(),
            });
        }
        let version = u16::from_be_bytes([prefix[8], prefix[9]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let len = usize::from(u16::from_be_bytes([prefix[10], prefix[11]]));
        if !(FIXED_HEADER_LEN + 256..=MAX_HEADER_LEN).contains(&len) {
            return Err(FormatError::BadHeaderLen(len));
        }
        Ok(len)
    }

    /// Parses the header at the start of `buf` (which may hold more of the file). Strict:
    /// every field is checked, reserved fields must be zero.
    pub fn parse(buf: &[u8]) -> Result<Header, FormatError> {
        let len = Self::declared_len(buf)?;
        if buf.len() < len {
            return Err(FormatError::TruncatedHeader {
                needed: len,
                got: buf.len(),
            });
        }
        let b = &buf[..len];
        let aead = b[12];
        if aead != AEAD_AES_256_GCM {
            return Err(FormatError::UnsupportedAead(aead));
        }
        let wrap = b[13];
        if wrap != WRAP_RSA_OAEP_SHA256 {
            return Err(FormatError::UnsupportedKeyWrap(wrap));
        }
        if b[14] != 0 || b[15] != 0 {
            return Err(FormatError::ReservedNonZero { field: "flags" });
        }
        let chunk_size = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        check_chunk_size(chunk_size)?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&b[20..27]);
        if b[27] != 0 {
            return Err(FormatError::ReservedNonZero { field: "reserved" });
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[28..60]);
        let wrapped_len = usize::from(u16::from_be_bytes([b[60], b[61]]));
        check_wrapped_len(wrapped_len)?;
        if FIXED_HEADER_LEN + wrapped_len != len {
            return Err(FormatError::BadHeaderLen(len));
        }
        Ok(Header {
            chunk_size,
            nonce_prefix,
            key_id: KeyId(id),
            wrapped_key: b[FIXED_HEADER_LEN..].to_vec(),
            bytes: b.to_vec(),
            digest: Sha256::digest(b).into(),
        })
    }

    /// Reads exactly the header from a stream.
    pub fn read_from<R: Read>(mut r: R) -> Result<Header, FormatError> {
        let mut buf = vec![0u8; HEADER_PREFIX_LEN];
        let got = read_full(&mut r, &mut buf)?;
        buf.truncate(got);
        let len = Self::declared_len(&buf)?;
        buf.resize(len, 0);
        let got = HEADER_PREFIX_LEN + read_full(&mut r, &mut buf[HEADER_PREFIX_LEN..])?;
        buf.truncate(got);
        Self::parse(&buf)
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn nonce_prefix(&self) -> &[u8; NONCE_PREFIX_LEN] {
        &self.nonce_prefix
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn wrapped_key(&self) -> &[u8] {
        &self.wrapped_key
    }

    /// The exact encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Encoded length in bytes (the offset of chunk 0).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a header always has its fixed fields.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// SHA-256 of the encoded header: the AAD of every chunk.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub(crate) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
