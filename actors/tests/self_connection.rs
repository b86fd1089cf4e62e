//! Invariant 6 (self-connection is detected): a node that dials itself through an address it
//! does not know as its own (here: it listens on the wildcard address and dials a loopback alias)
//! sees its own nonce in the Hello, closes both ends with SelfConnection, registers nothing, and
//! marks the address as its own so that it is never dialled again.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use peerlink_actors::DisconnectReason;

#[actix::test]
async fn dialling_itself_closes_both_ends_and_marks_the_address_own() {
    let config = peerlink_actors::NetworkConfig {
        // Wildcard listen: the connector's own-address shortcut only knows 0.0.0.0:P, so the
        // dial to 127.0.0.7:P really happens and reaches this very node.
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        dial_tick_ms: 20,
        backoff_base_ms: 50,
        backoff_max_ms: 200,
        ..test_config(7)
    };
    let mut node = TestNode::start(config).await;
    let me = SocketAddr::new(lo(7), node.addr().port());
    let m = node.net.metrics().clone();
    node.net.connect(me);

    // Both sessions (the dialling one and the accepted one) close with SelfConnection, locally.
    eventually("both ends closed with SelfConnection", || {
        let m = m.clone();
        async move { (disconnects(&m, DisconnectReason::SelfConnection, false) == 2).then_some(()) }
    })
    .await;
    let own = eventually("address marked own", || async {
        let book = node.net.address_book().await;
        book.into_iter().find(|s| s.addr == me && s.own && !s.busy)
    })
    .await;
    assert_eq!(own.attempts, 1);
    sockets_settle(&node.net, 0, "both sockets closed").await;
    assert!(node.net.peers().await.is_empty());
    let stats = node.net.stats().await.unwrap();
    assert_eq!(stats.connects, 0, "a self-connection never registers");
    assert_eq!(stats.rejected, 0);

    // Neither the dial ticks nor an explicit connect() dial it again. Several ticks pass (with
    // a backoff shorter than the wait, so a non-sticky mark would redial within it).
    node.net.connect(me);
    let ticks = Duration::from_millis(node.net.config().dial_tick_ms * 15);
    let start = tokio::time::Instant::now();
    let mut polls = 0;
    // At least 10 polls a dial tick apart, and at least 15 ticks: under load a poll may take
    // longer than a tick, so the count, not the clock alone, says enough ticks went by.
    while polls < 10 || start.elapsed() < ticks {
        let book = node.net.address_book().await;
        let s = book
            .iter()
            .find(|s| s.addr == me)
            .expect("address stays in the book");
        assert!(s.own);
        assert_eq!(s.attempts, 1, "own address dialled again");
        assert!(!s.busy);
        polls += 1;
        tokio::time::sleep(Duration::from_millis(node.net.config().dial_tick_ms)).await;
    }
    assert_eq!(m.dials.get(), 1);
    assert_eq!(disconnects(&m, DisconnectReason::SelfConnection, false), 2);
    assert_eq!(m.writers_alive.get(), 0);
    assert!(
        node.events.try_recv().is_err(),
        "no peer event for a self-connection"
    );
    node.net.shutdown().await;
}
