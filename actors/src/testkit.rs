//! Test kit (feature `test-util`): fake peers for unit-testing actors without sockets.
//!
//! A [`FakePeer`] stands where a session would: it delivers bursts of messages to the actor
//! under test as real [`Inbound`]s (with a real [`PeerHandle`], inbound credit and all) and
//! records what the actor sends back through that handle, decoded, in order, together with a
//! close the actor asked for. The handle's writer is the real writer task, writing into an
//! in-memory pipe instead of a socket, so outbound budgets, frame caps and send outcomes behave
//! as they do on a connection.
//!
//! ```
//! use actix::prelude::*;
//! use peerlink_actors::Inbound;
//! use peerlink_actors::testkit::FakePeer;
//!
//! /// The actor under test: answers every number with its double.
//! struct Doubler;
//! impl Actor for Doubler { type Context = Context<Self>; }
//! impl Handler<Inbound<u64>> for Doubler {
//!     type Result = ();
//!     fn handle(&mut self, inbound: Inbound<u64>, _: &mut Context<Self>) {
//!         for n in inbound.msgs() {
//!             let _ = inbound.from.send(&(n * 2));
//!         }
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     let app = Doubler.start();
//!     let mut peer = FakePeer::<u64>::new("127.0.0.2".parse().unwrap());
//!     peer.deliver(&app.clone().recipient(), [1, 2, 3]);
//!     assert_eq!(peer.next_sent().await, Some(2));
//!     assert_eq!(peer.next_sent().await, Some(4));
//!     assert_eq!(peer.next_sent().await, Some(6));
//! }
//! ```

use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use actix::prelude::*;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::task::TaskTracker;

use crate::constants::{DEFAULT_MAX_FRAME_BYTES, DEFAULT_OUTBOUND_BUDGET_BYTES};
use crate::credit::InboundCredit;
use crate::delivery::{AppMessage, Inbound, PayloadBurst};
use crate::handle::{spawn_writer, PeerHandle, WriterClose, WriterParts};
use crate::lanes::Lane;
use crate::metrics::NetMetrics;
use crate::protocol::{decode_app, encode_app, Frame, FrameCodec};
use crate::reason::DisconnectReason;
use crate::session_api::{Close, WriterFailed};
use crate::ConnId;

/// Bytes of the in-memory pipe between a fake peer's writer and its reader.
const PIPE_BYTES: usize = 256 * 1024;

/// A peer without a socket, for unit tests of actors that receive [`Inbound`] messages.
/// Create it inside an actix system (it spawns the writer task and a reader on the current
/// thread).
pub struct FakePeer<M> {
    handle: PeerHandle,
    credit: Arc<InboundCredit>,
    sent: mpsc::UnboundedReceiver<Frame>,
    closed: Arc<OnceLock<DisconnectReason>>,
    /// Kept so that the writer stays alive as long as the fake peer.
    _writer_close: tokio::sync::oneshot::Sender<WriterClose>,
    _session: Addr<FakeSession>,
    _msg: PhantomData<fn(M) -> M>,
}

impl<M: AppMessage> FakePeer<M> {
    /// A fake peer at `ip` with the default outbound budget and frame cap.
    pub fn new(ip: IpAddr) -> Self {
        Self::with_limits(ip, DEFAULT_OUTBOUND_BUDGET_BYTES, DEFAULT_MAX_FRAME_BYTES)
    }

