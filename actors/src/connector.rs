//! `Connector`: owns the dial plan. On every tick it dials the addresses that are due, up to the
//! target number of outbound connections, from a socket bound to the node's own listen IP (so
//! that the peer keys us by the right address), with a connect timeout. It learns which IPs are
//! connected from the registry's events and how its dials ended from the sessions; it never
//! decides duplicates, the registry does. With discovery on, it passes how each dial ended on
//! to the discovery actor's address book ([`DialOutcome`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::bans::BanList;
use crate::dial_plan::{AddrStatus, Backoff, DialPlan};
use crate::env::SessionEnv;
use crate::pool::SessionPool;
use crate::reason::DisconnectReason;
use crate::registry::PeerEvent;
use crate::session::DialEvent;
use crate::{canonical_ip, ConnId};

/// The connector actor.
pub struct Connector {
    env: Arc<SessionEnv>,
    pool: Arc<SessionPool>,
    plan: DialPlan,
    connected: HashMap<IpAddr, ConnId>,
    /// The acceptor's ban list (same thread): banned IPs are never dialled.
    bans: Rc<RefCell<BanList>>,
    bind_ip: Option<IpAddr>,
    /// The discovery actor's address book, told how each dial ended (discovery on).
    discovery: Option<Recipient<DialOutcome>>,
    stopped: bool,
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Add an address to the book; with `now`, dial it at the next opportunity regardless of backoff.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct AddPeer {
    /// The peer's listen address.
    pub addr: SocketAddr,
    /// Dial without waiting for the backoff.
    pub now: bool,
}

/// Dial `addr` once, now (at the next opportunity within the outbound target), and forget it
/// when the dial fails or the connection ends: the discovery actor's dials (seeds, anchors,
/// addresses from its book), which it redials itself if it wants to.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DialOnce(pub SocketAddr);

/// The address book's state, for operators and tests.
#[derive(Message)]
#[rtype(result = "Vec<AddrStatus>")]
pub struct GetAddressBook;

/// Stop dialling (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopDialing;

impl Connector {
    /// Runs on the control plane's thread; `bans` is the acceptor's list.
    pub(crate) fn new(
        env: Arc<SessionEnv>,
        pool: Arc<SessionPool>,
        bans: Rc<RefCell<BanList>>,
    ) -> Self {
        let cfg = &env.config;
        let backoff = Backoff {
            base: Duration::from_millis(cfg.backoff_base_ms),
            max: Duration::from_millis(cfg.backoff_max_ms),
            reset_after: Duration::from_millis(cfg.backoff_reset_after_ms),
        };
        let mut plan = DialPlan::new(backoff, cfg.max_address_book);
        let now = Instant::now();
        let listen = env.listen_addr;
        for peer in &cfg.peers {
            plan.add(peer.addr, now, true);
        }
        if !listen.ip().is_unspecified() {
            plan.mark_own(listen, now);
        }
        let bind_ip = (!listen.ip().is_unspecified()).then_some(listen.ip());
        Self {
            env,
            pool,
            plan,
            connected: HashMap::new(),
            bans,
            bind_ip,
            discovery: None,
            stopped: false,
        }
    }

    /// Reports how dials end to the discovery actor's address book.
    pub(crate) fn with_discovery(mut self, discovery: Option<Recipient<DialOutcome>>) -> Self {
        self.discovery = discovery;
        self
    }

    fn tell_discovery(&self, outcome: DialOutcome) {
        if let Some(d) = &self.discovery {
            d.do_send(outcome);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let target = self.env.config.target_outbound;
        let slots = target.saturating_sub(self.plan.busy_count());
        self.dial_due(ctx, slots, None);
    }

    /// Starts the dials due now: at most `slots`, or only `only` when given.
    fn dial_due(&mut self, ctx: &mut Context<Self>, slots: usize, only: Option<SocketAddr>) {
        if self.stopped || slots == 0 {
            return;
        }
        let now = Instant::now();
        let connected: HashSet<IpAddr> = self.connected.keys().copied().collect();
        let bans = self.bans.borrow();
        let mut due = self.plan.due(now, usize::MAX, |ip| {
            connected.contains(&canonical_ip(ip)) || bans.is_banned(canonical_ip(ip), now)
        });
        drop(bans);
        match only {
            Some(addr) => due.retain(|a| *a == addr),
            None => due.truncate(slots),
        }
        for addr in due {
            self.plan.dial_started(addr);
            self.env.metrics.dials.inc();
            log::debug!("dialling {addr}");
            let bind = self.bind_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4());
            self.pool
                .dial(self.env.clone(), addr, bind, ctx.address().recipient());
        }
    }
}

impl Actor for Connector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.env.config.dial_tick(), |act, ctx| act.tick(ctx));
        self.tick(ctx);
    }
}

