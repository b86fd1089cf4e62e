//! The connector keeps its configured peers: when a peer goes away, it redials it (after the
//! backoff) without being told, and the new connection is to the peer's new instance.

mod common;

use std::net::SocketAddr;

use common::*;
use peerlink_actors::{DisconnectReason, NetworkConfig};

#[actix::test]
async fn a_lost_configured_peer_is_redialled() {
    let a = TestNode::on(62).await;
    let a_addr = a.addr();
    let mut b = TestNode::start(NetworkConfig {
        peers: vec![a_addr.into()],
        ..test_config(63)
    })
    .await;
    let first = b.connected().await;
    assert_eq!(first.ip, a_addr.ip());
    assert_eq!(first.conn.remote_nonce, a.net.node_nonce());

    a.net.shutdown().await;
    // The listening socket is closed by the time shutdown returns: the port binds again.
    drop(std::net::TcpListener::bind(a_addr).expect("A's port is free after shutdown"));
    let gone = b.disconnected().await;
    assert_eq!(gone.reason, DisconnectReason::Shutdown);
    assert!(gone.by_peer);

    // A comes back on the same address with a new instance (new nonce); nobody tells B.
    let a2 = TestNode::start(NetworkConfig {
        listen: SocketAddr::new(a_addr.ip(), a_addr.port()),
        ..test_config(62)
    })
    .await;
    let again = b.connected().await;
    assert_eq!(again.ip, a_addr.ip());
    assert_eq!(again.conn.remote_nonce, a2.net.node_nonce());
    assert_ne!(again.conn.conn_id, first.conn.conn_id);
    let book = b.net.address_book().await;
    let entry = book
        .iter()
        .find(|s| s.addr == a_addr)
        .expect("A is in B's book");
    assert!(entry.attempts >= 2, "B dialled A again: {entry:?}");
    assert_eq!(b.net.peers().await.len(), 1);
}

/// An address the operator asked for while its IP was already connected (the peer had dialled
/// us) is met by that connection. When the peer then asks to disconnect, the address is not
/// dialled the same instant (that would undo the peer's request, and it is what made a
/// simultaneous-open round redial a peer that had just said goodbye); it waits a base interval.
#[actix::test]
async fn a_peer_that_asked_to_disconnect_is_not_redialled_at_once() {
    let mut b = TestNode::start(NetworkConfig {
        backoff_base_ms: 60_000,
        backoff_max_ms: 120_000,
        ..test_config(65)
    })
    .await;
    let mut a = TestNode::start(NetworkConfig {
        backoff_base_ms: 60_000,
        backoff_max_ms: 120_000,
        ..test_config(64)
    })
    .await;
    let a_addr = a.addr();
    a.net.connect(b.addr());
    let inbound = b.connected().await;
    assert_eq!(inbound.ip, a_addr.ip());
    // Both ends registered: A's own registration may come after B's, and A can only disconnect
    // a connection its registry holds.
    assert_eq!(a.connected().await.ip, b.ip());
    // B's operator asks for A, which is connected already: nothing is dialled, the address waits
    // due in B's book (the book answers after the connector handled the request: one mailbox).
    b.net.connect(a_addr);
    let entry = b
        .net
        .address_book()
        .await
        .into_iter()
        .find(|s| s.addr == a_addr)
        .expect("A is in B's book");
    assert!(!entry.busy, "{entry:?}");
    assert_eq!(b.net.metrics().dials.get(), 0);

    assert!(a.net.disconnect(b.ip(), DisconnectReason::Requested).await);
    let gone = b.disconnected().await;
    assert_eq!(gone.reason, DisconnectReason::Requested);
    assert!(gone.by_peer);
    let waiting = eventually("B's entry for A waits a base interval", || async {
        b.net
            .address_book()
            .await
            .into_iter()
            .find(|s| s.addr == a_addr && !s.busy && !s.due_in.is_zero())
    })
    .await;
    assert!(
        waiting.due_in > std::time::Duration::from_secs(30),
        "{waiting:?}"
    );
    assert_eq!(b.net.metrics().dials.get(), 0, "B redialled A");
    assert!(b.net.peers().await.is_empty());

    // The operator's next connect dials at once.
    b.net.connect(a_addr);
    let again = b.connected().await;
    assert_eq!(again.ip, a_addr.ip());
    assert_eq!(b.net.metrics().dials.get(), 1);
}
