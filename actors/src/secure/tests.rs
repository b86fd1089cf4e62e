//! Tests of the secure transport: the handshake and record vectors of PROTOCOL.md (parsed from
//! the document), handshakes over in-memory streams, record round trips with rekeying, tamper
//! detection, the handshake cap, key files and peer entries.

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handshake::{build, finish, read_step, write_step};
use super::*;

const SPEC: &str = include_str!("../../../PROTOCOL.md");

/// The hex block `name` of PROTOCOL.md ("```hex name=..."), comments after `#` removed.
fn spec_hex(name: &str) -> Vec<u8> {
    let mut lines = SPEC.lines();
    let headers = [
        format!("```noise name={name}"),
        format!("```hex name={name}"),
    ];
    while let Some(line) = lines.next() {
        if !headers.iter().any(|h| line.trim() == h) {
            continue;
        }
        let mut digits = String::new();
        for body in lines.by_ref() {
            if body.trim() == "```" {
                break;
            }
            let data = body.split('#').next().unwrap_or("");
            digits.extend(data.chars().filter(|c| !c.is_whitespace()));
        }
        return hex::decode(&digits).unwrap_or_else(|e| panic!("vector {name}: {e}"));
    }
    panic!("PROTOCOL.md has no vector {name}");
}

fn key32(name: &str) -> [u8; 32] {
    spec_hex(name).try_into().expect("32 bytes")
}

/// Runs the handshake of the spec's vectors in memory and returns the three messages (length
/// prefix included) and both transport states.
fn vector_handshake() -> (Vec<Vec<u8>>, Established, Established) {
    let i_key = NodeKey::from_secret(key32("noise-initiator-static-secret"));
    let r_key = NodeKey::from_secret(key32("noise-responder-static-secret"));
    let i_eph = key32("noise-initiator-ephemeral-secret");
    let r_eph = key32("noise-responder-ephemeral-secret");
    let mut i = build(&i_key, true, Some(&i_eph)).unwrap();
    let mut r = build(&r_key, false, Some(&r_eph)).unwrap();
    let mut msgs = Vec::new();
    for step in 0..3 {
        let (w, rd) = if step % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        let mut out = Vec::new();
        write_step(w, &mut out).unwrap();
        read_step(rd, &out[2..]).unwrap();
        msgs.push(out);
    }
    (msgs, finish(i).unwrap(), finish(r).unwrap())
}

#[test]
fn spec_public_keys_match_their_secrets() {
    for who in ["initiator", "responder"] {
        let key = NodeKey::from_secret(key32(&format!("noise-{who}-static-secret")));
        assert_eq!(
            key.public().0.to_vec(),
            spec_hex(&format!("noise-{who}-static-public")),
            "{who}"
        );
    }
}

#[test]
fn spec_handshake_messages_are_exact() {
    let (msgs, i, r) = vector_handshake();
    for (n, msg) in msgs.iter().enumerate() {
        assert_eq!(
            hex::encode(msg),
            hex::encode(spec_hex(&format!("noise-msg{}", n + 1))),
            "message {}",
            n + 1
        );
    }
    assert_eq!(
        i.remote.0.to_vec(),
        spec_hex("noise-responder-static-public")
    );
    assert_eq!(
        r.remote.0.to_vec(),
        spec_hex("noise-initiator-static-public")
    );
}

/// The first record each way carries the spec's Ping frame; the bytes on the wire are exact.
#[actix_rt::test]
async fn spec_first_records_are_exact() {
    let (_, i, r) = vector_handshake();
    let plain = spec_hex("ping-42");
    for (state, name) in [(i, "noise-record-initiator"), (r, "noise-record-responder")] {
        let mut w = SecureWrite::new(Vec::new(), Some(state.send));
        w.write_all(&plain).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(
            hex::encode(w.get_ref()),
            hex::encode(spec_hex(name)),
            "{name}"
        );
    }
}

/// `cipher` rekeying after every `n` records.
fn rekeyed(mut cipher: RecordCipher, n: u64) -> Option<RecordCipher> {
    cipher.set_rekey_after(n);
    Some(cipher)
}

