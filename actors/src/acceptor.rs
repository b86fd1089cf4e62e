//! `Acceptor`: owns the listening socket. It accepts, refuses what the limits or the ban list
//! forbid (with a Disconnect frame when the socket takes it), and starts one [`PeerSession`] per
//! accepted socket on the session pool. Accept errors such as EMFILE pause the loop briefly
//! instead of spinning.
//!
//! [`PeerSession`]: crate::session::PeerSession

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};

use crate::bans::BanList;
use crate::constants::ACCEPT_ERROR_PAUSE;
use crate::metrics::NetMetrics;
use crate::network::{SessionEnv, SessionPool};
use crate::protocol::{DisconnectReason, Frame};
use crate::{canonical_ip, Direction};

/// One slot of a counted limit; the count drops when the permit does.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Permit {
    /// Takes a slot if fewer than `max` are taken.
    pub(crate) fn try_take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Permit> {
        let mut n = counter.load(Ordering::Acquire);
        loop {
            if n >= max {
                return None;
            }
            match counter.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Permit(counter.clone())),
                Err(actual) => n = actual,
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The acceptor actor.
pub struct Acceptor {
    listener: Rc<TcpListener>,
    env: Arc<SessionEnv>,
    pool: Arc<SessionPool>,
    bans: BanList,
    inbound: Arc<AtomicUsize>,
    pending: Arc<AtomicUsize>,
    stopped: bool,
}

/// Ban an IP: refuse its connections and close the current one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BanPeer {
    /// The IP.
    pub ip: IpAddr,
    /// For how long.
    pub duration: Duration,
}

/// Stop accepting (shutdown). The listening socket closes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccepting;

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, env: Arc<SessionEnv>, pool: Arc<SessionPool>) -> Self {
        let max_bans = env.config.max_bans;
        Self {
            listener: Rc::new(listener),
            env,
            pool,
            bans: BanList::new(max_bans),
            inbound: Arc::new(AtomicUsize::new(0)),
            pending: Arc::new(AtomicUsize::new(0)),
            stopped: false,
        }
    }

    fn accept_next(&mut self, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        let listener = self.listener.clone();
        let accept = async move { listener.accept().await };
        ctx.spawn(accept.into_actor(self).map(|res, act, ctx| match res {
            Ok((stream, _)) => {
                act.on_accepted(stream);
                act.accept_next(ctx);
            }
            Err(e) => {
                act.env.metrics.accept_errors.inc();
                log::warn!("accept failed: {e}; pausing {ACCEPT_ERROR_PAUSE:?}");
                ctx.run_later(ACCEPT_ERROR_PAUSE, |act, ctx| act.accept_next(ctx));
            }
        }));
    }

    fn on_accepted(&mut self, stream: TcpStream) {
        let Ok(peer) = stream.peer_addr() else { return };
        let ip = canonical_ip(peer.ip());
        let refuse = |reason: DisconnectReason, metrics: &NetMetrics| {
            metrics
                .accepts_refused
                .get_or_create(&NetMetrics::reason(reason))
                .inc();
            log::debug!("refused inbound {peer}: {reason}");
            // Best effort: the frame is tiny and the fresh socket's buffer is empty.
            let _ = stream.try_write(&Frame::Disconnect { reason }.encode());
        };
        if self.bans.is_banned(ip, Instant::now()) {
            return refuse(DisconnectReason::Banned, &self.env.metrics);
        }
        let Some(inbound) = Permit::try_take(&self.inbound, self.env.config.max_inbound) else {
            return refuse(DisconnectReason::TooManyPeers, &self.env.metrics);
        };
        let Some(pending) = Permit::try_take(&self.pending, self.env.config.max_pending_handshakes)
        else {
            return refuse(DisconnectReason::TooManyPeers, &self.env.metrics);
        };
        match stream.into_std() {
            Ok(std_stream) => self.pool.start_session(
                self.env.clone(),
                std_stream,
                Direction::Inbound,
                None,
                Some(inbound),
                Some(pending),
            ),
            Err(e) => log::debug!("inbound {peer}: cannot hand over the socket: {e}"),
        }
    }
}

impl Actor for Acceptor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.accept_next(ctx);
    }
}

impl Handler<BanPeer> for Acceptor {
    type Result = ();

    fn handle(&mut self, msg: BanPeer, _ctx: &mut Context<Self>) {
        self.bans
            .ban(canonical_ip(msg.ip), msg.duration, Instant::now());
    }
}

impl Handler<StopAccepting> for Acceptor {
    type Result = ();

    fn handle(&mut self, _msg: StopAccepting, ctx: &mut Context<Self>) {
        self.stopped = true;
        ctx.stop();
    }
}
