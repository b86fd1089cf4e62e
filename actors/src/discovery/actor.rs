//! `Discovery`: the thin actor around the discovery policies, on the control plane. It owns the
//! node's [`AddrBook`], [`AddrGossip`] and [`OutboundSelector`]; it learns of connections from
//! the registry's [`PeerEvent`]s (asking every new peer once for addresses, adding inbound peers'
//! listen addresses to the book, moving dialled ones to the tried table), receives the gossip
//! frames the sessions forward, answers them through the peer's [`PeerHandle`], and on every
//! tick (once a second by default, [`DiscoveryConfig`]), while the node has fewer outbound peers
//! and dials in flight than its target, hands the connector as many addresses as it is short
//! of. It advertises the node's own listen address to every peer it dials and to all peers
//! periodically.
//!
//! A dial handed over counts toward the target until its peer connects or until it has had the
//! time a dial can take (connect timeout plus handshake timeout, plus a tick): the connector
//! does not report failures here, and a refused dial must not hold a slot for long.
//!
//! Its dials go to the connector as one-shot dials (`DialOnce`): the connector keeps only the
//! configured `peers` connected, this actor decides everything else. After a restart it dials
//! the anchors (the outbound peers of the previous run) first, then chooses from the book; while
//! the book is short it dials a seed ([`SeedPlan`]), and closes the seed connection once the seed
//! has answered. With its outbound set full it makes a feeler now and then
//! ([`DiscoveryConfig::feeler_interval_ms`]): a one-shot dial to an untried address, closed
//! (`requested`) as soon as its handshake completed, which moves the address to the tried table
//! and never takes an outbound slot (the registry allows one outbound connection beyond the
//! target for it). With an [`AddrStore`](super::AddrStore) it saves the book and the anchors
//! periodically and on [`FlushBook`] (shutdown), through the store thread.
//!
//! The connector tells it how every dial ended ([`DialOutcome`]): a failed dial (refused,
//! timed out, or ended before its handshake completed) counts against the address in the book
//! (`mark_failed`, which ages bad addresses out) and frees its slot at once, a completed one
//! moves it to the tried table (`mark_good`), and an address that turned out to be this node's
//! own is forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::addr_book::{AddrBook, AddrBookConfig, KnownAddr};
use super::config::DiscoveryConfig;
use super::gossip::AddrGossip;
use super::seeds::{SeedConfig, SeedPlan};
use super::selection::{DialKind, OutboundSelector, SelectionConfig};
use super::store::{SaveResult, StoreThread, StoredBook, FINAL_SAVE_TIMEOUT};
use super::{canonical_addr, Reachability};
use crate::connector::{Connector, DialOnce, DialOutcome};
use crate::env::GossipFrame;
use crate::handle::PeerHandle;
use crate::protocol::{Frame, WireAddr, MAX_ADDRS_PER_FRAME};
use crate::reason::DisconnectReason;
use crate::registry::PeerEvent;
use crate::{canonical_ip, ConnId, Direction};

/// The discovery actor of one node.
pub(crate) struct Discovery {
    listen: SocketAddr,
    book: AddrBook,
    gossip: AddrGossip,
    selector: OutboundSelector,
    rng: StdRng,
    connector: Option<Addr<Connector>>,
    peers: BTreeMap<IpAddr, Peer>,
    /// Addresses handed to the connector and not yet connected (with when).
    asked: BTreeMap<SocketAddr, u64>,
    /// Interval of the tick (dials, advertisements, seeds).
    tick: Duration,
    /// Addresses dialled as feelers (short test connections): closed once the handshake
    /// completed (the address goes to the tried table), never counted as outbound peers.
    feelers: BTreeSet<SocketAddr>,
    /// Feeler connections that completed their handshake and were closed.
    feelers_done: u64,
    dropped: u64,
    dials_failed: u64,
    /// See [`DiscoveryStats::reasks`].
    reasks: u64,
    dials_succeeded: u64,
    seeds: SeedPlan,
    /// Configured peers (kept by the connector): never anchors.
    configured: BTreeSet<IpAddr>,
    store: Option<StoreThread>,
    save_interval_ms: u64,
    saving: bool,
    /// After the final save: no more saves or dials.
    stopped: bool,
    /// Connections whose gossip arrived before the registry's news of them (the session's
    /// frame and the registry's event travel apart), with when: tracked by the gossip policy
    /// at once, forgotten if no event follows within a dial timeout.
    early: BTreeMap<ConnId, u64>,
    /// Connections seen so far, to order outbound peers by age.
    seq: u64,
    dial_timeout_ms: u64,
    persist: PersistStats,
}

