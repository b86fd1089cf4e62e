//! Inbound backpressure: an application that does not consume its messages makes the session
//! stop reading from that peer once the inbound budget is held, so memory stays bounded and TCP
//! pushes back on the sender; once the application lets go, reading resumes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use peerlink_actors::{Inbound, Network, NetworkConfig, SendOutcome};

const BUDGET: usize = 1024 * 1024;
const FRAME: usize = 256 * 1024;
const BLOB: usize = 64 * 1024;

/// Keeps every message (and so its credit) until told to let go; then drops them as they come.
struct Hoarder {
    kept: Vec<Inbound<TestMsg>>,
    hoarding: bool,
    bytes: Arc<AtomicUsize>,
}

impl Actor for Hoarder {
    type Context = Context<Self>;
}

impl Handler<Inbound<TestMsg>> for Hoarder {
    type Result = ();
    fn handle(&mut self, m: Inbound<TestMsg>, _: &mut Context<Self>) {
        for msg in m.msgs() {
            if let TestMsg::Blob(b) = &msg {
                self.bytes.fetch_add(b.len(), Ordering::SeqCst);
            }
        }
        if self.hoarding {
            self.kept.push(m);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct LetGo;

impl Handler<LetGo> for Hoarder {
    type Result = ();
    fn handle(&mut self, _: LetGo, _: &mut Context<Self>) {
        self.hoarding = false;
        self.kept.clear();
    }
}

fn config(ip: u8) -> NetworkConfig {
    NetworkConfig {
        inbound_budget_bytes: BUDGET,
        outbound_budget_bytes: BUDGET,
        max_frame_bytes: FRAME,
        ..test_config(ip)
    }
}

/// Waits until `handle`'s queue is below half the budget; false if it stays above for `within`.
async fn drains(handle: &peerlink_actors::PeerHandle, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while handle.queued_bytes() >= BUDGET / 2 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

#[actix::test]
async fn a_stalled_application_stops_reading_and_resumes_when_it_lets_go() {
    let held = Arc::new(AtomicUsize::new(0));
    let hoarder = Hoarder {
        kept: Vec::new(),
        hoarding: true,
        bytes: held.clone(),
    }
    .start();
    let a: Network<TestMsg> = Network::start(config(50), hoarder.clone().recipient())
        .await
        .expect("network starts");
    let mut b = TestNode::start(config(51)).await;
    b.net.connect(a.local_addr());
    b.connected().await;
    let to_a = b.net.handle(a.local_addr().ip()).expect("connected");

    // Send, paced by B's own queue, until A stops reading (the queue no longer drains). The
    // kernel's socket buffers absorb some megabytes first; 2,000 blobs (125 MiB) is far more.
    let mut sent = 0;
    let mut stalled = false;
    for _ in 0..2_000 {
        if !drains(&to_a, Duration::from_secs(1)).await {
            stalled = true;
            break;
        }
        assert_eq!(
            to_a.send(&TestMsg::Blob(vec![7; BLOB])).unwrap(),
            SendOutcome::Queued
        );
        sent += 1;
    }
    assert!(
        stalled,
        "A kept reading although its application held everything ({sent} sent)"
    );
    let held_bytes = held.load(Ordering::SeqCst);
    assert!(
        held_bytes <= BUDGET + FRAME,
        "the application holds {held_bytes} bytes, over the budget {BUDGET} + one frame"
    );
    assert!(
        held_bytes >= BUDGET / 2,
        "delivery went on up to the budget ({held_bytes})"
    );

    // The application lets go: A reads again (more messages reach the application) and B's
    // queue drains, with no disconnect.
    hoarder.do_send(LetGo);
    eventually("A delivers again", || {
        let more = held.load(Ordering::SeqCst) > held_bytes;
        async move { more.then_some(()) }
    })
    .await;
    assert!(
        drains(&to_a, WAIT).await,
        "B's queue drains once A reads again"
    );
    assert!(!to_a.is_closed());
    a.shutdown().await;
}

/// Sends blobs from `to_a` until A stops reading (its application holds the inbound budget).
async fn stall(to_a: &peerlink_actors::PeerHandle) {
    for _ in 0..2_000 {
        if !drains(to_a, Duration::from_secs(1)).await {
            return;
        }
        assert_eq!(
            to_a.send(&TestMsg::Blob(vec![7; BLOB])).unwrap(),
            SendOutcome::Queued
        );
    }
    panic!("A kept reading although its application held everything");
}

/// A session paused because its application holds the inbound budget still obeys: a requested
/// disconnect closes it with its reason, and so does shutdown (with `shutdown` on the wire),
/// without waiting for the application to let go.
#[actix::test]
async fn a_paused_session_still_closes_on_request_and_at_shutdown() {
    for (case, ip) in [("disconnect", 150), ("shutdown", 152)] {
        let hoarder = Hoarder {
            kept: Vec::new(),
            hoarding: true,
            bytes: Arc::new(AtomicUsize::new(0)),
        }
        .start();
        let a: Network<TestMsg> = Network::start(config(ip), hoarder.clone().recipient())
            .await
            .expect("network starts");
        let mut b = TestNode::start(config(ip + 1)).await;
        b.net.connect(a.local_addr());
        b.connected().await;
        let to_a = b.net.handle(a.local_addr().ip()).expect("connected");
        stall(&to_a).await;

        let expected = if case == "disconnect" {
            assert!(
                a.disconnect(b.ip(), peerlink_actors::DisconnectReason::Requested)
                    .await
            );
            peerlink_actors::DisconnectReason::Requested
        } else {
            a.shutdown().await;
            peerlink_actors::DisconnectReason::Shutdown
        };
        let gone = b.disconnected().await;
        assert_eq!(gone.reason, expected, "{case}: B is told why");
        assert!(gone.by_peer, "{case}: A closed");
        hoarder.do_send(LetGo);
        b.net.shutdown().await;
        if case == "disconnect" {
            a.shutdown().await;
        }
    }
}
