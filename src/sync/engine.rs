//! `SyncEngine`: the block sync policy as a plain struct, driven by events (peer up/down,
//! announce, hashes, blocks, tick) and tested without sockets. It decides what to ask whom,
//! validates every answer (shape, expected hashes, then the chain's own [`BlockRule`]), writes
//! valid blocks through the [`Chain`] trait and emits [`Action`]s (send a message, disconnect a
//! misbehaving peer with its [`Fault`]) that the actor carries out.
//!
//! ## Fork choice
//!
//! The longest valid chain wins, if its common ancestor with ours is at most `max_reorg_depth`
//! blocks below our tip. At equal height the tip we had first is kept: nothing a peer can
//! choose (such as a tip hash it grinds to be low) replaces it.
//!
//! ## One round
//!
//! 1. **Pick a source**: the best peer (highest height; ties by IP) that is higher than our
//!    chain, not cooling down after a stall and not known to be on a fork deeper than
//!    `max_reorg_depth`.
//! 2. **Locate**: `GetHashes` from our tip height. If the first hash is our tip, the source
//!    extends our chain. Otherwise ask again from `tip - max_reorg_depth` and take the highest
//!    height where the source's hash equals ours as the common ancestor; no match means the fork
//!    is too deep and the source is ignored until it announces another tip.
//! 3. **Fetch**: the source's hashes above the ancestor are the *expected* hashes. Bodies are
//!    requested in chunks of `blocks_per_request`, several in flight, spread over the peers that
//!    are ahead and on the source's chain (lowest load first), within a window of
//!    `window_blocks` above the apply point. Every block must have exactly the expected hash at
//!    its height. More hashes are fetched from the source as the window advances.
//! 4. **Apply**: contiguous blocks are checked by the [`BlockRule`] (signatures, timestamps,
//!    size: the node's rule is [`crate::sync::rule::ProducerRule`]) and go to the chain in one
//!    transaction. On a fork the branch is held until it is longer than our chain, then checked
//!    and written with truncate-and-append in one transaction (a reorg).
//!
//! ## Penalties
//!
//! Misbehaving peers are disconnected with a [`Fault`]; the node bans their IP for a duration
//! that fits the fault (`[bans]`).
//!
//! - [`Fault::InvalidBlock`]: a block the rule refuses (both the peer that sent it and the
//!   source whose hashes named it), wrong heights, blocks that do not link to each other,
//!   oversized payloads, and a source whose blocks do not match its own hashes while it
//!   announced no new tip in between.
//! - [`Fault::ProtocolViolation`]: more items than asked, hashes that answer another request.
//! - [`Fault::Unrequested`]: answers to no request of ours, beyond
//!   `unrequested_allowance` per connection (late answers to requests that already timed out
//!   are ignored instead).
//! - [`Fault::Useless`]: a peer chosen as source `useless_allowance + 1` times in a row because
//!   it claimed a longer chain, which then had nothing beyond ours.
//! - Stall (no disconnect): a request unanswered for `stall_timeout` is re-queued for another
//!   peer and the staller is excluded for `stall_timeout * 2^(stalls-1)` (at most 32 times).
//! - Not penalised: blocks from a non-source peer that differ from the expected ones (it may be
//!   on another fork; it is left out for the rest of the round).
//! - No progress (cooldown, then disconnect): an empty answer, or a locate showing the source
//!   is not ahead, lowers the peer's height and counts a strike in [`SourcePolicy`]: the peer
//!   is not asked for a doubling cooldown, and at `max_no_progress_answers` in a row it is
//!   disconnected. An answer with progress clears its strikes.
//! - Window: blocks held above the apply point plus blocks on their way to disk are bounded by
//!   `window_bytes` (the lowest missing range is always fetched while the disk keeps up).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use crate::app::{NodeMsg, WireHash, MAX_HASHES_PER_REQUEST};
pub use crate::bans::Fault;
use crate::chain::block::MAX_BLOCK_PAYLOAD_BYTES;
pub use crate::chain::Chain;
use crate::chain::{short_hex, Block, BlockHash};
use crate::sync::rule::BlockRule;
use crate::sync::sources::{SourcePolicy, Verdict};
use crate::sync::SyncConfig;

/// Timed-out request ids remembered per peer so that their late answers are not mistaken for
/// unrequested data.
const EXPIRED_IDS_KEPT: usize = 64;

