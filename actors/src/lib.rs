//! # peerlink-actors
//!
//! Peer-to-peer networking for blockchain-style nodes on the actix actor model, with one rule
//! above all: **one connection per peer IP, and both ends agree on which**. The crate knows
//! nothing of blocks or chains; applications plug in their own message type.
//!
//! ## Who owns what
//!
//! - The **registry** (`PeerRegistry`, one per node) owns the map canonical IP -> connection
//!   entry. It is the only authority on who is connected. Sessions register after their
//!   handshake and unregister (with their [`ConnId`]) when they stop; a stale unregister is
//!   ignored. Duplicates are settled by a pure rule both ends compute identically from the two
//!   node nonces. Races are serialized by its mailbox: there is no lock around peer state. After
//!   every change it publishes its map as IP -> [`PeerHandle`] (one writer, read by
//!   [`Network::send`] and [`Network::handle`] without a mailbox hop) and tells the broadcast
//!   lanes which connections they serve.
//! - A **session** (`PeerSession`, one per TCP connection) owns the socket: the read half as a
//!   frame stream, the handshake, ping/pong and the close path. Its **writer task** owns the
//!   write half: senders copy encoded frames into the peer's outbox, a byte buffer behind the
//!   send path's one short lock (held for a copy or a buffer swap, never across user code or
//!   I/O), and the writer writes all that is queued at once, within a per-peer byte budget. A
//!   message sent while nothing is in flight (a request, a reply) is written by its sender
//!   itself, with the write half borrowed from the idle writer for one write that never waits:
//!   it does not wait for the writer's thread to wake. The session hands bursts of application
//!   messages to the application as [`Inbound`].
//! - A **lane** (one per session thread and network) copies each broadcast into the outboxes of
//!   its thread's sessions, in the order the registry handled broadcasts and membership changes.
//! - The **acceptor** owns the listener: limits, bans, one session per accepted socket. Every
//!   accepted socket passes the admission policy (`discovery::Admission`): handshakes pending
//!   per canonical IP (default 4), per /24 or /64 subnet (16) and in total (32), and an accept
//!   rate per network group (10/s after a burst of 40). A refused socket gets
//!   `Disconnect{too_many_peers}` and costs nothing else; an admitted one's session holds a
//!   pending slot that ends, by ownership, when its handshake does.
//! - **Eviction**: when a newcomer completes its handshake and inbound slots
//!   ([`NetworkConfig::max_inbound`]) are full, the registry runs `discovery::select_to_evict`
//!   over its inbound peers and closes the one chosen with `Disconnect{evicted}`, or refuses the
//!   newcomer when all are protected: a few by keyed network group, the lowest pings, the most
//!   recently useful (the application marks a peer useful with [`PeerHandle::mark_useful`] or
//!   [`Network::mark_useful`], e.g. after a new block), half of the rest by uptime; peers younger
//!   than `eviction_min_age_ms` (10 s) and the configured `peers` are never evicted.
//! - The **connector** owns the dial plan: target outbound count, per-address exponential
//!   backoff with jitter, outbound sockets bound to the node's own IP.
//!
//! Messages flow like this:
//!
//! ```text
//!  acceptor --start--> session <--start-- connector <--dial events-- session
//!                      |  ^                   ^
//!   register/unregister|  | close             | peer events (connected/disconnected)
//!                      v  |                   |
//!  application --broadcast/queries--> registry --peer events--> subscribers (application)
//!                                        |  \--publishes IP -> PeerHandle--> Network::send
//!                       membership+broadcast (one channel, registry order)
//!                                        v
//!                                 lane (per session thread) --copies--> outbox --> writer --> socket
//!  application --PeerHandle::send / Network::send--> outbox --> writer --> socket
//!  socket --> session --Inbound<M> (one burst)--> application
//! ```
//!
//! ## Threads
//!
//! - **Control plane**: the registry, acceptor and connector run on an arbiter of their own,
//!   which runs nothing else: no session, application, storage or admin work.
//! - **Session threads**: sessions, writers and lanes run on a pool of arbiters (one thread
//!   each, one per core by default), which several networks in one process may share
//!   ([`SessionThreads`], which also shares the control plane thread). Sockets are handed over as
//!   std sockets because a tokio socket stays on the reactor that created it.
//! - **Application**: wherever the application starts its actors (the node runs its sync actor
//!   and its storage on arbiters of their own).
//!
//! ## The public API
//!
//! [`Network`] (start with [`Network::start`] or [`Network::builder`]) is the entry point:
//! send by IP ([`Network::send`]), through a kept [`PeerHandle`] (the fast path), or to every
//! peer ([`Network::broadcast`]); receive bursts as [`Inbound`]; watch [`PeerEvent`]s; query
//! [`PeerInfo`] and [`RegistryStats`]. Every send reports a [`SendOutcome`]; every disconnect
//! has a [`DisconnectReason`]. [`wire`] exposes the wire format for tools and tests that speak
//! the protocol directly (spec: `PROTOCOL.md`). With the `test-util` feature, `testkit` gives
//! application developers fake peers to unit-test their actors without sockets.
//!
//! ## Layout
//!
//! - `network` (entry point), `pool` (threads), `env` (what sessions share), `delivery`.
//! - `session`, `handle`, `credit`, `level`: the session actor, its send side, its inbound
//!   budget, the byte-count waiter both use.
//! - `discovery`: address book, gossip rules, outbound selection and seeds as plain policy
//!   structs (public, with the seeded simulator `sim` that drives them), the discovery actor on
//!   the control plane, and the [`AddrStore`] trait through which the application persists the
//!   book and the anchors (loads and saves on a thread of their own). It re-exports the
//!   policies below it: `admission` and `eviction` (used by the acceptor and the registry) and
//!   `netgroup` (network groups, subnets, reachability, the keyed hash, the token bucket).
//! - `secure`: node keys, the Noise XX handshake and the AEAD record layer every connection runs
//!   under the frame codec (by default), pinning and `allowed_keys`.
//! - `lanes`: per-session-thread broadcast fan-out.
//! - `registry`, `policy`: the registry actor and its duplicate rule.
//! - `acceptor`, `connector`, `dial_plan`, `bans`, `permit`: starting connections.
//! - `protocol`: frames, MessagePack encoding, the length-prefixed codec.
//! - `config`, `constants`, `metrics`, `error`, `clock` (the monotonic milliseconds handed to
//!   the policies).
//!
//! ## Example
//!
//! ```
//! use actix::prelude::*;
//! use peerlink_actors::{Inbound, Network, NetworkConfig};
//!
//! /// The application's actor: receives typed messages from peers.
//! struct Chat;
//! impl Actor for Chat { type Context = Context<Self>; }
//! impl Handler<Inbound<String>> for Chat {
//!     type Result = ();
//!     fn handle(&mut self, inbound: Inbound<String>, _: &mut Context<Self>) {
//!         for msg in inbound.msgs() {
//!             println!("{} says {msg}", inbound.from.ip());
//!             let _ = inbound.from.send(&format!("echo: {msg}")); // reply on the same socket
//!         }
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     let config = NetworkConfig {
//!         listen: "127.0.0.1:0".parse().unwrap(),
//!         ..NetworkConfig::default()
//!     };
//!     let net: Network<String> = Network::start(config, Chat.start().recipient()).await.unwrap();
//!     assert!(net.peers().await.is_empty());
//!     net.shutdown().await;
//! }
//! ```
#![deny(missing_docs)]

mod acceptor;
mod admission;
mod bans;
mod clock;
mod config;
mod connector;
mod constants;
mod credit;
mod delivery;
mod dial_plan;
pub mod discovery;
mod env;
mod error;
mod eviction;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod lanes;
mod level;
mod metrics;
mod netgroup;
mod network;
mod permit;
mod policy;
mod pool;
mod protocol;
mod reason;
mod registry;
pub mod secure;
mod session;
mod session_api;
#[cfg(any(test, feature = "test-util"))]
pub mod testkit;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub use config::NetworkConfig;
pub use delivery::{AppMessage, Inbound};
pub use dial_plan::AddrStatus;
pub use discovery::{sim, AddrStore, AddrStoreError, DiscoveryStats, StoredBook};
pub use error::{CodecError, ConfigError, NetworkError};
pub use handle::{PeerHandle, SendOutcome};
pub use metrics::NetMetrics;
pub use network::{Network, NetworkBuilder};
pub use policy::ConnFacts;
pub use pool::SessionThreads;
pub use reason::DisconnectReason;
pub use registry::{DisconnectRecord, PeerEvent, PeerInfo, PeerMeta, RegistryStats};
pub use secure::{NodeKey, PeerAddr, PublicKey, Transport};
pub use session_api::PeerStats;

/// The wire format, for tools and tests that speak the protocol directly (raw peers, fuzzers,
/// other implementations' test vectors). The spec is `PROTOCOL.md`; applications never need
/// this module.
pub mod wire {
    pub use crate::constants::{
        DEFAULT_MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, MAX_USER_AGENT_BYTES, PROTOCOL_VERSION,
        READ_BUFFER_INITIAL_BYTES,
    };
    pub use crate::protocol::{
        decode_app, encode_app, encode_apps, Frame, FrameCodec, Hello, HelloPolicy, WireAddr,
        LENGTH_PREFIX_BYTES, MAX_ADDRS_PER_FRAME,
    };
}

/// Tunables with their reasons: defaults of [`NetworkConfig`] and fixed limits.
pub mod limits {
    pub use crate::constants::*;
}

/// Unique, monotonic id of one connection within this process. `Unregister` carries it so that
/// a replaced session's late cleanup can never remove its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The next id; never repeats within a process.
    pub fn next() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Who dialled a connection, from this node's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer dialled us.
    Inbound,
    /// We dialled the peer.
    Outbound,
}

impl Direction {
    /// "inbound" or "outbound".
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The registry key for an address: IPv4-mapped IPv6 addresses become IPv4, so the same
/// machine never appears under two keys.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_is_canonicalized() {
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(canonical_ip(mapped), IpAddr::from([127, 0, 0, 2]));
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }

    #[test]
    fn conn_ids_are_unique_and_increasing() {
        let a = ConnId::next();
        let b = ConnId::next();
        assert!(b > a);
    }
}
