//! The worked example of `docs/recording-format.md`, checked byte for byte. A second
//! implementation can reproduce everything but the RSA step (OAEP is randomised), which is
//! why the wrapped key here is a fixed placeholder. The expected values were also
//! reproduced by an independent implementation written from the document alone.

use std::io::Write;

use hkdf::Hkdf;
use rsa::sha2::Sha256;

use super::*;

const DATA_KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};
const NONCE_PREFIX: [u8; 7] = [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6];
const PLAINTEXT: &[u8] = b"CallVault recording format v1 example!!";

fn build() -> (Vec<u8>, Summary) {
    let header = Header::build(16, NONCE_PREFIX, KeyId([0x11; 32]), vec![0x5A; 256])
        .expect("valid example header");
    let mut w = RecordingWriter::with_fixed_parts_for_test_vectors(Vec::new(), header, &DATA_KEY)
        .expect("writer");
    w.write_all(PLAINTEXT).expect("write");
    w.finish(&sha256(b"")).expect("finish")
}

fn hkdf_key(info: &[u8]) -> String {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"CallVault recording v1"), &DATA_KEY).expect_expand(info, &mut out);
    hex::encode(out)
}

trait ExpectExpand {
    fn expect_expand(&self, info: &[u8], out: &mut [u8]);
}

impl ExpectExpand for Hkdf<Sha256> {
    fn expect_expand(&self, info: &[u8], out: &mut [u8]) {
        self.expand(info, out).expect("32-byte HKDF output");
    }
}

#[test]
fn documented_example_matches() {
    let (file, summary) = build();
    let header = Header::parse(&file).expect("header");
    let body = &file[header.len()..];
    let chunks: Vec<String> = [&body[..32], &body[32..64], &body[64..]]
        .iter()
        .map(hex::encode)
        .collect();
    let printed = format!(
        "header_len {}\nheader_sha256 {}\npayload_key {}\nseal_key {}\nchunk0 {}\nchunk1 {}\nchunk2 {}\nplaintext_sha256 {}\nseal {}\nfile_len {}\n",
        header.len(),
        hex::encode(header.digest()),
        hkdf_key(b"payload"),
        hkdf_key(b"seal"),
        chunks[0],
        chunks[1],
        chunks[2],
        hex::encode(summary.plaintext_sha256),
        summary.seal.to_hex(),
        file.len(),
    );
    println!("{printed}");
    assert_eq!(printed, EXPECTED);
}

const EXPECTED: &str = "\
header_len 318
header_sha256 bca7c9443926ca223fac96e5d0437b861d5ec6258480da1465ef7c94ab25fa9b
payload_key 1afb0a4a263c57fec8f69e7475864b012c11c917229b9418af638b7420b48fc2
seal_key 126166e2848c89e417a23ce6ec2c147c98b3b125417cb31de0ba80e18fd695c6
chunk0 6f1af20898974136f5698837d695083323dde09d611c35459bbcf4012d07e024
chunk1 19db0ae582a7b43b15b573fb129fabdeb1837cf75620c2d07c6e0b2e478439b2
chunk2 7c8c92828f09e86ee1e83cdc9e512aa655686739b80b84
plaintext_sha256 a45126140f0fb77dec22e10a0dd933286831ee5fc98ba0b44a539890b5080c62
seal 08fba5457c6e9cf8e3ce4aa467701994b842810ae8ce334733d41571e9a79b24
file_len 405
";
