//! Actor-level tests of the registry, without sockets: test sessions (a fake session actor that
//! records the close it is asked for, and a real handle whose writer writes into an in-memory
//! pipe) register, are replaced, unregister and receive broadcasts through the real lanes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures_util::StreamExt;
use proptest::prelude::*;
use tokio::io::DuplexStream;
use tokio_util::codec::FramedRead;

use super::*;
use crate::handle::SendOutcome;
use crate::lanes::LaneLink;
use crate::protocol::{encode_app, Frame, FrameCodec};
use crate::testkit::{fake_handle, FakeSession};
use bytes::Bytes;

const LOCAL_NONCE: u64 = 1_000;

/// One test session: what the registry sees of it, and what it sees of the registry.
struct TestSession {
    ip: IpAddr,
    facts: ConnFacts,
    handle: PeerHandle,
    session: Addr<FakeSession>,
    closed: Arc<std::sync::OnceLock<DisconnectReason>>,
    frames: FramedRead<DuplexStream, FrameCodec>,
    _writer: tokio::sync::oneshot::Sender<crate::handle::WriterClose>,
}

impl TestSession {
    fn new(ip: [u8; 4], direction: Direction, remote_nonce: u64, dialer_port: u16) -> Self {
        let ip = IpAddr::from(ip);
        let closed = Arc::new(std::sync::OnceLock::new());
        let session = FakeSession {
            closed: closed.clone(),
        }
        .start();
        let (handle, writer, read_end) = fake_handle(
            ip,
            1 << 20,
            1 << 20,
            session.clone().recipient(),
            session.clone().recipient(),
        );
        let cap = Arc::new(std::sync::atomic::AtomicUsize::new(1 << 20));
        Self {
            ip,
            facts: ConnFacts {
                conn_id: handle.conn_id(),
                direction,
                remote_nonce,
                dialer_port,
                remote_key: None,
            },
            handle,
            session,
            closed,
            frames: FramedRead::new(read_end, FrameCodec::new(cap)),
            _writer: writer,
        }
    }

    fn register(&self) -> Register {
        Register {
            ip: self.ip,
            facts: self.facts,
            session: self.session.clone().recipient(),
            handle: self.handle.clone(),
            stats: Arc::default(),
            meta: PeerMeta {
                local_addr: "127.0.0.1:1".parse().unwrap(),
                peer_addr: SocketAddr::new(self.ip, self.facts.dialer_port),
                listen_addr: None,
                best_height: 0,
                user_agent: "test".into(),
            },
        }
    }

    fn unregister(&self) -> Unregister {
        Unregister {
            ip: self.ip,
            conn_id: self.facts.conn_id,
            reason: DisconnectReason::ConnectionLost,
            by_peer: true,
        }
    }

    /// The close the registry asked for, once the fake session has handled it.
    async fn close_reason(&self) -> Option<DisconnectReason> {
        // Messages to the fake session are handled in order: a ping answered means every
        // close sent before it was handled.
        let _ = self.session.send(Ping).await;
        self.closed.get().copied()
    }

    /// The next App payload written to this session's socket.
    async fn next_app(&mut self) -> Vec<u8> {
        loop {
            let body = self.frames.next().await.expect("frame").expect("decodable");
            if let Ok(Frame::App(payload)) = Frame::decode(body) {
                return payload.to_vec();
            }
        }
    }
}

/// A message the fake session answers after everything sent to it before.
#[derive(Message)]
#[rtype(result = "()")]
struct Ping;