    /// A fake peer with the given outbound budget and frame cap (bytes), to test how an actor
    /// copes with a slow peer or too large messages.
    pub fn with_limits(ip: IpAddr, outbound_budget_bytes: usize, max_frame_bytes: usize) -> Self {
        let closed = Arc::new(OnceLock::new());
        let session = FakeSession {
            closed: closed.clone(),
        }
        .start();
        let (handle, writer_close, read_end) = fake_handle(
            crate::canonical_ip(ip),
            outbound_budget_bytes,
            max_frame_bytes,
            session.clone().recipient(),
            session.clone().recipient(),
        );
        let (tx, sent) = mpsc::unbounded_channel();
        actix_rt::spawn(async move {
            let cap = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
            let mut frames = FramedRead::new(read_end, FrameCodec::new(cap));
            while let Some(Ok(body)) = frames.next().await {
                match Frame::decode(body) {
                    Ok(frame) => {
                        if tx.send(frame).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Self {
            handle,
            credit: InboundCredit::new(usize::MAX / 2),
            sent,
            closed,
            _writer_close: writer_close,
            _session: session,
            _msg: PhantomData,
        }
    }

    /// The handle the actor sees as `Inbound::from`.
    pub fn handle(&self) -> &PeerHandle {
        &self.handle
    }

    /// Delivers `msgs` to `app` as one burst, as a session does with the messages of one read.
    pub fn deliver(&self, app: &Recipient<Inbound<M>>, msgs: impl IntoIterator<Item = M>) {
        let mut payloads = Vec::new();
        let mut ends = Vec::new();
        for msg in msgs {
            // An App frame's payload is the message's MessagePack encoding.
            let Ok(frame) = encode_app(&msg) else {
                continue;
            };
            if let Ok(Frame::App(payload)) = Frame::decode(frame.slice(4..)) {
                payloads.extend_from_slice(&payload);
                ends.push(payloads.len());
            }
        }
        let credit = self.credit.take(payloads.len());
        app.do_send(Inbound::from(PayloadBurst {
            from: self.handle.clone(),
            payloads,
            ends,
            large: Vec::new(),
            credit,
            spare: None,
        }));
    }

    /// The next application message the actor sent to this peer, in order; `None` once the
    /// handle is closed and everything sent has been read.
    pub async fn next_sent(&mut self) -> Option<M> {
        while let Some(frame) = self.sent.recv().await {
            if let Frame::App(payload) = frame {
                return decode_app(&payload).ok();
            }
        }
        None
    }

    /// Every application message sent so far that has already been written, without waiting.
    pub fn try_sent(&mut self) -> Vec<M> {
        let mut out = Vec::new();
        while let Ok(frame) = self.sent.try_recv() {
            if let Frame::App(payload) = frame {
                if let Ok(msg) = decode_app(&payload) {
                    out.push(msg);
                }
            }
        }
        out
    }

    /// The reason the actor gave when it asked to close this peer's connection
    /// ([`PeerHandle::disconnect`]), or `SlowPeer` when its sends went over the budget.
    pub fn close_requested(&self) -> Option<DisconnectReason> {
        self.closed.get().copied()
    }
}

/// Stands in for the session behind a fake handle: records the close it is asked for.
pub(crate) struct FakeSession {
    /// The first close asked for, read by the test (set once, no lock).
    pub(crate) closed: Arc<OnceLock<DisconnectReason>>,
}

impl Actor for FakeSession {
    type Context = Context<Self>;
}

impl Handler<Close> for FakeSession {
    type Result = ();

    fn handle(&mut self, msg: Close, _ctx: &mut Context<Self>) {
        let _ = self.closed.set(msg.reason);
    }
}

impl Handler<WriterFailed> for FakeSession {
    type Result = ();

    fn handle(&mut self, _msg: WriterFailed, _ctx: &mut Context<Self>) {
        let _ = self.closed.set(DisconnectReason::ConnectionLost);
    }
}

/// A real [`PeerHandle`] whose writer writes into an in-memory pipe; returns the pipe's read
/// end. Its lane is a lane of its own on the current thread.
pub(crate) fn fake_handle(
    ip: IpAddr,
    budget: usize,
    max_frame_bytes: usize,
    session: Recipient<Close>,
    failed: Recipient<WriterFailed>,
) -> (
    PeerHandle,
    tokio::sync::oneshot::Sender<WriterClose>,
    tokio::io::DuplexStream,
) {
    let (write_end, read_end) = tokio::io::duplex(PIPE_BYTES);
    let lane = Lane::spawn_here();
    let link = lane.link(0);
    // The lane task ends when its last sender (the link, held by the handle) is gone.
    drop(lane);
    let (handle, close) = spawn_writer(
        WriterParts {
            ip,
            conn_id: ConnId::next(),
            link,
            budget,
            max_frame_bytes,
            session,
            failed,
            metrics: Arc::new(NetMetrics::default()),
            task: TaskTracker::new().token(),
        },
        write_end,
    );
    (handle, close, read_end)
}
