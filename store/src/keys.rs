//! Recording encryption keys: RSA key pairs, their ids, PEM import/export and the key ring.
//!
//! The recorder only ever holds a [`PublicKey`]; the portal and the decrypting jobs hold a
//! [`KeyRing`] of [`PrivateKey`]s indexed by [`KeyId`]. Private key material is zeroized on
//! drop (the `rsa` crate zeroizes its big integers; PEM text is kept in `Zeroizing` buffers)
//! and no `Debug`/`Display` implementation here ever prints it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::sha2::{Digest, Sha256};
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

/// Errors of key generation, encoding, decoding and lookup.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported RSA key size {0} bits: use 2048, 3072 or 4096")]
    UnsupportedBits(usize),
    #[error("RSA key generation failed: {0}")]
    Generate(String),
    #[error("not a PKCS#8 RSA private key PEM (\"BEGIN PRIVATE KEY\"): {0}")]
    PrivateKeyPem(String),
    #[error("not an RSA public key PEM (\"BEGIN PUBLIC KEY\"): {0}")]
    PublicKeyPem(String),
    #[error("the private key is passphrase-protected; a passphrase is required")]
    PassphraseRequired,
    #[error("cannot decrypt the protected private key: wrong passphrase or damaged file")]
    WrongPassphrase,
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("encoding the key failed: {0}")]
    Encode(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("invalid key id {0:?}: expected 64 hexadecimal characters (SHA-256 of the SPKI DER)")]
    BadKeyId(String),
    #[error("no private key with id {0} in the key ring")]
    UnknownKeyId(KeyId),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: Box<KeyError>,
    },
}

/// RSA modulus sizes a profile key may have.
pub const ALLOWED_BITS: [usize; 3] = [2048, 3072, 4096];
/// The default modulus size.
pub const DEFAULT_BITS: usize = 2048;

/// A key id: SHA-256 of the public key's SubjectPublicKeyInfo DER, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of a public key given as SPKI DER.
    pub fn from_spki_der(der: &[u8]) -> Self {
        KeyId(Sha256::digest(der).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| KeyError::BadKeyId(s.to_owned()))?;
        Ok(KeyId(out))
    }
}

/// An RSA public key with its id. All the recorder needs.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: rsa::PublicKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("id", &self.id)
            .field("bits", &self.bits())
            .finish()
    }
}

impl PublicKey {
    fn from_rsa(inner: rsa::PublicKey) -> Result<Self, KeyError> {
        let bits = inner.size() * 8;
        if !ALLOWED_BITS.contains(&bits) {
            return Err(KeyError::UnsupportedBits(bits));
        }
        // The id is taken over our own canonical re-encoding, so any accepted input form
        // of the same key yields the same id.
        let der = inner
            .to_public_key_der()
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(PublicKey {
            id: KeyId::from_spki_der(der.as_bytes()),
            inner,
        })
    }

    /// Parses an SPKI PEM (`BEGIN PUBLIC KEY`); a PKCS#1 `BEGIN RSA PUBLIC KEY` is accepted too.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let inner = match rsa::PublicKey::from_public_key_pem(pem.trim()) {
            Ok(k) => k,
            Err(spki_err) => {
                use rsa::pkcs1::DecodeRsaPublicKey;
                rsa::PublicKey::from_pkcs1_pem(pem.trim())
                    .map_err(|_| KeyError::PublicKeyPem(spki_err.to_string()))?
            }
        };
        Self::from_rsa(inner)
    }

    /// Reads a public key PEM file.
    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_text(path)?;
        Self::from_pem(&text).map_err(|e| in_file(path, e))
    }

    /// SPKI PEM (`BEGIN PUBLIC KEY`).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.inner
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Whether `signature` is this key's RSASSA-PSS SHA-256 signature of `message`.
    pub fn verify_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        self.inner
            .verify(
                rsa::Pss::<Sha256>::new(),
                &Sha256::digest(message),
                signature,
            )
            .is_ok()
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.inner.size() * 8
    }

    /// Size of an RSA-OAEP ciphertext under this key (the modulus size in bytes).
    pub fn wrapped_len(&self) -> usize {
        self.inner.size()
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) encryption of a short secret.
    pub(crate) fn oaep_encrypt(&self, secret: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.inner
            .oaep_encrypt::<Sha256>(secret)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }
}

/// An RSA private key with its id. Debug output names only the id.
#[derive(Clone)]
pub struct PrivateKey {
    inner: rsa::PrivateKey,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("id", &self.public.id)
            .field("bits", &self.public.bits())
            .finish_non_exhaustive()
    }
}

/// PEM label of an unprotected PKCS#8 private key.
const PKCS8_LABEL: &str = "-----BEGIN PRIVATE KEY-----";
/// PEM label of a passphrase-protected PKCS#8 private key.
const ENCRYPTED_PKCS8_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

impl PrivateKey {
    /// Generates a new key pair of `bits` (2048, 3072 or 4096) from the OS random source.
    pub fn generate(bits: usize) -> Result<Self, KeyError> {
        if !ALLOWED_BITS.contains(&bits) {
            return Err(KeyError::UnsupportedBits(bits));
        }
        let mut rng = getrandom::SysRng;
        let inner =
            rsa::PrivateKey::new(&mut rng, bits).map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_rsa(inner)
    }