impl Handler<Ping> for FakeSession {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

/// Records peer events in order.
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<PeerEvent> for Recorder {
    type Result = ();
    fn handle(&mut self, ev: PeerEvent, _: &mut Context<Self>) {
        let line = match ev {
            PeerEvent::Connected { info, .. } => format!("+{} {}", info.ip, info.conn.conn_id),
            PeerEvent::Disconnected(r) => format!("-{} {}", r.ip, r.conn_id),
        };
        self.0.lock().unwrap().push(line);
    }
}

/// A registry with one lane, and that lane's link (what `Network::broadcast` sends through).
fn start_registry_with_lane() -> (Addr<PeerRegistry>, PublishedHandles, LaneLink) {
    let policy = DuplicatePolicy {
        local_nonce: LOCAL_NONCE,
        max_inbound: 8,
        max_outbound: 8,
    };
    let published = PublishedHandles::default();
    let lanes = vec![Lane::spawn_here()];
    let link = lanes[0].link(0);
    let registry = PeerRegistry::new(
        policy,
        Arc::new(NetMetrics::default()),
        lanes,
        published.clone(),
    )
    .start();
    (registry, published, link)
}

fn start_registry() -> (Addr<PeerRegistry>, PublishedHandles) {
    let (registry, published, _) = start_registry_with_lane();
    (registry, published)
}

/// What `Network::broadcast` does: the frame into the lane, the count from the published map.
fn broadcast(
    published: &PublishedHandles,
    link: &LaneLink,
    frame: Bytes,
    except: Option<IpAddr>,
) -> usize {
    link.broadcast(&frame, except);
    let map = published.load();
    map.len() - except.map_or(0, |ip| usize::from(map.contains_key(&ip)))
}

fn published_conn(published: &PublishedHandles, ip: IpAddr) -> Option<ConnId> {
    published.load().get(&ip).map(|h| h.conn_id())
}

#[actix::test]
async fn register_accepts_then_a_new_nonce_replaces_and_closes_the_old_session() {
    let (registry, published) = start_registry();
    let first = TestSession::new([127, 0, 0, 2], Direction::Inbound, 7, 40_000);
    let outcome = registry.send(first.register()).await.unwrap();
    assert_eq!(outcome, RegisterOutcome::Accepted);
    assert_eq!(
        published_conn(&published, first.ip),
        Some(first.facts.conn_id)
    );

    // The peer restarted: another nonce from the same IP replaces the entry at once.
    let restarted = TestSession::new([127, 0, 0, 2], Direction::Inbound, 8, 40_001);
    let outcome = registry.send(restarted.register()).await.unwrap();
    assert_eq!(
        outcome,
        RegisterOutcome::Replaced {
            old: first.facts.conn_id
        }
    );
    assert_eq!(
        first.close_reason().await,
        Some(DisconnectReason::PeerRestarted)
    );
    assert!(first.handle.is_closed(), "the replaced handle is closed");
    assert_eq!(restarted.close_reason().await, None);
    assert_eq!(
        published_conn(&published, first.ip),
        Some(restarted.facts.conn_id)
    );
    let peers = registry.send(GetPeers).await.unwrap();
    assert_eq!(peers.len(), 1, "one entry per IP");
}

#[actix::test]
async fn same_nonce_keeps_the_connection_dialled_by_the_larger_nonce() {
    let (registry, _) = start_registry();
    // Remote nonce 5 < our 1000: our outbound connection wins over its inbound one.
    let inbound = TestSession::new([127, 0, 0, 3], Direction::Inbound, 5, 50_000);
    let outbound = TestSession::new([127, 0, 0, 3], Direction::Outbound, 5, 50_001);
    assert_eq!(
        registry.send(inbound.register()).await.unwrap(),
        RegisterOutcome::Accepted
    );
    assert_eq!(
        registry.send(outbound.register()).await.unwrap(),
        RegisterOutcome::Replaced {
            old: inbound.facts.conn_id
        }
    );
    assert_eq!(
        inbound.close_reason().await,
        Some(DisconnectReason::Duplicate)
    );
    // The losing side registering again is rejected, the winner stays.
    let late = TestSession::new([127, 0, 0, 3], Direction::Inbound, 5, 50_002);
    assert_eq!(
        registry.send(late.register()).await.unwrap(),
        RegisterOutcome::Rejected(DisconnectReason::Duplicate)
    );
    let peers = registry.send(GetPeers).await.unwrap();
    assert_eq!(peers[0].conn.conn_id, outbound.facts.conn_id);
}

#[actix::test]
async fn a_stale_unregister_never_removes_the_successor() {
    let (registry, published) = start_registry();
    let old = TestSession::new([127, 0, 0, 4], Direction::Inbound, 1, 1);
    let new = TestSession::new([127, 0, 0, 4], Direction::Inbound, 2, 2);
    registry.send(old.register()).await.unwrap();
    registry.send(new.register()).await.unwrap();
    assert!(!registry.send(old.unregister()).await.unwrap(), "stale");
    assert_eq!(published_conn(&published, new.ip), Some(new.facts.conn_id));
    let stats = registry.send(GetStats).await.unwrap();
    assert_eq!(stats.stale_unregisters, 1);
    assert!(registry.send(new.unregister()).await.unwrap(), "current");
    assert!(registry.send(GetPeers).await.unwrap().is_empty());
    assert_eq!(published_conn(&published, new.ip), None);
}

#[actix::test]
async fn broadcasts_reach_exactly_the_registered_set_and_events_come_in_order() {
    let (registry, published, link) = start_registry_with_lane();
    let events = Arc::new(Mutex::new(Vec::new()));
    registry
        .send(Subscribe(Recorder(events.clone()).start().recipient()))
        .await
        .unwrap();
    let mut a = TestSession::new([127, 0, 0, 5], Direction::Inbound, 1, 1);
    let mut b = TestSession::new([127, 0, 0, 6], Direction::Outbound, 2, 2);
    let mut c = TestSession::new([127, 0, 0, 7], Direction::Inbound, 3, 3);
    for s in [&a, &b, &c] {
        registry.send(s.register()).await.unwrap();
    }
    let one = encode_app(&1u8).unwrap();
    let n = broadcast(&published, &link, one, Some(c.ip));
    assert_eq!(n, 2, "every registered peer but the excepted one");
    registry.send(b.unregister()).await.unwrap();
    let two = encode_app(&2u8).unwrap();
    let n = broadcast(&published, &link, two, None);
    assert_eq!(n, 2);
    // a got both, c only the second, b only the first (it left before the second).
    assert_eq!(a.next_app().await, vec![1]);
    assert_eq!(a.next_app().await, vec![2]);
    assert_eq!(c.next_app().await, vec![2]);
    assert_eq!(b.next_app().await, vec![1]);

    // Events reach the subscriber in registry order; wait until the last one has arrived.
    let expected = vec![
        format!("+{} {}", a.ip, a.facts.conn_id),
        format!("+{} {}", b.ip, b.facts.conn_id),
        format!("+{} {}", c.ip, c.facts.conn_id),
        format!("-{} {}", b.ip, b.facts.conn_id),
    ];
    for _ in 0..1000 {
        if events.lock().unwrap().len() >= expected.len() {
            break;
        }
        // Each round trip through the registry lets its event drain make progress.
        registry.send(GetStats).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(*events.lock().unwrap(), expected);
}

/// A late subscriber hears first of the peers registered before it subscribed (one
/// `Connected` each, with its connection id), then of every change, in order.
#[actix::test]
async fn a_late_subscriber_hears_of_the_peers_already_registered() {
    let (registry, _published) = start_registry();
    let a = TestSession::new([127, 0, 0, 8], Direction::Inbound, 1, 1);
    let b = TestSession::new([127, 0, 0, 9], Direction::Outbound, 2, 2);
    let c = TestSession::new([127, 0, 0, 10], Direction::Inbound, 3, 3);
    for s in [&a, &b] {
        registry.send(s.register()).await.unwrap();
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    registry
        .send(Subscribe(Recorder(events.clone()).start().recipient()))
        .await
        .unwrap();
    registry.send(c.register()).await.unwrap();
    registry.send(a.unregister()).await.unwrap();
    let mut expected = vec![
        format!("+{} {}", a.ip, a.facts.conn_id),
        format!("+{} {}", b.ip, b.facts.conn_id),
    ];
    // The replay follows the registry's map order; the changes after it, their own order.
    expected.sort();
    expected.push(format!("+{} {}", c.ip, c.facts.conn_id));
    expected.push(format!("-{} {}", a.ip, a.facts.conn_id));
    for _ in 0..1000 {
        if events.lock().unwrap().len() >= expected.len() {
            break;
        }
        registry.send(GetStats).await.unwrap();
        tokio::task::yield_now().await;
    }
    let mut got = events.lock().unwrap().clone();
    assert_eq!(got.len(), expected.len(), "{got:?}");
    got[..2].sort();
    assert_eq!(got, expected);
}

/// A subscriber whose thread is blocked until released.
struct Blocked {
    release: std::sync::mpsc::Receiver<()>,
    seen: Arc<Mutex<usize>>,
}

impl Actor for Blocked {
    type Context = Context<Self>;
}

impl Handler<PeerEvent> for Blocked {
    type Result = ();
    fn handle(&mut self, _: PeerEvent, _: &mut Context<Self>) {
        // Blocks this actor's own arbiter thread until the test lets it go.
        let _ = self.release.recv();
        *self.seen.lock().unwrap() += 1;
    }
}

#[actix::test]
async fn a_subscriber_that_does_not_keep_up_costs_a_bounded_queue() {
    let (registry, _) = start_registry();
    let metrics = Arc::new(NetMetrics::default());
    let registry = {
        drop(registry);
        let policy = DuplicatePolicy {
            local_nonce: LOCAL_NONCE,
            max_inbound: 8,
            max_outbound: 8,
        };
        let mut r = PeerRegistry::new(
            policy,
            metrics.clone(),
            vec![Lane::spawn_here()],
            PublishedHandles::default(),
        );
        r.max_pending_events = 4;
        r.start()
    };
    let (release, rx) = std::sync::mpsc::channel();
    let seen = Arc::new(Mutex::new(0));
    let arbiter = Arbiter::new();
    let blocked = Blocked::start_in_arbiter(&arbiter.handle(), {
        let seen = seen.clone();
        move |_| Blocked { release: rx, seen }
    });
    registry.send(Subscribe(blocked.recipient())).await.unwrap();
    // 20 connections come and go: 40 events for a subscriber stuck on the first one.
    for i in 0..20u8 {
        let s = TestSession::new([127, 0, 2, i + 1], Direction::Inbound, 1, 1);
        registry.send(s.register()).await.unwrap();
        registry.send(s.unregister()).await.unwrap();
    }
    let dropped = metrics.events_dropped.get();
    assert_eq!(
        dropped,
        40 - 4,
        "one in delivery and three waiting, the rest dropped"
    );
    let seen_reaches = |n: usize| {
        let (seen, registry) = (seen.clone(), registry.clone());
        async move {
            for _ in 0..100_000 {
                if *seen.lock().unwrap() == n {
                    break;
                }
                registry.send(GetStats).await.unwrap();
                tokio::task::yield_now().await;
            }
            *seen.lock().unwrap()
        }
    };
    for _ in 0..4 {
        release.send(()).unwrap();
    }
    assert_eq!(seen_reaches(4).await, 4, "the queue drains in order");
    // Once it has caught up, later events flow again.
    let s = TestSession::new([127, 0, 2, 200], Direction::Inbound, 1, 1);
    registry.send(s.register()).await.unwrap();
    release.send(()).unwrap();
    assert_eq!(seen_reaches(5).await, 5);
    assert_eq!(
        metrics.events_dropped.get(),
        dropped,
        "nothing more dropped"
    );
    arbiter.stop();
}

/// One step of a random history against the registry.
#[derive(Debug, Clone)]
enum Op {
    /// A new connection registers: IP index, direction, remote nonce, dialler port.
    Register(u8, bool, u8, u16),
    /// The n-th connection ever made unregisters (stale or current).
    Unregister(usize),
    /// A broadcast.
    Broadcast,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, any::<bool>(), 0u8..3, 1u16..4).prop_map(|(i, o, n, p)| Op::Register(i, o, n, p)),
        3 => (0usize..64).prop_map(Op::Unregister),
        2 => Just(Op::Broadcast),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Model-based: after every step there is at most one entry per IP, a stale unregister never
    /// removes a successor, the published view equals the registry's map, and every broadcast
    /// reaches exactly the registered set.
    #[test]
    fn registry_matches_a_simple_model(ops in proptest::collection::vec(op(), 1..40)) {
        let system = actix::System::new();
        system.block_on(async move {
            let (registry, published, link) = start_registry_with_lane();
            let policy = DuplicatePolicy { local_nonce: LOCAL_NONCE, max_inbound: 8, max_outbound: 8 };
            // Model: IP -> index of the registered session.
            let mut model: BTreeMap<IpAddr, usize> = BTreeMap::new();
            let mut sessions: Vec<TestSession> = Vec::new();
            let mut expected: Vec<Vec<u8>> = Vec::new(); // per session: broadcast ids it must get
            let mut next_id = 0u8;
            for op in ops {
                match op {
                    Op::Register(i, outbound, nonce, port) => {
                        let dir = if outbound { Direction::Outbound } else { Direction::Inbound };
                        let s = TestSession::new([127, 0, 1, i + 1], dir, u64::from(nonce), port);
                        let existing = model.get(&s.ip).map(|&k| sessions[k].facts);
                        let occ = Occupancy { inbound: 0, outbound: 0 };
                        let want = policy.resolve(existing.as_ref(), &s.facts, occ);
                        let got = registry.send(s.register()).await.unwrap();
                        match want {
                            Resolution::Accept => prop_assert_eq!(got, RegisterOutcome::Accepted),
                            Resolution::Replace { old, .. } => prop_assert_eq!(got, RegisterOutcome::Replaced { old }),
                            Resolution::Reject(r) => prop_assert_eq!(got, RegisterOutcome::Rejected(r)),
                        }
                        if !matches!(want, Resolution::Reject(_)) {
                            model.insert(s.ip, sessions.len());
                        }
                        sessions.push(s);
                        expected.push(Vec::new());
                    }
                    Op::Unregister(n) => {
                        if sessions.is_empty() { continue; }
                        let k = n % sessions.len();
                        let current = model.get(&sessions[k].ip) == Some(&k);
                        let removed = registry.send(sessions[k].unregister()).await.unwrap();
                        prop_assert_eq!(removed, current, "only the current connection is removed");
                        if current { model.remove(&sessions[k].ip); }
                    }
                    Op::Broadcast => {
                        next_id += 1;
                        let frame = encode_app(&next_id).unwrap();
                        let n = broadcast(&published, &link, frame, None);
                        prop_assert_eq!(n, model.len());
                        for &k in model.values() {
                            expected[k].push(next_id);
                        }
                    }
                }
                let map: BTreeSet<(IpAddr, ConnId)> = published.load().iter().map(|(ip, h)| (*ip, h.conn_id())).collect();
                let want: BTreeSet<(IpAddr, ConnId)> = model.iter().map(|(ip, &k)| (*ip, sessions[k].facts.conn_id)).collect();
                prop_assert_eq!(map, want, "published view == model");
            }
            let peers = registry.send(GetPeers).await.unwrap();
            prop_assert_eq!(peers.len(), model.len());
            // Every broadcast reached exactly the sessions registered when it was sent.
            for (k, s) in sessions.iter_mut().enumerate() {
                for &id in &expected[k] {
                    let got = s.next_app().await;
                    prop_assert_eq!(got, vec![id]);
                }
                // Nothing else came before a direct send made now (on open connections).
                if s.handle.send(&127u8).unwrap() == SendOutcome::Queued {
                    prop_assert_eq!(s.next_app().await, vec![127]);
                }
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Eviction: the registry builds the policy's candidates from its records (connected since, the
// session's lowest ping, the handle's useful mark, the operator's list) and carries out the
// decision in the same handler as the newcomer's registration.

/// A registry with `max_inbound` inbound slots and the given eviction settings.
fn start_evicting_registry(
    max_inbound: usize,
    config: EvictionConfig,
    always_keep: &[IpAddr],
) -> (Addr<PeerRegistry>, PublishedHandles, Arc<NetMetrics>) {
    let policy = DuplicatePolicy {
        local_nonce: LOCAL_NONCE,
        max_inbound,
        max_outbound: 8,
    };
    let published = PublishedHandles::default();
    let metrics = Arc::new(NetMetrics::default());
    let registry = PeerRegistry::new(
        policy,
        metrics.clone(),
        vec![Lane::spawn_here()],
        published.clone(),
    )
    .with_eviction(EvictionSetup {
        config,
        key: [7; 32],
        always_keep: always_keep.iter().copied().collect(),
    })
    .start();
    (registry, published, metrics)
}

/// Only the protections this test names: no keyed-group protection (its choice depends on the
/// key), one by ping, one by useful mark, half of the rest by uptime, no minimum age.
fn named_protections() -> EvictionConfig {
    EvictionConfig {
        protect_by_group: 0,
        protect_by_ping: 1,
        protect_by_useful: 1,
        protect_uptime_fraction: 0.5,
        min_age_ms: 0,
    }
}

#[actix::test]
async fn a_full_registry_evicts_the_unprotected_youngest_for_an_inbound_newcomer() {
    let kept = IpAddr::from([127, 0, 0, 12]);
    let (registry, published, metrics) = start_evicting_registry(6, named_protections(), &[kept]);
    // Registered in this order (ages follow it): .11 oldest ... .16 youngest.
    let sessions: Vec<TestSession> = (11..=16u8)
        .map(|last| TestSession::new([127, 0, 0, last], Direction::Inbound, last as u64, 40_000))
        .collect();
    for (i, s) in sessions.iter().enumerate() {
        let mut reg = s.register();
        if i == 3 {
            // .14 has the one measured ping.
            let stats = Arc::new(crate::session_api::SessionStats::default());
            stats.record_rtt(Duration::from_millis(20));
            reg.stats = stats;
        }
        assert_eq!(registry.send(reg).await.unwrap(), RegisterOutcome::Accepted);
    }
    // .13 sent something useful.
    sessions[2].handle.mark_useful();

    // Protected: .12 (operator-listed), .14 (lowest ping), .13 (useful), then of .11, .15,
    // .16 the oldest half (one: .11). Evicted: the youngest left, .16.
    let newcomer = TestSession::new([127, 0, 0, 17], Direction::Inbound, 17, 40_000);
    assert_eq!(
        registry.send(newcomer.register()).await.unwrap(),
        RegisterOutcome::Accepted
    );
    assert_eq!(
        sessions[5].close_reason().await,
        Some(DisconnectReason::Evicted)
    );
    for s in &sessions[..5] {
        assert_eq!(s.close_reason().await, None, "{} was closed", s.ip);
    }
    assert_eq!(published_conn(&published, sessions[5].ip), None);
    assert_eq!(
        published_conn(&published, newcomer.ip),
        Some(newcomer.facts.conn_id)
    );
    assert_eq!(metrics.evictions.get(), 1);
    let stats = registry.send(GetStats).await.unwrap();
    assert_eq!(stats.inbound, 6);
    let last = stats.recent_disconnects.last().expect("a record");
    assert_eq!(
        (last.ip, last.reason, last.by_peer),
        (sessions[5].ip, DisconnectReason::Evicted, false)
    );

    // The next newcomer: now .17 is the youngest unprotected peer.
    let second = TestSession::new([127, 0, 0, 18], Direction::Inbound, 18, 40_000);
    assert_eq!(
        registry.send(second.register()).await.unwrap(),
        RegisterOutcome::Accepted
    );
    assert_eq!(
        newcomer.close_reason().await,
        Some(DisconnectReason::Evicted)
    );
    assert_eq!(sessions[4].close_reason().await, None);

    // An outbound connection does not count against inbound slots and evicts nobody.
    let out = TestSession::new([127, 0, 0, 19], Direction::Outbound, 19, 40_000);
    assert_eq!(
        registry.send(out.register()).await.unwrap(),
        RegisterOutcome::Accepted
    );
    assert_eq!(metrics.evictions.get(), 2);
}

#[actix::test]
async fn a_full_registry_refuses_the_newcomer_when_everyone_is_protected() {
    // Everyone is younger than the minimum age.
    let config = EvictionConfig {
        min_age_ms: 3_600_000,
        ..named_protections()
    };
    let (registry, _published, metrics) = start_evicting_registry(3, config, &[]);
    let sessions: Vec<TestSession> = (21..=23u8)
        .map(|last| TestSession::new([127, 0, 0, last], Direction::Inbound, last as u64, 40_000))
        .collect();
    for s in &sessions {
        assert_eq!(
            registry.send(s.register()).await.unwrap(),
            RegisterOutcome::Accepted
        );
    }
    let newcomer = TestSession::new([127, 0, 0, 24], Direction::Inbound, 24, 40_000);
    assert_eq!(
        registry.send(newcomer.register()).await.unwrap(),
        RegisterOutcome::Rejected(DisconnectReason::TooManyPeers)
    );
    for s in &sessions {
        assert_eq!(s.close_reason().await, None);
    }
    assert_eq!(metrics.evictions.get(), 0);
    // A restart of a registered peer (same IP, new nonce) still replaces its own entry: no
    // eviction is needed for it.
    let restarted = TestSession::new([127, 0, 0, 21], Direction::Inbound, 99, 40_001);
    assert_eq!(
        registry.send(restarted.register()).await.unwrap(),
        RegisterOutcome::Replaced {
            old: sessions[0].facts.conn_id
        }
    );
    assert_eq!(metrics.evictions.get(), 0);
}
