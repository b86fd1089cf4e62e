//! Two nodes, one connection: registry entries keyed by the other's IP, messages both ways in
//! order, and a clean Disconnect on shutdown.

mod common;

use common::*;
use peerlink_actors::{Direction, DisconnectReason, SendOutcome};

#[actix::test]
async fn a_dials_b_one_entry_each_and_messages_flow_both_ways_in_order() {
    let mut a = TestNode::on(2).await;
    let mut b = TestNode::on(3).await;
    a.net.connect(b.addr());
    let on_a = a.connected().await;
    let on_b = b.connected().await;
    assert_eq!(on_a.ip, b.ip());
    assert_eq!(on_b.ip, a.ip());
    assert_eq!(on_a.conn.direction, Direction::Outbound);
    assert_eq!(on_b.conn.direction, Direction::Inbound);
    // Same socket seen from both ends; outbound socket bound to A's own IP.
    assert_eq!(on_a.meta.local_addr, on_b.meta.peer_addr);
    assert_eq!(on_a.meta.peer_addr, on_b.meta.local_addr);
    assert_eq!(on_b.meta.listen_addr, Some(a.addr()));

    let peers_a = a.net.peers().await;
    let peers_b = b.net.peers().await;
    assert_eq!(peers_a.len(), 1);
    assert_eq!(peers_b.len(), 1);
    assert_eq!(peers_a[0].ip, b.ip());
    assert_eq!(peers_b[0].ip, a.ip());

    const N: u64 = 500;
    for seq in 0..N {
        let m = TestMsg::Text {
            seq,
            body: format!("a->b {seq}"),
        };
        assert_eq!(a.net.send(b.ip(), &m).unwrap(), SendOutcome::Queued);
        let m = TestMsg::Text {
            seq,
            body: format!("b->a {seq}"),
        };
        assert_eq!(b.net.send(a.ip(), &m).unwrap(), SendOutcome::Queued);
    }
    for seq in 0..N {
        let (from, m) = b.next_msg().await;
        assert_eq!(from.ip(), a.ip());
        assert_eq!(
            m,
            TestMsg::Text {
                seq,
                body: format!("a->b {seq}")
            }
        );
        let (from, m) = a.next_msg().await;
        assert_eq!(from.ip(), b.ip());
        assert_eq!(
            m,
            TestMsg::Text {
                seq,
                body: format!("b->a {seq}")
            }
        );
    }

    // A reply through the inbound handle goes out on the socket the request came in on.
    b.net
        .send(
            a.ip(),
            &TestMsg::Text {
                seq: 9999,
                body: "ping".into(),
            },
        )
        .unwrap();
    let (from, _) = a.next_msg().await;
    assert_eq!(from.conn_id(), on_a.conn.conn_id);
    from.send(&TestMsg::Text {
        seq: 10000,
        body: "reply".into(),
    })
    .unwrap();
    let (from_b, m) = b.next_msg().await;
    assert_eq!(from_b.conn_id(), on_b.conn.conn_id);
    assert_eq!(
        m,
        TestMsg::Text {
            seq: 10000,
            body: "reply".into()
        }
    );

    // Sending to an unknown IP says so.
    let unknown = "127.0.0.99".parse().unwrap();
    assert_eq!(
        a.net.send(unknown, &TestMsg::Blob(vec![1])).unwrap(),
        SendOutcome::NotConnected
    );

    a.net.shutdown().await;
    let gone = b.disconnected().await;
    assert_eq!(gone.reason, DisconnectReason::Shutdown);
    assert!(gone.by_peer);
    assert!(b.net.peers().await.is_empty());
}
