//! Invariant 7 on the read side: a hostile length prefix (0xFFFFFFFF, one byte over the cap
//! after the handshake, one byte over the 4 KiB cap before it) closes its connection at once with
//! FrameTooLarge, before any byte of the body is buffered; garbage closes with BadFrame. The node
//! keeps serving its other peers and its memory does not move.

mod common;

use std::time::{Duration, Instant};

use common::*;
use peerlink_actors::wire::Frame;
use peerlink_actors::wire::MAX_HANDSHAKE_FRAME_BYTES;
use peerlink_actors::{DisconnectReason, NetworkConfig};

const MAX_FRAME: usize = 64 * 1024;

/// What the raw peer sends, and when.
struct Case {
    name: &'static str,
    after_handshake: bool,
    bytes: Vec<u8>,
    reason: DisconnectReason,
}

fn prefix(len: u32) -> Vec<u8> {
    len.to_be_bytes().to_vec()
}

fn cases() -> Vec<Case> {
    let framed = |body: &[u8]| {
        let mut v = prefix(body.len() as u32);
        v.extend_from_slice(body);
        v
    };
    vec![
        Case {
            name: "0xFFFFFFFF before the handshake",
            after_handshake: false,
            bytes: prefix(u32::MAX),
            reason: DisconnectReason::FrameTooLarge,
        },
        Case {
            name: "4 KiB + 1 before the handshake",
            after_handshake: false,
            bytes: prefix(MAX_HANDSHAKE_FRAME_BYTES as u32 + 1),
            reason: DisconnectReason::FrameTooLarge,
        },
        Case {
            // Exactly at the cap is read (and then found to be garbage): the cap is 4 KiB.
            name: "4 KiB of garbage before the handshake",
            after_handshake: false,
            bytes: framed(&[0xc1; MAX_HANDSHAKE_FRAME_BYTES]),
            reason: DisconnectReason::BadFrame,
        },
        Case {
            name: "max_frame_bytes + 1 after the handshake",
            after_handshake: true,
            bytes: prefix(MAX_FRAME as u32 + 1),
            reason: DisconnectReason::FrameTooLarge,
        },
        Case {
            name: "0xFFFFFFFF after the handshake",
            after_handshake: true,
            bytes: prefix(u32::MAX),
            reason: DisconnectReason::FrameTooLarge,
        },
        Case {
            name: "garbage bytes after the handshake",
            after_handshake: true,
            bytes: framed(&[0xc1, 0xff, 0x00, 0x13, 0x37, 0xc1, 0xc1, 0xc1]),
            reason: DisconnectReason::BadFrame,
        },
        Case {
            name: "zero-length frame after the handshake",
            after_handshake: true,
            bytes: prefix(0),
            reason: DisconnectReason::BadFrame,
        },
        Case {
            name: "App frame whose payload is no application message",
            after_handshake: true,
            bytes: Frame::App(bytes::Bytes::from_static(&[0xc1, 0xc1, 0xc1]))
                .encode()
                .to_vec(),
            reason: DisconnectReason::BadFrame,
        },
    ]
}

#[actix::test]
async fn hostile_frames_close_at_once_and_cost_nothing() {
    let config = |last| NetworkConfig {
        max_frame_bytes: MAX_FRAME,
        handshake_timeout_ms: 5_000,
        ping_interval_ms: 10_000,
        ping_timeout_ms: 30_000,
        ..test_config(last)
    };
    let mut a = TestNode::start(config(2)).await;
    let mut b = TestNode::start(config(3)).await;
    b.net.connect(a.addr());
    let b_on_a = a.connected().await;
    b.connected().await;
    let at_once = Duration::from_secs(1);
    assert!(at_once * 4 < a.net.config().handshake_timeout());

    let rss_before = rss_bytes();
    let peak_before = vm_peak_bytes();
    let mut rss_max = rss_before;
    for (i, case) in cases().into_iter().enumerate() {
        let raw_ip = 10 + i as u8;
        let rejected_before = frames_rejected(a.net.metrics(), case.reason);
        let mut raw = RawPeer::connect(raw_ip, a.addr()).await;
        if case.after_handshake {
            raw.handshake(a.net.config()).await;
            let info = a.connected().await;
            assert_eq!(info.ip, lo(raw_ip), "{}", case.name);
        } else {
            raw.expect_hello().await;
        }
        let t0 = Instant::now();
        raw.send_raw(&case.bytes).await;
        raw.expect_disconnect(case.reason).await;
        let took = t0.elapsed();
        raw.expect_closed().await;
        assert!(took < at_once, "{}: closed after {took:?}", case.name);
        assert_eq!(
            frames_rejected(a.net.metrics(), case.reason),
            rejected_before + 1,
            "{}",
            case.name
        );
        if case.after_handshake {
            let gone = a.disconnected().await;
            assert_eq!(
                (gone.ip, gone.reason),
                (lo(raw_ip), case.reason),
                "{}",
                case.name
            );
        }
        rss_max = rss_max.max(rss_bytes());

        // B is still served on the same connection, both ways.
        sockets_settle(&a.net, 1, "only B's socket left").await;
        let peers = a.net.peers().await;
        assert_eq!(peers.len(), 1, "{}", case.name);
        assert_eq!(peers[0].conn.conn_id, b_on_a.conn.conn_id, "{}", case.name);
        let m = TestMsg::Text {
            seq: i as u64,
            body: case.name.into(),
        };
        a.net.send(b.ip(), &m).unwrap();
        assert_eq!(b.next_msg().await.1, m);
        b.net.send(a.ip(), &m).unwrap();
        assert_eq!(a.next_msg().await.1, m);
    }
    let rss_after = rss_bytes();
    let peak_after = vm_peak_bytes();
    let grew = rss_max.saturating_sub(rss_before);
    eprintln!(
        "hostile frames: RSS before {} KiB, max {} KiB, after {} KiB; VmPeak {} -> {} KiB",
        rss_before / 1024,
        rss_max / 1024,
        rss_after / 1024,
        peak_before / 1024,
        peak_after / 1024
    );
    // 0xFFFFFFFF twice, 64 KiB + 1: none of it may be reserved. Slack for allocator noise.
    assert!(grew < 8 * 1024 * 1024, "RSS grew by {} KiB", grew / 1024);
    // An untouched reservation for a 4 GiB prefix would not show in the RSS, but in VmPeak.
    let reserved = peak_after.saturating_sub(peak_before);
    assert!(
        reserved < 512 * 1024 * 1024,
        "VmPeak grew by {} KiB",
        reserved / 1024
    );
    a.net.shutdown().await;
    b.net.shutdown().await;
}
