//! Unit tests of the sync policy against in-memory chains and scripted peers.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::chain::{genesis_for, ChainParams, ProducerKey};
use crate::sync::rule::ProducerRule;

/// The producer of every test chain.
fn key() -> ProducerKey {
    ProducerKey::from_seed([42; 32])
}

/// The node's rule for chains signed by [`key`], on the test's thread.
fn rule() -> Box<dyn BlockRule> {
    Box::new(
        ProducerRule::new(ChainParams::new("unit", [key().public()]), 4096, 60_000).with_threads(1),
    )
}

/// An in-memory chain.
#[derive(Debug, Clone)]
struct MemChain(Vec<Block>);

impl MemChain {
    fn new() -> Self {
        MemChain(vec![genesis_for("unit")])
    }
    /// Extends with `n` blocks whose payload starts with `tag`.
    fn grow(&mut self, n: u64, tag: u8) -> &mut Self {
        self.grow_signed(n, tag, &key())
    }
    /// Extends with `n` blocks signed by `k`.
    fn grow_signed(&mut self, n: u64, tag: u8, k: &ProducerKey) -> &mut Self {
        for _ in 0..n {
            let last = self.0.last().unwrap();
            let b = Block::signed(
                last.height + 1,
                last.hash(),
                0,
                vec![tag, last.height as u8],
                k,
            );
            self.0.push(b);
        }
        self
    }
}

impl Chain for MemChain {
    fn height(&self) -> u64 {
        self.0.len() as u64 - 1
    }
    fn tip_hash(&self) -> BlockHash {
        self.0.last().unwrap().hash()
    }
    fn hash_at(&self, h: u64) -> Option<BlockHash> {
        self.0.get(h as usize).map(Block::hash)
    }
    fn timestamp_at(&self, h: u64) -> Option<u64> {
        self.0.get(h as usize).map(|b| b.timestamp_ms)
    }
    fn apply(&mut self, ancestor: u64, blocks: &[Block]) -> Result<(), String> {
        self.0.truncate(ancestor as usize + 1);
        for b in blocks {
            if !b.extends(self.height(), &self.tip_hash()) {
                return Err("does not link".into());
            }
            self.0.push(b.clone());
        }
        Ok(())
    }
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 2, n])
}

fn cfg() -> SyncConfig {
    SyncConfig {
        stall_timeout_ms: 1_000,
        blocks_per_request: 10,
        max_in_flight: 4,
        max_in_flight_per_peer: 2,
        window_blocks: 200,
        max_reorg_depth: 20,
        ..SyncConfig::default()
    }
}

/// Scripted peers: each serves its chain; peers in `silent` answer nothing.
struct Net {
    chains: HashMap<IpAddr, MemChain>,
    silent: HashSet<IpAddr>,
    sent: Vec<(IpAddr, NodeMsg)>,
    disconnected: Vec<IpAddr>,
}

impl Net {
    fn new() -> Self {
        Net {
            chains: HashMap::new(),
            silent: HashSet::new(),
            sent: Vec::new(),
            disconnected: Vec::new(),
        }
    }

    fn add(
        &mut self,
        e: &mut SyncEngine,
        me: &mut MemChain,
        peer: IpAddr,
        chain: MemChain,
        now: Instant,
    ) {
        let (h, tip) = (chain.height(), chain.tip_hash());
        self.chains.insert(peer, chain);
        e.peer_connected(peer, h, now, me);
        e.on_announce(peer, h, tip, now, me);
    }

