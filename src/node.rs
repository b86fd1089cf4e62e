//! Running a node: [`run`] opens the chain store in the data directory, starts block sync and
//! the networking subsystem together ([`crate::sync::start_node`]), the optional block producer,
//! the admin API and the signal handlers, and returns when the node has shut down.
//!
//! ## Shutdown
//!
//! The first SIGINT or SIGTERM stops the node gracefully: the acceptor stops accepting, the
//! connector stops dialling, every peer is sent `Disconnect{shutdown}` and its socket flushed
//! ([`SyncNode::shutdown`], bounded by [`NETWORK_SHUTDOWN_TIMEOUT`], which then closes the chain
//! store; every block already written stays committed), then the admin server stops
//! (at most [`crate::admin::ADMIN_SHUTDOWN_TIMEOUT_SECS`]) and [`run`] returns `Ok`, so the
//! process exits 0. The whole sequence is bounded by [`SHUTDOWN_DEADLINE`] (5 s): past it a
//! watchdog thread exits with status 1. A second signal exits at once with 130 (SIGINT) or
//! 143 (SIGTERM).
//!
//! ## The application
//!
//! The application actor is the [`crate::sync::SyncActor`]: it receives every
//! `Inbound<NodeMsg>` and every peer event, owns the [`ChainStore`], and answers the admin
//! API's `GetSyncStatus`. The Hello carries the store's genesis hash
//! ([`crate::chain::genesis_hash`] of `[node] network`) and height.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerlink_actors::secure::NodeKey;
use peerlink_actors::NetworkError;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::admin::{self, AdminState};
use crate::chain::{short_hex, ChainError, ChainStore, ProducerKey};
use crate::config::{Config, ConfigError};
use crate::metrics::{DiscoveryMetrics, NodeMetrics, SyncMetrics};
use crate::sync::{self, NodeSetup, SyncError, SyncNode};

/// Longest wait for [`peerlink_actors::Network::shutdown`] (which itself waits at most 0.5 s for
/// the final save of the address book, then the close flush timeout of 2 s plus 0.5 s for every
/// socket to flush its `Disconnect{shutdown}`).
pub const NETWORK_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// From the first signal to process exit, at most this long: network shutdown (3 s) plus admin
/// server stop (1 s) plus slack. Past it the watchdog exits with status 1.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Exit status after a second SIGINT (128 + 2, the shell convention).
pub const EXIT_SECOND_SIGINT: i32 = 130;

/// Exit status after a second SIGTERM (128 + 15).
pub const EXIT_SECOND_SIGTERM: i32 = 143;

