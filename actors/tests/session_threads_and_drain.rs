//! `PeerHandle::drained_to`, shared `SessionThreads` and broadcast lanes.
//!
//! - `drained_to_waits_while_the_peer_does_not_read_and_resolves_once_it_reads`: with a raw
//!   peer that completed the handshake and then reads nothing, A queues far more than the kernel
//!   can absorb (the bound is computed from the socket buffer limits, so the queue provably stays
//!   above the mark until the peer reads). `drained_to(mark)` is Pending when polled; once the
//!   raw peer reads, it resolves within the wait bound with at most `mark` bytes queued, the
//!   session is still open, every blob arrives intact and in order, and `drained_to(0)` then
//!   resolves with an empty queue. On an idle connection `drained_to(0)` resolves (within the
//!   bound).
//! - `drained_to_resolves_when_the_session_is_closed_locally` and
//!   `drained_to_resolves_when_the_peer_drops_the_socket`: the same stalled queue; closing the
//!   session (`Network::disconnect`, or the raw peer closing its socket) makes a pending
//!   `drained_to` resolve within the wait bound although the bytes were never written (the
//!   queue is still above the mark), with the handle closed and the expected disconnect
//!   reported.
//! - `networks_on_one_shared_session_thread_exchange_traffic_and_survive_a_shutdown`: three
//!   networks on `SessionThreads::new(1)`, connected in a triangle, deliver 100 messages each
//!   way on every link in order and exactly once; each one's broadcast reaches exactly its two
//!   peers (lanes of networks on the same thread stay apart). After one network shuts down the
//!   other two still exchange messages, and a network started afterwards on the same thread
//!   dials and accepts and carries traffic.
//! - `shared_session_threads_outlive_shutdowns_and_stop_when_the_last_user_is_gone`: networks
//!   on `SessionThreads::new(2)` start no threads of their own; after all of them shut down the
//!   shared threads still run new networks (even after the `SessionThreads` handle itself is
//!   dropped); once every network is shut down and dropped, the two threads exit and the test
//!   ends without hanging.
//! - `sessions_on_the_applications_arbiter_leave_it_running_after_shutdown`:
//!   `SessionThreads::on(&[the test's Arbiter])` starts only a control thread; two networks on
//!   it exchange 50 messages each way; after shutdown the control thread exits and the given
//!   Arbiter still runs tasks.
//! - `a_broadcast_right_after_connected_reaches_the_new_peer`: a hub with two session threads;
//!   six peers join one by one and, on each `Connected` event, the hub broadcasts at once: the
//!   count is exactly the number of peers connected so far, and every peer receives exactly the
//!   broadcasts sent from its own `Connected` on, in order, once each.
//! - `broadcasts_racing_six_concurrent_joins_reach_every_announced_peer`: the same with all six
//!   peers dialling at once: each broadcast made on a `Connected` event reaches that peer and all
//!   later ones, counts are between the peers announced and six, and the deliveries add up to
//!   exactly the sum of the counts.
//! - `a_broadcast_after_a_restart_reaches_the_new_instance_exactly_once`: when a peer restarts
//!   (new nonce, same IP) and the hub reports `Connected` for the new instance, a broadcast made
//!   at once counts 1 and reaches the new instance exactly once and the old instance not at all;
//!   likewise for a second restart.
//!
//! Addresses 127.0.0.200 ..= 127.0.0.228. All tests but the thread-counting one share a lock
//! that the thread-counting one takes exclusively, so that no other test of this binary starts
//! or stops threads while it counts them.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;

use common::*;
use peerlink_actors::wire::{decode_app, Frame};
use peerlink_actors::{
    DisconnectReason, NetworkConfig, PeerEvent, PeerHandle, SendOutcome, SessionThreads,
};
use tokio::net::TcpSocket;
use tokio::sync::RwLock;
use tokio::time::timeout;

/// Taken shared by every test that starts networks, exclusively by the one that counts threads.
static THREADS: RwLock<()> = RwLock::const_new(());

// ---------------------------------------------------------------------------------------------
// A stalled raw peer

