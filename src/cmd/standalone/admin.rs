//! The first admin: a local account created on first start, so a fresh installation can be
//! signed into at once. A generated password must be changed at first sign-in.

use std::path::Path;

use anyhow::Context as _;
use callvault_store::db::Db;
use callvault_store::db::NewUser;

use super::{FIRST_ADMIN, TENANT};

/// What happened to the first admin at this start.
#[derive(Debug)]
pub enum FirstAdmin {
    /// Created now with a generated password, shown once.
    Created {
        /// The generated password.
        password: String,
    },
    /// Created now with the password from `--admin-password-file`.
    FromFile,
    /// The account existed already.
    Exists,
}

/// Creates the first admin unless the account exists.
pub async fn ensure_first_admin(
    db: &Db,
    password_file: Option<&Path>,
) -> anyhow::Result<FirstAdmin> {
    if db
        .user_by_username(TENANT, FIRST_ADMIN)
        .await
        .context("looking up the first admin")?
        .is_some()
    {
        return Ok(FirstAdmin::Exists);
    }
    let (password, outcome) = match password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let password = text.trim_end_matches(['\r', '\n']).to_owned();
            if let Some(problem) = callvault_portal::auth::password_problem(FIRST_ADMIN, &password)
            {
                anyhow::bail!("the password in {}: {problem}", path.display());
            }
            (password, FirstAdmin::FromFile)
        }
        None => {
            let password = generated_password();
            (password.clone(), FirstAdmin::Created { password })
        }
    };
    let hash = callvault_portal::auth::hash_password(&password)
        .map_err(|e| anyhow::anyhow!("hashing the first admin's password: {e}"))?;
    let mut user = NewUser::local(FIRST_ADMIN, "Administrator");
    user.password_hash = Some(hash);
    // A password someone saw on a terminal is changed at first sign-in; one the installer chose
    // in a file is theirs already.
    user.must_change_password = matches!(outcome, FirstAdmin::Created { .. });
    db.create_user(TENANT, &user)
        .await
        .context("creating the first admin")?;
    Ok(outcome)
}

/// 20 characters from an unambiguous alphabet: about 115 bits, easy to type from a terminal.
fn generated_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // The portal's token is 32 random bytes in hex; its bytes, mapped onto the alphabet (the
    // modulo bias of 256 % 56 costs a fraction of a bit each).
    let bytes = hex::decode(callvault_portal::auth::new_token()).unwrap_or_default();
    bytes
        .into_iter()
        .take(20)
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}