/// A pair of connected secure streams over an in-memory pipe, after a real handshake.
async fn pair(
    rekey_write: u64,
    rekey_read: u64,
) -> (
    SecureWrite<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
    SecureRead<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    PublicKey,
    PublicKey,
) {
    let (mut a, mut b) = tokio::io::duplex(1 << 20);
    let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    let (ea, eb) = tokio::join!(handshake(&mut a, &ka, true), handshake(&mut b, &kb, false));
    let (ea, eb) = (ea.unwrap(), eb.unwrap());
    assert_eq!(ea.remote, kb.public());
    assert_eq!(eb.remote, ka.public());
    let (_, wa) = tokio::io::split(a);
    let (rb, _) = tokio::io::split(b);
    (
        SecureWrite::new(wa, rekeyed(ea.send, rekey_write)),
        SecureRead::new(rb, rekeyed(eb.recv, rekey_read)),
        ka.public(),
        kb.public(),
    )
}

#[actix_rt::test]
async fn records_round_trip_across_rekeys() {
    let (mut w, mut r, _, _) = pair(3, 3).await;
    // Sizes around the record boundary and far above it: many records, several rekeys.
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let writer = async {
        for chunk in data.chunks(70_001) {
            w.write_all(chunk).await.unwrap();
        }
        w.write_all(&data[..10]).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(got.len(), data.len() + 10);
    assert!(got[..data.len()] == data[..]);
}

/// A reader that rekeys at another point than the writer cannot read: rekeying is real.
#[actix_rt::test]
async fn mismatched_rekey_fails() {
    let (mut w, mut r, _, _) = pair(2, 5).await;
    w.write_all(&vec![1u8; 3 * MAX_RECORD_PLAINTEXT_BYTES])
        .await
        .unwrap();
    w.flush().await.unwrap();
    let mut buf = vec![0u8; 4 * MAX_RECORD_BYTES];
    let mut total = 0;
    let err = loop {
        match r.read(&mut buf).await {
            Ok(n) => {
                assert!(n > 0);
                total += n;
            }
            Err(e) => break e,
        }
    };
    assert!(SecureError::is_decrypt_failure(&err), "{err}");
    assert_eq!(total, 2 * MAX_RECORD_PLAINTEXT_BYTES);
}

/// Flipping any bit of a record makes the read fail, and nothing of that record (or after it)
/// is delivered; the records before it arrive intact.
#[actix_rt::test]
async fn flipped_bit_is_detected_and_nothing_corrupt_is_delivered() {
    for bit in [0usize, 7, 16, 100, 8 * 40 + 3] {
        let (_, i, _) = vector_handshake();
        let mut w = SecureWrite::new(Vec::new(), Some(i.send));
        w.write_all(b"first record").await.unwrap();
        w.flush().await.unwrap();
        let first_len = w.get_ref().len();
        w.write_all(&[0x5a; 60]).await.unwrap();
        w.flush().await.unwrap();
        let mut wire = w.get_ref().clone();
        // Flip a bit in the second record, past its 2-byte length (a length change is a
        // truncation, tested below).
        let at = first_len + 2 + bit / 8;
        wire[at] ^= 1 << (bit % 8);
        // Read into a small buffer (records decrypted in place and handed out in pieces) and
        // into a large one (decrypted straight into it): the same outcome.
        for read_size in [5usize, 1 << 20] {
            let (_, _, r) = vector_handshake();
            let mut rd = SecureRead::new(&wire[..], Some(r.recv));
            let mut got = Vec::new();
            let mut buf = vec![0u8; read_size];
            let err = loop {
                match rd.read(&mut buf).await {
                    Ok(0) => panic!("bit {bit}, reads of {read_size}: the end, not an error"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => break e,
                }
            };
            assert!(SecureError::is_decrypt_failure(&err), "bit {bit}: {err}");
            assert_eq!(got, b"first record", "bit {bit}, reads of {read_size}");
            // Nothing of the forged record reached the caller's buffer as data, and the
            // stream stays dead.
            assert!(rd.read(&mut [0u8; 8]).await.is_err());
        }
    }
}

#[actix_rt::test]
async fn truncated_record_is_an_error() {
    let (_, i, r) = vector_handshake();
    let mut w = SecureWrite::new(Vec::new(), Some(i.send));
    w.write_all(b"hello").await.unwrap();
    w.flush().await.unwrap();
    let wire = &w.get_ref()[..w.get_ref().len() - 1];
    let mut rd = SecureRead::new(wire, Some(r.recv));
    let mut got = Vec::new();
    assert!(rd.read_to_end(&mut got).await.is_err());
    assert!(got.is_empty());
}

#[actix_rt::test]
async fn oversized_handshake_message_is_refused_before_reading_it() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    b.write_all(&[0x01, 0x01]).await.unwrap(); // announces 257 bytes
    let res = handshake(&mut a, &NodeKey::generate(), false).await;
    assert!(
        matches!(res, Err(SecureError::HandshakeTooLarge(257))),
        "{res:?}"
    );
}

#[actix_rt::test]
async fn garbage_handshake_fails_cleanly() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    // A plaintext peer's Hello frame header, read as a handshake message.
    b.write_all(&[0, 0, 0, 0x4f, 0x81]).await.unwrap();
    drop(b);
    assert!(handshake(&mut a, &NodeKey::generate(), false)
        .await
        .is_err());
}