const BLOB: usize = 64 * 1024;
/// The queue must stay above this while the raw peer reads nothing.
const HIGH: usize = 4 * 1024 * 1024;
/// The mark `drained_to` waits for.
const LOW: usize = HIGH / 2;
/// Receive buffer asked for on the raw peer's socket (the kernel doubles it).
const RAW_RCVBUF: u32 = 256 * 1024;
/// Allowance over the socket buffer limits (a write may overshoot the send buffer by a chunk).
const SLACK: usize = 1024 * 1024;

fn blob(seq: u64) -> TestMsg {
    let mut v = vec![0x5a; BLOB];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v[BLOB - 8..].copy_from_slice(&seq.to_le_bytes());
    TestMsg::Blob(v)
}

fn text(seq: u64, body: &str) -> TestMsg {
    TestMsg::Text {
        seq,
        body: body.into(),
    }
}

/// The largest send buffer TCP autotuning gives a socket (`tcp_wmem` max), in bytes.
fn tcp_wmem_max() -> usize {
    let v = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").expect("procfs tcp_wmem");
    v.split_whitespace()
        .nth(2)
        .and_then(|x| x.parse().ok())
        .expect("tcp_wmem max")
}

/// A hub with one raw peer that completed the handshake and reads nothing since, and the hub's
/// handle to it with `blobs` blobs queued.
struct Stalled {
    hub: TestNode,
    raw: RawPeer,
    handle: PeerHandle,
    blobs: u64,
}

/// Sets up [`Stalled`]: the raw peer's receive buffer is pinned small, so that what the kernel
/// can hold of A's bytes is at most A's largest send buffer plus that receive buffer (plus
/// slack); A queues that much plus [`HIGH`]. Until the raw peer reads, A's writer can have
/// written no more than the kernel holds, so its queue stays above [`HIGH`], whatever the
/// timing.
async fn stalled_raw_peer(hub_last: u8, raw_last: u8) -> Stalled {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(RAW_RCVBUF)
        .expect("set the raw peer's receive buffer");
    let rcvbuf = socket.recv_buffer_size().expect("receive buffer size") as usize;
    socket
        .bind(SocketAddr::new(lo(raw_last), 0))
        .expect("bind raw peer");
    let absorb = tcp_wmem_max() + rcvbuf + SLACK;
    let blobs = ((absorb + HIGH) / BLOB + 1) as u64;
    let budget = (4 * blobs as usize * BLOB).max(64 * 1024 * 1024);

    let mut hub = TestNode::start(NetworkConfig {
        outbound_budget_bytes: budget,
        // No ping within the test: the raw peer would not answer.
        ping_interval_ms: 10_000,
        ping_timeout_ms: 30_000,
        ..test_config(hub_last)
    })
    .await;
    let stream = timeout(WAIT, socket.connect(hub.addr()))
        .await
        .expect("connect within the wait bound")
        .expect("raw peer connects");
    let mut raw = RawPeer::from_stream(stream).await;
    raw.handshake(hub.net.config()).await;
    let handle = match hub.next_event().await {
        PeerEvent::Connected { info, handle } => {
            assert_eq!(info.ip, lo(raw_last));
            assert_eq!(handle.conn_id(), info.conn.conn_id);
            handle
        }
        other => panic!("expected the raw peer to connect, got {other:?}"),
    };
    // Idle (the Hello is written): nothing to wait for.
    timeout(WAIT, handle.drained_to(0))
        .await
        .expect("drained_to(0) resolves on an idle connection");
    assert_eq!(handle.queued_bytes(), 0);

    for seq in 0..blobs {
        assert_eq!(handle.send(&blob(seq)).unwrap(), SendOutcome::Queued);
    }
    let queued = handle.queued_bytes();
    assert!(
        queued > HIGH,
        "{blobs} blobs sent, {queued} bytes queued: the kernel took more than the {absorb} \
         bytes assumed"
    );
    assert!(!handle.is_closed());
    eprintln!(
        "stalled raw peer {}: {blobs} blobs sent, {} KiB queued (kernel holds at most {} KiB: \
         tcp_wmem max + receive buffer {} KiB + slack)",
        lo(raw_last),
        queued / 1024,
        absorb / 1024,
        rcvbuf / 1024
    );
    Stalled {
        hub,
        raw,
        handle,
        blobs,
    }
}

/// Polls `f` exactly once.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

