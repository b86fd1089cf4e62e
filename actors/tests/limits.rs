//! The acceptor's limits and bans: above the pending-handshake limit or from a banned IP, a
//! connection gets Disconnect{reason} instead of a Hello and is closed; above the inbound limit,
//! a newcomer completes its handshake and is refused by the registry (after the eviction policy
//! found nobody to evict); freed slots and other IPs are served again.

mod common;

use std::time::Duration;

use common::*;
use peerlink_actors::{DisconnectReason, NetworkConfig};

/// Waits until the node's registry holds exactly `n` peers.
async fn registered(node: &TestNode, n: usize, what: &str) {
    eventually(what, || {
        let net = node.net.clone();
        async move { (net.peers().await.len() == n).then_some(()) }
    })
    .await;
}

async fn refused(from_last: u8, node: &TestNode, reason: DisconnectReason) {
    let mut p = RawPeer::connect(from_last, node.addr()).await;
    p.expect_disconnect(reason).await;
    p.expect_closed().await;
}

#[actix::test]
async fn above_the_inbound_limit_connections_are_refused_until_a_slot_frees() {
    let config = NetworkConfig {
        max_inbound: 2,
        ..test_config(70)
    };
    let node = TestNode::start(config.clone()).await;
    let mut p1 = RawPeer::connect(71, node.addr()).await;
    p1.handshake(&config).await;
    let mut p2 = RawPeer::connect(72, node.addr()).await;
    p2.handshake(&config).await;
    registered(&node, 2, "two peers registered").await;

    // Inbound is full and both peers are protected (younger than eviction_min_age_ms, and each
    // in a network group of its own): the newcomer is refused after its handshake.
    let mut p3 = RawPeer::connect(73, node.addr()).await;
    p3.handshake(&config).await;
    p3.expect_disconnect(DisconnectReason::TooManyPeers).await;
    p3.expect_closed().await;
    assert_eq!(node.net.peers().await.len(), 2);
    assert_eq!(node.net.metrics().evictions.get(), 0);

    drop(p1);
    registered(&node, 1, "p1's slot is free").await;
    let mut p4 = RawPeer::connect(74, node.addr()).await;
    p4.handshake(&config).await;
    registered(&node, 2, "p4 registered").await;
}

#[actix::test]
async fn above_the_pending_handshake_limit_connections_are_refused() {
    let config = NetworkConfig {
        max_pending_handshakes: 1,
        ..test_config(80)
    };
    let node = TestNode::start(config.clone()).await;
    // p1 is accepted (it reads the node's Hello) but does not answer yet: it holds the slot.
    let mut p1 = RawPeer::connect(81, node.addr()).await;
    p1.expect_hello().await;
    refused(82, &node, DisconnectReason::TooManyPeers).await;

    // p1 completes its handshake: the slot frees and the next peer is served.
    p1.send(&peerlink_actors::wire::Frame::Hello(hello_for(
        &config,
        rand::random(),
    )))
    .await;
    registered(&node, 1, "p1 registered").await;
    let mut p3 = RawPeer::connect(83, node.addr()).await;
    p3.handshake(&config).await;
}

#[actix::test]
async fn a_banned_ip_is_disconnected_and_refused_while_others_are_served() {
    let config = test_config(90);
    let node = TestNode::start(config.clone()).await;
    let mut p1 = RawPeer::connect(91, node.addr()).await;
    p1.handshake(&config).await;
    registered(&node, 1, "p1 registered").await;

    node.net.ban(lo(91), Duration::from_secs(60)).await;
    p1.expect_disconnect(DisconnectReason::Banned).await;
    p1.expect_closed().await;
    refused(91, &node, DisconnectReason::Banned).await;

    let mut other = RawPeer::connect(92, node.addr()).await;
    other.handshake(&config).await;
}