impl Handler<AddPeer> for Connector {
    type Result = bool;

    fn handle(&mut self, msg: AddPeer, ctx: &mut Context<Self>) -> bool {
        let added = self.plan.add(msg.addr, Instant::now(), msg.now);
        if msg.now {
            self.tick(ctx);
        }
        added
    }
}

impl Handler<DialOnce> for Connector {
    type Result = ();

    fn handle(&mut self, msg: DialOnce, ctx: &mut Context<Self>) {
        // Discovery counts its dials against the target itself (and may add a feeler to a
        // full set): a one-shot dial starts now, outside the slots of the configured peers.
        if self.plan.add_once(msg.0, Instant::now()) {
            self.dial_due(ctx, 1, Some(msg.0));
        }
    }
}

impl Handler<DialEvent> for Connector {
    type Result = ();

    fn handle(&mut self, msg: DialEvent, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        match msg {
            DialEvent::Failed { addr, error } => {
                log::debug!("dial {addr} failed: {error}");
                self.env.metrics.dial_failures.inc();
                self.plan.dial_failed(addr, now, jitter);
                self.tell_discovery(DialOutcome::Failed(addr));
            }
            DialEvent::Registered { addr, .. } => {
                self.plan.registered(addr);
                self.tell_discovery(DialOutcome::Connected(addr));
            }
            DialEvent::Ended {
                addr,
                reason,
                lived,
                ..
            } => {
                self.plan.ended(addr, now, lived, reason, jitter);
                if lived.is_none() && failed_dial(reason) {
                    self.tell_discovery(DialOutcome::Failed(addr));
                }
            }
            DialEvent::OwnAddress { addr } => {
                log::info!("{addr} is this node's own address; not dialling it again");
                self.plan.mark_own(addr, now);
                self.tell_discovery(DialOutcome::Own(addr));
            }
        }
    }
}

impl Handler<PeerEvent> for Connector {
    type Result = ();

    fn handle(&mut self, msg: PeerEvent, _ctx: &mut Context<Self>) {
        match msg {
            PeerEvent::Connected { info, .. } => {
                self.connected.insert(info.ip, info.conn.conn_id);
            }
            PeerEvent::Disconnected(record) => {
                if self.connected.get(&record.ip) == Some(&record.conn_id) {
                    self.connected.remove(&record.ip);
                    // Addresses of that IP left due while it was connected: dialled now after
                    // a loss, after a base interval when either side chose to end it.
                    let jitter = 0.8 + rand::random::<f64>() * 0.4;
                    self.plan
                        .ip_released(record.ip, Instant::now(), record.reason, jitter);
                }
            }
        }
    }
}

impl Handler<GetAddressBook> for Connector {
    type Result = MessageResult<GetAddressBook>;

    fn handle(&mut self, _msg: GetAddressBook, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.plan.status(Instant::now()))
    }
}

impl Handler<StopDialing> for Connector {
    type Result = ();

    fn handle(&mut self, _msg: StopDialing, ctx: &mut Context<Self>) {
        self.stopped = true;
        ctx.stop();
    }
}

/// Whether a dialled connection that ended before it registered counts as a failed dial for
/// the address book: yes when the address did not give us a working peer (handshake failure or
/// timeout, wrong network, refusal, a lost socket); no when the address is fine and the end
/// has another cause (a duplicate of a connection we hold, our own shutdown, our own address,
/// which `OwnAddress` reports).
fn failed_dial(reason: DisconnectReason) -> bool {
    !matches!(
        reason,
        DisconnectReason::Duplicate
            | DisconnectReason::PeerRestarted
            | DisconnectReason::Shutdown
            | DisconnectReason::SelfConnection
    )
}

/// How a dial the connector made ended, for the address book.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub(crate) enum DialOutcome {
    /// The dial failed: TCP refused or timed out, or the connection ended before its
    /// handshake completed (handshake failure, refusal by the peer).
    Failed(SocketAddr),
    /// The dialled connection completed its handshake and registered.
    Connected(SocketAddr),
    /// The address leads back to this node.
    Own(SocketAddr),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ends_that_say_something_about_the_address_count_as_failed_dials() {
        for bad in [
            DisconnectReason::HandshakeTimeout,
            DisconnectReason::HandshakeFailed,
            DisconnectReason::TooManyPeers,
            DisconnectReason::WrongGenesis,
            DisconnectReason::ConnectionLost,
            DisconnectReason::Banned,
        ] {
            assert!(failed_dial(bad), "{bad}");
        }
        for fine in [
            DisconnectReason::Duplicate,
            DisconnectReason::PeerRestarted,
            DisconnectReason::Shutdown,
            DisconnectReason::SelfConnection,
        ] {
            assert!(!failed_dial(fine), "{fine}");
        }
    }
}
