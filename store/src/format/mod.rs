//! The encrypted recording format (`.cvr`), version 1. The byte layout, the key derivation
//! and the threat model are specified in `docs/recording-format.md`; this module is the
//! reference implementation.
//!
//! - [`RecordingWriter`] / [`AsyncRecordingWriter`]: streaming encryption with only a public
//!   key (the recorder), constant memory, returning a [`Summary`] with the plaintext digest
//!   and the [`Seal`] the database row stores.
//! - [`Reader`]: random access to any plaintext byte range over a [`RangeSource`];
//!   [`Layout`] + [`FileKey::decrypt_span`] do the same for sources that are not
//!   synchronous (object-store range GETs).
//! - [`decrypt_stream`]: full streaming decryption; [`recover_truncated`]: the explicit
//!   path for files whose writer was killed before the last chunk.
//! - [`verify`] and [`FileKey::verify_seal`]: "authenticated" or "tampered".

mod crypto;
mod header;
mod reader;
mod writer;

pub use crypto::{FileKey, Seal, SealFacts};
pub use header::Header;
pub use reader::{
    Decrypted, Layout, RangeSource, Reader, Recovered, Span, Verdict, decrypt_stream,
    recover_truncated, verify,
};
pub use writer::{AsyncRecordingWriter, RecordingWriter, Summary, WriterOptions};

use crate::keys::{KeyError, KeyId};

/// File magic: `\x89CVR\r\n\x1a\n` (a high byte and line endings, so that text-mode transfers
/// and non-CallVault files are caught at once, as PNG does).
pub const MAGIC: [u8; 8] = [0x89, b'C', b'V', b'R', b'\r', b'\n', 0x1A, b'\n'];
/// The only format version this code reads and writes.
pub const VERSION: u16 = 1;
/// AEAD algorithm id 1: AES-256-GCM, 96-bit nonce, 128-bit tag.
pub const AEAD_AES_256_GCM: u8 = 1;
/// Key-wrap algorithm id 1: RSAES-OAEP, SHA-256, MGF1 with SHA-256, empty label.
pub const WRAP_RSA_OAEP_SHA256: u8 = 1;
/// Length of the fixed part of the header (everything before the wrapped key).
pub const FIXED_HEADER_LEN: usize = 62;
/// Longest possible header (RSA-4096 wrapped key).
pub const MAX_HEADER_LEN: usize = FIXED_HEADER_LEN + 512;
/// Bytes of the header a reader must fetch to learn the whole header's length.
pub const HEADER_PREFIX_LEN: usize = 12;
/// GCM tag length appended to every chunk.
pub const TAG_LEN: usize = 16;
/// Random per-file nonce prefix length (the nonce is prefix ‖ u32 counter ‖ flag byte).
pub const NONCE_PREFIX_LEN: usize = 7;
/// Smallest allowed plaintext chunk size.
pub const MIN_CHUNK_SIZE: u32 = 16;
/// Largest allowed plaintext chunk size (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default plaintext chunk size (64 KiB): small enough that a crash loses little and a seek
/// decrypts little, large enough that the 16-byte tags cost 0.02 %.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// Everything that can go wrong reading or writing a recording.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a CallVault recording (bad magic bytes)")]
    BadMagic,
    #[error("unsupported recording format version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),
    #[error("truncated header: {needed} bytes needed, {got} available")]
    TruncatedHeader { needed: usize, got: usize },
    #[error("invalid header length {0}")]
    BadHeaderLen(usize),
    #[error("unsupported AEAD algorithm id {0}")]
    UnsupportedAead(u8),
    #[error("unsupported key-wrap algorithm id {0}")]
    UnsupportedKeyWrap(u8),
    #[error("reserved header field {field} is not zero")]
    ReservedNonZero { field: &'static str },
    #[error("invalid chunk size {0} (allowed {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE})")]
    BadChunkSize(u32),
    #[error("invalid wrapped key length {0} (expected 256, 384 or 512)")]
    BadWrappedKeyLen(usize),
    #[error("the recording is encrypted under key {0}, which is not in the key ring")]
    UnknownKeyId(KeyId),
    #[error("the data key cannot be unwrapped with key {0}: wrong private key or altered header")]
    KeyUnwrap(KeyId),
    #[error(
        "chunk {index} failed authentication: the recording was altered, reordered or truncated"
    )]
    ChunkAuth { index: u64 },
    #[error("the recording is truncated: {0}")]
    Truncated(&'static str),
    #[error("byte range {start}..{end} is outside the recording's {len} plaintext bytes")]
    RangeOutOfBounds { start: u64, end: u64, len: u64 },
    #[error("the recording is too large for this format (more than 2^32 chunks)")]
    TooManyChunks,
    #[error("the seal does not match: the recording or its database row was altered")]
    SealMismatch,
    #[error("the recording does not match its database row: {0}")]
    RowMismatch(&'static str),
    #[error("the writer failed earlier and cannot be used any more")]
    WriterFailed,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl FormatError {
    /// True when the error means the recording (or its row) is not what was written:
    /// altered, truncated, extended, reordered, or not a recording at all. False for
    /// operational problems (I/O, a key missing from the ring, misuse).
    pub fn is_tamper(&self) -> bool {
        use FormatError::*;
        match self {
            BadMagic
            | TruncatedHeader { .. }
            | BadHeaderLen(_)
            | ReservedNonZero { .. }
            | BadChunkSize(_)
            | BadWrappedKeyLen(_)
            | KeyUnwrap(_)
            | ChunkAuth { .. }
            | Truncated(_)
            | SealMismatch
            | RowMismatch(_) => true,
            UnsupportedVersion(_)
            | UnsupportedAead(_)
            | UnsupportedKeyWrap(_)
            | UnknownKeyId(_)
            | RangeOutOfBounds { .. }
            | TooManyChunks
            | WriterFailed
            | Key(_)
            | Io(_) => false,
        }
    }
}

/// SHA-256 of arbitrary bytes (used for the metadata digest by callers).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use rsa::sha2::{Digest, Sha256};
    Sha256::digest(data).into()
}

#[cfg(test)]
mod vector;
