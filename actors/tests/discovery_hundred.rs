//! Issue 11's acceptance test at the actors level: 100 nodes in one process on 127.0.1.101 to
//! 127.0.1.200 (two shared session threads), discovery on with short timers, each node told one
//! of 3 seeds (the seeds each told the next seed). Within 30 s of the first dial every node has
//! at least its target outbound peers and has learned at least 50 addresses, the graph of
//! connections is connected, and a block (a 1 KiB application message, relayed once by every
//! node to its other peers, deduplicated by id) produced at one node reaches all 100.
//!
//! The waits poll the nodes' own state (peer lists, discovery stats, arrivals) against one
//! deadline; nothing sleeps in the hope that something happened.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::test_config;
use futures_util::future::join_all;
use peerlink_actors::discovery::DiscoveryConfig;
use peerlink_actors::{
    Direction, Inbound, Network, NetworkConfig, PeerEvent, PeerHandle, SessionThreads, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const NODES: usize = 100;
const SEEDS: usize = 3;
/// The bound, from the first dial to the last node holding the block.
const LIMIT: Duration = Duration::from_secs(30);
const MIN_KNOWN: usize = 50;
const BLOCK_BYTES: usize = 1024;

/// The "block": an id and a payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Block {
    id: u64,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// Floods blocks: the first time it sees an id it reports the arrival and sends the block to
/// every peer but the one it came from.
struct Relay {
    index: usize,
    peers: BTreeMap<IpAddr, PeerHandle>,
    seen: HashSet<u64>,
    arrived: mpsc::UnboundedSender<(usize, u64)>,
}

impl Relay {
    fn relay(&mut self, block: &Block, from: Option<IpAddr>) {
        if !self.seen.insert(block.id) {
            return;
        }
        let _ = self.arrived.send((self.index, block.id));
        for (ip, h) in &self.peers {
            if Some(*ip) != from {
                let _ = h.send(block);
            }
        }
    }
}

impl Actor for Relay {
    type Context = Context<Self>;
}

impl Handler<Inbound<Block>> for Relay {
    type Result = ();
    fn handle(&mut self, inbound: Inbound<Block>, _: &mut Context<Self>) {
        let from = inbound.from.ip();
        for block in inbound.msgs() {
            self.relay(&block, Some(from));
        }
    }
}

impl Handler<PeerEvent> for Relay {
    type Result = ();
    fn handle(&mut self, event: PeerEvent, _: &mut Context<Self>) {
        match event {
            PeerEvent::Connected { info, handle } => {
                self.peers.insert(info.ip, handle);
            }
            PeerEvent::Disconnected(r) => {
                if self
                    .peers
                    .get(&r.ip)
                    .is_some_and(|h| h.conn_id() == r.conn_id)
                {
                    self.peers.remove(&r.ip);
                }
            }
        }
    }
}

/// A block to flood from this node.
#[derive(Message)]
#[rtype(result = "()")]
struct Produce(Block);

impl Handler<Produce> for Relay {
    type Result = ();
    fn handle(&mut self, msg: Produce, _: &mut Context<Self>) {
        self.relay(&msg.0, None);
    }
}

fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 101 + i as u8))
}

fn config(i: usize) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::new(node_ip(i), 0),
        // Discovery is under test, not the secure channel (tested on its own): the plaintext
        // transport spares some 1,600 Noise handshakes' key agreements, which on a loaded
        // machine would only measure its load.
        transport: Transport::Plaintext,
        // Generous for a loaded machine: 100 nodes share two session threads, and a timeout
        // would only cost a redial.
        handshake_timeout_ms: 10_000,
        ping_interval_ms: 5_000,
        ping_timeout_ms: 20_000,
        connect_timeout_ms: 5_000,
        backoff_max_ms: 2_000,
        ..test_config(0)
    }
}

/// Whether the undirected graph of `edges` over `n` nodes is connected.
fn connected(n: usize, edges: &[(usize, usize)]) -> bool {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(x) = stack.pop() {
        for &y in &adj[x] {
            if !seen[y] {
                seen[y] = true;
                stack.push(y);
            }
        }
    }
    seen.iter().all(|s| *s)
}

/// One look at every node: outbound counts, known addresses, edges.
struct Snapshot {
    outbound: Vec<usize>,
    degree: Vec<usize>,
    known: Vec<usize>,
    edges: Vec<(usize, usize)>,
}

