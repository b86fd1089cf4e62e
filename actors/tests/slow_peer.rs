//! Invariant 7 on the write side: a peer that stops reading costs at most its outbound budget.
//! While the node broadcasts about 100 MB, the stuck peer's queue never exceeds the budget, it is
//! dropped with SlowPeer, the healthy peers receive every message in order, and the process's
//! memory stays flat.

mod common;

use common::*;
use peerlink_actors::{DisconnectReason, NetworkConfig, PeerEvent};

const BUDGET: usize = 1024 * 1024;
const BLOB: usize = 64 * 1024;
const MESSAGES: u64 = 1600; // 1600 x 64 KiB = 100 MiB
/// Messages a healthy peer may have outstanding: the test reads them as it sends, so that it
/// measures the node, not a backlog of its own.
const WINDOW: u64 = 4;
const FILL: u8 = 0xab;

fn config(last: u8) -> NetworkConfig {
    NetworkConfig {
        max_frame_bytes: 256 * 1024,
        outbound_budget_bytes: BUDGET,
        ping_interval_ms: 10_000,
        ping_timeout_ms: 30_000,
        ..test_config(last)
    }
}

/// Message `seq`: the sequence number at both ends of a constant body.
fn stamp(blob: &mut [u8], seq: u64) {
    let n = blob.len();
    blob[..8].copy_from_slice(&seq.to_le_bytes());
    blob[n - 8..].copy_from_slice(&seq.to_le_bytes());
}

fn check(node: &str, m: &TestMsg, seq: u64, fill: &[u8]) {
    let TestMsg::Blob(v) = m else {
        panic!("{node}: expected a blob, got {m:?}")
    };
    assert_eq!(v.len(), BLOB, "{node}: message {seq} length");
    let first = u64::from_le_bytes(v[..8].try_into().unwrap());
    let last = u64::from_le_bytes(v[BLOB - 8..].try_into().unwrap());
    assert_eq!((first, last), (seq, seq), "{node}: message out of order");
    assert!(v[8..BLOB - 8] == *fill, "{node}: message {seq} corrupted");
}

#[actix::test]
async fn slow_peer_is_dropped_within_its_budget_and_others_get_everything() {
    let mut a = TestNode::start(config(2)).await;
    let mut b = TestNode::start(config(3)).await;
    let mut c = TestNode::start(config(4)).await;
    b.net.connect(a.addr());
    c.net.connect(a.addr());
    b.connected().await;
    c.connected().await;
    let mut slow = RawPeer::connect(5, a.addr()).await;
    slow.handshake(a.net.config()).await;
    // From here on the raw peer reads nothing.
    let connected = eventually("three peers on A", || async {
        let p = a.net.peers().await;
        (p.len() == 3).then_some(p)
    })
    .await;
    assert!(connected.iter().any(|p| p.ip == lo(5)));
    let slow_handle = a.net.handle(lo(5)).expect("slow peer registered");

    let fill = vec![FILL; BLOB - 16];
    let mut msg = TestMsg::Blob(vec![FILL; BLOB]);
    let rss_before = rss_bytes();
    let mut rss_max = rss_before;
    let mut max_queued = 0;
    let mut counts = Vec::with_capacity(MESSAGES as usize);
    let mut next_in = 0;
    for seq in 0..MESSAGES {
        if let TestMsg::Blob(v) = &mut msg {
            stamp(v, seq);
        }
        counts.push(a.net.broadcast(&msg, None).await.unwrap());
        let q = slow_handle.queued_bytes();
        assert!(q <= BUDGET, "slow peer queued {q} bytes, budget {BUDGET}");
        max_queued = max_queued.max(q);
        while next_in + WINDOW <= seq {
            check("B", &b.next_msg().await.1, next_in, &fill);
            check("C", &c.next_msg().await.1, next_in, &fill);
            next_in += 1;
        }
        if seq % 32 == 0 {
            rss_max = rss_max.max(rss_bytes());
        }
    }
    while next_in < MESSAGES {
        check("B", &b.next_msg().await.1, next_in, &fill);
        check("C", &c.next_msg().await.1, next_in, &fill);
        next_in += 1;
    }
    rss_max = rss_max.max(rss_bytes());
    assert!(b.inbound.try_recv().is_err() && c.inbound.try_recv().is_err());

    // Every broadcast reached B and C; the slow peer until it was dropped, never after.
    let dropped_at = counts
        .iter()
        .position(|&n| n == 2)
        .expect("the slow peer was dropped");
    assert!(counts[..dropped_at].iter().all(|&n| n == 3), "{counts:?}");
    assert!(counts[dropped_at..].iter().all(|&n| n == 2), "{counts:?}");

    let gone = loop {
        match a.next_event().await {
            PeerEvent::Disconnected(r) => break r,
            // The three connections of the setup.
            PeerEvent::Connected { info, .. } => {
                assert!([b.ip(), c.ip(), lo(5)].contains(&info.ip), "{info:?}")
            }
        }
    };
    assert_eq!(gone.ip, lo(5));
    assert_eq!(gone.reason, DisconnectReason::SlowPeer);
    assert_eq!(
        disconnects(a.net.metrics(), DisconnectReason::SlowPeer, false),
        1
    );
    assert!(slow_handle.is_closed());
    let peers = a.net.peers().await;
    assert_eq!(
        peers.iter().map(|p| p.ip).collect::<Vec<_>>(),
        vec![b.ip(), c.ip()]
    );
    // The stuck socket is closed: once the raw peer reads again it finds the end.
    let buffered = slow.drain_to_close().await;
    sockets_settle(&a.net, 2, "A closed the slow peer's socket").await;

    let grew = rss_max.saturating_sub(rss_before);
    eprintln!(
        "slow peer: dropped after {dropped_at} of {MESSAGES} messages ({} MiB), max queued {} KiB \
         (budget {} KiB), {} KiB were in the socket buffers; RSS {} KiB -> max {} KiB (+{} KiB)",
        dropped_at * BLOB / (1024 * 1024),
        max_queued / 1024,
        BUDGET / 1024,
        buffered / 1024,
        rss_before / 1024,
        rss_max / 1024,
        grew / 1024
    );
    assert!(
        dropped_at < MESSAGES as usize / 2,
        "dropped only after {dropped_at} messages"
    );
    // Three budgets plus slack for the allocator's per-thread caches; 100 MB went through.
    assert!(
        grew < 3 * BUDGET + 8 * 1024 * 1024,
        "RSS grew by {} KiB",
        grew / 1024
    );
    for n in [&a, &b, &c] {
        n.net.shutdown().await;
    }
}
