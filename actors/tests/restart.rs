//! Invariant 3 (restart replaces at once): a new handshake from a known IP with a different
//! nonce replaces the old connection immediately, even while the old socket is still open and
//! healthy (the half-open case a crashed node leaves behind), not after a ping timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use peerlink_actors::{DisconnectReason, PeerEvent};

#[actix::test]
async fn a_new_nonce_from_a_known_ip_replaces_the_old_connection_at_once() {
    let (mut a, mut b, mut b2, old) = connected_pair_and_restarted_b(2, 3).await;
    let ping_timeout = Duration::from_millis(a.net.config().ping_timeout_ms);
    // A sends to B's IP before the restart: Network::send keeps the old connection's handle,
    // which must not carry anything once the connection is replaced (checked at the end).
    let m0 = TestMsg::Text {
        seq: 0,
        body: "hello old b".into(),
    };
    a.net.send(b.ip(), &m0).unwrap();
    assert_eq!(b.next_msg().await.1, m0);

    let t0 = Instant::now();
    b2.net.connect(a.addr());
    // A: the old entry leaves with PeerRestarted, then the new one arrives, in that order.
    let gone = match a.next_event().await {
        PeerEvent::Disconnected(r) => r,
        other => panic!("expected the old connection to leave first, got {other:?}"),
    };
    let new = a.connected().await;
    let took = t0.elapsed();
    assert_eq!(gone.ip, b.ip());
    assert_eq!(gone.conn_id, old.conn.conn_id);
    assert_eq!(gone.reason, DisconnectReason::PeerRestarted);
    assert!(!gone.by_peer, "A decided the replacement itself");
    assert_eq!(new.ip, b.ip());
    assert_eq!(new.conn.remote_nonce, b2.net.node_nonce());
    assert_ne!(new.conn.conn_id, old.conn.conn_id);
    assert_eq!(new.meta.listen_addr, Some(b2.addr()));
    assert!(
        took < Duration::from_secs(2) && took < ping_timeout / 10,
        "replacement took {took:?}; ping timeout is {ping_timeout:?}"
    );

    // The old instance hears why it was dropped; the new one is connected.
    let b_gone = b.disconnected().await;
    assert_eq!(b_gone.reason, DisconnectReason::PeerRestarted);
    assert!(b_gone.by_peer);
    assert_eq!(b2.connected().await.ip, a.ip());

    // Exactly one entry remains on A, and it stays once the old socket is fully closed.
    sockets_settle(&a.net, 1, "A's old socket closed").await;
    let peers = a.net.peers().await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].conn.conn_id, new.conn.conn_id);
    assert_eq!(peers[0].conn.remote_nonce, b2.net.node_nonce());
    let stats = a.net.stats().await.unwrap();
    assert_eq!(stats.replaced, 1);
    assert_eq!(stats.connects, 2);
    assert!(b.net.peers().await.is_empty());

    // The new connection carries traffic both ways.
    let m = TestMsg::Text {
        seq: 1,
        body: "hello b2".into(),
    };
    a.net.send(b.ip(), &m).unwrap();
    let (from, got) = b2.next_msg().await;
    assert_eq!((from.ip(), got), (a.ip(), m));
    let m = TestMsg::Text {
        seq: 2,
        body: "hello a".into(),
    };
    b2.net.send(a.ip(), &m).unwrap();
    let (from, got) = a.next_msg().await;
    assert_eq!(from.conn_id(), new.conn.conn_id);
    assert_eq!(got, m);
    assert!(
        b.inbound.try_recv().is_err(),
        "nothing reached the old instance"
    );

    for n in [&a, &b, &b2] {
        n.net.shutdown().await;
    }
}
