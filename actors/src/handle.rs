//! `PeerHandle`: the send side of one session, and the writer task that owns the socket's write
//! half. A handle can be cloned and used from any thread; it queues encoded frames without going
//! through any actor mailbox, and it enforces the per-peer outbound byte budget: the bytes queued
//! but not yet written are counted, and a send that would exceed the budget is refused with
//! [`SendOutcome::PeerSlow`] and closes the session with `SlowPeer`. Nothing here is unbounded.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use crate::constants::WRITE_BATCH_BYTES;
use crate::metrics::NetMetrics;
use crate::protocol::{encode_app, encode_apps, DisconnectReason};
use crate::session::{PeerSession, WriterFailed};
use crate::ConnId;

/// What became of a frame handed to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for writing on the peer's socket.
    Queued,
    /// No connection to that peer (or it is closing).
    NotConnected,
    /// The peer's outbound budget is exhausted; the connection is being closed as slow.
    PeerSlow,
}

/// State shared between handles and the writer task.
#[derive(Debug)]
pub(crate) struct SendState {
    /// Bytes queued but not yet written.
    queued: AtomicUsize,
    /// Bytes written to the socket.
    pub(crate) bytes_out: AtomicU64,
    /// Set when the session closes; later sends report `NotConnected`.
    closed: AtomicBool,
    budget: usize,
}

/// How the writer should finish.
#[derive(Debug)]
pub(crate) enum WriterClose {
    /// Write what is queued (bounded by the deadline), then shut the socket down.
    Flush(Duration),
    /// Drop what is queued and close now.
    Abort,
}

/// Cloneable, thread-safe send side of one session.
///
/// Cloning is one reference count increment: every [`crate::Inbound`] carries a clone, and
/// cloning the parts separately cost five atomic updates and two allocations (actix's
/// `Addr::clone` allocates), freed on the application's thread.
#[derive(Clone)]
pub struct PeerHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    ip: IpAddr,
    conn_id: ConnId,
    tx: mpsc::UnboundedSender<Bytes>,
    state: Arc<SendState>,
    session: Addr<PeerSession>,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle")
            .field("ip", &self.inner.ip)
            .field("conn_id", &self.inner.conn_id)
            .field("queued", &self.queued_bytes())
            .finish()
    }
}

impl PeerHandle {
    /// Canonical IP of the peer.
    pub fn ip(&self) -> IpAddr {
        self.inner.ip
    }

    /// Id of the connection this handle writes to.
    pub fn conn_id(&self) -> ConnId {
        self.inner.conn_id
    }

