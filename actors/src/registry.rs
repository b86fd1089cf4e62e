//! `PeerRegistry`: the one authority on who is connected. It owns the map canonical IP -> entry
//! and nothing else touches it; every race between sessions (simultaneous opens, restarts,
//! late cleanups) is serialized by this actor's mailbox and settled by [`DuplicatePolicy`].
//!
//! Sessions `Register` after their handshake and `Unregister` when they stop; an `Unregister`
//! whose conn id is not the stored one is stale and ignored. After every change the registry
//! publishes its map as IP -> [`PeerHandle`] (read by `Network::send` and `Network::handle`
//! without a mailbox hop), tells the broadcast lanes, and queues a [`PeerEvent`] for each
//! subscriber (a bounded queue per subscriber, delivered in order).
//!
//! Eviction happens here too, where the connection set lives: when an inbound newcomer finishes
//! its handshake and the inbound slots are full, `Register` runs the eviction policy
//! ([`select_to_evict`], a plain function) over the registered inbound peers (network group,
//! lowest ping, last useful mark, connected since, operator-listed), closes the chosen one with
//! `Disconnect{evicted}` and stores the newcomer in the same handler; when every inbound peer is
//! protected the newcomer is refused with `too_many_peers`. Bitcoin Core evicts at accept time;
//! evicting after the handshake instead means a port scan, a silent socket or a node of another
//! network never costs a peer its slot, and a restarting peer replaces its own old connection
//! instead of evicting someone else.
//!
//! Replacement is not a separate request: when the policy decides that a registering connection
//! replaces the stored one (a restart, or the winning side of a simultaneous open), `Register`
//! swaps the entry, closes the old session and answers `Replaced { old }` in one handler. A
//! separate `Replace` round trip would leave a window between the decision and the swap in which
//! another registration could interleave.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::cell::RefCell;
use std::rc::Rc;

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::constants::{MAX_PENDING_EVENTS, RECENT_DISCONNECTS};
use crate::eviction::{select_to_evict, EvictionCandidate, EvictionConfig};
use crate::handle::PeerHandle;
use crate::lanes::Lane;
use crate::metrics::NetMetrics;
use crate::policy::{ConnFacts, DuplicatePolicy, Occupancy, Resolution};
use crate::reason::DisconnectReason;
use crate::session_api::{Close, PeerStats, SessionStats};
use crate::{ConnId, Direction};

/// The registry's published view of its map: canonical IP -> send handle of the registered
/// connection. Only the registry writes it (after every change, in mailbox order); senders
/// read it without a mailbox hop. It is not a second map with its own life: it is replaced as a
/// whole by its one writer and dropped with the network.
pub(crate) type PublishedHandles = Arc<ArcSwap<imbl::HashMap<IpAddr, PeerHandle>>>;

/// The registry actor, started by [`crate::Network::start`] on the control plane's thread.
pub(crate) struct PeerRegistry {
    entries: HashMap<IpAddr, PeerEntry>,
    /// Broadcast lanes, one per session thread, told of every entry added and removed.
    lanes: Vec<Lane>,
    /// The map as IP -> handle, republished after every change. A persistent map: an update
    /// and its snapshot cost O(log n), not a copy of every entry (5,000 connections registering
    /// one after the other would otherwise cost 12.5 M entry copies).
    handles: imbl::HashMap<IpAddr, PeerHandle>,
    published: PublishedHandles,
    policy: DuplicatePolicy,
    subscribers: Vec<Subscriber>,
    /// Bound of each subscriber's queue ([`MAX_PENDING_EVENTS`]; smaller in tests).
    max_pending_events: usize,
    recent: VecDeque<DisconnectRecord>,
    metrics: Arc<NetMetrics>,
    shutting_down: bool,
    totals: Totals,
    eviction: EvictionSetup,
}

/// What the eviction policy needs besides the connections.
pub(crate) struct EvictionSetup {
    /// The policy's protections and minimum age.
    pub config: EvictionConfig,
    /// The node's secret for the keyed network-group protection (a stranger cannot tell which
    /// groups it protects).
    pub key: [u8; 32],
    /// Canonical IPs the operator listed (`peers`): never evicted.
    pub always_keep: std::collections::HashSet<IpAddr>,
}