/// The next application message the raw peer reads (pings skipped).
async fn next_app(raw: &mut RawPeer) -> TestMsg {
    loop {
        match raw.recv().await {
            Read::Frame(Frame::App(payload)) => {
                return decode_app(&payload).expect("a TestMsg");
            }
            Read::Frame(Frame::Ping { .. }) => continue,
            Read::Frame(other) => panic!("expected an application frame, got {}", other.kind()),
            Read::Closed => panic!("expected an application frame, the connection closed"),
        }
    }
}

fn check_blob(m: &TestMsg, seq: u64) {
    let TestMsg::Blob(v) = m else {
        panic!("expected blob {seq}, got {m:?}")
    };
    assert_eq!(v.len(), BLOB, "blob {seq} length");
    let first = u64::from_le_bytes(v[..8].try_into().unwrap());
    let last = u64::from_le_bytes(v[BLOB - 8..].try_into().unwrap());
    assert_eq!((first, last), (seq, seq), "blob out of order");
    assert!(
        v[8..BLOB - 8].iter().all(|&b| b == 0x5a),
        "blob {seq} corrupted"
    );
}

#[actix::test]
async fn drained_to_waits_while_the_peer_does_not_read_and_resolves_once_it_reads() {
    let _threads = THREADS.read().await;
    let Stalled {
        mut hub,
        mut raw,
        handle,
        blobs,
    } = stalled_raw_peer(200, 201).await;

    let mut drained = Box::pin(handle.drained_to(LOW));
    assert!(
        poll_once(&mut drained).await.is_pending(),
        "drained_to({LOW}) resolved with {} bytes queued and the peer reading nothing",
        handle.queued_bytes()
    );
    assert!(!handle.is_closed());

    // The raw peer reads everything; drained_to resolves on the way.
    let waiter = async {
        timeout(WAIT, drained)
            .await
            .expect("drained_to resolves once the peer reads");
        handle.queued_bytes()
    };
    let reader = async {
        for seq in 0..blobs {
            check_blob(&next_app(&mut raw).await, seq);
        }
    };
    let (queued_at_wake, ()) = tokio::join!(waiter, reader);
    assert!(
        queued_at_wake <= LOW,
        "drained_to({LOW}) resolved with {queued_at_wake} bytes queued"
    );
    assert!(!handle.is_closed(), "resolved by draining, not by a close");

    // Everything was read: the queue empties completely.
    timeout(WAIT, handle.drained_to(0))
        .await
        .expect("drained_to(0) resolves once everything is written");
    assert_eq!(handle.queued_bytes(), 0);
    assert!(!handle.is_closed());
    while let Ok(e) = hub.events.try_recv() {
        assert!(
            !matches!(e, PeerEvent::Disconnected(_)),
            "unexpected event {e:?}"
        );
    }
    assert_eq!(hub.net.peers().await.len(), 1);
    hub.net.shutdown().await;
}

#[actix::test]
async fn drained_to_resolves_when_the_session_is_closed_locally() {
    let _threads = THREADS.read().await;
    let Stalled {
        mut hub,
        raw,
        handle,
        ..
    } = stalled_raw_peer(202, 203).await;

    let mut drained = Box::pin(handle.drained_to(LOW));
    assert!(poll_once(&mut drained).await.is_pending());
    assert!(
        hub.net
            .disconnect(lo(203), DisconnectReason::Requested)
            .await
    );
    timeout(WAIT, drained)
        .await
        .expect("drained_to resolves when the session closes");
    assert!(handle.is_closed());
    let queued = handle.queued_bytes();
    assert!(
        queued > LOW,
        "the bytes were never written ({queued} still counted), so only the close ended the wait"
    );
    let gone = hub.disconnected().await;
    assert_eq!(gone.ip, lo(203));
    assert_eq!(gone.conn_id, handle.conn_id());
    assert_eq!(gone.reason, DisconnectReason::Requested);
    assert!(!gone.by_peer);
    // A later wait on the closed handle does not block either.
    timeout(WAIT, handle.drained_to(0))
        .await
        .expect("drained_to on a closed handle resolves");
    drop(raw);
    hub.net.shutdown().await;
}

