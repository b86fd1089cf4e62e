//! Tests of the wire protocol: the hex vectors of `PROTOCOL.md` (parsed from the document itself,
//! so the spec cannot drift from the code), the App fast path, the length-prefixed codec and its
//! caps, the Hello checks, and property tests (round trips, random bytes, truncations).

use super::*;

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde::de::IgnoredAny;

use crate::constants::{DEFAULT_MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES};

// ---------------------------------------------------------------------------------------------
// Vectors from PROTOCOL.md

/// The specification, read at compile time: every vector in it is checked below.
const SPEC: &str = include_str!("../../../PROTOCOL.md");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VectorKind {
    /// Produced by our encoder and decoded back.
    Canonical,
    /// Accepted by our decoder, never produced.
    Decode,
    /// Refused by the codec or the frame decoder.
    Reject,
}

#[derive(Debug)]
struct SpecVector {
    name: String,
    kind: VectorKind,
    /// Complete wire bytes, length prefix included.
    bytes: Vec<u8>,
}

/// Parses every "```hex name=... [kind=...]" block of the spec. On each line of a block,
/// everything after `#` is a comment; the remaining hex digits are the bytes.
fn spec_vectors() -> Vec<SpecVector> {
    let mut out = Vec::new();
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim().strip_prefix("```hex") else {
            continue;
        };
        let mut name = None;
        let mut kind = VectorKind::Canonical;
        for attr in info.split_whitespace() {
            match attr.split_once('=') {
                Some(("name", v)) => name = Some(v.to_string()),
                Some(("kind", "canonical")) => kind = VectorKind::Canonical,
                Some(("kind", "decode")) => kind = VectorKind::Decode,
                Some(("kind", "reject")) => kind = VectorKind::Reject,
                _ => panic!("PROTOCOL.md: unknown vector attribute {attr:?} in {line:?}"),
            }
        }
        let name = name.unwrap_or_else(|| panic!("PROTOCOL.md: vector without name: {line:?}"));
        let mut digits = String::new();
        for body_line in lines.by_ref() {
            if body_line.trim() == "```" {
                break;
            }
            let data = body_line.split('#').next().unwrap_or("");
            digits.extend(data.chars().filter(|c| !c.is_whitespace()));
        }
        assert!(
            digits.len() % 2 == 0 && digits.chars().all(|c| c.is_ascii_hexdigit()),
            "PROTOCOL.md: vector {name} is not whole hex bytes: {digits}"
        );
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect();
        out.push(SpecVector { name, kind, bytes });
    }
    out
}

fn spec_vector(name: &str) -> SpecVector {
    let mut found: Vec<SpecVector> = spec_vectors()
        .into_iter()
        .filter(|v| v.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "PROTOCOL.md must hold exactly one vector {name}"
    );
    found.remove(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Hello of vector `hello`.
fn hello_vector_value() -> Hello {
    Hello {
        magic: *b"plnk",
        version: 1,
        genesis: std::array::from_fn(|i| i as u8),
        nonce: 0x0123_4567_89ab_cdef,
        listen_port: 7000,
        best_height: 1000,
        user_agent: "peerlink/0.1.0".into(),
    }
}

/// The Hello of vector `hello-minimal`.
fn hello_minimal_value() -> Hello {
    Hello {
        magic: *b"plnk",
        version: 1,
        genesis: [0; 32],
        nonce: 1,
        listen_port: 0,
        best_height: 1 << 32,
        user_agent: String::new(),
    }
}

fn app_123() -> Frame {
    Frame::App(Bytes::from_static(&[0x93, 0x01, 0x02, 0x03]))
}

/// The Addrs of vector `addrs`: 127.0.1.2:7000 seen at 1,800,000,000 and [2001:db8::1]:8333
/// seen at 0.
fn addrs_vector_value() -> Frame {
    Frame::Addrs {
        addrs: vec![
            WireAddr::new("127.0.1.2:7000".parse().unwrap(), 1_800_000_000),
            WireAddr::new("[2001:db8::1]:8333".parse().unwrap(), 0),
        ],
    }
}

#[test]
fn wire_addrs_round_trip_and_bad_ip_lengths_are_none() {
    let a: std::net::SocketAddr = "[::ffff:1.2.3.4]:5".parse().unwrap();
    let w = WireAddr::new(a, 9);
    assert_eq!(w.ip, vec![1, 2, 3, 4]);
    assert_eq!(w.socket_addr(), Some("1.2.3.4:5".parse().unwrap()));
    let bad = WireAddr {
        ip: vec![1, 2, 3],
        port: 1,
        last_seen: 0,
    };
    assert_eq!(bad.socket_addr(), None);
}

fn disconnect_vector_name(reason: DisconnectReason) -> String {
    format!("disconnect-{}", reason.as_str())
}

/// Every canonical vector the spec must contain, with the frame it encodes.
fn canonical_frames() -> Vec<(String, Frame)> {
    let mut v = vec![
        ("hello".to_string(), Frame::Hello(hello_vector_value())),
        ("hello-minimal".into(), Frame::Hello(hello_minimal_value())),
        ("ping-0".into(), Frame::Ping { nonce: 0 }),
        ("ping-42".into(), Frame::Ping { nonce: 42 }),
        (
            "ping-large".into(),
            Frame::Ping {
                nonce: 0xfedc_ba98_7654_3210,
            },
        ),
        ("pong-42".into(), Frame::Pong { nonce: 42 }),
        (
            "pong-large".into(),
            Frame::Pong {
                nonce: 0xfedc_ba98_7654_3210,
            },
        ),
        ("app".into(), app_123()),
        ("app-empty".into(), Frame::App(Bytes::new())),
        ("get-addrs".into(), Frame::GetAddrs {}),
        ("addrs-empty".into(), Frame::Addrs { addrs: vec![] }),
        ("addrs".into(), addrs_vector_value()),
    ];
    for reason in DisconnectReason::ALL {
        v.push((disconnect_vector_name(reason), Frame::Disconnect { reason }));
    }
    v
}

/// Every decode-only vector the spec must contain, with the frame it decodes to.
fn decode_only_frames() -> Vec<(String, Frame)> {
    vec![
        ("app-bin8".to_string(), app_123()),
        ("app-bin16".into(), app_123()),
        ("app-str8-key".into(), app_123()),
        (
            "disconnect-newer-reason".into(),
            Frame::Disconnect {
                reason: DisconnectReason::Unknown,
            },
        ),
    ]
}

/// Runs complete wire bytes through the codec (with the given cap) and the frame decoder.
/// Asserts that the codec consumes exactly the bytes it is given.
fn decode_wire(bytes: &[u8], cap: usize) -> Result<Frame, CodecError> {
    let mut codec = FrameCodec::new(Arc::new(AtomicUsize::new(cap)));
    let mut src = BytesMut::from(bytes);
    match codec.decode(&mut src)? {
        Some(body) => {
            assert!(src.is_empty(), "the codec left {} bytes", src.len());
            Frame::decode(body)
        }
        None => Err(CodecError::Malformed("incomplete frame".into())),
    }
}

/// The check behind each per-vector test: the encoder produces the spec's bytes exactly, and
/// the body (without prefix) decodes back to the frame, also through the codec under the
/// pre-handshake cap.
fn check_canonical(name: &str, frame: &Frame) {
    let v = spec_vector(name);
    assert_eq!(v.kind, VectorKind::Canonical, "vector {name}");
    let encoded = frame.encode();
    assert_eq!(
        hex(&encoded),
        hex(&v.bytes),
        "vector {name}: encoder output differs from PROTOCOL.md"
    );
    let body = Bytes::copy_from_slice(&v.bytes[LENGTH_PREFIX_BYTES..]);
    assert_eq!(&Frame::decode(body).unwrap(), frame, "vector {name}");
    assert_eq!(
        &decode_wire(&v.bytes, MAX_HANDSHAKE_FRAME_BYTES).unwrap(),
        frame,
        "vector {name} through the codec"
    );
}

fn check_canonical_by_name(name: &str) {
    let frame = canonical_frames()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, f)| f)
        .unwrap();
    check_canonical(name, &frame);
}

