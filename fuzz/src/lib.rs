//! The bodies of the fuzz targets and the seed corpus, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by the root package's `tests/fuzz_replay.rs`, which replays the seeds,
//! the regression inputs in `fuzz/regressions/` and a bounded number of mutations on every
//! `cargo test`.
//!
//! Every target takes arbitrary bytes, must never panic on them, and asserts what the decoder
//! promises: frames never exceed the cap in force, what decodes re-encodes to itself, the
//! batching codec yields the same frames as the plain one, no handshake or record is accepted
//! that the peer could not have produced, the address book's caps hold.
//!
//! This file needs only `peerlink-actors` (so that CI builds its targets with libFuzzer in a few
//! minutes); the node's decoders (`NodeMsg`, blocks, ban records) are in `node.rs`, behind the
//! crate feature `node`.

#[cfg(feature = "node")]
pub mod node;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use peerlink_actors::fuzzing;
use peerlink_actors::fuzzing::{
    session_read_path, BytesMut, Decoder, Frame, FrameBatchCodec, FrameCodec, HelloPolicy,
    MAX_HANDSHAKE_FRAME_BYTES,
};

/// The frame cap after the handshake (the default `network.max_frame_bytes`, 4 MiB).
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// Our nonce in the handshake target: a Hello carrying it is a self-connection.
pub const OUR_NONCE: u64 = 42;

/// The Hello policy of the handshake target: the magic and genesis of PROTOCOL.md's `hello`
/// vector, so that the seed reaches the post-handshake states.
pub fn spec_policy() -> HelloPolicy {
    let mut genesis = [0u8; 32];
    for (i, g) in genesis.iter_mut().enumerate() {
        *g = i as u8;
    }
    HelloPolicy {
        magic: *b"plnk",
        genesis,
    }
}

