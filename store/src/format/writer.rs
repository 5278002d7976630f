//! Streaming encryption: only a public key is needed, memory stays at one chunk.
//!
//! Every full chunk is sealed and handed to the inner writer as soon as it is complete, so
//! when the inner writer is an unbuffered file a killed process loses at most the partial
//! chunk still in memory; call `get_ref().sync_data()` (or the async equivalent) at the
//! cadence you want for power-loss durability.

use std::io::Write;

use aes_gcm::aead::AeadInOut;
use rsa::sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use super::crypto::{DerivedKeys, compute_seal, derive, nonce};
use super::*;
use crate::keys::PublicKey;

/// Writer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Plaintext bytes per chunk, [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    pub chunk_size: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// What a finished recording is; the database row stores these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub key_id: KeyId,
    pub plaintext_len: u64,
    pub plaintext_sha256: [u8; 32],
    pub metadata_sha256: [u8; 32],
    pub seal: Seal,
    /// Bytes written to the inner writer, header included.
    pub ciphertext_len: u64,
    pub chunks: u64,
}

impl Summary {
    /// The facts the seal covers (a complete recording).
    pub fn facts(&self) -> SealFacts {
        SealFacts {
            plaintext_len: self.plaintext_len,
            plaintext_sha256: self.plaintext_sha256,
            metadata_sha256: self.metadata_sha256,
            complete: true,
        }
    }
}

/// The I/O-free core shared by the sync and async writers.
struct Encryptor {
    header: Header,
    keys: DerivedKeys,
    chunk_size: usize,
    next_index: u64,
    /// Plaintext of the chunk being filled, or (briefly) a sealed chunk; capacity is fixed
    /// at chunk size + tag, so sealing in place never reallocates.
    buf: Zeroizing<Vec<u8>>,
    hasher: Sha256,
    plaintext_len: u64,
    ciphertext_len: u64,
}

impl Encryptor {
    fn new(key: &PublicKey, options: WriterOptions) -> Result<Encryptor, FormatError> {
        let mut data_key = Zeroizing::new([0u8; 32]);
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        getrandom::fill(data_key.as_mut_slice()).map_err(rng_error)?;
        getrandom::fill(&mut nonce_prefix).map_err(rng_error)?;
        let wrapped = key.oaep_encrypt(data_key.as_slice())?;
        let header = Header::build(options.chunk_size, nonce_prefix, key.id(), wrapped)?;
        Ok(Self::with_parts(header, &data_key))
    }

    /// Deterministic construction from given parts: used for the documented test vector.
    fn with_parts(header: Header, data_key: &[u8; 32]) -> Encryptor {
        let chunk_size = header.chunk_size() as usize;
        let ciphertext_len = header.len() as u64;
        Encryptor {
            keys: derive(data_key),
            header,
            chunk_size,
            next_index: 0,
            buf: Zeroizing::new(Vec::with_capacity(chunk_size + TAG_LEN)),
            hasher: Sha256::new(),
            plaintext_len: 0,
            ciphertext_len,
        }
    }

    /// Copies as much of `data` as fits in the current chunk; returns the bytes taken.
    fn absorb(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.plaintext_len += n as u64;
        n
    }

    fn is_full(&self) -> bool {
        self.buf.len() == self.chunk_size
    }

    /// Seals the buffered plaintext in place; the caller writes `self.buf` then clears it.
    fn seal_chunk(&mut self, is_final: bool) -> Result<(), FormatError> {
        let n = nonce(self.header.nonce_prefix(), self.next_index, is_final)?;
        self.keys
            .cipher
            .encrypt_in_place(&n, self.header.digest(), &mut *self.buf)
            .map_err(|_| FormatError::TooManyChunks)?;
        self.next_index += 1;
        self.ciphertext_len += self.buf.len() as u64;
        Ok(())
    }

    fn summary(&self, metadata_sha256: &[u8; 32]) -> Summary {
        let plaintext_sha256: [u8; 32] = self.hasher.clone().finalize().into();
        let facts = SealFacts {
            plaintext_len: self.plaintext_len,
            plaintext_sha256,
            metadata_sha256: *metadata_sha256,
            complete: true,
        };
        Summary {
            key_id: self.header.key_id(),
            plaintext_len: self.plaintext_len,
            plaintext_sha256,
            metadata_sha256: *metadata_sha256,
            seal: compute_seal(&self.keys.seal_key, &self.header, &facts),
            ciphertext_len: self.ciphertext_len,
            chunks: self.next_index,
        }
    }
}

fn rng_error(e: getrandom::Error) -> FormatError {
    FormatError::Io(std::io::Error::other(format!(
        "the OS random source failed: {e}"
    )))
}

/// Encrypts a recording into any [`Write`]. Write the plaintext, then call
/// [`finish`](Self::finish): dropping the writer without finishing leaves a file without its
/// final chunk, which readers reject as truncated (only [`recover_truncated`] reads it).
pub struct RecordingWriter<W: Write> {
    inner: W,
    enc: Encryptor,
    failed: bool,
}