#[test]
fn vector_hello() {
    check_canonical_by_name("hello");
}

#[test]
fn vector_hello_minimal() {
    check_canonical_by_name("hello-minimal");
}

#[test]
fn vector_ping_0() {
    check_canonical_by_name("ping-0");
}

#[test]
fn vector_ping_42() {
    check_canonical_by_name("ping-42");
}

#[test]
fn vector_ping_large() {
    check_canonical_by_name("ping-large");
}

#[test]
fn vector_pong_42() {
    check_canonical_by_name("pong-42");
}

#[test]
fn vector_pong_large() {
    check_canonical_by_name("pong-large");
}

#[test]
fn vector_app() {
    check_canonical_by_name("app");
}

#[test]
fn vector_app_empty() {
    check_canonical_by_name("app-empty");
}

#[test]
fn vector_disconnect_duplicate() {
    check_canonical_by_name("disconnect-duplicate");
}

#[test]
fn vector_disconnect_wrong_genesis() {
    check_canonical_by_name("disconnect-wrong_genesis");
}

/// One vector per reason, and the wire string is the variant name.
#[test]
fn vectors_disconnect_every_reason() {
    for reason in DisconnectReason::ALL {
        let name = disconnect_vector_name(reason);
        check_canonical(&name, &Frame::Disconnect { reason });
        let v = spec_vector(&name);
        let wire_string = format!("{reason:?}");
        assert!(
            v.bytes.ends_with(wire_string.as_bytes()),
            "{name} must carry the string {wire_string}"
        );
    }
}

#[test]
fn vectors_decode_only_are_accepted_but_not_produced() {
    for (name, frame) in decode_only_frames() {
        let v = spec_vector(&name);
        assert_eq!(v.kind, VectorKind::Decode, "vector {name}");
        let body = Bytes::copy_from_slice(&v.bytes[LENGTH_PREFIX_BYTES..]);
        assert_eq!(Frame::decode(body).unwrap(), frame, "vector {name}");
        assert_eq!(
            decode_wire(&v.bytes, MAX_HANDSHAKE_FRAME_BYTES).unwrap(),
            frame
        );
        assert_ne!(
            frame.encode()[..],
            v.bytes[..],
            "{name} is not what we send"
        );
    }
}

#[test]
fn vectors_reject_are_refused() {
    let rejects: Vec<_> = spec_vectors()
        .into_iter()
        .filter(|v| v.kind == VectorKind::Reject)
        .collect();
    assert!(rejects.len() >= 10, "the spec lists the refused forms");
    for v in rejects {
        let result = decode_wire(&v.bytes, MAX_HANDSHAKE_FRAME_BYTES);
        assert!(result.is_err(), "{} must be refused: {result:?}", v.name);
    }
}

