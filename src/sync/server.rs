//! Serving peers' requests (`GetBlocks`, `GetHashes`) fairly and within bounds, off the sync
//! actor's thread. Two parts:
//!
//! - [`ServeQueue`], the policy as a plain struct (events in, decisions out; unit and property
//!   tests): every connection has its own FIFO of waiting requests, bounded in count and bytes;
//!   at most `in_service` requests of one connection are *in service* at once (taken from its
//!   queue and answered, but the answers not yet read by the peer); connections that have work
//!   and room are served in turn by deficit round robin over their work (blocks to read), so
//!   each gets an equal share of the store's reads. A request beyond its connection's
//!   bounds drops the connection (the caller disconnects it as `SlowPeer`).
//! - [`ChainServer`], the actor that carries it out on an arbiter of its own: it reads the
//!   store through a [`ChainReader`] (answers bounded by `max_response_bytes`), sends the answer
//!   on the connection the request came in on, waits for a connection to drain its answers
//!   (`PeerHandle::drained_to`) before serving it again, and drops every request of a
//!   connection that has closed (checked before each request is served and on its
//!   `PeerEvent::Disconnected`), so nothing is ever served to a requester that is gone.
//!
//! This is Bitcoin's model: a bounded amount of work per peer in progress, peers taken in turn,
//! a peer that does not read its answers is not served (and its further requests fill its own
//! queue, not anyone else's).

use std::collections::{HashMap, HashSet, VecDeque};

use actix::prelude::*;
use peerlink_actors::{ConnId, DisconnectReason, PeerEvent, PeerHandle};

use crate::app::{NodeMsg, WireHash};
use crate::chain::{ChainReader, IndexUpdate};
use crate::sync::SyncConfig;

/// What a queued request costs on top of its wire bytes (its place in the queue and the actix
/// envelope that carried it here): so that tiny requests cannot queue without bound in bytes.
pub const REQUEST_OVERHEAD_BYTES: usize = 128;

/// A connection has drained its answers when at most this many bytes are still queued for it:
/// the answers in service are then on the wire or in its socket buffer.
pub const DRAINED_BYTES: usize = 64 * 1024;

/// Requests served per turn of the actor before it lets other messages in (one store read
/// each, at most `max_response_bytes`).
const SERVE_BATCH: usize = 4;

/// Work units a connection gets per turn: one `GetBlocks` of 128 blocks (the node's own
/// request size). A `GetBlocks` costs its block count, a `GetHashes` its count / 64 (hashes
/// come from memory).
pub const SERVE_QUANTUM: u64 = 128;

/// Bounds of one connection's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Requests in service at once (answered, answers not yet drained).
    pub in_service: usize,
    /// Requests waiting in the connection's queue.
    pub queued: usize,
    /// Bytes of requests waiting (wire size plus [`REQUEST_OVERHEAD_BYTES`] each).
    pub queued_bytes: usize,
}

impl ServeLimits {
    /// The limits of `cfg`.
    pub fn from_config(cfg: &SyncConfig) -> Self {
        Self {
            in_service: cfg.serve_in_service_per_peer,
            queued: cfg.serve_queue_requests_per_peer,
            queued_bytes: cfg.serve_queue_bytes_per_peer,
        }
    }
}

/// What became of a request handed to [`ServeQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Queued.
    Queued,
    /// Over the connection's bounds: the connection was removed with all its requests; drop it.
    Drop(&'static str),
}

#[derive(Debug)]
struct ConnQueue<R> {
    /// Requests with their bytes and work.
    waiting: VecDeque<(R, usize, u64)>,
    bytes: usize,
    in_service: usize,
    /// In the round-robin ring.
    listed: bool,
    /// Work it may still do in its current turn (deficit round robin).
    deficit: u64,
    /// Its turn has started (it got its quantum).
    in_turn: bool,
}

/// The per-connection queues and the round-robin ring. See the module docs.
#[derive(Debug)]
pub struct ServeQueue<R> {
    limits: ServeLimits,
    conns: HashMap<ConnId, ConnQueue<R>>,
    ring: VecDeque<ConnId>,
}