/// Longest stall exclusion, as a multiple of the stall timeout.
const MAX_COOLDOWN_FACTOR: u32 = 32;

/// An effect for the actor to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` to `peer`.
    Send {
        /// The peer.
        peer: IpAddr,
        /// The message.
        msg: NodeMsg,
    },
    /// Disconnect `peer` with `DisconnectReason::Misbehaving` (and ban it for `fault`).
    Disconnect {
        /// The peer.
        peer: IpAddr,
        /// What kind of fault.
        fault: Fault,
        /// Why, for the log and the ban record.
        why: String,
    },
}

/// What the engine knows of one peer.
#[derive(Debug, Clone, Default)]
struct PeerSync {
    height: u64,
    tip: Option<BlockHash>,
    /// Bumped whenever the peer announces another tip.
    epoch: u64,
    in_flight: usize,
    stalls: u32,
    cooldown_until: Option<Instant>,
    expired: VecDeque<u64>,
    /// Tip at which the peer's chain was found unusable (fork too deep, not better).
    ignored_tip: Option<BlockHash>,
    /// Unrequested answers so far on this connection.
    unrequested: u32,
    /// Rounds in a row in which this peer, as source, had nothing beyond our chain.
    useless: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    /// Locating the ancestor; `deep` once the one-block probe failed.
    Locate { deep: bool },
    /// More expected hashes from the source.
    MoreHashes,
    /// Block bodies.
    Blocks,
}

#[derive(Debug, Clone)]
struct Request {
    peer: IpAddr,
    kind: RequestKind,
    round: u64,
    from: u64,
    count: u32,
    sent: Instant,
}

#[derive(Debug)]
struct Round {
    id: u64,
    source: IpAddr,
    source_epoch: u64,
    /// Set once the ancestor is known.
    fetching: bool,
    ancestor: u64,
    /// Expected hashes of heights `ancestor + 1 ..`.
    expected: Vec<BlockHash>,
    more_hashes_in_flight: bool,
    hashes_exhausted: bool,
    /// Whether the chain now follows the source's branch (always true for an extension).
    switched: bool,
    /// Blocks downloaded and not yet written, with the peer that sent each.
    downloaded: BTreeMap<u64, (Block, IpAddr)>,
    /// Wire bytes of `downloaded` (bounded by `window_bytes`).
    downloaded_bytes: u64,
    /// Heights requested or downloaded up to here (exclusive).
    next_unrequested: u64,
    /// Ranges to ask again (start, count).
    requeued: BTreeSet<(u64, u32)>,
    /// Peers whose blocks differed from the expected ones in this round.
    diverged: BTreeSet<IpAddr>,
}

impl Round {
    fn expected_end(&self) -> u64 {
        self.ancestor + self.expected.len() as u64
    }
    fn expected_at(&self, height: u64) -> Option<BlockHash> {
        if height <= self.ancestor {
            return None;
        }
        self.expected
            .get((height - self.ancestor - 1) as usize)
            .copied()
    }
}

/// Counters for status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Blocks written to the chain by sync since start.
    pub blocks_synced: u64,
    /// Branch switches since start.
    pub reorgs: u64,
    /// Requests that stalled.
    pub stalls: u64,
    /// Peers disconnected as misbehaving.
    pub misbehaving: u64,
}