/// The codec part of the reject vectors fails for the reason the spec gives.
#[test]
fn vectors_reject_reasons() {
    let reason = |name: &str| {
        decode_wire(&spec_vector(name).bytes, MAX_HANDSHAKE_FRAME_BYTES)
            .unwrap_err()
            .disconnect_reason()
    };
    assert_eq!(reason("reject-zero-length"), DisconnectReason::BadFrame);
    assert_eq!(
        reason("reject-over-handshake-cap"),
        DisconnectReason::FrameTooLarge
    );
    assert_eq!(reason("reject-max-length"), DisconnectReason::FrameTooLarge);
    assert_eq!(
        reason("reject-app-bin-longer-than-frame"),
        DisconnectReason::BadFrame
    );
    for name in [
        "reject-kind-as-integer",
        "reject-ping-kind-as-integer",
        "reject-app-str8-key-not-bin",
    ] {
        assert_eq!(reason(name), DisconnectReason::BadFrame, "{name}");
    }
}

/// A frame kind is a string in any length form, never an integer (rmp-serde would otherwise
/// take a variant index), and an App payload is a bin however its key is spelled; the error
/// says which.
#[test]
fn frame_kinds_are_strings_and_app_payloads_bins_in_every_spelling() {
    let err = |body: &[u8]| match Frame::decode(Bytes::copy_from_slice(body)) {
        Err(CodecError::Malformed(what)) => what,
        other => panic!("{body:02x?} decoded: {other:?}"),
    };
    assert!(err(&[0x81, 0x04, 0xc4, 0x00]).contains("kind is not a string"));
    assert!(err(&[0x81, 0x01, 0x91, 0x2a]).contains("kind is not a string"));
    assert!(err(&[0x81, 0xc0, 0x91, 0x2a]).contains("kind is not a string"));
    assert!(err(&[0x82, 0xa4, b'P', b'i', b'n', b'g', 0x91, 0x2a]).contains("one entry"));
    assert!(err(&[0x91, 0x2a]).contains("not a map"));
    assert!(err(&[0x81, 0xd9, 0x09, b'A']).contains("truncated kind"));
    assert!(err(&[0xde, 0x00]).contains("truncated map header"));
    // `App` spelled as str16 with an array payload, and with no payload at all.
    let str16 = [0x81, 0xda, 0x00, 0x03, b'A', b'p', b'p'];
    assert!(err(&[&str16[..], &[0x93, 1, 2, 3]].concat()).contains("not bin"));
    assert!(err(&str16).contains("no payload"));
    // The same key with a bin payload, and map16 around it: the App frame.
    let map16 = [
        &[0xde, 0x00, 0x01][..],
        &str16[1..],
        &[0xc4, 0x02, 0x90, 0x90],
    ]
    .concat();
    assert_eq!(
        Frame::decode(Bytes::from(map16)).unwrap(),
        Frame::App(Bytes::from_static(&[0x90, 0x90]))
    );
    // Other kinds in longer string forms still decode as before: {str8 "Ping": [42]}.
    let ping = [0x81, 0xd9, 0x04, b'P', b'i', b'n', b'g', 0x91, 0x2a];
    assert_eq!(
        Frame::decode(Bytes::copy_from_slice(&ping)).unwrap(),
        Frame::Ping { nonce: 42 }
    );
}

/// The spec lists exactly the vectors this file knows, no more and no fewer, with unique names.
#[test]
fn spec_lists_exactly_the_checked_vectors() {
    let vectors = spec_vectors();
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "duplicate vector names");

    let in_spec = |kind| -> BTreeSet<String> {
        vectors
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| v.name.clone())
            .collect()
    };
    let canonical: BTreeSet<String> = canonical_frames().into_iter().map(|(n, _)| n).collect();
    let decode: BTreeSet<String> = decode_only_frames().into_iter().map(|(n, _)| n).collect();
    assert_eq!(in_spec(VectorKind::Canonical), canonical);
    assert_eq!(in_spec(VectorKind::Decode), decode);
    // Every length prefix in the spec matches its vector (the reject vectors about the prefix
    // itself are the exception: they are only a prefix).
    for v in &vectors {
        if v.bytes.len() > LENGTH_PREFIX_BYTES {
            let len = u32::from_be_bytes(v.bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len, v.bytes.len() - 4, "length prefix of {}", v.name);
        }
    }
}

/// The reasons table of section 8 lists every reason once, with its wire string, log name and
/// whether peerlink sends it.
#[test]
fn spec_reasons_table_matches_the_code() {
    for reason in DisconnectReason::ALL {
        let first_cell = format!("| `{reason:?}` |");
        let rows: Vec<&str> = SPEC
            .lines()
            .filter(|l| l.starts_with(&first_cell))
            .collect();
        assert_eq!(rows.len(), 1, "one table row for {reason:?}");
        let cells: Vec<&str> = rows[0].split('|').map(str::trim).collect();
        assert_eq!(cells[2], format!("`{}`", reason.as_str()), "{reason:?}");
        let sent = if reason.is_sent_on_wire() {
            "yes"
        } else {
            "no"
        };
        assert_eq!(cells[3], sent, "{reason:?}");
    }
}

