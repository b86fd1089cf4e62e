//! `SyncActor`: the node's one decider of the chain. It holds the [`ChainView`] (the chain as
//! decided; the `ChainWriter` commits it on its own arbiter) and the [`SyncEngine`], receives
//! every application message (`Inbound<NodeMsg>`) and every peer lifecycle event (`PeerEvent`),
//! hands peers' requests to the `ChainServer`, feeds answers and announces to the engine,
//! carries out the engine's actions (send, disconnect as `Misbehaving` and ban for the fault),
//! announces each new tip once per connection and keeps the network's Hello height current. It
//! also produces (signs) blocks on request, reports status and progress, and keeps the node's ban
//! book ([`BanBook`]) in memory: every ban change is sent to the writer, which persists it in the
//! chain's redb file, before the ban is handed to the network.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::bans::{BanBook, BanConfig, BanRecord, BanRefused};
use crate::chain::produce::now_ms;
use crate::chain::ProducerKey;
use crate::sync::engine::Fault;

use actix::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use peerlink_actors::{ConnId, DisconnectReason, Inbound, Network, PeerEvent, PeerHandle};
use rand::RngCore;

use crate::app::{NodeMsg, MAX_BLOCKS_PER_REQUEST, MAX_HASHES_PER_REQUEST};
use crate::chain::writer::Committed;
use crate::chain::{short_hex, BlockHash, ChainView};
use crate::sync::engine::{Action, SyncEngine};
use crate::sync::server::{ChainServer, Serve, ServeRequest};
use crate::sync::{SyncConfig, SyncError};

/// Behind by at least this many blocks, the node logs its progress periodically (and shows the
/// progress bar if enabled): below that, catching up takes about one round trip.
pub const FAR_BEHIND_BLOCKS: u64 = 500;

/// Interval over which the sync rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The actor. Start it with [`crate::sync::start_node`].
pub struct SyncActor {
    /// The chain as decided; commits run on the writer's arbiter.
    store: Option<ChainView>,
    /// Answers peers' requests on its own arbiter.
    server: Addr<ChainServer>,
    /// The tip last announced on each peer's current connection: one `Announce` per tip hash
    /// per connection.
    announced: HashMap<IpAddr, (ConnId, BlockHash)>,
    /// `ProduceBlock` answers waiting for their commit (by commit sequence number).
    produce_waiters: Vec<(u64, tokio::sync::oneshot::Sender<()>)>,
    engine: SyncEngine,
    cfg: SyncConfig,
    net: Option<Network<NodeMsg>>,
    peers: HashMap<IpAddr, PeerHandle>,
    last_announced: Option<BlockHash>,
    rate: RateMeter,
    last_progress_log: Option<Instant>,
    bar: Option<ProgressBar>,
    key: Option<ProducerKey>,
    bans: BanBook,
    ban_cfg: BanConfig,
}

/// Whether the node follows the best chain it knows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// No known peer has a better chain.
    Synced,
    /// Downloading (or about to download) a better chain.
    Syncing,
}

impl SyncState {
    /// "synced" or "syncing".
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::Syncing => "syncing",
        }
    }
}

/// Answer to [`GetSyncStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    /// Height of our stored tip (committed to disk; sync may have decided a few blocks more).
    pub height: u64,
    /// Our tip hash.
    pub tip: BlockHash,
    /// Highest height a connected peer claims (our own height if it is higher or no peer).
    pub best_peer_height: u64,
    /// Synced or syncing.
    pub state: SyncState,
    /// Blocks written by sync since start (produced blocks not included).
    pub blocks_synced: u64,
    /// Blocks written by sync per second over the last second or so.
    pub sync_rate_blocks_per_s: f64,
    /// Peers the sync layer knows.
    pub peers: usize,
    /// Branch switches since start.
    pub reorgs: u64,
    /// Requests that stalled since start.
    pub stalls: u64,
    /// Peers disconnected as misbehaving since start.
    pub misbehaving: u64,
    /// Bytes of blocks held in memory by sync: downloaded above the tip, or applied and on
    /// their way to disk (bounded by `SyncConfig::window_bytes` plus the answers in flight).
    pub window_held_bytes: u64,
}