impl Default for EvictionSetup {
    fn default() -> Self {
        Self {
            config: EvictionConfig::default(),
            key: rand::random(),
            always_keep: Default::default(),
        }
    }
}

/// A subscriber and its events not yet handled, the one being delivered first (bounded by
/// [`MAX_PENDING_EVENTS`]).
struct Subscriber {
    recipient: Recipient<PeerEvent>,
    queue: Rc<RefCell<VecDeque<PeerEvent>>>,
}

struct PeerEntry {
    facts: ConnFacts,
    session: Recipient<Close>,
    handle: PeerHandle,
    stats: Arc<SessionStats>,
    meta: PeerMeta,
    since: Instant,
    since_wall: SystemTime,
}

/// What a session knows about its peer after the handshake: the socket's addresses and the
/// peer's Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMeta {
    /// Our side of the socket.
    pub local_addr: SocketAddr,
    /// The peer's side of the socket.
    pub peer_addr: SocketAddr,
    /// Address the peer listens on (its IP and the port from its Hello), if it listens.
    pub listen_addr: Option<SocketAddr>,
    /// Best height from the peer's Hello.
    pub best_height: u64,
    /// User agent from the peer's Hello.
    pub user_agent: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    connects: u64,
    disconnects: u64,
    replaced: u64,
    rejected: u64,
    stale_unregisters: u64,
}

/// A registered peer, as reported by [`Network::peers`](crate::Network::peers) and [`PeerEvent::Connected`]: the
/// registry's record of the connection, composed of the same parts the registry keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Canonical IP (the registry key).
    pub ip: IpAddr,
    /// The connection: id, direction, the peer's nonce and key.
    pub conn: ConnFacts,
    /// The socket's addresses and what the peer said in its Hello.
    pub meta: PeerMeta,
    /// Wall clock time of registration.
    pub since: SystemTime,
    /// How long it has been registered (monotonic clock).
    pub connected_for: Duration,
    /// How long ago the application last marked the peer useful
    /// ([`PeerHandle::mark_useful`]); `None` if never.
    pub useful_ago: Option<Duration>,
    /// The session's counters when this record was made.
    pub stats: PeerStats,
}

/// A past disconnect, kept for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectRecord {
    /// Peer IP.
    pub ip: IpAddr,
    /// Connection id.
    pub conn_id: ConnId,
    /// Why.
    pub reason: DisconnectReason,
    /// Whether the peer closed (sent Disconnect or closed the socket) rather than us.
    pub by_peer: bool,
    /// When.
    pub at: SystemTime,
    /// How long the connection had been registered.
    pub lifetime: Duration,
}

/// Lifecycle events, delivered to every subscriber.
// One event per connect/disconnect: their size never matters, and boxing `info` would only make
// every subscriber's match noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum PeerEvent {
    /// A connection was registered (possibly replacing another for the same IP).
    Connected {
        /// The peer.
        info: PeerInfo,
        /// Its send side.
        handle: PeerHandle,
    },
    /// A registered connection left the registry.
    Disconnected(DisconnectRecord),
}

/// Counters of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryStats {
    /// Registered inbound connections.
    pub inbound: usize,
    /// Registered outbound connections.
    pub outbound: usize,
    /// Connections registered since start.
    pub connects: u64,
    /// Registered connections removed since start.
    pub disconnects: u64,
    /// Registrations that replaced an entry.
    pub replaced: u64,
    /// Registrations refused.
    pub rejected: u64,
    /// Unregisters ignored because the conn id was stale.
    pub stale_unregisters: u64,
    /// The most recent disconnects, newest last.
    pub recent_disconnects: Vec<DisconnectRecord>,
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A session finished its handshake and asks to be the connection for its IP.
#[derive(Message)]
#[rtype(result = "RegisterOutcome")]
pub(crate) struct Register {
    /// Canonical peer IP.
    pub ip: IpAddr,
    /// Facts for the duplicate policy.
    pub facts: ConnFacts,
    /// The session (closed when replaced, disconnected or shut down).
    pub session: Recipient<Close>,
    /// Its send side.
    pub handle: PeerHandle,
    /// Its live counters.
    pub stats: Arc<SessionStats>,
    /// Handshake data.
    pub meta: PeerMeta,
}

