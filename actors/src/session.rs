//! `PeerSession`: one actor per TCP connection. It owns the socket (the read half as a frame
//! stream, the write half through the writer task behind its [`PeerHandle`]), the handshake,
//! ping/pong and the close path. It registers with the [`crate::PeerRegistry`] after the handshake and
//! unregisters, with its conn id and a reason, when it stops.
//!
//! On the Noise transport (the default) the socket first runs the handshake of
//! [`crate::secure`] (spawned on the actor, bounded by the handshake timer); the peer's key is
//! checked (self, pinned, allowed), then the halves below run over the record layer and the
//! Hello is sent inside the channel.
//!
//! Life of a session: `AwaitingHello` (cap 4 KiB, handshake timer running; both sides sent their
//! Hello on connect) -> `Registering` (the registry decides; reading is paused, so no frame is
//! handled meanwhile) -> `Active` (frame cap raised, pings on the interval, application
//! payloads checked and handed over in bursts) -> `Closing` (Disconnect frame queued when the
//! socket still works, writer flushed with a deadline, Unregister sent).
//!
//! A session pauses only its reading (a [`ReadGate`] in front of the frame stream), never its
//! mailbox or timers: while it waits for the registry or for the application to consume its
//! inbound credit, `Close`, the ping timeout, the handshake timeout and shutdown still act.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::constants::{
    CLOSE_FLUSH_TIMEOUT, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION, READ_BUFFER_INITIAL_BYTES,
    READ_BUFFER_REALLOC_MAX_BYTES,
};
use crate::credit::InboundCredit;
use crate::delivery::Inbox;
use crate::env::SessionEnv;
use crate::error::CodecError;
use crate::handle::{spawn_writer, PeerHandle, WriterClose, WriterParts};
use crate::metrics::NetMetrics;
use crate::permit::{PendingSlot, Permit};
use crate::policy::ConnFacts;
use crate::protocol::{app_payload, Frame, FrameBatch, FrameBatchCodec, Hello};
use crate::reason::DisconnectReason;
use crate::registry::{PeerMeta, Register, RegisterOutcome, Unregister};
use crate::secure::{
    self, Established, NodeKey, PublicKey, RecordCipher, SecureError, SecureRead, SecureWrite,
};
use crate::session_api::{Close, SessionStats, WriterFailed};
use crate::{canonical_ip, ConnId, Direction};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHello,
    Registering,
    Active,
    Closing,
}

/// Where an outbound session came from, so the connector learns how the dial ended.
#[derive(Clone)]
pub(crate) struct DialOrigin {
    pub addr: SocketAddr,
    pub connector: Recipient<DialEvent>,
}

/// How a dial or a dialled session went; sent by the dial task and the sessions.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) enum DialEvent {
    /// TCP connect failed or timed out.
    Failed {
        /// Dialled address.
        addr: SocketAddr,
        /// The error.
        error: String,
    },
    /// The dialled session registered.
    Registered {
        /// Dialled address.
        addr: SocketAddr,
    },
    /// The dialled session stopped.
    Ended {
        /// Dialled address.
        addr: SocketAddr,
        /// Why.
        reason: DisconnectReason,
        /// How long it was registered, if it was.
        lived: Option<Duration>,
    },
    /// The handshake showed that the address leads back to this node.
    OwnAddress {
        /// Dialled address.
        addr: SocketAddr,
    },
}

