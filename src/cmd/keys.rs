//! `callvault keys`: generate, export (passphrase-protect) and import recording keys, and
//! reset a key holder's portal password offline (the portal refuses to).
//!
//! Passphrases never come from arguments (they would show in `ps` and shell history): only
//! from `--passphrase-file`, the `CALLVAULT_KEY_PASSPHRASE` variable, or a terminal prompt.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use callvault_store::keys::{ALLOWED_BITS, DEFAULT_BITS, PrivateKey, is_encrypted_pem};
use zeroize::Zeroizing;

/// Environment variable holding a key passphrase (for automation; prefer a file).
pub const PASSPHRASE_ENV: &str = "CALLVAULT_KEY_PASSPHRASE";

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair: DIR/private.pem (PKCS#8, mode 0600) and DIR/public.pem (SPKI).
    /// Prints the key id. The public key goes to the RecordingProfile; the private key only
    /// to the portal and the jobs that decrypt.
    Generate {
        /// Directory to write the key pair into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = DEFAULT_BITS)]
        bits: usize,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Write a passphrase-protected copy of a private key (PKCS#8, PBES2 with scrypt).
    Export {
        /// Unprotected private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Protected key file to write (mode 0600).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Remove the passphrase protection of an exported private key.
    Import {
        /// Passphrase-protected private key (ENCRYPTED PRIVATE KEY PEM).
        #[arg(long = "in")]
        input: PathBuf,
        /// Unprotected private key file to write (mode 0600).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Set the portal password of an account that holds a key grant, which the portal
    /// refuses to reset (its admins could otherwise sign in as a key holder). Proves custody
    /// of a private key first, writes straight to the database, ends the account's sessions
    /// and appends a `password.reset` audit entry naming the key. The new password comes
    /// from --password-file or a prompt, never from an argument.
    ResetPassword {
        /// A private key (PKCS#8 PEM, protected or not) whose holder resets the password.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
        /// File holding the database URL (as mounted for the portal).
        #[arg(long)]
        database_url_file: PathBuf,
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The account whose password is set.
        #[arg(long)]
        username: String,
        /// File whose content (one trailing newline removed) is the new password; otherwise
        /// a prompt.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The user must change the password at their next sign-in.
        #[arg(long)]
        must_change: bool,
    },
}

/// Where a passphrase comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct PassphraseArgs {
    /// File whose content (one trailing newline removed) is the passphrase. Otherwise
    /// CALLVAULT_KEY_PASSPHRASE, otherwise an interactive prompt.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    /// Reads the passphrase; `confirm` asks twice when prompting (for a new passphrase).
    pub fn read(&self, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
        let pass = if let Some(path) = &self.passphrase_file {
            let mut text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading passphrase file {}", path.display()))?,
            );
            strip_newline(&mut text);
            text
        } else if let Some(v) = std::env::var_os(PASSPHRASE_ENV) {
            Zeroizing::new(
                v.into_string()
                    .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"))?,
            )
        } else {
            let first = Zeroizing::new(rpassword::prompt_password("Key passphrase: ").context(
                "no passphrase: use --passphrase-file, CALLVAULT_KEY_PASSPHRASE or a terminal",
            )?);
            if confirm {
                let again = Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ")?);
                if *first != *again {
                    bail!("the passphrases differ");
                }
            }
            first
        };
        if pass.is_empty() {
            bail!("the passphrase is empty");
        }
        Ok(pass)
    }
}

fn strip_newline(s: &mut String) {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { out, bits, force } => generate(&out, bits, force),
        KeysCommand::Export {
            key,
            out,
            pass,
            force,
        } => export(&key, &out, &pass, force),
        KeysCommand::Import {
            input,
            out,
            pass,
            force,
        } => import(&input, &out, &pass, force),
        KeysCommand::ResetPassword {
            key,
            pass,
            database_url_file,
            tenant,
            username,
            password_file,
            must_change,
        } => {
            let pem = Zeroizing::new(
                std::fs::read_to_string(&key)
                    .with_context(|| format!("reading {}", key.display()))?,
            );
            let passphrase = is_encrypted_pem(&pem)
                .then(|| pass.read(false))
                .transpose()?;
            let key = PrivateKey::from_pem(&pem, passphrase.as_ref().map(|p| p.as_bytes()))
                .with_context(|| format!("loading {}", key.display()))?;
            let password = match password_file {
                Some(path) => {
                    let mut text = Zeroizing::new(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    );
                    strip_newline(&mut text);
                    text
                }
                None => {
                    let first = Zeroizing::new(rpassword::prompt_password("New password: ")?);
                    let again = Zeroizing::new(rpassword::prompt_password("Repeat it: ")?);
                    if *first != *again {
                        bail!("the passwords differ");
                    }
                    first
                }
            };
            tokio::runtime::Runtime::new()?.block_on(reset_password(
                &key,
                &database_url_file,
                &tenant,
                &username,
                &password,
                must_change,
            ))
        }
    }
}

async fn reset_password(
    key: &PrivateKey,
    database_url_file: &Path,
    tenant: &str,
    username: &str,
    password: &str,
    must_change: bool,
) -> anyhow::Result<ExitCode> {
    use callvault_store::db::NewAuditEntry;
    if let Some(problem) = callvault_portal::auth::password_problem(username, password) {
        bail!("{problem}");
    }
    let db = callvault_jobs::vault::connect_db(database_url_file).await?;
    let user = db
        .user_by_username(tenant, username)
        .await?
        .with_context(|| format!("no user {username:?} in tenant {tenant}"))?;
    let hash = callvault_portal::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    db.set_password_hash(tenant, user.id, &hash, must_change)
        .await?;
    db.revoke_user_sessions(tenant, user.id).await?;
    db.append_audit(
        tenant,
        &NewAuditEntry::new(format!("key holder {}", key.id()), "password.reset")
            .item("user", user.id.to_string())
            .details(serde_json::json!({
                "mode": "offline", "username": user.username, "key_id": key.id().to_hex(),
                "must_change": must_change,
            })),
    )
    .await?;
    println!("password of {username:?} set; every session of theirs ended");
    Ok(ExitCode::SUCCESS)
}

fn generate(dir: &Path, bits: usize, force: bool) -> anyhow::Result<ExitCode> {
    if !ALLOWED_BITS.contains(&bits) {
        bail!("--bits {bits} is not supported: use 2048, 3072 or 4096");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let private_path = dir.join("private.pem");
    let public_path = dir.join("public.pem");
    for p in [&private_path, &public_path] {
        if p.exists() && !force {
            bail!("{} exists; pass --force to replace it", p.display());
        }
    }
    let key = PrivateKey::generate(bits)?;
    write_secret_file(&private_path, key.to_pkcs8_pem()?.as_bytes(), force)?;
    let public_pem = key.public_key().to_pem()?;
    std::fs::write(&public_path, public_pem)
        .with_context(|| format!("writing {}", public_path.display()))?;
    eprintln!(
        "wrote {} (keep it secret) and {}",
        private_path.display(),
        public_path.display()
    );
    println!("key id: {}", key.id());
    Ok(ExitCode::SUCCESS)
}

fn export(key: &Path, out: &Path, pass: &PassphraseArgs, force: bool) -> anyhow::Result<ExitCode> {
    let pem = Zeroizing::new(
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?,
    );
    if is_encrypted_pem(&pem) {
        bail!("{} is already passphrase-protected", key.display());
    }
    let private =
        PrivateKey::from_pkcs8_pem(&pem).with_context(|| format!("reading {}", key.display()))?;
    check_writable(out, force)?;
    let passphrase = pass.read(true)?;
    let protected = private.to_encrypted_pem(passphrase.as_bytes())?;
    write_secret_file(out, protected.as_bytes(), force)?;
    eprintln!("wrote {} (passphrase-protected PKCS#8)", out.display());
    println!("key id: {}", private.id());
    Ok(ExitCode::SUCCESS)
}

fn import(
    input: &Path,
    out: &Path,
    pass: &PassphraseArgs,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let pem = Zeroizing::new(
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?,
    );
    if !is_encrypted_pem(&pem) {
        bail!(
            "{} is not a passphrase-protected key (expected \"BEGIN ENCRYPTED PRIVATE KEY\")",
            input.display()
        );
    }
    check_writable(out, force)?;
    let passphrase = pass.read(false)?;
    let private = PrivateKey::from_encrypted_pem(&pem, passphrase.as_bytes())
        .with_context(|| format!("reading {}", input.display()))?;
    write_secret_file(out, private.to_pkcs8_pem()?.as_bytes(), force)?;
    eprintln!("wrote {} (unprotected PKCS#8, mode 0600)", out.display());
    println!("key id: {}", private.id());
    Ok(ExitCode::SUCCESS)
}

fn check_writable(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    Ok(())
}

/// Writes a secret with owner-only permissions from the first byte on (never world-readable
/// even briefly). With `force`, an existing file is replaced.
pub fn write_secret_file(path: &Path, data: &[u8], force: bool) -> anyhow::Result<()> {
    if force && path.exists() {
        std::fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))?;
    }
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
