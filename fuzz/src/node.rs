//! The fuzz targets of the node's decoders (feature `node` of this crate, which brings in the
//! `peerlink` package with actix-web and redb): the App messages of block sync, stored block
//! records and stored ban records. CI replays them (`tests/fuzz_replay.rs`) rather than
//! building them with libFuzzer; `fuzz/run.sh` builds them for the long runs.

use std::net::IpAddr;

use peerlink::addr_store::{decode_record, encode_record};
use peerlink::app::NodeMsg;
use peerlink::bans::{BanBook, BanRecord};
use peerlink::chain::block::Block;
use peerlink_actors::fuzzing::decode_app;

use super::{check_book, small_book_config, vectors};

/// Target `node_msg`: the bytes are an App payload; decodes it as the node's [`NodeMsg`] the
/// way the network does (depth cap, no trailing bytes). Asserts: what decodes re-encodes
/// and decodes to the same message.
pub fn node_msg(data: &[u8]) {
    if let Ok(msg) = decode_app::<NodeMsg>(data) {
        let again = rmp_serde::to_vec(&msg).expect("a decoded NodeMsg encodes");
        let back: NodeMsg = decode_app(&again).expect("an encoded NodeMsg decodes");
        assert_eq!(back, msg);
    }
}

/// Target `block`: the bytes are a stored block record (chain store); decodes it. Asserts: what
/// decodes re-encodes to exactly the same bytes.
pub fn block(data: &[u8]) {
    if let Ok(b) = Block::decode(data) {
        assert_eq!(b.encode(), data, "block record is not canonical");
    }
}

/// The node's own addresses in the `ban_record` target: never banned.
const OWN: [&str; 3] = ["127.0.0.1", "::1", "10.0.0.1"];

/// Most bans of the `ban_record` target's book: small, so inputs reach the cap.
const MAX_BANS: usize = 4;

/// "Now" of the `ban_record` target, milliseconds since the epoch.
const NOW_MS: u64 = 1_800_000_000_000;

/// Target `ban_record`: stored ban records (the chain store's `bans` table values, decoded by
/// [`BanRecord::decode`] as the node does at start), each restored into a ban book of
/// [`MAX_BANS`] that never bans [`OWN`]. The input is records of `[len, bytes...]`. Asserts:
/// a decoded record re-encodes to a record that decodes to itself; the book never holds more
/// than its cap, never bans an own address, keys every ban by its canonical IP, refuses expired
/// records, and a restored record is banned at once.
pub fn ban_record(data: &[u8]) {
    let own: Vec<IpAddr> = OWN.iter().filter_map(|s| s.parse().ok()).collect();
    let mut book = BanBook::new(MAX_BANS, own.iter().copied());
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (bytes, t) = tail.split_at(n);
        rest = t;
        let Ok(record) = BanRecord::decode(bytes) else {
            continue;
        };
        let again = record.encode().expect("a decoded ban record encodes");
        assert_eq!(BanRecord::decode(&again).ok().as_ref(), Some(&record));
        let ip = peerlink_actors::canonical_ip(record.ip);
        let until = record.until_unix_ms;
        let restored = book.restore(record, NOW_MS);
        if restored {
            assert!(until > NOW_MS, "an expired ban was restored");
            assert!(book.is_banned(ip, NOW_MS), "a restored ban is not in force");
        }
        assert!(book.len() <= MAX_BANS, "{} bans over the cap", book.len());
        for o in &own {
            assert!(!book.is_banned(*o, NOW_MS), "own address {o} banned");
        }
        for r in book.list(NOW_MS) {
            assert_eq!(
                r.ip,
                peerlink_actors::canonical_ip(r.ip),
                "ban keyed by {}",
                r.ip
            );
            assert!(!r.ip.is_unspecified(), "unspecified address banned");
        }
    }
}

/// Target `addr_record` (a replay-only target: no libFuzzer binary yet): the stored address
/// book record (`addr_store::decode_record`, what the node reads from redb at start). Byte 0:
/// reachability; the rest the record. Asserts: what decodes re-encodes to a record that decodes
/// to the same book; the restored book keeps the caps and one entry per canonical IP.
pub fn addr_record(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let Ok(stored) = decode_record(bytes) else {
        return;
    };
    let again = encode_record(&stored);
    assert_eq!(decode_record(&again).ok().as_ref(), Some(&stored));
    let config = small_book_config(peerlink_actors::fuzzing::Reachability {
        allow_loopback: flags & 1 != 0,
        allow_private: flags & 2 != 0,
    });
    let book = peerlink_actors::fuzzing::AddrBook::restore(config, &stored.book);
    check_book(&book, &config);
}

/// The seed corpus of the node's targets: `(target, inputs)`. `node_msg` and `block` from
/// PROTOCOL.md's section 11 vectors; `ban_record` from records the node would store (ban
/// records are not a wire format and have no vector).
pub fn seeds(spec: &str) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let msgs = vectors(spec, "```nodemsg");
    let mut block_seeds = Vec::new();
    for m in &msgs {
        if let Ok(NodeMsg::Blocks { blocks, .. }) = decode_app::<NodeMsg>(m) {
            block_seeds.extend(blocks.iter().map(Block::encode));
        }
    }
    let ban = |ip: &str, until: u64| BanRecord {
        ip: ip.parse().unwrap_or(IpAddr::from([1, 2, 3, 4])),
        until_unix_ms: until,
        since_unix_ms: NOW_MS - 1000,
        reason: "invalid block: bad signature".into(),
        source: "sync".into(),
    };
    let records = [
        ban("1.2.3.4", NOW_MS + 3_600_000),
        ban("::ffff:5.6.7.8", NOW_MS + 1),
        ban("2001:db8::1", u64::MAX),
        ban("10.0.0.1", NOW_MS + 1000),
        ban("9.9.9.9", NOW_MS),
        ban("0.0.0.0", NOW_MS + 1000),
    ];
    let mut stream = Vec::new();
    for r in &records {
        let bytes = r.encode().unwrap_or_default();
        stream.push(bytes.len() as u8);
        stream.extend(bytes);
    }
    let mut ban_seeds = vec![stream];
    for r in &records {
        let bytes = r.encode().unwrap_or_default();
        ban_seeds.push([vec![bytes.len() as u8], bytes].concat());
    }
    // Address book records: the `addr_snapshot` seeds' books, stored with an anchor.
    let mut addr_seeds = Vec::new();
    for (_, inputs) in super::seeds(spec)
        .into_iter()
        .filter(|(n, _)| *n == "addr_snapshot")
    {
        for input in inputs {
            let Some((&flags, bytes)) = input.split_first() else {
                continue;
            };
            if let Ok(book) = rmp_serde::from_slice(bytes) {
                let stored = peerlink_actors::StoredBook {
                    book,
                    anchors: vec![std::net::SocketAddr::from(([9, 1, 1, 2], 7001))],
                };
                addr_seeds.push([vec![flags], encode_record(&stored)].concat());
            }
        }
    }
    vec![
        ("node_msg", msgs),
        ("block", block_seeds),
        ("ban_record", ban_seeds),
        ("addr_record", addr_seeds),
    ]
}