/// The session actor. Started by the acceptor and the connector, never by hand.
pub(crate) struct PeerSession {
    env: Arc<SessionEnv>,
    conn_id: ConnId,
    /// Index of the session thread this session runs on.
    lane: usize,
    direction: Direction,
    ip: IpAddr,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    origin: Option<DialOrigin>,
    stream: Option<TcpStream>,
    /// The static key the peer authenticated with (none on the plaintext transport).
    remote_key: Option<PublicKey>,
    handle: Option<PeerHandle>,
    writer_close: Option<oneshot::Sender<WriterClose>>,
    max_frame: Arc<AtomicUsize>,
    /// Set once the handshake is done: the codec then yields every complete frame of a read.
    batching: Arc<AtomicBool>,
    /// Pauses reading while the session waits for the registry or for inbound credit.
    gate: ReadGate,
    phase: Phase,
    /// A `Register` was sent and its outcome has not been handled yet.
    registering: bool,
    registered_at: Option<Instant>,
    /// Closes the session if the handshake is not done in time; cancelled once active.
    handshake_timer: Option<SpawnHandle>,
    /// The outstanding ping: nonce, when it was sent, and its timeout timer.
    ping: Option<(u64, Instant, SpawnHandle)>,
    stats: Arc<SessionStats>,
    credit: Arc<InboundCredit>,
    /// Decoded application messages of the current burst, not yet handed over.
    inbox: Inbox,
    closed: Option<(DisconnectReason, bool)>,
    inbound_permit: Option<Permit>,
    pending_permit: Option<PendingSlot>,
    /// Held until the actor is dropped: shutdown waits for every session's token.
    _task: TaskTrackerToken,
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Deliver the application messages collected from the current burst of frames.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushInbound;

// ---------------------------------------------------------------------------------------------

impl PeerSession {
    /// Builds a session for an established stream. Must run on the thread that will own it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        env: Arc<SessionEnv>,
        stream: TcpStream,
        lane: usize,
        direction: Direction,
        origin: Option<DialOrigin>,
        inbound_permit: Option<Permit>,
        pending_permit: Option<PendingSlot>,
    ) -> std::io::Result<Self> {
        let local_addr = stream.local_addr()?;
        let peer_addr = stream.peer_addr()?;
        let _ = stream.set_nodelay(true);
        let credit = InboundCredit::new(env.config.inbound_budget_bytes);
        let inbox = env
            .delivery
            .inbox(env.config.transport == secure::Transport::Noise);
        let task = env.tasks.token();
        Ok(Self {
            env,
            conn_id: ConnId::next(),
            lane,
            direction,
            ip: canonical_ip(peer_addr.ip()),
            local_addr,
            peer_addr,
            origin,
            stream: Some(stream),
            remote_key: None,
            handle: None,
            writer_close: None,
            max_frame: Arc::new(AtomicUsize::new(MAX_HANDSHAKE_FRAME_BYTES)),
            batching: Arc::new(AtomicBool::new(false)),
            gate: ReadGate::default(),
            phase: Phase::AwaitingHello,
            registering: false,
            registered_at: None,
            handshake_timer: None,
            ping: None,
            stats: Arc::new(SessionStats::default()),
            credit,
            inbox,
            closed: None,
            inbound_permit,
            pending_permit,
            _task: task,
        })
    }

    /// Sets up the read and write halves over the (possibly encrypted) stream: the sending
    /// direction's cipher goes to the writer task, the receiving one to the reader.
    fn start_io(
        &mut self,
        stream: TcpStream,
        ciphers: Option<(RecordCipher, RecordCipher)>,
        ctx: &mut Context<Self>,
    ) {
        let (send, recv) = ciphers.unzip();
        let (read_half, write_half) = stream.into_split();
        let (handle, close) = spawn_writer(
            WriterParts {
                ip: self.ip,
                conn_id: self.conn_id,
                link: self.env.lane_links[self.lane].clone(),
                budget: self.env.config.outbound_budget_bytes,
                max_frame_bytes: self.env.config.max_frame_bytes,
                session: ctx.address().recipient(),
                failed: ctx.address().recipient(),
                metrics: self.env.metrics.clone(),
                task: self.env.tasks.token(),
            },
            SecureWrite::new(write_half, send),
        );
        self.handle = Some(handle);
        self.writer_close = Some(close);
        let codec = FrameBatchCodec::new(self.max_frame.clone(), self.batching.clone());
        ctx.add_stream(self.gate.wrap(FramedRead::with_capacity(
            SecureRead::new(read_half, recv),
            codec,
            READ_BUFFER_INITIAL_BYTES,
        )));
    }

    fn send_hello(&self) {
        if let Some(handle) = &self.handle {
            handle.send_control(Frame::Hello(self.our_hello()).encode());
        }
    }