#[actix::test]
async fn drained_to_resolves_when_the_peer_drops_the_socket() {
    let _threads = THREADS.read().await;
    let Stalled {
        mut hub,
        raw,
        handle,
        ..
    } = stalled_raw_peer(204, 205).await;

    let mut drained = Box::pin(handle.drained_to(LOW));
    assert!(poll_once(&mut drained).await.is_pending());
    // Closing with unread bytes in its receive buffer: the raw peer's kernel resets.
    drop(raw);
    timeout(WAIT, drained)
        .await
        .expect("drained_to resolves when the peer goes away");
    let gone = hub.disconnected().await;
    assert_eq!(gone.ip, lo(205));
    assert_eq!(gone.conn_id, handle.conn_id());
    assert_eq!(gone.reason, DisconnectReason::ConnectionLost);
    assert!(gone.by_peer);
    assert!(handle.is_closed());
    let queued = handle.queued_bytes();
    assert!(
        queued > LOW,
        "the bytes were never written ({queued} still counted), so only the close ended the wait"
    );
    hub.net.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Shared session threads

/// Receives exactly as many messages as `expected` holds and checks that, per sender, they are
/// exactly the expected ones in order (a link is FIFO, so a duplicate or a loss shows).
async fn expect_exactly(node: &mut TestNode, expected: &BTreeMap<IpAddr, Vec<TestMsg>>) {
    let total: usize = expected.values().map(Vec::len).sum();
    let mut got: BTreeMap<IpAddr, Vec<TestMsg>> = BTreeMap::new();
    for _ in 0..total {
        let (from, m) = node.next_msg().await;
        got.entry(from.ip()).or_default().push(m);
    }
    for (ip, msgs) in expected {
        assert_eq!(
            got.get(ip).map(Vec::as_slice).unwrap_or_default(),
            msgs.as_slice(),
            "{} from {ip}",
            node.ip()
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{}: senders",
        node.ip()
    );
}

/// Every node sends `k` messages to every other node (interleaved); every node receives exactly
/// those, in order per sender.
async fn exchange_all(nodes: &mut [TestNode], round: u64, k: u64) {
    let ips: Vec<IpAddr> = nodes.iter().map(TestNode::ip).collect();
    let body = |from: usize, to: usize| format!("round {round}: {} -> {}", ips[from], ips[to]);
    for seq in 0..k {
        for (i, node) in nodes.iter().enumerate() {
            for (j, &to) in ips.iter().enumerate() {
                if i != j {
                    let out = node.net.send(to, &text(seq, &body(i, j))).unwrap();
                    assert_eq!(out, SendOutcome::Queued, "{} -> {to}", ips[i]);
                }
            }
        }
    }
    for (j, node) in nodes.iter_mut().enumerate() {
        let expected = (0..ips.len())
            .filter(|&i| i != j)
            .map(|i| (ips[i], (0..k).map(|seq| text(seq, &body(i, j))).collect()))
            .collect();
        expect_exactly(node, &expected).await;
    }
}

/// Waits until every node has reported `Connected` for exactly the others.
async fn all_connected(nodes: &mut [TestNode]) {
    let ips: Vec<IpAddr> = nodes.iter().map(TestNode::ip).collect();
    for node in nodes.iter_mut() {
        let mut others: HashSet<IpAddr> =
            ips.iter().copied().filter(|&ip| ip != node.ip()).collect();
        while !others.is_empty() {
            let info = node.connected().await;
            assert!(
                others.remove(&info.ip),
                "{}: unexpected {info:?}",
                node.ip()
            );
        }
    }
}

#[actix::test]
async fn networks_on_one_shared_session_thread_exchange_traffic_and_survive_a_shutdown() {
    let _threads = THREADS.read().await;
    let threads = SessionThreads::new(1);
    assert_eq!(threads.len(), 1);
    let mut nodes = Vec::new();
    for last in [206, 207, 208] {
        nodes.push(TestNode::start_on(test_config(last), &threads).await);
    }
    nodes[0].net.connect(nodes[1].addr());
    nodes[0].net.connect(nodes[2].addr());
    nodes[1].net.connect(nodes[2].addr());
    all_connected(&mut nodes).await;
    exchange_all(&mut nodes, 0, 100).await;

    // Each network's broadcast reaches exactly its own two peers, once, before its marker.
    for (i, node) in nodes.iter().enumerate() {
        let n = node
            .net
            .broadcast(&text(i as u64, "broadcast"), None)
            .await
            .unwrap();
        assert_eq!(n, 2, "broadcast of {}", node.ip());
        let n = node
            .net
            .broadcast(&text(i as u64, "marker"), None)
            .await
            .unwrap();
        assert_eq!(n, 2, "marker of {}", node.ip());
    }
    let ips: Vec<IpAddr> = nodes.iter().map(TestNode::ip).collect();
    for (j, node) in nodes.iter_mut().enumerate() {
        let expected = (0..ips.len())
            .filter(|&i| i != j)
            .map(|i| {
                let seq = i as u64;
                (ips[i], vec![text(seq, "broadcast"), text(seq, "marker")])
            })
            .collect();
        expect_exactly(node, &expected).await;
    }

    // One network shuts down; the shared thread goes on for the two others.
    let gone = nodes.pop().unwrap();
    gone.net.shutdown().await;
    sockets_settle(&gone.net, 0, "the shut down network's sockets closed").await;
    for node in &mut nodes {
        let r = node.disconnected().await;
        assert_eq!(r.ip, gone.ip());
        assert_eq!(r.reason, DisconnectReason::Shutdown);
        assert!(r.by_peer);
    }
    exchange_all(&mut nodes, 1, 100).await;

    // A network started after the shutdown, on the same thread, accepts and dials.
    let late = TestNode::start_on(test_config(209), &threads).await;
    late.net.connect(nodes[0].addr());
    nodes[1].net.connect(late.addr());
    nodes.push(late);
    for node in nodes.iter_mut().take(2) {
        assert_eq!(node.connected().await.ip, lo(209));
    }
    let mut joined = HashSet::new();
    for _ in 0..2 {
        joined.insert(nodes[2].connected().await.ip);
    }
    assert_eq!(joined, HashSet::from([lo(206), lo(207)]));
    exchange_all(&mut nodes, 2, 50).await;

    for node in &nodes {
        node.net.shutdown().await;
    }
    drop(gone);
}

/// Threads of this process that actix-rt named (its Arbiters: "actix-rt|system:N|arbiter:M",
/// cut to 15 characters by the kernel).
fn actix_threads() -> HashSet<u32> {
    let mut tids = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("procfs") {
        let Ok(entry) = entry else { continue };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue; // exited meanwhile
        };
        if comm.starts_with("actix-rt") {
            if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                tids.insert(tid);
            }
        }
    }
    tids
}