    /// Bytes queued for this peer and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.inner.state.queued.load(Ordering::Relaxed)
    }

    /// Whether the session behind this handle has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.state.closed.load(Ordering::Acquire) || self.inner.tx.is_closed()
    }

    /// Queues an already encoded frame (length prefix included). Encode once with
    /// [`crate::protocol::encode_app`] and clone the `Bytes` to send the same message to many
    /// peers.
    pub fn send_frame(&self, frame: Bytes) -> SendOutcome {
        if self.is_closed() {
            return SendOutcome::NotConnected;
        }
        let len = frame.len();
        let before = self.inner.state.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.inner.state.budget {
            self.inner.state.queued.fetch_sub(len, Ordering::AcqRel);
            if !self.inner.state.closed.swap(true, Ordering::AcqRel) {
                self.inner.session.do_send(crate::session::Close {
                    reason: DisconnectReason::SlowPeer,
                });
            }
            return SendOutcome::PeerSlow;
        }
        if self.inner.tx.send(frame).is_err() {
            self.inner.state.queued.fetch_sub(len, Ordering::AcqRel);
            return SendOutcome::NotConnected;
        }
        SendOutcome::Queued
    }

    /// Encodes and queues one application message.
    pub fn send<M: Serialize>(&self, msg: &M) -> Result<SendOutcome, rmp_serde::encode::Error> {
        Ok(self.send_frame(encode_app(msg)?))
    }

    /// Encodes several messages into one buffer and queues them together: one allocation and
    /// one hand-over to the writer for all of them, in order. They count against the outbound
    /// budget as one unit, so keep a batch far below it (a few dozen KiB).
    pub fn send_many<'a, M: Serialize + 'a>(
        &self,
        msgs: impl IntoIterator<Item = &'a M>,
    ) -> Result<SendOutcome, rmp_serde::encode::Error> {
        Ok(self.send_frame(encode_apps(msgs)?))
    }

    /// Asks the session to close with `reason` (sent to the peer when the socket works).
    pub fn disconnect(&self, reason: DisconnectReason) {
        self.inner.session.do_send(crate::session::Close { reason });
    }

    /// Frames queued by the session itself (pong, ping, disconnect): same budget, no close
    /// signalling through the mailbox since the caller is the session.
    pub(crate) fn send_control(&self, frame: Bytes) -> bool {
        let len = frame.len();
        let before = self.inner.state.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.inner.state.budget {
            self.inner.state.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.inner.tx.send(frame).is_err() {
            self.inner.state.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Marks the handle closed so that later sends report `NotConnected`.
    pub(crate) fn mark_closed(&self) {
        self.inner.state.closed.store(true, Ordering::Release);
    }

    pub(crate) fn bytes_out(&self) -> u64 {
        self.inner.state.bytes_out.load(Ordering::Relaxed)
    }
}

/// Creates the handle and spawns the writer task on the current thread's runtime. Returns the
/// handle and the sender that tells the writer how to finish.
pub(crate) fn spawn_writer(
    ip: IpAddr,
    conn_id: ConnId,
    write_half: OwnedWriteHalf,
    budget: usize,
    session: Addr<PeerSession>,
    metrics: Arc<NetMetrics>,
) -> (PeerHandle, oneshot::Sender<WriterClose>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = oneshot::channel();
    let state = Arc::new(SendState {
        queued: AtomicUsize::new(0),
        bytes_out: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        budget,
    });
    let handle = PeerHandle {
        inner: Arc::new(HandleInner {
            ip,
            conn_id,
            tx,
            state: state.clone(),
            session: session.clone(),
        }),
    };
    actix_rt::spawn(run_writer(
        write_half, rx, close_rx, state, session, metrics,
    ));
    (handle, close_tx)
}

/// Drains the queue into the socket, batching small frames, until told to close.
async fn run_writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    mut close: oneshot::Receiver<WriterClose>,
    state: Arc<SendState>,
    session: Addr<PeerSession>,
    metrics: Arc<NetMetrics>,
) {
    metrics.writers_alive.inc();
    let mut batch = BytesMut::new();
    let how = loop {
        let first = tokio::select! {
            biased;
            how = &mut close => break how.unwrap_or(WriterClose::Abort),
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => break WriterClose::Abort,
            },
        };
        let write = write_batch(&mut wr, &mut rx, &mut batch, first, &state, &metrics);
        tokio::pin!(write);
        let result = tokio::select! {
            biased;
            how = &mut close => match how.unwrap_or(WriterClose::Abort) {
                // Never leave half a frame on the wire before more frames: finish the write in
                // progress within the deadline, or give up on the socket.
                WriterClose::Flush(deadline) => match tokio::time::timeout(deadline, &mut write).await {
                    Ok(Ok(())) => break WriterClose::Flush(deadline),
                    _ => break WriterClose::Abort,
                },
                WriterClose::Abort => break WriterClose::Abort,
            },
            r = &mut write => r,
        };
        if let Err(e) = result {
            session.do_send(WriterFailed {
                error: e.to_string(),
            });
            break WriterClose::Abort;
        }
    };
    if let WriterClose::Flush(deadline) = how {
        let flush = async {
            while let Ok(frame) = rx.try_recv() {
                write_batch(&mut wr, &mut rx, &mut batch, frame, &state, &metrics).await?;
            }
            wr.shutdown().await
        };
        let _ = tokio::time::timeout(deadline, flush).await;
    }
    rx.close();
    metrics.writers_alive.dec();
}

/// Writes `first` and whatever else is already queued, copying small frames into one buffer so
/// that a burst of small messages costs one syscall.
async fn write_batch(
    wr: &mut OwnedWriteHalf,
    rx: &mut mpsc::UnboundedReceiver<Bytes>,
    batch: &mut BytesMut,
    first: Bytes,
    state: &SendState,
    metrics: &NetMetrics,
) -> std::io::Result<()> {
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        let len = frame.len();
        if len >= WRITE_BATCH_BYTES / 2 {
            // Large frame: flush the batch, then write it directly without copying.
            flush_batch(wr, batch, state, metrics).await?;
            wr.write_all(&frame).await?;
            account(state, metrics, len);
        } else {
            batch.extend_from_slice(&frame);
            if batch.len() >= WRITE_BATCH_BYTES {
                flush_batch(wr, batch, state, metrics).await?;
            }
        }
        next = rx.try_recv().ok();
    }
    flush_batch(wr, batch, state, metrics).await
}

async fn flush_batch(
    wr: &mut OwnedWriteHalf,
    batch: &mut BytesMut,
    state: &SendState,
    metrics: &NetMetrics,
) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    wr.write_all(batch).await?;
    let len = batch.len();
    batch.clear();
    account(state, metrics, len);
    Ok(())
}

fn account(state: &SendState, metrics: &NetMetrics, len: usize) {
    state.queued.fetch_sub(len, Ordering::AcqRel);
    state.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    metrics.bytes_out.inc_by(len as u64);
}
