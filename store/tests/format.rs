//! The encrypted recording format against real files and buffers: round trips, random
//! access, and every kind of damage a stored recording can suffer.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use callvault_store::format::{
    self, FileKey, FormatError, Header, Layout, RangeSource, Reader, RecordingWriter, SealFacts,
    Verdict, WriterOptions, decrypt_stream, recover_truncated, verify,
};
use callvault_store::keys::{KeyRing, PrivateKey};
use proptest::prelude::*;

/// One RSA-2048 key per test binary: generation is the slow part, the format is not.
fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("generate test key"))
}

fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(key().clone());
    ring
}

const META: [u8; 32] = [7u8; 32];

/// Encrypts `plain`, feeding the writer in pieces of `piece` bytes.
fn encrypt(plain: &[u8], chunk_size: u32, piece: usize) -> (Vec<u8>, format::Summary) {
    let mut w = RecordingWriter::new(Vec::new(), key().public_key(), WriterOptions { chunk_size })
        .expect("writer");
    for part in plain.chunks(piece.max(1)) {
        w.write_all(part).expect("write");
    }
    w.finish(&META).expect("finish")
}

fn decrypt(file: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    decrypt_stream(file, &ring(), &mut out)?;
    Ok(out)
}

fn sha(data: &[u8]) -> [u8; 32] {
    format::sha256(data)
}