/// Answer to [`Register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterOutcome {
    /// Stored; the IP had no connection.
    Accepted,
    /// Stored; the previous connection `old` is being closed.
    Replaced {
        /// The connection replaced.
        old: ConnId,
    },
    /// Refused: close with this reason.
    Rejected(DisconnectReason),
}

/// A session stopped. Removes the entry only if `conn_id` is the stored one.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Unregister {
    /// Canonical peer IP.
    pub ip: IpAddr,
    /// The stopping session's id.
    pub conn_id: ConnId,
    /// Why it stopped.
    pub reason: DisconnectReason,
    /// Whether the peer closed.
    pub by_peer: bool,
}

/// Snapshot of all registered peers.
#[derive(Message)]
#[rtype(result = "Vec<PeerInfo>")]
pub(crate) struct GetPeers;

/// Connection id registered for an IP, if any.
#[derive(Message)]
#[rtype(result = "Option<ConnId>")]
pub(crate) struct HasConnection {
    /// IP to look up (canonicalized by the handler).
    pub ip: IpAddr,
}

/// The send handle of an IP's connection, to send without going through the registry.
#[derive(Message)]
#[rtype(result = "Option<PeerHandle>")]
pub(crate) struct GetHandle {
    /// IP to look up (canonicalized by the handler).
    pub ip: IpAddr,
}

/// Registry counters.
#[derive(Message)]
#[rtype(result = "RegistryStats")]
pub(crate) struct GetStats;

/// Receive [`PeerEvent`]s from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Subscribe(pub Recipient<PeerEvent>);

/// Close the connection of an IP with a reason. Returns whether there was one.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct DisconnectPeer {
    /// The peer's IP.
    pub ip: IpAddr,
    /// The reason sent to it.
    pub reason: DisconnectReason,
}

/// Close every connection with `Shutdown` and refuse new registrations.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShutdownRegistry;

// ---------------------------------------------------------------------------------------------

impl PeerRegistry {
    pub(crate) fn new(
        policy: DuplicatePolicy,
        metrics: Arc<NetMetrics>,
        lanes: Vec<Lane>,
        published: PublishedHandles,
    ) -> Self {
        Self {
            entries: HashMap::new(),
            lanes,
            handles: imbl::HashMap::new(),
            published,
            max_pending_events: MAX_PENDING_EVENTS,
            policy,
            subscribers: Vec::new(),
            recent: VecDeque::with_capacity(RECENT_DISCONNECTS),
            metrics,
            shutting_down: false,
            totals: Totals::default(),
            eviction: EvictionSetup::default(),
        }
    }

    /// Sets the eviction policy's settings (the default: the policy's default protections, a
    /// fresh random key, nobody always kept).
    pub(crate) fn with_eviction(mut self, eviction: EvictionSetup) -> Self {
        self.eviction = eviction;
        self
    }
}

impl Actor for PeerRegistry {
    type Context = Context<Self>;
}

impl Handler<Register> for PeerRegistry {
    type Result = MessageResult<Register>;

