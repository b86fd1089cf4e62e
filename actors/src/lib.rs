//! # peerlink-actors
//!
//! Peer-to-peer networking for blockchain-style nodes on the actix actor model, with one rule
//! above all: **one connection per peer IP, and both ends agree on which**. The crate knows
//! nothing of blocks or chains; applications plug in their own message type.
//!
//! ## Who owns what
//!
//! - [`PeerRegistry`] (one per node) owns the map canonical IP -> connection entry. It is the
//!   only authority on who is connected. Sessions `Register` after their handshake and
//!   `Unregister` (with their [`ConnId`]) when they stop; duplicates are settled by
//!   [`DuplicatePolicy`], a pure rule both ends compute identically from the two node nonces.
//!   Races are serialized by its mailbox: there is no lock around peer state anywhere.
//!   Broadcasts go through it too: it hands each one to a lane per session thread (`lanes`),
//!   having told the lanes of every connection it added or removed, in mailbox order.
//! - [`PeerSession`] (one per TCP connection) owns the socket: the read half as a frame stream,
//!   the write half behind a writer task with a per-peer byte budget ([`PeerHandle`]), the
//!   handshake, ping/pong and the close path. It delivers application messages to the
//!   application's recipient as [`Inbound`].
//! - [`Acceptor`] owns the listener: limits, bans, one session per accepted socket.
//! - [`Connector`] owns the dial plan ([`DialPlan`]): target outbound count, per-address
//!   exponential backoff with jitter, outbound sockets bound to the node's own IP.
//!
//! Messages flow like this:
//!
//! ```text
//!  Acceptor --start--> PeerSession <--start-- Connector <--DialEvent-- PeerSession
//!                        |   ^                     ^
//!      Register/Unregister   | Close               | PeerEvent (Connected/Disconnected)
//!                        v   |                     |
//!  application --SendToPeer/Broadcast/GetPeers--> PeerRegistry --PeerEvent--> subscribers
//!  application <--Inbound<M>-- PeerSession        (or PeerHandle::send, no registry hop)
//! ```
//!
//! Sessions run on a pool of Arbiters (one thread each, one per core by default), which several
//! networks in one process may share ([`SessionThreads`]); sockets are handed over as std
//! sockets because a tokio socket stays on the reactor that created it. A session's writer task
//! owns the write half; senders copy encoded frames into the peer's outbox, a byte buffer behind
//! the send path's one short lock (held for a copy or a buffer swap, never across user code or
//! I/O), and the writer writes all that is queued at once.
//!
//! ## Layout
//!
//! - `protocol`: frames, MessagePack encoding, the length-prefixed codec (spec: `PROTOCOL.md`).
//! - `session`, `handle`, `credit`: the session actor, its send side, its inbound budget.
//! - `lanes`: per-session-thread broadcast fan-out.
//! - `registry`, `policy`: the registry actor and its duplicate rule.
//! - `acceptor`, `connector`, `dial_plan`, `bans`: starting connections.
//! - `network`: the public entry point; `config`, `constants`, `metrics`, `error`.
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
//!     fn handle(&mut self, m: Inbound<String>, _: &mut Context<Self>) {
//!         println!("{} says {}", m.from.ip(), m.msg);
//!         let _ = m.from.send(&format!("echo: {}", m.msg)); // reply on the same socket
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

pub mod acceptor;
pub mod bans;
pub mod config;
pub mod connector;
pub mod constants;
pub mod credit;
pub mod dial_plan;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
mod lanes;
mod level;
pub mod metrics;
pub mod network;
pub mod policy;
pub mod protocol;
pub mod registry;
pub mod session;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub use acceptor::Acceptor;
pub use config::NetworkConfig;
pub use connector::Connector;
pub use dial_plan::DialPlan;
pub use error::{CodecError, ConfigError, NetworkError};
pub use handle::{PeerHandle, SendOutcome};
pub use metrics::NetMetrics;
pub use network::{AppMessage, Inbound, InboundBatch, Network, NetworkBuilder, SessionThreads};
pub use policy::DuplicatePolicy;
pub use protocol::{DisconnectReason, Frame, Hello};
pub use registry::{DisconnectRecord, PeerEvent, PeerInfo, PeerRegistry, RegistryStats};
pub use session::PeerSession;

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