#[actix::test]
async fn shared_session_threads_outlive_shutdowns_and_stop_when_the_last_user_is_gone() {
    // No other test of this binary starts or stops threads while this one counts them.
    let _threads = THREADS.write().await;
    let before = actix_threads();
    let threads = SessionThreads::new(2);
    assert_eq!(threads.len(), 2);
    let pool: HashSet<u32> = actix_threads().difference(&before).copied().collect();
    // Two session threads and the control plane's thread.
    assert_eq!(pool.len(), 3, "SessionThreads::new(2) started {pool:?}");

    // Three networks on the shared threads start no threads of their own.
    let mut nodes = Vec::new();
    for last in [210, 211, 212] {
        nodes.push(TestNode::start_on(test_config(last), &threads).await);
    }
    nodes[0].net.connect(nodes[1].addr());
    nodes[1].net.connect(nodes[2].addr());
    nodes[2].net.connect(nodes[0].addr());
    all_connected(&mut nodes).await;
    exchange_all(&mut nodes, 0, 20).await;
    let extra: Vec<u32> = actix_threads()
        .difference(&before)
        .filter(|t| !pool.contains(t))
        .copied()
        .collect();
    assert!(
        extra.is_empty(),
        "networks on shared threads started {extra:?}"
    );

    // All of them shut down and are dropped: the shared threads keep running.
    for node in &nodes {
        node.net.shutdown().await;
    }
    for node in &nodes {
        sockets_settle(&node.net, 0, "sockets closed at shutdown").await;
    }
    drop(nodes);

    // Two new networks on them; the SessionThreads handle goes away, the networks still work
    // (their sessions start on the threads after the handle is gone).
    let mut nodes = Vec::new();
    for last in [210, 211] {
        nodes.push(TestNode::start_on(test_config(last), &threads).await);
    }
    drop(threads);
    nodes[0].net.connect(nodes[1].addr());
    all_connected(&mut nodes).await;
    exchange_all(&mut nodes, 1, 20).await;
    assert!(
        pool.is_subset(&actix_threads()),
        "the shared threads run while networks use them"
    );

    // The last networks shut down and are dropped: the threads exit.
    for node in &nodes {
        node.net.shutdown().await;
    }
    drop(nodes);
    eventually("the shared session threads exit", || {
        let alive: Vec<u32> = actix_threads().intersection(&pool).copied().collect();
        async move { alive.is_empty().then_some(()) }
    })
    .await;
}