#[test]
fn disconnect_reason_list_is_complete_and_distinct() {
    // Fails to compile when a variant is added without updating this match (and then ALL).
    fn index(r: DisconnectReason) -> usize {
        match r {
            DisconnectReason::Requested => 0,
            DisconnectReason::Shutdown => 1,
            DisconnectReason::Duplicate => 2,
            DisconnectReason::PeerRestarted => 3,
            DisconnectReason::SelfConnection => 4,
            DisconnectReason::WrongNetwork => 5,
            DisconnectReason::WrongGenesis => 6,
            DisconnectReason::WrongVersion => 7,
            DisconnectReason::BadHello => 8,
            DisconnectReason::BadFrame => 9,
            DisconnectReason::FrameTooLarge => 10,
            DisconnectReason::ProtocolViolation => 11,
            DisconnectReason::HandshakeTimeout => 12,
            DisconnectReason::PingTimeout => 13,
            DisconnectReason::SlowPeer => 14,
            DisconnectReason::Banned => 15,
            DisconnectReason::TooManyPeers => 16,
            DisconnectReason::Misbehaving => 17,
            DisconnectReason::ConnectionLost => 18,
            DisconnectReason::HandshakeFailed => 19,
            DisconnectReason::DecryptFailed => 20,
            DisconnectReason::KeyMismatch => 21,
            DisconnectReason::KeyNotAllowed => 22,
            DisconnectReason::Unknown => 23,
            DisconnectReason::Evicted => 24,
        }
    }
    let indices: BTreeSet<usize> = DisconnectReason::ALL.iter().map(|r| index(*r)).collect();
    assert_eq!(indices.len(), DisconnectReason::ALL.len());
    let names: BTreeSet<&str> = DisconnectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), DisconnectReason::ALL.len());
    let not_sent: Vec<_> = DisconnectReason::ALL
        .into_iter()
        .filter(|r| !r.is_sent_on_wire())
        .collect();
    assert_eq!(
        not_sent,
        [
            DisconnectReason::SlowPeer,
            DisconnectReason::ConnectionLost,
            DisconnectReason::HandshakeFailed,
            DisconnectReason::Unknown
        ]
    );
}

#[test]
fn codec_errors_map_to_reasons() {
    let too_large = CodecError::FrameTooLarge { len: 5, max: 4 };
    assert_eq!(
        too_large.disconnect_reason(),
        DisconnectReason::FrameTooLarge
    );
    assert_eq!(
        CodecError::Empty.disconnect_reason(),
        DisconnectReason::BadFrame
    );
    assert_eq!(
        CodecError::Malformed(String::new()).disconnect_reason(),
        DisconnectReason::BadFrame
    );
}

// ---------------------------------------------------------------------------------------------
// App frames

/// An App body with the payload behind a bin header of the given marker.
fn app_body(marker: u8, declared_len: usize, payload: &[u8]) -> Bytes {
    let mut b = APP_PREFIX.to_vec();
    b.push(marker);
    match marker {
        0xc4 => b.push(declared_len as u8),
        0xc5 => b.extend_from_slice(&(declared_len as u16).to_be_bytes()),
        _ => b.extend_from_slice(&(declared_len as u32).to_be_bytes()),
    }
    b.extend_from_slice(payload);
    Bytes::from(b)
}

#[test]
fn app_accepts_bin8_bin16_bin32() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(300).collect();
    for (marker, len) in [(0xc4, 200), (0xc5, 300), (0xc6, 300), (0xc5, 0), (0xc4, 0)] {
        let p = &payload[..len];
        let frame = Frame::decode(app_body(marker, len, p)).unwrap();
        assert_eq!(
            frame,
            Frame::App(Bytes::copy_from_slice(p)),
            "marker {marker:x}"
        );
    }
}

#[test]
fn app_bin_length_must_match_the_frame() {
    let payload = [1u8, 2, 3, 4];
    for marker in [0xc4, 0xc5, 0xc6] {
        for declared in [0, 3, 5, 255] {
            let err = Frame::decode(app_body(marker, declared, &payload));
            assert!(
                matches!(err, Err(CodecError::Malformed(_))),
                "marker {marker:x} declared {declared}: {err:?}"
            );
        }
        assert!(Frame::decode(app_body(marker, 4, &payload)).is_ok());
    }
}

