//! Liveness: pings on the interval are answered (pong echoing the nonce) on a healthy link; a
//! peer that stops answering is closed at the ping timeout, and a peer that never says Hello is
//! closed at the handshake timeout, each with its reason on the wire before EOF.

mod common;

use std::time::{Duration, Instant};

use common::*;
use peerlink_actors::wire::Frame;
use peerlink_actors::{DisconnectReason, NetworkConfig, PeerInfo};

#[actix::test]
async fn healthy_link_answers_every_ping_for_three_seconds() {
    let config = |last| NetworkConfig {
        ping_interval_ms: 50,
        ping_timeout_ms: 1_000,
        ..test_config(last)
    };
    let mut a = TestNode::start(config(2)).await;
    let mut b = TestNode::start(config(3)).await;
    a.net.connect(b.addr());
    let (ca, cb) = (a.connected().await, b.connected().await);
    let t0 = Instant::now();
    // About 3 s at 20 pings per second.
    let enough = |p: &[PeerInfo]| p.len() == 1 && p[0].stats.pings_sent >= 55;
    let (pa, pb) = eventually("about 3 s of pings on both ends", || async {
        let (pa, pb) = (a.net.peers().await, b.net.peers().await);
        (enough(&pa) && enough(&pb)).then_some((pa[0].clone(), pb[0].clone()))
    })
    .await;
    let lived = t0.elapsed();
    for (p, c) in [(&pa, &ca), (&pb, &cb)] {
        assert_eq!(p.conn.conn_id, c.conn.conn_id, "same connection throughout");
        assert!(
            p.stats.pongs_matched <= p.stats.pings_sent
                && p.stats.pings_sent - p.stats.pongs_matched <= 1,
            "{} pings, {} pongs",
            p.stats.pings_sent,
            p.stats.pongs_matched
        );
        assert!(p.stats.rtt.is_some());
    }
    eprintln!(
        "liveness: {lived:?}: A {}/{} B {}/{} pongs/pings, rtt A {:?} B {:?}",
        pa.stats.pongs_matched,
        pa.stats.pings_sent,
        pb.stats.pongs_matched,
        pb.stats.pings_sent,
        pa.stats.rtt,
        pb.stats.rtt
    );
    assert!(a.events.try_recv().is_err() && b.events.try_recv().is_err());
    assert_eq!(a.net.metrics().pings_sent.get(), pa.stats.pings_sent);
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[actix::test]
async fn peer_that_never_answers_pings_is_closed_at_the_ping_timeout() {
    let config = NetworkConfig {
        ping_interval_ms: 100,
        ping_timeout_ms: 400,
        ..test_config(4)
    };
    let timeout = config.ping_timeout();
    let mut a = TestNode::start(config).await;
    let mut raw = RawPeer::connect(5, a.addr()).await;
    raw.handshake(a.net.config()).await;
    let info = a.connected().await;
    assert_eq!(info.ip, lo(5));
    // One ping, unanswered; nothing else until the Disconnect.
    match raw.recv().await {
        Read::Frame(Frame::Ping { .. }) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
    let pinged = Instant::now();
    raw.expect_disconnect(DisconnectReason::PingTimeout).await;
    let waited = pinged.elapsed();
    raw.expect_closed().await;
    assert!(
        waited + Duration::from_millis(50) >= timeout && waited < timeout + Duration::from_secs(1),
        "closed {waited:?} after the ping; timeout {timeout:?}"
    );
    let gone = a.disconnected().await;
    assert_eq!(gone.conn_id, info.conn.conn_id);
    assert_eq!(gone.reason, DisconnectReason::PingTimeout);
    assert!(!gone.by_peer);
    sockets_settle(&a.net, 0, "socket closed").await;
    assert!(a.net.peers().await.is_empty());
    a.net.shutdown().await;
}

#[actix::test]
async fn peer_that_never_sends_hello_is_closed_at_the_handshake_timeout() {
    let config = NetworkConfig {
        handshake_timeout_ms: 300,
        ..test_config(6)
    };
    let timeout = config.handshake_timeout();
    let mut a = TestNode::start(config).await;
    let t0 = Instant::now();
    let mut raw = RawPeer::connect(7, a.addr()).await;
    raw.expect_hello().await;
    raw.expect_disconnect(DisconnectReason::HandshakeTimeout)
        .await;
    let waited = t0.elapsed();
    raw.expect_closed().await;
    assert!(
        waited + Duration::from_millis(50) >= timeout && waited < timeout + Duration::from_secs(1),
        "closed after {waited:?}; timeout {timeout:?}"
    );
    let m = a.net.metrics();
    assert_eq!(disconnects(m, DisconnectReason::HandshakeTimeout, false), 1);
    sockets_settle(&a.net, 0, "socket closed").await;
    assert_eq!(a.net.stats().await.unwrap().connects, 0);
    assert!(a.events.try_recv().is_err(), "never registered");
    a.net.shutdown().await;
}
