//! Standalone's recording keys: one key pair per `encryption.keySecretRef.name`, kept under
//! `<data>/keys/<name>/`, created on first start with the private key passphrase-protected.
//!
//! In a cluster the Secret holds the public key and the private key lives elsewhere; here both
//! are on the one machine, so the private key is never written unprotected. The key ids are
//! granted to the first admin through a generated AccessProfile (see [`grant_file`]), because
//! DESIGN's rule is that no admin permission reaches audio without a key grant.
//!
//! The same passphrase protects the key that signs the audit chain's checkpoints
//! (`<data>/audit/checkpoint-key.pem`): the database never holds it, so an audit trail
//! rewritten in the database file is detected up to the last checkpoint, as in a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use callvault_crds::ResourceSet;
use callvault_store::keys::{KeyId, KeyRing, PrivateKey};

use crate::cmd::keys::{PassphraseArgs, write_secret_file};

/// File name of the passphrase-protected private key in each key directory.
const PRIVATE_FILE: &str = "private.pem";
/// The audit checkpoint key, under `<data>`: apart from `keys/`, whose directories are named
/// by the profiles.
const AUDIT_KEY_FILE: &str = "audit/checkpoint-key.pem";
/// The generated AccessProfile granting standalone's keys (in `<data>/resources/`).
pub const GRANT_FILE: &str = "key-grants.yaml";
/// Size of keys standalone creates (DESIGN §6 default).
const BITS: usize = 2048;

/// One key pair a RecordingProfile refers to.
#[derive(Debug, Clone)]
pub struct ProfileKey {
    /// The key's id (hex SHA-256 of the SPKI DER).
    pub id: KeyId,
    /// The public key file the recorder reads.
    pub public_path: PathBuf,
}

/// The keys of a resource set: public keys by `keySecretRef.name`, and the private ones in a ring
/// for the portal and the jobs.
#[derive(Debug)]
pub struct Keys {
    /// By `keySecretRef.name`.
    pub by_name: BTreeMap<String, ProfileKey>,
    /// Every private key, unlocked.
    pub ring: KeyRing,
    /// The key that signs audit checkpoints, unlocked; `None` while no profile asks for a key
    /// (no passphrase is read then).
    pub audit: Option<PrivateKey>,
}

/// Makes sure every key the profiles name exists, creating missing ones; unlocks them all with
/// one passphrase (asked twice when a key is created, as for any new secret).
pub fn ensure(data: &Path, set: &ResourceSet, passphrase: &PassphraseArgs) -> anyhow::Result<Keys> {
    let mut wanted: BTreeMap<&str, &str> = BTreeMap::new();
    for profile in set.recording_profiles.values() {
        let r = &profile.spec.encryption.key_secret_ref;
        wanted.insert(&r.name, &r.key);
    }
    let missing = wanted
        .keys()
        .any(|name| !data.join("keys").join(name).join(PRIVATE_FILE).exists());
    let pass = if wanted.is_empty() {
        None
    } else {
        Some(passphrase.read(missing)?)
    };
    let mut keys = Keys {
        by_name: BTreeMap::new(),
        ring: KeyRing::new(),
        audit: None,
    };
    let Some(pass) = pass else {
        return Ok(keys);
    };
    for (name, public_file) in wanted {
        let dir = data.join("keys").join(name);
        let private_path = dir.join(PRIVATE_FILE);
        let public_path = dir.join(public_file);
        let private = unlock_or_create(
            &private_path,
            pass.as_bytes(),
            &format!("recording key {name:?}"),
        )?;
        // The public key is derived each start, so a lost or edited copy is put right.
        let public_pem = private.public_key().to_pem()?;
        if std::fs::read_to_string(&public_path).ok().as_deref() != Some(public_pem.as_str()) {
            std::fs::write(&public_path, public_pem)
                .with_context(|| format!("writing {}", public_path.display()))?;
        }
        let id = keys.ring.insert(private);
        keys.by_name
            .insert(name.to_owned(), ProfileKey { id, public_path });
    }
    keys.audit = Some(unlock_or_create(
        &data.join(AUDIT_KEY_FILE),
        pass.as_bytes(),
        "audit checkpoint key",
    )?);
    Ok(keys)
}