    /// The Noise handshake ended: check the peer's key, then run the frame protocol (Hello
    /// first) inside the channel.
    fn on_handshake(
        &mut self,
        stream: TcpStream,
        res: Result<Established, SecureError>,
        ctx: &mut Context<Self>,
    ) {
        if self.phase == Phase::Closing {
            return;
        }
        let est = match res {
            Ok(est) => est,
            Err(SecureError::Refused(reason)) => {
                log::debug!(
                    "peer {} conn {}: refused before the handshake: {reason}",
                    self.ip,
                    self.conn_id
                );
                return self.close(reason, true, ctx);
            }
            Err(e) => {
                log::info!(
                    "peer {} conn {}: noise handshake failed: {e}",
                    self.ip,
                    self.conn_id
                );
                return self.close(DisconnectReason::HandshakeFailed, false, ctx);
            }
        };
        let remote = est.remote;
        self.remote_key = Some(remote);
        self.start_io(stream, Some((est.send, est.recv)), ctx);
        if let Err(reason) = self.check_key(&remote) {
            log::info!(
                "peer {} conn {}: key {remote} refused: {reason}",
                self.ip,
                self.conn_id
            );
            if reason == DisconnectReason::SelfConnection {
                if let Some(origin) = &self.origin {
                    origin
                        .connector
                        .do_send(DialEvent::OwnAddress { addr: origin.addr });
                }
            }
            // Sent inside the channel: the peer learns why, nobody else does.
            return self.close(reason, false, ctx);
        }
        log::debug!(
            "peer {} conn {}: channel up, key {remote}",
            self.ip,
            self.conn_id
        );
        self.send_hello();
    }

    /// Whether the key the peer authenticated with may connect: not our own, the pinned one
    /// if its IP is pinned, and a listed one if `allowed_keys` is set.
    fn check_key(&self, remote: &PublicKey) -> Result<(), DisconnectReason> {
        let cfg = &self.env.config;
        secure::admit_key(
            cfg.node_key.as_ref().map(|k| k.public()).as_ref(),
            cfg.pinned_key(self.ip).as_ref(),
            &cfg.allowed_keys,
            remote,
        )
    }

    fn our_hello(&self) -> Hello {
        let cfg = &self.env.config;
        Hello {
            magic: cfg.magic.to_be_bytes(),
            version: PROTOCOL_VERSION,
            genesis: cfg.genesis,
            nonce: self.env.node_nonce,
            listen_port: self.env.listen_port,
            best_height: self.env.best_height.load(Ordering::Relaxed),
            user_agent: cfg.user_agent.clone(),
        }
    }
}

impl Actor for PeerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.take() else {
            ctx.stop();
            return;
        };
        let shutdown = self.env.shutdown.clone();
        ctx.spawn(
            async move { shutdown.cancelled().await }
                .into_actor(self)
                .map(|_, act, ctx| act.close(DisconnectReason::Shutdown, false, ctx)),
        );
        self.handshake_timer = Some(ctx.run_later(
            self.env.config.handshake_timeout(),
            |act, ctx| {
                if matches!(act.phase, Phase::AwaitingHello | Phase::Registering) {
                    act.close(DisconnectReason::HandshakeTimeout, false, ctx);
                }
            },
        ));
        log::debug!(
            "peer {} conn {}: {} session started ({} -> {})",
            self.ip,
            self.conn_id,
            self.direction.as_str(),
            self.local_addr,
            self.peer_addr
        );
        match self.env.config.transport {
            secure::Transport::Plaintext => {
                self.start_io(stream, None, ctx);
                self.send_hello();
            }
            secure::Transport::Noise => {
                // Network::start always sets the key; a fresh one here is never a downgrade.
                let key = (self.env.config.node_key.clone()).unwrap_or_else(NodeKey::generate);
                let initiator = self.direction == Direction::Outbound;
                // Spawned, not awaited: the handshake timer and shutdown still reach the actor.
                let handshake = async move {
                    let mut stream = stream;
                    let res = secure::handshake(&mut stream, &key, initiator).await;
                    (stream, res)
                };
                ctx.spawn(
                    handshake
                        .into_actor(self)
                        .map(|(stream, res), act, ctx| act.on_handshake(stream, res, ctx)),
                );
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let (reason, by_peer) = self.closed.unwrap_or((DisconnectReason::Shutdown, false));
        if let Some(handle) = &self.handle {
            handle.mark_closed();
        }
        // Dropping the sender without a command makes the writer abort; close() sent one already.
        self.writer_close.take();
        self.env.metrics.record_disconnect(reason, by_peer);
        // A session closed while its registration was in flight (a timer, a Close, a write
        // failure) may have been stored: unregistering by conn id is harmless if it was not.
        if self.registered_at.is_some() || self.registering {
            self.env.registry.do_send(Unregister {
                ip: self.ip,
                conn_id: self.conn_id,
                reason,
                by_peer,
            });
        }
        if let Some(origin) = &self.origin {
            origin.connector.do_send(DialEvent::Ended {
                addr: origin.addr,
                reason,
                lived: self.registered_at.map(|t| t.elapsed()),
            });
        }
        log::debug!(
            "peer {} conn {}: session stopped ({reason})",
            self.ip,
            self.conn_id
        );
    }
}