/// Target `frame_codec`: byte 0 picks the cap (bit 0: before or after the handshake) and the
/// read size (bits 1..7); the rest is the byte stream from a peer. Asserts: no frame longer
/// than the cap is yielded; the plain and the batching codec yield the same frames and fail
/// on the same input; every frame that decodes survives encode and decode unchanged.
pub fn frame_codec(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let cap = if mode & 1 == 0 {
        MAX_HANDSHAKE_FRAME_BYTES
    } else {
        MAX_FRAME_BYTES
    };
    let chunk = usize::from(mode >> 1) + 1;
    let mut plain = FrameCodec::new(Arc::new(AtomicUsize::new(cap)));
    let mut batch = FrameBatchCodec::new(
        Arc::new(AtomicUsize::new(cap)),
        Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    let (mut from_plain, mut from_batch) = (Vec::new(), Vec::new());
    let (mut plain_failed, mut batch_failed) = (false, false);
    for piece in stream.chunks(chunk) {
        if !plain_failed {
            a.extend_from_slice(piece);
            loop {
                match plain.decode(&mut a) {
                    Ok(Some(body)) => from_plain.push(body),
                    Ok(None) => break,
                    Err(_) => {
                        plain_failed = true;
                        break;
                    }
                }
            }
        }
        if !batch_failed {
            b.extend_from_slice(piece);
            loop {
                match batch.decode(&mut b) {
                    Ok(Some(batch)) => from_batch.extend(batch.to_bodies()),
                    Ok(None) => break,
                    Err(_) => {
                        batch_failed = true;
                        break;
                    }
                }
            }
        }
    }
    assert_eq!(from_plain, from_batch, "plain and batching codecs disagree");
    assert_eq!(plain_failed, batch_failed, "only one codec failed");
    for body in from_plain {
        assert!(body.len() <= cap, "frame of {} over cap {cap}", body.len());
        if let Ok(frame) = Frame::decode(body.clone()) {
            let wire = frame.encode();
            let again = Frame::decode(wire.slice(4..));
            assert_eq!(again.ok(), Some(frame), "frame changes through encode");
        }
    }
}

/// Target `handshake`: byte 0 is the read size, the rest the bytes a peer sends from the
/// connection's first byte; runs the session's read path (codec, frames, handshake phases, App
/// payload checks). Asserts (inside the read path): no frame over the cap in force, control
/// frames round-trip. Here: nothing is handled after a close, and post-handshake frames only
/// exist after a handshake.
pub fn handshake(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let out = session_read_path(
        stream,
        usize::from(chunk) + 1,
        MAX_FRAME_BYTES,
        &spec_policy(),
        OUR_NONCE,
    );
    assert!(out.handshake_done || out.frames_after_handshake == 0);
    assert!(out.app_payloads <= out.frames_after_handshake);
}

// ---------------------------------------------------------------------------------------------
// The secure channel.

/// Target `noise_responder`: byte 0 is the read size, the rest what an initiator sends (its
/// messages 1 and 3); runs the node's handshake as the responder with the keys of PROTOCOL.md's
/// vectors. Asserts: the responder sends nothing but its one 98-byte message 2 (after a
/// well-formed message 1); it never completes unless the input starts with the spec's messages
/// 1 and 3 (nobody else can produce a message 3 it accepts), and then it knows the spec's
/// initiator key and has read nothing beyond message 3.
pub fn noise_responder(data: &[u8]) {
    let Some((&chunk, peer)) = data.split_first() else {
        return;
    };
    let v = noise_vectors();
    let out = fuzzing::noise_handshake(
        peer,
        usize::from(chunk) + 1,
        &v.responder,
        false,
        &v.responder_ephemeral,
    );
    assert!(
        out.written.is_empty() || out.written.len() == 2 + 96,
        "responder wrote {} bytes",
        out.written.len()
    );
    if let Some(remote) = out.remote {
        let expected = [v.msg1.as_slice(), v.msg3.as_slice()].concat();
        assert!(peer.starts_with(&expected), "a forged handshake completed");
        assert_eq!(remote, v.initiator.public());
        assert_eq!(out.written, v.msg2, "message 2 differs from the spec's");
        assert_eq!(out.consumed, expected.len(), "read past the handshake");
    } else {
        assert!(out.error.is_some(), "neither completed nor failed");
    }
}

/// Target `noise_initiator`: byte 0 is the read size, the rest what a responder sends (its
/// message 2, or a clear-text refusal); runs the node's handshake as the initiator with the
/// spec's keys. Asserts: the initiator's first 34 bytes are the spec's message 1 whatever
/// comes back; it completes only on the spec's message 2, then sends the spec's message 3 and
/// knows the spec's responder key; a refusal is only reported for input opening with `00 00`.
pub fn noise_initiator(data: &[u8]) {
    let Some((&chunk, peer)) = data.split_first() else {
        return;
    };
    let v = noise_vectors();
    let out = fuzzing::noise_handshake(
        peer,
        usize::from(chunk) + 1,
        &v.initiator,
        true,
        &v.initiator_ephemeral,
    );
    assert!(out.written.starts_with(&v.msg1), "message 1 differs");
    if let Some(remote) = out.remote {
        assert!(peer.starts_with(&v.msg2), "a forged handshake completed");
        assert_eq!(remote, v.responder.public());
        assert_eq!(out.written, [v.msg1.as_slice(), v.msg3.as_slice()].concat());
        assert_eq!(out.consumed, v.msg2.len(), "read past the handshake");
    } else {
        assert_eq!(
            out.written, v.msg1,
            "wrote more than message 1 without completing"
        );
        if let Some(fuzzing::SecureError::Refused(_)) = out.error {
            assert!(
                peer.starts_with(&[0, 0]),
                "a refusal without its zero length"
            );
        }
    }
}

/// The keys and messages of PROTOCOL.md's secure channel vectors (section 1.1).
pub struct NoiseVectors {
    /// The initiator's static key.
    pub initiator: fuzzing::NodeKey,
    /// The responder's static key.
    pub responder: fuzzing::NodeKey,
    /// The initiator's ephemeral secret.
    pub initiator_ephemeral: [u8; 32],
    /// The responder's ephemeral secret.
    pub responder_ephemeral: [u8; 32],
    /// Messages 1 to 3, length prefixes included.
    pub msg1: Vec<u8>,
    /// See `msg1`.
    pub msg2: Vec<u8>,
    /// See `msg1`.
    pub msg3: Vec<u8>,
}

/// The secure channel vectors, read once from PROTOCOL.md.
pub fn noise_vectors() -> &'static NoiseVectors {
    static V: std::sync::OnceLock<NoiseVectors> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let key32 = |name: &str| -> [u8; 32] {
            named_vector(SPEC, name)
                .and_then(|v| v.try_into().ok())
                .unwrap_or_else(|| panic!("PROTOCOL.md lacks the 32-byte vector {name}"))
        };
        let bytes = |name: &str| {
            named_vector(SPEC, name).unwrap_or_else(|| panic!("PROTOCOL.md lacks vector {name}"))
        };
        NoiseVectors {
            initiator: fuzzing::NodeKey::from_secret(key32("noise-initiator-static-secret")),
            responder: fuzzing::NodeKey::from_secret(key32("noise-responder-static-secret")),
            initiator_ephemeral: key32("noise-initiator-ephemeral-secret"),
            responder_ephemeral: key32("noise-responder-ephemeral-secret"),
            msg1: bytes("noise-msg1"),
            msg2: bytes("noise-msg2"),
            msg3: bytes("noise-msg3"),
        }
    })
}