impl<W: Write> std::fmt::Debug for RecordingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("header", &self.enc.header)
            .field("plaintext_len", &self.enc.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl<W: Write> RecordingWriter<W> {
    /// Generates the file's data key, wraps it under `key` and writes the header.
    pub fn new(inner: W, key: &PublicKey, options: WriterOptions) -> Result<Self, FormatError> {
        Self::start(inner, Encryptor::new(key, options)?)
    }

    /// Test-vector constructor: fixed data key and header. Never use for real recordings.
    #[doc(hidden)]
    pub fn with_fixed_parts_for_test_vectors(
        inner: W,
        header: Header,
        data_key: &[u8; 32],
    ) -> Result<Self, FormatError> {
        Self::start(inner, Encryptor::with_parts(header, data_key))
    }

    fn start(mut inner: W, enc: Encryptor) -> Result<Self, FormatError> {
        inner.write_all(enc.header.as_bytes())?;
        Ok(RecordingWriter {
            inner,
            enc,
            failed: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.enc.header
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_len(&self) -> u64 {
        self.enc.plaintext_len
    }

    /// Bytes the writer holds in memory (at most one chunk).
    pub fn buffered_len(&self) -> usize {
        self.enc.buf.len()
    }

    /// Memory reserved for buffering: fixed at chunk size + tag for the writer's life.
    pub fn buffer_capacity(&self) -> usize {
        self.enc.buf.capacity()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn write_sealed(&mut self, is_final: bool) -> Result<(), FormatError> {
        self.failed = true; // cleared only if the chunk reaches the inner writer
        self.enc.seal_chunk(is_final)?;
        self.inner.write_all(&self.enc.buf)?;
        self.enc.buf.clear();
        self.failed = false;
        Ok(())
    }

    /// Seals the final chunk, flushes, and returns the inner writer and the summary;
    /// `metadata_sha256` is sealed with the plaintext digest (see [`SealFacts`]).
    pub fn finish(mut self, metadata_sha256: &[u8; 32]) -> Result<(W, Summary), FormatError> {
        if self.failed {
            return Err(FormatError::WriterFailed);
        }
        self.write_sealed(true)?;
        self.inner.flush()?;
        let summary = self.enc.summary(metadata_sha256);
        Ok((self.inner, summary))
    }
}

impl<W: Write> Write for RecordingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.failed {
            return Err(std::io::Error::other(FormatError::WriterFailed));
        }
        let mut taken = 0;
        while taken < data.len() {
            taken += self.enc.absorb(&data[taken..]);
            if self.enc.is_full() {
                self.write_sealed(false).map_err(into_io)?;
            }
        }
        Ok(taken)
    }

    /// Flushes the inner writer; the partial chunk stays buffered (sealing it early would
    /// change the layout), so at most one chunk is ever unwritten.
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn into_io(e: FormatError) -> std::io::Error {
    match e {
        FormatError::Io(e) => e,
        other => std::io::Error::other(other),
    }
}

/// The tokio flavour of [`RecordingWriter`], for the recorder's async spool.
pub struct AsyncRecordingWriter<W: AsyncWrite + Unpin> {
    inner: W,
    enc: Encryptor,
    failed: bool,
}

impl<W: AsyncWrite + Unpin> std::fmt::Debug for AsyncRecordingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRecordingWriter")
            .field("header", &self.enc.header)
            .field("plaintext_len", &self.enc.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin> AsyncRecordingWriter<W> {
    /// Generates the file's data key, wraps it under `key` and writes the header.
    pub async fn new(
        mut inner: W,
        key: &PublicKey,
        options: WriterOptions,
    ) -> Result<Self, FormatError> {
        let enc = Encryptor::new(key, options)?;
        inner.write_all(enc.header.as_bytes()).await?;
        Ok(AsyncRecordingWriter {
            inner,
            enc,
            failed: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.enc.header
    }

    pub fn plaintext_len(&self) -> u64 {
        self.enc.plaintext_len
    }

    pub fn buffered_len(&self) -> usize {
        self.enc.buf.len()
    }

    pub fn buffer_capacity(&self) -> usize {
        self.enc.buf.capacity()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    async fn write_sealed(&mut self, is_final: bool) -> Result<(), FormatError> {
        self.failed = true;
        self.enc.seal_chunk(is_final)?;
        self.inner.write_all(&self.enc.buf).await?;
        self.enc.buf.clear();
        self.failed = false;
        Ok(())
    }

    /// Encrypts all of `data`, writing each chunk as it fills.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), FormatError> {
        if self.failed {
            return Err(FormatError::WriterFailed);
        }
        let mut taken = 0;
        while taken < data.len() {
            taken += self.enc.absorb(&data[taken..]);
            if self.enc.is_full() {
                self.write_sealed(false).await?;
            }
        }
        Ok(())
    }

    /// Flushes the inner writer (the partial chunk stays buffered).
    pub async fn flush(&mut self) -> Result<(), FormatError> {
        self.inner.flush().await?;
        Ok(())
    }

    /// Seals the final chunk, flushes, and returns the inner writer and the summary.
    pub async fn finish(mut self, metadata_sha256: &[u8; 32]) -> Result<(W, Summary), FormatError> {
        if self.failed {
            return Err(FormatError::WriterFailed);
        }
        self.write_sealed(true).await?;
        self.inner.flush().await?;
        let summary = self.enc.summary(metadata_sha256);
        Ok((self.inner, summary))
    }
}
