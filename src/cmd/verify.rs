//! `callvault verify`: decrypt a recording offline, check its integrity, print its digest.
//!
//! Exit status: 0 authenticated; 1 tampered (altered, truncated, extended, reordered, or not
//! matching the given digest/seal); 2 could not check (key missing, unreadable file, usage).
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use callvault_store::db::{Recording, SealedFields};
use callvault_store::format::{self, FileKey, FormatError, Header, Seal, SealFacts};
use callvault_store::keys::{KeyRing, is_encrypted_pem};

use super::keys::PassphraseArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encrypted recording (.cvr).
    pub file: PathBuf,
    /// The private key (PKCS#8 PEM, protected or not), or a directory of them.
    #[arg(long)]
    pub key: PathBuf,
    /// Write the decrypted audio here; written only once every chunk has authenticated.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub pass: PassphraseArgs,
    /// The recording's writer was killed (an `incomplete` recording): decrypt its complete
    /// chunks and report what was recovered.
    #[arg(long)]
    pub recover: bool,
    /// Expected plaintext SHA-256 (64 hex digits), e.g. from a download manifest.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The recording row's seal (64 hex digits); needs --metadata-sha256.
    #[arg(long, value_name = "HEX", requires = "metadata_sha256")]
    pub seal: Option<String>,
    /// The recording row's metadata SHA-256 (64 hex digits); needs --seal.
    #[arg(long, value_name = "HEX", requires = "seal")]
    pub metadata_sha256: Option<String>,
    /// The recording's row as JSON (the API's call details, a "keep encrypted" manifest
    /// entry, or the row itself): its digest and seal are checked, and so are its call
    /// details (parties, times, duration, direction, owner) against what was sealed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seal", "metadata_sha256", "sha256"])]
    pub row: Option<PathBuf>,
}

/// The row of `--row`, its digests parsed, with what its metadata digest covers.
struct Row {
    plaintext_sha256: [u8; 32],
    metadata_sha256: [u8; 32],
    seal: Seal,
    sealed: Option<SealedFields>,
}

fn read_row(path: &Path) -> anyhow::Result<Row> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(inner) = v.get_mut("recording") {
        v = inner.take();
    }
    let rec: Recording = serde_json::from_value(v)
        .with_context(|| format!("{} does not hold a recording row", path.display()))?;
    let field = |name: &str, value: &Option<String>| {
        value
            .clone()
            .with_context(|| format!("the row has no {name}: the recording is not sealed"))
    };
    let metadata_sha256 = parse_digest(&field("metadata_digest", &rec.metadata_digest)?)?;
    Ok(Row {
        plaintext_sha256: parse_digest(&field("sha256", &rec.sha256)?)?,
        seal: Seal::from_hex(&field("signature", &rec.signature)?)
            .context("the row's signature must be 64 hex digits")?,
        sealed: rec.sealed_fields(&metadata_sha256),
        metadata_sha256,
    })
}