impl<R> ServeQueue<R> {
    /// Empty queues with `limits`.
    pub fn new(limits: ServeLimits) -> Self {
        Self {
            limits,
            conns: HashMap::new(),
            ring: VecDeque::new(),
        }
    }

    /// A request of `conn` costing `bytes` arrived.
    pub fn push(&mut self, conn: ConnId, req: R, bytes: usize) -> Admit {
        self.push_work(conn, req, bytes, SERVE_QUANTUM)
    }

    /// A request of `conn` costing `bytes` in its queue and `work` units of service (blocks to
    /// read; see [`SERVE_QUANTUM`]) arrived.
    pub fn push_work(&mut self, conn: ConnId, req: R, bytes: usize, work: u64) -> Admit {
        let limits = self.limits;
        let q = self.conns.entry(conn).or_insert_with(|| ConnQueue {
            waiting: VecDeque::new(),
            bytes: 0,
            in_service: 0,
            listed: false,
            deficit: 0,
            in_turn: false,
        });
        if q.waiting.len() + 1 > limits.queued {
            self.remove(conn);
            return Admit::Drop("too many requests waiting");
        }
        if q.bytes + bytes > limits.queued_bytes {
            self.remove(conn);
            return Admit::Drop("too many request bytes waiting");
        }
        q.waiting.push_back((req, bytes, work.max(1)));
        q.bytes += bytes;
        if !q.listed && q.in_service < limits.in_service {
            q.listed = true;
            self.ring.push_back(conn);
        }
        Admit::Queued
    }

    /// The next request to serve: the first waiting request of the connection whose turn it is.
    /// It counts as in service until [`ServeQueue::drained`].
    ///
    /// Turns are deficit round robin: each turn gives a connection [`SERVE_QUANTUM`] units of
    /// work, a request is served when the connection's unused units cover it, and they carry
    /// over while it waits. So connections get equal work, not equal request counts: a
    /// 1,024-block request takes eight turns of a 128-block one.
    pub fn take_next(&mut self) -> Option<(ConnId, R)> {
        while let Some(conn) = self.ring.pop_front() {
            let Some(q) = self.conns.get_mut(&conn) else {
                continue;
            };
            let Some(&(_, _, work)) = q.waiting.front() else {
                q.listed = false;
                q.deficit = 0;
                q.in_turn = false;
                continue;
            };
            if !q.in_turn {
                q.in_turn = true;
                q.deficit = q.deficit.saturating_add(SERVE_QUANTUM);
            }
            if q.deficit < work {
                q.in_turn = false;
                self.ring.push_back(conn);
                continue;
            }
            let Some((req, bytes, work)) = q.waiting.pop_front() else {
                continue;
            };
            q.deficit -= work;
            q.bytes -= bytes;
            q.in_service += 1;
            let next_work = q.waiting.front().map(|r| r.2);
            match next_work {
                Some(w) if q.in_service < self.limits.in_service => {
                    if w <= q.deficit {
                        // Its turn goes on.
                        self.ring.push_front(conn);
                    } else {
                        q.in_turn = false;
                        self.ring.push_back(conn);
                    }
                }
                Some(_) => {
                    q.in_turn = false;
                    q.listed = false;
                }
                None => {
                    q.in_turn = false;
                    q.listed = false;
                    q.deficit = 0;
                }
            }
            return Some((conn, req));
        }
        None
    }

    /// `conn` has read its answers: its requests in service are done.
    pub fn drained(&mut self, conn: ConnId) {
        let Some(q) = self.conns.get_mut(&conn) else {
            return;
        };
        q.in_service = 0;
        if q.waiting.is_empty() {
            self.conns.remove(&conn);
        } else if !q.listed {
            q.listed = true;
            self.ring.push_back(conn);
        }
    }

    /// `conn` is gone: its waiting requests are dropped. Returns how many.
    pub fn remove(&mut self, conn: ConnId) -> usize {
        let dropped = self.conns.remove(&conn).map_or(0, |q| q.waiting.len());
        self.ring.retain(|c| *c != conn);
        dropped
    }