struct Peer {
    conn: ConnId,
    handle: PeerHandle,
    direction: Direction,
    listen: Option<SocketAddr>,
    /// Order of connection (smaller: older).
    seq: u64,
    /// An outbound connection to a seed: closed once the seed answered, never an anchor.
    seed: bool,
    opened_ms: u64,
    /// When this node last sent it `GetAddrs` (on connect, then [`Discovery::reask`]).
    asked_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct PersistStats {
    loaded: usize,
    saves: u64,
    save_failures: u64,
    saved_entries: usize,
    saved_anchors: Vec<SocketAddr>,
    last_save_us: u64,
    seed_dials: u64,
}

/// What the discovery actor starts from (see [`Discovery::new`]).
pub(crate) struct DiscoverySetup {
    /// The node's listen address.
    pub listen: SocketAddr,
    /// Outbound peers to keep.
    pub target_outbound: usize,
    /// Configured peers (`peers`): kept by the connector, never anchors.
    pub peers: Vec<SocketAddr>,
    /// Bootstrap addresses (`seeds`).
    pub seeds: Vec<SocketAddr>,
    /// The book loaded from the store, if any.
    pub stored: Option<StoredBook>,
    /// The store thread, when the application gave a store.
    pub store: Option<StoreThread>,
    /// Interval between periodic saves.
    pub save_interval: Duration,
    /// Longest a dial can take before it registers or fails (connect plus handshake timeout):
    /// a dial handed over longer ago than this has failed, and its slot is free again.
    pub dial_timeout: Duration,
    /// Timers and gossip rules.
    pub config: DiscoveryConfig,
}

/// Saves the book and anchors now (shutdown): waits for the save, bounded by
/// [`FINAL_SAVE_TIMEOUT`]; then the actor saves and dials no more.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FlushBook;

/// Asks for [`DiscoveryStats`].
#[derive(Message)]
#[rtype(result = "DiscoveryStats")]
pub(crate) struct GetDiscoveryStats;

/// Counters of a node's address book and gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// Addresses in the book.
    pub known: usize,
    /// Of them, in the tried table.
    pub tried: usize,
    /// Entries of the largest network group.
    pub max_per_group: usize,
    /// Entries learned from the most prolific source group.
    pub max_per_source: usize,
    /// Upper estimate of the book's heap, bytes.
    pub book_heap_bytes: usize,
    /// Gossiped addresses dropped by the per-connection token buckets since start.
    pub dropped: u64,
    /// Failed dials the connector reported and the book recorded (`mark_failed`) since start.
    pub dials_failed: u64,
    /// Completed dials the connector reported and the book recorded (`mark_good`) since start.
    pub dials_succeeded: u64,
    /// Entries loaded from the store at start.
    pub loaded: usize,
    /// Saves to the store completed since start.
    pub saves: u64,
    /// Saves that failed since start (logged).
    pub save_failures: u64,
    /// Entries written by the last completed save.
    pub saved_entries: usize,
    /// Anchors written by the last completed save.
    pub saved_anchors: Vec<SocketAddr>,
    /// Duration of the last completed save on the store thread, microseconds.
    pub last_save_us: u64,
    /// Seed dials since start.
    pub seed_dials: u64,
    /// Feelers (short test connections to new addresses, made while the outbound set is full)
    /// that completed their handshake and were closed, since start.
    pub feelers_done: u64,
    /// `GetAddrs` sent again to a connected peer because the node was below its outbound
    /// target with nothing left to dial, since start.
    pub reasks: u64,
}

