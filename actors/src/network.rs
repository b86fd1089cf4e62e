//! `Network`: the public entry point. It binds the listener, starts the registry, the acceptor,
//! the connector and the pool of session threads, and hands the application a cheap, cloneable
//! handle to send, broadcast, query and shut down. Also home of the environment every session
//! shares and of the pool that spreads sessions over Arbiters (one thread each).

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, TcpSocket};

use crate::acceptor::{Acceptor, BanPeer, Permit, StopAccepting};
use tokio_util::sync::CancellationToken;

use crate::config::NetworkConfig;
use crate::connector::{AddPeer, Connector, DialEvent, GetAddressBook, StopDialing};
use crate::credit::{Credit, InboundCredit};
use crate::dial_plan::AddrStatus;
use crate::error::{CodecError, NetworkError};
use crate::handle::{PeerHandle, SendOutcome};
use crate::lanes::{Backlog, Lane, LaneLink};
use crate::metrics::NetMetrics;
use crate::policy::DuplicatePolicy;
use crate::protocol::{check_app_payload, decode_app, encode_app, DisconnectReason, HelloPolicy};
use crate::registry::{
    Broadcast, DisconnectPeer, GetHandle, GetPeers, GetStats, PeerEvent, PeerInfo, PeerRegistry,
    RegistryStats, ShutdownRegistry, Subscribe,
};
use crate::session::{DialOrigin, PeerSession};
use crate::Direction;

/// What an application message type must be: serde both ways, sendable across threads.
pub trait AppMessage: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> AppMessage for T {}

/// An application message received from a peer, delivered to the application's recipient.
#[derive(Debug)]
pub struct Inbound<M> {
    /// The connection it came in on. Reply through it so that the reply goes out on the same
    /// socket (`from.send(&reply)`).
    pub from: PeerHandle,
    /// The decoded message.
    pub msg: M,
    /// Returned to the session's inbound budget when this message is dropped.
    _credit: Credit,
}

impl<M: 'static> Message for Inbound<M> {
    type Result = ();
}

/// Application messages received from one peer in one burst (the frames of the reads the session
/// handled before giving way, at most 16 reads), delivered in order as a single actor message,
/// or earlier when they reach the inbound budget. Opt in with
/// [`Network::start_batched`] when per-message mailbox hops dominate (high message rates).
///
/// The session checks that each payload is one well-formed MessagePack value and hands the
/// payloads over still encoded; [`InboundBatch::msgs`] decodes them on the application's
/// thread, so the messages are allocated and freed by the same thread.
#[derive(Debug)]
pub struct InboundBatch<M> {
    /// The connection they came in on; reply through it.
    pub from: PeerHandle,
    /// The encoded payloads, back to back.
    payloads: Vec<u8>,
    /// Where each payload ends in `payloads`.
    ends: Vec<usize>,
    /// Returned to the session's inbound budget when this batch is dropped.
    _credit: Credit,
    _msg: PhantomData<fn() -> M>,
}

impl<M: 'static> Message for InboundBatch<M> {
    type Result = ();
}

impl<M: DeserializeOwned> InboundBatch<M> {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none (never true for a delivered batch).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Decodes the messages in arrival order. A payload that is not a valid `M` (well-formed
    /// MessagePack of another shape) ends the iteration and closes the connection with
    /// `bad_frame`, as the session does for malformed frames.
    pub fn msgs(&self) -> impl Iterator<Item = M> + '_ {
        let mut start = 0;
        let mut failed = false;
        self.ends.iter().map_while(move |&end| {
            if failed {
                return None;
            }
            let payload = &self.payloads[start..end];
            start = end;
            match decode_app::<M>(payload) {
                Ok(msg) => Some(msg),
                Err(e) => {
                    log::debug!(
                        "peer {} conn {}: bad application message: {e}",
                        self.from.ip(),
                        self.from.conn_id()
                    );
                    failed = true;
                    self.from.disconnect(DisconnectReason::BadFrame);
                    None
                }
            }
        })
    }
}

/// A session's receiver of application payloads: decodes each payload as its frame arrives
/// (so the read buffer it came from is free again before the next read) and hands the decoded
/// messages of a burst to the application in one go.
pub(crate) trait Inbox {
    /// Decodes one App payload and keeps the message for the next [`Inbox::flush`]. An error
    /// (not a valid message) closes the connection; the messages before it are still delivered.
    fn push(&mut self, payload: &[u8]) -> Result<(), CodecError>;
    /// Payload bytes of the messages kept.
    fn bytes(&self) -> usize;
    /// Hands the kept messages to the application, in order, holding inbound credit for them.
    fn flush(&mut self, from: &PeerHandle, credit: &Arc<InboundCredit>);
}