#[test]
fn app_malformed_headers_are_refused() {
    let cases: Vec<Vec<u8>> = vec![
        // The prefix alone: no payload at all.
        APP_PREFIX.to_vec(),
        // Truncated bin16 / bin32 headers.
        [&APP_PREFIX[..], &[0xc5, 0x00]].concat(),
        [&APP_PREFIX[..], &[0xc6, 0x00, 0x00]].concat(),
        // Not bin: str, array, nil.
        [&APP_PREFIX[..], &[0xa1, b'x']].concat(),
        [&APP_PREFIX[..], &[0x91, 0x01]].concat(),
        [&APP_PREFIX[..], &[0xc0]].concat(),
    ];
    for body in cases {
        let r = Frame::decode(Bytes::from(body.clone()));
        assert!(r.is_err(), "{} must be refused: {r:?}", hex(&body));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    tag: String,
    values: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AppMsg {
    id: u64,
    flag: bool,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    inner: Vec<Inner>,
    maybe: Option<Box<AppMsg>>,
}

fn sample_msg() -> AppMsg {
    AppMsg {
        id: 7,
        flag: true,
        blob: vec![0, 1, 2, 255],
        inner: vec![Inner {
            tag: "block".into(),
            values: vec![-1, 0, i64::MAX],
        }],
        maybe: Some(Box::new(AppMsg {
            id: 8,
            flag: false,
            blob: vec![],
            inner: vec![],
            maybe: None,
        })),
    }
}

#[test]
fn encode_app_round_trips_a_struct() {
    let msg = sample_msg();
    let wire = encode_app(&msg).unwrap();
    // The fast path writes the same bytes as the generic one.
    let payload = rmp_serde::to_vec(&msg).unwrap();
    assert_eq!(wire, Frame::App(Bytes::from(payload.clone())).encode());
    // Header: length, {"App": bin32(len)}.
    assert_eq!(
        &wire[..4],
        &((wire.len() - 4) as u32).to_be_bytes(),
        "length prefix"
    );
    assert_eq!(&wire[4..9], &APP_PREFIX);
    assert_eq!(wire[9], 0xc6);
    assert_eq!(&wire[10..14], &(payload.len() as u32).to_be_bytes());
    // Back through the codec, the frame decoder and decode_app.
    let Frame::App(body) = decode_wire(&wire, DEFAULT_MAX_FRAME_BYTES).unwrap() else {
        panic!("not an app frame");
    };
    assert_eq!(&body[..], &payload[..]);
    assert_eq!(decode_app::<AppMsg>(&body).unwrap(), msg);
}

#[test]
fn decode_app_rejects_trailing_bytes() {
    let mut payload = rmp_serde::to_vec(&sample_msg()).unwrap();
    assert!(decode_app::<AppMsg>(&payload).is_ok());
    payload.push(0xc0);
    assert!(matches!(
        decode_app::<AppMsg>(&payload),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn decode_app_rejects_garbage_and_truncation() {
    let payload = rmp_serde::to_vec(&sample_msg()).unwrap();
    for cut in 0..payload.len() {
        assert!(decode_app::<AppMsg>(&payload[..cut]).is_err(), "cut {cut}");
    }
    assert!(decode_app::<AppMsg>(&[0xc1]).is_err());
}

/// `n` nested one-element arrays around a nil.
fn nested_arrays(n: usize) -> Vec<u8> {
    let mut v = vec![0x91; n];
    v.push(0xc0);
    v
}

/// `n` nested one-entry maps `{0: {0: ... nil}}`.
fn nested_maps(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 * n + 1);
    for _ in 0..n {
        v.extend_from_slice(&[0x81, 0x00]);
    }
    v.push(0xc0);
    v
}

#[test]
fn decode_app_caps_nesting_depth() {
    for nested in [nested_arrays, nested_maps] {
        assert!(
            decode_app::<IgnoredAny>(&nested(MAX_DECODE_DEPTH)).is_ok(),
            "{MAX_DECODE_DEPTH} levels are allowed"
        );
        assert!(matches!(
            decode_app::<IgnoredAny>(&nested(MAX_DECODE_DEPTH + 1)),
            Err(CodecError::Malformed(_))
        ));
        // Far deeper than the stack could recurse: refused, not a crash.
        assert!(decode_app::<IgnoredAny>(&nested(1_000_000)).is_err());
    }
}

#[test]
fn frame_decode_caps_nesting_depth() {
    // {"Ping": [[[[...]]]]} and {"Hello": [[[[...]]]]}: refused without deep recursion.
    for key in ["Ping", "Hello", "Disconnect"] {
        let mut body = vec![0x81, 0xa0 | key.len() as u8];
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(&nested_arrays(100_000));
        assert!(Frame::decode(Bytes::from(body)).is_err(), "{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// FrameCodec

fn codec(cap: usize) -> (FrameCodec, Arc<AtomicUsize>) {
    let shared = Arc::new(AtomicUsize::new(cap));
    (FrameCodec::new(shared.clone()), shared)
}

/// A buffer holding only a length prefix, allocated at exactly its size.
fn prefix_only(len: u32) -> BytesMut {
    let mut src = BytesMut::with_capacity(LENGTH_PREFIX_BYTES);
    src.put_u32(len);
    src
}

/// Asserts the prefix is refused as too large at once, and that the decoder neither consumed
/// nor reserved anything for the announced body.
fn assert_too_large_without_allocation(cap: usize, len: u32) {
    let (mut codec, _) = codec(cap);
    let mut src = prefix_only(len);
    let capacity = src.capacity();
    match codec.decode(&mut src) {
        Err(CodecError::FrameTooLarge { len: l, max }) => {
            assert_eq!(l, len as usize);
            assert_eq!(max, cap);
        }
        other => panic!("prefix {len} under cap {cap}: {other:?}"),
    }
    assert_eq!(src.capacity(), capacity, "no allocation for the body");
    assert_eq!(src.len(), LENGTH_PREFIX_BYTES, "nothing consumed");
}

#[test]
fn codec_refuses_max_u32_prefix() {
    assert_too_large_without_allocation(DEFAULT_MAX_FRAME_BYTES, u32::MAX);
    assert_too_large_without_allocation(MAX_HANDSHAKE_FRAME_BYTES, u32::MAX);
}

#[test]
fn codec_refuses_cap_plus_one() {
    assert_too_large_without_allocation(
        DEFAULT_MAX_FRAME_BYTES,
        DEFAULT_MAX_FRAME_BYTES as u32 + 1,
    );
    assert_too_large_without_allocation(
        MAX_HANDSHAKE_FRAME_BYTES,
        MAX_HANDSHAKE_FRAME_BYTES as u32 + 1,
    );
}

#[test]
fn codec_refuses_over_4k_before_handshake() {
    assert_eq!(MAX_HANDSHAKE_FRAME_BYTES, 4096);
    for len in [4097u32, 10_000, 65_536, DEFAULT_MAX_FRAME_BYTES as u32] {
        assert_too_large_without_allocation(MAX_HANDSHAKE_FRAME_BYTES, len);
    }
}

#[test]
fn codec_waits_for_a_frame_at_the_cap_without_reserving() {
    for cap in [MAX_HANDSHAKE_FRAME_BYTES, DEFAULT_MAX_FRAME_BYTES] {
        let (mut codec, _) = codec(cap);
        let mut src = prefix_only(cap as u32);
        let capacity = src.capacity();
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert_eq!(src.capacity(), capacity);
        assert_eq!(src.len(), LENGTH_PREFIX_BYTES);
    }
}

#[test]
fn codec_refuses_zero_length() {
    let (mut codec, _) = codec(DEFAULT_MAX_FRAME_BYTES);
    let mut src = prefix_only(0);
    assert!(matches!(codec.decode(&mut src), Err(CodecError::Empty)));
    // Also with bytes following it.
    src.extend_from_slice(&Frame::Ping { nonce: 1 }.encode());
    assert!(matches!(codec.decode(&mut src), Err(CodecError::Empty)));
}

#[test]
fn codec_returns_none_until_the_frame_is_complete() {
    let wire = Frame::Hello(hello_vector_value()).encode();
    let (mut codec, _) = codec(MAX_HANDSHAKE_FRAME_BYTES);
    let mut src = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        src.put_u8(*byte);
        let out = codec.decode(&mut src).unwrap();
        if i + 1 < wire.len() {
            assert!(
                out.is_none(),
                "frame after {} of {} bytes",
                i + 1,
                wire.len()
            );
            assert_eq!(
                src.len(),
                i + 1,
                "nothing consumed before the frame is whole"
            );
        } else {
            let body = out.expect("complete frame");
            assert_eq!(&body[..], &wire[4..]);
            assert!(src.is_empty());
        }
    }
}

#[test]
fn codec_splits_back_to_back_frames() {
    let frames = [
        Frame::Ping { nonce: 1 },
        app_123(),
        Frame::Disconnect {
            reason: DisconnectReason::Shutdown,
        },
    ];
    let mut src = BytesMut::new();
    for f in &frames {
        src.extend_from_slice(&f.encode());
    }
    src.extend_from_slice(&[0, 0]); // start of a next prefix
    let (mut codec, _) = codec(MAX_HANDSHAKE_FRAME_BYTES);
    for f in &frames {
        let body = codec.decode(&mut src).unwrap().unwrap();
        assert_eq!(&Frame::decode(body).unwrap(), f);
    }
    assert!(codec.decode(&mut src).unwrap().is_none());
    assert_eq!(&src[..], &[0, 0]);
}

#[test]
fn raising_the_shared_cap_admits_larger_frames() {
    let payload = Bytes::from(vec![0xab; 10_000]);
    let wire = Frame::App(payload.clone()).encode();
    let (mut codec, shared) = codec(MAX_HANDSHAKE_FRAME_BYTES);
    let mut src = BytesMut::from(&wire[..]);
    assert!(matches!(
        codec.decode(&mut src),
        Err(CodecError::FrameTooLarge {
            max: MAX_HANDSHAKE_FRAME_BYTES,
            ..
        })
    ));
    // The session raises the cap once the Hello is accepted; the same codec sees it.
    shared.store(DEFAULT_MAX_FRAME_BYTES, Ordering::Relaxed);
    let body = codec.decode(&mut src).unwrap().unwrap();
    assert_eq!(Frame::decode(body).unwrap(), Frame::App(payload));
    // And lowering it again refuses the next one.
    shared.store(MAX_HANDSHAKE_FRAME_BYTES, Ordering::Relaxed);
    let mut src = BytesMut::from(&wire[..]);
    assert!(codec.decode(&mut src).is_err());
}

// ---------------------------------------------------------------------------------------------
// HelloPolicy

fn policy() -> HelloPolicy {
    HelloPolicy {
        magic: *b"plnk",
        genesis: [7; 32],
    }
}

fn good_hello() -> Hello {
    Hello {
        magic: *b"plnk",
        version: PROTOCOL_VERSION,
        genesis: [7; 32],
        nonce: 99,
        listen_port: 7700,
        best_height: 5,
        user_agent: "test".into(),
    }
}

#[test]
fn hello_policy_accepts_a_matching_hello() {
    assert_eq!(policy().check(&good_hello()), Ok(()));
    let max_agent = Hello {
        user_agent: "a".repeat(MAX_USER_AGENT_BYTES),
        ..good_hello()
    };
    assert_eq!(policy().check(&max_agent), Ok(()));
}

#[test]
fn hello_policy_reports_each_mismatch() {
    let p = policy();
    let wrong_magic = Hello {
        magic: *b"plnl",
        ..good_hello()
    };
    assert_eq!(p.check(&wrong_magic), Err(DisconnectReason::WrongNetwork));
    for version in [0, PROTOCOL_VERSION + 1, u32::MAX] {
        let h = Hello {
            version,
            ..good_hello()
        };
        assert_eq!(p.check(&h), Err(DisconnectReason::WrongVersion));
    }
    let mut genesis = [7; 32];
    genesis[31] = 8;
    let h = Hello {
        genesis,
        ..good_hello()
    };
    assert_eq!(p.check(&h), Err(DisconnectReason::WrongGenesis));
    let h = Hello {
        user_agent: "a".repeat(MAX_USER_AGENT_BYTES + 1),
        ..good_hello()
    };
    assert_eq!(p.check(&h), Err(DisconnectReason::BadHello));
    // The cap is in bytes, not characters: 129 two-byte characters are 258 bytes.
    let h = Hello {
        user_agent: "é".repeat(129),
        ..good_hello()
    };
    assert_eq!(p.check(&h), Err(DisconnectReason::BadHello));
}

#[test]
fn hello_policy_checks_in_spec_order() {
    let p = policy();
    let all_wrong = Hello {
        magic: [0; 4],
        version: PROTOCOL_VERSION + 1,
        genesis: [0; 32],
        user_agent: "x".repeat(MAX_USER_AGENT_BYTES + 1),
        ..good_hello()
    };
    assert_eq!(p.check(&all_wrong), Err(DisconnectReason::WrongNetwork));
    let h = Hello {
        magic: *b"plnk",
        ..all_wrong.clone()
    };
    assert_eq!(p.check(&h), Err(DisconnectReason::WrongVersion));
    let h = Hello {
        version: PROTOCOL_VERSION,
        ..h
    };
    assert_eq!(p.check(&h), Err(DisconnectReason::WrongGenesis));
    let h = Hello {
        genesis: [7; 32],
        ..h
    };
    assert_eq!(p.check(&h), Err(DisconnectReason::BadHello));
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        any::<[u8; 4]>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u16>(),
        any::<u64>(),
        ".{0,300}",
    )
        .prop_map(
            |(magic, version, genesis, nonce, listen_port, best_height, user_agent)| Hello {
                magic,
                version,
                genesis,
                nonce,
                listen_port,
                best_height,
                user_agent,
            },
        )
}

fn arb_reason() -> impl Strategy<Value = DisconnectReason> {
    proptest::sample::select(DisconnectReason::ALL.to_vec())
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        arb_hello().prop_map(Frame::Hello),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        arb_reason().prop_map(|reason| Frame::Disconnect { reason }),
        proptest::collection::vec(any::<u8>(), 0..4096).prop_map(|p| Frame::App(Bytes::from(p))),
    ]
}

/// Feeds `bytes` to a codec and decodes every body it yields, until it needs more or fails.
/// Returns the frames decoded; must never panic.
fn drain(bytes: &[u8], cap: usize) -> Vec<Result<Frame, CodecError>> {
    let (mut codec, _) = codec(cap);
    let mut src = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut src) {
            Ok(Some(body)) => out.push(Frame::decode(body)),
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every frame survives encode -> codec -> Frame::decode unchanged.
    #[test]
    fn frames_round_trip(frame in arb_frame()) {
        let wire = frame.encode();
        prop_assert_eq!(
            u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize,
            wire.len() - 4
        );
        let decoded = decode_wire(&wire, DEFAULT_MAX_FRAME_BYTES);
        prop_assert_eq!(decoded.ok(), Some(frame));
    }

    /// Every reason round-trips (exhaustively, not by sampling).
    #[test]
    fn every_reason_round_trips(nonce in any::<u64>()) {
        for reason in DisconnectReason::ALL {
            let f = Frame::Disconnect { reason };
            prop_assert_eq!(decode_wire(&f.encode(), MAX_HANDSHAKE_FRAME_BYTES).ok(), Some(f));
        }
        let ping = Frame::Ping { nonce };
        prop_assert_eq!(decode_wire(&ping.encode(), MAX_HANDSHAKE_FRAME_BYTES).ok(), Some(ping));
    }

    /// A Hello whose user agent respects the cap always fits under the pre-handshake cap.
    #[test]
    fn valid_hellos_fit_the_handshake_cap(mut hello in arb_hello(), fill in any::<bool>()) {
        if fill {
            hello.user_agent = "\u{10ffff}".repeat(MAX_USER_AGENT_BYTES / 4);
        }
        while hello.user_agent.len() > MAX_USER_AGENT_BYTES {
            hello.user_agent.pop();
        }
        let wire = Frame::Hello(hello.clone()).encode();
        prop_assert!(wire.len() - 4 <= MAX_HANDSHAKE_FRAME_BYTES);
        prop_assert_eq!(decode_wire(&wire, MAX_HANDSHAKE_FRAME_BYTES).ok(), Some(Frame::Hello(hello)));
    }

    /// A stream of frames cut into arbitrary pieces decodes to the same frames, in order.
    #[test]
    fn frame_streams_survive_any_segmentation(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&f.encode());
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len())).collect();
        points.push(wire.len());
        points.sort_unstable();
        let (mut codec, _) = codec(DEFAULT_MAX_FRAME_BYTES);
        let mut src = BytesMut::new();
        let mut decoded = Vec::new();
        let mut at = 0;
        for p in points {
            src.extend_from_slice(&wire[at..p]);
            at = p;
            while let Some(body) = codec.decode(&mut src).unwrap() {
                decoded.push(Frame::decode(body).unwrap());
            }
        }
        prop_assert!(src.is_empty());
        prop_assert_eq!(decoded, frames);
    }

    /// Decoding a bin8 or bin16 form of a payload gives the same frame as our bin32 form.
    #[test]
    fn short_bin_forms_decode_like_bin32(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        let expected = Frame::App(Bytes::from(payload.clone()));
        if payload.len() <= u8::MAX as usize {
            prop_assert_eq!(Frame::decode(app_body(0xc4, payload.len(), &payload)).ok(), Some(expected.clone()));
        }
        prop_assert_eq!(Frame::decode(app_body(0xc5, payload.len(), &payload)).ok(), Some(expected.clone()));
        prop_assert_eq!(Frame::decode(app_body(0xc6, payload.len(), &payload)).ok(), Some(expected));
    }

    /// Random bytes never panic the codec or the decoders, under either cap.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = drain(&bytes, MAX_HANDSHAKE_FRAME_BYTES);
        let _ = drain(&bytes, DEFAULT_MAX_FRAME_BYTES);
        let _ = Frame::decode(Bytes::from(bytes.clone()));
        let _ = decode_app::<IgnoredAny>(&bytes);
        let _ = decode_app::<AppMsg>(&bytes);
    }

    /// Random bytes behind a valid prefix, or behind the frame-kind keys, never panic; what
    /// decodes re-encodes to a frame that decodes to itself.
    #[test]
    fn random_bodies_never_panic(
        key in proptest::sample::select(vec!["Hello", "Ping", "Pong", "Disconnect", "App", "Nope"]),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut body = vec![0x81, 0xa0 | key.len() as u8];
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(&tail);
        let mut wire = (body.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        for frame in drain(&wire, MAX_HANDSHAKE_FRAME_BYTES).into_iter().flatten() {
            prop_assert_eq!(decode_wire(&frame.encode(), DEFAULT_MAX_FRAME_BYTES).ok(), Some(frame));
        }
    }

    /// Truncating a valid frame anywhere never yields a frame: the codec waits for more, and
    /// the truncated body on its own is refused by the frame decoder.
    #[test]
    fn truncations_never_yield_a_frame(frame in arb_frame(), cut in any::<prop::sample::Index>()) {
        let wire = frame.encode();
        let cut = cut.index(wire.len());
        let (mut codec, _) = codec(DEFAULT_MAX_FRAME_BYTES);
        let mut src = BytesMut::from(&wire[..cut]);
        prop_assert!(codec.decode(&mut src).unwrap().is_none());
        prop_assert_eq!(src.len(), cut);
        let body_cut = cut.saturating_sub(LENGTH_PREFIX_BYTES);
        let body = Bytes::copy_from_slice(&wire[LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + body_cut]);
        prop_assert!(Frame::decode(body).is_err());
    }
}

/// A record of every MessagePack shape the value-length scanner must walk.
type Row = (u64, i32, String, Vec<u8>, Option<f64>);

/// A trailing value that is itself truncated (an array header with no elements) is still
/// trailing data, not the end of the payload.
#[test]
fn decode_app_refuses_truncated_trailing_values() {
    let mut payload = rmp_serde::to_vec(&(1u8, 2u8)).unwrap();
    assert_eq!(decode_app::<(u8, u8)>(&payload).unwrap(), (1, 2));
    payload.push(0x9f); // fixarray of 15, no elements
    assert!(decode_app::<(u8, u8)>(&payload).is_err());
    payload.pop();
    payload.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff]); // bin32 with no data
    assert!(decode_app::<(u8, u8)>(&payload).is_err());
}