const TAMPERED: u8 = 1;
const CANNOT_CHECK: u8 = 2;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let row = args.row.as_deref().map(read_row).transpose()?;
    let expected_sha = match &row {
        Some(r) => Some(r.plaintext_sha256),
        None => args.sha256.as_deref().map(parse_digest).transpose()?,
    };
    let seal = match (&args.seal, &args.metadata_sha256, &row) {
        (_, _, Some(r)) => Some((r.seal, r.metadata_sha256)),
        (Some(s), Some(m), None) => Some((
            Seal::from_hex(s).context("--seal must be 64 hex digits")?,
            parse_digest(m)?,
        )),
        _ => None,
    };
    if let Some(r) = &row
        && r.sealed.is_none()
    {
        eprintln!(
            "TAMPERED: {}: the row's call details (parties, numbers, names, times, duration, \
             direction or owner) differ from what was sealed",
            args.file.display()
        );
        return Ok(ExitCode::from(TAMPERED));
    }
    let ring = load_ring(&args.key, &args.pass)?;
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;

    let outcome = match &args.out {
        Some(out) => decrypt_to_file(&file, &ring, out, args.recover),
        None => decrypt(&file, &ring, std::io::sink(), args.recover),
    };
    let d = match outcome {
        Ok(d) => d,
        Err(e) => return Ok(report_error(&args.file, &e)),
    };

    println!("file: {}", args.file.display());
    println!("key id: {}", d.key_id);
    println!("plaintext length: {} bytes", d.plaintext_len);
    println!("plaintext sha256: {}", hex::encode(d.plaintext_sha256));
    if d.complete {
        println!("chunks: {} authenticated, final chunk present", d.chunks);
    } else {
        println!(
            "chunks: {} authenticated, final chunk MISSING (incomplete recording; {} torn bytes dropped)",
            d.chunks, d.discarded
        );
    }

    if let Some(want) = expected_sha
        && want != d.plaintext_sha256
    {
        eprintln!(
            "TAMPERED: {}: plaintext SHA-256 {} differs from the expected {}",
            args.file.display(),
            hex::encode(d.plaintext_sha256),
            hex::encode(want)
        );
        return Ok(ExitCode::from(TAMPERED));
    }
    if let Some((seal, metadata_sha256)) = seal {
        // Re-read the header from the start: decryption left the handle at the end.
        let header = (&file)
            .seek(SeekFrom::Start(0))
            .map_err(FormatError::from)
            .and_then(|_| Header::read_from(BufReader::new(&file)));
        let checked = header
            .and_then(|h| FileKey::open_with_ring(h, &ring))
            .and_then(|fk| {
                fk.verify_seal(
                    &SealFacts {
                        plaintext_len: d.plaintext_len,
                        plaintext_sha256: d.plaintext_sha256,
                        metadata_sha256,
                        complete: d.complete,
                    },
                    &seal,
                )
            });
        if let Err(e) = checked {
            return Ok(report_error(&args.file, &e));
        }
        println!("seal: valid for this file and the given metadata");
        if let Some(covers) = row.as_ref().and_then(|r| r.sealed) {
            println!("sealed: {}", covers.describe());
        }
    }
    if let Some(out) = &args.out {
        println!("decrypted to: {}", out.display());
    }
    println!(
        "integrity: {}",
        if d.complete {
            "OK"
        } else {
            "OK up to the last complete chunk"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_digest(s: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out)
        .with_context(|| format!("{s:?} is not a SHA-256 in hex (64 digits)"))?;
    Ok(out)
}

fn report_error(file: &Path, e: &FormatError) -> ExitCode {
    if e.is_tamper() {
        eprintln!("TAMPERED: {}: {e}", file.display());
        ExitCode::from(TAMPERED)
    } else {
        eprintln!("cannot verify {}: {e}", file.display());
        ExitCode::from(CANNOT_CHECK)
    }
}

fn load_ring(path: &Path, pass: &PassphraseArgs) -> anyhow::Result<KeyRing> {
    let mut ring = KeyRing::new();
    if path.is_dir() {
        let needs_pass = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .any(|text| is_encrypted_pem(&zeroize::Zeroizing::new(text)));
        let passphrase = needs_pass.then(|| pass.read(false)).transpose()?;
        let n = ring.load_dir(path, passphrase.as_ref().map(|p| p.as_bytes()))?;
        if n == 0 {
            anyhow::bail!("no private key found in {}", path.display());
        }
    } else {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let passphrase = is_encrypted_pem(&text)
            .then(|| pass.read(false))
            .transpose()?;
        ring.load_file(path, passphrase.as_ref().map(|p| p.as_bytes()))?;
    }
    Ok(ring)
}

struct Outcome {
    key_id: callvault_store::keys::KeyId,
    plaintext_len: u64,
    plaintext_sha256: [u8; 32],
    chunks: u64,
    complete: bool,
    discarded: u64,
}

fn decrypt<W: Write>(
    file: &File,
    ring: &KeyRing,
    out: W,
    recover: bool,
) -> Result<Outcome, FormatError> {
    let input = BufReader::new(file);
    if recover {
        let r = format::recover_truncated(input, ring, out)?;
        Ok(Outcome {
            key_id: r.key_id,
            plaintext_len: r.plaintext_len,
            plaintext_sha256: r.plaintext_sha256,
            chunks: r.chunks,
            complete: r.complete,
            discarded: r.discarded_bytes,
        })
    } else {
        let d = format::decrypt_stream(input, ring, out)?;
        Ok(Outcome {
            key_id: d.key_id,
            plaintext_len: d.plaintext_len,
            plaintext_sha256: d.plaintext_sha256,
            chunks: d.chunks,
            complete: true,
            discarded: 0,
        })
    }
}

/// Decrypts into a private temporary file next to `out` and renames it into place only
/// after the whole recording authenticated, so no unauthenticated audio is ever left.
fn decrypt_to_file(
    file: &File,
    ring: &KeyRing,
    out: &Path,
    recover: bool,
) -> Result<Outcome, FormatError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recording".to_owned());
    let tmp = out.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let tmp_file = opts.open(&tmp)?;
    let result = decrypt(file, ring, BufWriter::new(&tmp_file), recover)
        .and_then(|o| {
            tmp_file.sync_all()?;
            Ok(o)
        })
        .and_then(|o| {
            std::fs::rename(&tmp, out)?;
            Ok(o)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