    fn handle(&mut self, msg: Register, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return MessageResult(RegisterOutcome::Rejected(DisconnectReason::Shutdown));
        }
        let existing = self.entries.get(&msg.ip).map(|e| e.facts);
        let mut resolution = self
            .policy
            .resolve(existing.as_ref(), &msg.facts, self.occupancy());
        if resolution == Resolution::Reject(DisconnectReason::TooManyPeers)
            && msg.facts.direction == Direction::Inbound
            && existing.is_none()
            && self.evict_one(&msg, ctx)
        {
            resolution = Resolution::Accept;
        }
        let outcome = match resolution {
            Resolution::Accept => {
                self.metrics
                    .duplicate_resolutions
                    .get_or_create(&NetMetrics::outcome("accepted"))
                    .inc();
                RegisterOutcome::Accepted
            }
            Resolution::Replace { old, reason } => {
                let label = match reason {
                    DisconnectReason::PeerRestarted => "replaced_restart",
                    _ => "replaced_duplicate",
                };
                self.metrics
                    .duplicate_resolutions
                    .get_or_create(&NetMetrics::outcome(label))
                    .inc();
                self.totals.replaced += 1;
                if let Some(entry) = self.entries.remove(&msg.ip) {
                    log::debug!(
                        "peer {} conn {}: replaced by conn {} ({reason})",
                        msg.ip,
                        old,
                        msg.facts.conn_id
                    );
                    entry.handle.mark_closed();
                    entry.session.do_send(Close { reason });
                    self.removed(msg.ip, &entry, reason, false, ctx);
                }
                RegisterOutcome::Replaced { old }
            }
            Resolution::Reject(reason) => {
                let label = match reason {
                    DisconnectReason::Duplicate => "rejected_duplicate",
                    _ => "rejected_limit",
                };
                self.metrics
                    .duplicate_resolutions
                    .get_or_create(&NetMetrics::outcome(label))
                    .inc();
                self.totals.rejected += 1;
                log::debug!(
                    "peer {} conn {}: registration rejected ({reason})",
                    msg.ip,
                    msg.facts.conn_id
                );
                return MessageResult(RegisterOutcome::Rejected(reason));
            }
        };
        let entry = PeerEntry {
            facts: msg.facts,
            session: msg.session,
            handle: msg.handle,
            stats: msg.stats,
            meta: msg.meta,
            since: Instant::now(),
            since_wall: SystemTime::now(),
        };
        let info = info_of(msg.ip, &entry);
        let handle = entry.handle.clone();
        self.metrics
            .connects
            .get_or_create(&NetMetrics::direction(entry.facts.direction))
            .inc();
        self.metrics
            .connections
            .get_or_create(&NetMetrics::direction(entry.facts.direction))
            .inc();
        self.totals.connects += 1;
        if let Some(lane) = self.lanes.get_mut(handle.lane()) {
            lane.add(msg.ip, handle.clone());
        }
        self.entries.insert(msg.ip, entry);
        self.handles.insert(msg.ip, handle.clone());
        self.publish_handles();
        log::info!(
            "connected to {} {} (conn {}, key {})",
            msg.ip,
            info.conn.direction.as_str(),
            info.conn.conn_id,
            info.conn
                .remote_key
                .map_or_else(|| "none: plaintext".to_string(), |k| k.to_hex())
        );
        self.publish(PeerEvent::Connected { info, handle }, ctx);
        MessageResult(outcome)
    }
}

impl Handler<Unregister> for PeerRegistry {
    type Result = bool;

    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) -> bool {
        match self.entries.get(&msg.ip) {
            Some(entry) if entry.facts.conn_id == msg.conn_id => {
                if let Some(entry) = self.entries.remove(&msg.ip) {
                    self.removed(msg.ip, &entry, msg.reason, msg.by_peer, ctx);
                }
                true
            }
            Some(_) => {
                // A replaced session's late cleanup: its successor stays.
                self.totals.stale_unregisters += 1;
                self.metrics.stale_unregisters.inc();
                false
            }
            None => false,
        }
    }
}

impl Handler<GetPeers> for PeerRegistry {
    type Result = MessageResult<GetPeers>;

    fn handle(&mut self, _msg: GetPeers, _ctx: &mut Context<Self>) -> Self::Result {
        let mut peers: Vec<PeerInfo> = self.entries.iter().map(|(ip, e)| info_of(*ip, e)).collect();
        peers.sort_by_key(|p| p.ip);
        MessageResult(peers)
    }
}

impl Handler<HasConnection> for PeerRegistry {
    type Result = Option<ConnId>;

    fn handle(&mut self, msg: HasConnection, _ctx: &mut Context<Self>) -> Option<ConnId> {
        self.entries
            .get(&crate::canonical_ip(msg.ip))
            .map(|e| e.facts.conn_id)
    }
}

