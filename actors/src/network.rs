//! `Network`: the public entry point. It binds the listener, starts the control plane (the
//! registry, the acceptor and the connector, on the control plane's own thread) and the
//! session threads, and hands the application a cheap, cloneable handle to send, broadcast,
//! query and shut down. Everything else lives in its own module: the thread pool in `pool`,
//! what sessions share in `env`, inbound delivery in `delivery`.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acceptor::{Acceptor, StopAccepting};
use crate::bans::{BanList, BanPeer, UnbanPeer};
use crate::config::NetworkConfig;
use crate::connector::{AddPeer, Connector, GetAddressBook, StopDialing};
use crate::constants::{CLOSE_FLUSH_TIMEOUT, SHUTDOWN_GRACE};
use crate::delivery::{AppMessage, Delivery, Inbound};
use crate::dial_plan::AddrStatus;
use crate::discovery::{
    AddrStore, Discovery, DiscoveryConfig, DiscoverySetup, FlushBook, StoreThread,
};
use crate::env::SessionEnv;
use crate::error::NetworkError;
use crate::handle::{PeerHandle, SendOutcome};
use crate::metrics::NetMetrics;
use crate::policy::DuplicatePolicy;
use crate::pool::{SessionPool, SessionThreads};
use crate::protocol::{encode_app, HelloPolicy};
use crate::reason::DisconnectReason;
use crate::registry::{
    DisconnectPeer, EvictionSetup, GetPeers, GetStats, PeerEvent, PeerInfo, PeerRegistry,
    PublishedHandles, RegistryStats, ShutdownRegistry, Subscribe,
};

/// Starts a [`Network`] with options beyond its configuration; see [`Network::builder`].
#[must_use = "a builder does nothing until started"]
pub struct NetworkBuilder<M> {
    config: NetworkConfig,
    threads: Option<SessionThreads>,
    discovery: Option<bool>,
    discovery_config: Option<DiscoveryConfig>,
    addr_store: Option<Box<dyn AddrStore>>,
    _msg: PhantomData<fn(M) -> M>,
}

impl<M: AppMessage> NetworkBuilder<M> {
    /// Runs the sessions (and the control plane) on `threads`, shared with other networks,
    /// instead of starting `config.session_threads` threads of its own.
    pub fn session_threads(mut self, threads: &SessionThreads) -> Self {
        self.threads = Some(threads.clone());
        self
    }

    /// Turns peer discovery on or off, whatever `config.discovery` says: address gossip
    /// (`GetAddrs`/`Addrs`) with every peer, and dials toward `target_outbound` from the
    /// address book it fills, beyond `config.peers`.
    pub fn discovery(mut self, on: bool) -> Self {
        self.discovery = Some(on);
        self
    }

    /// Where discovery keeps its address book between runs: loaded at start (before the first
    /// dial, so the anchors of the previous run are dialled first), saved every
    /// `config.addr_book_save_interval_ms` and by [`Network::shutdown`]. Loads and saves run on
    /// a thread of their own. Without a store the book starts empty on every start.
    pub fn addr_store(mut self, store: Box<dyn AddrStore>) -> Self {
        self.addr_store = Some(store);
        self
    }

    /// Discovery's timers and gossip rules (default [`DiscoveryConfig::default`]), e.g.
    /// [`DiscoveryConfig::fast`] for a test network or a devnet that must find its shape within
    /// seconds. Turns discovery on, like `.discovery(true)`.
    pub fn discovery_config(mut self, config: DiscoveryConfig) -> Self {
        self.discovery = Some(true);
        self.discovery_config = Some(config);
        self
    }

    /// Starts the network; see [`Network::start`].
    pub async fn start(self, app: Recipient<Inbound<M>>) -> Result<Network<M>, NetworkError> {
        let discovery = self.discovery.unwrap_or(self.config.discovery);
        let discovery =
            discovery.then(|| (self.addr_store, self.discovery_config.unwrap_or_default()));
        Network::start_with(self.config, self.threads, Delivery::to(app), discovery).await
    }
}

/// A running node's networking, typed by its application message `M`. Cheap to clone.
pub struct Network<M> {
    inner: Arc<Inner>,
    _msg: PhantomData<fn(M) -> M>,
}

impl<M> Clone for Network<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _msg: PhantomData,
        }
    }
}

struct Inner {
    env: Arc<SessionEnv>,
    pool: Arc<SessionPool>,
    /// Whether the pool is this network's own (stopped at shutdown) or shared.
    owns_pool: bool,
    /// The registry's published handles (see [`PublishedHandles`]).
    handles: PublishedHandles,
    acceptor: Addr<Acceptor>,
    connector: Addr<Connector>,
    discovery: Option<Addr<Discovery>>,
}