/// Makes each new session's [`Inbox`].
pub(crate) type NewInbox = Box<dyn Fn() -> Box<dyn Inbox> + Send + Sync>;

/// Delivers every message as its own [`Inbound`].
struct EachInbox<M: AppMessage> {
    app: Recipient<Inbound<M>>,
    msgs: Vec<(M, usize)>,
    bytes: usize,
}

impl<M: AppMessage> Inbox for EachInbox<M> {
    fn push(&mut self, payload: &[u8]) -> Result<(), CodecError> {
        let msg = decode_app::<M>(payload)?;
        self.msgs.push((msg, payload.len()));
        self.bytes += payload.len();
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn flush(&mut self, from: &PeerHandle, credit: &Arc<InboundCredit>) {
        self.bytes = 0;
        for (msg, len) in self.msgs.drain(..) {
            self.app.do_send(Inbound {
                from: from.clone(),
                msg,
                _credit: credit.take(len),
            });
        }
    }
}

/// Delivers each burst as one [`InboundBatch`] of checked, still encoded payloads.
struct BatchInbox<M: AppMessage> {
    app: Recipient<InboundBatch<M>>,
    payloads: Vec<u8>,
    ends: Vec<usize>,
}

impl<M: AppMessage> Inbox for BatchInbox<M> {
    fn push(&mut self, payload: &[u8]) -> Result<(), CodecError> {
        check_app_payload(payload)?;
        self.payloads.extend_from_slice(payload);
        self.ends.push(self.payloads.len());
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.payloads.len()
    }

    fn flush(&mut self, from: &PeerHandle, credit: &Arc<InboundCredit>) {
        if self.ends.is_empty() {
            return;
        }
        // The next burst is likely about as long as this one: room for it in one allocation.
        let payloads = Vec::with_capacity(self.payloads.len().min(BATCH_BYTES_KEPT));
        let ends = Vec::with_capacity(self.ends.len().min(BATCH_BYTES_KEPT / 64));
        let payloads = std::mem::replace(&mut self.payloads, payloads);
        self.app.do_send(InboundBatch {
            from: from.clone(),
            _credit: credit.take(payloads.len()),
            payloads,
            ends: std::mem::replace(&mut self.ends, ends),
            _msg: PhantomData,
        });
    }
}

/// Most payload bytes a [`BatchInbox`] preallocates for the next burst.
const BATCH_BYTES_KEPT: usize = 256 * 1024;

/// Everything a session needs that is the same for all sessions of a node.
pub(crate) struct SessionEnv {
    pub config: NetworkConfig,
    pub node_nonce: u64,
    pub listen_addr: SocketAddr,
    pub listen_port: u16,
    pub hello_policy: HelloPolicy,
    pub registry: Addr<PeerRegistry>,
    pub new_inbox: NewInbox,
    /// The sessions' ends of the broadcast lanes, by session thread index.
    pub lane_links: Vec<LaneLink>,
    pub metrics: Arc<NetMetrics>,
    pub best_height: Arc<AtomicU64>,
    /// Cancelled once at shutdown: every session, registered or still handshaking, closes.
    pub shutdown: CancellationToken,
}

/// Session threads. Sockets cross threads as std sockets: a tokio socket stays registered with
/// the reactor of the thread that created it.
pub(crate) struct SessionPool {
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl SessionPool {
    fn new(threads: usize) -> Self {
        let arbiters = (0..threads.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        Self {
            arbiters,
            next: AtomicUsize::new(0),
        }
    }

    /// The next session thread, round robin, with its index (the session's broadcast lane).
    fn pick(&self) -> (usize, &ArbiterHandle) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        (i, &self.arbiters[i])
    }

    /// Starts one broadcast lane on every session thread, for one network.
    async fn start_lanes(&self) -> Result<Vec<Lane>, NetworkError> {
        let mut lanes = Vec::with_capacity(self.arbiters.len());
        for arbiter in &self.arbiters {
            let (tx, rx) = tokio::sync::oneshot::channel();
            arbiter.spawn(async move {
                let _ = tx.send(Lane::spawn_here());
            });
            lanes.push(rx.await.map_err(|_| NetworkError::Stopped)?);
        }
        Ok(lanes)
    }

    /// Starts a session for an accepted socket on the next session thread.
    pub(crate) fn start_session(
        &self,
        env: Arc<SessionEnv>,
        stream: std::net::TcpStream,
        direction: Direction,
        origin: Option<DialOrigin>,
        inbound_permit: Option<Permit>,
        pending_permit: Option<Permit>,
    ) {
        let (lane, arbiter) = self.pick();
        arbiter.spawn(async move {
            let started = tokio::net::TcpStream::from_std(stream).and_then(|s| {
                PeerSession::new(
                    env,
                    s,
                    lane,
                    direction,
                    origin,
                    inbound_permit,
                    pending_permit,
                )
            });
            match started {
                Ok(session) => {
                    session.start();
                }
                Err(e) => log::debug!("cannot start session: {e}"),
            }
        });
    }

    /// Dials `addr` on the next session thread and starts the session there.
    pub(crate) fn dial(
        &self,
        env: Arc<SessionEnv>,
        addr: SocketAddr,
        bind_ip: Option<IpAddr>,
        connector: Recipient<DialEvent>,
    ) {
        let timeout = env.config.connect_timeout();
        let (lane, arbiter) = self.pick();
        arbiter.spawn(async move {
            let connect = async {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                if let Some(ip) = bind_ip {
                    socket.bind(SocketAddr::new(ip, 0))?;
                }
                socket.connect(addr).await
            };
            let result = match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(stream)) => {
                    let origin = DialOrigin {
                        addr,
                        connector: connector.clone(),
                    };
                    PeerSession::new(
                        env,
                        stream,
                        lane,
                        Direction::Outbound,
                        Some(origin),
                        None,
                        None,
                    )
                    .map(|s| {
                        s.start();
                    })
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            };
            if let Err(e) = result {
                connector.do_send(DialEvent::Failed {
                    addr,
                    error: e.to_string(),
                });
            }
        });
    }