/// Most plaintext one `secure_record` input may have sealed: three full records and more, so
/// that records split, rekeys and the large-record paths are reached.
const MAX_SEALED_BYTES: usize = 192 << 10;

/// Reads one `secure_record` execution may take (the plaintext it may seal is capped by this
/// times the smaller of the two read sizes), so that an execution stays short.
const MAX_READS: usize = 4096;

/// Target `secure_record`: the record layer after a completed handshake. Byte 0: bits 0-1 the
/// rekey interval (1 to 4 records), bit 2 which side sends, bit 3 a socket that is pending
/// before every other read, bits 4-7 the caller's read size (1 byte to 64 KiB); byte 1: the
/// socket's read size. Then operations: `00xxxxxx` seals the next `x` input bytes as genuine
/// records (the sender's `SecureWrite`), `01xxxxxx` + u16 seals that many pattern bytes,
/// `1xxxxxxx` puts the next `x` input bytes on the wire as they are (arbitrary records). The
/// wire is read by the other side's `SecureRead`.
///
/// Asserts: without arbitrary bytes, exactly the sealed plaintext arrives and the stream ends
/// cleanly; with them, exactly the plaintext sealed before the first arbitrary byte arrives
/// (nothing of a bad record, nothing after it), the stream fails, and stays failed. Each input
/// gets fresh ciphers keyed with fixed keys (`0xc0..` or `0xe0..`, by direction) that appear
/// nowhere in PROTOCOL.md, so no record on the wire can be one the fuzzer has seen there.
pub fn secure_record(data: &[u8]) {
    let [flags, sock_chunk, ops @ ..] = data else {
        return;
    };
    let rekey_after = u64::from(flags & 3) + 1;
    let from_initiator = flags & 4 == 0;
    let stall = flags & 8 != 0;
    let read_size = [
        1, 2, 3, 15, 16, 17, 100, 1000, 4096, 16384, 65519, 65535, 65536,
    ][usize::from(flags >> 4).min(12)];
    let chunk = match sock_chunk {
        255 => usize::MAX,
        c => usize::from(*c) + 1,
    };
    let key = if from_initiator {
        fill32(0xc0)
    } else {
        fill32(0xe0)
    };
    let (seal, open) = fuzzing::record_cipher_pair(&key, rekey_after);
    let mut sender = fuzzing::RecordSender::new(seal);
    let mut wire = Vec::new();
    let mut sealed = Vec::new();
    let mut before_raw: Option<usize> = None;
    let mut rest = ops;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let plain: Vec<u8> = match op >> 6 {
            0 => {
                let n = usize::from(op & 0x3f).min(rest.len());
                let (p, t) = rest.split_at(n);
                rest = t;
                p.to_vec()
            }
            1 => {
                let Some((len, t)) = rest.split_first_chunk::<2>() else {
                    break;
                };
                rest = t;
                let n = usize::from(u16::from_be_bytes(*len)) * 3;
                (0..n).map(|k| (k as u8) ^ op).collect()
            }
            _ => {
                let n = usize::from(op & 0x7f).min(rest.len());
                let (raw, t) = rest.split_at(n);
                rest = t;
                if n > 0 && before_raw.is_none() {
                    before_raw = Some(sealed.len());
                }
                wire.extend_from_slice(raw);
                continue;
            }
        };
        if sealed.len() + plain.len() > MAX_SEALED_BYTES.min(MAX_READS * read_size.min(chunk)) {
            break;
        }
        let Ok(ct) = sender.send(&plain) else {
            panic!("sealing {} bytes failed", plain.len());
        };
        wire.extend_from_slice(&ct);
        sealed.extend_from_slice(&plain);
    }
    let got = fuzzing::read_records(&wire, open, chunk, stall, read_size);
    match before_raw {
        None => {
            assert!(
                got.error.is_none(),
                "genuine records failed: {:?}",
                got.error
            );
            assert!(got.plain == sealed, "genuine records arrived changed");
        }
        Some(n) => {
            assert!(
                got.error.is_some(),
                "arbitrary bytes were accepted as records"
            );
            assert!(got.stays_failed, "a failed stream read again");
            assert!(
                got.plain == sealed[..n],
                "delivered {} bytes, sealed {n} before the arbitrary bytes",
                got.plain.len()
            );
        }
    }
}