/// `SessionThreads::on` puts the sessions on the application's own Arbiter (here the test's,
/// where the collectors run): it starts only the control thread, the networks on it exchange
/// traffic, and shutting them down and dropping everything stops the control thread but never
/// the application's Arbiter (the test goes on running on it).
#[actix::test]
async fn sessions_on_the_applications_arbiter_leave_it_running_after_shutdown() {
    let _threads = THREADS.write().await;
    let before = actix_threads();
    let threads = SessionThreads::on(&[actix::Arbiter::current()]);
    assert_eq!(threads.len(), 1);
    let started: HashSet<u32> = actix_threads().difference(&before).copied().collect();
    assert_eq!(started.len(), 1, "only the control thread: {started:?}");

    let mut nodes = Vec::new();
    for last in [215, 216] {
        nodes.push(TestNode::start_on(test_config(last), &threads).await);
    }
    nodes[0].net.connect(nodes[1].addr());
    all_connected(&mut nodes).await;
    exchange_all(&mut nodes, 0, 50).await;
    let extra: Vec<u32> = actix_threads()
        .difference(&before)
        .filter(|t| !started.contains(t))
        .copied()
        .collect();
    assert!(extra.is_empty(), "the networks started {extra:?}");

    for node in &nodes {
        node.net.shutdown().await;
    }
    for node in &nodes {
        sockets_settle(&node.net, 0, "sockets closed at shutdown").await;
    }
    drop(nodes);
    drop(threads);
    eventually("the control thread exits", || {
        let alive = actix_threads().intersection(&started).count();
        async move { (alive == 0).then_some(()) }
    })
    .await;
    // The application's Arbiter still runs tasks.
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(actix::Arbiter::current().spawn(async move {
        let _ = tx.send(7);
    }));
    assert_eq!(timeout(WAIT, rx).await.expect("still running"), Ok(7));
}

// ---------------------------------------------------------------------------------------------
// Broadcast lanes

/// A hub on two session threads.
async fn hub(last: u8) -> TestNode {
    TestNode::start(NetworkConfig {
        session_threads: 2,
        ..test_config(last)
    })
    .await
}

async fn peer(last: u8) -> TestNode {
    TestNode::start(NetworkConfig {
        session_threads: 1,
        ..test_config(last)
    })
    .await
}

#[actix::test]
async fn a_broadcast_right_after_connected_reaches_the_new_peer() {
    let _threads = THREADS.read().await;
    let mut hub = hub(213).await;
    let mut peers = Vec::new();
    for (k, last) in (214..220u8).enumerate() {
        let p = peer(last).await;
        p.net.connect(hub.addr());
        match hub.next_event().await {
            PeerEvent::Connected { info, .. } => assert_eq!(info.ip, lo(last)),
            other => panic!("expected {} to connect, got {other:?}", lo(last)),
        }
        let n = hub
            .net
            .broadcast(&text(k as u64, "on connected"), None)
            .await
            .unwrap();
        assert_eq!(n, k + 1, "broadcast on the Connected of {}", lo(last));
        peers.push(p);
    }
    let n = hub.net.broadcast(&text(99, "marker"), None).await.unwrap();
    assert_eq!(n, 6);

    let hub_ip = hub.ip();
    for (k, p) in peers.iter_mut().enumerate() {
        let mut msgs: Vec<TestMsg> = (k as u64..6).map(|s| text(s, "on connected")).collect();
        msgs.push(text(99, "marker"));
        expect_exactly(p, &BTreeMap::from([(hub_ip, msgs)])).await;
        assert!(p.inbound.try_recv().is_err());
    }
    hub.net.shutdown().await;
    for p in &peers {
        p.net.shutdown().await;
    }
}