impl Handler<GetHandle> for PeerRegistry {
    type Result = Option<PeerHandle>;

    fn handle(&mut self, msg: GetHandle, _ctx: &mut Context<Self>) -> Option<PeerHandle> {
        self.entries
            .get(&crate::canonical_ip(msg.ip))
            .map(|e| e.handle.clone())
    }
}

impl Handler<GetStats> for PeerRegistry {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        let occ = self.occupancy();
        MessageResult(RegistryStats {
            inbound: occ.inbound,
            outbound: occ.outbound,
            connects: self.totals.connects,
            disconnects: self.totals.disconnects,
            replaced: self.totals.replaced,
            rejected: self.totals.rejected,
            stale_unregisters: self.totals.stale_unregisters,
            recent_disconnects: self.recent.iter().cloned().collect(),
        })
    }
}

impl Handler<Subscribe> for PeerRegistry {
    type Result = ();

    /// A subscriber sees every peer: one `Connected` for each peer registered before it
    /// subscribed comes first (an application subscribing after `Network::start` would
    /// otherwise never hear of the configured peers that connected meanwhile), then every
    /// change, in order.
    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        let subscriber = Subscriber {
            recipient: msg.0,
            queue: Rc::default(),
        };
        for (ip, entry) in &self.entries {
            let event = PeerEvent::Connected {
                info: info_of(*ip, entry),
                handle: entry.handle.clone(),
            };
            self.queue_event(&subscriber, event, ctx);
        }
        self.subscribers.push(subscriber);
    }
}

impl Handler<DisconnectPeer> for PeerRegistry {
    type Result = bool;

    fn handle(&mut self, msg: DisconnectPeer, _ctx: &mut Context<Self>) -> bool {
        match self.entries.get(&crate::canonical_ip(msg.ip)) {
            Some(entry) => {
                entry.session.do_send(Close { reason: msg.reason });
                true
            }
            None => false,
        }
    }
}

impl Handler<ShutdownRegistry> for PeerRegistry {
    type Result = ();

