//! Decryption: random access over positioned reads, full streaming, crash recovery, verify.

use std::io::{Read, Write};
use std::ops::Range;

use rsa::sha2::{Digest, Sha256};

use super::header::read_full;
use super::*;
use crate::keys::KeyRing;

/// Where each chunk of a recording lies, from the header and the ciphertext length alone.
/// Pure arithmetic: the portal uses it to turn a plaintext range into an object-store
/// range request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    header_len: u64,
    chunk_size: u64,
    chunks: u64,
    plaintext_len: u64,
    complete: bool,
}

/// The chunks and ciphertext bytes covering a plaintext range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Chunk indices to decrypt.
    pub chunks: Range<u64>,
    /// Ciphertext byte range (absolute file offsets) holding those chunks.
    pub ciphertext: Range<u64>,
    /// Plaintext bytes to drop from the start of the first decrypted chunk.
    pub skip: u64,
    /// Plaintext bytes wanted.
    pub len: u64,
}

impl Layout {
    /// Layout of a finished recording. Fails when the length cannot end in a final chunk
    /// (the file was truncated at a chunk boundary, or is shorter than header + tag).
    pub fn complete(header: &Header, ciphertext_len: u64) -> Result<Layout, FormatError> {
        let header_len = header.len() as u64;
        let cs = u64::from(header.chunk_size());
        let stride = cs + TAG_LEN as u64;
        let body = ciphertext_len
            .checked_sub(header_len)
            .ok_or(FormatError::Truncated(
                "the file is shorter than its header",
            ))?;
        let after_last_tag = body
            .checked_sub(TAG_LEN as u64)
            .ok_or(FormatError::Truncated("the final chunk is missing"))?;
        let full = after_last_tag / stride;
        let rem = after_last_tag % stride;
        if rem >= cs {
            // A final chunk always holds fewer than chunk-size bytes.
            return Err(FormatError::Truncated(
                "the final chunk is missing (the length ends on a full chunk)",
            ));
        }
        let chunks = full + 1;
        if chunks > u64::from(u32::MAX) + 1 {
            return Err(FormatError::TooManyChunks);
        }
        Ok(Layout {
            header_len,
            chunk_size: cs,
            chunks,
            plaintext_len: full * cs + rem,
            complete: true,
        })
    }

    /// Layout of a recording whose writer never finished: only its complete (non-final)
    /// chunks count; a torn tail is ignored. Read such files only through
    /// [`Reader::open_incomplete`] or [`recover_truncated`].
    pub fn incomplete(header: &Header, ciphertext_len: u64) -> Result<Layout, FormatError> {
        let header_len = header.len() as u64;
        let cs = u64::from(header.chunk_size());
        let body = ciphertext_len
            .checked_sub(header_len)
            .ok_or(FormatError::Truncated(
                "the file is shorter than its header",
            ))?;
        let chunks = body / (cs + TAG_LEN as u64);
        Ok(Layout {
            header_len,
            chunk_size: cs,
            chunks,
            plaintext_len: chunks * cs,
            complete: false,
        })
    }

    /// Ciphertext length of a finished recording of `plaintext_len` bytes.
    pub fn ciphertext_len_for(header: &Header, plaintext_len: u64) -> u64 {
        let cs = u64::from(header.chunk_size());
        let chunks = plaintext_len / cs + 1;
        header.len() as u64 + plaintext_len + chunks * TAG_LEN as u64
    }

    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Whether the last chunk is the final chunk (false for [`Layout::incomplete`]).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Total ciphertext bytes covered by the layout (header included).
    pub fn ciphertext_len(&self) -> u64 {
        if self.chunks == 0 {
            return self.header_len;
        }
        self.chunk_offset(self.chunks - 1) + self.chunk_ciphertext_len(self.chunks - 1)
    }

    fn chunk_offset(&self, index: u64) -> u64 {
        self.header_len + index * (self.chunk_size + TAG_LEN as u64)
    }

    fn is_final(&self, index: u64) -> bool {
        self.complete && index + 1 == self.chunks
    }

    fn chunk_plaintext_len(&self, index: u64) -> u64 {
        if self.is_final(index) {
            self.plaintext_len - index * self.chunk_size
        } else {
            self.chunk_size
        }
    }

    fn chunk_ciphertext_len(&self, index: u64) -> u64 {
        self.chunk_plaintext_len(index) + TAG_LEN as u64
    }