fn fill32(start: u8) -> [u8; 32] {
    std::array::from_fn(|k| start.wrapping_add(k as u8))
}

// ---------------------------------------------------------------------------------------------
// Address gossip and the address book.

/// The book of the `addrs` target: small caps, so that inputs of a few KiB reach them.
pub fn small_book_config(reach: fuzzing::Reachability) -> fuzzing::AddrBookConfig {
    fuzzing::AddrBookConfig {
        max_entries: 48,
        new_buckets: 8,
        tried_buckets: 4,
        bucket_size: 8,
        buckets_per_source_group: 2,
        tried_buckets_per_group: 2,
        max_per_group: 4,
        max_per_source_group: 24,
        reach,
        ..fuzzing::AddrBookConfig::default()
    }
}

/// The peers of the `addrs` target: two in one /16, others apart, one loopback, one IPv6.
const GOSSIP_PEERS: [&str; 6] = [
    "1.2.3.4",
    "1.2.200.9",
    "5.6.7.8",
    "127.0.0.2",
    "2001:db8:1::7",
    "::ffff:9.9.9.9",
];

/// Target `addrs`: `GetAddrs` and `Addrs` frames on their own, and what the discovery rules do
/// with what decodes. Byte 0: bit 0 allows loopback, bit 1 private addresses. Then records of
/// `[peer, seconds, len_hi, len_lo, body...]`: after `seconds` pass, the frame body (section 3
/// of PROTOCOL.md, without the length prefix) arrives from peer `peer % 6`, connected on first
/// use. Asserts after every frame: a decoded frame re-encodes to the same frame; the book holds
/// at most `max_entries`, at most `max_per_group` per network group, at most
/// `max_per_source_group` per source group, one entry per IP, only routable canonical addresses;
/// an answer has at most 1,000 entries, never the asker's IP, only addresses in the book; the
/// bucket lets through no more than a connection's burst plus its refill.
pub fn addrs(data: &[u8]) {
    use fuzzing::{AddrBook, AddrGossip, ConnId, GossipConfig, Reachability};
    use rand::SeedableRng;
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let reach = Reachability {
        allow_loopback: flags & 1 != 0,
        allow_private: flags & 2 != 0,
    };
    let config = small_book_config(reach);
    let mut book = AddrBook::new(config, [7; 32]);
    let gconf = GossipConfig {
        answer_interval_ms: 60_000,
        rate_per_s: 1.0,
        burst: 20.0,
        ..GossipConfig::default()
    };
    let mut gossip = AddrGossip::new(gconf);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let listen: std::net::SocketAddr = "8.8.4.4:7000".parse().unwrap_or_else(|_| unreachable!());
    let mut now_ms: u64 = 1_800_000_000_000;
    let start_ms = now_ms;
    let mut conns: [Option<ConnId>; 6] = [None; 6];
    let mut let_through = [0usize; 6];
    while let Some(([peer, secs, hi, lo], tail)) = rest.split_first_chunk::<4>() {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (body, t) = tail.split_at(len);
        rest = t;
        now_ms += u64::from(*secs) * 1000;
        let p = usize::from(*peer) % GOSSIP_PEERS.len();
        let from: std::net::IpAddr = GOSSIP_PEERS[p].parse().unwrap_or_else(|_| unreachable!());
        let conn = *conns[p].get_or_insert_with(|| {
            let c = ConnId(p as u64 + 1);
            gossip.on_connect(c, now_ms);
            c
        });
        let Ok(frame) = fuzzing::Frame::decode(fuzzing::Bytes::copy_from_slice(body)) else {
            continue;
        };
        let wire = frame.encode();
        let again = fuzzing::Frame::decode(wire.slice(fuzzing::LENGTH_PREFIX_BYTES..));
        assert_eq!(
            again.ok().as_ref(),
            Some(&frame),
            "frame changes through encode"
        );
        let input = fuzzing::GossipInput {
            conn,
            from,
            frame,
            now_ms,
        };
        let out = fuzzing::apply_gossip_frame(&mut book, &mut gossip, listen, input, &mut rng);
        let_through[p] += out.processed;
        let elapsed_s = (now_ms - start_ms) as f64 / 1000.0;
        assert!(
            let_through[p] as f64 <= gconf.burst + gconf.rate_per_s * elapsed_s + 1.0,
            "the bucket let {} entries through in {elapsed_s} s",
            let_through[p]
        );
        if let Some(answer) = &out.answer {
            assert!(answer.len() <= fuzzing::MAX_ADDRS_PER_FRAME.min(gconf.max_per_answer));
            for a in answer {
                assert_ne!(
                    a.addr.ip(),
                    peerlink_actors::canonical_ip(from),
                    "answered the asker's own IP"
                );
                assert!(book.contains(a.addr), "answered an address not in the book");
            }
        }
        check_book(&book, &config);
    }
}