/// The connector to hand addresses to (set once, after both actors exist).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetConnector(pub Addr<Connector>);

impl Discovery {
    /// A discovery actor for a node listening on `setup.listen`, keeping
    /// `setup.target_outbound` peers, starting from the stored book (its secret, entries and
    /// anchors) or an empty one with a fresh secret. Loopback addresses are accepted when the
    /// node itself listens on loopback (a test network or a devnet), private ranges when it
    /// listens on one.
    pub(crate) fn new(setup: DiscoverySetup) -> Self {
        let listen = setup.listen;
        let reach = Reachability {
            allow_loopback: listen.ip().is_loopback(),
            allow_private: match canonical_ip(listen.ip()) {
                IpAddr::V4(v4) => v4.is_private(),
                IpAddr::V6(_) => false,
            },
        };
        let config = AddrBookConfig {
            reach,
            ..AddrBookConfig::default()
        };
        let seeds = SeedPlan::new(
            SeedConfig::for_target(setup.target_outbound),
            setup.seeds.iter().copied(),
        );
        let (book, anchors) = match &setup.stored {
            Some(stored) => {
                let book = AddrBook::restore(config, &stored.book);
                let anchors: Vec<SocketAddr> = stored
                    .anchors
                    .iter()
                    .map(|a| canonical_addr(*a))
                    .filter(|a| a.ip() != canonical_ip(listen.ip()) && !seeds.is_seed(*a))
                    .collect();
                log::info!(
                    "address book loaded: {} addresses ({} tried), anchors {:?}",
                    book.len(),
                    book.tried_len(),
                    anchors
                );
                (book, anchors)
            }
            None => (AddrBook::new(config, rand::random()), Vec::new()),
        };
        let save_interval_ms = setup.save_interval.as_millis().max(1) as u64;
        Self {
            listen,
            gossip: AddrGossip::new(setup.config.gossip),
            selector: OutboundSelector::new(
                SelectionConfig {
                    target_outbound: setup.target_outbound,
                    feeler_interval_ms: setup.config.feeler_interval_ms,
                    ..SelectionConfig::default()
                },
                anchors,
            ),
            rng: StdRng::from_os_rng(),
            connector: None,
            peers: BTreeMap::new(),
            asked: BTreeMap::new(),
            tick: setup.config.tick(),
            feelers: BTreeSet::new(),
            feelers_done: 0,
            dropped: 0,
            dials_failed: 0,
            reasks: 0,
            dials_succeeded: 0,
            seeds,
            configured: setup.peers.iter().map(|a| canonical_ip(a.ip())).collect(),
            store: setup.store,
            save_interval_ms,
            saving: false,
            stopped: false,
            early: BTreeMap::new(),
            seq: 0,
            dial_timeout_ms: setup.dial_timeout.as_millis() as u64,
            persist: PersistStats {
                loaded: book.len(),
                ..PersistStats::default()
            },
            book,
        }
    }
}

impl Actor for Discovery {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.tick, |this, _| this.tick());
        if self.store.is_some() {
            let every = Duration::from_millis(self.save_interval_ms);
            ctx.run_interval(every, |this, ctx| {
                if !this.stopped && !this.saving {
                    this.save(ctx);
                }
            });
        }
    }
}

impl Handler<SetConnector> for Discovery {
    type Result = ();

    fn handle(&mut self, msg: SetConnector, _: &mut Context<Self>) {
        self.connector = Some(msg.0);
        // Anchors (and a seed, when the book is empty) are dialled at once, not a tick later.
        self.tick();
    }
}