/// A block this node produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBlock {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: BlockHash,
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Hands the running network to the actor (sent once by `start_node`, right after
/// `Network::start`, which needs the actor's recipient first).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachNetwork(pub Network<NodeMsg>);

/// Produce one block on top of our tip now and announce it (for `--produce-every`). `payload`
/// `None` means `SyncConfig::payload_bytes` random bytes.
#[derive(Message, Debug, Default)]
#[rtype(result = "Result<ProducedBlock, SyncError>")]
pub struct ProduceBlock {
    /// The payload, or `None` for random bytes.
    pub payload: Option<Vec<u8>>,
}

/// Current sync status.
#[derive(Message, Debug)]
#[rtype(result = "SyncStatus")]
pub struct GetSyncStatus;

/// An operator bans an IP (persisted, applied to the network, its connection closed).
#[derive(Message, Debug)]
#[rtype(result = "Result<BanRecord, BanRefused>")]
pub struct BanIp {
    /// The IP.
    pub ip: IpAddr,
    /// For how long; `None`: `[bans] manual_secs`.
    pub duration: Option<Duration>,
    /// Why (free text).
    pub reason: String,
}

/// An operator lifts a ban. Answers whether there was one.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct UnbanIp(pub IpAddr);

/// The bans in force.
#[derive(Message, Debug)]
#[rtype(result = "Vec<BanRecord>")]
pub struct ListBans;

/// Stops the actor and closes the chain store (the redb file is released when this resolves).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopSync;

// ---------------------------------------------------------------------------------------------

impl SyncActor {
    /// A new actor deciding the chain of `store` (whose writer commits), handing peers'
    /// requests to `server`, checking blocks with `rule`, signing its own blocks with `key`,
    /// keeping bans in `bans` (already restored from the store; the writer persists changes)
    /// for the durations of `ban_cfg`.
    pub fn new(
        store: ChainView,
        server: Addr<ChainServer>,
        cfg: SyncConfig,
        rule: Box<dyn crate::sync::rule::BlockRule>,
        key: Option<ProducerKey>,
        bans: BanBook,
        ban_cfg: BanConfig,
    ) -> Self {
        Self {
            store: Some(store),
            server,
            announced: HashMap::new(),
            produce_waiters: Vec::new(),
            engine: SyncEngine::new(cfg.clone(), rule),
            cfg,
            net: None,
            peers: HashMap::new(),
            last_announced: None,
            rate: RateMeter::default(),
            last_progress_log: None,
            bar: None,
            key,
            bans,
            ban_cfg,
        }
    }
}

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(store) = self.store.as_mut() {
            store.set_done_to(ctx.address().recipient());
        }
        ctx.run_interval(self.cfg.tick(), |act, _ctx| act.on_tick());
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Handler<AttachNetwork> for SyncActor {
    type Result = ();

    fn handle(&mut self, msg: AttachNetwork, _ctx: &mut Context<Self>) {
        if let Some(store) = &self.store {
            msg.0.set_best_height(store.committed_tip().0);
        }
        self.net = Some(msg.0);
    }
}

impl Handler<ProduceBlock> for SyncActor {
    type Result = ResponseActFuture<Self, Result<ProducedBlock, SyncError>>;

    /// Answers once the block is on disk (and so announced and served).
    fn handle(&mut self, msg: ProduceBlock, _ctx: &mut Context<Self>) -> Self::Result {
        let produced = match self.produce(msg) {
            Ok(p) => p,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let seq = self.store.as_ref().map_or(0, |s| s.sent_seq());
        self.produce_waiters.push((seq, tx));
        Box::pin(
            async move {
                rx.await.map_err(|_| SyncError::Stopped)?;
                Ok(produced)
            }
            .into_actor(self),
        )
    }
}

impl SyncActor {
    fn produce(&mut self, msg: ProduceBlock) -> Result<ProducedBlock, SyncError> {
        let store = self.store.as_mut().ok_or(SyncError::Stopped)?;
        let key = self.key.as_ref().ok_or(SyncError::NoProducerKey)?;
        let payload = msg.payload.unwrap_or_else(|| {
            let mut p = vec![0u8; self.cfg.payload_bytes];
            rand::rng().fill_bytes(&mut p);
            p
        });
        let block = store.produce(key, payload).map_err(|reason| {
            SyncError::Chain(crate::chain::ChainError::InvalidBlock {
                height: store.height() + 1,
                reason,
            })
        })?;
        let produced = ProducedBlock {
            height: block.height,
            hash: block.hash(),
        };
        log::debug!(
            "produced block {} {}",
            produced.height,
            short_hex(&produced.hash)
        );
        let now = Instant::now();
        if let Some(store) = self.store.as_mut() {
            self.engine.local_tip_changed(now, store);
        }
        self.after_engine();
        Ok(produced)
    }
}

impl Handler<GetSyncStatus> for SyncActor {
    type Result = MessageResult<GetSyncStatus>;

    fn handle(&mut self, _msg: GetSyncStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<BanIp> for SyncActor {
    type Result = Result<BanRecord, BanRefused>;

    fn handle(&mut self, msg: BanIp, _ctx: &mut Context<Self>) -> Self::Result {
        let duration = msg
            .duration
            .unwrap_or(Duration::from_secs(self.ban_cfg.manual_secs));
        let reason = if msg.reason.trim().is_empty() {
            "operator".to_string()
        } else {
            msg.reason
        };
        self.ban(msg.ip, duration, &reason, "operator", true)
    }
}

impl Handler<UnbanIp> for SyncActor {
    type Result = bool;

    fn handle(&mut self, msg: UnbanIp, _ctx: &mut Context<Self>) -> bool {
        let ip = peerlink_actors::canonical_ip(msg.0);
        let had = self.bans.unban(ip);
        if let Some(store) = &self.store {
            store.delete_bans(vec![ip]);
        }
        if let Some(net) = &self.net {
            net.unban(ip);
        }
        log::info!("unbanned {ip}");
        had
    }
}

impl Handler<ListBans> for SyncActor {
    type Result = MessageResult<ListBans>;

    fn handle(&mut self, _msg: ListBans, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.bans.list(now_ms()))
    }
}

impl Handler<StopSync> for SyncActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: StopSync, _ctx: &mut Context<Self>) -> Self::Result {
        let store = self.store.take();
        self.peers.clear();
        Box::pin(
            async move {
                if let Some(store) = store {
                    store.close().await;
                }
            }
            .into_actor(self)
            .map(|_, _act, ctx| ctx.stop()),
        )
    }
}

impl Handler<Committed> for SyncActor {
    type Result = ();

    fn handle(&mut self, c: Committed, _ctx: &mut Context<Self>) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let reset = store.committed(c);
        let done = store.done_seq();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.produce_waiters)
            .into_iter()
            .partition(|(seq, _)| *seq <= done);
        self.produce_waiters = waiting;
        for (_, tx) in ready {
            let _ = tx.send(());
        }
        if reset {
            log::warn!("sync: chain reset to the stored tip {}", store.height());
            self.engine.local_tip_changed(Instant::now(), store);
        } else {
            // Room in the window again: schedule (and expire stalls) now, not at the next tick.
            self.engine.tick(Instant::now(), store);
        }
        self.after_engine();
    }
}