/// Unlocks the passphrase-protected private key at `path`, or creates it there on first start.
fn unlock_or_create(path: &Path, pass: &[u8], what: &str) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        return PrivateKey::read_pem_file(path, Some(pass)).with_context(|| {
            format!(
                "unlocking {} (is it the passphrase of the first start?)",
                path.display()
            )
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = PrivateKey::generate(BITS)?;
    let protected = key.to_encrypted_pem(pass)?;
    write_secret_file(path, protected.as_bytes(), false)?;
    eprintln!(
        "created {what} (id {}) in {}; its private key is protected by your passphrase",
        key.id(),
        path.display()
    );
    Ok(key)
}

/// Writes the generated AccessProfile that grants standalone's keys to the first admin, a file
/// in `<data>/resources/` the user can read like any other resource. Only a key added since
/// the last start rewrites it, so an edit of a file that already grants every key stays.
/// Returns whether the file was written.
pub fn write_grant(dir: &Path, admin: &str, keys: &Keys) -> anyhow::Result<bool> {
    let path = dir.join(GRANT_FILE);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if keys
        .by_name
        .values()
        .all(|k| current.contains(&k.id.to_hex()))
        && !current.is_empty()
    {
        return Ok(false);
    }
    std::fs::write(&path, grant_file(admin, keys))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// The generated AccessProfile's YAML.
fn grant_file(admin: &str, keys: &Keys) -> String {
    let mut ids: Vec<String> = keys.by_name.values().map(|k| k.id.to_hex()).collect();
    ids.sort();
    ids.dedup();
    let mut out = String::from(
        "# Written by `callvault standalone`: grants the recording keys it created to the first\n\
         # admin. Playing, downloading or exporting audio needs such a grant in addition to the\n\
         # call scope and action. Edit or extend it like any other resource.\n\
         apiVersion: callvault.io/v1alpha1\n\
         kind: AccessProfile\n\
         metadata:\n  name: standalone-key-grants\n  namespace: default\n\
         spec:\n  description: Recording keys created by standalone, granted to the first admin\n",
    );
    out.push_str(&format!("  subjects:\n    users: [{admin}]\n  keys:\n"));
    for id in ids {
        out.push_str(&format!("    - \"{id}\"\n"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RESOURCES: &str = "
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: local, namespace: default}
spec: {type: filesystem, path: /var/lib/callvault/recordings}
---
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {name: agents, namespace: default}
spec:
  selector: {allUsers: true}
  storageTargetRef: {name: local}
  encryption: {keySecretRef: {name: k, key: public.pem}}
";

    fn passphrase(dir: &Path, text: &str) -> PassphraseArgs {
        let file = dir.join(format!("passphrase-{}", text.len()));
        std::fs::write(&file, format!("{text}\n")).unwrap();
        PassphraseArgs {
            passphrase_file: Some(file),
        }
    }

    #[test]
    fn the_audit_key_is_made_once_kept_protected_and_apart_from_the_recording_keys() {
        let data = tempfile::tempdir().unwrap();
        let set = ResourceSet::from_files([(Path::new("r.yaml"), RESOURCES)]).unwrap();
        let pass = passphrase(data.path(), "the first start's passphrase");
        let first = ensure(data.path(), &set, &pass).unwrap();
        let audit = first.audit.expect("an audit key");
        assert!(!first.ring.contains(&audit.id()), "not a recording key");
        let pem = std::fs::read_to_string(data.path().join(AUDIT_KEY_FILE)).unwrap();
        assert!(pem.contains("ENCRYPTED PRIVATE KEY"), "protected on disk");

        let again = ensure(data.path(), &set, &pass).unwrap();
        assert_eq!(
            again.audit.map(|k| k.id()),
            Some(audit.id()),
            "the same key"
        );
        let wrong = passphrase(data.path(), "another");
        let err = ensure(data.path(), &set, &wrong).unwrap_err();
        assert!(format!("{err:#}").contains("unlocking"), "{err:#}");
    }
}