impl Handler<FlushBook> for Discovery {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushBook, _: &mut Context<Self>) -> Self::Result {
        self.stopped = true;
        let stored = self.stored_book();
        let Some(store) = self.store.take() else {
            return Box::pin(async {});
        };
        let (entries, anchors) = (stored.book.entries.len(), stored.anchors.clone());
        let done = store.finish(stored);
        Box::pin(async move {
            match tokio::time::timeout(FINAL_SAVE_TIMEOUT, done).await {
                Ok(Ok(Ok((_, _, took)))) => log::info!(
                    "address book saved at shutdown: {entries} addresses, anchors {anchors:?} \
                     ({} ms)",
                    took.as_millis()
                ),
                Ok(Ok(Err(e))) => log::warn!("address book not saved at shutdown: {e}"),
                Ok(Err(_)) => log::warn!("address book not saved at shutdown: store gone"),
                Err(_) => log::warn!(
                    "address book save at shutdown took longer than {} ms; not waiting",
                    FINAL_SAVE_TIMEOUT.as_millis()
                ),
            }
        })
    }
}

impl Handler<GetDiscoveryStats> for Discovery {
    type Result = MessageResult<GetDiscoveryStats>;

    fn handle(&mut self, _: GetDiscoveryStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DiscoveryStats {
            known: self.book.len(),
            tried: self.book.tried_len(),
            max_per_group: self.book.max_group_count(),
            max_per_source: self.book.max_source_count(),
            book_heap_bytes: self.book.approx_heap_bytes(),
            dropped: self.dropped,
            dials_failed: self.dials_failed,
            dials_succeeded: self.dials_succeeded,
            loaded: self.persist.loaded,
            saves: self.persist.saves,
            save_failures: self.persist.save_failures,
            saved_entries: self.persist.saved_entries,
            saved_anchors: self.persist.saved_anchors.clone(),
            last_save_us: self.persist.last_save_us,
            seed_dials: self.persist.seed_dials,
            feelers_done: self.feelers_done,
            reasks: self.reasks,
        })
    }
}

impl Handler<DialOutcome> for Discovery {
    type Result = ();

    fn handle(&mut self, msg: DialOutcome, _: &mut Context<Self>) {
        let now = now_ms();
        match msg {
            DialOutcome::Failed(addr) => {
                self.book.mark_failed(addr, now);
                // Free to choose another address at the next tick.
                self.asked.remove(&addr);
                self.feelers.remove(&addr);
                self.dials_failed += 1;
            }
            // A seed is a one-shot bootstrap: it stays out of the tried table.
            DialOutcome::Connected(addr) if self.seeds.is_seed(addr) => {}
            DialOutcome::Connected(addr) => {
                self.book.mark_good(addr, now);
                self.dials_succeeded += 1;
            }
            DialOutcome::Own(addr) => {
                self.book.remove(addr);
                self.asked.remove(&addr);
            }
        }
    }
}

impl Handler<PeerEvent> for Discovery {
    type Result = ();