fn chunk_sizes() -> impl Strategy<Value = u32> {
    prop_oneof![Just(16u32), Just(17), Just(64), Just(1000), Just(4096)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_and_random_ranges(
        plain in prop::collection::vec(any::<u8>(), 0..6000),
        chunk_size in chunk_sizes(),
        piece in 1usize..3000,
        ranges in prop::collection::vec((any::<u64>(), any::<u64>()), 1..8),
    ) {
        let (file, summary) = encrypt(&plain, chunk_size, piece);
        prop_assert_eq!(summary.plaintext_len, plain.len() as u64);
        prop_assert_eq!(summary.plaintext_sha256, sha(&plain));
        prop_assert_eq!(summary.key_id, key().id());
        prop_assert_eq!(summary.ciphertext_len, file.len() as u64);
        let header = Header::parse(&file).expect("header");
        prop_assert_eq!(Layout::ciphertext_len_for(&header, plain.len() as u64), file.len() as u64);

        prop_assert_eq!(decrypt(&file).expect("decrypt"), plain.clone());

        let reader = Reader::open(file.as_slice(), &ring()).expect("open");
        prop_assert_eq!(reader.plaintext_len(), plain.len() as u64);
        let len = plain.len() as u64;
        for (a, b) in ranges {
            let (a, b) = if len == 0 { (0, 0) } else { (a % (len + 1), b % (len + 1)) };
            let (start, end) = (a.min(b), a.max(b));
            let got = reader.read_range(start, end).expect("range");
            prop_assert_eq!(&got[..], &plain[start as usize..end as usize]);
        }
        let err = reader.read_range(0, len + 1).expect_err("past the end");
        let out_of_bounds = matches!(err, FormatError::RangeOutOfBounds { .. });
        prop_assert!(out_of_bounds);
    }

    #[test]
    fn any_flipped_bit_is_detected(
        plain in prop::collection::vec(any::<u8>(), 0..3000),
        chunk_size in chunk_sizes(),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (mut file, _) = encrypt(&plain, chunk_size, 777);
        let i = pos.index(file.len());
        file[i] ^= 1 << bit;
        let err = decrypt(&file).expect_err("a flipped bit must not decrypt");
        prop_assert!(err.is_tamper() || matches!(err, FormatError::UnsupportedVersion(_)
            | FormatError::UnsupportedAead(_) | FormatError::UnsupportedKeyWrap(_)
            | FormatError::UnknownKeyId(_)), "unexpected error kind: {err}");
        prop_assert!(Reader::open(file.as_slice(), &ring())
            .and_then(|r| r.read_range(0, r.plaintext_len()))
            .is_err());
    }

    #[test]
    fn truncation_anywhere_is_rejected_and_recoverable(
        plain in prop::collection::vec(any::<u8>(), 1..3000),
        chunk_size in chunk_sizes(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (file, _) = encrypt(&plain, chunk_size, 500);
        let cut = cut.index(file.len()); // strictly shorter than the file
        let short = &file[..cut];
        let err = decrypt(short).expect_err("a truncated file must not decrypt");
        prop_assert!(err.is_tamper(), "truncation reported as {err}");
        prop_assert!(Reader::open(short, &ring()).is_err());

        let header_len = Header::parse(&file).expect("header").len();
        if cut >= header_len {
            let mut out = Vec::new();
            let rec = recover_truncated(short, &ring(), &mut out).expect("recover");
            prop_assert!(!rec.complete);
            let stride = chunk_size as usize + format::TAG_LEN;
            let whole_chunks = (cut - header_len) / stride;
            prop_assert_eq!(rec.chunks, whole_chunks as u64);
            prop_assert_eq!(out.len(), whole_chunks * chunk_size as usize);
            prop_assert_eq!(&out[..], &plain[..out.len()]);
            prop_assert_eq!(rec.plaintext_sha256, sha(&out));
            prop_assert_eq!(rec.valid_ciphertext_len + rec.discarded_bytes, cut as u64);
        }
    }
}

#[test]
fn swapped_duplicated_and_appended_chunks_are_detected() {
    let chunk = 64usize;
    let plain: Vec<u8> = (0..chunk * 5 + 10).map(|i| (i * 31 % 251) as u8).collect();
    let (file, _) = encrypt(&plain, chunk as u32, 100);
    let h = Header::parse(&file).expect("header").len();
    let stride = chunk + format::TAG_LEN;
    let at = |i: usize| h + i * stride..h + (i + 1) * stride;

    let mut swapped = file.clone();
    let (c1, c2) = (file[at(1)].to_vec(), file[at(2)].to_vec());
    swapped[at(1)].copy_from_slice(&c2);
    swapped[at(2)].copy_from_slice(&c1);
    assert!(matches!(
        decrypt(&swapped),
        Err(FormatError::ChunkAuth { index: 1 })
    ));

    let mut duplicated = file[..at(2).end].to_vec();
    duplicated.extend_from_slice(&file[at(1)]);
    duplicated.extend_from_slice(&file[at(2).end..]);
    assert!(decrypt(&duplicated).expect_err("duplicate").is_tamper());

    let mut dropped = file[..at(1).start].to_vec();
    dropped.extend_from_slice(&file[at(2).start..]);
    assert!(decrypt(&dropped).expect_err("dropped chunk").is_tamper());

    for extra in [1usize, 15, 16, stride, 3 * stride + 5] {
        let mut appended = file.clone();
        appended.extend(std::iter::repeat_n(0u8, extra));
        let err = decrypt(&appended).expect_err("appended bytes");
        assert!(err.is_tamper(), "{extra} appended bytes reported as {err}");
        assert!(Reader::open(appended.as_slice(), &ring()).is_err());
    }
}

#[test]
fn header_parser_names_the_problem() {
    let (file, _) = encrypt(b"hello", 64, 5);
    let hlen = Header::parse(&file).expect("header").len();

    let mut bad = file.clone();
    bad[0] = b'X';
    assert!(matches!(Header::parse(&bad), Err(FormatError::BadMagic)));
    assert!(matches!(
        Header::parse(b"OggS\0\x02"),
        Err(FormatError::BadMagic)
    ));

    let mut v2 = file.clone();
    v2[9] = 2;
    assert!(matches!(
        Header::parse(&v2),
        Err(FormatError::UnsupportedVersion(2))
    ));

    for cut in [0, 5, 11, 12, 61, hlen - 1] {
        match Header::parse(&file[..cut]) {
            Err(FormatError::TruncatedHeader { needed, got }) => {
                assert_eq!(got, cut);
                assert!(needed > cut);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }

    let mut aead = file.clone();
    aead[12] = 9;
    assert!(matches!(
        Header::parse(&aead),
        Err(FormatError::UnsupportedAead(9))
    ));
    let mut flags = file.clone();
    flags[15] = 1;
    assert!(matches!(
        Header::parse(&flags),
        Err(FormatError::ReservedNonZero { .. })
    ));
    let mut cs = file.clone();
    cs[16..20].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        Header::parse(&cs),
        Err(FormatError::BadChunkSize(0))
    ));
    let mut len = file.clone();
    len[10..12].copy_from_slice(&1000u16.to_be_bytes());
    assert!(matches!(
        Header::parse(&len),
        Err(FormatError::BadHeaderLen(1000))
    ));

    let writer = RecordingWriter::new(
        Vec::new(),
        key().public_key(),
        WriterOptions { chunk_size: 8 },
    );
    assert!(matches!(writer, Err(FormatError::BadChunkSize(8))));
}

#[test]
fn wrong_or_missing_key_fails_cleanly() {
    let (file, summary) = encrypt(b"a confidential call", 64, 7);
    let other = PrivateKey::generate(2048).expect("second key");
    let mut other_ring = KeyRing::new();
    other_ring.insert(other.clone());

    let mut out = Vec::new();
    match decrypt_stream(file.as_slice(), &other_ring, &mut out) {
        Err(FormatError::UnknownKeyId(id)) => assert_eq!(id, summary.key_id),
        other => panic!("expected UnknownKeyId, got {other:?}"),
    }
    assert!(out.is_empty(), "nothing may be written without the key");
    assert!(matches!(
        Reader::open(file.as_slice(), &KeyRing::new()),
        Err(FormatError::UnknownKeyId(_))
    ));

    // Forcing the wrong private key onto the file fails at unwrap, typed.
    let header = Header::parse(&file).expect("header");
    assert!(matches!(
        FileKey::open(header.clone(), &other),
        Err(FormatError::UnknownKeyId(_))
    ));
    // A header rewritten to name the other key cannot be unwrapped by it either.
    let mut renamed = file.clone();
    renamed[28..60].copy_from_slice(other.id().as_bytes());
    let header = Header::parse(&renamed).expect("header");
    assert!(matches!(
        FileKey::open(header, &other),
        Err(FormatError::KeyUnwrap(_))
    ));
}

#[test]
fn seal_tells_authenticated_from_tampered() {
    let plain = vec![42u8; 1000];
    let (file, summary) = encrypt(&plain, 256, 100);
    let row = summary.facts();
    assert!(row.complete);

    let header = Header::parse(&file).expect("header");
    let fk = FileKey::open_with_ring(header, &ring()).expect("open");
    fk.verify_seal(&row, &summary.seal).expect("genuine row");
    assert_eq!(fk.seal(&row), summary.seal);

    let forged_rows = [
        SealFacts {
            metadata_sha256: [8u8; 32],
            ..row
        },
        SealFacts {
            plaintext_len: 999,
            ..row
        },
        SealFacts {
            plaintext_sha256: sha(b"other audio"),
            ..row
        },
        SealFacts {
            complete: false,
            ..row
        },
    ];
    for forged in &forged_rows {
        assert!(matches!(
            fk.verify_seal(forged, &summary.seal),
            Err(FormatError::SealMismatch)
        ));
        assert!(matches!(
            verify(file.as_slice(), &ring(), forged, &summary.seal).expect("verify"),
            Verdict::Tampered(FormatError::SealMismatch)
        ));
    }

    match verify(file.as_slice(), &ring(), &row, &summary.seal).expect("verify") {
        Verdict::Authenticated(d) => {
            assert_eq!(d.plaintext_sha256, sha(&plain));
            assert_eq!(d.plaintext_len, 1000);
        }
        Verdict::Tampered(e) => panic!("genuine file reported tampered: {e}"),
    }

    let mut damaged = file.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x80;
    assert!(matches!(
        verify(damaged.as_slice(), &ring(), &row, &summary.seal).expect("verify"),
        Verdict::Tampered(FormatError::ChunkAuth { .. })
    ));
    let truncated = &file[..file.len() - 300];
    assert!(
        !verify(truncated, &ring(), &row, &summary.seal)
            .expect("verify")
            .is_authenticated()
    );

    // Another genuine recording's row (and seal) cannot be attached to this file.
    let (_, other) = encrypt(b"another call", 256, 100);
    assert!(
        !verify(file.as_slice(), &ring(), &other.facts(), &other.seal)
            .expect("verify")
            .is_authenticated()
    );
}

#[test]
fn killed_writer_leaves_a_recoverable_prefix_the_normal_reader_rejects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("call.cvr");
    let chunk = 1024usize;
    let plain: Vec<u8> = (0..chunk * 7 + 300).map(|i| (i % 253) as u8).collect();
    {
        let file = std::fs::File::create(&path).expect("create");
        let mut w = RecordingWriter::new(
            file,
            key().public_key(),
            WriterOptions {
                chunk_size: chunk as u32,
            },
        )
        .expect("writer");
        w.write_all(&plain).expect("write");
        w.get_ref().sync_data().expect("sync");
        // The process dies here: no finish().
    }
    // A torn write of the next chunk leaves a partial tail.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open")
        .write_all(&[0xAB; 100])
        .expect("tail");

    let file = std::fs::File::open(&path).expect("open");
    assert!(Reader::open(&file, &ring()).is_err());
    let bytes = std::fs::read(&path).expect("read");
    assert!(decrypt(&bytes).expect_err("truncated").is_tamper());

    let mut out = Vec::new();
    let rec = recover_truncated(bytes.as_slice(), &ring(), &mut out).expect("recover");
    assert!(!rec.complete);
    assert_eq!(rec.chunks, 7);
    assert_eq!(out, plain[..chunk * 7]);
    assert_eq!(rec.discarded_bytes, 100);

    // Range reads over the recovered chunks, and the seal a key holder records for them.
    let reader = Reader::open_incomplete(&file, &ring()).expect("open incomplete");
    assert_eq!(reader.plaintext_len(), (chunk * 7) as u64);
    assert_eq!(
        reader.read_range(1000, 3000).expect("range"),
        plain[1000..3000]
    );
    let seal = rec.seal(&META);
    let row = rec.facts(&META);
    assert!(
        verify(bytes.as_slice(), &ring(), &row, &seal)
            .expect("verify")
            .is_authenticated()
    );

    // Damage in the middle is still an error, not a shorter recovery.
    let mut mid = bytes.clone();
    let h = Header::parse(&bytes).expect("header").len();
    mid[h + 2 * (chunk + 16) + 5] ^= 1;
    assert!(matches!(
        recover_truncated(mid.as_slice(), &ring(), &mut Vec::new()),
        Err(FormatError::ChunkAuth { index: 2 })
    ));
}

/// A source that records every byte range read from it.
struct Recording<'a> {
    data: &'a [u8],
    reads: Mutex<Vec<(u64, usize)>>,
}

