//! Invariant 2 (both ends keep the same socket) under simultaneous open: A dials B while B dials
//! A, 200 times. Every round must end with exactly one entry on each side, for the same socket,
//! and with the losing socket closed on both sides; afterwards the surviving connection must stay
//! up with no reconnect loop.

mod common;

use std::net::SocketAddr;

use common::*;
use peerlink_actors::{Direction, DisconnectReason, PeerInfo};

const ROUNDS: usize = 200;

fn config(last: u8) -> peerlink_actors::NetworkConfig {
    peerlink_actors::NetworkConfig {
        // The connector must never redial by itself between rounds: only connect() dials.
        backoff_base_ms: 60_000,
        backoff_max_ms: 120_000,
        ping_interval_ms: 50,
        ping_timeout_ms: 2_000,
        // 200 rounds open 200 connections from each IP within seconds: far above the default
        // accept rate of one network group (each loopback address is one), which this test is
        // not about.
        accept_burst_per_group: 1_000,
        ..test_config(last)
    }
}

/// Whether the connector of `node` has a dial running or a dialled session alive to `addr`.
async fn dial_busy(node: &TestNode, addr: SocketAddr) -> bool {
    node.net
        .address_book()
        .await
        .iter()
        .any(|s| s.addr == addr && s.busy)
}

/// The round is settled when both registries hold one entry for the same socket, each side has
/// exactly one socket open (the loser is closed), and each connector is busy exactly when its own
/// dial is the survivor (so no dial is still in flight).
async fn settled(a: &TestNode, b: &TestNode) -> Option<(PeerInfo, PeerInfo)> {
    let pa = a.net.peers().await;
    let pb = b.net.peers().await;
    if pa.len() != 1 || pb.len() != 1 {
        return None;
    }
    let (ea, eb) = (pa[0].clone(), pb[0].clone());
    if ea.meta.local_addr != eb.meta.peer_addr || ea.meta.peer_addr != eb.meta.local_addr {
        return None;
    }
    if a.net.metrics().writers_alive.get() != 1 || b.net.metrics().writers_alive.get() != 1 {
        return None;
    }
    if dial_busy(a, b.addr()).await != (ea.conn.direction == Direction::Outbound)
        || dial_busy(b, a.addr()).await != (eb.conn.direction == Direction::Outbound)
    {
        return None;
    }
    Some((ea, eb))
}

async fn empty(a: &TestNode, b: &TestNode) -> Option<()> {
    let quiet = a.net.peers().await.is_empty()
        && b.net.peers().await.is_empty()
        && a.net.metrics().writers_alive.get() == 0
        && b.net.metrics().writers_alive.get() == 0
        && !dial_busy(a, b.addr()).await
        && !dial_busy(b, a.addr()).await;
    quiet.then_some(())
}

/// Registrations the registry saw (accepted, replacing or rejected).
async fn registrations(n: &TestNode) -> u64 {
    let s = n.net.stats().await.unwrap();
    s.connects + s.rejected
}

#[actix::test]
async fn simultaneous_open_200_rounds_both_ends_keep_the_same_socket() {
    let a = TestNode::start(config(2)).await;
    let b = TestNode::start(config(3)).await;
    let mut overlapped = 0;
    let mut kept_a_dial = 0;
    for round in 0..ROUNDS {
        let (reg_a, reg_b) = (registrations(&a).await, registrations(&b).await);
        a.net.connect(b.addr());
        b.net.connect(a.addr());
        let (ea, eb) = eventually(&format!("round {round}: one shared socket"), || {
            settled(&a, &b)
        })
        .await;
        assert_eq!(ea.ip, b.ip());
        assert_eq!(eb.ip, a.ip());
        assert_ne!(
            ea.conn.direction, eb.conn.direction,
            "one end dialled, the other accepted"
        );
        assert_eq!(ea.meta.local_addr, eb.meta.peer_addr);
        assert_eq!(ea.meta.peer_addr, eb.meta.local_addr);
        assert_eq!(ea.meta.local_addr.port(), eb.meta.peer_addr.port());
        assert_eq!(ea.meta.peer_addr.port(), eb.meta.local_addr.port());
        assert_eq!(ea.conn.remote_nonce, b.net.node_nonce());
        assert_eq!(eb.conn.remote_nonce, a.net.node_nonce());
        // Both dials reached the registry on both sides: the two sockets existed at once.
        let (da, db) = (
            registrations(&a).await - reg_a,
            registrations(&b).await - reg_b,
        );
        if da == 2 && db == 2 {
            overlapped += 1;
            // The rule: the socket dialled by the larger nonce survives.
            let a_dialled = ea.conn.direction == Direction::Outbound;
            assert_eq!(a_dialled, a.net.node_nonce() > b.net.node_nonce());
        }
        if ea.conn.direction == Direction::Outbound {
            kept_a_dial += 1;
        }
        if round == ROUNDS - 1 {
            break;
        }
        let (closer, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert!(
            closer
                .net
                .disconnect(other.ip(), DisconnectReason::Requested)
                .await
        );
        eventually(&format!("round {round}: both registries empty"), || {
            empty(&a, &b)
        })
        .await;
    }
    eprintln!(
        "simultaneous open: {overlapped}/{ROUNDS} rounds had both dials overlap; \
         A's dial kept in {kept_a_dial} rounds"
    );
    assert!(
        overlapped >= ROUNDS / 2,
        "only {overlapped} of {ROUNDS} rounds actually overlapped: the test lost its point"
    );

    // The last connection stays up across several ping intervals: no reconnect loop.
    let pa = a.net.peers().await;
    let pb = b.net.peers().await;
    let (stats_a, stats_b) = (a.net.stats().await.unwrap(), b.net.stats().await.unwrap());
    let (dials_a, dials_b) = (a.net.metrics().dials.get(), b.net.metrics().dials.get());
    eventually("five more pongs on both ends", || async {
        let (na, nb) = (a.net.peers().await, b.net.peers().await);
        let grown = |now: &[PeerInfo], then: &[PeerInfo]| {
            now.len() == 1 && now[0].stats.pongs_matched >= then[0].stats.pongs_matched + 5
        };
        (grown(&na, &pa) && grown(&nb, &pb)).then_some(())
    })
    .await;
    let (na, nb) = (a.net.peers().await, b.net.peers().await);
    assert_eq!(na.len(), 1);
    assert_eq!(nb.len(), 1);
    assert_eq!(
        na[0].conn.conn_id, pa[0].conn.conn_id,
        "A kept its connection"
    );
    assert_eq!(
        nb[0].conn.conn_id, pb[0].conn.conn_id,
        "B kept its connection"
    );
    assert_eq!(na[0].meta.local_addr, nb[0].meta.peer_addr);
    let (now_a, now_b) = (a.net.stats().await.unwrap(), b.net.stats().await.unwrap());
    assert_eq!(now_a.connects, stats_a.connects);
    assert_eq!(now_b.connects, stats_b.connects);
    assert_eq!(now_a.disconnects, stats_a.disconnects);
    assert_eq!(now_b.disconnects, stats_b.disconnects);
    assert_eq!(a.net.metrics().dials.get(), dials_a, "A dialled again");
    assert_eq!(b.net.metrics().dials.get(), dials_b, "B dialled again");
    // Every registered connection left the registry but the one still up.
    assert_eq!(now_a.connects, now_a.disconnects + 1);
    assert_eq!(now_b.connects, now_b.disconnects + 1);
    a.net.shutdown().await;
    b.net.shutdown().await;
}