impl StreamHandler<Result<FrameBatch, CodecError>> for PeerSession {
    fn handle(&mut self, item: Result<FrameBatch, CodecError>, ctx: &mut Context<Self>) {
        match item {
            Ok(batch) => {
                // Counted once per read, not per frame (the node-wide counter is shared by
                // every session thread).
                let n = batch.wire_len() as u64;
                self.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
                self.env.metrics.bytes_in.inc_by(n);
                // The peer spoke: the next reply may be written by its sender at once.
                if let Some(handle) = &self.handle {
                    handle.arm_write_now();
                }
                for body in batch.bodies() {
                    match self.phase {
                        Phase::Closing => return,
                        // Application messages, the bulk of the traffic, straight from the
                        // read buffer into the inbox: no frame value, no shared bytes.
                        Phase::Active => match app_payload(body) {
                            Some(Ok(payload)) => self.on_app(payload, || batch.share(payload), ctx),
                            Some(Err(e)) => self.on_body(Err(e), ctx),
                            None => self.on_body(Frame::decode(batch.share(body)), ctx),
                        },
                        _ => self.on_body(Frame::decode(batch.share(body)), ctx),
                    }
                }
            }
            Err(e) => self.on_body(Err(e), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.close(DisconnectReason::ConnectionLost, true, ctx);
    }
}

impl PeerSession {
    /// One decoded frame, or the error that ends the connection.
    fn on_body(&mut self, frame: Result<Frame, CodecError>, ctx: &mut Context<Self>) {
        if self.phase == Phase::Closing {
            return;
        }
        match frame {
            Ok(frame) => self.on_frame(frame, ctx),
            Err(CodecError::Io(e)) if SecureError::is_decrypt_failure(&e) => {
                // Tampered with, truncated or forged: nothing of that record was delivered.
                log::info!("peer {} conn {}: closing: {e}", self.ip, self.conn_id);
                self.env
                    .metrics
                    .frames_rejected
                    .get_or_create(&NetMetrics::reason(DisconnectReason::DecryptFailed))
                    .inc();
                self.close(DisconnectReason::DecryptFailed, false, ctx);
            }
            Err(CodecError::Io(e)) => {
                log::debug!("peer {} conn {}: read failed: {e}", self.ip, self.conn_id);
                self.close(DisconnectReason::ConnectionLost, true, ctx);
            }
            Err(e) => {
                let reason = e.disconnect_reason();
                log::debug!("peer {} conn {}: {e}", self.ip, self.conn_id);
                self.env
                    .metrics
                    .frames_rejected
                    .get_or_create(&NetMetrics::reason(reason))
                    .inc();
                self.close(reason, false, ctx);
            }
        }
    }
}

impl Handler<Close> for PeerSession {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        self.close(msg.reason, false, ctx);
    }
}

impl Handler<FlushInbound> for PeerSession {
    type Result = ();

    fn handle(&mut self, _msg: FlushInbound, ctx: &mut Context<Self>) {
        self.deliver_burst(ctx);
    }
}

impl Handler<WriterFailed> for PeerSession {
    type Result = ();

