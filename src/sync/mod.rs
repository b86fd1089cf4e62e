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
//! ## Validity
//!
//! Sync checks what every chain needs (heights, links by hash, the hashes the source named)
//! and asks a [`rule::BlockRule`] for the rest; the node's rule is [`rule::ProducerRule`]
//! (producer signature, timestamps, size). Another application passes its own rule in
//! [`NodeSetup::rule`].
//!
//! ## Wiring (for the node)
//!
//! ```no_run
//! # use peerlink::chain::{ChainParams, ChainStore, ProducerKey};
//! # use peerlink::sync::{self, NodeSetup, SyncConfig};
//! # async fn wire(
//! #     data_dir: std::path::PathBuf,
//! #     chain_params: ChainParams,
//! #     key: ProducerKey,
//! #     net_config: peerlink_actors::NetworkConfig,
//! #     sync_config: SyncConfig,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! let store = ChainStore::open(&data_dir, &chain_params)?;           // verifies, resumes
//! let setup = NodeSetup { producer_key: Some(key), ..NodeSetup::default() };
//! let node = sync::start_node_with(net_config, store, sync_config, setup).await?;
//! node.produce().await?;                                              // --produce-every tick
//! let status = node.status().await?;                                  // admin API
//! node.shutdown().await;                                              // closes the store
//! # Ok(()) }
//! ```
//!
//! Offline: `chain::produce(&mut store, &key, n, payload_bytes)` (`peerlink produce`).

pub mod actor;
pub mod config;
pub mod engine;
pub mod rule;
pub mod server;
pub mod sources;

use std::net::IpAddr;
use std::time::Duration;

use actix::prelude::*;
use peerlink_actors::discovery::DiscoveryConfig;
use peerlink_actors::{Network, NetworkConfig, NetworkError, SessionThreads};

use crate::app::NodeMsg;
use crate::bans::{BanBook, BanConfig, BanRecord, BanRefused};
use crate::chain::producer::hex;
use crate::chain::{ChainError, ChainStore, ChainView, ProducerKey};
use crate::sync::server::ChainServer;

pub use actor::{
    AttachNetwork, BanIp, GetSyncStatus, ListBans, ProduceBlock, ProducedBlock, StopSync,
    SyncActor, SyncState, SyncStatus, UnbanIp,
};
pub use config::SyncConfig;
pub use engine::{Action, Chain, Fault, SyncEngine};
pub use rule::{BlockRule, InvalidBlock, ProducerRule};

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
    /// Asked to produce without a producer key.
    #[error("this node has no producer key (create one with `peerlink keygen --data-dir DIR`)")]
    NoProducerKey,
    /// The producer key is not one of the network's producers.
    #[error("producer key {key} is not a producer of this network (set [node] producers)")]
    NotAProducer {
        /// The key's public half, hex.
        key: String,
    },
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

/// What a node adds to sync beyond its configs: its producer key, its validity rule, its ban
/// durations and the addresses it must never ban.
#[derive(Default)]
pub struct NodeSetup {
    /// Key that signs the blocks this node produces (`None`: it produces nothing).
    pub producer_key: Option<ProducerKey>,
    /// Validity rule; `None`: [`ProducerRule`] for the store's producers and the sync config's
    /// bounds.
    pub rule: Option<Box<dyn BlockRule>>,
    /// Ban durations.
    pub bans: BanConfig,
    /// This node's own addresses besides its listen IP (admin IP, ...): never banned.
    pub own_ips: Vec<IpAddr>,
    /// Session threads (and control plane thread) shared with other nodes of this process, as
    /// in a devnet of 100 nodes; `None`: the network starts its own (`session_threads` of its
    /// config).
    pub session_threads: Option<SessionThreads>,
    /// Peer discovery with these timers; `None`: off (the node dials only its configured peers).
    pub discovery: Option<DiscoveryConfig>,
}

/// [`start_node_with`] with the default setup (no producer key, the producer rule, default
/// ban durations).
pub async fn start_node(
    net_config: NetworkConfig,
    store: ChainStore,
    sync_config: SyncConfig,
) -> Result<SyncNode, SyncError> {
    start_node_with(net_config, store, sync_config, NodeSetup::default()).await
}