    /// Delivers actions and answers until nothing is left to answer.
    fn run(&mut self, e: &mut SyncEngine, me: &mut MemChain, now: Instant) {
        loop {
            let actions = e.take_actions();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                match a {
                    Action::Disconnect { peer, .. } => self.disconnected.push(peer),
                    Action::Send { peer, msg } => {
                        self.sent.push((peer, msg.clone()));
                        if self.silent.contains(&peer) {
                            continue;
                        }
                        let c = &self.chains[&peer];
                        match msg {
                            NodeMsg::GetHashes {
                                request_id,
                                from,
                                count,
                            } => {
                                let hashes = (from..from + u64::from(count))
                                    .filter_map(|h| c.hash_at(h))
                                    .map(WireHash)
                                    .collect();
                                e.on_hashes(peer, request_id, from, hashes, now, me);
                            }
                            NodeMsg::GetBlocks {
                                request_id,
                                from,
                                count,
                            } => {
                                let blocks = (from..from + u64::from(count))
                                    .filter_map(|h| c.0.get(h as usize).cloned())
                                    .collect();
                                e.on_blocks(peer, request_id, blocks, now, me);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    fn block_requests_to(&self, peer: IpAddr) -> usize {
        self.sent
            .iter()
            .filter(|(p, m)| *p == peer && matches!(m, NodeMsg::GetBlocks { .. }))
            .count()
    }
}

/// The last action must be a request (`GetHashes` or `GetBlocks`, named by `kind`): returns
/// its id, first height and count.
fn next_request(e: &mut SyncEngine, kind: &str) -> (u64, u64, u32) {
    match e.take_actions().pop() {
        Some(Action::Send {
            msg:
                NodeMsg::GetHashes {
                    request_id,
                    from,
                    count,
                },
            ..
        }) if kind == "GetHashes" => (request_id, from, count),
        Some(Action::Send {
            msg:
                NodeMsg::GetBlocks {
                    request_id,
                    from,
                    count,
                },
            ..
        }) if kind == "GetBlocks" => (request_id, from, count),
        other => panic!("expected {kind}, got {other:?}"),
    }
}

/// Takes the engine's `GetHashes` to ip(2) and answers it honestly from `remote`.
fn answer_hashes(e: &mut SyncEngine, remote: &MemChain, now: Instant, me: &mut MemChain) {
    let (id, from, count) = next_request(e, "GetHashes");
    let hashes = (from..from + u64::from(count))
        .filter_map(|h| remote.hash_at(h))
        .map(WireHash)
        .collect();
    e.on_hashes(ip(2), id, from, hashes, now, me);
}

#[test]
fn a_fresh_node_syncs_from_peers_ahead_spreading_requests() {
    let now = Instant::now();
    let mut remote = MemChain::new();
    remote.grow(95, 1);
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.add(&mut e, &mut me, ip(2), remote.clone(), now);
    net.add(&mut e, &mut me, ip(3), remote.clone(), now);
    net.run(&mut e, &mut me, now);
    assert_eq!(me.tip_hash(), remote.tip_hash());
    assert!(net.block_requests_to(ip(2)) > 0 && net.block_requests_to(ip(3)) > 0);
    assert!(!e.is_syncing());
    assert_eq!(e.stats().blocks_synced, 95);
    assert!(net.disconnected.is_empty());
}

#[test]
fn in_flight_requests_respect_the_limits() {
    let now = Instant::now();
    let mut remote = MemChain::new();
    remote.grow(500, 1);
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    for n in 2..6 {
        net.silent.insert(ip(n));
        net.add(&mut e, &mut me, ip(n), remote.clone(), now);
    }
    // The locate request is unanswered: only it is in flight.
    net.run(&mut e, &mut me, now);
    assert_eq!(e.in_flight(), 1);
    // Answer it by hand, then nothing answers blocks: the limits hold.
    let (peer, id, from, count) = match net.sent[0].clone() {
        (
            p,
            NodeMsg::GetHashes {
                request_id,
                from,
                count,
            },
        ) => (p, request_id, from, count),
        other => panic!("{other:?}"),
    };
    let hashes = (from..from + u64::from(count))
        .filter_map(|h| remote.hash_at(h))
        .map(WireHash)
        .collect();
    e.on_hashes(peer, id, from, hashes, now, &mut me);
    net.run(&mut e, &mut me, now);
    assert_eq!(e.blocks_in_flight(), 4);
    for n in 2..6 {
        assert!(net.block_requests_to(ip(n)) <= 2);
    }
}

#[test]
fn a_stalled_request_goes_to_another_peer_and_the_staller_cools_down() {
    let now = Instant::now();
    let mut remote = MemChain::new();
    remote.grow(50, 1);
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.silent.insert(ip(2)); // lowest IP: picked as source first
    net.add(&mut e, &mut me, ip(2), remote.clone(), now);
    net.add(&mut e, &mut me, ip(3), remote.clone(), now);
    net.add(&mut e, &mut me, ip(4), remote.clone(), now);
    net.run(&mut e, &mut me, now);
    assert_eq!(me.height(), 0, "the source never answered");
    let later = now + Duration::from_millis(1_001);
    e.tick(later, &mut me);
    net.run(&mut e, &mut me, later);
    assert_eq!(me.tip_hash(), remote.tip_hash());
    assert_eq!(e.stats().stalls, 1);
    assert!(net.disconnected.is_empty(), "a stall is not misbehaviour");
    // A late answer to the expired request is ignored, not punished.
    let id = match net.sent[0].1 {
        NodeMsg::GetHashes { request_id, .. } => request_id,
        _ => unreachable!(),
    };
    e.on_hashes(ip(2), id, 1, vec![], later, &mut me);
    assert!(e
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Disconnect { .. })));
}

#[test]
fn unrequested_and_malformed_answers_disconnect() {
    let now = Instant::now();
    let mut remote = MemChain::new();
    remote.grow(30, 1);
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.silent.insert(ip(2));
    net.add(&mut e, &mut me, ip(2), remote.clone(), now);
    net.run(&mut e, &mut me, now);
    // Unrequested blocks: tolerated up to the allowance, then a disconnect.
    let allowance = cfg().unrequested_allowance;
    for id in 0..allowance {
        e.on_blocks(
            ip(2),
            900 + u64::from(id),
            remote.0[1..3].to_vec(),
            now,
            &mut me,
        );
        assert!(e
            .take_actions()
            .iter()
            .all(|a| !matches!(a, Action::Disconnect { .. })));
    }
    e.on_blocks(ip(2), 999, remote.0[1..3].to_vec(), now, &mut me);
    assert!(matches!(
        &e.take_actions()[..],
        [Action::Disconnect { peer, fault: Fault::Unrequested, .. }] if *peer == ip(2)
    ));
    assert_eq!(me.height(), 0);
}

/// Feeds the engine a corrupted answer from the source and checks it is refused.
fn corrupted_answer_is_refused(corrupt: impl Fn(&mut Vec<Block>)) {
    let now = Instant::now();
    let mut remote = MemChain::new();
    remote.grow(30, 1);
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(
        SyncConfig {
            max_in_flight: 1,
            ..cfg()
        },
        rule(),
    );
    let mut net = Net::new();
    net.silent.insert(ip(2));
    net.add(&mut e, &mut me, ip(2), remote.clone(), now);
    answer_hashes(&mut e, &remote, now, &mut me);
    let (id, from, count) = next_request(&mut e, "GetBlocks");
    let mut blocks: Vec<Block> =
        remote.0[from as usize..(from + u64::from(count)) as usize].to_vec();
    corrupt(&mut blocks);
    e.on_blocks(ip(2), id, blocks, now, &mut me);
    let actions = e.take_actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Disconnect { peer, .. } if *peer == ip(2))),
        "{actions:?}"
    );
    assert_eq!(me.height(), 0, "nothing of a bad answer is stored");
    assert_eq!(e.stats().misbehaving, 1);
}

#[test]
fn a_block_with_a_bad_payload_disconnects() {
    corrupted_answer_is_refused(|b| b[3].payload[0] ^= 0xff);
}

#[test]
fn a_block_with_a_wrong_prev_disconnects() {
    corrupted_answer_is_refused(|b| b[4].prev = [7; 32]);
}

#[test]
fn a_wrong_height_disconnects() {
    corrupted_answer_is_refused(|b| b[0].height += 1);
}

#[test]
fn a_bad_last_block_disconnects() {
    corrupted_answer_is_refused(|b| b.last_mut().unwrap().payload.push(1));
}

#[test]
fn too_many_blocks_disconnect() {
    corrupted_answer_is_refused(|b| {
        let extra = b.last().unwrap().clone();
        b.push(extra)
    });
}

#[test]
fn a_longer_fork_within_the_reorg_depth_wins() {
    let now = Instant::now();
    let mut base = MemChain::new();
    base.grow(10, 0);
    let mut me = base.clone();
    me.grow(5, 1);
    let mut other = base.clone();
    other.grow(8, 2);
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.add(&mut e, &mut me, ip(2), other.clone(), now);
    net.run(&mut e, &mut me, now);
    assert_eq!(me.tip_hash(), other.tip_hash());
    assert_eq!(me.height(), 18);
    assert_eq!(e.stats().reorgs, 1);
}

#[test]
fn at_equal_height_the_tip_seen_first_stays_whatever_its_hash() {
    let now = Instant::now();
    let mut base = MemChain::new();
    base.grow(3, 0);
    let (mut a, mut b) = (base.clone(), base.clone());
    a.grow(4, 1);
    b.grow(4, 2);
    let (low, high) = if a.tip_hash() < b.tip_hash() {
        (a, b)
    } else {
        (b, a)
    };
    // The node on the higher hash keeps it: a peer cannot grind a lower hash to win.
    let mut me = high.clone();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.add(&mut e, &mut me, ip(2), low.clone(), now);
    net.run(&mut e, &mut me, now);
    assert_eq!(me.tip_hash(), high.tip_hash());
    assert!(net.sent.is_empty(), "nothing is even asked: {:?}", net.sent);
    assert!(!e.knows_better_chain(me.height(), me.tip_hash()));
    // Nor does the node on the lower hash move.
    let mut me = low.clone();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.add(&mut e, &mut me, ip(2), high.clone(), now);
    net.run(&mut e, &mut me, now);
    assert_eq!(me.tip_hash(), low.tip_hash());
    assert!(net.sent.is_empty());
}

#[test]
fn a_fork_deeper_than_the_limit_is_ignored() {
    let now = Instant::now();
    let mut me = MemChain::new();
    me.grow(30, 1);
    let mut other = MemChain::new();
    other.grow(40, 2);
    let mut e = SyncEngine::new(cfg(), rule()); // max_reorg_depth 20
    let mut net = Net::new();
    net.add(&mut e, &mut me, ip(2), other.clone(), now);
    net.run(&mut e, &mut me, now);
    assert_eq!(me.0[30].payload[0], 1, "our chain is kept");
    assert!(!e.is_syncing());
    assert!(net.disconnected.is_empty());
    // Not retried until the peer announces another tip.
    let n = net.sent.len();
    e.tick(now + Duration::from_secs(5), &mut me);
    net.run(&mut e, &mut me, now);
    assert_eq!(net.sent.len(), n);
}

#[test]
fn a_peer_on_another_branch_is_left_out_not_punished() {
    let now = Instant::now();
    let mut base = MemChain::new();
    base.grow(5, 0);
    let mut good = base.clone();
    good.grow(60, 1);
    let mut other = base.clone();
    other.grow(60, 2);
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    // Same height; "other" claims good's tip (so it is picked for bodies) but serves its branch.
    net.add(&mut e, &mut me, ip(2), good.clone(), now);
    net.chains.insert(ip(3), other.clone());
    e.peer_connected(ip(3), 65, now, &mut me);
    e.on_announce(ip(3), 65, good.tip_hash(), now, &mut me);
    net.run(&mut e, &mut me, now);
    assert_eq!(me.tip_hash(), good.tip_hash());
    assert!(net.block_requests_to(ip(3)) > 0, "it was asked");
    assert!(net.disconnected.is_empty());
}

proptest! {
    #[test]
    fn better_is_a_strict_order(h1 in 0u64..5, h2 in 0u64..5, t1 in any::<[u8; 32]>(), t2 in any::<[u8; 32]>()) {
        let a = is_better(h1, Some(t1), h2, t2);
        let b = is_better(h2, Some(t2), h1, t1);
        prop_assert!(!(a && b));
        prop_assert_eq!(a || b, h1 != h2, "only height decides");
    }

    #[test]
    fn any_chain_pair_converges_to_the_better(common in 0u64..15, a in 0u64..15, b in 0u64..15) {
        let now = Instant::now();
        let mut base = MemChain::new();
        base.grow(common, 0);
        let (mut ca, mut cb) = (base.clone(), base.clone());
        ca.grow(a, 1);
        cb.grow(b, 2);
        let mut me = ca.clone();
        let mut e = SyncEngine::new(cfg(), rule());
        let mut net = Net::new();
        net.add(&mut e, &mut me, ip(2), cb.clone(), now);
        net.run(&mut e, &mut me, now);
        let winner = if cb.height() > ca.height() { &cb } else { &ca };
        prop_assert_eq!(me.tip_hash(), winner.tip_hash());
        prop_assert!(net.disconnected.is_empty());
    }
}

#[test]
fn news_of_the_current_connection_keeps_its_requests() {
    let now = Instant::now();
    let mut remote = MemChain::new();
    remote.grow(30, 1);
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(cfg(), rule());
    // First message (an announce) before the Connected event.
    e.on_announce(ip(2), 30, remote.tip_hash(), now, &mut me);
    let (id, from, count) = next_request(&mut e, "GetHashes");
    e.peer_height_hint(ip(2), 30, now, &mut me);
    let hashes = (from..from + u64::from(count))
        .filter_map(|h| remote.hash_at(h))
        .map(WireHash)
        .collect();
    e.on_hashes(ip(2), id, from, hashes, now, &mut me);
    let actions = e.take_actions();
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::Disconnect { .. })),
        "{actions:?}"
    );
    // A replacing connection: the old requests are forgotten without punishing late answers.
    let blocks_id = actions
        .iter()
        .find_map(|a| match a {
            Action::Send {
                msg: NodeMsg::GetBlocks { request_id, .. },
                ..
            } => Some(*request_id),
            _ => None,
        })
        .unwrap();
    e.peer_connected(ip(2), 30, now, &mut me);
    e.take_actions();
    e.on_blocks(ip(2), blocks_id, remote.0[1..3].to_vec(), now, &mut me);
    assert!(e
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Disconnect { .. })));
}

