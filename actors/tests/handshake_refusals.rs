//! Invariant 8 at the handshake: a peer of another network (magic), another chain (genesis) or
//! another protocol version is refused with the matching reason, sent on the wire before the
//! close; the dialling side backs off that address for the longest delay; both ends clean up.

mod common;

use std::time::Duration;

use common::*;
use peerlink_actors::wire::Frame;
use peerlink_actors::wire::PROTOCOL_VERSION;
use peerlink_actors::AddrStatus;
use peerlink_actors::{DisconnectReason, NetworkConfig};

fn config(last: u8) -> NetworkConfig {
    NetworkConfig {
        backoff_base_ms: 100,
        backoff_max_ms: 60_000,
        ..test_config(last)
    }
}

/// Waits until `node`'s dial to `addr` has ended, and returns its address book entry.
async fn dial_ended(node: &TestNode, addr: std::net::SocketAddr) -> AddrStatus {
    eventually("the dial ended", || async {
        node.net
            .address_book()
            .await
            .into_iter()
            .find(|s| s.addr == addr && s.attempts == 1 && !s.busy)
    })
    .await
}

/// A refused address is not redialled for (about) the longest backoff, not the shortest; it is
/// a delay, not a permanent mark (the peer's word is not proof).
fn assert_backed_off_to_max(s: &AddrStatus, config: &NetworkConfig) {
    assert!(!s.own);
    assert!(s.failures >= 1, "failures {} not counted", s.failures);
    let base = Duration::from_millis(config.backoff_base_ms);
    let max = Duration::from_millis(config.backoff_max_ms);
    assert!(
        s.due_in > max / 2 && s.due_in > base * 10,
        "redial in {:?}; expected close to {max:?}",
        s.due_in
    );
}

/// Two Networks that disagree (`tweak` applied to B's config) refuse each other with `reason`
/// on both ends; a raw peer with the same mismatch reads Disconnect{reason}, then EOF.
async fn refused_between_networks(
    a_last: u8,
    b_last: u8,
    raw_last: u8,
    reason: DisconnectReason,
    tweak: impl Fn(&mut NetworkConfig),
) {
    let mut b_config = config(b_last);
    tweak(&mut b_config);
    let a = TestNode::start(config(a_last)).await;
    let mut b = TestNode::start(b_config.clone()).await;
    a.net.connect(b.addr());
    let s = dial_ended(&a, b.addr()).await;
    assert_backed_off_to_max(&s, a.net.config());
    for n in [&a, &b] {
        sockets_settle(&n.net, 0, "both ends closed").await;
        assert!(n.net.peers().await.is_empty());
        assert_eq!(n.net.stats().await.unwrap().connects, 0);
        assert_eq!(
            disconnects(n.net.metrics(), reason, false),
            1,
            "{reason} on both ends"
        );
    }
    assert_eq!(a.net.metrics().dials.get(), 1);

    // What the refusing node puts on the wire: its Hello, Disconnect{reason}, then EOF. The raw
    // peer speaks A's parameters to B, so B refuses it for the same reason.
    let mut raw = RawPeer::connect(raw_last, b.addr()).await;
    raw.send(&Frame::Hello(hello_for(a.net.config(), 42))).await;
    let hello = raw.expect_hello().await;
    assert_eq!(hello.nonce, b.net.node_nonce());
    raw.expect_disconnect(reason).await;
    raw.expect_closed().await;
    sockets_settle(&b.net, 0, "B closed the raw peer").await;
    assert_eq!(disconnects(b.net.metrics(), reason, false), 2);
    assert!(
        b.events.try_recv().is_err(),
        "nothing was ever registered on B"
    );
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[actix::test]
async fn wrong_magic_is_refused_with_wrong_network() {
    refused_between_networks(2, 3, 4, DisconnectReason::WrongNetwork, |c| {
        c.magic = 0x0bad_0bad
    })
    .await;
}

#[actix::test]
async fn wrong_genesis_is_refused_with_wrong_genesis() {
    refused_between_networks(5, 6, 7, DisconnectReason::WrongGenesis, |c| {
        c.genesis = [0xee; 32]
    })
    .await;
}

#[actix::test]
async fn wrong_version_is_refused_both_ways() {
    let a = TestNode::start(config(8)).await;
    let m = a.net.metrics().clone();

    // A dials a raw peer that answers with another protocol version.
    let listener = raw_listener(9).await;
    let raw_addr = listener.local_addr().unwrap();
    a.net.connect(raw_addr);
    let mut raw = RawPeer::accept(&listener).await;
    let mut hello = hello_for(a.net.config(), 43);
    hello.version = PROTOCOL_VERSION + 1;
    raw.send(&Frame::Hello(hello)).await;
    let a_hello = raw.expect_hello().await;
    assert_eq!(a_hello.version, PROTOCOL_VERSION);
    assert_eq!(a_hello.nonce, a.net.node_nonce());
    raw.expect_disconnect(DisconnectReason::WrongVersion).await;
    raw.expect_closed().await;
    let s = dial_ended(&a, raw_addr).await;
    assert_backed_off_to_max(&s, a.net.config());

    // A raw peer with an old version dials A.
    let mut raw = RawPeer::connect(10, a.addr()).await;
    let mut hello = hello_for(a.net.config(), 44);
    hello.version = 0;
    raw.send(&Frame::Hello(hello)).await;
    raw.expect_hello().await;
    raw.expect_disconnect(DisconnectReason::WrongVersion).await;
    raw.expect_closed().await;

    sockets_settle(&a.net, 0, "A closed both").await;
    assert_eq!(disconnects(&m, DisconnectReason::WrongVersion, false), 2);
    assert!(a.net.peers().await.is_empty());
    assert_eq!(a.net.stats().await.unwrap().connects, 0);
    a.net.shutdown().await;
}
