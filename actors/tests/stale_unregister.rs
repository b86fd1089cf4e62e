//! Invariant 4 (stale cleanup is harmless), on real sockets: after a replacement, the replaced
//! session's own late cleanup never removes the successor. (Unregisters sent by hand, with every
//! reason, are covered without sockets by the registry's actor-level tests.)

mod common;

use common::*;
use peerlink_actors::DisconnectReason;

#[actix::test]
async fn unregister_with_a_replaced_conn_id_leaves_the_successor() {
    let (mut a, b, mut b2, old) = connected_pair_and_restarted_b(4, 5).await;
    b2.net.connect(a.addr());
    let gone = a.disconnected().await;
    assert_eq!(gone.conn_id, old.conn.conn_id);
    assert_eq!(gone.reason, DisconnectReason::PeerRestarted);
    let new = a.connected().await;
    assert_ne!(new.conn.conn_id, old.conn.conn_id);

    // The replaced session stops on its own and sends its Unregister late: it is counted as
    // stale and ignored.
    sockets_settle(&a.net, 1, "A's old socket closed").await;
    let stale_before = eventually("the old session's late Unregister", || async {
        let s = a.net.stats().await.unwrap();
        (s.stale_unregisters == 1).then_some(s.stale_unregisters)
    })
    .await;
    assert_eq!(
        a.net.handle(b.ip()).map(|h| h.conn_id()),
        Some(new.conn.conn_id),
        "the successor must stay"
    );
    let s = a.net.stats().await.unwrap();
    assert_eq!(s.stale_unregisters, stale_before);
    assert_eq!(a.net.metrics().stale_unregisters.get(), s.stale_unregisters);
    assert_eq!(s.disconnects, 1, "only the replacement removed an entry");
    assert_eq!(a.net.peers().await.len(), 1);

    // The successor still works: no Disconnected event on A, traffic flows.
    let m = TestMsg::Text {
        seq: 7,
        body: "still here".into(),
    };
    a.net.send(b.ip(), &m).unwrap();
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