/// The book's caps and one entry per canonical, routable IP, from its persisted form.
pub fn check_book(book: &fuzzing::AddrBook, config: &fuzzing::AddrBookConfig) {
    use std::collections::BTreeMap;
    assert!(book.len() <= config.max_entries, "{} entries", book.len());
    assert!(book.max_group_count() <= config.max_per_group);
    assert!(book.max_source_count() <= config.max_per_source_group);
    assert_eq!(book.new_len() + book.tried_len(), book.len());
    let snap = book.snapshot();
    assert_eq!(snap.entries.len(), book.len());
    let mut groups: BTreeMap<_, usize> = BTreeMap::new();
    let mut ips = std::collections::BTreeSet::new();
    for e in &snap.entries {
        let ip = e.addr.ip();
        assert_eq!(
            ip,
            peerlink_actors::canonical_ip(ip),
            "stored {ip} not canonical"
        );
        assert!(
            fuzzing::is_routable(e.addr, config.reach),
            "stored {}",
            e.addr
        );
        assert!(ips.insert(ip), "two entries for {ip}");
        *groups.entry(fuzzing::netgroup(ip)).or_default() += 1;
    }
    assert_eq!(
        groups.values().copied().max().unwrap_or(0),
        book.max_group_count(),
        "group counters disagree with the entries"
    );
}