impl Handler<Inbound<NodeMsg>> for SyncActor {
    type Result = ();

    fn handle(&mut self, inbound: Inbound<NodeMsg>, _ctx: &mut Context<Self>) {
        for msg in inbound.msgs() {
            self.on_msg(&inbound.from, msg);
        }
        self.after_engine();
    }
}

impl SyncActor {
    /// One message of a burst from `handle`'s peer.
    fn on_msg(&mut self, handle: &PeerHandle, msg: NodeMsg) {
        let now = Instant::now();
        let peer = handle.ip();
        self.note_handle(handle, now);
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match msg {
            NodeMsg::Announce { height, tip } => {
                self.engine.on_announce(peer, height, tip, now, store);
            }
            NodeMsg::GetBlocks {
                request_id,
                from,
                count,
            } => {
                if count == 0 || count > MAX_BLOCKS_PER_REQUEST {
                    return self.punish(
                        handle,
                        Fault::ProtocolViolation,
                        "GetBlocks count out of range",
                    );
                }
                if self.cfg.serve {
                    self.server.do_send(Serve {
                        from: handle.clone(),
                        request: ServeRequest::Blocks {
                            request_id,
                            from,
                            count,
                        },
                    });
                }
            }
            NodeMsg::GetHashes {
                request_id,
                from,
                count,
            } => {
                if count == 0 || count > MAX_HASHES_PER_REQUEST {
                    return self.punish(
                        handle,
                        Fault::ProtocolViolation,
                        "GetHashes count out of range",
                    );
                }
                if self.cfg.serve {
                    self.server.do_send(Serve {
                        from: handle.clone(),
                        request: ServeRequest::Hashes {
                            request_id,
                            from,
                            count,
                        },
                    });
                }
            }
            NodeMsg::Blocks { request_id, blocks } => {
                let before = store.tip_hash();
                self.engine.on_blocks(peer, request_id, blocks, now, store);
                if store.tip_hash() != before {
                    // Its blocks moved our tip: among the inbound peers the network keeps
                    // when it must evict one for a newcomer.
                    handle.mark_useful();
                }
            }
            NodeMsg::Hashes {
                request_id,
                from,
                hashes,
            } => {
                self.engine
                    .on_hashes(peer, request_id, from, hashes, now, store);
            }
        }
    }
}

impl Handler<PeerEvent> for SyncActor {
    type Result = ();