/// The sync policy. See the module docs.
pub struct SyncEngine {
    cfg: SyncConfig,
    rule: Box<dyn BlockRule>,
    clock: fn() -> u64,
    peers: HashMap<IpAddr, PeerSync>,
    requests: HashMap<u64, Request>,
    next_request_id: u64,
    next_round_id: u64,
    round: Option<Round>,
    stats: EngineStats,
    out: Vec<Action>,
    /// Cooldowns of sources whose answers make no progress.
    sources: SourcePolicy,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("peers", &self.peers.len())
            .field("requests", &self.requests.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl SyncEngine {
    /// A new engine with no peers that writes only blocks `rule` accepts.
    pub fn new(cfg: SyncConfig, rule: Box<dyn BlockRule>) -> Self {
        Self {
            rule,
            clock: crate::chain::produce::now_ms,
            peers: HashMap::new(),
            requests: HashMap::new(),
            next_request_id: 1,
            next_round_id: 1,
            round: None,
            stats: EngineStats::default(),
            out: Vec::new(),
            sources: SourcePolicy::new(
                std::time::Duration::from_millis(cfg.no_progress_cooldown_ms),
                cfg.max_no_progress_answers,
            ),
            cfg,
        }
    }

    /// Uses `clock` (milliseconds since the Unix epoch) for the rule's timestamp checks.
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    /// Takes the actions decided so far.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Highest height any connected peer claims.
    pub fn best_peer_height(&self) -> Option<u64> {
        self.peers.values().map(|p| p.height).max()
    }

    /// Number of peers known.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Whether some peer claims a better chain than (`height`, `tip`) that is not ignored.
    pub fn knows_better_chain(&self, height: u64, tip: BlockHash) -> bool {
        self.peers.values().any(|p| {
            is_better(p.height, p.tip, height, tip)
                && (p.ignored_tip.is_none() || p.ignored_tip != p.tip)
        })
    }

    /// Bytes of downloaded blocks waiting above the apply point.
    pub fn held_bytes(&self) -> u64 {
        self.round.as_ref().map_or(0, |r| r.downloaded_bytes)
    }

    /// Whether a sync round is running.
    pub fn is_syncing(&self) -> bool {
        self.round.is_some()
    }

    /// A new connection to `peer` (first, or replacing another) with the height from its Hello.
    /// Requests sent on a replaced connection will never be answered: they go to other peers.
    pub fn peer_connected(
        &mut self,
        peer: IpAddr,
        height: u64,
        now: Instant,
        chain: &mut dyn Chain,
    ) {
        self.drop_peer_requests(peer);
        let p = self.peers.entry(peer).or_default();
        p.height = p.height.max(height);
        p.unrequested = 0;
        self.step(now, chain);
    }

    /// More news about the current connection of `peer`: the height from its Hello, learnt
    /// after its first message (events and messages travel on different paths).
    pub fn peer_height_hint(
        &mut self,
        peer: IpAddr,
        height: u64,
        now: Instant,
        chain: &mut dyn Chain,
    ) {
        let p = self.peers.entry(peer).or_default();
        p.height = p.height.max(height);
        self.step(now, chain);
    }

    /// A peer left: its requests go to others; if it was the source the round ends.
    pub fn peer_disconnected(&mut self, peer: IpAddr, now: Instant, chain: &mut dyn Chain) {
        self.drop_peer_requests(peer);
        self.peers.remove(&peer);
        if self.round.as_ref().is_some_and(|r| r.source == peer) {
            self.end_round("source left");
        }
        self.step(now, chain);
    }

    /// A peer announced its tip.
    pub fn on_announce(
        &mut self,
        peer: IpAddr,
        height: u64,
        tip: BlockHash,
        now: Instant,
        chain: &mut dyn Chain,
    ) {
        let p = self.peers.entry(peer).or_default();
        p.height = height;
        if p.tip != Some(tip) {
            // The first announce after the Hello tells its tip; only a change is news.
            if p.tip.is_some() {
                p.epoch += 1;
            }
            p.tip = Some(tip);
        }
        self.step(now, chain);
    }

    /// Our chain changed outside the engine (a block was produced): a running round is
    /// restarted from the new tip.
    pub fn local_tip_changed(&mut self, now: Instant, chain: &mut dyn Chain) {
        if self.round.is_some() {
            self.end_round("local tip changed");
        }
        self.step(now, chain);
    }

    /// Timer: expires stalled requests, then schedules.
    pub fn tick(&mut self, now: Instant, chain: &mut dyn Chain) {
        let timeout = self.cfg.stall_timeout();
        let stalled: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| now.duration_since(r.sent) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            let Some(req) = self.requests.remove(&id) else {
                continue;
            };
            self.stats.stalls += 1;
            if let Some(p) = self.peers.get_mut(&req.peer) {
                p.in_flight = p.in_flight.saturating_sub(1);
                p.stalls += 1;
                let factor = 1u32 << (p.stalls - 1).min(5);
                p.cooldown_until = Some(now + timeout * factor.min(MAX_COOLDOWN_FACTOR));
                if p.expired.len() == EXPIRED_IDS_KEPT {
                    p.expired.pop_front();
                }
                p.expired.push_back(id);
            }
            log::info!(
                "sync: peer {} stalled on request {id} ({:?} from {}); asking another peer",
                req.peer,
                req.kind,
                req.from
            );
            self.request_failed(&req);
        }
        self.step(now, chain);
    }

    /// A `Hashes` answer.
    pub fn on_hashes(
        &mut self,
        peer: IpAddr,
        request_id: u64,
        from: u64,
        hashes: Vec<WireHash>,
        now: Instant,
        chain: &mut dyn Chain,
    ) {
        let Some(req) = self.take_request(peer, request_id, "hashes") else {
            return self.step(now, chain);
        };
        if req.kind == RequestKind::Blocks || from != req.from || hashes.len() > req.count as usize
        {
            self.misbehaving(
                peer,
                Fault::ProtocolViolation,
                "hashes do not answer the request",
            );
            return self.step(now, chain);
        }
        let hashes: Vec<BlockHash> = hashes.into_iter().map(|h| h.0).collect();
        let current = self.round.as_ref().is_some_and(|r| r.id == req.round);
        if current {
            match req.kind {
                RequestKind::Locate { deep } => self.located(peer, &req, deep, &hashes, now, chain),
                RequestKind::MoreHashes => self.more_hashes(&req, &hashes),
                RequestKind::Blocks => {}
            }
        }
        self.step(now, chain);
    }

    /// A `Blocks` answer.
    pub fn on_blocks(
        &mut self,
        peer: IpAddr,
        request_id: u64,
        blocks: Vec<Block>,
        now: Instant,
        chain: &mut dyn Chain,
    ) {
        let Some(req) = self.take_request(peer, request_id, "blocks") else {
            return self.step(now, chain);
        };
        if let Err(why) = check_shape(&req, &blocks) {
            self.misbehaving(peer, Fault::InvalidBlock, &why);
            self.request_failed(&req);
            return self.step(now, chain);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stalls = 0;
            p.cooldown_until = None;
        }
        let source_epoch = self.peers.get(&peer).map(|p| p.epoch);
        let Some(round) = self.round.as_mut().filter(|r| r.id == req.round) else {
            return self.step(now, chain);
        };
        if blocks.is_empty() {
            // The peer no longer has these blocks (it reorged to a shorter chain).
            round.requeued.insert((req.from, req.count));
            if let Some(p) = self.peers.get_mut(&peer) {
                p.height = p.height.min(req.from.saturating_sub(1));
            }
            self.no_progress(peer, now);
            return self.step(now, chain);
        }
        let mismatch = blocks
            .iter()
            .find(|b| round.expected_at(b.height) != Some(b.hash()))
            .map(|b| b.height);
        if let Some(height) = mismatch {
            if peer == round.source && source_epoch == Some(round.source_epoch) {
                self.misbehaving(
                    peer,
                    Fault::InvalidBlock,
                    &format!("block {height} does not match the hash it announced"),
                );
            } else if peer == round.source {
                self.end_round("source changed its chain");
            } else {
                log::debug!("sync: peer {peer} serves another branch at {height}; left out");
                round.diverged.insert(peer);
                round.requeued.insert((req.from, req.count));
            }
            return self.step(now, chain);
        }
        self.sources.progress(peer);
        let got = blocks.len() as u32;
        if got < req.count {
            round
                .requeued
                .insert((req.from + u64::from(got), req.count - got));
        }
        for b in blocks {
            round.downloaded_bytes += b.wire_size() as u64;
            if let Some((old, _)) = round.downloaded.insert(b.height, (b, peer)) {
                round.downloaded_bytes -= old.wire_size() as u64;
            }
        }
        self.apply_ready(chain);
        self.step(now, chain);
    }

    // -----------------------------------------------------------------------------------------

    /// Starts a round if none runs, then schedules requests.
    fn step(&mut self, now: Instant, chain: &mut dyn Chain) {
        if self.round.is_none() {
            self.start_round(now, chain);
        }
        self.schedule(now, chain);
    }

    fn start_round(&mut self, now: Instant, chain: &dyn Chain) {
        let (height, tip) = (chain.height(), chain.tip_hash());
        let best = self
            .peers
            .iter()
            .filter(|(_, p)| p.cooldown_until.is_none_or(|t| t <= now))
            .filter(|(ip, _)| self.sources.available(**ip, now))
            .filter(|(_, p)| p.ignored_tip.is_none() || p.ignored_tip != p.tip)
            .filter(|(_, p)| is_better(p.height, p.tip, height, tip))
            .min_by(|(ia, a), (ib, b)| b.height.cmp(&a.height).then(ia.cmp(ib)))
            .map(|(ip, p)| (*ip, p.epoch, p.height));
        let Some((source, epoch, source_height)) = best else {
            return;
        };
        let id = self.next_round_id;
        self.next_round_id += 1;
        self.round = Some(Round {
            id,
            source,
            source_epoch: epoch,
            fetching: false,
            ancestor: 0,
            expected: Vec::new(),
            more_hashes_in_flight: false,
            hashes_exhausted: false,
            switched: false,
            downloaded: BTreeMap::new(),
            downloaded_bytes: 0,
            next_unrequested: 0,
            requeued: BTreeSet::new(),
            diverged: BTreeSet::new(),
        });
        log::debug!("sync: round {id}: source {source} at {source_height}, we are at {height}");
        let from = height.max(1);
        let count = hash_count(from, source_height);
        self.request(
            source,
            RequestKind::Locate { deep: false },
            from,
            count,
            now,
        );
    }

    /// The answer to a locate request.
    fn located(
        &mut self,
        peer: IpAddr,
        req: &Request,
        deep: bool,
        hashes: &[BlockHash],
        now: Instant,
        chain: &dyn Chain,
    ) {
        let height = chain.height();
        if hashes.is_empty() {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.height = p.height.min(req.from.saturating_sub(1));
            }
            self.no_progress(peer, now);
            self.useless_source(peer);
            return self.end_round("source has no blocks there");
        }
        let matched = (0..hashes.len())
            .rev()
            .map(|i| (req.from + i as u64, hashes[i]))
            .find(|(h, hash)| *h <= height && chain.hash_at(*h) == Some(*hash))
            .map(|(h, _)| h);
        let ancestor = match matched {
            Some(h) => h,
            None if req.from <= 1 => 0,
            None if !deep => {
                let from = height.saturating_sub(self.cfg.max_reorg_depth).max(1);
                let source_height = self.peers.get(&peer).map_or(0, |p| p.height);
                let count = hash_count(from, source_height.max(height));
                self.request(peer, RequestKind::Locate { deep: true }, from, count, now);
                return;
            }
            None => {
                log::warn!(
                    "sync: peer {peer} is on a fork deeper than {} blocks; ignoring its chain",
                    self.cfg.max_reorg_depth
                );
                self.ignore_source_chain();
                return self.end_round("fork too deep");
            }
        };
        let skip = (ancestor + 1 - req.from) as usize;
        let expected = hashes[skip.min(hashes.len())..].to_vec();
        if expected.is_empty() {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.height = p.height.min(ancestor);
            }
            self.no_progress(peer, now);
            self.useless_source(peer);
            return self.end_round("source is not ahead");
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.useless = 0;
        }
        self.sources.progress(peer);
        if ancestor < height {
            log::info!(
                "sync: peer {peer} is on another branch from height {ancestor} (we are at {height})"
            );
        }
        let Some(round) = self.round.as_mut() else {
            return;
        };
        round.fetching = true;
        round.ancestor = ancestor;
        round.switched = ancestor == height;
        round.next_unrequested = ancestor + 1;
        round.hashes_exhausted = hashes.len() < req.count as usize;
        round.expected = expected;
    }

    fn more_hashes(&mut self, req: &Request, hashes: &[BlockHash]) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        round.more_hashes_in_flight = false;
        let last = round.expected.last().copied();
        if req.from != round.expected_end() || hashes.first().copied() != last {
            return self.end_round("source changed its chain");
        }
        round.expected.extend_from_slice(&hashes[1..]);
        if hashes.len() < req.count as usize {
            round.hashes_exhausted = true;
        }
    }

    /// Writes contiguous verified blocks to the chain.
    fn apply_ready(&mut self, chain: &mut dyn Chain) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let base = if round.switched {
            chain.height()
        } else {
            round.ancestor
        };
        let mut top = base;
        while round.downloaded.contains_key(&(top + 1)) {
            top += 1;
        }
        if top == base {
            return;
        }
        if !round.switched {
            // Longer wins; at equal height the tip we have stays.
            let better = top > chain.height();
            if !better {
                let end = round.expected_end();
                if top == end && self.all_hashes_known() {
                    self.ignore_source_chain();
                    self.end_round("branch is not better than ours");
                }
                return;
            }
        }
        let (blocks, senders): (Vec<Block>, Vec<IpAddr>) = (base + 1..=top)
            .filter_map(|h| round.downloaded.remove(&h))
            .unzip();
        round.downloaded_bytes -= blocks.iter().map(|b| b.wire_size() as u64).sum::<u64>();
        let source = round.source;
        let parent_ts = chain.timestamp_at(base).unwrap_or(0);
        if let Err(bad) = self.rule.check(parent_ts, &blocks, (self.clock)()) {
            let at = (bad.height.saturating_sub(base + 1)) as usize;
            let sender = senders.get(at).copied().unwrap_or(source);
            let why = format!("invalid block {}: {}", bad.height, bad.reason);
            self.misbehaving(sender, Fault::InvalidBlock, &why);
            if sender != source {
                self.misbehaving(source, Fault::InvalidBlock, &why);
            }
            return self.end_round("invalid block");
        }
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let was_switched = round.switched;
        round.switched = true;
        let dropped = chain.height() - base;
        if let Err(e) = chain.apply(base, &blocks) {
            log::error!("sync: cannot write blocks {}..={top}: {e}", base + 1);
            return self.end_round("write failed");
        }
        if !was_switched {
            self.stats.reorgs += 1;
            log::info!(
                "sync: switched to the branch of {source} (dropped {dropped} blocks above \
                 {base}, new tip {top} {})",
                short_hex(&chain.tip_hash())
            );
        }
        self.stats.blocks_synced += blocks.len() as u64;
        if self.all_hashes_known()
            && self
                .round
                .as_ref()
                .is_some_and(|r| chain.height() >= r.expected_end())
        {
            self.end_round("caught up with the source");
        }
    }

    /// Whether the expected hashes reach the end of the source's chain.
    fn all_hashes_known(&self) -> bool {
        let Some(r) = self.round.as_ref() else {
            return true;
        };
        let source_height = self.peers.get(&r.source).map_or(0, |p| p.height);
        r.hashes_exhausted || r.expected_end() >= source_height
    }

    fn schedule(&mut self, now: Instant, chain: &dyn Chain) {
        let Some(round) = self.round.as_ref() else {
            return;
        };
        if !round.fetching {
            return;
        }
        let (source, round_id) = (round.source, round.id);
        // More hashes when the window would run past the known ones.
        let apply_base = if round.switched {
            chain.height()
        } else {
            round.ancestor
        };
        let window_end = apply_base + self.cfg.window_blocks;
        let source_height = self.peers.get(&source).map_or(0, |p| p.height);
        if !round.hashes_exhausted
            && !round.more_hashes_in_flight
            && round.expected_end() < window_end
            && round.expected_end() < source_height
            && self.requests.len() < self.cfg.max_in_flight + 1
        {
            let from = round.expected_end();
            let count = hash_count(from, source_height);
            if let Some(r) = self.round.as_mut() {
                r.more_hashes_in_flight = true;
            }
            self.request(source, RequestKind::MoreHashes, from, count, now);
        }
        loop {
            if self.blocks_in_flight() >= self.cfg.max_in_flight {
                return;
            }
            let Some((from, count)) = self.next_range(chain) else {
                return;
            };
            if self.window_full(from, chain) {
                return;
            }
            let end = from + u64::from(count) - 1;
            let Some(peer) = self.pick_peer(end, now) else {
                return;
            };
            let Some(round) = self.round.as_mut() else {
                return;
            };
            if !round.requeued.remove(&(from, count)) {
                round.next_unrequested = end + 1;
            }
            debug_assert_eq!(round.id, round_id);
            self.request(peer, RequestKind::Blocks, from, count, now);
        }
    }

    /// The next range of blocks to ask for: re-queued ones first, then new ones in the window.
    fn next_range(&self, chain: &dyn Chain) -> Option<(u64, u32)> {
        let round = self.round.as_ref()?;
        if let Some(&r) = round.requeued.iter().next() {
            return Some(r);
        }
        let apply_base = if round.switched {
            chain.height()
        } else {
            round.ancestor
        };
        let limit = round
            .expected_end()
            .min(apply_base + self.cfg.window_blocks);
        let from = round.next_unrequested.max(apply_base + 1);
        if from > limit {
            return None;
        }
        let count = (limit - from + 1).min(u64::from(self.cfg.blocks_per_request)) as u32;
        Some((from, count))
    }

    /// The least loaded peer that can serve blocks up to `end` on the source's chain.
    fn pick_peer(&self, end: u64, now: Instant) -> Option<IpAddr> {
        let round = self.round.as_ref()?;
        let source_tip = self.peers.get(&round.source).and_then(|p| p.tip);
        self.peers
            .iter()
            .filter(|(ip, p)| {
                let on_chain = **ip == round.source
                    || (p.tip.is_some()
                        && (p.tip == source_tip || p.tip == round.expected_at(p.height)));
                on_chain
                    && p.height >= end
                    && p.in_flight < self.cfg.max_in_flight_per_peer
                    && p.cooldown_until.is_none_or(|t| t <= now)
                    && self.sources.available(**ip, now)
                    && !round.diverged.contains(ip)
            })
            .min_by_key(|(ip, p)| (p.in_flight, **ip))
            .map(|(ip, _)| *ip)
    }

    /// Whether the byte window is full for a range starting at `from`: the lowest missing range
    /// (right above the apply point) is allowed while the blocks on their way to disk fit the
    /// window, so a withheld range is fetched again from another peer while nothing more piles
    /// up above it.
    fn window_full(&self, from: u64, chain: &dyn Chain) -> bool {
        let Some(round) = self.round.as_ref() else {
            return false;
        };
        let apply_base = if round.switched {
            chain.height()
        } else {
            round.ancestor
        };
        let held = round.downloaded_bytes + chain.pending_bytes();
        // Blocks still on their way to disk count too, and for every range: a slow disk stops
        // the download instead of piling up commits.
        chain.pending_bytes() >= self.cfg.window_bytes
            || (from > apply_base + 1 && held >= self.cfg.window_bytes)
    }

    /// An answer of `peer` made no progress: it cools down, or is dropped at the bound.
    fn no_progress(&mut self, peer: IpAddr, now: Instant) {
        match self.sources.no_progress(peer, now) {
            Verdict::CoolDown(until) => log::debug!(
                "sync: peer {peer} answered without progress; not asked for {:?}",
                until.saturating_duration_since(now)
            ),
            Verdict::Drop => self.misbehaving(
                peer,
                Fault::Useless,
                &format!(
                    "{} answers in a row without progress",
                    self.cfg.max_no_progress_answers
                ),
            ),
        }
    }

    fn blocks_in_flight(&self) -> usize {
        self.requests
            .values()
            .filter(|r| r.kind == RequestKind::Blocks)
            .count()
    }

    fn request(&mut self, peer: IpAddr, kind: RequestKind, from: u64, count: u32, now: Instant) {
        let Some(round) = self.round.as_ref() else {
            return;
        };
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let msg = match kind {
            RequestKind::Blocks => NodeMsg::GetBlocks {
                request_id,
                from,
                count,
            },
            _ => NodeMsg::GetHashes {
                request_id,
                from,
                count,
            },
        };
        self.requests.insert(
            request_id,
            Request {
                peer,
                kind,
                round: round.id,
                from,
                count,
                sent: now,
            },
        );
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight += 1;
        }
        self.out.push(Action::Send { peer, msg });
    }

    /// Removes a request answered by `peer`; `None` (after dealing with it) if there was none.
    fn take_request(&mut self, peer: IpAddr, request_id: u64, what: &str) -> Option<Request> {
        match self.requests.get(&request_id) {
            Some(r) if r.peer == peer => {
                let r = self.requests.remove(&request_id)?;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.in_flight = p.in_flight.saturating_sub(1);
                }
                Some(r)
            }
            _ => {
                let late = self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.expired.contains(&request_id));
                if late {
                    log::debug!("sync: late {what} from {peer} for request {request_id}; ignored");
                } else {
                    let allowance = self.cfg.unrequested_allowance;
                    let Some(count) = self.peers.get_mut(&peer).map(|p| {
                        p.unrequested = p.unrequested.saturating_add(1);
                        p.unrequested
                    }) else {
                        // Already dropped (disconnected as misbehaving): answers still under
                        // way when it was dropped change nothing.
                        log::debug!("sync: {what} from dropped peer {peer}; ignored");
                        return None;
                    };
                    if count > allowance {
                        self.misbehaving(
                            peer,
                            Fault::Unrequested,
                            &format!(
                                "unrequested {what} (request {request_id}), {count} on this \
                                 connection (allowance {allowance})"
                            ),
                        );
                    } else {
                        log::debug!("sync: unrequested {what} from {peer} ({count}); tolerated");
                    }
                }
                None
            }
        }
    }

    /// Puts a failed request's work back.
    fn request_failed(&mut self, req: &Request) {
        let Some(round) = self.round.as_mut().filter(|r| r.id == req.round) else {
            return;
        };
        match req.kind {
            RequestKind::Blocks => {
                round.requeued.insert((req.from, req.count));
            }
            RequestKind::MoreHashes => round.more_hashes_in_flight = false,
            RequestKind::Locate { .. } => self.end_round("locate failed"),
        }
    }

    fn drop_peer_requests(&mut self, peer: IpAddr) {
        let ids: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(req) = self.requests.remove(&id) {
                self.request_failed(&req);
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.expired.len() == EXPIRED_IDS_KEPT {
                    p.expired.pop_front();
                }
                p.expired.push_back(id);
            }
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight = 0;
        }
    }

    /// The source had nothing beyond our chain although it claimed more.
    fn useless_source(&mut self, peer: IpAddr) {
        let allowance = self.cfg.useless_allowance;
        let count = self.peers.get_mut(&peer).map_or(0, |p| {
            p.useless = p.useless.saturating_add(1);
            p.useless
        });
        if count > allowance {
            self.misbehaving(
                peer,
                Fault::Useless,
                &format!("claimed a longer chain {count} times in a row and had none"),
            );
        }
    }

    fn misbehaving(&mut self, peer: IpAddr, fault: Fault, why: &str) {
        log::warn!("sync: peer {peer} misbehaves: {why}; disconnecting");
        self.stats.misbehaving += 1;
        self.drop_peer_requests(peer);
        self.peers.remove(&peer);
        if self.round.as_ref().is_some_and(|r| r.source == peer) {
            self.end_round("source misbehaved");
        }
        self.out.push(Action::Disconnect {
            peer,
            fault,
            why: why.to_string(),
        });
    }

    fn ignore_source_chain(&mut self) {
        let Some(round) = self.round.as_ref() else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&round.source) {
            p.ignored_tip = p.tip.or(Some([0; 32]));
        }
    }

    fn end_round(&mut self, why: &str) {
        if let Some(round) = self.round.take() {
            log::debug!("sync: round {} with {} ends: {why}", round.id, round.source);
            // Requests of the round are left to finish or time out; their answers are ignored.
        }
    }
}

