//! Block sync: the protocol (messages in [`crate::app::NodeMsg`]), the policy
//! ([`engine::SyncEngine`], plain and unit-tested), the actor that carries it out
//! ([`actor::SyncActor`]) and [`start_node`], which starts the actor and the network together.
//!
//! ## Protocol
//!
//! - `Announce { height, tip }`: sent to a peer when its connection opens and to every peer
//!   whenever our tip changes (once per tip hash, so announces never loop). A block crosses
//!   several hops because each node that stores it announces its new tip to its own peers, who
//!   pull it. The Hello's best height gives the first estimate before the first announce.
//! - `GetHashes { request_id, from, count }` / `Hashes { request_id, from, hashes }`: the
//!   responder's block hashes from `from`; used to find the common ancestor (first from our tip,
//!   then from `tip - max_reorg_depth`) and to know every block's hash before fetching it.
//! - `GetBlocks { request_id, from, count }` / `Blocks { request_id, blocks }`: up to `count`
//!   consecutive blocks, fewer if the responder's chain ends or the answer would exceed
//!   `SyncConfig::max_response_bytes` (always under the frame cap; at least one block).
//!
//! Peers' requests are answered by [`server::ChainServer`] on its own arbiter (per-connection
//! bounds, round-robin, nothing served to a closed connection); chain changes are committed by
//! [`crate::chain::ChainWriter`] on another; [`sources::SourcePolicy`] cools down sources whose
//! answers make no progress. See README's thread map.
//!
//! Replies go out on the socket the request came in on (`PeerHandle::send`); request ids are
//! unique per requester, answers to unknown ids are misbehaviour, answers to timed-out ids are
//! ignored. See [`engine`] for fork choice, the reorg limit and penalties.
//!
//! ## Wiring (for the node)
//!
//! ```ignore
//! let store = ChainStore::open(&data_dir, &network_name)?;          // verifies, resumes
//! let node = sync::start_node(net_config, store, sync_config).await?; // sets net genesis
//! node.produce().await?;                                              // --produce-every tick
//! let status = node.status().await?;                                  // admin API
//! node.shutdown().await;                                              // closes the store
//! ```
//!
//! Offline: `chain::produce(&mut store, n, payload_bytes)` (`peerlink produce`).

pub mod actor;
pub mod config;
pub mod engine;
pub mod server;
pub mod sources;

use actix::prelude::*;
use peerlink_actors::{Network, NetworkConfig, NetworkError};

use crate::app::NodeMsg;
use crate::chain::{ChainError, ChainStore, ChainView};
use crate::sync::server::ChainServer;

pub use actor::{
    AttachNetwork, GetSyncStatus, ProduceBlock, ProducedBlock, StopSync, SyncActor, SyncState,
    SyncStatus,
};
pub use config::SyncConfig;
pub use engine::{Action, Chain, SyncEngine};

/// Errors of the sync layer.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A configuration value is invalid.
    #[error("sync config: {key}: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The network could not start.
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    /// The chain store failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The sync actor has stopped.
    #[error("sync actor stopped")]
    Stopped,
}

impl From<MailboxError> for SyncError {
    fn from(_: MailboxError) -> Self {
        SyncError::Stopped
    }
}

/// A running node: the sync actor (owning the chain) and its network.
#[derive(Clone)]
pub struct SyncNode {
    /// The sync actor: send it [`ProduceBlock`], [`GetSyncStatus`], [`StopSync`].
    pub actor: Addr<SyncActor>,
    /// The network, typed by [`NodeMsg`].
    pub net: Network<NodeMsg>,
    /// The request server (its counters: [`server::GetServeStats`]).
    pub server: Addr<ChainServer>,
    /// The node's own arbiters (sync actor, chain writer, request server), stopped by
    /// [`SyncNode::shutdown`].
    threads: Vec<ArbiterHandle>,
}

/// Starts the node's three arbiters (threads) and their actors: the chain writer (owns the
/// store, commits), the request server (reads the store, answers peers) and the sync actor
/// (decides); then the network (whose application recipient is the sync actor, and whose Hello
/// carries the store's genesis hash and height), subscribes the actor and the server to peer
/// events and hands the actor the network. No actor that handles peers' messages touches the
/// disk on its own thread. Must run inside an actix system.
pub async fn start_node(
    mut net_config: NetworkConfig,
    store: ChainStore,
    sync_config: SyncConfig,
) -> Result<SyncNode, SyncError> {
    sync_config.validate(net_config.max_frame_bytes)?;
    net_config.genesis = store.genesis_hash();
    let height = store.height();
    let threads: Vec<ArbiterHandle> = (0..3).map(|_| Arbiter::new().handle()).collect();
    let server = ChainServer::start_on(&threads[2], store.reader(), &sync_config);
    let view = ChainView::start(&threads[1], store, server.clone().recipient());
    let actor_server = server.clone();
    let actor = SyncActor::start_in_arbiter(&threads[0], move |_| {
        SyncActor::new(view, actor_server, sync_config)
    });
    let net = match Network::start(net_config, actor.clone().recipient()).await {
        Ok(net) => net,
        Err(e) => {
            let _ = server.send(server::StopServer).await;
            let _ = actor.send(StopSync).await;
            stop_threads(&threads);
            return Err(e.into());
        }
    };
    net.set_best_height(height);
    net.subscribe(actor.clone().recipient());
    net.subscribe(server.clone().recipient());
    actor.send(AttachNetwork(net.clone())).await?;
    Ok(SyncNode {
        actor,
        net,
        server,
        threads,
    })
}

fn stop_threads(threads: &[ArbiterHandle]) {
    for t in threads {
        t.stop();
    }
}

impl SyncNode {
    /// Current status.
    pub async fn status(&self) -> Result<SyncStatus, SyncError> {
        Ok(self.actor.send(GetSyncStatus).await?)
    }

    /// Produces one block with a random payload and announces it.
    pub async fn produce(&self) -> Result<ProducedBlock, SyncError> {
        self.actor.send(ProduceBlock::default()).await?
    }

    /// Shuts the network down, then stops the request server and the sync actor and closes the
    /// store (its file is released when this returns).
    pub async fn shutdown(&self) {
        self.net.shutdown().await;
        let _ = self.server.send(server::StopServer).await;
        let _ = self.actor.send(StopSync).await;
        stop_threads(&self.threads);
    }
}
