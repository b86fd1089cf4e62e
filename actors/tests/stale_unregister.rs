//! Invariant 4 (stale cleanup is harmless): after a replacement, an `Unregister` carrying the
//! replaced connection's id, whether the old session's own late cleanup or one sent by hand,
//! never removes the successor.

mod common;

use common::*;
use peerlink_actors::registry::{HasConnection, Unregister};
use peerlink_actors::DisconnectReason;

#[actix::test]
async fn unregister_with_a_replaced_conn_id_leaves_the_successor() {
    let (mut a, b, mut b2, old) = connected_pair_and_restarted_b(4, 5).await;
    b2.net.connect(a.addr());
    let gone = a.disconnected().await;
    assert_eq!(gone.conn_id, old.conn_id);
    assert_eq!(gone.reason, DisconnectReason::PeerRestarted);
    let new = a.connected().await;
    assert_ne!(new.conn_id, old.conn_id);
    let registry = a.net.registry().clone();

    // The replaced session stops on its own and sends its Unregister late: it is counted as
    // stale and ignored.
    sockets_settle(&a.net, 1, "A's old socket closed").await;
    let stale_before = eventually("the old session's late Unregister", || async {
        let s = a.net.stats().await.unwrap();
        (s.stale_unregisters == 1).then_some(s.stale_unregisters)
    })
    .await;
    assert_eq!(
        registry.send(HasConnection { ip: b.ip() }).await.unwrap(),
        Some(new.conn_id)
    );

    // The same by hand, with every reason a late cleanup could carry.
    for (i, reason) in [
        DisconnectReason::ConnectionLost,
        DisconnectReason::PingTimeout,
        DisconnectReason::PeerRestarted,
    ]
    .into_iter()
    .enumerate()
    {
        let removed = registry
            .send(Unregister {
                ip: b.ip(),
                conn_id: old.conn_id,
                reason,
                by_peer: true,
            })
            .await
            .unwrap();
        assert!(!removed, "a stale Unregister removed the entry");
        assert_eq!(
            registry.send(HasConnection { ip: b.ip() }).await.unwrap(),
            Some(new.conn_id),
            "the successor must stay"
        );
        let s = a.net.stats().await.unwrap();
        assert_eq!(s.stale_unregisters, stale_before + 1 + i as u64);
        assert_eq!(a.net.metrics().stale_unregisters.get(), s.stale_unregisters);
    }
    // An Unregister for an IP with no entry is neither a removal nor stale.
    let removed = registry
        .send(Unregister {
            ip: lo(99),
            conn_id: old.conn_id,
            reason: DisconnectReason::ConnectionLost,
            by_peer: false,
        })
        .await
        .unwrap();
    assert!(!removed);
    let s = a.net.stats().await.unwrap();
    assert_eq!(s.stale_unregisters, stale_before + 3);
    assert_eq!(s.disconnects, 1, "only the replacement removed an entry");
    assert_eq!(a.net.peers().await.len(), 1);

    // The successor still works: no Disconnected event on A, traffic flows.
    let m = TestMsg::Text {
        seq: 7,
        body: "still here".into(),
    };
    a.net.send(b.ip(), &m).await.unwrap();
    let (from, got) = b2.next_msg().await;
    assert_eq!((from.ip(), got), (a.ip(), m));
    assert!(
        a.events.try_recv().is_err(),
        "no event after the replacement"
    );

    for n in [&a, &b, &b2] {
        n.net.shutdown().await;
    }
}