    fn handle(&mut self, msg: WriterFailed, ctx: &mut Context<Self>) {
        log::debug!(
            "peer {} conn {}: write failed: {}",
            self.ip,
            self.conn_id,
            msg.error
        );
        self.close(DisconnectReason::ConnectionLost, true, ctx);
    }
}

// ---------------------------------------------------------------------------------------------

impl PeerSession {
    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        log::trace!(
            "peer {} conn {}: frame {}",
            self.ip,
            self.conn_id,
            frame.kind()
        );
        match (self.phase, frame) {
            (_, Frame::Disconnect { reason }) => self.close(reason, true, ctx),
            (Phase::AwaitingHello, Frame::Hello(hello)) => self.on_hello(hello, ctx),
            (Phase::AwaitingHello, _) => {
                self.close(DisconnectReason::ProtocolViolation, false, ctx)
            }
            (Phase::Active, Frame::Ping { nonce }) => {
                let pong = Frame::Pong { nonce }.encode();
                if !self.peer_handle().send_liveness(&pong) {
                    self.close(DisconnectReason::SlowPeer, false, ctx);
                }
            }
            (Phase::Active, Frame::Pong { nonce }) => {
                if let Some((expected, sent, timer)) = self.ping {
                    if expected == nonce {
                        let rtt = sent.elapsed();
                        self.ping = None;
                        // One timer per outstanding ping: actix polls every pending timer of a
                        // context on each wake-up, so leaving answered pings' timers to expire
                        // cost O(timeout / interval) per wake-up.
                        ctx.cancel_future(timer);
                        self.stats.record_rtt(rtt);
                        self.stats.pongs_matched.fetch_add(1, Ordering::Relaxed);
                        self.env.metrics.pongs_matched.inc();
                        self.env.metrics.rtt_seconds.observe(rtt.as_secs_f64());
                    }
                }
            }
            (Phase::Active, Frame::App(payload)) => self.on_app(&payload, || payload.clone(), ctx),
            (Phase::Active, Frame::Hello(_)) => self.close(DisconnectReason::BadHello, false, ctx),
            // Address gossip (PROTOCOL.md section 3.2): handed to the discovery actor, which
            // applies the rate limits; ignored when discovery is off.
            (Phase::Active, frame @ (Frame::GetAddrs {} | Frame::Addrs { .. })) => {
                if let Some(discovery) = &self.env.discovery {
                    discovery.do_send(crate::env::GossipFrame {
                        conn: self.conn_id,
                        handle: self.peer_handle().clone(),
                        frame,
                    });
                }
            }
            (Phase::Registering | Phase::Closing, _) => {}
        }
    }

    /// An App payload of an active session (`share` makes it shared bytes, for a large one the
    /// inbox keeps as it is). Checked now and copied into the burst, so that the read buffer is
    /// free again for the next read; the burst is handed over once the stream yields (after at
    /// most 16 reads) or when it is full: one hand-over per burst.
    fn on_app(&mut self, payload: &[u8], share: impl FnOnce() -> Bytes, ctx: &mut Context<Self>) {
        let first = self.inbox.is_empty();
        if let Err(e) = self.inbox.push(payload, share) {
            log::debug!(
                "peer {} conn {}: bad application message: {e}",
                self.ip,
                self.conn_id
            );
            self.env
                .metrics
                .frames_rejected
                .get_or_create(&NetMetrics::reason(DisconnectReason::BadFrame))
                .inc();
            return self.close(DisconnectReason::BadFrame, false, ctx);
        }
        if first {
            ctx.notify(FlushInbound);
        }
        if self.credit.outstanding() + self.inbox.cost() >= self.env.config.inbound_budget_bytes
            || self.inbox.is_full()
        {
            // The application would hold the budget with this burst: hand it over now
            // (and stop reading), so it never holds more than budget + one frame. A
            // burst that reached its size is handed over too (its buffer is reused).
            self.deliver_burst(ctx);
        }
    }