    /// Requests of `conn` in service.
    pub fn in_service(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |q| q.in_service)
    }

    /// Whether `conn` has reached its in-service bound.
    pub fn is_full(&self, conn: ConnId) -> bool {
        self.in_service(conn) >= self.limits.in_service
    }

    /// Requests waiting over all connections.
    pub fn waiting(&self) -> usize {
        self.conns.values().map(|q| q.waiting.len()).sum()
    }

    /// Whether some connection can be served now.
    pub fn has_ready(&self) -> bool {
        !self.ring.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------

/// A request the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeRequest {
    /// `GetBlocks`.
    Blocks {
        /// Request id.
        request_id: u64,
        /// First height.
        from: u64,
        /// Count (already checked against `MAX_BLOCKS_PER_REQUEST`).
        count: u32,
    },
    /// `GetHashes`.
    Hashes {
        /// Request id.
        request_id: u64,
        /// First height.
        from: u64,
        /// Count (already checked against `MAX_HASHES_PER_REQUEST`).
        count: u32,
    },
}

impl ServeRequest {
    /// Bytes it counts for in its connection's queue: an upper bound of its wire size (tag,
    /// three integers of at most 9 bytes) plus [`REQUEST_OVERHEAD_BYTES`].
    pub fn cost_bytes(&self) -> usize {
        40 + REQUEST_OVERHEAD_BYTES
    }

    /// Units of service it costs (see [`SERVE_QUANTUM`]).
    pub fn work(&self) -> u64 {
        match self {
            ServeRequest::Blocks { count, .. } => u64::from(*count),
            ServeRequest::Hashes { count, .. } => u64::from(*count) / 64,
        }
    }
}

/// The request server. Start it with [`ChainServer::start_on`].
pub struct ChainServer {
    /// `None` once stopped (the store's file is released when the writer closes it too).
    reader: Option<ChainReader>,
    queue: ServeQueue<ServeRequest>,
    handles: HashMap<ConnId, PeerHandle>,
    /// Connections whose drain is awaited.
    draining: HashSet<ConnId>,
    max_response_bytes: usize,
    scheduled: bool,
    stats: ServeStats,
}

/// Counters of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Requests answered.
    pub served: u64,
    /// Connections dropped for exceeding their queue bounds.
    pub dropped_conns: u64,
    /// Requests dropped because their connection had closed.
    pub dropped_requests: u64,
    /// Requests waiting now.
    pub waiting: u64,
}

/// Serve a peer's request (sent by the sync actor, which checked its counts).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Serve {
    /// The requester's connection; the answer goes there.
    pub from: PeerHandle,
    /// The request.
    pub request: ServeRequest,
}

/// The server's counters.
#[derive(Message)]
#[rtype(result = "ServeStats")]
pub struct GetServeStats;

/// Drops the reader (and every queued request) and stops; answered once the reader is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopServer;

/// Internal: serve the next batch.
#[derive(Message)]
#[rtype(result = "()")]
struct ServeNext;

impl Message for IndexUpdate {
    type Result = ();
}

impl ChainServer {
    /// Starts the server on `arbiter`, reading through `reader`.
    pub fn start_on(arbiter: &ArbiterHandle, reader: ChainReader, cfg: &SyncConfig) -> Addr<Self> {
        let limits = ServeLimits::from_config(cfg);
        let max_response_bytes = cfg.max_response_bytes;
        ChainServer::start_in_arbiter(arbiter, move |_| ChainServer {
            reader: Some(reader),
            queue: ServeQueue::new(limits),
            handles: HashMap::new(),
            draining: HashSet::new(),
            max_response_bytes,
            scheduled: false,
            stats: ServeStats::default(),
        })
    }
}

impl Actor for ChainServer {
    type Context = Context<Self>;
}

impl Handler<Serve> for ChainServer {
    type Result = ();