    fn stop(&self) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Session threads that several [`Network`]s in one process share: a devnet, a test or a
/// benchmark that runs many nodes in one process keeps one thread per core in all instead of
/// one per core per node. The threads stop when the last `SessionThreads` and the last network
/// started on them are gone.
///
/// ```no_run
/// # use peerlink_actors::{Inbound, Network, NetworkConfig, SessionThreads};
/// # async fn two_nodes(a: NetworkConfig, b: NetworkConfig,
/// #     app: actix::Recipient<Inbound<Vec<u8>>>) -> Result<(), peerlink_actors::NetworkError> {
/// let threads = SessionThreads::new(2);
/// let node_a = Network::<Vec<u8>>::builder(a).session_threads(&threads).start(app.clone()).await?;
/// let node_b = Network::<Vec<u8>>::builder(b).session_threads(&threads).start(app).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionThreads {
    pool: Arc<SessionPool>,
}

impl SessionThreads {
    /// Starts `threads` session threads (at least one), each an actix Arbiter.
    pub fn new(threads: usize) -> Self {
        Self {
            pool: Arc::new(SessionPool::new(threads)),
        }
    }

    /// Number of threads.
    pub fn len(&self) -> usize {
        self.pool.arbiters.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for SessionThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionThreads")
            .field("threads", &self.len())
            .finish()
    }
}

/// Starts a [`Network`] with options beyond its configuration; see [`Network::builder`].
#[must_use = "a builder does nothing until started"]
pub struct NetworkBuilder<M> {
    config: NetworkConfig,
    threads: Option<SessionThreads>,
    _msg: PhantomData<fn(M) -> M>,
}

impl<M: AppMessage> NetworkBuilder<M> {
    /// Runs the sessions on `threads`, shared with other networks, instead of starting
    /// `config.session_threads` threads of its own.
    pub fn session_threads(mut self, threads: &SessionThreads) -> Self {
        self.threads = Some(threads.clone());
        self
    }

    /// Starts the network; see [`Network::start`].
    pub async fn start(self, app: Recipient<Inbound<M>>) -> Result<Network<M>, NetworkError> {
        Network::start_with(self.config, self.threads, deliver_each(app)).await
    }