    fn handle(&mut self, event: PeerEvent, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        match event {
            PeerEvent::Connected { info, handle } => {
                // Its first message may have arrived before this event (different paths).
                let known = self
                    .peers
                    .get(&info.ip)
                    .is_some_and(|h| h.conn_id() == handle.conn_id());
                if !known {
                    self.peers.insert(info.ip, handle.clone());
                    self.announce_to(&handle);
                }
                if let Some(store) = self.store.as_mut() {
                    if known {
                        self.engine
                            .peer_height_hint(info.ip, info.meta.best_height, now, store);
                    } else {
                        self.engine
                            .peer_connected(info.ip, info.meta.best_height, now, store);
                    }
                }
            }
            PeerEvent::Disconnected(record) => {
                if !record.by_peer {
                    if let Some(d) = self.ban_cfg.for_disconnect(record.reason) {
                        let why = format!("protocol_violation: closed as {}", record.reason);
                        let _ = self.ban(record.ip, d, &why, "network", false);
                    }
                }
                let current = self
                    .peers
                    .get(&record.ip)
                    .is_some_and(|h| h.conn_id() == record.conn_id);
                if current {
                    self.peers.remove(&record.ip);
                    self.announced.remove(&record.ip);
                    if let Some(store) = self.store.as_mut() {
                        self.engine.peer_disconnected(record.ip, now, store);
                    }
                }
            }
        }
        self.after_engine();
    }
}

// ---------------------------------------------------------------------------------------------

impl SyncActor {
    /// Learns a peer's handle from its message when the Connected event has not arrived yet
    /// (events and messages travel on different paths) or the connection was replaced.
    ///
    /// The map follows the registry's order: a message never replaces a live handle (only the
    /// registry's `Connected` does), and a closed connection's late message never reinstates it.
    fn note_handle(&mut self, handle: &PeerHandle, now: Instant) {
        let current = self.peers.get(&handle.ip());
        let known = current.is_some_and(|h| h.conn_id() == handle.conn_id());
        let live_other = current.is_some_and(|h| !h.is_closed());
        if known || live_other || handle.is_closed() {
            return;
        }
        self.peers.insert(handle.ip(), handle.clone());
        self.announce_to(handle);
        if let Some(store) = self.store.as_mut() {
            self.engine.peer_connected(handle.ip(), 0, now, store);
        }
    }

    /// Carries out the engine's actions and announces a new tip.
    fn after_engine(&mut self) {
        for action in self.engine.take_actions() {
            match action {
                Action::Send { peer, msg } => {
                    if let Some(h) = self.peers.get(&peer) {
                        let _ = h.send(&msg);
                    }
                }
                Action::Disconnect { peer, fault, why } => {
                    log::warn!("disconnecting {peer}: {why}");
                    if let Some(h) = self.peers.get(&peer) {
                        h.disconnect(DisconnectReason::Misbehaving);
                    }
                    let why = format!("{}: {why}", fault.as_str());
                    let _ = self.ban(peer, self.ban_cfg.for_fault(fault), &why, "sync", false);
                }
            }
        }
        let Some(store) = self.store.as_ref() else {
            return;
        };
        // Only committed blocks are announced: a peer that asks right away finds them at the
        // request server (which hears of each commit before this actor does).
        let (height, tip) = store.committed_tip();
        if self.last_announced != Some(tip) {
            self.last_announced = Some(tip);
            if let Some(net) = &self.net {
                net.set_best_height(height);
            }
            let handles: Vec<PeerHandle> = self.peers.values().cloned().collect();
            for h in &handles {
                self.announce_to(h);
            }
        }
    }

    /// Announces our tip on `handle`'s connection unless this tip was announced there already.
    fn announce_to(&mut self, handle: &PeerHandle) {
        let Some(store) = &self.store else {
            return;
        };
        let (height, tip) = store.committed_tip();
        let key = (handle.conn_id(), tip);
        if self.announced.get(&handle.ip()) == Some(&key) {
            return;
        }
        self.announced.insert(handle.ip(), key);
        let _ = handle.send(&NodeMsg::Announce { height, tip });
    }

    /// Disconnects `peer` as misbehaving and bans it for `fault`.
    fn punish(&mut self, peer: &PeerHandle, fault: Fault, why: &str) {
        log::warn!("disconnecting {}: {why}", peer.ip());
        peer.disconnect(DisconnectReason::Misbehaving);
        let why = format!("{}: {why}", fault.as_str());
        let _ = self.ban(
            peer.ip(),
            self.ban_cfg.for_fault(fault),
            &why,
            "sync",
            false,
        );
    }