#[actix::test]
async fn broadcasts_racing_six_concurrent_joins_reach_every_announced_peer() {
    let _threads = THREADS.read().await;
    let mut hub = hub(220).await;
    let mut peers = Vec::new();
    for last in 221..227u8 {
        peers.push(peer(last).await);
    }
    for p in &peers {
        p.net.connect(hub.addr());
    }
    // On each Connected, broadcast at once.
    let mut announced: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut counts = Vec::new();
    for k in 0..6u64 {
        let ip = match hub.next_event().await {
            PeerEvent::Connected { info, .. } => info.ip,
            other => panic!("expected a peer to connect, got {other:?}"),
        };
        assert!(announced.insert(ip, k).is_none(), "{ip} announced twice");
        let n = hub
            .net
            .broadcast(&text(k, "on connected"), None)
            .await
            .unwrap();
        assert!(
            (k as usize + 1..=6).contains(&n),
            "broadcast {k} went to {n} peers, {} announced",
            k + 1
        );
        counts.push(n);
    }
    let n = hub.net.broadcast(&text(99, "marker"), None).await.unwrap();
    assert_eq!(n, 6);

    let hub_ip = hub.ip();
    let mut delivered = 0;
    for p in &mut peers {
        let first = announced[&p.ip()];
        let mut got = Vec::new();
        loop {
            let (from, m) = p.next_msg().await;
            assert_eq!(from.ip(), hub_ip);
            match m {
                TestMsg::Text { seq: 99, .. } => break,
                TestMsg::Text { seq, body } if body == "on connected" => got.push(seq),
                other => panic!("{}: unexpected {other:?}", p.ip()),
            }
        }
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{}: broadcasts out of order or twice: {got:?}",
            p.ip()
        );
        assert!(
            (first..6).all(|s| got.contains(&s)),
            "{} (announced as {first}) missed one of the broadcasts from its Connected on: \
             {got:?}",
            p.ip()
        );
        delivered += got.len();
    }
    assert_eq!(
        delivered,
        counts.iter().sum::<usize>(),
        "deliveries against counts {counts:?}"
    );
    hub.net.shutdown().await;
    for p in &peers {
        p.net.shutdown().await;
    }
}

#[actix::test]
async fn a_broadcast_after_a_restart_reaches_the_new_instance_exactly_once() {
    let _threads = THREADS.read().await;
    let (mut a, b, b2, old) = connected_pair_and_restarted_b(227, 228).await;
    let mut previous = (b, old.conn.conn_id);
    let mut next = b2;
    for round in 0..2u64 {
        next.net.connect(a.addr());
        let gone = match a.next_event().await {
            PeerEvent::Disconnected(r) => r,
            other => panic!("expected the old connection to leave first, got {other:?}"),
        };
        assert_eq!(gone.conn_id, previous.1);
        assert_eq!(gone.reason, DisconnectReason::PeerRestarted);
        let new = match a.next_event().await {
            PeerEvent::Connected { info, .. } => info,
            other => panic!("expected the new instance to connect, got {other:?}"),
        };
        assert_eq!(new.conn.remote_nonce, next.net.node_nonce());
        let n = a
            .net
            .broadcast(&text(round, "after restart"), None)
            .await
            .unwrap();
        assert_eq!(n, 1, "round {round}");
        let n = a.net.broadcast(&text(99, "marker"), None).await.unwrap();
        assert_eq!(n, 1, "round {round}");

        let msgs = vec![text(round, "after restart"), text(99, "marker")];
        expect_exactly(&mut next, &BTreeMap::from([(a.ip(), msgs)])).await;
        let from = next.connected().await;
        assert_eq!(from.ip, a.ip());

        // The old instance was told why it was dropped and got nothing after: whatever the old
        // session delivered reached its application before this event.
        let (mut old_node, _) = previous;
        let r = old_node.disconnected().await;
        assert_eq!(r.reason, DisconnectReason::PeerRestarted);
        assert!(
            old_node.inbound.try_recv().is_err(),
            "round {round}: the old instance received something"
        );
        old_node.net.shutdown().await;

        previous = (next, new.conn.conn_id);
        next = TestNode::start(restart_config(228)).await;
    }
    a.net.shutdown().await;
    previous.0.net.shutdown().await;
    next.net.shutdown().await;
}