#[test]
fn a_longer_chain_not_signed_by_a_producer_is_refused_and_its_source_punished() {
    let now = Instant::now();
    let stranger = ProducerKey::from_seed([7; 32]);
    let mut me = MemChain::new();
    me.grow(5, 1);
    let mut forged = me.clone();
    forged.grow_signed(30, 2, &stranger);
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.add(&mut e, &mut me, ip(2), forged.clone(), now);
    let mut faults = Vec::new();
    loop {
        let actions = e.take_actions();
        if actions.is_empty() {
            break;
        }
        for a in actions {
            match a {
                Action::Disconnect { peer, fault, why } => faults.push((peer, fault, why)),
                Action::Send { peer, msg } => {
                    let c = &forged;
                    match msg {
                        NodeMsg::GetHashes {
                            request_id,
                            from,
                            count,
                        } => {
                            let hashes = (from..from + u64::from(count))
                                .filter_map(|h| c.hash_at(h))
                                .map(WireHash)
                                .collect();
                            e.on_hashes(peer, request_id, from, hashes, now, &mut me);
                        }
                        NodeMsg::GetBlocks {
                            request_id,
                            from,
                            count,
                        } => {
                            let blocks = (from..from + u64::from(count))
                                .filter_map(|h| c.0.get(h as usize).cloned())
                                .collect();
                            e.on_blocks(peer, request_id, blocks, now, &mut me);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    assert_eq!(me.height(), 5, "our chain is kept");
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!((faults[0].0, faults[0].1), (ip(2), Fault::InvalidBlock));
    assert!(faults[0].2.contains("not a producer"), "{}", faults[0].2);
}

#[test]
fn a_block_from_the_future_is_invalid() {
    let now = Instant::now();
    let mut remote = MemChain::new();
    remote.grow(3, 1);
    let last = remote.0.last().unwrap().clone();
    remote
        .0
        .push(Block::signed(4, last.hash(), u64::MAX / 2, vec![1], &key()));
    let mut me = MemChain::new();
    let mut e = SyncEngine::new(cfg(), rule()).with_clock(|| 1_000);
    let mut net = Net::new();
    net.add(&mut e, &mut me, ip(2), remote, now);
    net.run(&mut e, &mut me, now);
    assert_eq!(net.disconnected, vec![ip(2)]);
    assert!(me.height() < 4);
}

#[test]
fn a_peer_that_keeps_claiming_a_chain_it_lacks_is_useless() {
    let now = Instant::now();
    let mut me = MemChain::new();
    me.grow(10, 1);
    let liar = me.clone();
    let mut e = SyncEngine::new(cfg(), rule());
    let mut net = Net::new();
    net.chains.insert(ip(2), liar);
    let allowance = cfg().useless_allowance;
    for round in 0..=allowance {
        // It claims height 50 with a new tip each time, and has only our 10 blocks. Each round
        // comes after the no-progress cooldown of the one before (at most 64 s).
        let at = now + Duration::from_secs(100 * u64::from(round));
        e.on_announce(ip(2), 50, [round as u8 + 1; 32], at, &mut me);
        net.run(&mut e, &mut me, at);
    }
    assert_eq!(net.disconnected, vec![ip(2)]);
}
