//! Recording keys: generation, PEM forms, passphrase protection, key ids and the key ring.

use callvault_store::keys::{KeyError, KeyId, KeyRing, PrivateKey, PublicKey};
use rsa::sha2::{Digest, Sha256};

#[test]
fn key_id_is_the_sha256_of_the_spki_der_and_survives_pem_round_trips() {
    let key = PrivateKey::generate(2048).expect("generate");
    assert_eq!(key.public_key().bits(), 2048);
    let public_pem = key.public_key().to_pem().expect("public pem");
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));

    let (label, der) = pkcs8::der::pem::decode_vec(public_pem.as_bytes()).expect("pem");
    assert_eq!(label, "PUBLIC KEY");
    let expected: [u8; 32] = Sha256::digest(&der).into();
    assert_eq!(key.id(), KeyId(expected));
    assert_eq!(key.id().to_hex().len(), 64);
    assert_eq!(key.id().to_hex().parse::<KeyId>().expect("parse"), key.id());

    let public = PublicKey::from_pem(&public_pem).expect("parse public");
    assert_eq!(public.id(), key.id());
    let private_pem = key.to_pkcs8_pem().expect("private pem");
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = PrivateKey::from_pkcs8_pem(&private_pem).expect("parse private");
    assert_eq!(again.id(), key.id());

    // Secrets never reach Debug output.
    let debug = format!("{key:?}");
    assert!(debug.contains(&key.id().to_hex()));
    let body_line = private_pem.lines().nth(1).expect("pem body");
    assert!(!debug.contains(body_line));
}

#[test]
fn passphrase_protected_export_round_trips_and_rejects_wrong_passphrases() {
    let key = PrivateKey::generate(2048).expect("generate");
    let protected = key
        .to_encrypted_pem(b"correct horse battery staple")
        .expect("export");
    assert!(protected.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let unprotected = key.to_pkcs8_pem().expect("pem");
    assert!(!protected.contains(unprotected.lines().nth(1).expect("line")));

    let back = PrivateKey::from_encrypted_pem(&protected, b"correct horse battery staple")
        .expect("import");
    assert_eq!(back.id(), key.id());
    assert!(matches!(
        PrivateKey::from_encrypted_pem(&protected, b"wrong"),
        Err(KeyError::WrongPassphrase)
    ));
    assert!(matches!(
        PrivateKey::from_pem(&protected, None),
        Err(KeyError::PassphraseRequired)
    ));
    assert!(matches!(
        PrivateKey::from_pkcs8_pem(&protected),
        Err(KeyError::PassphraseRequired)
    ));
    assert!(matches!(
        key.to_encrypted_pem(b""),
        Err(KeyError::EmptyPassphrase)
    ));
}

#[test]
fn only_2048_3072_and_4096_bit_keys_are_accepted() {
    for bits in [0usize, 1024, 2047, 8192] {
        assert!(matches!(
            PrivateKey::generate(bits),
            Err(KeyError::UnsupportedBits(b)) if b == bits
        ));
    }
    // A valid but too small public key from elsewhere is refused on import.
    let small = rsa::PrivateKey::new(&mut getrandom::SysRng, 1024).expect("1024-bit key");
    let pem = rsa::pkcs8::EncodePublicKey::to_public_key_pem(
        &small.to_public_key(),
        pkcs8::LineEnding::LF,
    )
    .expect("pem");
    assert!(matches!(
        PublicKey::from_pem(&pem),
        Err(KeyError::UnsupportedBits(1024))
    ));
    assert!(matches!(
        PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"),
        Err(KeyError::PublicKeyPem(_))
    ));
    assert!(matches!("xyz".parse::<KeyId>(), Err(KeyError::BadKeyId(_))));
}

#[test]
fn key_ring_loads_a_secret_directory_and_finds_keys_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = PrivateKey::generate(2048).expect("a");
    let b = PrivateKey::generate(3072).expect("b");
    std::fs::write(
        dir.path().join("a.pem"),
        a.to_pkcs8_pem().expect("pem").as_bytes(),
    )
    .expect("write a");
    std::fs::write(
        dir.path().join("b.pem"),
        b.to_encrypted_pem(b"pw").expect("pem").as_bytes(),
    )
    .expect("write b");
    std::fs::write(
        dir.path().join("public.pem"),
        a.public_key().to_pem().expect("pem"),
    )
    .expect("write public");
    std::fs::write(dir.path().join("README"), "not a key").expect("write readme");

    let mut ring = KeyRing::new();
    assert_eq!(ring.load_dir(dir.path(), Some(b"pw")).expect("load"), 2);
    assert!(ring.contains(&a.id()) && ring.contains(&b.id()));
    assert_eq!(ring.get(&b.id()).expect("b").public_key().bits(), 3072);
    let stranger = KeyId([9u8; 32]);
    assert!(matches!(ring.get(&stranger), Err(KeyError::UnknownKeyId(id)) if id == stranger));

    // A protected key without its passphrase is an error, not a silently smaller ring.
    let mut ring = KeyRing::new();
    let err = ring
        .load_dir(dir.path(), None)
        .expect_err("needs passphrase");
    assert!(err.to_string().contains("b.pem"), "{err}");

    // A damaged private key file is reported with its path.
    std::fs::write(
        dir.path().join("c.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write c");
    let err = KeyRing::new()
        .load_dir(dir.path(), Some(b"pw"))
        .expect_err("damaged");
    assert!(err.to_string().contains("c.pem"), "{err}");
}