    fn handle(&mut self, msg: PeerEvent, _: &mut Context<Self>) {
        let now = now_ms();
        match msg {
            PeerEvent::Connected { info, handle } => {
                if let Some(old) = self.peers.remove(&info.ip) {
                    self.gossip.on_disconnect(old.conn);
                }
                // Idempotent: a connection whose frames came first keeps its gossip state.
                self.gossip.on_connect(info.conn.conn_id, now);
                self.early.remove(&info.conn.conn_id);
                // An outbound connection to a seed (not also a configured peer) is a one-shot
                // bootstrap: it does not go to the tried table and is closed once answered.
                let seed = info.conn.direction == Direction::Outbound
                    && !self.configured.contains(&info.ip)
                    && self.seeds.is_seed(SocketAddr::new(info.ip, 0));
                if let Some(listen) = info.meta.listen_addr {
                    match info.conn.direction {
                        Direction::Outbound if seed => {}
                        Direction::Outbound => self.book.mark_good(listen, now),
                        Direction::Inbound => {
                            let _ = self.book.add(listen, info.ip, now / 1000, now);
                        }
                    }
                    self.asked.remove(&listen);
                }
                self.asked.retain(|a, _| canonical_ip(a.ip()) != info.ip);
                // A feeler has done its job once its handshake completed (the address went to
                // the tried table above): it closes and never counts as an outbound peer.
                let before = self.feelers.len();
                self.feelers.retain(|a| canonical_ip(a.ip()) != info.ip);
                if info.conn.direction == Direction::Outbound
                    && self.feelers.len() < before
                    && !self.configured.contains(&info.ip)
                {
                    self.feelers_done += 1;
                    self.gossip.on_disconnect(info.conn.conn_id);
                    handle.disconnect(DisconnectReason::Requested);
                    return;
                }
                self.seq += 1;
                // Both sides ask once on connect; the dialler also advertises itself, which
                // the peer relays onwards as news.
                let _ = handle.send_control(Frame::GetAddrs {}.encode());
                if info.conn.direction == Direction::Outbound {
                    let me = KnownAddr {
                        addr: self.listen,
                        last_seen: now / 1000,
                    };
                    let _ = handle.send_control(addrs_frame(&[me]).encode());
                }
                self.peers.insert(
                    info.ip,
                    Peer {
                        conn: info.conn.conn_id,
                        handle,
                        direction: info.conn.direction,
                        listen: info.meta.listen_addr,
                        seq: self.seq,
                        seed,
                        opened_ms: now,
                        asked_ms: now,
                    },
                );
            }
            PeerEvent::Disconnected(record) => {
                if self
                    .peers
                    .get(&record.ip)
                    .is_some_and(|p| p.conn == record.conn_id)
                {
                    self.peers.remove(&record.ip);
                }
                self.gossip.on_disconnect(record.conn_id);
                self.early.remove(&record.conn_id);
            }
        }
    }
}

impl Handler<GossipFrame> for Discovery {
    type Result = ();