/// Why a node could not start or run. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory cannot be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// `[node] data_dir`.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin API address cannot be bound (in use, not local, no permission).
    #[error("cannot bind the admin API on {addr}: {source}")]
    AdminBind {
        /// `[admin] bind`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin server failed to start.
    #[error("cannot start the admin API: {0}")]
    Admin(std::io::Error),
    /// The chain store cannot be opened (another network's store, held by another process,
    /// unreadable).
    #[error("chain store in {}: {source}", path.display())]
    Chain {
        /// `[node] data_dir`.
        path: PathBuf,
        /// Why.
        source: ChainError,
    },
    /// `--produce-every` without a usable producer key.
    #[error("cannot produce: {0}")]
    ProducerKey(ChainError),
    /// Block sync could not start (invalid `[sync]` value).
    #[error("block sync: {0}")]
    Sync(SyncError),
    /// The peer listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// `[network] listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The networking subsystem failed to start (for instance, the listen address is in use).
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The node key file cannot be used (loose permissions, unreadable, malformed).
    #[error(transparent)]
    Key(#[from] peerlink_actors::secure::KeyFileError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs a node with `config` until SIGINT/SIGTERM; returns once it has shut down.
///
/// Everything that can fail because of the operator's input (config, data directory, busy
/// ports) fails here, before the node is announced as running.
pub fn run(mut config: Config) -> Result<(), NodeError> {
    config.validate()?;
    std::fs::create_dir_all(&config.node.data_dir).map_err(|source| NodeError::DataDir {
        path: config.node.data_dir.clone(),
        source,
    })?;
    // Bound before the network starts, so that a busy admin port aborts a clean start.
    let admin_listener =
        std::net::TcpListener::bind(config.admin.bind).map_err(|source| NodeError::AdminBind {
            addr: config.admin.bind,
            source,
        })?;
    // The network binds its listener later, after the store is open (and logged): check the
    // address first so that a busy port is one clear error, like the admin port.
    drop(
        std::net::TcpListener::bind(config.network.listen).map_err(|source| NodeError::Listen {
            addr: config.network.listen,
            source,
        })?,
    );
    // Opened (and verified) before anything starts: a store of another network, or one that
    // another process holds, aborts a clean start.
    let store =
        ChainStore::open(&config.node.data_dir, config.node.chain_params()).map_err(|source| {
            NodeError::Chain {
                path: config.node.data_dir.clone(),
                source,
            }
        })?;
    let key = if config.node.produce_every_ms > 0 {
        Some(ProducerKey::load_from(&config.node.data_dir).map_err(NodeError::ProducerKey)?)
    } else {
        None
    };
    // Last of the checks, so that a failed start leaves no new key file behind.
    config.network.node_key = Some(load_node_key(&config.node.data_dir)?);
    let system = actix::System::new();
    system.block_on(serve(config, store, key, admin_listener))
}

/// Name of the node key file in the data dir.
pub const NODE_KEY_FILE: &str = "node.key";

/// Loads the node's static key from `DATA_DIR/node.key`, creating it (mode 0600) on first
/// start; a key file that group or others can access is refused.
pub fn load_node_key(data_dir: &std::path::Path) -> Result<NodeKey, NodeError> {
    let path = data_dir.join(NODE_KEY_FILE);
    let (key, created) = NodeKey::load_or_create(&path)?;
    if created {
        log::info!("created node key {} in {}", key.public(), path.display());
    }
    Ok(key)
}

/// The node's life inside the actix system: start, wait for a signal, shut down.
async fn serve(
    config: Config,
    store: ChainStore,
    key: Option<ProducerKey>,
    admin_listener: std::net::TcpListener,
) -> Result<(), NodeError> {
    let started = Instant::now();
    // Installed first: from here on a signal means "shut down", never the default action.
    let mut sigint = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;

    let mut net_config = config.network.clone();
    net_config.user_agent = config.node.effective_user_agent();
    // The sync actor is the application; start_node sets the Hello's genesis from the store.
    let setup = NodeSetup {
        producer_key: key,
        rule: None,
        bans: config.bans.clone(),
        own_ips: vec![config.admin.bind.ip()],
    };
    let node = sync::start_node_with(net_config, store, config.sync.clone(), setup)
        .await
        .map_err(|e| match e {
            SyncError::Network(e) => NodeError::Network(e),
            SyncError::Chain(source) => NodeError::Chain {
                path: config.node.data_dir.clone(),
                source,
            },
            other => NodeError::Sync(other),
        })?;
    let network = node.net.clone();
    if config.node.produce_every_ms > 0 {
        spawn_producer(
            node.clone(),
            Duration::from_millis(config.node.produce_every_ms),
        );
    }

    let node_metrics = Arc::new(NodeMetrics::default());
    let sync_metrics = Arc::new(SyncMetrics::default());
    let discovery_metrics = Arc::new(DiscoveryMetrics::default());
    let mut registry = Registry::with_prefix("peerlink");
    network.metrics().register(&mut registry);
    node_metrics.register(registry.sub_registry_with_prefix("node"));
    discovery_metrics.register(registry.sub_registry_with_prefix("discovery"));
    sync_metrics.register(registry.sub_registry_with_prefix("sync"));
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.bind);
    let state = AdminState {
        network: network.clone(),
        sync: node.actor.clone(),
        network_name: config.node.network.clone(),
        user_agent: config.node.effective_user_agent(),
        started,
        registry,
        node_metrics,
        discovery_metrics,
        sync_metrics,
        token: config.admin.token.clone(),
        bind: admin_addr,
        allowed_hosts: config.admin.allowed_hosts.clone(),
    };
    let server = match admin::start(admin_listener, state) {
        Ok(server) => server,
        Err(e) => {
            node.shutdown().await;
            return Err(NodeError::Admin(e));
        }
    };
    let server_handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = server.await {
            log::error!("admin api failed: {e}");
        }
    });
    log::info!(
        "node running: network {}, peers on {}, admin api on http://{admin_addr}{}",
        config.node.network,
        network.local_addr(),
        if config.admin.token.is_some() {
            " (token required)"
        } else {
            ""
        }
    );

    let first = tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
    };
    log::info!(
        "{first} received: shutting down (at most {} s; send it again to exit at once)",
        SHUTDOWN_DEADLINE.as_secs()
    );
    arm_hard_exit(sigint, sigterm);

    if tokio::time::timeout(NETWORK_SHUTDOWN_TIMEOUT, node.shutdown())
        .await
        .is_err()
    {
        log::warn!(
            "network shutdown took longer than {} s; closing anyway",
            NETWORK_SHUTDOWN_TIMEOUT.as_secs()
        );
    }
    server_handle.stop(true).await;
    log::info!("node stopped");
    Ok(())
}

/// `--produce-every`: appends a block with random payload every `every` until the sync actor
/// stops. Ticks missed while the actor was busy are skipped, not bunched up.
fn spawn_producer(node: SyncNode, every: Duration) {
    log::info!(
        "producing a block every {}",
        humantime::format_duration(every)
    );
    actix_rt::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        interval.tick().await; // the first tick is immediate
        loop {
            interval.tick().await;
            match node.produce().await {
                Ok(b) => log::debug!("produced block {} {}", b.height, short_hex(&b.hash)),
                Err(SyncError::Stopped) => break,
                Err(e) => {
                    log::error!("cannot produce a block: {e}; production stops");
                    break;
                }
            }
        }
    });
}

/// After the first signal: a second one exits at once, and a watchdog bounds the shutdown.
fn arm_hard_exit(mut sigint: Signal, mut sigterm: Signal) {
    actix_rt::spawn(async move {
        let code = tokio::select! {
            _ = sigint.recv() => EXIT_SECOND_SIGINT,
            _ = sigterm.recv() => EXIT_SECOND_SIGTERM,
        };
        log::warn!("second signal: exiting now");
        std::process::exit(code);
    });
    // A plain thread, so that it fires even if the runtime is stuck.
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_DEADLINE);
        log::error!(
            "shutdown did not finish within {} s: exiting",
            SHUTDOWN_DEADLINE.as_secs()
        );
        std::process::exit(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_networks_shutdown_fits_its_bound() {
        use peerlink_actors::discovery::FINAL_SAVE_TIMEOUT;
        use peerlink_actors::limits::{CLOSE_FLUSH_TIMEOUT, SHUTDOWN_GRACE};
        assert!(
            FINAL_SAVE_TIMEOUT + CLOSE_FLUSH_TIMEOUT + SHUTDOWN_GRACE <= NETWORK_SHUTDOWN_TIMEOUT
        );
    }

    #[test]
    fn shutdown_bounds_agree() {
        assert!(
            NETWORK_SHUTDOWN_TIMEOUT + Duration::from_secs(admin::ADMIN_SHUTDOWN_TIMEOUT_SECS)
                < SHUTDOWN_DEADLINE
        );
    }
}
