//! Session threads: the pool of Arbiters (one thread each) that sessions run on, round robin,
//! and the control plane's own thread. Several networks in one process can share one pool
//! through [`SessionThreads`]. Sockets cross threads as std sockets: a tokio socket stays
//! registered with the reactor of the thread that created it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use tokio::net::TcpSocket;

use crate::env::SessionEnv;
use crate::error::NetworkError;
use crate::lanes::Lane;
use crate::permit::{PendingSlot, Permit};
use crate::session::DialEvent;
use crate::session::{DialOrigin, PeerSession};
use crate::Direction;

/// Session threads. Sockets cross threads as std sockets: a tokio socket stays registered with
/// the reactor of the thread that created it.
pub(crate) struct SessionPool {
    arbiters: Vec<ArbiterHandle>,
    /// The control plane's thread: registries, acceptors and connectors run here, never
    /// sessions, application, storage or admin work, so a busy peer cannot delay a handshake
    /// decision or an accept.
    control: ArbiterHandle,
    next: AtomicUsize,
    /// The session arbiters were started here (and are stopped with the pool), not given by
    /// the application.
    owns_arbiters: bool,
}

impl SessionPool {
    pub(crate) fn new(threads: usize) -> Self {
        let arbiters = (0..threads.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        Self {
            arbiters,
            control: Arbiter::new().handle(),
            next: AtomicUsize::new(0),
            owns_arbiters: true,
        }
    }

    /// Sessions on arbiters the application owns (they outlive the pool); a control thread of
    /// its own.
    pub(crate) fn on(arbiters: Vec<ArbiterHandle>) -> Self {
        Self {
            arbiters,
            control: Arbiter::new().handle(),
            next: AtomicUsize::new(0),
            owns_arbiters: false,
        }
    }

    /// The control plane's thread.
    pub(crate) fn control(&self) -> &ArbiterHandle {
        &self.control
    }

    /// The next session thread, round robin, with its index (the session's broadcast lane).
    fn pick(&self) -> (usize, &ArbiterHandle) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        (i, &self.arbiters[i])
    }

    /// Starts one broadcast lane on every session thread, for one network.
    pub(crate) async fn start_lanes(&self) -> Result<Vec<Lane>, NetworkError> {
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
        pending_permit: Option<PendingSlot>,
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

    pub(crate) fn stop(&self) {
        if self.owns_arbiters {
            for a in &self.arbiters {
                a.stop();
            }
        }
        self.control.stop();
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Session threads that several [`crate::Network`]s in one process share: a devnet, a test or a
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
    pub(crate) pool: Arc<SessionPool>,
}

impl SessionThreads {
    /// Starts `threads` session threads (at least one), each an actix Arbiter, and one control
    /// plane thread for the networks' registries, acceptors and connectors.
    pub fn new(threads: usize) -> Self {
        Self {
            pool: Arc::new(SessionPool::new(threads)),
        }
    }

    /// Sessions on the given arbiters, round robin (at least one; an empty slice gives one
    /// thread of their own), for instance the application actor's own: a message and the
    /// reply its handler sends then never change threads (a request/response round trip over
    /// one connection pays no thread hop in this node, BENCHMARKS.md scenario d). The
    /// arbiters are the caller's: they are not stopped when the networks stop. The networks'
    /// registries, acceptors and connectors still get a control thread of their own.
    ///
    /// Right for a node whose per-message work is light; a node that decodes or verifies much
    /// per message keeps the sessions on threads apart from the application ([`Self::new`]).
    pub fn on(arbiters: &[ArbiterHandle]) -> Self {
        if arbiters.is_empty() {
            return Self::new(1);
        }
        Self {
            pool: Arc::new(SessionPool::on(arbiters.to_vec())),
        }
    }

    /// Number of session threads.
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
