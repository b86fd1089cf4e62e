//! Tests of the stored address book record: the vector of PROTOCOL.md section 12 (read from the
//! document itself), round trips, damaged records, and a 5,000-entry save on a real redb file.

use super::*;
use proptest::prelude::*;

const SPEC: &str = include_str!("../../PROTOCOL.md");

/// The bytes of the "```addrbook name=NAME" block of PROTOCOL.md (hex, `#` starts a comment).
fn vector(name: &str) -> Vec<u8> {
    let fence = format!("```addrbook name={name}");
    let start = SPEC
        .find(&fence)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {fence}"));
    let body = &SPEC[start + fence.len()..];
    let body = &body[..body.find("```").expect("closed block")];
    let hex: String = body
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(hex.len() % 2 == 0, "whole bytes");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn example() -> StoredBook {
    StoredBook {
        book: AddrBookSnapshot {
            secret: [0x11; 32],
            entries: vec![
                StoredAddr {
                    addr: "127.0.1.2:7000".parse().unwrap(),
                    source: "127.0.1.3".parse().unwrap(),
                    last_seen: 1_800_000_000,
                    last_success: 1_800_000_000,
                    failures: 0,
                    tried: true,
                },
                StoredAddr {
                    addr: "[2001:db8::1]:8333".parse().unwrap(),
                    source: "2001:db8::2".parse().unwrap(),
                    last_seen: 0,
                    last_success: 0,
                    failures: 2,
                    tried: false,
                },
            ],
        },
        anchors: vec!["127.0.1.2:7000".parse().unwrap()],
    }
}

#[test]
fn the_protocol_vector_encodes_and_decodes() {
    let bytes = vector("addr-book-v1");
    assert_eq!(encode_record(&example()), bytes);
    assert_eq!(decode_record(&bytes).unwrap(), example());
}

#[test]
fn damaged_records_are_errors_not_panics() {
    let good = vector("addr-book-v1");
    for cut in 0..good.len() {
        assert!(decode_record(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut future = good.clone();
    future[1] = 2;
    assert!(matches!(
        decode_record(&future),
        Err(AddrRecordError::Version(2))
    ));
    assert!(matches!(
        decode_record(b"garbage"),
        Err(AddrRecordError::NotARecord)
    ));
    // A 3-byte IP.
    let mut bad_ip = good.clone();
    let at = bad_ip
        .windows(6)
        .position(|w| w == [0xc4, 0x04, 0x7f, 0x00, 0x01, 0x02])
        .unwrap();
    bad_ip[at + 1] = 0x03;
    bad_ip.remove(at + 2);
    assert!(decode_record(&bad_ip).is_err());
}

#[test]
fn a_corrupt_record_in_redb_loads_as_an_error_and_is_overwritten_by_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("chain.redb")).unwrap());
    let mut store = RedbAddrStore::new(db);
    assert!(store.load().unwrap().is_none(), "nothing stored yet");
    store.put_raw(&[0x94, 0x01, 0xc4, 0xff]).unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(err.contains("does not decode"), "{err}");
    store.save(&example()).unwrap();
    assert_eq!(store.load().unwrap(), Some(example()));
}

/// The cost of a save of a full book (5,000 entries) on a real redb file: encoding and one
/// durable write transaction, both on the store thread in the node; printed for the report.
#[test]
fn a_full_book_saves_in_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("chain.redb")).unwrap());
    let mut store = RedbAddrStore::new(db);
    let entries: Vec<StoredAddr> = (0..5_000u32)
        .map(|i| StoredAddr {
            addr: SocketAddr::new(IpAddr::from((0x0b00_0000u32 + i * 257).to_be_bytes()), 7700),
            source: IpAddr::from((0x0c00_0000u32 + i).to_be_bytes()),
            last_seen: 1_800_000_000,
            last_success: u64::from(i % 2) * 1_800_000_000,
            failures: i % 3,
            tried: i % 5 == 0,
        })
        .collect();
    let book = StoredBook {
        book: AddrBookSnapshot {
            secret: [3; 32],
            entries,
        },
        anchors: vec!["11.0.0.1:7700".parse().unwrap()],
    };
    let t = std::time::Instant::now();
    let bytes = encode_record(&book);
    let encode = t.elapsed();
    let t = std::time::Instant::now();
    store.save(&book).unwrap();
    let save = t.elapsed();
    let t = std::time::Instant::now();
    let loaded = store.load().unwrap().unwrap();
    let load = t.elapsed();
    println!(
        "5,000 entries: record {} bytes, encode {encode:?}, encode+durable write {save:?}, load+decode {load:?}",
        bytes.len()
    );
    assert_eq!(loaded, book);
    assert!(bytes.len() < 5_000 * 40, "{} bytes", bytes.len());
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(|b| peerlink_actors::canonical_ip(IpAddr::from(b))),
    ]
}

proptest! {
    #[test]
    fn records_round_trip(
        secret in any::<[u8; 32]>(),
        entries in proptest::collection::vec(
            (any_ip(), any::<u16>(), any_ip(), any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>()),
            0..20,
        ),
        anchors in proptest::collection::vec((any_ip(), any::<u16>()), 0..4),
    ) {
        let book = StoredBook {
            book: AddrBookSnapshot {
                secret,
                entries: entries
                    .into_iter()
                    .map(|(ip, port, source, last_seen, last_success, failures, tried)| StoredAddr {
                        addr: SocketAddr::new(ip, port),
                        source,
                        last_seen,
                        last_success,
                        failures,
                        tried,
                    })
                    .collect(),
            },
            anchors: anchors.into_iter().map(|(ip, port)| SocketAddr::new(ip, port)).collect(),
        };
        prop_assert_eq!(decode_record(&encode_record(&book)).unwrap(), book);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_record(&bytes);
    }
}