impl<M: AppMessage> Network<M> {
    /// Starts the subsystem inside the current actix system: binds `config.listen`, starts the
    /// registry, the acceptor and the connector (dialling `config.peers`) on a control plane
    /// thread of their own, and the session threads. Every burst of application messages from
    /// a peer is delivered to `app` as one [`Inbound`].
    pub async fn start(
        config: NetworkConfig,
        app: Recipient<Inbound<M>>,
    ) -> Result<Self, NetworkError> {
        Self::builder(config).start(app).await
    }

    /// A builder for options that are not configuration values (shared session threads).
    pub fn builder(config: NetworkConfig) -> NetworkBuilder<M> {
        NetworkBuilder {
            config,
            threads: None,
            discovery: None,
            discovery_config: None,
            addr_store: None,
            _msg: PhantomData,
        }
    }

    async fn start_with(
        mut config: NetworkConfig,
        threads: Option<SessionThreads>,
        delivery: Delivery,
        discovery: Option<(Option<Box<dyn AddrStore>>, DiscoveryConfig)>,
    ) -> Result<Self, NetworkError> {
        config.validate()?;
        crate::secure::prepare(&mut config);
        let addr = config.listen;
        let bind_error = move |source| NetworkError::Bind { addr, source };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let listen_addr = listener.local_addr().map_err(bind_error)?;
        // Handed to the control plane's thread as a std socket (a tokio socket stays on the
        // reactor of the thread that created it).
        let listener = listener.into_std().map_err(bind_error)?;
        let node_nonce: u64 = rand::random();
        let metrics = Arc::new(NetMetrics::default());
        let policy = DuplicatePolicy {
            local_nonce: node_nonce,
            max_inbound: config.max_inbound,
            // One more than the target for a feeler (discovery's short test connection while
            // the outbound set is full, closed as soon as it registered), as Bitcoin Core keeps
            // one feeler slot beside its outbound ones.
            max_outbound: config.target_outbound + 1,
        };
        let owns_pool = threads.is_none();
        let pool = match threads {
            Some(threads) => threads.pool,
            None => Arc::new(SessionPool::new(config.session_thread_count())),
        };
        let lanes = pool.start_lanes().await?;
        let lane_links = lanes.iter().enumerate().map(|(i, l)| l.link(i)).collect();
        let handles: PublishedHandles = Arc::default();
        let eviction = EvictionSetup {
            config: config.eviction(),
            key: rand::random(),
            always_keep: config
                .peers
                .iter()
                .map(|p| crate::canonical_ip(p.addr.ip()))
                .collect(),
        };
        let registry = {
            let (metrics, handles) = (metrics.clone(), handles.clone());
            PeerRegistry::start_in_arbiter(pool.control(), move |_| {
                PeerRegistry::new(policy, metrics, lanes, handles).with_eviction(eviction)
            })
        };
        // Discovery runs on the control plane's thread, beside the connector it feeds; its
        // stored book is loaded (on the store's own thread) before it starts.
        let discovery = match discovery {
            None => None,
            Some((store, discovery_config)) => {
                let (store, stored) = match store {
                    Some(store) => {
                        let (thread, loaded) =
                            StoreThread::start(store).map_err(NetworkError::Thread)?;
                        (Some(thread), loaded.await.unwrap_or(None))
                    }
                    None => (None, None),
                };
                let setup = DiscoverySetup {
                    listen: listen_addr,
                    target_outbound: config.target_outbound,
                    peers: config.peers.iter().map(|p| p.addr).collect(),
                    seeds: config.seeds.iter().map(|p| p.addr).collect(),
                    stored,
                    store,
                    save_interval: Duration::from_millis(config.addr_book_save_interval_ms),
                    // Plus a second for the registry's event to reach discovery.
                    dial_timeout: config.connect_timeout()
                        + config.handshake_timeout()
                        + Duration::from_secs(1),
                    config: discovery_config,
                };
                Some(Discovery::start_in_arbiter(pool.control(), move |_| {
                    Discovery::new(setup)
                }))
            }
        };
        let env = Arc::new(SessionEnv {
            hello_policy: HelloPolicy {
                magic: config.magic.to_be_bytes(),
                genesis: config.genesis,
            },
            node_nonce,
            listen_addr,
            listen_port: listen_addr.port(),
            registry: registry.clone(),
            delivery,
            lane_links,
            metrics,
            best_height: Arc::new(AtomicU64::new(0)),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            discovery: discovery.as_ref().map(|d| d.clone().recipient()),
            config,
        });
        // The acceptor and the connector are built on the control plane's thread (the listener
        // joins that thread's reactor) and share one ban list there: the acceptor refuses banned
        // IPs, the connector never dials them.
        //
        // The connector and discovery subscribe to the registry's events before anything can
        // connect: the Subscribe messages are queued in the same step that starts the
        // connector, before the acceptor starts and before the connector's first dial (its
        // `started` runs once this step yields). Subscribing after `start` returned lost the
        // `Connected` of a configured peer that registered first (seen under load: discovery
        // never asked that peer for addresses).
        let (acceptor, connector) = {
            let (env, pool) = (env.clone(), pool.clone());
            let discovery = discovery.clone();
            let registry = registry.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            pool.clone().control().spawn(async move {
                let bans = Rc::new(RefCell::new(BanList::new(env.config.max_bans)));
                let started = Acceptor::new(listener, env.clone(), pool.clone(), bans.clone()).map(
                    |acceptor| {
                        let feedback = discovery.as_ref().map(|d| d.clone().recipient());
                        let connector = Connector::new(env, pool, bans)
                            .with_discovery(feedback)
                            .start();
                        registry.do_send(Subscribe(connector.clone().recipient()));
                        if let Some(d) = &discovery {
                            d.do_send(crate::discovery::SetConnector(connector.clone()));
                            registry.do_send(Subscribe(d.clone().recipient()));
                        }
                        (acceptor.start(), connector)
                    },
                );
                let _ = tx.send(started);
            });
            rx.await
                .map_err(|_| NetworkError::Stopped)?
                .map_err(bind_error)?
        };
        log::info!("listening on {listen_addr} (node nonce {node_nonce:016x})");
        Ok(Self {
            inner: Arc::new(Inner {
                env,
                pool,
                owns_pool,
                handles,
                acceptor,
                connector,
                discovery,
            }),
            _msg: PhantomData,
        })
    }