    fn on_hello(&mut self, hello: Hello, ctx: &mut Context<Self>) {
        if let Err(reason) = self.env.hello_policy.check(&hello) {
            log::info!(
                "peer {} conn {}: refused at handshake: {reason}",
                self.ip,
                self.conn_id
            );
            self.close(reason, false, ctx);
            return;
        }
        if hello.nonce == self.env.node_nonce {
            log::info!("peer {} conn {}: connection to self", self.ip, self.conn_id);
            if let Some(origin) = &self.origin {
                origin
                    .connector
                    .do_send(DialEvent::OwnAddress { addr: origin.addr });
            }
            self.close(DisconnectReason::SelfConnection, false, ctx);
            return;
        }
        self.phase = Phase::Registering;
        // The peer's part of the handshake is done: its pending-handshake slot is free before
        // the registry hears of it (so a peer seen registered no longer holds a slot).
        self.pending_permit = None;
        self.max_frame
            .store(self.env.config.max_frame_bytes, Ordering::Relaxed);
        self.batching.store(true, Ordering::Relaxed);
        let dialer_port = match self.direction {
            Direction::Outbound => self.local_addr.port(),
            Direction::Inbound => self.peer_addr.port(),
        };
        let register = Register {
            ip: self.ip,
            facts: ConnFacts {
                conn_id: self.conn_id,
                direction: self.direction,
                remote_nonce: hello.nonce,
                dialer_port,
                remote_key: self.remote_key,
            },
            session: ctx.address().recipient(),
            handle: self.peer_handle().clone(),
            stats: self.stats.clone(),
            meta: PeerMeta {
                local_addr: self.local_addr,
                peer_addr: self.peer_addr,
                listen_addr: (hello.listen_port != 0)
                    .then(|| SocketAddr::new(self.ip, hello.listen_port)),
                best_height: hello.best_height,
                user_agent: hello.user_agent,
            },
        };
        let fut = self
            .env
            .registry
            .send(register)
            .into_actor(self)
            .map(|res, act, ctx| {
                act.registering = false;
                match res {
                    Ok(RegisterOutcome::Accepted) | Ok(RegisterOutcome::Replaced { .. }) => {
                        act.activate(ctx)
                    }
                    Ok(RegisterOutcome::Rejected(reason)) => act.close(reason, false, ctx),
                    Err(_) => act.close(DisconnectReason::Shutdown, false, ctx),
                }
            });
        // Reading pauses until the registry has decided; the mailbox and timers do not.
        self.registering = true;
        self.gate.pause();
        ctx.spawn(fut);
    }

    fn activate(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Registering {
            return;
        }
        self.phase = Phase::Active;
        self.registered_at = Some(Instant::now());
        self.gate.resume();
        self.pending_permit = None;
        if let Some(timer) = self.handshake_timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(origin) = &self.origin {
            origin
                .connector
                .do_send(DialEvent::Registered { addr: origin.addr });
        }
        ctx.run_interval(self.env.config.ping_interval(), |act, ctx| {
            act.inbox.idle_check();
            act.send_ping(ctx)
        });
    }

    fn send_ping(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Active || self.ping.is_some() {
            return;
        }
        let nonce: u64 = rand::random();
        let sent = Instant::now();
        self.stats.pings_sent.fetch_add(1, Ordering::Relaxed);
        self.env.metrics.pings_sent.inc();
        if !self
            .peer_handle()
            .send_liveness(&Frame::Ping { nonce }.encode())
        {
            self.close(DisconnectReason::SlowPeer, false, ctx);
            return;
        }
        let timer = ctx.run_later(self.env.config.ping_timeout(), move |act, ctx| {
            if matches!(act.ping, Some((n, _, _)) if n == nonce) {
                act.close(DisconnectReason::PingTimeout, false, ctx);
            }
        });
        self.ping = Some((nonce, sent, timer));
    }

    /// Hands the collected burst over; stops reading while the application holds more than
    /// the inbound budget.
    fn deliver_burst(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::Closing {
            return;
        }
        self.flush_inbound();
        if self.credit.is_over() && !self.gate.is_paused() {
            // The application is behind: stop reading from this peer until it catches up
            // (Close, timers and shutdown still act meanwhile).
            self.gate.pause();
            ctx.spawn(
                self.credit
                    .clone()
                    .drained()
                    .into_actor(self)
                    .map(|_, act, _| act.gate.resume()),
            );
        }
    }