    fn from_rsa(inner: rsa::PrivateKey) -> Result<Self, KeyError> {
        let public = PublicKey::from_rsa(inner.to_public_key())?;
        Ok(PrivateKey { inner, public })
    }

    /// Parses an unprotected PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        if pem.contains(ENCRYPTED_PKCS8_LABEL) {
            return Err(KeyError::PassphraseRequired);
        }
        let inner = rsa::PrivateKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| KeyError::PrivateKeyPem(e.to_string()))?;
        Self::from_rsa(inner)
    }

    /// Parses a passphrase-protected PKCS#8 PEM (`BEGIN ENCRYPTED PRIVATE KEY`).
    pub fn from_encrypted_pem(pem: &str, passphrase: &[u8]) -> Result<Self, KeyError> {
        if !pem.contains(ENCRYPTED_PKCS8_LABEL) {
            return Err(KeyError::PrivateKeyPem(
                "expected \"BEGIN ENCRYPTED PRIVATE KEY\"".to_owned(),
            ));
        }
        let inner = rsa::PrivateKey::from_pkcs8_encrypted_pem(pem.trim(), passphrase)
            .map_err(|_| KeyError::WrongPassphrase)?;
        Self::from_rsa(inner)
    }

    /// Parses either form; `passphrase` is used only when the PEM is protected.
    pub fn from_pem(pem: &str, passphrase: Option<&[u8]>) -> Result<Self, KeyError> {
        if is_encrypted_pem(pem) {
            let pass = passphrase.ok_or(KeyError::PassphraseRequired)?;
            Self::from_encrypted_pem(pem, pass)
        } else {
            Self::from_pkcs8_pem(pem)
        }
    }

    /// Reads a private key PEM file (protected or not).
    pub fn read_pem_file(path: &Path, passphrase: Option<&[u8]>) -> Result<Self, KeyError> {
        let text = read_text(path)?;
        Self::from_pem(&text, passphrase).map_err(|e| in_file(path, e))
    }

    /// Unprotected PKCS#8 PEM; the text is zeroized when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.inner
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// Passphrase-protected PKCS#8 PEM: PBES2 with scrypt and AES-256-CBC (the `pkcs8` crate's
    /// recommended parameters, a fresh random salt and IV each time).
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<Zeroizing<String>, KeyError> {
        if passphrase.is_empty() {
            return Err(KeyError::EmptyPassphrase);
        }
        self.inner
            .to_pkcs8_encrypted_pem(passphrase, LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn id(&self) -> KeyId {
        self.public.id
    }

    /// RSASSA-PSS with SHA-256 (salt of 32 bytes, blinded with the OS random source) over
    /// `message`. Used for audit checkpoints, never for recordings.
    pub fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.inner
            .sign(rsa::Pss::<Sha256>::new(), &Sha256::digest(message))
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) decryption; `None` when the ciphertext
    /// was not made under this key (or was altered). The reason is deliberately not detailed.
    pub(crate) fn oaep_decrypt(&self, wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.inner
            .oaep_decrypt::<Sha256>(wrapped)
            .ok()
            .map(Zeroizing::new)
    }
}

/// True when the PEM text is a passphrase-protected PKCS#8 key.
pub fn is_encrypted_pem(pem: &str) -> bool {
    pem.contains(ENCRYPTED_PKCS8_LABEL)
}

/// Private keys indexed by key id: what the portal and the decrypting jobs load.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, PrivateKey>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; a key already present under the same id is replaced (it is the same key).
    pub fn insert(&mut self, key: PrivateKey) -> KeyId {
        let id = key.id();
        self.keys.insert(id, key);
        id
    }

    pub fn get(&self, id: &KeyId) -> Result<&PrivateKey, KeyError> {
        self.keys.get(id).ok_or(KeyError::UnknownKeyId(*id))
    }

    pub fn contains(&self, id: &KeyId) -> bool {
        self.keys.contains_key(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Loads one private key PEM file into the ring.
    pub fn load_file(&mut self, path: &Path, passphrase: Option<&[u8]>) -> Result<KeyId, KeyError> {
        Ok(self.insert(PrivateKey::read_pem_file(path, passphrase)?))
    }

    /// Loads every file of `dir` that holds a PKCS#8 private key PEM (protected or not);
    /// other files (public keys, READMEs, Kubernetes `..data` links to directories) are
    /// skipped. A file that looks like a private key but fails to load is an error, so a
    /// damaged key is never silently missing from the ring.
    pub fn load_dir(&mut self, dir: &Path, passphrase: Option<&[u8]>) -> Result<usize, KeyError> {
        let entries = std::fs::read_dir(dir).map_err(|source| KeyError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| KeyError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut loaded = 0;
        for path in paths {
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let text = Zeroizing::new(text);
            let Ok(text) = std::str::from_utf8(&text) else {
                continue;
            };
            if !(text.contains(PKCS8_LABEL) || text.contains(ENCRYPTED_PKCS8_LABEL)) {
                continue;
            }
            let key = PrivateKey::from_pem(text, passphrase).map_err(|e| in_file(&path, e))?;
            self.insert(key);
            loaded += 1;
        }
        Ok(loaded)
    }
}

fn read_text(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
}

fn in_file(path: &Path, e: KeyError) -> KeyError {
    KeyError::File {
        path: path.to_owned(),
        source: Box::new(e),
    }
}