    /// Starts the network delivering bursts; see [`Network::start_batched`].
    pub async fn start_batched(
        self,
        app: Recipient<InboundBatch<M>>,
    ) -> Result<Network<M>, NetworkError> {
        Network::start_with(self.config, self.threads, deliver_batched(app)).await
    }
}

/// Sessions' inboxes delivering every message as its own [`Inbound`].
fn deliver_each<M: AppMessage>(app: Recipient<Inbound<M>>) -> NewInbox {
    Box::new(move || {
        Box::new(EachInbox {
            app: app.clone(),
            msgs: Vec::new(),
            bytes: 0,
        })
    })
}

/// Sessions' inboxes delivering each burst as one [`InboundBatch`].
fn deliver_batched<M: AppMessage>(app: Recipient<InboundBatch<M>>) -> NewInbox {
    Box::new(move || {
        Box::new(BatchInbox {
            app: app.clone(),
            payloads: Vec::new(),
            ends: Vec::new(),
        })
    })
}

thread_local! {
    /// Handles that [`Network::send`] got from a registry, per thread, by network and peer IP.
    static SEND_HANDLES: RefCell<HashMap<(u64, IpAddr), PeerHandle>> = RefCell::new(HashMap::new());
}

/// Most handles [`SEND_HANDLES`] keeps per thread (closed ones are dropped first).
const SEND_HANDLES_KEPT: usize = 4096;

/// Source of [`Inner::id`].
static NEXT_NETWORK_ID: AtomicU64 = AtomicU64::new(1);

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
    /// Distinguishes networks in one process (keys of [`SEND_HANDLES`]).
    id: u64,
    env: Arc<SessionEnv>,
    pool: Arc<SessionPool>,
    /// Whether the pool is this network's own (stopped at shutdown) or shared.
    owns_pool: bool,
    /// Backlogs of this network's broadcast lanes.
    backlogs: Vec<Arc<Backlog>>,
    acceptor: Addr<Acceptor>,
    connector: Addr<Connector>,
}

impl<M: AppMessage> Network<M> {
    /// Starts the subsystem inside the current actix system: binds `config.listen`, starts the
    /// registry, the acceptor, the connector (dialling `config.peers`) and the session threads.
    /// Every application message from any peer is delivered to `app` as an [`Inbound`].
    pub async fn start(
        config: NetworkConfig,
        app: Recipient<Inbound<M>>,
    ) -> Result<Self, NetworkError> {
        Self::builder(config).start(app).await
    }

    /// Like [`Network::start`], but delivers each burst of messages from a peer as one
    /// [`InboundBatch`]: one mailbox hop per burst instead of per message.
    pub async fn start_batched(
        config: NetworkConfig,
        app: Recipient<InboundBatch<M>>,
    ) -> Result<Self, NetworkError> {
        Self::builder(config).start_batched(app).await
    }

    /// A builder for options that are not configuration values (shared session threads).
    pub fn builder(config: NetworkConfig) -> NetworkBuilder<M> {
        NetworkBuilder {
            config,
            threads: None,
            _msg: PhantomData,
        }
    }