/// Target `addr_snapshot`: the address book's persisted form (`AddrBookSnapshot`, MessagePack)
/// decoded and restored under the small caps. Asserts: the restored book keeps its caps and one
/// entry per IP; restoring is stable (restoring a restored book's snapshot gives the same
/// snapshot); a decoded snapshot re-encodes to a snapshot that decodes to itself.
pub fn addr_snapshot(data: &[u8]) {
    use fuzzing::{AddrBook, AddrBookSnapshot, Reachability};
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let Ok(snap) = rmp_serde::from_slice::<AddrBookSnapshot>(bytes) else {
        return;
    };
    let again = rmp_serde::to_vec(&snap).unwrap_or_else(|e| panic!("encode: {e}"));
    assert_eq!(
        rmp_serde::from_slice::<AddrBookSnapshot>(&again).ok(),
        Some(snap.clone())
    );
    let config = small_book_config(Reachability {
        allow_loopback: flags & 1 != 0,
        allow_private: flags & 2 != 0,
    });
    let book = AddrBook::restore(config, &snap);
    check_book(&book, &config);
    let first = book.snapshot();
    let second = AddrBook::restore(config, &first).snapshot();
    assert_eq!(first, second, "restoring a restored book changes it");
}

// ---------------------------------------------------------------------------------------------
// Seeds.

/// PROTOCOL.md, the source of the seed corpus.
pub const SPEC: &str = include_str!("../../PROTOCOL.md");

/// Writes `target`'s seeds into the directory named by `PEERLINK_FUZZ_SEEDS`, if set (called
/// from each target's libFuzzer init, before the corpus is read; `fuzz/run.sh` sets it).
pub fn write_seeds_from_env(target: &str) {
    let Some(dir) = std::env::var_os("PEERLINK_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    #[allow(unused_mut)]
    let mut all = seeds(SPEC);
    #[cfg(feature = "node")]
    all.extend(node::seeds(SPEC));
    for (name, inputs) in all {
        if name == target {
            for (i, input) in inputs.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), input).expect("write a seed");
            }
        }
    }
}

/// The seed corpus of every target of this file, from PROTOCOL.md's vectors: `(target,
/// inputs)`.
pub fn seeds(spec: &str) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let frames = vectors(spec, "```hex");
    let mut frame_seeds = Vec::new();
    for f in &frames {
        for mode in [0u8, 1, 2 * 7, 2 * 7 + 1] {
            frame_seeds.push([vec![mode], f.clone()].concat());
        }
    }
    // A stream: every canonical frame after the spec's hello, read in several sizes.
    let hello = frames.first().cloned().unwrap_or_default();
    let mut handshake_seeds = Vec::new();
    for f in &frames {
        for chunk in [0u8, 3, 255] {
            handshake_seeds.push([vec![chunk], hello.clone(), f.clone()].concat());
        }
    }
    let all: Vec<u8> = frames.iter().skip(1).flatten().copied().collect();
    handshake_seeds.push([vec![16], hello, all].concat());

    let named = |name: &str| named_vector(spec, name).unwrap_or_default();
    let (msg1, msg2, msg3) = (
        named("noise-msg1"),
        named("noise-msg2"),
        named("noise-msg3"),
    );
    let mut responder_seeds = Vec::new();
    let mut initiator_seeds = Vec::new();
    for chunk in [0u8, 1, 33, 255] {
        responder_seeds.push([&[chunk][..], &msg1, &msg3].concat());
        responder_seeds.push([&[chunk][..], &msg1].concat());
        initiator_seeds.push([&[chunk][..], &msg2].concat());
    }
    // A refusal in place of message 2, and every frame vector as a stranger's answer.
    for f in &frames {
        initiator_seeds.push([&[255u8][..], f].concat());
    }
    // Records: a short and a long genuine record, then arbitrary bytes, for several read sizes.
    let mut record_seeds = Vec::new();
    for flags in [0x00u8, 0x07, 0x1c, 0x3a, 0x85, 0xc9] {
        record_seeds.push(vec![flags, 255, 0x05, 1, 2, 3, 4, 5, 0x41, 0x55, 0x55]);
        record_seeds.push(vec![flags, 7, 0x03, 9, 9, 9, 0x83, 0, 0x1c, 0]);
        record_seeds.push([vec![flags, 16, 0x80 | 30], named("noise-record-initiator")].concat());
    }

    // Gossip: the spec's GetAddrs and Addrs frames (bodies) from several peers.
    let body = |name: &str| named(name).get(4..).map(<[u8]>::to_vec).unwrap_or_default();
    let record = |peer: u8, secs: u8, b: &[u8]| {
        let len = (b.len() as u16).to_be_bytes();
        [&[peer, secs, len[0], len[1]][..], b].concat()
    };
    let mut addrs_seeds = Vec::new();
    for flags in [0u8, 1, 3] {
        let mut s = vec![flags];
        for (i, name) in ["addrs", "get-addrs", "addrs-empty", "addrs", "get-addrs"]
            .iter()
            .enumerate()
        {
            s.extend(record(i as u8, 30, &body(name)));
        }
        addrs_seeds.push(s);
    }
    let snapshot_seeds = snapshot_seeds(&body("addrs"));
    vec![
        ("frame_codec", frame_seeds),
        ("handshake", handshake_seeds),
        ("noise_responder", responder_seeds),
        ("noise_initiator", initiator_seeds),
        ("secure_record", record_seeds),
        ("addrs", addrs_seeds),
        ("addr_snapshot", snapshot_seeds),
    ]
}

