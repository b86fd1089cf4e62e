//! `SessionEnv`: everything a session needs that is the same for all sessions of one network
//! (configuration, identity, the registry's address, delivery, lanes, metrics, the shutdown
//! signal and the tracker that shutdown awaits). Built once by [`crate::Network`] and shared
//! behind an `Arc`; lower modules import it from here, not from the entry point.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NetworkConfig;
use crate::delivery::Delivery;
use crate::handle::PeerHandle;
use crate::lanes::LaneLink;
use crate::metrics::NetMetrics;
use crate::protocol::Frame;
use crate::protocol::HelloPolicy;
use crate::registry::PeerRegistry;
use crate::ConnId;

/// Everything a session needs that is the same for all sessions of a node.
pub(crate) struct SessionEnv {
    pub config: NetworkConfig,
    pub node_nonce: u64,
    pub listen_addr: SocketAddr,
    pub listen_port: u16,
    pub hello_policy: HelloPolicy,
    pub registry: Addr<PeerRegistry>,
    /// How sessions hand bursts of application messages to the application.
    pub delivery: Delivery,
    /// The sessions' ends of the broadcast lanes, by session thread index.
    pub lane_links: Vec<LaneLink>,
    pub metrics: Arc<NetMetrics>,
    pub best_height: Arc<AtomicU64>,
    /// Cancelled once at shutdown: every session, registered or still handshaking, closes.
    pub shutdown: CancellationToken,
    /// Every session and every writer task holds a token of this tracker until it is gone;
    /// shutdown waits for the tracker to empty (completion by ownership, no polling).
    pub tasks: TaskTracker,
    /// Where sessions forward address gossip frames (None: discovery off, frames ignored).
    pub discovery: Option<Recipient<GossipFrame>>,
}

/// A gossip frame a session received, forwarded with its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct GossipFrame {
    /// The session's connection.
    pub conn: ConnId,
    /// Its send side, for the answer.
    pub handle: PeerHandle,
    /// `GetAddrs` or `Addrs`.
    pub frame: Frame,
}
