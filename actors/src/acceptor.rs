//! `Acceptor`: owns the listening socket. It accepts, refuses what the limits or the ban list
//! forbid (with a Disconnect frame when the socket takes it), and starts one [`PeerSession`] per
//! accepted socket on the session pool. Accept errors such as EMFILE pause the loop briefly
//! instead of spinning.
//!
//! Every accepted socket passes, in order: the ban list; the cap on inbound sockets
//! (`max_inbound + max_pending_handshakes`: registered, handshaking or closing); and the
//! [`Admission`] policy, which limits handshakes pending per canonical IP, per subnet and in
//! total, and the accept rate per network group. A refused socket gets
//! `Disconnect{too_many_peers}` in clear (if its buffer takes it) and is closed: it costs no
//! session, no handshake and no crypto. An admitted socket's session holds a [`PendingSlot`]
//! until its handshake ends (success, failure, timeout, or the session's end): dropping the slot
//! tells the acceptor, which ends the pending state in its policy. Whether a handshaken newcomer gets an inbound
//! slot, possibly by evicting a registered peer, is the registry's decision.
//!
//! [`PeerSession`]: crate::session::PeerSession

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};

use crate::admission::{Admission, AdmissionRefusal};
use crate::bans::{BanList, BanPeer};
use crate::constants::ACCEPT_ERROR_PAUSE;
use crate::env::SessionEnv;
use crate::metrics::NetMetrics;
use crate::permit::{PendingEnded, PendingSlot, Permit};
use crate::pool::SessionPool;
use crate::protocol::Frame;
use crate::reason::DisconnectReason;
use crate::{canonical_ip, Direction};

/// The acceptor actor.
pub(crate) struct Acceptor {
    /// The listening socket; `None` once stopped. The pending accept borrows it only inside
    /// each poll, so taking it out closes the socket at once (the port is free when
    /// [`StopAccepting`] is answered).
    listener: Rc<RefCell<Option<TcpListener>>>,
    env: Arc<SessionEnv>,
    pool: Arc<SessionPool>,
    /// Shared with the connector (same thread); the acceptor is the one that changes it.
    bans: Rc<RefCell<BanList>>,
    /// Inbound sockets open (registered, handshaking or closing), capped at
    /// `max_inbound + max_pending_handshakes`.
    inbound: Arc<AtomicUsize>,
    /// Pending handshakes per IP, per subnet, in total, and the accept rate per group.
    admission: Admission,
    stopped: bool,
}

/// Stop accepting (shutdown). The listening socket is closed when the message is answered.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopAccepting;

impl Acceptor {
    /// Must run on the thread the acceptor will run on (the control plane's): the listener is
    /// registered with that thread's reactor here.
    pub(crate) fn new(
        listener: std::net::TcpListener,
        env: Arc<SessionEnv>,
        pool: Arc<SessionPool>,
        bans: Rc<RefCell<BanList>>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let admission = Admission::new(env.config.admission());
        Ok(Self {
            listener: Rc::new(RefCell::new(Some(TcpListener::from_std(listener)?))),
            env,
            pool,
            bans,
            inbound: Arc::new(AtomicUsize::new(0)),
            admission,
            stopped: false,
        })
    }

    fn accept_next(&mut self, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        let listener = self.listener.clone();
        let accept = std::future::poll_fn(move |cx| match listener.borrow().as_ref() {
            Some(l) => l.poll_accept(cx).map(Some),
            None => std::task::Poll::Ready(None),
        });
        ctx.spawn(accept.into_actor(self).map(|res, act, ctx| match res {
            None => {}
            Some(Ok((stream, _))) => {
                act.on_accepted(stream, ctx);
                act.accept_next(ctx);
            }
            Some(Err(e)) => {
                act.env.metrics.accept_errors.inc();
                log::warn!("accept failed: {e}; pausing {ACCEPT_ERROR_PAUSE:?}");
                ctx.run_later(ACCEPT_ERROR_PAUSE, |act, ctx| act.accept_next(ctx));
            }
        }));
    }

    fn on_accepted(&mut self, stream: TcpStream, ctx: &mut Context<Self>) {
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
        if self.bans.borrow().is_banned(ip, Instant::now()) {
            return refuse(DisconnectReason::Banned, &self.env.metrics);
        }
        let config = &self.env.config;
        let cap = config
            .max_inbound
            .saturating_add(config.max_pending_handshakes);
        let Some(inbound) = Permit::try_take(&self.inbound, cap) else {
            return refuse(DisconnectReason::TooManyPeers, &self.env.metrics);
        };
        if let Err(why) = self.admission.try_begin(ip, crate::clock::now_ms()) {
            self.env
                .metrics
                .admission_refused
                .get_or_create(&NetMetrics::limit(limit_label(why)))
                .inc();
            return refuse(DisconnectReason::TooManyPeers, &self.env.metrics);
        }
        // From here on the slot ends when the session drops it, or right here if the socket
        // cannot be handed over.
        let pending = PendingSlot::new(ip, ctx.address().recipient());
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
            .borrow_mut()
            .ban(canonical_ip(msg.ip), msg.duration, Instant::now());
    }
}

impl Handler<PendingEnded> for Acceptor {
    type Result = ();

    fn handle(&mut self, msg: PendingEnded, _ctx: &mut Context<Self>) {
        self.admission.end(msg.ip);
    }
}

impl Handler<StopAccepting> for Acceptor {
    type Result = ();

    fn handle(&mut self, _msg: StopAccepting, ctx: &mut Context<Self>) {
        self.stopped = true;
        // Dropped here, not when the context winds down later: a node restarted in the same
        // process binds the same port right after `shutdown` returns.
        self.listener.borrow_mut().take();
        ctx.stop();
    }
}

impl Handler<crate::bans::UnbanPeer> for Acceptor {
    type Result = ();

    fn handle(&mut self, msg: crate::bans::UnbanPeer, _ctx: &mut Context<Self>) {
        self.bans.borrow_mut().unban(canonical_ip(msg.ip));
    }
}

/// The metric label of an admission refusal.
fn limit_label(why: AdmissionRefusal) -> &'static str {
    match why {
        AdmissionRefusal::PendingTotal => "pending_total",
        AdmissionRefusal::PendingPerIp => "pending_per_ip",
        AdmissionRefusal::PendingPerSubnet => "pending_per_subnet",
        AdmissionRefusal::GroupRate => "group_rate",
    }
}