    /// Hands the checked payloads of the burst to the application (decoded on its thread).
    fn flush_inbound(&mut self) {
        if let Some(handle) = &self.handle {
            self.inbox.flush(handle, &self.credit);
        }
    }

    /// The one way a session ends: record the reason, tell the peer when the socket works,
    /// let the writer flush (or drop a slow peer's queue), stop the actor.
    fn close(&mut self, reason: DisconnectReason, by_peer: bool, ctx: &mut Context<Self>) {
        if self.phase == Phase::Closing {
            return;
        }
        // Messages that arrived before the close still reach the application, in order.
        self.flush_inbound();
        self.phase = Phase::Closing;
        self.closed = Some((reason, by_peer));
        if let Some(handle) = &self.handle {
            if !by_peer && reason.is_sent_on_wire() {
                handle.send_control(Frame::Disconnect { reason }.encode());
            }
            handle.mark_closed();
        }
        if let Some(close) = self.writer_close.take() {
            let how = if reason == DisconnectReason::SlowPeer {
                WriterClose::Abort
            } else {
                WriterClose::Flush(CLOSE_FLUSH_TIMEOUT)
            };
            let _ = close.send(how);
        }
        self.inbound_permit = None;
        self.pending_permit = None;
        ctx.stop();
    }

    fn peer_handle(&self) -> &PeerHandle {
        self.handle
            .as_ref()
            .expect("the handle exists from started() on")
    }
}

/// Pauses a session's reading without pausing its actor: while paused, the wrapped stream
/// returns `Pending` and is woken again by [`ReadGate::resume`]. Lives on the session's thread.
#[derive(Default, Clone)]
pub(crate) struct ReadGate {
    state: Rc<GateState>,
}

#[derive(Default)]
struct GateState {
    paused: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl ReadGate {
    fn wrap<R, D>(&self, inner: FramedRead<R, D>) -> Gated<R, D> {
        Gated {
            inner,
            gate: self.clone(),
            peak: 0,
            released: 0,
        }
    }

    fn pause(&self) {
        self.state.paused.set(true);
    }

    fn resume(&self) {
        self.state.paused.set(false);
        if let Some(waker) = self.state.waker.take() {
            waker.wake();
        }
    }

    fn is_paused(&self) -> bool {
        self.state.paused.get()
    }
}

/// The session's frame stream behind a [`ReadGate`]. While the connection is idle (the socket
/// has nothing more and no partial frame is buffered) it holds no read buffer: the buffer is
/// freed when the stream returns `Pending` with it empty, and allocated again on the next poll
/// at the largest size the connection used before, so a busy connection gets its large buffer
/// back in one allocation (no regrowth, nothing to copy) and an idle one keeps nothing.
struct Gated<R, D> {
    inner: FramedRead<R, D>,
    gate: ReadGate,
    /// Largest read buffer capacity seen since the buffer was last freed.
    peak: usize,
    /// Capacity to allocate on the next poll (0: the buffer is in place).
    released: usize,
}

impl<R, D> Stream for Gated<R, D>
where
    R: tokio::io::AsyncRead + Unpin,
    D: tokio_util::codec::Decoder + Unpin,
{
    type Item = Result<D::Item, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.gate.is_paused() {
            this.gate.state.waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        let buf = this.inner.read_buffer_mut();
        if this.released > 0 {
            buf.reserve(this.released);
            this.released = 0;
        }
        this.peak = this.peak.max(buf.capacity());
        let item = Pin::new(&mut this.inner).poll_next(cx);
        if item.is_pending() {
            let buf = this.inner.read_buffer_mut();
            if buf.is_empty() && buf.capacity() > 0 {
                this.released = this
                    .peak
                    .max(buf.capacity())
                    .clamp(READ_BUFFER_INITIAL_BYTES, READ_BUFFER_REALLOC_MAX_BYTES);
                this.peak = 0;
                *buf = BytesMut::new();
            }
        }
        item
    }
}