/// Loads the bans stored in `store`, starts the node's three arbiters (threads) and their
/// actors: the chain writer (owns the store, commits, persists bans), the request server (reads
/// the store, answers peers) and the sync actor (decides); then the network (whose application
/// recipient is the sync actor, and whose Hello carries the store's genesis hash and height),
/// with discovery's address book kept in the store's database (loaded before the first dial),
/// applies the stored bans (refused before the handshake from then on), subscribes the actor and
/// the server to peer events and hands the actor the network. No actor that handles peers'
/// messages touches the disk on its own thread. Must run inside an actix system.
pub async fn start_node_with(
    mut net_config: NetworkConfig,
    store: ChainStore,
    sync_config: SyncConfig,
    setup: NodeSetup,
) -> Result<SyncNode, SyncError> {
    sync_config.validate(net_config.max_frame_bytes)?;
    if let Some(key) = &setup.producer_key {
        if !store.params().is_producer(&key.public()) {
            return Err(SyncError::NotAProducer {
                key: hex(&key.public()),
            });
        }
    }
    net_config.genesis = store.genesis_hash();
    let height = store.height();
    // Discovery's address book lives in the same database, in a table of its own.
    let addr_store = store.addr_store();
    // Bans are loaded here, before the writer takes the store.
    let now = crate::chain::produce::now_ms();
    let mut own = setup.own_ips.clone();
    own.push(net_config.listen.ip());
    let mut book = BanBook::new(net_config.max_bans, own);
    let mut stale = Vec::new();
    for record in store.load_bans()? {
        let ip = record.ip;
        if !book.restore(record, now) {
            stale.push(ip);
        }
    }
    store.delete_bans(&stale)?;
    let restored = book.list(now);
    let rule = setup.rule.unwrap_or_else(|| {
        Box::new(ProducerRule::new(
            store.params().clone(),
            sync_config.max_block_bytes,
            sync_config.max_future_ms,
        ))
    });
    let threads: Vec<ArbiterHandle> = (0..3).map(|_| Arbiter::new().handle()).collect();
    let server = ChainServer::start_on(&threads[2], store.reader(), &sync_config);
    let view = ChainView::start(&threads[1], store, server.clone().recipient());
    let actor_server = server.clone();
    let (key, ban_cfg) = (setup.producer_key, setup.bans);
    let actor = SyncActor::start_in_arbiter(&threads[0], move |_| {
        SyncActor::new(view, actor_server, sync_config, rule, key, book, ban_cfg)
    });
    let mut builder = Network::builder(net_config).addr_store(Box::new(addr_store));
    if let Some(threads) = &setup.session_threads {
        builder = builder.session_threads(threads);
    }
    if let Some(discovery) = setup.discovery {
        builder = builder.discovery_config(discovery);
    }
    let net = match builder.start(actor.clone().recipient()).await {
        Ok(net) => net,
        Err(e) => {
            let _ = server.send(server::StopServer).await;
            let _ = actor.send(StopSync).await;
            stop_threads(&threads);
            return Err(e.into());
        }
    };
    for r in &restored {
        net.ban(
            r.ip,
            Duration::from_millis(r.until_unix_ms.saturating_sub(now)),
        )
        .await;
    }
    if !restored.is_empty() {
        log::info!("{} stored ban(s) in force", restored.len());
    }
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

    /// Bans `ip` (persisted; `None`: the configured manual duration).
    pub async fn ban(
        &self,
        ip: IpAddr,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<Result<BanRecord, BanRefused>, SyncError> {
        Ok(self
            .actor
            .send(BanIp {
                ip,
                duration,
                reason: reason.to_string(),
            })
            .await?)
    }

    /// Lifts the ban on `ip`; whether there was one.
    pub async fn unban(&self, ip: IpAddr) -> Result<bool, SyncError> {
        Ok(self.actor.send(UnbanIp(ip)).await?)
    }

    /// The bans in force.
    pub async fn bans(&self) -> Result<Vec<BanRecord>, SyncError> {
        Ok(self.actor.send(ListBans).await?)
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
