//! A seeded discrete-event simulator over the discovery policies ([`AddrBook`], [`AddrGossip`],
//! [`OutboundSelector`], admission by inbound slots and [`select_to_evict`]): no sockets, virtual
//! time in milliseconds, a latency model (nodes at random points of a unit square, 5 ms plus
//! 100 ms per unit of distance). It answers what a real deployment cannot cheaply: does a
//! thousand-node network in which every node knows one of a few seeds converge, what degrees
//! do nodes end with, what share of honest nodes an attacker holding K addresses in M network
//! groups eclipses (every outbound peer the attacker's), and how fast a block floods the final
//! graph. The same seed gives the same report: the event queue is ordered by (time, sequence),
//! every random draw comes from one seeded generator, and every map iterates in key order.
//!
//! A node whose inbound slots are full and that finds nobody to evict still answers the
//! newcomer once with addresses before refusing it (what lets three seeds bootstrap a thousand
//! nodes). The attacker: from its first address it connects inbound to every honest node at start and
//! pushes its addresses (as many as the token bucket lets through), answers every `GetAddrs`
//! with its own addresses only, accepts every dial, has a 1 ms ping and never relays blocks.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::addr_book::{AddrBook, AddrBookConfig, KnownAddr};
use super::gossip::{AddrGossip, GossipConfig};
use super::selection::{DialKind, OutboundSelector, SelectionConfig};
use crate::eviction::{select_to_evict, EvictionCandidate, EvictionConfig};
use crate::ConnId;

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Honest nodes.
    pub nodes: usize,
    /// Of them, how many serve as seeds (each node is told one).
    pub seeds: usize,
    /// Outbound peers each node keeps.
    pub target_outbound: usize,
    /// Inbound slots per node; a newcomer past them evicts per the policy or is refused.
    pub max_inbound: usize,
    /// Attacker addresses (0: no attacker).
    pub attacker_addrs: usize,
    /// Network groups the attacker's addresses span.
    pub attacker_groups: usize,
    /// Virtual time simulated.
    pub duration_ms: u64,
    /// Interval of each node's dial tick.
    pub tick_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 1_000,
            seeds: 3,
            target_outbound: 8,
            max_inbound: 40,
            attacker_addrs: 0,
            attacker_groups: 0,
            duration_ms: 300_000,
            tick_ms: 1_000,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// Virtual ms until every honest node had its target outbound peers and the honest graph
    /// was connected (None: not within the duration).
    pub converged_ms: Option<u64>,
    /// Honest nodes.
    pub honest: usize,
    /// Fewest outbound peers of any honest node at the end.
    pub outbound_min: usize,
    /// Total degree (inbound + outbound) at the end: min, median, p99, max.
    pub degree: [usize; 4],
    /// Addresses known per honest node at the end: min and median.
    pub book: [usize; 2],
    /// Honest nodes whose outbound peers are all the attacker's.
    pub eclipsed: usize,
    /// `eclipsed / honest`.
    pub eclipse_share: f64,
    /// Share of all honest outbound connections that go to the attacker.
    pub attacker_outbound_share: f64,
    /// Block flood from node 0 over the final honest graph: ms to reach the median node, the
    /// 99th percentile node and the last node.
    pub propagation_ms: [u64; 3],
    /// Honest nodes the block reached.
    pub reached: usize,
    /// Inbound evictions performed.
    pub evictions: u64,
    /// Events processed.
    pub events: u64,
}

/// Virtual wall clock origin (unix ms), so that last-seen times look real.
const EPOCH_MS: u64 = 1_800_000_000_000;
const PORT: u16 = 8333;
const ATTACKER_PING_MS: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Honest(usize),
    Attacker(SocketAddr),
}

#[derive(Debug, Clone)]
enum Msg {
    GetAddrs,
    Addrs(Vec<KnownAddr>),
}

#[derive(Debug, Clone)]
enum Event {
    Tick(usize),
    DialDone {
        from: usize,
        addr: SocketAddr,
        kind: DialKind,
    },
    Deliver {
        to: usize,
        conn: ConnId,
        msg: Msg,
    },
    Closed {
        node: usize,
        conn: ConnId,
    },
    Refused {
        to: usize,
        by: usize,
        list: Vec<KnownAddr>,
    },
    AttackerArrives(usize),
    Check,
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug, Clone, Copy)]
struct Link {
    peer: Peer,
    /// The peer's side of the connection (honest peers only).
    remote: Option<ConnId>,
    outbound: bool,
    since: u64,
    ping: u64,
}