    /// Encodes `msg` and queues it to the peer at `ip`.
    ///
    /// Looks the peer up in the registry's published view of its map, without a mailbox hop:
    /// the registry publishes every change before it answers anyone else, and marks a replaced
    /// connection's handle closed, so a send never goes to a connection it has dropped.
    pub fn send(&self, ip: IpAddr, msg: &M) -> Result<SendOutcome, NetworkError> {
        match self.handle(ip) {
            Some(handle) => handle
                .send(msg)
                .map_err(|e| NetworkError::Encode(e.to_string())),
            None => Ok(SendOutcome::NotConnected),
        }
    }

    /// Encodes `msg` once and queues it to every peer but `except`; returns how many peers
    /// were registered (but `except`) when it was called. It reaches exactly the connections
    /// the registry had registered before the call, and a send made after it arrives after it.
    /// Waits while a session thread is far behind with earlier broadcasts, so a fast
    /// broadcaster cannot queue without bound.
    pub async fn broadcast(&self, msg: &M, except: Option<IpAddr>) -> Result<usize, NetworkError> {
        let frame = encode_app(msg).map_err(|e| NetworkError::Encode(e.to_string()))?;
        if frame.len()
            > self.inner.env.config.max_frame_bytes + crate::protocol::LENGTH_PREFIX_BYTES
        {
            return Err(NetworkError::TooLarge {
                len: frame.len(),
                max: self.inner.env.config.max_frame_bytes,
            });
        }
        if self.inner.env.shutdown.is_cancelled() {
            return Err(NetworkError::Stopped);
        }
        let except = except.map(crate::canonical_ip);
        let n = {
            let published = self.inner.handles.load();
            published.len() - except.map_or(0, |ip| usize::from(published.contains_key(&ip)))
        };
        // Straight into every session thread's lane: each lane applies the registry's
        // membership changes and the broadcasts in the order they entered its channel, so the
        // broadcast reaches exactly the connections registered (and told to the lanes) before
        // this call, and a send made after this call is queued behind it.
        for link in &self.inner.env.lane_links {
            link.broadcast(&frame, except);
        }
        for link in &self.inner.env.lane_links {
            link.room().await;
        }
        Ok(n)
    }
}

impl<M> Network<M> {
    fn registry(&self) -> &Addr<PeerRegistry> {
        &self.inner.env.registry
    }

    fn connector(&self) -> &Addr<Connector> {
        &self.inner.connector
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.env.listen_addr
    }

    /// This node instance's nonce.
    pub fn node_nonce(&self) -> u64 {
        self.inner.env.node_nonce
    }

    /// The configuration in force.
    pub fn config(&self) -> &NetworkConfig {
        &self.inner.env.config
    }