proptest! {
    /// The value length the decoder relies on agrees with rmp-serde's encoder for any value
    /// shape, and never panics or reads past the buffer on random bytes.
    #[test]
    fn msgpack_value_len_matches_the_encoder(
        v in proptest::collection::vec((any::<u64>(), any::<i32>(), ".{0,40}", proptest::collection::vec(any::<u8>(), 0..100), any::<Option<f64>>()), 0..8),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        #[derive(serde::Serialize)]
        struct W<'a>(&'a [Row], #[serde(with = "serde_bytes")] &'a [u8]);
        let bytes = rmp_serde::to_vec(&W(&v, &junk)).unwrap();
        prop_assert_eq!(msgpack_value_len(&bytes), Some(bytes.len()));
        let mut longer = bytes.clone();
        longer.extend_from_slice(&junk);
        prop_assert_eq!(msgpack_value_len(&longer), Some(bytes.len()));
        let step = (bytes.len() / 64).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            prop_assert_eq!(msgpack_value_len(&bytes[..cut]), None);
        }
        if let Some(n) = msgpack_value_len(&junk) {
            prop_assert!(n <= junk.len());
        }
    }
}

/// Several messages encoded together are exactly the frames encoded one by one, back to back.
#[test]
fn encode_apps_is_the_concatenation_of_single_frames() {
    let msgs: Vec<(u64, String)> = (0..5).map(|i| (i, "x".repeat(i as usize * 7))).collect();
    let together = encode_apps(&msgs).unwrap();
    let one_by_one: Vec<u8> = msgs
        .iter()
        .flat_map(|m| encode_app(m).unwrap().to_vec())
        .collect();
    assert_eq!(&together[..], &one_by_one[..]);
    assert!(encode_apps::<(u64, String)>(&[]).unwrap().is_empty());
}