    fn handle(&mut self, msg: GossipFrame, _: &mut Context<Self>) {
        let now = now_ms();
        let from = msg.handle.ip();
        if !self.gossip.knows(msg.conn) {
            // The session's frame overtook the registry's event about its connection.
            if msg.handle.is_closed() {
                return;
            }
            self.gossip.on_connect(msg.conn, now);
            self.early.insert(msg.conn, now);
        }
        match msg.frame {
            Frame::GetAddrs {} => {
                if let Some(list) =
                    self.gossip
                        .on_get_addrs(msg.conn, from, now, &self.book, &mut self.rng)
                {
                    let _ = msg.handle.send_control(addrs_frame(&list).encode());
                }
            }
            Frame::Addrs { addrs } => {
                // A seed we dialled has done its job once it named anyone but itself.
                // (Its answer may overtake the registry's event: then the seed is one we are
                // dialling.)
                let ip = canonical_ip(from);
                let dialled_seed = match self.peers.get(&ip) {
                    Some(p) => p.seed && p.conn == msg.conn,
                    None => {
                        self.seeds.is_seed(SocketAddr::new(ip, 0))
                            && !self.configured.contains(&ip)
                            && self.asked.keys().any(|a| canonical_ip(a.ip()) == ip)
                    }
                };
                let seed_answered = dialled_seed
                    && addrs.iter().any(|w| {
                        w.socket_addr()
                            .is_some_and(|a| canonical_ip(a.ip()) != canonical_ip(from))
                    });
                if seed_answered {
                    log::debug!("seed {from} answered; closing its connection");
                    msg.handle.disconnect(DisconnectReason::Requested);
                }
                let count = addrs.len().min(MAX_ADDRS_PER_FRAME);
                let n = self.gossip.on_addrs(msg.conn, count, now);
                self.dropped += (addrs.len() - n) as u64;
                let mut news = Vec::new();
                for w in addrs.iter().take(n) {
                    let Some(addr) = w.socket_addr() else {
                        continue;
                    };
                    if addr == self.listen {
                        continue;
                    }
                    let before = self.book.get(addr.ip()).map(|k| k.last_seen);
                    let r = self.book.add(addr, from, w.last_seen, now);
                    let after = self.book.get(addr.ip()).map(|k| k.last_seen);
                    if r == super::AddResult::Added || is_fresher(before, after) {
                        news.push(KnownAddr {
                            addr,
                            last_seen: w.last_seen,
                        });
                    }
                }
                if n <= self.gossip.config().relay_max_items {
                    let targets = self
                        .gossip
                        .relay_targets(msg.conn, &news, now, &mut self.rng);
                    let frame = addrs_frame(&news).encode();
                    for p in self.peers.values().filter(|p| targets.contains(&p.conn)) {
                        let _ = p.handle.send_control(frame.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

impl Discovery {
    fn tick(&mut self) {
        let now = now_ms();
        if self.gossip.advertise_due(now) {
            let frame = addrs_frame(&[KnownAddr {
                addr: self.listen,
                last_seen: now / 1000,
            }])
            .encode();
            for p in self.peers.values() {
                let _ = p.handle.send_control(frame.clone());
            }
        }
        // Seeds that never answered are let go after a while.
        let linger = self.seeds.config().linger_ms;
        for p in self.peers.values() {
            if p.seed && now.saturating_sub(p.opened_ms) >= linger {
                p.handle.disconnect(DisconnectReason::Requested);
            }
        }
        // Forget dials handed over longer ago than a dial can take (failed or refused), and
        // early gossip state of connections whose event never came.
        let timeout = self.dial_timeout_ms;
        self.asked.retain(|_, at| now.saturating_sub(*at) < timeout);
        let asked = &self.asked;
        self.feelers.retain(|a| asked.contains_key(a));
        let gossip = &mut self.gossip;
        self.early.retain(|conn, at| {
            let keep = now.saturating_sub(*at) < timeout;
            if !keep {
                gossip.on_disconnect(*conn);
            }
            keep
        });
        if self.stopped {
            return;
        }
        let Some(connector) = &self.connector else {
            return;
        };
        let mut outbound: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.direction == Direction::Outbound && !p.seed)
            .filter_map(|p| p.listen)
            .collect();
        outbound.extend(
            self.asked
                .keys()
                .copied()
                .filter(|a| !self.seeds.is_seed(*a)),
        );
        let connected: BTreeSet<IpAddr> = self.peers.keys().copied().collect();
        let target = self.selector.config().target_outbound;
        let seeds_in_book = self
            .seeds
            .seeds()
            .iter()
            .filter(|s| self.book.contains(**s))
            .count();
        let book_len = self.book.len().saturating_sub(seeds_in_book);
        let asked = &self.asked;
        let seed_busy = |a: SocketAddr| {
            connected.contains(&canonical_ip(a.ip())) || asked.keys().any(|k| k.ip() == a.ip())
        };
        let seed = self
            .seeds
            .next_dial(book_len, outbound.len(), target, seed_busy, now);
        if let Some(seed) = seed {
            log::info!("address book short ({book_len} addresses): asking seed {seed}");
            self.persist.seed_dials += 1;
            self.asked.insert(seed, now);
            connector.do_send(DialOnce(seed));
        }
        let own = canonical_ip(self.listen.ip());
        let asked = &self.asked;
        let seeds = &self.seeds;
        let busy = |a: SocketAddr| {
            a.ip() == own
                || connected.contains(&a.ip())
                || asked.contains_key(&a)
                || seeds.is_seed(a)
        };
        // Every dial the node is short of, at once.
        let dials = self
            .selector
            .next_dials(&self.book, &outbound, busy, now, &mut self.rng);
        let dry = dials.is_empty() && outbound.len() < target;
        for choice in dials {
            log::debug!("dialling {} ({:?})", choice.addr, choice.kind);
            if choice.kind == DialKind::Feeler {
                self.feelers.insert(choice.addr);
            }
            self.book.mark_attempt(choice.addr, now);
            self.asked.insert(choice.addr, now);
            connector.do_send(DialOnce(choice.addr));
        }
        if dry {
            self.reask(now);
        }
    }

    /// Below the outbound target with nothing left to dial: asks one connected peer for
    /// addresses again, the one asked longest ago, if that was at least an answer interval
    /// ago (peers answer a connection at most that often; PROTOCOL.md section 3.2). Without
    /// it a node whose book ran dry waited for announcements that a quiet network never makes.
    fn reask(&mut self, now: u64) {
        let interval = self.gossip.config().answer_interval_ms;
        let Some(peer) = self
            .peers
            .values_mut()
            .filter(|p| !p.seed && now.saturating_sub(p.asked_ms) >= interval)
            .min_by_key(|p| p.asked_ms)
        else {
            return;
        };
        peer.asked_ms = now;
        let _ = peer.handle.send_control(Frame::GetAddrs {}.encode());
        self.reasks += 1;
        log::debug!(
            "outbound below target with nothing to dial: asking {} for addresses again",
            peer.handle.ip()
        );
    }

    /// The outbound peers to dial first next time: the longest-connected ones, neither seeds
    /// nor configured peers (the connector dials those anyway).
    fn anchors(&self) -> Vec<SocketAddr> {
        let mut outbound: Vec<(u64, SocketAddr)> = self
            .peers
            .iter()
            .filter(|(ip, p)| {
                p.direction == Direction::Outbound && !p.seed && !self.configured.contains(*ip)
            })
            .filter_map(|(_, p)| p.listen.map(|l| (p.seq, l)))
            .collect();
        outbound.sort();
        let oldest_first: Vec<SocketAddr> = outbound.into_iter().map(|(_, a)| a).collect();
        self.selector.anchors_to_save(&oldest_first)
    }

    fn stored_book(&self) -> StoredBook {
        StoredBook {
            book: self.book.snapshot(),
            anchors: self.anchors(),
        }
    }

    /// A periodic save: the snapshot here, the encoding and the write on the store thread.
    fn save(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = &self.store else {
            return;
        };
        let started = std::time::Instant::now();
        let stored = self.stored_book();
        let snapshot_us = started.elapsed().as_micros();
        let anchors = stored.anchors.clone();
        let done = store.save(stored);
        self.saving = true;
        ctx.spawn(
            async move {
                done.await
                    .unwrap_or_else(|_| Err("store thread gone".into()))
            }
            .into_actor(self)
            .map(move |result: SaveResult, this, _| {
                this.saving = false;
                match result {
                    Ok((entries, _, took)) => {
                        log::debug!(
                            "address book saved: {entries} addresses, anchors {anchors:?} \
                                 (snapshot {snapshot_us} us, write {} us)",
                            took.as_micros()
                        );
                        this.persist.saves += 1;
                        this.persist.saved_entries = entries;
                        this.persist.saved_anchors = anchors;
                        this.persist.last_save_us = took.as_micros() as u64;
                    }
                    Err(e) => {
                        this.persist.save_failures += 1;
                        log::warn!("address book not saved: {e}");
                    }
                }
            }),
        );
    }
}

/// Whether gossip moved an address's last-seen time forward: a node re-advertising itself.
/// Such an address is relayed like a new one (when fresh), so that each advertisement round
/// reaches beyond the advertiser's neighbours, as Bitcoin relays fresh addresses whether or not
/// they are known; each node relays a given (address, last-seen) once, which ends the flood.
fn is_fresher(before: Option<u64>, after: Option<u64>) -> bool {
    matches!((before, after), (Some(b), Some(a)) if a > b)
}

fn addrs_frame(list: &[KnownAddr]) -> Frame {
    Frame::Addrs {
        addrs: list
            .iter()
            .take(MAX_ADDRS_PER_FRAME)
            .map(|k| WireAddr::new(k.addr, k.last_seen))
            .collect(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::is_fresher;

    #[test]
    fn only_a_later_last_seen_is_fresher() {
        assert!(is_fresher(Some(10), Some(11)));
        assert!(!is_fresher(Some(10), Some(10)));
        assert!(
            !is_fresher(None, Some(10)),
            "a new address is news of its own kind"
        );
        assert!(!is_fresher(Some(10), None));
    }
}