    /// Live metrics; register them in a Prometheus registry with [`NetMetrics::register`].
    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.inner.env.metrics
    }

    /// Sets the best height announced in future Hellos.
    pub fn set_best_height(&self, height: u64) {
        self.inner.env.best_height.store(height, Ordering::Relaxed);
    }

    /// The send handle of a peer's current connection (the fast path: keep it and send
    /// through it; it reports `NotConnected` once that connection is gone).
    pub fn handle(&self, ip: IpAddr) -> Option<PeerHandle> {
        let ip = crate::canonical_ip(ip);
        self.inner
            .handles
            .load()
            .get(&ip)
            .filter(|h| !h.is_closed())
            .cloned()
    }

    /// Marks the peer at `ip` useful now (see [`PeerHandle::mark_useful`]): the most recently
    /// useful inbound peers are protected from eviction. Returns whether the peer is connected.
    /// Without a mailbox hop; with a kept handle, `handle.mark_useful()` is the same.
    pub fn mark_useful(&self, ip: IpAddr) -> bool {
        match self.handle(ip) {
            Some(h) => {
                h.mark_useful();
                true
            }
            None => false,
        }
    }

    /// Snapshot of the registered peers.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.registry().send(GetPeers).await.unwrap_or_default()
    }

    /// Registry counters.
    pub async fn stats(&self) -> Result<RegistryStats, NetworkError> {
        self.registry()
            .send(GetStats)
            .await
            .map_err(|_| NetworkError::Stopped)
    }

    /// The connector's address book.
    pub async fn address_book(&self) -> Vec<AddrStatus> {
        self.connector()
            .send(GetAddressBook)
            .await
            .unwrap_or_default()
    }

    /// Receive peer lifecycle events: first one `Connected` for each peer already registered
    /// (so subscribing after [`Network::start`] misses no configured peer that connected
    /// meanwhile), then every `Connected` and `Disconnected`, in the registry's order.
    pub fn subscribe(&self, recipient: Recipient<PeerEvent>) {
        self.registry().do_send(Subscribe(recipient));
    }

    /// Adds `addr` to the address book and dials it now.
    pub fn connect(&self, addr: SocketAddr) {
        self.connector().do_send(AddPeer { addr, now: true });
    }

    /// Closes the connection to `ip` with `reason`; returns whether there was one.
    pub async fn disconnect(&self, ip: IpAddr, reason: DisconnectReason) -> bool {
        self.registry()
            .send(DisconnectPeer { ip, reason })
            .await
            .unwrap_or(false)
    }

    /// Bans `ip` for `duration` (refused inbound, never dialled) and closes its connection.
    pub async fn ban(&self, ip: IpAddr, duration: Duration) {
        self.inner.acceptor.do_send(BanPeer { ip, duration });
        self.disconnect(ip, DisconnectReason::Banned).await;
    }

    /// Counters of the address book and gossip (None when discovery is off).
    pub async fn discovery_stats(&self) -> Option<crate::DiscoveryStats> {
        let d = self.inner.discovery.as_ref()?;
        d.send(crate::discovery::GetDiscoveryStats).await.ok()
    }

    /// Lifts a ban on `ip` (it may connect and be dialled again).
    pub fn unban(&self, ip: IpAddr) {
        self.inner.acceptor.do_send(UnbanPeer { ip });
    }

    /// Stops accepting (the listening socket is closed before anything else, so the port can be
    /// bound again once this returns) and dialling, saves the address book and anchors (with discovery and an
    /// [`AddrStore`]; waits for the save, at most 0.5 s, while the outbound peers are still
    /// connected so that they are the anchors), sends Disconnect{shutdown} to every peer, waits
    /// until every session and writer is gone (each holds a token of the network's task
    /// tracker; bounded by the close flush timeout), then stops the session threads (unless they
    /// are shared [`SessionThreads`]).
    pub async fn shutdown(&self) {
        // Awaited: the listening port is free when this returns.
        let _ = self.inner.acceptor.send(StopAccepting).await;
        self.inner.connector.do_send(StopDialing);
        if let Some(d) = &self.inner.discovery {
            let _ = d.send(FlushBook).await;
        }
        self.inner.env.shutdown.cancel();
        let _ = self.registry().send(ShutdownRegistry).await;
        let tasks = &self.inner.env.tasks;
        tasks.close();
        if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT + SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            log::warn!(
                "{} sessions or writers still running at shutdown",
                tasks.len()
            );
        }
        if self.inner.owns_pool {
            self.inner.pool.stop();
        }
        log::info!("network stopped");
    }
}