    /// The chunks and ciphertext bytes covering plaintext bytes `start..end`.
    pub fn span(&self, start: u64, end: u64) -> Result<Span, FormatError> {
        if start > end || end > self.plaintext_len {
            return Err(FormatError::RangeOutOfBounds {
                start,
                end,
                len: self.plaintext_len,
            });
        }
        if start == end {
            return Ok(Span {
                chunks: 0..0,
                ciphertext: 0..0,
                skip: 0,
                len: 0,
            });
        }
        let first = start / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        Ok(Span {
            chunks: first..last + 1,
            ciphertext: self.chunk_offset(first)
                ..self.chunk_offset(last) + self.chunk_ciphertext_len(last),
            skip: start - first * self.chunk_size,
            len: end - start,
        })
    }
}

impl FileKey {
    /// Decrypts the ciphertext of `span` (exactly the bytes of `span.ciphertext`) and
    /// returns the wanted plaintext. Every chunk touched is authenticated.
    pub fn decrypt_span(
        &self,
        layout: &Layout,
        span: &Span,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, FormatError> {
        let expected = span.ciphertext.end - span.ciphertext.start;
        if ciphertext.len() as u64 != expected {
            return Err(FormatError::Truncated(
                "fewer ciphertext bytes than the span needs",
            ));
        }
        let mut out = Vec::with_capacity(span.len as usize);
        let mut chunk = Vec::with_capacity(layout.chunk_size as usize + TAG_LEN);
        let mut pos = 0usize;
        for index in span.chunks.clone() {
            let n = layout.chunk_ciphertext_len(index) as usize;
            chunk.clear();
            chunk.extend_from_slice(&ciphertext[pos..pos + n]);
            pos += n;
            self.decrypt_chunk_in_place(index, layout.is_final(index), &mut chunk)?;
            let from = if index == span.chunks.start {
                span.skip as usize
            } else {
                0
            };
            let want = (span.len as usize - out.len()).min(chunk.len() - from);
            out.extend_from_slice(&chunk[from..from + want]);
        }
        Ok(out)
    }
}

/// Positioned reads: a file, a buffer, or (in the portal) an object-store object.
pub trait RangeSource {
    /// Total length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl RangeSource for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl RangeSource for Vec<u8> {
    fn size(&self) -> std::io::Result<u64> {
        self.as_slice().size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

#[cfg(unix)]
impl RangeSource for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl<T: RangeSource + ?Sized> RangeSource for &T {
    fn size(&self) -> std::io::Result<u64> {
        (**self).size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

/// Random-access decryption of one recording.
#[derive(Debug)]
pub struct Reader<S> {
    source: S,
    key: FileKey,
    layout: Layout,
}

fn read_header_at<S: RangeSource>(source: &S) -> Result<(Header, u64), FormatError> {
    let size = source.size()?;
    let n = usize::try_from(size)
        .unwrap_or(MAX_HEADER_LEN)
        .min(MAX_HEADER_LEN);
    let mut buf = vec![0u8; n];
    source.read_exact_at(0, &mut buf)?;
    Ok((Header::parse(&buf)?, size))
}

impl<S: RangeSource> Reader<S> {
    /// Opens a finished recording: parses the header, unwraps the data key from the ring,
    /// and authenticates the final chunk, so a truncated or extended file is rejected here
    /// even if only an early range is read later.
    pub fn open(source: S, ring: &KeyRing) -> Result<Self, FormatError> {
        let (header, size) = read_header_at(&source)?;
        let layout = Layout::complete(&header, size)?;
        let key = FileKey::open_with_ring(header, ring)?;
        let reader = Reader {
            source,
            key,
            layout,
        };
        let last = layout.chunks - 1;
        reader.read_chunk(last)?;
        Ok(reader)
    }

    /// Opens a recording whose writer was killed: only its complete chunks are readable
    /// (see [`recover_truncated`] for what is recovered and why this is explicit).
    pub fn open_incomplete(source: S, ring: &KeyRing) -> Result<Self, FormatError> {
        let (header, size) = read_header_at(&source)?;
        let layout = Layout::incomplete(&header, size)?;
        let key = FileKey::open_with_ring(header, ring)?;
        Ok(Reader {
            source,
            key,
            layout,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn plaintext_len(&self) -> u64 {
        self.layout.plaintext_len
    }

    pub fn key_id(&self) -> KeyId {
        self.key.header().key_id()
    }

    pub fn file_key(&self) -> &FileKey {
        &self.key
    }

    /// Reads and authenticates one whole chunk (even an empty final chunk, whose tag is
    /// what proves the file ends there).
    fn read_chunk(&self, index: u64) -> Result<Vec<u8>, FormatError> {
        let mut buf = vec![0u8; self.layout.chunk_ciphertext_len(index) as usize];
        self.source
            .read_exact_at(self.layout.chunk_offset(index), &mut buf)
            .map_err(eof_is_truncation)?;
        let is_final = self.layout.is_final(index);
        self.key.decrypt_chunk_in_place(index, is_final, &mut buf)?;
        Ok(buf)
    }

    /// Plaintext bytes `start..end`, reading and authenticating only the chunks covering them.
    pub fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, FormatError> {
        let span = self.layout.span(start, end)?;
        if span.len == 0 {
            return Ok(Vec::new());
        }
        let mut ct = vec![0u8; (span.ciphertext.end - span.ciphertext.start) as usize];
        self.source
            .read_exact_at(span.ciphertext.start, &mut ct)
            .map_err(eof_is_truncation)?;
        self.key.decrypt_span(&self.layout, &span, &ct)
    }
}

fn eof_is_truncation(e: std::io::Error) -> FormatError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FormatError::Truncated("the source ended before the requested chunks")
    } else {
        FormatError::Io(e)
    }
}

/// Result of a full decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decrypted {
    pub key_id: KeyId,
    pub plaintext_len: u64,
    pub plaintext_sha256: [u8; 32],
    pub chunks: u64,
}

/// Result of [`recover_truncated`].
#[derive(Debug)]
pub struct Recovered {
    pub key_id: KeyId,
    pub plaintext_len: u64,
    pub plaintext_sha256: [u8; 32],
    pub chunks: u64,
    /// True when the file turned out to have its authenticated final chunk after all.
    pub complete: bool,
    /// Ciphertext bytes that hold authenticated chunks (header included).
    pub valid_ciphertext_len: u64,
    /// Bytes of a torn tail that were dropped (a partly written chunk).
    pub discarded_bytes: u64,
    file_key: FileKey,
}

impl Recovered {
    /// The seal a private-key holder records for the recovered recording.
    pub fn seal(&self, metadata_sha256: &[u8; 32]) -> Seal {
        self.file_key.seal(&self.facts(metadata_sha256))
    }

    pub fn facts(&self, metadata_sha256: &[u8; 32]) -> SealFacts {
        SealFacts {
            plaintext_len: self.plaintext_len,
            plaintext_sha256: self.plaintext_sha256,
            metadata_sha256: *metadata_sha256,
            complete: self.complete,
        }
    }

    pub fn file_key(&self) -> &FileKey {
        &self.file_key
    }
}

struct Streamed {
    plaintext_len: u64,
    plaintext_sha256: [u8; 32],
    chunks: u64,
    complete: bool,
    valid_ciphertext_len: u64,
    discarded_bytes: u64,
}

/// Decrypts chunk after chunk. Strict mode demands the final chunk and nothing after it;
/// recover mode stops at a torn tail but still fails on a bad chunk that is followed by more.
fn stream_chunks<R: Read, W: Write>(
    input: &mut R,
    key: &FileKey,
    out: &mut W,
    recover: bool,
) -> Result<Streamed, FormatError> {
    let stride = key.header().chunk_size() as usize + TAG_LEN;
    let mut buf = Vec::with_capacity(stride);
    let mut hasher = Sha256::new();
    let mut s = Streamed {
        plaintext_len: 0,
        plaintext_sha256: [0; 32],
        chunks: 0,
        complete: false,
        valid_ciphertext_len: key.header().len() as u64,
        discarded_bytes: 0,
    };
    loop {
        buf.resize(stride, 0);
        let n = read_full(input, &mut buf)?;
        buf.truncate(n);
        // A full-size block is never the final chunk: final chunks hold < chunk-size bytes.
        let is_final = n < stride;
        if is_final && n < TAG_LEN {
            if recover {
                s.discarded_bytes = n as u64;
                break;
            }
            return Err(FormatError::Truncated(if n == 0 {
                "the final chunk is missing"
            } else {
                "the file ends inside a chunk"
            }));
        }
        match key.decrypt_chunk_in_place(s.chunks, is_final, &mut buf) {
            Ok(()) => {
                hasher.update(&buf);
                out.write_all(&buf)?;
                s.plaintext_len += buf.len() as u64;
                s.valid_ciphertext_len += n as u64;
                s.chunks += 1;
                if is_final {
                    s.complete = true;
                    break;
                }
            }
            Err(e) => {
                if !recover {
                    return Err(e);
                }
                // Only the last block may be torn; a bad block followed by more data is
                // tampering, never a crash artefact.
                if !is_final && read_full(input, &mut [0u8; 1])? != 0 {
                    return Err(e);
                }
                s.discarded_bytes = n as u64;
                break;
            }
        }
    }
    out.flush()?;
    s.plaintext_sha256 = hasher.finalize().into();
    Ok(s)
}

/// Decrypts a whole finished recording from a stream into `output`, authenticating every
/// chunk and requiring the final chunk. Plaintext is written as each chunk authenticates,
/// so on error `output` holds an authenticated prefix: discard it (write to a temporary
/// file and rename on success).
pub fn decrypt_stream<R: Read, W: Write>(
    mut input: R,
    ring: &KeyRing,
    mut output: W,
) -> Result<Decrypted, FormatError> {
    let header = Header::read_from(&mut input)?;
    let key = FileKey::open_with_ring(header, ring)?;
    let s = stream_chunks(&mut input, &key, &mut output, false)?;
    Ok(Decrypted {
        key_id: key.header().key_id(),
        plaintext_len: s.plaintext_len,
        plaintext_sha256: s.plaintext_sha256,
        chunks: s.chunks,
    })
}

/// Recovers what a killed writer left: every authenticated chunk up to the first torn
/// one. Use only for spool files whose writer did not finish (the row is committed as
/// `incomplete`); a chunk that fails authentication with data after it is still an error.
pub fn recover_truncated<R: Read, W: Write>(
    mut input: R,
    ring: &KeyRing,
    mut output: W,
) -> Result<Recovered, FormatError> {
    let header = Header::read_from(&mut input)?;
    let key = FileKey::open_with_ring(header, ring)?;
    let s = stream_chunks(&mut input, &key, &mut output, true)?;
    Ok(Recovered {
        key_id: key.header().key_id(),
        plaintext_len: s.plaintext_len,
        plaintext_sha256: s.plaintext_sha256,
        chunks: s.chunks,
        complete: s.complete,
        valid_ciphertext_len: s.valid_ciphertext_len,
        discarded_bytes: s.discarded_bytes,
        file_key: key,
    })
}

/// The outcome of [`verify`].
#[derive(Debug)]
pub enum Verdict {
    /// The file decrypts, and its length, digest and completeness are those the row
    /// states and the seal covers.
    Authenticated(Decrypted),
    /// The file or its row is not what was written; the error says what failed.
    Tampered(FormatError),
}

impl Verdict {
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Verdict::Authenticated(_))
    }
}

/// Full check of a recording against its database row: seal, every chunk, length, digest.
/// `Err` only for operational problems (I/O, key not in the ring); anything that means
/// "not what was written" is `Ok(Verdict::Tampered)`.
pub fn verify<R: Read>(
    mut input: R,
    ring: &KeyRing,
    row: &SealFacts,
    seal: &Seal,
) -> Result<Verdict, FormatError> {
    let run = |input: &mut R| -> Result<Decrypted, FormatError> {
        let header = Header::read_from(&mut *input)?;
        let key = FileKey::open_with_ring(header, ring)?;
        key.verify_seal(row, seal)?;
        let s = stream_chunks(input, &key, &mut std::io::sink(), !row.complete)?;
        if s.complete != row.complete {
            return Err(FormatError::RowMismatch(
                "completeness differs from the row's",
            ));
        }
        if s.plaintext_len != row.plaintext_len {
            return Err(FormatError::RowMismatch("plaintext length differs"));
        }
        if s.plaintext_sha256 != row.plaintext_sha256 {
            return Err(FormatError::RowMismatch("plaintext SHA-256 differs"));
        }
        Ok(Decrypted {
            key_id: key.header().key_id(),
            plaintext_len: s.plaintext_len,
            plaintext_sha256: s.plaintext_sha256,
            chunks: s.chunks,
        })
    };
    match run(&mut input) {
        Ok(d) => Ok(Verdict::Authenticated(d)),
        Err(e) if e.is_tamper() => Ok(Verdict::Tampered(e)),
        Err(e) => Err(e),
    }
}
