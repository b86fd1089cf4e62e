//! `Discovery`: the thin actor around the discovery policies, on the control plane. It owns the
//! node's [`AddrBook`], [`AddrGossip`] and [`OutboundSelector`]; it learns of connections from
//! the registry's [`PeerEvent`]s (asking every new peer once for addresses, adding inbound peers'
//! listen addresses to the book, moving dialled ones to the tried table), receives the gossip
//! frames the sessions forward, answers them through the peer's [`PeerHandle`], and once a
//! second, while the node has fewer outbound peers than its target, hands the connector the
//! next address to dial. It advertises the node's own listen address to every peer it dials and
//! to all peers periodically.
//!
//! Not wired yet: persistence of the book and anchors (a storage trait), admission and eviction
//! in the acceptor, dial failures fed back into the book.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::addr_book::{AddrBook, AddrBookConfig, KnownAddr};
use super::gossip::{AddrGossip, GossipConfig};
use super::selection::{OutboundSelector, SelectionConfig};
use super::Reachability;
use crate::connector::{AddPeer, Connector};
use crate::env::GossipFrame;
use crate::handle::PeerHandle;
use crate::protocol::{Frame, WireAddr, MAX_ADDRS_PER_FRAME};
use crate::registry::PeerEvent;
use crate::{canonical_ip, ConnId, Direction};

/// How often the actor looks at its outbound count and the advertisement timer.
const TICK: Duration = Duration::from_secs(1);

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
    dropped: u64,
}

struct Peer {
    conn: ConnId,
    handle: PeerHandle,
    direction: Direction,
    listen: Option<SocketAddr>,
}

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
}

/// The connector to hand addresses to (set once, after both actors exist).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetConnector(pub Addr<Connector>);

impl Discovery {
    /// A discovery actor for a node listening on `listen`, keeping `target_outbound` peers.
    /// Loopback addresses are accepted when the node itself listens on loopback (a test network
    /// or a devnet), private ranges when it listens on one.
    pub(crate) fn new(listen: SocketAddr, target_outbound: usize) -> Self {
        let reach = Reachability {
            allow_loopback: listen.ip().is_loopback(),
            allow_private: match canonical_ip(listen.ip()) {
                IpAddr::V4(v4) => v4.is_private(),
                IpAddr::V6(_) => false,
            },
        };
        let secret: [u8; 32] = rand::random();
        Self {
            listen,
            book: AddrBook::new(
                AddrBookConfig {
                    reach,
                    ..AddrBookConfig::default()
                },
                secret,
            ),
            gossip: AddrGossip::new(GossipConfig::default()),
            selector: OutboundSelector::new(
                SelectionConfig {
                    target_outbound,
                    ..SelectionConfig::default()
                },
                Vec::new(),
            ),
            rng: StdRng::from_os_rng(),
            connector: None,
            peers: BTreeMap::new(),
            asked: BTreeMap::new(),
            dropped: 0,
        }
    }
}

impl Actor for Discovery {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |this, _| this.tick());
    }
}

impl Handler<SetConnector> for Discovery {
    type Result = ();

    fn handle(&mut self, msg: SetConnector, _: &mut Context<Self>) {
        self.connector = Some(msg.0);
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
        })
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
                self.gossip.on_connect(info.conn.conn_id, now);
                if let Some(listen) = info.meta.listen_addr {
                    match info.conn.direction {
                        Direction::Outbound => self.book.mark_good(listen, now),
                        Direction::Inbound => {
                            let _ = self.book.add(listen, info.ip, now / 1000, now);
                        }
                    }
                    self.asked.remove(&listen);
                }
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
            }
        }
    }
}

impl Handler<GossipFrame> for Discovery {
    type Result = ();

    fn handle(&mut self, msg: GossipFrame, _: &mut Context<Self>) {
        let now = now_ms();
        let from = msg.handle.ip();
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
                    let r = self.book.add(addr, from, w.last_seen, now);
                    if r == super::AddResult::Added {
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
        // Forget dials handed over long ago (failed or refused).
        self.asked.retain(|_, at| now.saturating_sub(*at) < 30_000);
        let Some(connector) = &self.connector else {
            return;
        };
        let mut outbound: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.direction == Direction::Outbound)
            .filter_map(|p| p.listen)
            .collect();
        outbound.extend(self.asked.keys().copied());
        let connected: BTreeSet<IpAddr> = self.peers.keys().copied().collect();
        let own = canonical_ip(self.listen.ip());
        let asked = &self.asked;
        let busy =
            |a: SocketAddr| a.ip() == own || connected.contains(&a.ip()) || asked.contains_key(&a);
        if let Some(choice) =
            self.selector
                .next_dial(&self.book, &outbound, busy, now, &mut self.rng)
        {
            self.book.mark_attempt(choice.addr, now);
            self.asked.insert(choice.addr, now);
            connector.do_send(AddPeer {
                addr: choice.addr,
                now: true,
            });
        }
    }
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