impl RangeSource for Recording<'_> {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.reads.lock().expect("lock").push((offset, buf.len()));
        self.data.read_exact_at(offset, buf)
    }
}

#[test]
fn range_reads_fetch_only_the_covering_chunks() {
    let chunk = 4096usize;
    let plain: Vec<u8> = (0..chunk * 50 + 123).map(|i| (i % 241) as u8).collect();
    let (file, _) = encrypt(&plain, chunk as u32, 10_000);
    let src = Recording {
        data: &file,
        reads: Mutex::new(Vec::new()),
    };
    let reader = Reader::open(&src, &ring()).expect("open");
    src.reads.lock().expect("lock").clear();

    let (start, end) = (chunk as u64 * 20 + 100, chunk as u64 * 22 + 5);
    let got = reader.read_range(start, end).expect("range");
    assert_eq!(got, plain[start as usize..end as usize]);
    let reads = src.reads.lock().expect("lock").clone();
    let read_bytes: usize = reads.iter().map(|r| r.1).sum();
    assert_eq!(
        read_bytes,
        3 * (chunk + 16),
        "exactly chunks 20..=22: {reads:?}"
    );

    let span = reader.layout().span(start, end).expect("span");
    assert_eq!(span.chunks, 20..23);
    assert_eq!(reads[0].0, span.ciphertext.start);
}

