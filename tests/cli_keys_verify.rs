//! `callvault keys` and `callvault verify`, run as the real binary against files written
//! by the store's recording writer.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use callvault_store::format::{self, RecordingWriter, WriterOptions};
use callvault_store::keys::PublicKey;

fn callvault(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(args)
        .env_remove("CALLVAULT_KEY_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .expect("run callvault")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn key_id_from(out: &Output) -> String {
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap_or_else(|| panic!("no key id printed: {stdout}"))
        .trim()
        .to_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Writes `plain` as a recording for the public key in `dir/public.pem`; `finish` false
/// simulates a recorder killed mid-call.
fn write_recording(dir: &Path, path: &Path, plain: &[u8], finish: bool) -> Option<format::Summary> {
    let key = PublicKey::read_pem_file(&dir.join("public.pem")).expect("public key");
    let file = std::fs::File::create(path).expect("create");
    let mut w =
        RecordingWriter::new(file, &key, WriterOptions { chunk_size: 4096 }).expect("writer");
    w.write_all(plain).expect("write");
    if finish {
        Some(w.finish(&format::sha256(b"metadata")).expect("finish").1)
    } else {
        None
    }
}

#[test]
fn generate_write_verify_and_detect_tampering() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = tmp.path().join("keys");
    let out = callvault(&["keys", "generate", "--out", p(&keys)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_id = key_id_from(&out);
    let public = PublicKey::read_pem_file(&keys.join("public.pem")).expect("public");
    assert_eq!(key_id, public.id().to_hex());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("private.pem"))
            .expect("private.pem")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private key must be owner-only");
    }
    assert!(
        !text(&out.stdout).contains("PRIVATE KEY") && !text(&out.stderr).contains("PRIVATE KEY")
    );
    // A second generate does not overwrite the key pair.
    assert!(
        !callvault(&["keys", "generate", "--out", p(&keys)])
            .status
            .success()
    );

    let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let rec = tmp.path().join("call.cvr");
    let summary = write_recording(&keys, &rec, &plain, true).expect("summary");
    let ogg = tmp.path().join("call.ogg");
    let private = keys.join("private.pem");
    let out = callvault(&[
        "verify",
        p(&rec),
        "--key",
        p(&private),
        "--out",
        p(&ogg),
        "--seal",
        &summary.seal.to_hex(),
        "--metadata-sha256",
        &hex::encode(format::sha256(b"metadata")),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(&format!(
        "plaintext sha256: {}",
        hex::encode(format::sha256(&plain))
    )));
    assert!(stdout.contains("plaintext length: 100000 bytes"));
    assert!(stdout.contains(&format!("key id: {key_id}")));
    assert!(stdout.contains("seal: valid"));
    assert_eq!(std::fs::read(&ogg).expect("decrypted"), plain);

    // A forged row (other metadata) does not match the seal.
    let out = callvault(&[
        "verify",
        p(&rec),
        "--key",
        p(&private),
        "--seal",
        &summary.seal.to_hex(),
        "--metadata-sha256",
        &hex::encode(format::sha256(b"forged metadata")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("TAMPERED"));

    // One flipped byte in the audio: exit 1, a clear message, no decrypted file left.
    let mut bytes = std::fs::read(&rec).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let bad = tmp.path().join("bad.cvr");
    std::fs::write(&bad, &bytes).expect("write");
    let bad_out = tmp.path().join("bad.ogg");
    let out = callvault(&[
        "verify",
        p(&bad),
        "--key",
        p(&private),
        "--out",
        p(&bad_out),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("TAMPERED") && stderr.contains("failed authentication"));
    assert!(!bad_out.exists(), "no unauthenticated audio may be written");
    assert_eq!(
        std::fs::read_dir(tmp.path())
            .expect("ls")
            .filter(|e| e
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains("partial")))
            .count(),
        0
    );

    // Truncated: exit 1 and says so.
    let original = std::fs::read(&rec).expect("read");
    let short = tmp.path().join("short.cvr");
    std::fs::write(&short, &original[..original.len() - 1000]).expect("write");
    let out = callvault(&["verify", p(&short), "--key", p(&private)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("truncated") || text(&out.stderr).contains("TAMPERED"));

    // The wrong key: exit 2, naming the key the file needs.
    let other = tmp.path().join("other");
    assert!(
        callvault(&["keys", "generate", "--out", p(&other)])
            .status
            .success()
    );
    let out = callvault(&["verify", p(&rec), "--key", p(&other.join("private.pem"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&key_id), "{}", text(&out.stderr));

    // A recording whose writer was killed: rejected normally, recovered on request.
    let cut = tmp.path().join("killed.cvr");
    assert!(write_recording(&keys, &cut, &plain, false).is_none());
    let out = callvault(&["verify", p(&cut), "--key", p(&private)]);
    assert_eq!(out.status.code(), Some(1));
    let out = callvault(&["verify", p(&cut), "--key", p(&private), "--recover"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let recovered = 100_000 / 4096 * 4096;
    assert!(text(&out.stdout).contains(&format!(
        "plaintext sha256: {}",
        hex::encode(format::sha256(&plain[..recovered]))
    )));
    assert!(text(&out.stdout).contains("final chunk MISSING"));
}

#[test]
fn export_and_import_round_trip_with_a_passphrase_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = tmp.path().join("keys");
    let out = callvault(&["keys", "generate", "--out", p(&keys), "--bits", "3072"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_id = key_id_from(&out);
    let pass = tmp.path().join("pass.txt");
    std::fs::write(&pass, "s3cret passphrase\n").expect("pass");

    let protected = tmp.path().join("protected.pem");
    let out = callvault(&[
        "keys",
        "export",
        "--key",
        p(&keys.join("private.pem")),
        "--out",
        p(&protected),
        "--passphrase-file",
        p(&pass),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(key_id_from(&out), key_id);
    let pem = std::fs::read_to_string(&protected).expect("protected");
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    // The protected key verifies recordings directly, passphrase from the environment.
    let plain = b"a short call".repeat(500);
    let rec = tmp.path().join("c.cvr");
    write_recording(&keys, &rec, &plain, true);
    let out = Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(["verify", p(&rec), "--key", p(&protected)])
        .env("CALLVAULT_KEY_PASSPHRASE", "s3cret passphrase")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let wrong = tmp.path().join("wrong.txt");
    std::fs::write(&wrong, "not it").expect("wrong");
    let imported = tmp.path().join("imported.pem");
    let out = callvault(&[
        "keys",
        "import",
        "--in",
        p(&protected),
        "--out",
        p(&imported),
        "--passphrase-file",
        p(&wrong),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("wrong passphrase"));
    assert!(!imported.exists());

    let out = callvault(&[
        "keys",
        "import",
        "--in",
        p(&protected),
        "--out",
        p(&imported),
        "--passphrase-file",
        p(&pass),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(key_id_from(&out), key_id);
    let out = callvault(&["verify", p(&rec), "--key", p(&imported)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&hex::encode(format::sha256(&plain))));

    // No passphrase source and no terminal: a clear failure, never a hang.
    let out = callvault(&[
        "keys",
        "import",
        "--in",
        p(&protected),
        "--out",
        p(&tmp.path().join("x.pem")),
    ]);
    assert!(!out.status.success());
}