    /// Records a ban in the book, persists it, then applies it to the network (which closes
    /// the IP's connection, refuses it before the handshake and never dials it).
    fn ban(
        &mut self,
        ip: IpAddr,
        duration: Duration,
        reason: &str,
        source: &str,
        operator: bool,
    ) -> Result<BanRecord, BanRefused> {
        let now = now_ms();
        let decision = match self.bans.ban(ip, duration, reason, source, now, operator) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("not banning {ip}: {e}");
                return Err(e);
            }
        };
        let record = decision.record;
        if let Some(store) = &self.store {
            store.save_ban(record.clone(), decision.evicted);
        }
        log::info!(
            "banned {} for {} s ({}; by {})",
            record.ip,
            record.until_unix_ms.saturating_sub(now) / 1000,
            record.reason,
            record.source
        );
        if let Some(net) = self.net.clone() {
            if let Some(evicted) = decision.evicted {
                net.unban(evicted);
            }
            if decision.shortened {
                net.unban(record.ip);
            }
            let (ip, left) = (
                record.ip,
                Duration::from_millis(record.until_unix_ms.saturating_sub(now)),
            );
            actix::spawn(async move { net.ban(ip, left).await });
        }
        Ok(record)
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired = self.bans.expire(now_ms());
        if let Some(store) = &self.store {
            store.delete_bans(expired);
        }
        if let Some(store) = self.store.as_mut() {
            self.engine.tick(now, store);
        }
        self.after_engine();
        self.rate.sample(now, self.engine.stats().blocks_synced);
        self.report_progress(now);
    }

    fn status(&self) -> SyncStatus {
        // The stored chain: what survives a restart and what peers are served.
        let (height, tip) = self
            .store
            .as_ref()
            .map_or((0, [0; 32]), |s| s.committed_tip());
        let best = self.engine.best_peer_height().unwrap_or(0).max(height);
        let stats = self.engine.stats();
        let behind = self.store.as_ref().is_some_and(|s| {
            self.engine.knows_better_chain(s.height(), s.tip_hash())
                || s.committed_tip().1 != s.tip_hash()
        });
        SyncStatus {
            height,
            tip,
            best_peer_height: best,
            state: if self.engine.is_syncing() || behind {
                SyncState::Syncing
            } else {
                SyncState::Synced
            },
            blocks_synced: stats.blocks_synced,
            sync_rate_blocks_per_s: self.rate.rate,
            peers: self.engine.peer_count(),
            reorgs: stats.reorgs,
            stalls: stats.stalls,
            misbehaving: stats.misbehaving,
            window_held_bytes: self.engine.held_bytes()
                + self.store.as_ref().map_or(0, |s| s.pending_bytes_held()),
        }
    }

    /// Info lines (and the optional bar) while far behind.
    fn report_progress(&mut self, now: Instant) {
        let s = self.status();
        let far = s.best_peer_height.saturating_sub(s.height) >= FAR_BEHIND_BLOCKS;
        if far {
            let due = self.last_progress_log.is_none_or(|t| {
                now.duration_since(t) >= Duration::from_millis(self.cfg.progress_log_interval_ms)
            });
            if due {
                self.last_progress_log = Some(now);
                log::info!(
                    "sync: height {} / {} ({:.0} blocks/s, {} peers)",
                    s.height,
                    s.best_peer_height,
                    s.sync_rate_blocks_per_s,
                    s.peers
                );
            }
            if self.cfg.progress_bar && self.bar.is_none() && std::io::stderr().is_terminal() {
                let bar = ProgressBar::new(s.best_peer_height);
                if let Ok(style) = ProgressStyle::with_template(
                    "sync {bar:40} {pos}/{len} blocks ({per_sec}, eta {eta})",
                ) {
                    bar.set_style(style);
                }
                self.bar = Some(bar);
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_length(s.best_peer_height);
            bar.set_position(s.height);
            if s.state == SyncState::Synced {
                bar.finish();
                self.bar = None;
            }
        }
        if !far && s.state == SyncState::Synced && self.last_progress_log.take().is_some() {
            log::info!(
                "sync: caught up at height {} ({})",
                s.height,
                short_hex(&s.tip)
            );
        }
    }
}

/// Blocks per second over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct RateMeter {
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl RateMeter {
    fn sample(&mut self, now: Instant, total: u64) {
        match self.last {
            Some((t, n)) if now.duration_since(t) >= RATE_WINDOW => {
                self.rate = (total - n) as f64 / now.duration_since(t).as_secs_f64();
                self.last = Some((now, total));
            }
            Some(_) => {}
            None => self.last = Some((now, total)),
        }
    }
}
