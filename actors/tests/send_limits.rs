//! Limits are explicit at both ends: a message over the frame cap, or a batch over the whole
//! outbound budget, is refused with `SendOutcome::TooLarge` before anything is queued, and the
//! connection stays up; a broadcast over the frame cap is an error.

mod common;

use common::*;
use peerlink_actors::{NetworkConfig, NetworkError, SendOutcome};

const FRAME: usize = 64 * 1024;
const BUDGET: usize = 256 * 1024;

fn config(ip: u8) -> NetworkConfig {
    NetworkConfig {
        max_frame_bytes: FRAME,
        outbound_budget_bytes: BUDGET,
        inbound_budget_bytes: BUDGET,
        ..test_config(ip)
    }
}

#[actix::test]
async fn too_large_sends_are_refused_and_the_connection_stays_up() {
    let mut a = TestNode::start(config(160)).await;
    let mut b = TestNode::start(config(161)).await;
    b.net.connect(a.addr());
    let on_b = b.connected().await;
    a.connected().await;
    let to_a = b.net.handle(a.ip()).expect("connected");

    // One message over the frame cap.
    let big = TestMsg::Blob(vec![1; FRAME + 1]);
    assert_eq!(to_a.send(&big).unwrap(), SendOutcome::TooLarge);
    assert_eq!(b.net.send(a.ip(), &big).unwrap(), SendOutcome::TooLarge);
    assert_eq!(to_a.queued_bytes(), 0, "nothing was queued");
    // A batch of legal messages larger than the whole outbound budget.
    let part = TestMsg::Blob(vec![2; FRAME / 2]);
    let batch = vec![part.clone(); 2 * BUDGET / FRAME + 2];
    assert_eq!(to_a.send_many(&batch).unwrap(), SendOutcome::TooLarge);
    assert_eq!(to_a.queued_bytes(), 0, "nothing was queued");
    // A broadcast over the frame cap is an error before anything is queued.
    assert!(matches!(
        b.net.broadcast(&big, None).await,
        Err(NetworkError::TooLarge { .. })
    ));

    // The connection is the same one and still carries traffic.
    assert!(!to_a.is_closed());
    let ok = TestMsg::Text {
        seq: 1,
        body: "after".into(),
    };
    assert_eq!(to_a.send(&ok).unwrap(), SendOutcome::Queued);
    let (from, got) = a.next_msg().await;
    assert_eq!(got, ok);
    assert_eq!(from.ip(), b.ip());
    assert_eq!(
        b.net.handle(a.ip()).map(|h| h.conn_id()),
        Some(on_b.conn.conn_id)
    );
    assert!(b.events.try_recv().is_err(), "no disconnect on B");
    a.net.shutdown().await;
    b.net.shutdown().await;
}
