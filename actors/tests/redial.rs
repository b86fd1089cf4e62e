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
