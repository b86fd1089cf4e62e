//! Running a node: [`run`] starts the networking subsystem with the application actor, the admin
//! API and the signal handlers, and returns when the node has shut down.
//!
//! ## Shutdown
//!
//! The first SIGINT or SIGTERM stops the node gracefully: the acceptor stops accepting, the
//! connector stops dialling, every peer is sent `Disconnect{shutdown}` and its socket flushed
//! ([`Network::shutdown`], bounded by [`NETWORK_SHUTDOWN_TIMEOUT`]), then the admin server stops
//! (at most [`crate::admin::ADMIN_SHUTDOWN_TIMEOUT_SECS`]) and [`run`] returns `Ok`, so the
//! process exits 0. The whole sequence is bounded by [`SHUTDOWN_DEADLINE`] (5 s): past it a
//! watchdog thread exits with status 1. A second signal exits at once with 130 (SIGINT) or
//! 143 (SIGTERM).
//!
//! ## The application seam
//!
//! The application actor receives every [`Inbound<NodeMsg>`] and answers [`GetAppStatus`]. For
//! now it is [`NodeApp`], which only counts and logs; the chain layer replaces it in the one
//! place marked `APPLICATION SEAM` in [`serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use peerlink_actors::{Inbound, Network, NetworkError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::admin::{self, AdminState};
use crate::app::NodeMsg;
use crate::config::{Config, ConfigError};

/// Longest wait for [`Network::shutdown`] (which itself waits at most the close flush timeout of
/// 2 s plus 0.5 s for every socket to flush its `Disconnect{shutdown}`).
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
    /// The networking subsystem failed to start (for instance, the listen address is in use).
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The genesis hash sent in every Hello: blake3 of the network name, so that nodes of different
/// networks refuse each other. Placeholder until the chain layer provides the real genesis block.
pub fn genesis_for(network_name: &str) -> [u8; 32] {
    *blake3::hash(network_name.as_bytes()).as_bytes()
}

/// Node-level metrics, registered beside the subsystem's under `peerlink_node_`.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Seconds since start; refreshed on every scrape.
    pub uptime_seconds: Gauge,
    /// Application messages received from peers.
    pub app_messages: Counter,
}

impl NodeMetrics {
    /// Registers the metrics in `registry` (give it a `node` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "uptime_seconds",
            "Seconds since the node started",
            self.uptime_seconds.clone(),
        );
        registry.register(
            "app_messages",
            "Application messages received from peers",
            self.app_messages.clone(),
        );
    }

    /// Brings the gauges up to date before an encode.
    pub fn refresh(&self, started: Instant) {
        self.uptime_seconds
            .set(started.elapsed().as_secs().try_into().unwrap_or(i64::MAX));
    }
}

/// Asks the application actor for what the admin API reports about it.
#[derive(Debug, Message)]
#[rtype(result = "AppStatus")]
pub struct GetAppStatus;

/// The application's answer to [`GetAppStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, MessageResponse)]
pub struct AppStatus {
    /// Best chain height, if the application keeps a chain.
    pub height: Option<u64>,
    /// Application messages received since start.
    pub messages_received: u64,
}

/// The placeholder application actor: records and logs what peers send. The chain layer replaces
/// it (see the `APPLICATION SEAM` in [`serve`]).
pub struct NodeApp {
    network: Network<NodeMsg>,
    metrics: Arc<NodeMetrics>,
    received: u64,
}

impl NodeApp {
    /// An application on `network`, counting into `metrics`.
    pub fn new(network: Network<NodeMsg>, metrics: Arc<NodeMetrics>) -> Self {
        Self {
            network,
            metrics,
            received: 0,
        }
    }
}

impl Actor for NodeApp {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        log::info!(
            "application ready on {} (no chain yet: messages are logged only)",
            self.network.local_addr()
        );
    }
}

impl Handler<Inbound<NodeMsg>> for NodeApp {
    type Result = ();

    fn handle(&mut self, m: Inbound<NodeMsg>, _ctx: &mut Context<Self>) {
        self.received += 1;
        self.metrics.app_messages.inc();
        log::debug!(
            "message from {} (conn {}): {:?}",
            m.from.ip(),
            m.from.conn_id(),
            m.msg
        );
    }
}

impl Handler<GetAppStatus> for NodeApp {
    type Result = AppStatus;

    fn handle(&mut self, _msg: GetAppStatus, _ctx: &mut Context<Self>) -> AppStatus {
        AppStatus {
            height: None,
            messages_received: self.received,
        }
    }
}

/// Runs a node with `config` until SIGINT/SIGTERM; returns once it has shut down.
///
/// Everything that can fail because of the operator's input (config, data directory, busy
/// ports) fails here, before the node is announced as running.
pub fn run(config: Config) -> Result<(), NodeError> {
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
    let system = actix::System::new();
    system.block_on(serve(config, admin_listener))
}

/// The node's life inside the actix system: start, wait for a signal, shut down.
async fn serve(config: Config, admin_listener: std::net::TcpListener) -> Result<(), NodeError> {
    let started = Instant::now();
    // Installed first: from here on a signal means "shut down", never the default action.
    let mut sigint = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;

    let mut net_config = config.network.clone();
    net_config.user_agent = config.node.effective_user_agent();
    net_config.genesis = genesis_for(&config.node.network);
    let node_metrics = Arc::new(NodeMetrics::default());

    // ---- APPLICATION SEAM -------------------------------------------------------------------
    // The application actor is created here, and only here. Its mailbox exists before the
    // network starts (so no message is lost) and the actor itself is built with the network
    // handle (so it can reply and broadcast). To replace it, swap `NodeApp` for any actor that
    // handles `Inbound<NodeMsg>` and `GetAppStatus`.
    let app_ctx = Context::<NodeApp>::new();
    let app_addr = app_ctx.address();
    let network = Network::<NodeMsg>::start(net_config, app_addr.clone().recipient()).await?;
    app_ctx.run(NodeApp::new(network.clone(), node_metrics.clone()));
    let app_status: Recipient<GetAppStatus> = app_addr.recipient();
    // ---- END APPLICATION SEAM ---------------------------------------------------------------

    let mut registry = Registry::with_prefix("peerlink");
    network.metrics().register(&mut registry);
    node_metrics.register(registry.sub_registry_with_prefix("node"));
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.bind);
    let state = AdminState {
        network: network.clone(),
        app: app_status,
        network_name: config.node.network.clone(),
        user_agent: config.node.effective_user_agent(),
        started,
        registry,
        node_metrics,
        token: config.admin.token.clone(),
    };
    let server = match admin::start(admin_listener, state) {
        Ok(server) => server,
        Err(e) => {
            network.shutdown().await;
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

    if tokio::time::timeout(NETWORK_SHUTDOWN_TIMEOUT, network.shutdown())
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
    fn genesis_depends_on_the_network_name() {
        assert_eq!(genesis_for("devnet"), genesis_for("devnet"));
        assert_ne!(genesis_for("devnet"), genesis_for("testnet"));
    }

    #[test]
    fn shutdown_bounds_agree() {
        assert!(
            NETWORK_SHUTDOWN_TIMEOUT + Duration::from_secs(admin::ADMIN_SHUTDOWN_TIMEOUT_SECS)
                < SHUTDOWN_DEADLINE
        );
    }
}