async fn snapshot(nets: &[Network<Block>], index: &BTreeMap<IpAddr, usize>) -> Snapshot {
    let peers = join_all(nets.iter().map(|n| n.peers())).await;
    let stats = join_all(nets.iter().map(|n| n.discovery_stats())).await;
    let mut edges = Vec::new();
    for (i, ps) in peers.iter().enumerate() {
        for p in ps {
            if let Some(&j) = index.get(&p.ip) {
                edges.push((i, j));
            }
        }
    }
    Snapshot {
        outbound: peers
            .iter()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p.conn.direction == Direction::Outbound)
                    .count()
            })
            .collect(),
        degree: peers.iter().map(Vec::len).collect(),
        known: stats
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.known))
            .collect(),
        edges,
    }
}

/// Disconnect counts and the recent reasons over all nodes (for a failure message).
async fn disconnects(nets: &[Network<Block>]) -> String {
    let mut total = 0;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for net in nets {
        if let Ok(stats) = net.stats().await {
            total += stats.disconnects;
            for d in stats.recent_disconnects {
                *reasons
                    .entry(format!(
                        "{}{}",
                        d.reason,
                        if d.by_peer { " by peer" } else { "" }
                    ))
                    .or_default() += 1;
            }
        }
    }
    format!("{total} disconnects, recent reasons {reasons:?}")
}

#[actix::test]
async fn hundred_nodes_told_one_of_three_seeds_converge_and_flood_a_block() {
    let threads = SessionThreads::new(2);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let mut nets = Vec::with_capacity(NODES);
    let mut relays = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let relay = Relay {
            index: i,
            peers: BTreeMap::new(),
            seen: HashSet::new(),
            arrived: arrived_tx.clone(),
        }
        .start();
        let net = Network::<Block>::builder(config(i))
            .session_threads(&threads)
            .discovery_config(DiscoveryConfig::fast())
            .start(relay.clone().recipient())
            .await
            .expect("network starts");
        net.subscribe(relay.clone().recipient());
        nets.push(net);
        relays.push(relay);
    }
    let target = nets[0].config().target_outbound;
    let index: BTreeMap<IpAddr, usize> = (0..NODES).map(|i| (node_ip(i), i)).collect();

    // Each seed is told the next seed; every other node one of the three.
    let started = Instant::now();
    let deadline = started + LIMIT;
    for (i, net) in nets.iter().enumerate() {
        let seed = if i < SEEDS {
            (i + 1) % SEEDS
        } else {
            i % SEEDS
        };
        net.connect(nets[seed].local_addr());
    }

    let converged = loop {
        let s = snapshot(&nets, &index).await;
        let short: Vec<usize> = (0..NODES)
            .filter(|&i| s.outbound[i] < target || s.known[i] < MIN_KNOWN)
            .collect();
        if short.is_empty() && connected(NODES, &s.edges) {
            break s;
        }
        if Instant::now() >= deadline {
            panic!(
                "not converged within {LIMIT:?}: nodes short of {target} outbound or \
                 {MIN_KNOWN} addresses: {:?}; outbound {:?}; known {:?}; connected {}; {}",
                short,
                s.outbound,
                s.known,
                connected(NODES, &s.edges),
                disconnects(&nets).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let converged_after = started.elapsed();

    // A block produced at a node that is not a seed reaches every node.
    let produced = Instant::now();
    relays[57].do_send(Produce(Block {
        id: 1,
        payload: vec![0xb1; BLOCK_BYTES],
    }));
    let mut holders = [false; NODES];
    while !holders.iter().all(|h| *h) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, arrived.recv()).await {
            Ok(Some((i, 1))) => holders[i] = true,
            Ok(Some(_)) => {}
            Ok(None) => panic!("arrival channel closed"),
            Err(_) => panic!(
                "the block did not reach every node within {LIMIT:?}: missing {:?}",
                (0..NODES).filter(|&i| !holders[i]).collect::<Vec<_>>()
            ),
        }
    }
    let flooded_after = produced.elapsed();

    let mut degree = converged.degree.clone();
    degree.sort_unstable();
    let mut known = converged.known.clone();
    known.sort_unstable();
    println!(
        "100 nodes: converged after {:.2} s (outbound >= {target}, >= {MIN_KNOWN} addresses, \
         connected); degree min/median/max {}/{}/{}; known min/median {}/{}; block reached all \
         in {:.1} ms",
        converged_after.as_secs_f64(),
        degree[0],
        degree[NODES / 2],
        degree[NODES - 1],
        known[0],
        known[NODES / 2],
        flooded_after.as_secs_f64() * 1000.0
    );
    join_all(nets.iter().map(|n| n.shutdown())).await;
}