struct Node {
    addr: SocketAddr,
    pos: (f64, f64),
    book: AddrBook,
    gossip: AddrGossip,
    selector: OutboundSelector,
    links: BTreeMap<ConnId, Link>,
    dialing: BTreeSet<SocketAddr>,
    key: [u8; 32],
    /// The seed this node was told (config `seeds`): dialled when the book offers nothing.
    seed: Option<SocketAddr>,
    next_seed_ms: u64,
}

impl Node {
    fn outbound(&self) -> impl Iterator<Item = &Link> {
        self.links.values().filter(|l| l.outbound)
    }
}

struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<Node>,
    by_addr: BTreeMap<IpAddr, usize>,
    attacker: Vec<SocketAddr>,
    attacker_set: BTreeSet<IpAddr>,
    next_conn: u64,
    converged: Option<u64>,
    evictions: u64,
    events: u64,
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> SimReport {
    let mut sim = Sim::new(*cfg);
    sim.run();
    sim.report()
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut by_addr = BTreeMap::new();
        let mut nodes = Vec::with_capacity(cfg.nodes);
        let book_cfg = AddrBookConfig::default();
        let sel_cfg = SelectionConfig {
            target_outbound: cfg.target_outbound,
            ..SelectionConfig::default()
        };
        while nodes.len() < cfg.nodes {
            // Public IPv4 space 11.0.0.0 - 99.255.255.255.
            let ip = IpAddr::V4(Ipv4Addr::from(rng.random_range(11u32 << 24..100u32 << 24)));
            if by_addr.contains_key(&ip) {
                continue;
            }
            by_addr.insert(ip, nodes.len());
            let mut key = [0u8; 32];
            rng.fill(&mut key);
            let pos = (rng.random::<f64>(), rng.random::<f64>());
            nodes.push(Node {
                addr: SocketAddr::new(ip, PORT),
                pos,
                book: AddrBook::new(book_cfg, key),
                gossip: AddrGossip::new(GossipConfig::default()),
                selector: OutboundSelector::new(sel_cfg, Vec::new()),
                links: BTreeMap::new(),
                dialing: BTreeSet::new(),
                key,
                seed: None,
                next_seed_ms: 0,
            });
        }
        let mut attacker = Vec::new();
        let groups = cfg.attacker_groups.max(1);
        for k in 0..cfg.attacker_addrs {
            let g = (k % groups) as u32;
            let h = (k / groups) as u32;
            // 200.0.0.0/8 and up: never an honest address.
            let ip = Ipv4Addr::from((200u32 << 24) + (g << 16) + 256 + h);
            attacker.push(SocketAddr::new(IpAddr::V4(ip), PORT));
        }
        let attacker_set = attacker.iter().map(|a| a.ip()).collect();
        let mut sim = Sim {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            by_addr,
            attacker,
            attacker_set,
            next_conn: 1,
            converged: None,
            evictions: 0,
            events: 0,
        };
        // Each node is told one seed.
        let seeds = cfg.seeds.clamp(1, cfg.nodes.max(1));
        for i in 0..sim.nodes.len() {
            // Seeds know the next seed (as an operator would set them up); others one seed.
            let s = if i < seeds {
                (i + 1) % seeds
            } else {
                sim.rng.random_range(0..seeds)
            };
            if s != i {
                let a = sim.nodes[s].addr;
                sim.nodes[i].book.add(a, a.ip(), EPOCH_MS / 1000, EPOCH_MS);
                sim.nodes[i].seed = Some(a);
            }
            let start = sim.rng.random_range(0..cfg.tick_ms.max(1));
            sim.push(start, Event::Tick(i));
            if !sim.attacker.is_empty() {
                let at = sim.rng.random_range(0..cfg.tick_ms.max(1));
                sim.push(at, Event::AttackerArrives(i));
            }
        }
        sim.push(cfg.tick_ms, Event::Check);
        sim
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    fn wall(&self) -> u64 {
        EPOCH_MS + self.now
    }

    fn latency(&self, a: usize, b: Peer) -> u64 {
        match b {
            Peer::Attacker(_) => 10,
            Peer::Honest(b) => {
                let (p, q) = (self.nodes[a].pos, self.nodes[b].pos);
                let d = ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
                5 + (100.0 * d) as u64
            }
        }
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn run(&mut self) {
        while let Some(q) = self.queue.pop() {
            if q.at > self.cfg.duration_ms {
                break;
            }
            self.now = q.at;
            self.events += 1;
            match q.event {
                Event::Tick(i) => self.tick(i),
                Event::DialDone { from, addr, kind } => self.dial_done(from, addr, kind),
                Event::Deliver { to, conn, msg } => self.deliver(to, conn, msg),
                Event::Closed { node, conn } => {
                    self.drop_link(node, conn);
                }
                Event::Refused { to, by, list } => {
                    let now = self.wall();
                    let src = self.nodes[by].addr.ip();
                    let own = self.nodes[to].addr;
                    for a in list.iter().filter(|a| a.addr != own) {
                        self.nodes[to].book.add(a.addr, src, a.last_seen, now);
                    }
                }
                Event::AttackerArrives(i) => self.attacker_arrives(i),
                Event::Check => {
                    if self.converged.is_none() && self.is_converged() {
                        self.converged = Some(self.now);
                    }
                    self.push(self.now + self.cfg.tick_ms, Event::Check);
                }
            }
        }
    }

    fn tick(&mut self, i: usize) {
        let now = self.wall();
        self.push(self.now + self.cfg.tick_ms, Event::Tick(i));
        // Self-advertisement.
        if self.nodes[i].gossip.advertise_due(now) {
            let me = KnownAddr {
                addr: self.nodes[i].addr,
                last_seen: now / 1000,
            };
            let conns: Vec<(ConnId, Link)> =
                self.nodes[i].links.iter().map(|(c, l)| (*c, *l)).collect();
            for (_, l) in conns {
                self.send(i, l, Msg::Addrs(vec![me]));
            }
        }
        if self.now % 60_000 < self.cfg.tick_ms {
            self.nodes[i].book.sweep(now);
        }
        // Let go of a repeated-group outbound peer once the book offers an unused group.
        {
            let node = &self.nodes[i];
            let mut outs: Vec<(u64, ConnId, SocketAddr)> = node
                .links
                .iter()
                .filter(|(_, l)| l.outbound)
                .map(|(c, l)| (l.since, *c, self.peer_addr(l.peer)))
                .collect();
            outs.sort();
            let list: Vec<SocketAddr> = outs.iter().map(|o| o.2).collect();
            let connected: BTreeSet<IpAddr> = node
                .links
                .values()
                .map(|l| self.peer_addr(l.peer).ip())
                .collect();
            let own = node.addr.ip();
            let busy = |a: SocketAddr| {
                a.ip() == own || connected.contains(&a.ip()) || node.dialing.contains(&a)
            };
            if node.dialing.is_empty() {
                if let Some(drop) =
                    node.selector
                        .group_surplus(&node.book, &list, busy, now, &mut self.rng)
                {
                    if let Some(o) = outs.iter().find(|o| o.2 == drop) {
                        let conn = o.1;
                        self.close(i, conn);
                    }
                }
            }
        }
        loop {
            let node = &self.nodes[i];
            let mut outbound: Vec<SocketAddr> =
                node.outbound().map(|l| self.peer_addr(l.peer)).collect();
            outbound.extend(node.dialing.iter().copied());
            let connected: BTreeSet<IpAddr> = node
                .links
                .values()
                .map(|l| self.peer_addr(l.peer).ip())
                .collect();
            let own = node.addr.ip();
            let dialing = node.dialing.clone();
            let busy = |a: SocketAddr| {
                a.ip() == own || connected.contains(&a.ip()) || dialing.contains(&a)
            };
            let node = &mut self.nodes[i];
            let full = outbound.len() >= self.cfg.target_outbound;
            let choice = node
                .selector
                .next_dial(&node.book, &outbound, busy, now, &mut self.rng);
            let choice = match (choice, node.seed) {
                (Some(c), _) => c,
                // Bootstrap: the book offers nothing; retry the seed every 5 s.
                (None, Some(seed)) if !full && !busy(seed) && self.now >= node.next_seed_ms => {
                    node.next_seed_ms = self.now + 5_000;
                    super::DialChoice {
                        addr: seed,
                        kind: DialKind::Outbound,
                    }
                }
                (None, _) => break,
            };
            node.book.mark_attempt(choice.addr, now);
            node.dialing.insert(choice.addr);
            let lat = match self.by_addr.get(&choice.addr.ip()) {
                Some(&j) => self.latency(i, Peer::Honest(j)),
                None => self.latency(i, Peer::Attacker(choice.addr)),
            };
            // Connect plus handshake: one and a half round trips.
            self.push(
                self.now + 3 * lat,
                Event::DialDone {
                    from: i,
                    addr: choice.addr,
                    kind: choice.kind,
                },
            );
            if choice.kind == DialKind::Feeler {
                break;
            }
        }
    }

    fn peer_addr(&self, p: Peer) -> SocketAddr {
        match p {
            Peer::Honest(j) => self.nodes[j].addr,
            Peer::Attacker(a) => a,
        }
    }

    fn dial_done(&mut self, from: usize, addr: SocketAddr, kind: DialKind) {
        let now = self.wall();
        self.nodes[from].dialing.remove(&addr);
        let target = if self.attacker_set.contains(&addr.ip()) {
            Some(Peer::Attacker(addr))
        } else {
            self.by_addr.get(&addr.ip()).map(|&j| Peer::Honest(j))
        };
        let Some(target) = target else {
            self.nodes[from].book.mark_failed(addr, now);
            return;
        };
        // One connection per pair (the registry's rule).
        if self.nodes[from].links.values().any(|l| l.peer == target) {
            return;
        }
        let remote = match target {
            Peer::Attacker(_) => None,
            Peer::Honest(j) => {
                if !self.admit(j) {
                    // Full: the handshake completes, the newcomer gets one address answer and
                    // `Disconnect{too many peers}`, so a busy seed still bootstraps it.
                    self.nodes[from].book.mark_failed(addr, now);
                    let node = &self.nodes[j];
                    let list = node.book.sample(
                        &mut self.rng,
                        node.gossip.config().max_per_answer,
                        Some(self.nodes[from].addr.ip()),
                        now,
                    );
                    let at = self.now + self.latency(from, target);
                    self.push(
                        at,
                        Event::Refused {
                            to: from,
                            by: j,
                            list,
                        },
                    );
                    return;
                }
                Some(self.conn_id())
            }
        };
        self.nodes[from].book.mark_good(addr, now);
        if kind == DialKind::Feeler {
            return;
        }
        let local = self.conn_id();
        let ping = match target {
            Peer::Attacker(_) => ATTACKER_PING_MS,
            Peer::Honest(_) => 2 * self.latency(from, target),
        };
        let link = Link {
            peer: target,
            remote,
            outbound: true,
            since: self.now,
            ping,
        };
        self.nodes[from].links.insert(local, link);
        self.nodes[from].gossip.on_connect(local, now);
        if let (Peer::Honest(j), Some(rc)) = (target, remote) {
            let back = Link {
                peer: Peer::Honest(from),
                remote: Some(local),
                outbound: false,
                since: self.now,
                ping,
            };
            self.nodes[j].links.insert(rc, back);
            self.nodes[j].gossip.on_connect(rc, now);
            // The handshake carries the dialer's listen port: the acceptor learns its address.
            let me = self.nodes[from].addr;
            self.nodes[j].book.add(me, me.ip(), now / 1000, now);
            self.send(j, back, Msg::GetAddrs);
        }
        self.send(from, link, Msg::GetAddrs);
        // Self-advertisement on connect: small and fresh, so it is relayed onwards.
        let me = KnownAddr {
            addr: self.nodes[from].addr,
            last_seen: now / 1000,
        };
        self.send(from, link, Msg::Addrs(vec![me]));
    }

    /// Inbound slot for a newcomer at honest node `j`: free, or freed by eviction.
    fn admit(&mut self, j: usize) -> bool {
        let inbound = self.nodes[j].links.values().filter(|l| !l.outbound).count();
        if inbound < self.cfg.max_inbound {
            return true;
        }
        let cands: Vec<EvictionCandidate> = self.nodes[j]
            .links
            .iter()
            .filter(|(_, l)| !l.outbound)
            .map(|(c, l)| EvictionCandidate {
                conn: *c,
                ip: self.peer_addr(l.peer).ip(),
                connected_ms: l.since,
                min_ping_ms: Some(l.ping),
                last_useful_ms: None,
                always_keep: false,
            })
            .collect();
        let d = select_to_evict(
            &cands,
            &self.nodes[j].key,
            &EvictionConfig::default(),
            self.now,
        );
        match d.victim {
            Some(v) => {
                self.evictions += 1;
                self.close(j, v);
                true
            }
            None => false,
        }
    }

    /// Node `i` closes `conn`; the other side learns after the latency.
    fn close(&mut self, i: usize, conn: ConnId) {
        if let Some(l) = self.drop_link(i, conn) {
            if let (Peer::Honest(j), Some(rc)) = (l.peer, l.remote) {
                let lat = self.latency(i, l.peer);
                self.push(self.now + lat, Event::Closed { node: j, conn: rc });
            }
        }
    }

    fn drop_link(&mut self, i: usize, conn: ConnId) -> Option<Link> {
        let l = self.nodes[i].links.remove(&conn)?;
        self.nodes[i].gossip.on_disconnect(conn);
        Some(l)
    }

    fn send(&mut self, from: usize, link: Link, msg: Msg) {
        match link.peer {
            Peer::Honest(j) => {
                if let Some(rc) = link.remote {
                    let lat = self.latency(from, link.peer);
                    self.push(
                        self.now + lat,
                        Event::Deliver {
                            to: j,
                            conn: rc,
                            msg,
                        },
                    );
                }
            }
            Peer::Attacker(_) => {
                if let Msg::GetAddrs = msg {
                    // The attacker answers with its own addresses only.
                    if let Some(conn) = self.nodes[from]
                        .links
                        .iter()
                        .find(|(_, l)| l.peer == link.peer)
                        .map(|(c, _)| *c)
                    {
                        let list = self.attacker_list();
                        self.push(
                            self.now + 2 * self.latency(from, link.peer),
                            Event::Deliver {
                                to: from,
                                conn,
                                msg: Msg::Addrs(list),
                            },
                        );
                    }
                }
            }
        }
    }

    fn attacker_list(&mut self) -> Vec<KnownAddr> {
        let now_s = self.wall() / 1000;
        let mut list: Vec<KnownAddr> = self
            .attacker
            .iter()
            .map(|a| KnownAddr {
                addr: *a,
                last_seen: now_s,
            })
            .collect();
        let n = list.len().min(1000);
        for k in 0..n {
            let j = self.rng.random_range(k..list.len());
            list.swap(k, j);
        }
        list.truncate(n);
        list
    }

    fn attacker_arrives(&mut self, i: usize) {
        let now = self.wall();
        let from = self.attacker[i % self.attacker.len()];
        if self.nodes[i]
            .links
            .values()
            .any(|l| l.peer == Peer::Attacker(from))
            || !self.admit(i)
        {
            return;
        }
        let conn = self.conn_id();
        self.nodes[i].links.insert(
            conn,
            Link {
                peer: Peer::Attacker(from),
                remote: None,
                outbound: false,
                since: self.now,
                ping: ATTACKER_PING_MS,
            },
        );
        self.nodes[i].gossip.on_connect(conn, now);
        let list = self.attacker_list();
        self.push(
            self.now + 10,
            Event::Deliver {
                to: i,
                conn,
                msg: Msg::Addrs(list),
            },
        );
    }

    fn deliver(&mut self, to: usize, conn: ConnId, msg: Msg) {
        let now = self.wall();
        let Some(link) = self.nodes[to].links.get(&conn).copied() else {
            return;
        };
        let from_ip = self.peer_addr(link.peer).ip();
        match msg {
            Msg::GetAddrs => {
                let node = &mut self.nodes[to];
                if let Some(list) =
                    node.gossip
                        .on_get_addrs(conn, from_ip, now, &node.book, &mut self.rng)
                {
                    self.send(to, link, Msg::Addrs(list));
                }
            }
            Msg::Addrs(list) => {
                let node = &mut self.nodes[to];
                let n = node.gossip.on_addrs(conn, list.len(), now);
                let own = node.addr;
                let accepted: Vec<KnownAddr> =
                    list.into_iter().take(n).filter(|a| a.addr != own).collect();
                let small = accepted.len() <= node.gossip.config().relay_max_items;
                // Only news is relayed: each node passes an announcement on at most once.
                let mut news = Vec::new();
                for a in &accepted {
                    if node.book.add(a.addr, from_ip, a.last_seen, now) == super::AddResult::Added
                        && small
                    {
                        news.push(*a);
                    }
                }
                let accepted = news;
                let targets = node
                    .gossip
                    .relay_targets(conn, &accepted, now, &mut self.rng);
                for t in targets {
                    if let Some(l) = self.nodes[to].links.get(&t).copied() {
                        self.send(to, l, Msg::Addrs(accepted.clone()));
                    }
                }
            }
        }
    }

    fn honest_components(&self) -> usize {
        let n = self.nodes.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for (i, node) in self.nodes.iter().enumerate() {
            for l in node.links.values() {
                if let Peer::Honest(j) = l.peer {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        (0..n).filter(|&i| find(&mut parent, i) == i).count()
    }

    fn is_converged(&self) -> bool {
        let want = self
            .cfg
            .target_outbound
            .min(self.nodes.len().saturating_sub(1));
        self.nodes.iter().all(|n| n.outbound().count() >= want) && self.honest_components() == 1
    }

    fn report(&self) -> SimReport {
        let honest = self.nodes.len();
        let mut degrees: Vec<usize> = self.nodes.iter().map(|n| n.links.len()).collect();
        degrees.sort_unstable();
        let mut books: Vec<usize> = self.nodes.iter().map(|n| n.book.len()).collect();
        books.sort_unstable();
        let pick = |v: &[usize], q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let mut eclipsed = 0;
        let (mut out_total, mut out_attacker) = (0usize, 0usize);
        for n in &self.nodes {
            let outs: Vec<&Link> = n.outbound().collect();
            let bad = outs
                .iter()
                .filter(|l| matches!(l.peer, Peer::Attacker(_)))
                .count();
            out_total += outs.len();
            out_attacker += bad;
            if !outs.is_empty() && bad == outs.len() {
                eclipsed += 1;
            }
        }
        // Block flood from node 0: Dijkstra over honest links, 1 ms of validation per hop.
        let mut arrival = vec![u64::MAX; honest];
        if honest > 0 {
            let mut heap = BinaryHeap::new();
            arrival[0] = 0;
            heap.push(std::cmp::Reverse((0u64, 0usize)));
            while let Some(std::cmp::Reverse((t, i))) = heap.pop() {
                if t > arrival[i] {
                    continue;
                }
                for l in self.nodes[i].links.values() {
                    if let Peer::Honest(j) = l.peer {
                        let tj = t + self.latency(i, l.peer) + 1;
                        if tj < arrival[j] {
                            arrival[j] = tj;
                            heap.push(std::cmp::Reverse((tj, j)));
                        }
                    }
                }
            }
        }
        let mut reached: Vec<u64> = arrival.iter().copied().filter(|t| *t != u64::MAX).collect();
        reached.sort_unstable();
        let pt = |q: f64| {
            reached
                .get(((reached.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        SimReport {
            converged_ms: self.converged,
            honest,
            outbound_min: self
                .nodes
                .iter()
                .map(|n| n.outbound().count())
                .min()
                .unwrap_or(0),
            degree: [
                pick(&degrees, 0.0),
                pick(&degrees, 0.5),
                pick(&degrees, 0.99),
                pick(&degrees, 1.0),
            ],
            book: [pick(&books, 0.0), pick(&books, 0.5)],
            eclipsed,
            eclipse_share: if honest == 0 {
                0.0
            } else {
                eclipsed as f64 / honest as f64
            },
            attacker_outbound_share: if out_total == 0 {
                0.0
            } else {
                out_attacker as f64 / out_total as f64
            },
            propagation_ms: [pt(0.5), pt(0.99), pt(1.0)],
            reached: reached.len(),
            evictions: self.evictions,
            events: self.events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 120,
            duration_ms: 60_000,
            ..SimConfig::default()
        }
    }

    #[test]
    fn same_seed_same_report_and_the_network_converges() {
        let a = run(&small(7));
        let b = run(&small(7));
        assert_eq!(a, b);
        assert!(a.converged_ms.is_some(), "{a:?}");
        assert_eq!(a.reached, a.honest);
        assert!(a.outbound_min >= 8, "{a:?}");
        assert!(a.book[0] >= 50, "{a:?}");
        let c = run(&small(8));
        assert_ne!(a, c);
    }

    #[test]
    fn an_attacker_in_few_groups_eclipses_nobody() {
        let r = run(&SimConfig {
            attacker_addrs: 2_000,
            attacker_groups: 4,
            ..small(9)
        });
        assert!(r.converged_ms.is_some(), "{r:?}");
        assert_eq!(r.eclipsed, 0, "{r:?}");
        // At most one outbound per attacker group while honest alternatives exist.
        assert!(r.attacker_outbound_share <= 4.0 / 8.0, "{r:?}");
    }
}