#[test]
fn writer_memory_stays_one_chunk_over_200_mb_and_chunks_leave_at_once() {
    struct Counting(u64);
    impl Write for Counting {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let chunk = format::DEFAULT_CHUNK_SIZE as usize;
    let mut w = RecordingWriter::new(Counting(0), key().public_key(), WriterOptions::default())
        .expect("writer");
    let header_len = w.header().len() as u64;
    let capacity = w.buffer_capacity();
    assert_eq!(capacity, chunk + format::TAG_LEN);
    let block: Vec<u8> = (0..1_000_003).map(|i| (i % 256) as u8).collect();
    let mut total = 0u64;
    while total < 200_000_000 {
        w.write_all(&block).expect("write");
        total += block.len() as u64;
        assert_eq!(w.buffer_capacity(), capacity, "the buffer never grows");
        assert!(w.buffered_len() < chunk);
        // Every complete chunk has already been handed to the inner writer.
        let full = total / chunk as u64;
        assert_eq!(
            w.get_ref().0,
            header_len + full * (chunk as u64 + 16),
            "after {total} bytes"
        );
    }
    let (sink, summary) = w.finish(&META).expect("finish");
    assert_eq!(summary.plaintext_len, total);
    assert_eq!(sink.0, summary.ciphertext_len);
}

#[tokio::test]
async fn async_writer_produces_the_same_format() {
    use callvault_store::format::AsyncRecordingWriter;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.cvr");
    let file = tokio::fs::File::create(&path).await.expect("create");
    let mut w =
        AsyncRecordingWriter::new(file, key().public_key(), WriterOptions { chunk_size: 500 })
            .await
            .expect("writer");
    let plain: Vec<u8> = (0..10_000u32).map(|i| (i % 199) as u8).collect();
    for part in plain.chunks(333) {
        w.write_all(part).await.expect("write");
    }
    let (file, summary) = w.finish(&META).await.expect("finish");
    file.sync_all().await.expect("sync");
    drop(file);
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(decrypt(&bytes).expect("decrypt"), plain);
    assert!(
        verify(bytes.as_slice(), &ring(), &summary.facts(), &summary.seal)
            .expect("verify")
            .is_authenticated()
    );
}