    fn handle(&mut self, msg: Serve, ctx: &mut Context<Self>) {
        let conn = msg.from.conn_id();
        if msg.from.is_closed() {
            self.stats.dropped_requests += 1;
            return self.forget(conn);
        }
        let cost = msg.request.cost_bytes();
        let work = msg.request.work();
        match self.queue.push_work(conn, msg.request, cost, work) {
            Admit::Queued => {
                self.handles.entry(conn).or_insert(msg.from);
            }
            Admit::Drop(why) => {
                log::warn!(
                    "disconnecting {} {conn}: {why} (it does not read its answers or floods)",
                    msg.from.ip()
                );
                self.stats.dropped_conns += 1;
                msg.from.disconnect(DisconnectReason::SlowPeer);
                self.forget(conn);
            }
        }
        self.schedule(ctx);
    }
}

impl Handler<ServeNext> for ChainServer {
    type Result = ();

    fn handle(&mut self, _: ServeNext, ctx: &mut Context<Self>) {
        self.scheduled = false;
        for _ in 0..SERVE_BATCH {
            let Some((conn, req)) = self.queue.take_next() else {
                break;
            };
            let Some(handle) = self.handles.get(&conn).filter(|h| !h.is_closed()).cloned() else {
                self.stats.dropped_requests += 1 + self.queue.remove(conn) as u64;
                self.forget(conn);
                continue;
            };
            self.answer(&handle, req);
            if self.queue.is_full(conn) && self.draining.insert(conn) {
                let h = handle.clone();
                ctx.spawn(
                    async move { h.drained_to(DRAINED_BYTES).await }
                        .into_actor(self)
                        .map(move |_, act, ctx| {
                            act.draining.remove(&conn);
                            act.queue.drained(conn);
                            act.schedule(ctx);
                        }),
                );
            } else if !self.draining.contains(&conn) && handle.queued_bytes() <= DRAINED_BYTES {
                // Answered and already on its way: not in service any more.
                self.queue.drained(conn);
            }
        }
        self.schedule(ctx);
    }
}

impl Handler<IndexUpdate> for ChainServer {
    type Result = ();

    fn handle(&mut self, update: IndexUpdate, _: &mut Context<Self>) {
        if let Some(r) = self.reader.as_mut() {
            r.follow(update);
        }
    }
}

impl Handler<StopServer> for ChainServer {
    type Result = ();

    fn handle(&mut self, _: StopServer, ctx: &mut Context<Self>) {
        self.reader = None;
        self.queue = ServeQueue::new(self.queue.limits);
        self.handles.clear();
        ctx.stop();
    }
}

impl Handler<PeerEvent> for ChainServer {
    type Result = ();

    fn handle(&mut self, event: PeerEvent, _: &mut Context<Self>) {
        if let PeerEvent::Disconnected(record) = event {
            self.stats.dropped_requests += self.queue.remove(record.conn_id) as u64;
            self.forget(record.conn_id);
        }
    }
}

impl Handler<GetServeStats> for ChainServer {
    type Result = MessageResult<GetServeStats>;

    fn handle(&mut self, _: GetServeStats, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.stats;
        s.waiting = self.queue.waiting() as u64;
        MessageResult(s)
    }
}

impl ChainServer {
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.scheduled && self.queue.has_ready() {
            self.scheduled = true;
            ctx.notify(ServeNext);
        }
    }

    fn forget(&mut self, conn: ConnId) {
        self.queue.remove(conn);
        self.handles.remove(&conn);
        self.draining.remove(&conn);
    }

    fn answer(&mut self, to: &PeerHandle, req: ServeRequest) {
        let Some(reader) = self.reader.as_ref() else {
            return;
        };
        let msg = match req {
            ServeRequest::Blocks {
                request_id,
                from,
                count,
            } => match reader.blocks(from, count as usize, self.max_response_bytes) {
                Ok(blocks) => NodeMsg::Blocks { request_id, blocks },
                Err(e) => {
                    log::error!("cannot read blocks from {from}: {e}");
                    return;
                }
            },
            ServeRequest::Hashes {
                request_id,
                from,
                count,
            } => NodeMsg::Hashes {
                request_id,
                from,
                hashes: reader
                    .hashes(from, count as usize)
                    .iter()
                    .map(|h| WireHash(*h))
                    .collect(),
            },
        };
        self.stats.served += 1;
        let _ = to.send(&msg);
    }
}

#[cfg(test)]
mod tests;
