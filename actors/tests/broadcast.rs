//! Broadcast from a hub to 20 peers: every peer receives every message exactly once and in send
//! order; `broadcast` reports how many peers queued it, and `except` leaves exactly that peer
//! out.

mod common;

use common::*;
use peerlink_actors::{NetworkConfig, SendOutcome};

const PEERS: u8 = 20;
const FIRST: u8 = 10; // peers on 127.0.0.10 ..= 127.0.0.29
const N: u64 = 200;

fn text(seq: u64, body: &str) -> TestMsg {
    TestMsg::Text {
        seq,
        body: body.into(),
    }
}

#[actix::test]
async fn hub_broadcasts_to_twenty_peers_exactly_once_in_order() {
    let hub = TestNode::start(NetworkConfig {
        max_inbound: 32,
        ..test_config(9)
    })
    .await;
    let mut peers = Vec::new();
    for last in FIRST..FIRST + PEERS {
        let peer = TestNode::start(NetworkConfig {
            session_threads: 1,
            ..test_config(last)
        })
        .await;
        peer.net.connect(hub.addr());
        peers.push(peer);
    }
    for peer in &mut peers {
        assert_eq!(peer.connected().await.ip, hub.ip());
    }
    let registered = eventually("20 peers on the hub", || async {
        let p = hub.net.peers().await;
        (p.len() == PEERS as usize).then_some(p)
    })
    .await;
    let ips: Vec<_> = registered.iter().map(|p| p.ip).collect();
    assert_eq!(ips, (FIRST..FIRST + PEERS).map(lo).collect::<Vec<_>>());

    for seq in 0..N {
        let n = hub.net.broadcast(&text(seq, "to all"), None).await.unwrap();
        assert_eq!(n, PEERS as usize, "broadcast {seq}");
    }
    // Leave the first peer out of one message, then a marker to everyone: the marker follows
    // on the same connection, so anything sent before it (a duplicate, the left-out message)
    // would arrive first.
    let left_out = peers[0].ip();
    let n = hub
        .net
        .broadcast(&text(N, "all but one"), Some(left_out))
        .await
        .unwrap();
    assert_eq!(n, PEERS as usize - 1);
    let n = hub
        .net
        .broadcast(&text(N + 1, "marker"), None)
        .await
        .unwrap();
    assert_eq!(n, PEERS as usize);

    for (i, peer) in peers.iter_mut().enumerate() {
        for seq in 0..N {
            let (from, m) = peer.next_msg().await;
            assert_eq!(from.ip(), hub.ip());
            assert_eq!(m, text(seq, "to all"), "peer {i}");
        }
        if i != 0 {
            assert_eq!(peer.next_msg().await.1, text(N, "all but one"), "peer {i}");
        }
        assert_eq!(peer.next_msg().await.1, text(N + 1, "marker"), "peer {i}");
        assert!(
            peer.inbound.try_recv().is_err(),
            "peer {i} got more than sent"
        );
    }
    assert_eq!(hub.net.peers().await.len(), PEERS as usize);
    hub.net.shutdown().await;
    for peer in &peers {
        peer.net.shutdown().await;
    }
}

/// A broadcast followed by a direct send to the same peer (through `Network::send`, a
/// `PeerHandle` and `send_many`) arrives in that order, even though broadcasts are queued by
/// the session threads' lanes and direct sends by the caller: a send made while the peer's lane
/// still holds broadcasts is queued behind them. (Without that rule, a probe saw thousands of
/// the 6,000 messages of this test overtake each other.)
#[actix::test]
async fn a_broadcast_then_a_send_arrive_in_that_order() {
    const ROUNDS: u64 = 1_000;
    let hub = TestNode::start(NetworkConfig {
        session_threads: 2,
        ..test_config(31)
    })
    .await;
    let mut peer = TestNode::start(test_config(32)).await;
    peer.net.connect(hub.addr());
    assert_eq!(peer.connected().await.ip, hub.ip());
    let handle = eventually("the hub's handle to the peer", || async {
        hub.net.handle(peer.ip())
    })
    .await;
    let mut seq = 0;
    for round in 0..ROUNDS {
        assert_eq!(hub.net.broadcast(&text(seq, "b"), None).await.unwrap(), 1);
        seq += 1;
        let direct = text(seq, "d");
        let outcome = match round % 3 {
            0 => hub.net.send(peer.ip(), &direct).unwrap(),
            1 => handle.send(&direct).unwrap(),
            _ => handle.send_many([&direct]).unwrap(),
        };
        assert_eq!(outcome, SendOutcome::Queued);
        seq += 1;
    }
    for expected in 0..seq {
        let (_, m) = peer.next_msg().await;
        let body = if expected % 2 == 0 { "b" } else { "d" };
        assert_eq!(m, text(expected, body), "message {expected} out of order");
    }
    assert!(peer.inbound.try_recv().is_err(), "more than sent");
    hub.net.shutdown().await;
    peer.net.shutdown().await;
}
