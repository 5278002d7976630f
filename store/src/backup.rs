//! The encrypted backup file: the catalogue (database rows) and configuration files of an
//! installation, never media. Documented in docs/operations.md.
//!
//! ```text
//! header  "CVBACKUP" ‖ version 0x01 ‖ scrypt log_n (u8) ‖ r (u32 BE) ‖ p (u32 BE)
//!         ‖ salt (16) ‖ nonce prefix (7)                                      = 41 bytes
//! chunks  [ciphertext length (u32 BE) ‖ AES-256-GCM ciphertext + tag]…
//! ```
//!
//! The key is scrypt(secret, salt); each chunk holds at most [`CHUNK`] bytes of plaintext,
//! its nonce is prefix ‖ chunk index (u32 BE) ‖ 0x01 for the last chunk, else 0x00, and the
//! header is the associated data of every chunk. A wrong secret fails on the first chunk; an
//! edited, reordered or truncated file fails where it was changed, or at the end for want of
//! a last chunk. The same construction as the recording format, with a passphrase-derived key
//! in place of an RSA-wrapped one.

use std::io::{self, Read, Write};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"CVBACKUP";
const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const PREFIX_LEN: usize = 7;
const HEADER_LEN: usize = 8 + 1 + 1 + 4 + 4 + SALT_LEN + PREFIX_LEN;
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG_LEN: usize = 16;
/// Shortest backup secret accepted: a guessable one would expose every user and grant.
pub const MIN_SECRET_LEN: usize = 16;
/// scrypt cost of new backups (2^17 × 8 × 128 B = 128 MiB, about half a second); what a file
/// was written with is read from its header, within [`MAX_LOG_N`].
const LOG_N: u8 = 17;
const MAX_LOG_N: u8 = 18;

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup key must be at least {MIN_SECRET_LEN} characters long")]
    WeakSecret,
    #[error("not a CallVault backup (no CVBACKUP header)")]
    NotABackup,
    #[error("backup format version {0} is not supported by this version of CallVault")]
    Version(u8),
    #[error("the backup's key derivation parameters are invalid or too costly")]
    Params,
    /// The first chunk does not open: the key is not the one the backup was made with (or
    /// the file's beginning was altered).
    #[error("wrong backup key: the backup cannot be decrypted with it (or it was altered)")]
    WrongKey,
    #[error("the backup is damaged or was altered (chunk {0} does not authenticate)")]
    Damaged(u64),
    #[error("the backup is truncated: it ends before its last chunk")]
    Truncated,
    #[error("the backup has too many chunks")]
    TooLarge,
    #[error("backup I/O: {0}")]
    Io(#[from] io::Error),
}

/// The secret a backup is encrypted under (from a file or the environment, never an argument).
pub struct BackupSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for BackupSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupSecret(..)")
    }
}

impl BackupSecret {
    /// Checks the length; trailing newlines are the caller's to strip.
    pub fn new(secret: &[u8]) -> Result<Self, BackupError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(BackupError::WeakSecret);
        }
        Ok(Self(Zeroizing::new(secret.to_vec())))
    }

    fn cipher(&self, salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<Aes256Gcm, BackupError> {
        if log_n > MAX_LOG_N || r > 16 || p > 4 {
            return Err(BackupError::Params);
        }
        let params = scrypt::Params::new(log_n, r, p).map_err(|_| BackupError::Params)?;
        let mut key = Zeroizing::new([0u8; 32]);
        scrypt::scrypt(&self.0, salt, &params, key.as_mut_slice())
            .map_err(|_| BackupError::Params)?;
        Ok(Aes256Gcm::new(&(*key).into()))
    }
}

fn nonce(
    prefix: &[u8; PREFIX_LEN],
    index: u64,
    last: bool,
) -> Result<Nonce<aes_gcm::aead::consts::U12>, BackupError> {
    let counter = u32::try_from(index).map_err(|_| BackupError::TooLarge)?;
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Ok(n.into())
}

/// Encrypts what is written into `inner`; [`BackupWriter::finish`] writes the last chunk (a
/// writer dropped without it leaves a file every reader refuses as truncated).
pub struct BackupWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX_LEN],
    index: u64,
    buf: Zeroizing<Vec<u8>>,
}