    async fn start_with(
        config: NetworkConfig,
        threads: Option<SessionThreads>,
        new_inbox: NewInbox,
    ) -> Result<Self, NetworkError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NetworkError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let listen_addr = listener.local_addr().map_err(|source| NetworkError::Bind {
            addr: config.listen,
            source,
        })?;
        let node_nonce: u64 = rand::random();
        let metrics = Arc::new(NetMetrics::default());
        let policy = DuplicatePolicy {
            local_nonce: node_nonce,
            max_inbound: config.max_inbound,
            max_outbound: config.target_outbound,
        };
        let owns_pool = threads.is_none();
        let pool = match threads {
            Some(threads) => threads.pool,
            None => Arc::new(SessionPool::new(config.session_thread_count())),
        };
        let lanes = pool.start_lanes().await?;
        let backlogs = lanes.iter().map(Lane::backlog).collect();
        let lane_links = lanes.iter().enumerate().map(|(i, l)| l.link(i)).collect();
        let registry = PeerRegistry::new(policy, metrics.clone(), lanes).start();
        let env = Arc::new(SessionEnv {
            hello_policy: HelloPolicy {
                magic: config.magic.to_be_bytes(),
                genesis: config.genesis,
            },
            node_nonce,
            listen_addr,
            listen_port: listen_addr.port(),
            registry: registry.clone(),
            new_inbox,
            lane_links,
            metrics,
            best_height: Arc::new(AtomicU64::new(0)),
            shutdown: CancellationToken::new(),
            config,
        });
        let acceptor = Acceptor::new(listener, env.clone(), pool.clone()).start();
        let connector = Connector::new(env.clone(), pool.clone()).start();
        registry.do_send(Subscribe(connector.clone().recipient()));
        log::info!("listening on {listen_addr} (node nonce {node_nonce:016x})");
        Ok(Self {
            inner: Arc::new(Inner {
                id: NEXT_NETWORK_ID.fetch_add(1, Ordering::Relaxed),
                env,
                pool,
                owns_pool,
                backlogs,
                acceptor,
                connector,
            }),
            _msg: PhantomData,
        })
    }

    /// Encodes `msg` and queues it to the peer at `ip`.
    ///
    /// The first send to an IP asks the registry for the peer's [`PeerHandle`]; the handle is
    /// kept (per thread) and used until its connection closes, so a stream of sends costs no
    /// registry round trip each. The registry marks a replaced connection's handle closed
    /// before it answers anyone else, so a kept handle never outlives its registration.
    pub async fn send(&self, ip: IpAddr, msg: &M) -> Result<SendOutcome, NetworkError> {
        let ip = crate::canonical_ip(ip);
        let key = (self.inner.id, ip);
        let kept = SEND_HANDLES.with(|kept| {
            kept.borrow()
                .get(&key)
                .map(|handle| handle.send(msg))
                .transpose()
        });
        match kept.map_err(|e| NetworkError::Encode(e.to_string()))? {
            Some(SendOutcome::NotConnected) | None => {}
            Some(outcome) => return Ok(outcome),
        }
        let handle = self
            .registry()
            .send(GetHandle { ip })
            .await
            .map_err(|_| NetworkError::Stopped)?;
        SEND_HANDLES.with(|kept| {
            let mut kept = kept.borrow_mut();
            match &handle {
                Some(handle) => {
                    if kept.len() >= SEND_HANDLES_KEPT {
                        kept.retain(|_, h| !h.is_closed());
                        if kept.len() >= SEND_HANDLES_KEPT {
                            kept.clear();
                        }
                    }
                    kept.insert(key, handle.clone());
                }
                None => {
                    kept.remove(&key);
                }
            }
        });
        match handle {
            Some(handle) => handle
                .send(msg)
                .map_err(|e| NetworkError::Encode(e.to_string())),
            None => Ok(SendOutcome::NotConnected),
        }
    }

    /// Encodes `msg` once and queues it to every peer but `except`; returns to how many
    /// registered peers it goes. Waits while a session thread is far behind with earlier
    /// broadcasts, so a fast broadcaster cannot queue without bound.
    pub async fn broadcast(&self, msg: &M, except: Option<IpAddr>) -> Result<usize, NetworkError> {
        let frame = encode_app(msg).map_err(|e| NetworkError::Encode(e.to_string()))?;
        let n = self
            .inner
            .env
            .registry
            .send(Broadcast { frame, except })
            .await
            .map_err(|_| NetworkError::Stopped)?;
        for backlog in &self.inner.backlogs {
            backlog.room().await;
        }
        Ok(n)
    }
}

impl<M> Network<M> {
    /// The registry actor, for messages this handle does not wrap.
    pub fn registry(&self) -> &Addr<PeerRegistry> {
        &self.inner.env.registry
    }

    /// The connector actor.
    pub fn connector(&self) -> &Addr<Connector> {
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

    /// The send handle of a peer's current connection: send to it without the registry hop.
    pub async fn handle(&self, ip: IpAddr) -> Option<PeerHandle> {
        self.registry().send(GetHandle { ip }).await.ok().flatten()
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

    /// Receive peer lifecycle events.
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
        self.inner.connector.do_send(BanPeer { ip, duration });
        self.disconnect(ip, DisconnectReason::Banned).await;
    }

    /// Lifts the ban on `ip` (inbound accepted and dialling allowed again).
    pub fn unban(&self, ip: IpAddr) {
        let duration = Duration::ZERO;
        self.inner.acceptor.do_send(BanPeer { ip, duration });
        self.inner.connector.do_send(BanPeer { ip, duration });
    }

    /// Stops accepting and dialling, sends Disconnect{shutdown} to every peer, waits (bounded)
    /// until every socket is flushed and closed, then stops the session threads (unless they
    /// are shared [`SessionThreads`]).
    pub async fn shutdown(&self) {
        self.inner.acceptor.do_send(StopAccepting);
        self.inner.connector.do_send(StopDialing);
        self.inner.env.shutdown.cancel();
        let _ = self.registry().send(ShutdownRegistry).await;
        if self.inner.owns_pool {
            self.inner.pool.stop();
        }
        log::info!("network stopped");
    }
}