/// The batching codec yields one frame at a time under the handshake cap (the session must
/// register after the Hello before it handles anything else), every complete frame of a read at
/// once after it, and re-examines a frame that failed after good ones on the next call.
#[test]
fn frame_batch_codec_batches_after_the_handshake_and_rechecks_a_failing_frame() {
    // A small configured cap does not switch batching off: the flag is the codec's own.
    {
        let small = Arc::new(AtomicUsize::new(MAX_HANDSHAKE_FRAME_BYTES));
        let mut codec = FrameBatchCodec::new(small, Arc::new(AtomicBool::new(true)));
        let mut buf = BytesMut::new();
        for _ in 0..3 {
            buf.extend_from_slice(&Frame::Ping { nonce: 1 }.encode());
        }
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 3);
    }
    let cap = Arc::new(AtomicUsize::new(MAX_HANDSHAKE_FRAME_BYTES));
    let batching = Arc::new(AtomicBool::new(false));
    let mut codec = FrameBatchCodec::new(cap.clone(), batching.clone());
    let ping = Frame::Ping { nonce: 1 }.encode();
    let big = Frame::App(Bytes::from(vec![0u8; 10_000])).encode();
    let mut buf = BytesMut::new();
    for _ in 0..3 {
        buf.extend_from_slice(&ping);
    }
    buf.extend_from_slice(&big);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 1);
    // The cap is raised and batching switched on (as the session does on the Hello): the rest
    // comes at once, the big frame included.
    cap.store(DEFAULT_MAX_FRAME_BYTES, Ordering::Relaxed);
    batching.store(true, Ordering::Relaxed);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 3);
    assert!(codec.decode(&mut buf).unwrap().is_none());

    // Two good frames, then a length over the cap: the good ones first, then the error.
    buf.extend_from_slice(&ping);
    buf.extend_from_slice(&ping);
    buf.extend_from_slice(&u32::MAX.to_be_bytes());
    let good = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(good.len(), 2);
    assert_eq!(good.wire_len(), 2 * ping.len());
    assert_eq!(
        Frame::decode(good.to_bodies()[1].clone()).unwrap(),
        Frame::Ping { nonce: 1 }
    );
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::FrameTooLarge { .. })
    ));
}