#[test]
fn key_file_is_created_0600_and_reloaded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let path = dir.join("node.key");
    let (k1, created) = NodeKey::load_or_create(&path).unwrap();
    assert!(created);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (k2, created) = NodeKey::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(k1, k2);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = NodeKey::load_or_create(&path).unwrap_err();
    assert!(
        matches!(err, KeyFileError::LoosePermissions(_, 0o644)),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "not hex\n").unwrap();
    assert!(matches!(
        NodeKey::load(&path),
        Err(KeyFileError::Malformed(..))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "peerlink-secure-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn key_admission_order() {
    use crate::reason::DisconnectReason::*;
    let k = |b| PublicKey([b; 32]);
    assert_eq!(admit_key(Some(&k(1)), None, &[], &k(2)), Ok(()));
    assert_eq!(
        admit_key(Some(&k(1)), None, &[], &k(1)),
        Err(SelfConnection)
    );
    // Self first, even when pinned or listed.
    assert_eq!(
        admit_key(Some(&k(1)), Some(&k(1)), &[k(1)], &k(1)),
        Err(SelfConnection)
    );
    assert_eq!(admit_key(None, Some(&k(3)), &[], &k(2)), Err(KeyMismatch));
    assert_eq!(admit_key(None, Some(&k(2)), &[], &k(2)), Ok(()));
    assert_eq!(
        admit_key(None, Some(&k(2)), &[k(3)], &k(2)),
        Err(KeyNotAllowed)
    );
    assert_eq!(admit_key(None, None, &[k(3)], &k(2)), Err(KeyNotAllowed));
    assert_eq!(admit_key(None, None, &[k(3), k(2)], &k(2)), Ok(()));
}

#[test]
fn debug_never_shows_the_secret() {
    let key = NodeKey::from_secret([0xab; 32]);
    let shown = format!("{key:?}");
    assert!(!shown.contains(&"ab".repeat(32)), "{shown}");
    assert!(shown.contains(&key.public().to_hex()));
}

#[test]
fn peer_entries_parse() {
    let k = NodeKey::generate().public();
    let pinned: PeerAddr = format!("{k}@127.0.0.9:7000").parse().unwrap();
    assert_eq!(pinned.key, Some(k));
    assert_eq!(pinned.addr, "127.0.0.9:7000".parse().unwrap());
    assert_eq!(pinned.to_string().parse::<PeerAddr>().unwrap(), pinned);
    let plain: PeerAddr = "127.0.0.9:7000".parse().unwrap();
    assert_eq!(plain.key, None);
    assert!("abcd@127.0.0.9:7000".parse::<PeerAddr>().is_err());
    assert!(format!("{k}@nowhere").parse::<PeerAddr>().is_err());
    assert!("zz".repeat(32).parse::<PublicKey>().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random bytes fed to the record reader never panic and never yield data.
    #[test]
    fn random_records_never_decrypt(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (_, _, r) = vector_handshake();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt.block_on(async {
            let mut rd = SecureRead::new(&bytes[..], Some(r.recv));
            let mut got = Vec::new();
            let _ = rd.read_to_end(&mut got).await;
            got
        });
        prop_assert!(got.is_empty());
    }

    /// Whatever the write sizes and the reader's buffer size, the reader yields exactly the
    /// bytes written: records decrypted into the caller's buffer when they fit (out of place),
    /// in place and handed out in pieces when they do not. `read_size` 0 reads with
    /// `read_to_end` (a buffer that grows from small).
    #[test]
    fn any_write_and_read_sizes_round_trip(
        sizes in proptest::collection::vec(0usize..140_000, 1..6),
        read_size in prop_oneof![Just(0usize), 1usize..64, 64usize..70_000, 65_519usize..200_000],
    ) {
        let (_, i, r) = vector_handshake();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (sent, got) = rt.block_on(async {
            let mut w = SecureWrite::new(Vec::new(), rekeyed(i.send, 2));
            let mut sent = Vec::new();
            for (n, size) in sizes.iter().enumerate() {
                let chunk: Vec<u8> = (0..*size).map(|j| (j * 3 + n) as u8).collect();
                w.write_all(&chunk).await.unwrap();
                sent.extend_from_slice(&chunk);
            }
            w.flush().await.unwrap();
            let wire = w.get_ref().clone();
            let mut rd = SecureRead::new(&wire[..], rekeyed(r.recv, 2));
            let mut got = Vec::new();
            if read_size == 0 {
                rd.read_to_end(&mut got).await.unwrap();
                return (sent, got);
            }
            let mut buf = vec![0u8; read_size];
            loop {
                let n = rd.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            (sent, got)
        });
        prop_assert!(sent == got);
    }
}

/// A reader waiting for the peer holds no buffer (idle sessions stay small), and a record that
/// arrives afterwards is read as usual.
#[actix_rt::test]
async fn idle_reader_frees_its_buffers() {
    use futures_util::FutureExt;
    let (mut w, mut r, _, _) = pair(REKEY_AFTER_RECORDS, REKEY_AFTER_RECORDS).await;
    let mut buf = vec![0u8; 100_000];
    for size in [12usize, 70_000] {
        w.write_all(&vec![7u8; size]).await.unwrap();
        w.flush().await.unwrap();
        let mut got = 0;
        while got < size {
            got += r.read(&mut buf).await.unwrap();
        }
        assert_eq!(got, size);
        assert!(
            r.read(&mut buf).now_or_never().is_none(),
            "nothing more to read"
        );
        assert_eq!(r.buffer_bytes(), 0, "after {size} bytes");
    }
}

/// Small-order X25519 points (RFC 7748 section 6.1): a peer whose ephemeral key is one of them
/// would make `ee` a shared secret of all zeros, known to anyone. The handshake refuses it; an
/// honest key is accepted in the same position.
#[test]
fn small_order_ephemeral_fails_the_handshake() {
    // 0 and 1 (order 1 and 4 on the Montgomery curve) and the point of order 8.
    let order8 =
        hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800").unwrap();
    let mut one = [0u8; 32];
    one[0] = 1;
    for bad in [vec![0u8; 32], one.to_vec(), order8] {
        let mut r = build(&NodeKey::generate(), false, None).unwrap();
        // Message 1 is the initiator's ephemeral key alone; reading it needs no DH.
        read_step(&mut r, &bad).unwrap();
        let mut out = Vec::new();
        let err = write_step(&mut r, &mut out).expect_err("ee with a small-order point");
        assert!(err.to_string().contains("diffie-hellman"), "{err}");
    }
    let mut r = build(&NodeKey::generate(), false, None).unwrap();
    read_step(&mut r, &NodeKey::generate().public().0).unwrap();
    write_step(&mut r, &mut Vec::new()).unwrap();
}