/// Snapshots of a book filled from the spec's `addrs` vector and from a few more addresses.
fn snapshot_seeds(addrs_body: &[u8]) -> Vec<Vec<u8>> {
    use fuzzing::{AddrBook, Reachability};
    let mut out = Vec::new();
    for flags in [0u8, 1] {
        let reach = Reachability {
            allow_loopback: flags & 1 != 0,
            allow_private: false,
        };
        let mut book = AddrBook::new(small_book_config(reach), [7; 32]);
        let now = 1_800_000_000_000;
        if let Ok(fuzzing::Frame::Addrs { addrs }) =
            fuzzing::Frame::decode(fuzzing::Bytes::copy_from_slice(addrs_body))
        {
            for a in addrs.iter().filter_map(fuzzing::WireAddr::socket_addr) {
                book.add(
                    a,
                    "5.6.7.8".parse().unwrap_or_else(|_| unreachable!()),
                    1,
                    now,
                );
            }
        }
        for k in 1..6u8 {
            let a = std::net::SocketAddr::from(([9, k, 1, 2], 7000 + u16::from(k)));
            book.add(
                a,
                "1.2.3.4".parse().unwrap_or_else(|_| unreachable!()),
                2,
                now,
            );
            if k % 2 == 0 {
                book.mark_good(a, now);
            }
        }
        if let Ok(bytes) = rmp_serde::to_vec(&book.snapshot()) {
            out.push([vec![flags], bytes].concat());
        }
    }
    out
}

/// The bytes of every vector block opening with `fence` (` ```hex ` or ` ```nodemsg `).
pub fn vectors(spec: &str, fence: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        if !line.trim().starts_with(fence) {
            continue;
        }
        out.extend(block_bytes(&mut lines));
    }
    out
}

/// The bytes of the vector block named `name` (a fence line ending in `name=NAME`, any kind).
pub fn named_vector(spec: &str, name: &str) -> Option<Vec<u8>> {
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.starts_with("```")
            && line
                .split_whitespace()
                .any(|w| w.strip_prefix("name=") == Some(name))
        {
            return block_bytes(&mut lines);
        }
    }
    None
}

/// Hex digits up to the closing fence, `#` comments removed.
fn block_bytes<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Option<Vec<u8>> {
    let mut digits = String::new();
    for body in lines.by_ref() {
        if body.trim() == "```" {
            break;
        }
        let data = body.split('#').next().unwrap_or("");
        digits.extend(data.chars().filter(|c| !c.is_whitespace()));
    }
    (0..digits.len() / 2)
        .map(|i| u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}