impl<W: Write> std::fmt::Debug for BackupWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("chunks", &self.index)
            .finish_non_exhaustive()
    }
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut inner: W, secret: &BackupSecret) -> Result<Self, BackupError> {
        let mut salt = [0u8; SALT_LEN];
        let mut prefix = [0u8; PREFIX_LEN];
        getrandom::fill(&mut salt).map_err(|e| io::Error::other(e.to_string()))?;
        getrandom::fill(&mut prefix).map_err(|e| io::Error::other(e.to_string()))?;
        let (r, p) = (8u32, 1u32);
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = VERSION;
        header[9] = LOG_N;
        header[10..14].copy_from_slice(&r.to_be_bytes());
        header[14..18].copy_from_slice(&p.to_be_bytes());
        header[18..18 + SALT_LEN].copy_from_slice(&salt);
        header[18 + SALT_LEN..].copy_from_slice(&prefix);
        let cipher = secret.cipher(&salt, LOG_N, r, p)?;
        inner.write_all(&header)?;
        Ok(Self {
            inner,
            cipher,
            header,
            prefix,
            index: 0,
            buf: Zeroizing::new(Vec::with_capacity(CHUNK + TAG_LEN)),
        })
    }

    fn seal(&mut self, last: bool) -> Result<(), BackupError> {
        let n = nonce(&self.prefix, self.index, last)?;
        self.cipher
            .encrypt_in_place(&n, &self.header, &mut *self.buf)
            .map_err(|_| io::Error::other("encryption failed"))?;
        let len = u32::try_from(self.buf.len()).map_err(|_| BackupError::TooLarge)?;
        self.inner.write_all(&len.to_be_bytes())?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Writes the last chunk and returns the inner writer, flushed.
    pub fn finish(mut self) -> Result<W, BackupError> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for BackupWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full buffer is sealed only when more comes, so the last chunk is never empty
        // unless the whole backup is.
        if self.buf.len() == CHUNK {
            self.seal(false).map_err(io::Error::other)?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts a backup as it is read; reading past the end of a file without its last chunk,
/// or through a chunk that does not authenticate, is an error (as an [`io::Error`] wrapping a
/// [`BackupError`]).
pub struct BackupReader<R: Read> {
    inner: R,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; PREFIX_LEN],
    index: u64,
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    done: bool,
}

impl<R: Read> std::fmt::Debug for BackupReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupReader")
            .field("chunks", &self.index)
            .finish_non_exhaustive()
    }
}

impl<R: Read> BackupReader<R> {
    /// Reads the header and opens the first chunk, so a wrong key or a file that is not a
    /// backup is refused here, before anything is read from it.
    pub fn new(mut inner: R, secret: &BackupSecret) -> Result<Self, BackupError> {
        let mut header = [0u8; HEADER_LEN];
        inner.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => BackupError::NotABackup,
            _ => BackupError::Io(e),
        })?;
        if &header[..8] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        if header[8] != VERSION {
            return Err(BackupError::Version(header[8]));
        }
        let word = |at: usize| {
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let cipher = secret.cipher(&header[18..18 + SALT_LEN], header[9], word(10), word(14))?;
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&header[18 + SALT_LEN..]);
        let mut reader = Self {
            inner,
            cipher,
            header,
            prefix,
            index: 0,
            buf: Zeroizing::new(Vec::new()),
            pos: 0,
            done: false,
        };
        reader.next_chunk().map_err(|e| match e {
            BackupError::Damaged(0) => BackupError::WrongKey,
            e => e,
        })?;
        Ok(reader)
    }

    fn next_chunk(&mut self) -> Result<(), BackupError> {
        let mut len = [0u8; 4];
        match self.inner.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(BackupError::Truncated);
            }
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&len) {
            return Err(BackupError::Damaged(self.index));
        }
        self.buf.resize(len, 0);
        self.inner
            .read_exact(&mut self.buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => BackupError::Truncated,
                _ => BackupError::Io(e),
            })?;
        // The last chunk is marked in its nonce: try it as a middle chunk, then as the last.
        let ciphertext = Zeroizing::new(self.buf.to_vec());
        for last in [false, true] {
            let n = nonce(&self.prefix, self.index, last)?;
            if self
                .cipher
                .decrypt_in_place(&n, &self.header, &mut *self.buf)
                .is_ok()
            {
                self.index += 1;
                self.pos = 0;
                self.done = last;
                return Ok(());
            }
            self.buf.clear();
            self.buf.extend_from_slice(&ciphertext);
        }
        Err(BackupError::Damaged(self.index))
    }
}

impl<R: Read> Read for BackupReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk().map_err(io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secret(s: &str) -> BackupSecret {
        BackupSecret::new(s.as_bytes()).unwrap()
    }

    fn write(data: &[u8], key: &BackupSecret) -> Vec<u8> {
        let mut w = BackupWriter::new(Vec::new(), key).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_refuses_what_it_should() {
        let key = secret("correct horse battery staple");
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let file = write(&data, &key);
        let mut back = Vec::new();
        BackupReader::new(&file[..], &key)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        let wrong = BackupReader::new(&file[..], &secret("another sixteen chars"));
        assert!(matches!(wrong, Err(BackupError::WrongKey)), "{wrong:?}");

        // Cut after the second chunk: a whole number of chunks, but no last one.
        let cut = HEADER_LEN + 2 * (4 + CHUNK + TAG_LEN);
        let mut reader = BackupReader::new(&file[..cut], &key).unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        let mut edited = file.clone();
        edited[HEADER_LEN + (4 + CHUNK + TAG_LEN) + 4 + 100] ^= 1;
        let mut reader = BackupReader::new(&edited[..], &key).unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("chunk 1"), "{err}");

        assert!(matches!(
            BackupReader::new(
                &b"PK\x03\x04 not a backup at all, a zip file............"[..],
                &key
            ),
            Err(BackupError::NotABackup)
        ));
        assert!(matches!(
            BackupSecret::new(b"short"),
            Err(BackupError::WeakSecret)
        ));
    }

    #[test]
    fn an_empty_backup_is_one_last_chunk() {
        let key = secret("correct horse battery staple");
        let file = write(b"", &key);
        assert_eq!(file.len(), HEADER_LEN + 4 + TAG_LEN);
        let mut back = Vec::new();
        BackupReader::new(&file[..], &key)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
