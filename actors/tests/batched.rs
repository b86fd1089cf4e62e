//! Burst delivery: messages a session reads in one burst are handed over together (as one
//! `Inbound`), in order, and a close that follows data in the same burst still delivers that
//! data first.

mod common;

use actix::prelude::*;
use common::*;
use peerlink_actors::{DisconnectReason, Inbound, Network, PeerHandle, SendOutcome};
use tokio::sync::mpsc;

struct BatchCollector {
    batches: mpsc::UnboundedSender<(PeerHandle, Vec<TestMsg>)>,
}

impl Actor for BatchCollector {
    type Context = Context<Self>;
}

impl Handler<Inbound<TestMsg>> for BatchCollector {
    type Result = ();
    fn handle(&mut self, b: Inbound<TestMsg>, _: &mut Context<Self>) {
        let _ = self.batches.send((b.from.clone(), b.msgs().collect()));
    }
}

fn text(seq: u64) -> TestMsg {
    TestMsg::Text {
        seq,
        body: format!("message {seq}"),
    }
}

#[actix::test]
async fn batched_delivery_keeps_order_and_groups_bursts() {
    let (tx, mut batches) = mpsc::unbounded_channel();
    let app = BatchCollector { batches: tx }.start();
    let a: Network<TestMsg> = Network::start(test_config(40), app.recipient())
        .await
        .expect("network starts");
    let mut b = TestNode::on(41).await;
    b.net.connect(a.local_addr());
    b.connected().await;
    let to_a = eventually("b has a handle to a", || {
        let net = b.net.clone();
        let ip = a.local_addr().ip();
        async move { net.handle(ip) }
    })
    .await;

    const N: u64 = 2_000;
    for seq in 0..N {
        assert_eq!(to_a.send(&text(seq)).unwrap(), SendOutcome::Queued);
    }
    let mut next = 0;
    let mut largest = 0;
    while next < N {
        let (from, msgs) = tokio::time::timeout(WAIT, batches.recv())
            .await
            .expect("batch within the wait bound")
            .expect("channel open");
        assert_eq!(from.ip(), b.ip());
        assert!(!msgs.is_empty(), "no empty batches");
        largest = largest.max(msgs.len());
        for m in msgs {
            assert_eq!(m, text(next), "in order, exactly once");
            next += 1;
        }
    }
    assert!(largest > 1, "2,000 back-to-back messages arrive in bursts");
    a.shutdown().await;
}

#[actix::test]
async fn data_before_a_disconnect_in_the_same_burst_is_delivered() {
    let mut a = TestNode::on(42).await;
    let mut b = TestNode::on(43).await;
    b.net.connect(a.addr());
    b.connected().await;
    a.connected().await;
    let to_a = b.net.handle(a.ip()).expect("connected");
    // Ten messages and the Disconnect go out in one write, so A reads them in one burst.
    for seq in 0..10 {
        to_a.send(&text(seq)).unwrap();
    }
    to_a.disconnect(DisconnectReason::Requested);
    for seq in 0..10 {
        let (_, m) = a.next_msg().await;
        assert_eq!(m, text(seq));
    }
    let gone = a.disconnected().await;
    assert_eq!(gone.reason, DisconnectReason::Requested);
    assert!(gone.by_peer);
}

#[actix::test]
async fn send_many_arrives_as_ordinary_frames_in_order() {
    let mut a = TestNode::on(44).await;
    let mut b = TestNode::on(45).await;
    b.net.connect(a.addr());
    b.connected().await;
    a.connected().await;
    let to_a = b.net.handle(a.ip()).expect("connected");
    let msgs: Vec<TestMsg> = (0..1_000).map(text).collect();
    for chunk in msgs.chunks(64) {
        assert_eq!(to_a.send_many(chunk).unwrap(), SendOutcome::Queued);
    }
    for seq in 0..1_000 {
        let (_, m) = a.next_msg().await;
        assert_eq!(m, text(seq));
    }
}

/// The Hello and a frame larger than the handshake cap arrive in one read: the cap is raised
/// by the Hello before the next frame is measured, so the large frame is accepted.
#[actix::test]
async fn a_large_frame_right_after_the_hello_is_accepted() {
    let config = test_config(46);
    let mut node = TestNode::start(config.clone()).await;
    let mut peer = RawPeer::connect(47, node.addr()).await;
    let big = TestMsg::Blob(vec![9; 10_000]);
    let mut bytes = peerlink_actors::wire::Frame::Hello(hello_for(&config, 7))
        .encode()
        .to_vec();
    bytes.extend_from_slice(&peerlink_actors::wire::encode_app(&big).unwrap());
    peer.send_raw(&bytes).await;
    peer.expect_hello().await;
    let (_, got) = node.next_msg().await;
    assert_eq!(got, big);
}

/// The Hello and an App frame arrive in one read: the session registers before it handles the
/// App frame, which is then delivered, not dropped.
#[actix::test]
async fn an_app_frame_in_the_same_read_as_the_hello_is_delivered() {
    let config = test_config(48);
    let mut node = TestNode::start(config.clone()).await;
    let mut peer = RawPeer::connect(49, node.addr()).await;
    let small = text(1);
    let mut bytes = peerlink_actors::wire::Frame::Hello(hello_for(&config, 8))
        .encode()
        .to_vec();
    bytes.extend_from_slice(&peerlink_actors::wire::encode_app(&small).unwrap());
    peer.send_raw(&bytes).await;
    peer.expect_hello().await;
    let (_, got) = node.next_msg().await;
    assert_eq!(got, small);
}

/// With batched delivery the session checks that each payload is well-formed MessagePack and
/// the application decodes it: a payload of another shape (a number where a `TestMsg` is
/// expected) ends the batch after the good messages before it and closes the connection with
/// `bad_frame`, as the session does for malformed frames.
#[actix::test]
async fn a_payload_of_the_wrong_shape_ends_the_batch_and_closes_with_bad_frame() {
    let config = test_config(52);
    let (tx, mut batches) = mpsc::unbounded_channel();
    let app = BatchCollector { batches: tx }.start();
    let node: Network<TestMsg> = Network::start(config.clone(), app.recipient())
        .await
        .expect("network starts");
    let mut peer = RawPeer::connect(53, node.local_addr()).await;
    peer.handshake(&config).await;
    // Two good messages and a well-formed payload of the wrong shape, in one write.
    let mut bytes = Vec::new();
    for seq in 0..2 {
        bytes.extend_from_slice(&peerlink_actors::wire::encode_app(&text(seq)).unwrap());
    }
    bytes.extend_from_slice(&peerlink_actors::wire::encode_app(&42u32).unwrap());
    peer.send_raw(&bytes).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let (_, msgs) = tokio::time::timeout(WAIT, batches.recv())
            .await
            .expect("a batch within the wait bound")
            .expect("collector alive");
        got.extend(msgs);
    }
    assert_eq!(got, vec![text(0), text(1)]);
    peer.expect_disconnect(DisconnectReason::BadFrame).await;
    peer.expect_closed().await;
    node.shutdown().await;
}