/// Whether a chain at (`height`, `tip`) beats ours: only a longer one does. At equal height we
/// keep the tip we had first, whatever its hash (a peer could grind a lower hash in a few
/// tries). The tip and our tip are accepted for callers that want to log them.
pub fn is_better(
    height: u64,
    _tip: Option<BlockHash>,
    our_height: u64,
    _our_tip: BlockHash,
) -> bool {
    height > our_height
}

/// How many hashes to ask for from `from` when the peer is at `peer_height`.
fn hash_count(from: u64, peer_height: u64) -> u32 {
    (peer_height.saturating_sub(from) + 1).min(u64::from(MAX_HASHES_PER_REQUEST)) as u32
}

/// Checks that a `Blocks` answer is shaped like an answer to `req`: no more than asked,
/// consecutive heights from the requested one, linked to each other, payloads within bounds.
pub fn check_shape(req_from_count: &impl RangeLike, blocks: &[Block]) -> Result<(), String> {
    let (from, count) = req_from_count.range();
    if blocks.len() > count as usize {
        return Err(format!("{} blocks for a request of {count}", blocks.len()));
    }
    for (i, b) in blocks.iter().enumerate() {
        if b.height != from + i as u64 {
            return Err(format!(
                "block at position {i} has height {}, expected {}",
                b.height,
                from + i as u64
            ));
        }
        if b.payload.len() > MAX_BLOCK_PAYLOAD_BYTES {
            return Err(format!(
                "block {} payload of {} bytes",
                b.height,
                b.payload.len()
            ));
        }
        if i > 0 && b.prev != blocks[i - 1].hash() {
            return Err(format!(
                "block {} does not link to block {}",
                b.height,
                b.height - 1
            ));
        }
    }
    Ok(())
}

/// Something that names a requested range of heights.
pub trait RangeLike {
    /// First height and count.
    fn range(&self) -> (u64, u32);
}

impl RangeLike for Request {
    fn range(&self) -> (u64, u32) {
        (self.from, self.count)
    }
}

impl RangeLike for (u64, u32) {
    fn range(&self) -> (u64, u32) {
        *self
    }
}

#[cfg(test)]
mod tests;