    /// Refuses new registrations and closes every session with `Shutdown`. The caller then
    /// waits for the sessions and writers themselves to be gone (the network's task tracker).
    fn handle(&mut self, _msg: ShutdownRegistry, _ctx: &mut Context<Self>) {
        self.shutting_down = true;
        for entry in self.entries.values() {
            entry.session.do_send(Close {
                reason: DisconnectReason::Shutdown,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------

impl PeerRegistry {
    /// Inbound slots are full and `newcomer` asks for one: runs the eviction policy over the
    /// registered inbound peers and closes the one it chooses with `Evicted`. Returns whether
    /// a slot was freed.
    fn evict_one(&mut self, newcomer: &Register, ctx: &mut Context<Self>) -> bool {
        let candidates: Vec<EvictionCandidate> = self
            .entries
            .iter()
            .filter(|(_, e)| e.facts.direction == Direction::Inbound)
            .map(|(ip, e)| EvictionCandidate {
                conn: e.facts.conn_id,
                ip: *ip,
                connected_ms: crate::clock::ms_at(e.since),
                min_ping_ms: e.stats.min_rtt().map(|d| d.as_millis() as u64),
                last_useful_ms: e.handle.last_useful_ms(),
                always_keep: self.eviction.always_keep.contains(ip),
            })
            .collect();
        let decision = select_to_evict(
            &candidates,
            &self.eviction.key,
            &self.eviction.config,
            crate::clock::now_ms(),
        );
        let Some(victim) = decision.victim else {
            log::debug!(
                "peer {} conn {}: inbound full and all {} inbound peers protected",
                newcomer.ip,
                newcomer.facts.conn_id,
                candidates.len()
            );
            return false;
        };
        let Some(ip) = candidates.iter().find(|c| c.conn == victim).map(|c| c.ip) else {
            return false;
        };
        let Some(entry) = self.entries.remove(&ip) else {
            return false;
        };
        log::info!(
            "evicting {ip} (conn {victim}) for {} (conn {}); {} inbound peers protected",
            newcomer.ip,
            newcomer.facts.conn_id,
            decision.protected.len()
        );
        self.metrics.evictions.inc();
        entry.handle.mark_closed();
        entry.session.do_send(Close {
            reason: DisconnectReason::Evicted,
        });
        self.removed(ip, &entry, DisconnectReason::Evicted, false, ctx);
        true
    }

    fn occupancy(&self) -> Occupancy {
        let mut occ = Occupancy::default();
        for e in self.entries.values() {
            match e.facts.direction {
                Direction::Inbound => occ.inbound += 1,
                Direction::Outbound => occ.outbound += 1,
            }
        }
        occ
    }

    /// Bookkeeping for an entry that left the map.
    fn removed(
        &mut self,
        ip: IpAddr,
        entry: &PeerEntry,
        reason: DisconnectReason,
        by_peer: bool,
        ctx: &mut Context<Self>,
    ) {
        if let Some(lane) = self.lanes.get_mut(entry.handle.lane()) {
            lane.remove(ip, entry.facts.conn_id);
        }
        self.handles.remove(&ip);
        self.publish_handles();
        let lifetime = entry.since.elapsed();
        self.metrics
            .connections
            .get_or_create(&NetMetrics::direction(entry.facts.direction))
            .dec();
        self.metrics
            .connection_lifetime_seconds
            .observe(lifetime.as_secs_f64());
        self.totals.disconnects += 1;
        log::info!(
            "disconnected from {ip} (conn {}): {reason}{}",
            entry.facts.conn_id,
            if by_peer { " (by peer)" } else { "" }
        );
        let record = DisconnectRecord {
            ip,
            conn_id: entry.facts.conn_id,
            reason,
            by_peer,
            at: SystemTime::now(),
            lifetime,
        };
        if self.recent.len() == RECENT_DISCONNECTS {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
        self.publish(PeerEvent::Disconnected(record), ctx);
    }

    /// Republishes the map as IP -> handle for senders.
    fn publish_handles(&self) {
        self.published.store(Arc::new(self.handles.clone()));
    }

    /// Queues `event` for every subscriber, in order. Each subscriber has its own queue of at
    /// most [`MAX_PENDING_EVENTS`] events, drained one event at a time (the next is sent when
    /// the subscriber has handled the previous one); beyond that its events are dropped and
    /// counted, so a subscriber that does not keep up costs a bounded amount.
    fn publish(&mut self, event: PeerEvent, ctx: &mut Context<Self>) {
        self.subscribers.retain(|s| s.recipient.connected());
        for s in &self.subscribers {
            self.queue_event(s, event.clone(), ctx);
        }
    }

    /// Queues `event` for one subscriber (see [`Self::publish`]).
    fn queue_event(&self, s: &Subscriber, event: PeerEvent, ctx: &mut Context<Self>) {
        let mut queue = s.queue.borrow_mut();
        if queue.len() >= self.max_pending_events {
            self.metrics.events_dropped.inc();
            log::warn!(
                "a peer event subscriber is {} events behind: event dropped",
                self.max_pending_events
            );
            return;
        }
        queue.push_back(event);
        if queue.len() > 1 {
            return; // a drain is running and will get to it
        }
        drop(queue);
        let (recipient, queue) = (s.recipient.clone(), s.queue.clone());
        ctx.spawn(
            async move {
                loop {
                    let Some(next) = queue.borrow().front().cloned() else {
                        break;
                    };
                    if recipient.send(next).await.is_err() {
                        queue.borrow_mut().clear();
                        break;
                    }
                    queue.borrow_mut().pop_front();
                }
            }
            .into_actor(self),
        );
    }
}

fn info_of(ip: IpAddr, e: &PeerEntry) -> PeerInfo {
    PeerInfo {
        ip,
        conn: e.facts,
        meta: e.meta.clone(),
        since: e.since_wall,
        connected_for: e.since.elapsed(),
        useful_ago: e
            .handle
            .last_useful_ms()
            .map(|t| Duration::from_millis(crate::clock::now_ms().saturating_sub(t))),
        stats: e.stats.snapshot(e.handle.bytes_out()),
    }
}

#[cfg(test)]
mod tests;
