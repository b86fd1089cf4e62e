//! `PeerHandle`: the send side of one session, and the writer task that owns the socket's write
//! half. A handle can be cloned and used from any thread; it queues encoded frames without going
//! through any actor mailbox (or, with nothing in flight, writes a message itself: see
//! [`SendState`]), and it enforces the per-peer outbound byte budget: the bytes queued
//! but not yet written are counted, and a send that would exceed the budget is refused with
//! [`SendOutcome::PeerSlow`] and closes the session with `SlowPeer`. Nothing here is unbounded.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::Recipient;
use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::constants::{LARGE_FRAME_BYTES, WRITE_BUFFER_KEEP_BYTES, WRITE_BUFFER_RELEASE_AFTER};
use crate::lanes::LaneLink;
use crate::level::Level;
use crate::metrics::NetMetrics;
use crate::protocol::{encode_apps, scratch_into_bytes, with_encoded_apps, LENGTH_PREFIX_BYTES};
use crate::reason::DisconnectReason;
use crate::session_api::{Close, WriterFailed};
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
    /// Nothing was queued and the connection stays up: a message is larger than the frame
    /// cap (`max_frame_bytes`, the peer would close on it), or a batch is larger than the
    /// whole outbound budget (it could never be queued). Split it, or raise the limits.
    TooLarge,
}

/// Frames waiting for the writer, in order: the rest of a frame a sender began writing itself,
/// sealed segments, then the open buffer that small frames are copied into.
#[derive(Default)]
struct Outbox {
    /// What the socket did not take of a sender's own write ([`SendState::write_now`]): the
    /// rest of a frame, written before anything else (liveness frames included).
    partial: Vec<u8>,
    /// Large frames (kept as the caller's shared bytes, not copied) and the small-frame buffers
    /// sealed in front of them.
    sealed: Vec<Bytes>,
    /// Small frames, copied in one after the other: one buffer for a whole burst.
    open: Vec<u8>,
    /// Pings and pongs: written before queued data, between whole frames of it, so that a
    /// busy but healthy connection still answers and measures liveness in time.
    control: Vec<u8>,
    /// The socket's write half while the writer is idle: a sender may take it for one write
    /// that does not wait and put it back. `None` while the writer or such a sender has it.
    sink: Option<Box<dyn WriteSink>>,
    /// A sender's own write left bytes in the sink (a record not yet sent): the writer flushes.
    unflushed: bool,
    /// The writer found the outbox empty and waits to be notified.
    writer_idle: bool,
    /// The writer is closing and waits for the sink to be put back.
    closing: bool,
    /// The writer has finished; nothing more is accepted.
    closed: bool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("partial", &self.partial.len())
            .field("sealed", &self.sealed.len())
            .field("open", &self.open.len())
            .field("control", &self.control.len())
            .field("sink_parked", &self.sink.is_some())
            .field("writer_idle", &self.writer_idle)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.partial.is_empty()
            && self.sealed.is_empty()
            && self.open.is_empty()
            && self.control.is_empty()
            && !self.unflushed
    }

    /// Appends a frame that is already encoded: a large one as the shared bytes (one reference
    /// count increment), a small one copied.
    fn push_frame(&mut self, frame: &Bytes) {
        if frame.len() >= LARGE_FRAME_BYTES {
            if !self.open.is_empty() {
                let open = std::mem::take(&mut self.open);
                self.sealed.push(Bytes::from(open));
            }
            self.sealed.push(frame.clone());
        } else {
            self.open.extend_from_slice(frame);
        }
    }
}

/// State shared between handles and the writer task.
///
/// The outbox is the one lock of the send path. It guards a byte buffer, not peer state, and
/// is held for one copy of encoded bytes (by a sender) or one swap of buffers (by the writer),
/// never across user code, an await or a write to the socket. Senders encode into a per-thread
/// scratch buffer and copy the frames in, so a message costs no allocation and no hand-over of
/// its own: the writer takes everything queued at once.
///
/// A message sent to a connection with nothing in flight is written by the sender itself
/// ([`SendState::write_now`]): it takes the idle writer's socket half out of the outbox, writes
/// without waiting and puts it back, so a request or a reply does not wait for the writer's
/// thread to wake (BENCHMARKS.md, scenario d). Whatever the socket does not take goes to the
/// writer, ahead of anything queued meanwhile.
#[derive(Debug)]
pub(crate) struct SendState {
    /// Bytes queued but not yet written; senders can wait for it to fall.
    queued: Level,
    /// Bytes written to the socket.
    pub(crate) bytes_out: AtomicU64,
    /// Set when the session closes; later sends report `NotConnected`.
    closed: AtomicBool,
    budget: usize,
    /// Largest frame body the peer accepts (`max_frame_bytes`).
    max_frame_bytes: usize,
    outbox: Mutex<Outbox>,
    /// Liveness frames wait in the outbox: the writer takes them at its next frame boundary.
    control_pending: AtomicBool,
    /// Wakes the writer when the outbox stops being empty.
    wake: Notify,
    /// A sender may write the next message itself: set when the writer goes idle and when the
    /// session reads from the peer, cleared by such a write. A sender in a loop thus writes at
    /// most once per idle period of the writer, not once per message.
    direct_armed: AtomicBool,
    metrics: Arc<NetMetrics>,
    /// Senders' own writes, and those the socket did not take whole (for tests).
    #[cfg(test)]
    own_writes: [AtomicU64; 2],
}

impl SendState {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // The lock is never held across user code or an await; a poisoned lock can only come
        // from a panic inside Vec::extend, and the byte queue is still whole.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `len` bytes against the budget; false (and nothing counted) if over it.
    fn reserve(&self, len: usize) -> bool {
        let before = self.queued.add(len);
        if before + len > self.budget {
            self.queued.undo_add(len);
            return false;
        }
        true
    }

    /// Queues `len` bytes added by `push`, within the budget, and wakes the writer if it was
    /// idle.
    fn enqueue(&self, len: usize, push: impl FnOnce(&mut Outbox)) -> Enqueued {
        let outbox = self.outbox();
        if outbox.closed {
            return Enqueued::Closed;
        }
        if !self.reserve(len) {
            return Enqueued::OverBudget;
        }
        self.push_and_wake(outbox, push)
    }

    /// Queues a frame whose bytes were reserved already (a send routed through the lane).
    fn enqueue_reserved(&self, frame: &Bytes) -> Enqueued {
        let outbox = self.outbox();
        if outbox.closed {
            self.queued.undo_add(frame.len());
            return Enqueued::Closed;
        }
        self.push_and_wake(outbox, |outbox| outbox.push_frame(frame))
    }

    fn push_and_wake(
        &self,
        mut outbox: MutexGuard<'_, Outbox>,
        push: impl FnOnce(&mut Outbox),
    ) -> Enqueued {
        push(&mut outbox);
        self.wake_idle_writer(outbox);
        Enqueued::Queued
    }

    /// Wakes the writer if it is idle with its sink parked. While a sender has the sink, that
    /// sender wakes the writer when it puts the sink back.
    fn wake_idle_writer(&self, mut outbox: MutexGuard<'_, Outbox>) {
        let wake = outbox.writer_idle && outbox.sink.is_some();
        if wake {
            outbox.writer_idle = false;
        }
        drop(outbox);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Queues encoded frames by copying them into the open buffer, or writes them at once
    /// when nothing is in flight ([`SendState::write_now`]).
    fn enqueue_slice(&self, frames: &[u8]) -> Enqueued {
        let mut outbox = self.outbox();
        if outbox.closed {
            return Enqueued::Closed;
        }
        if !self.reserve(frames.len()) {
            return Enqueued::OverBudget;
        }
        if outbox.writer_idle
            && !outbox.closing
            && outbox.is_empty()
            && outbox.sink.is_some()
            && self.direct_armed.swap(false, Ordering::Relaxed)
        {
            if let Some(sink) = outbox.sink.take() {
                drop(outbox);
                self.write_now(sink, frames);
                return Enqueued::Queued;
            }
        }
        self.push_and_wake(outbox, |outbox| outbox.open.extend_from_slice(frames))
    }

    /// Writes `frames` (reserved, nothing queued before them) through the idle writer's sink
    /// on the caller's thread, without waiting: what the socket takes now is written, the rest
    /// (and a record the sink still holds) goes to the writer, which is woken for it and for
    /// whatever was queued meanwhile. An error is left for the writer to meet and report.
    fn write_now(&self, mut sink: Box<dyn WriteSink>, frames: &[u8]) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut written = 0;
        while written < frames.len() {
            match std::pin::Pin::new(&mut *sink).poll_write(&mut cx, &frames[written..]) {
                std::task::Poll::Ready(Ok(n)) if n > 0 => written += n,
                _ => break,
            }
        }
        let flushed = written > 0
            && matches!(
                std::pin::Pin::new(&mut *sink).poll_flush(&mut cx),
                std::task::Poll::Ready(Ok(()))
            );
        if written > 0 {
            account(self, &self.metrics, written);
        }
        #[cfg(test)]
        {
            self.own_writes[0].fetch_add(1, Ordering::Relaxed);
            if written < frames.len() || !flushed {
                self.own_writes[1].fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut outbox = self.outbox();
        if outbox.closed {
            // The writer has finished: the sink goes with it.
            drop(outbox);
            drop(sink);
            return;
        }
        outbox.sink = Some(sink);
        // Ahead of anything other senders queued while the sink was out.
        outbox.partial.extend_from_slice(&frames[written..]);
        outbox.unflushed |= written > 0 && !flushed;
        if !outbox.is_empty() || outbox.closing {
            outbox.writer_idle = false;
            drop(outbox);
            self.wake.notify_one();
        }
    }

    /// Queues a frame held as shared bytes (copied only if small).
    fn enqueue_frame(&self, frame: &Bytes) -> Enqueued {
        self.enqueue(frame.len(), |outbox| outbox.push_frame(frame))
    }
}

/// What [`SendState::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enqueued {
    Queued,
    OverBudget,
    Closed,
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
    /// The session thread's broadcast lane, which direct sends go through while it holds
    /// broadcasts.
    link: LaneLink,
    state: Arc<SendState>,
    session: Recipient<Close>,
    /// When the application last marked the peer useful ([`crate::clock`] milliseconds plus
    /// one; 0 = never). Read by the registry's eviction policy.
    last_useful: AtomicU64,
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

    /// Index of the session thread the session runs on (its broadcast lane).
    pub(crate) fn lane(&self) -> usize {
        self.inner.link.index
    }

    /// Bytes queued for this peer and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.inner.state.queued.get()
    }

    /// Whether the session behind this handle has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.state.closed.load(Ordering::Acquire)
    }

    /// Queues an already encoded frame (length prefix included). Encode once with
    /// [`crate::wire::encode_app`] and clone the `Bytes` to send the same message to many
    /// peers: a large frame is queued as the shared bytes, a small one copied into the peer's
    /// write buffer. Always queued for the peer's writer (a fan-out from one thread leaves
    /// the writes to the session threads), unlike [`PeerHandle::send`].
    pub fn send_frame(&self, frame: Bytes) -> SendOutcome {
        if self.is_closed() {
            return SendOutcome::NotConnected;
        }
        if let Some(outcome) = self.too_large(&frame) {
            return outcome;
        }
        if self.inner.link.is_busy() {
            return self.send_behind_broadcasts(frame);
        }
        self.send_shared(&frame)
    }

    /// A send made while the session's lane holds broadcasts: counted against the budget now,
    /// queued by the lane after them.
    fn send_behind_broadcasts(&self, frame: Bytes) -> SendOutcome {
        if !self.inner.state.reserve(frame.len()) {
            return self.outcome(Enqueued::OverBudget);
        }
        let len = frame.len();
        if !self.inner.link.direct(self.clone(), frame) {
            self.inner.state.queued.undo_add(len);
            return SendOutcome::NotConnected;
        }
        SendOutcome::Queued
    }

    /// Queues a frame reserved by [`PeerHandle::send_behind_broadcasts`] (called by the lane).
    pub(crate) fn send_reserved(&self, frame: &Bytes) {
        let _ = self.inner.state.enqueue_reserved(frame);
    }

    /// [`PeerHandle::send_frame`] straight into the outbox (the lane's own path), without taking
    /// a reference to the bytes unless they are queued as they are (large frames).
    pub(crate) fn send_shared(&self, frame: &Bytes) -> SendOutcome {
        if self.is_closed() {
            return SendOutcome::NotConnected;
        }
        let outcome = self.inner.state.enqueue_frame(frame);
        self.outcome(outcome)
    }

    /// Encodes and queues one application message. It is encoded into a per-thread scratch
    /// buffer and copied into the peer's write buffer: no allocation per message. A message
    /// under 32 KiB sent while nothing is in flight to this peer (a request, or the reply to
    /// what the peer just sent) is written by the calling thread itself, with a write that
    /// never waits; what the socket does not take, the peer's writer sends.
    pub fn send<M: Serialize>(&self, msg: &M) -> Result<SendOutcome, rmp_serde::encode::Error> {
        self.send_many(std::iter::once(msg))
    }

    /// Encodes several messages and queues them together, in order, as consecutive frames.
    /// They count against the outbound budget as one unit, so keep a batch far below it (a few
    /// dozen KiB).
    pub fn send_many<'a, M: Serialize + 'a>(
        &self,
        msgs: impl IntoIterator<Item = &'a M>,
    ) -> Result<SendOutcome, rmp_serde::encode::Error> {
        if self.is_closed() {
            return Ok(SendOutcome::NotConnected);
        }
        if self.inner.link.is_busy() {
            let frames = encode_apps(msgs)?;
            if let Some(outcome) = self.too_large(&frames) {
                return Ok(outcome);
            }
            return Ok(self.send_behind_broadcasts(frames));
        }
        with_encoded_apps(msgs, |frames| match self.too_large(frames) {
            Some(outcome) => outcome,
            // Large frames go to the outbox as the scratch buffer itself, not copied.
            None if frames.len() >= LARGE_FRAME_BYTES => {
                let frames = scratch_into_bytes(frames);
                self.outcome(self.inner.state.enqueue_frame(&frames))
            }
            None => self.outcome(self.inner.state.enqueue_slice(frames)),
        })
    }

    /// `Some(TooLarge)` when `frames` (complete frames, back to back) can never be queued: one
    /// of them is over the frame cap, or all of them together are over the outbound budget.
    fn too_large(&self, frames: &[u8]) -> Option<SendOutcome> {
        let state = &self.inner.state;
        if frames.len() > state.budget {
            return Some(SendOutcome::TooLarge);
        }
        let mut rest = frames;
        while rest.len() >= LENGTH_PREFIX_BYTES {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len > state.max_frame_bytes {
                return Some(SendOutcome::TooLarge);
            }
            rest = rest.get(LENGTH_PREFIX_BYTES + len..).unwrap_or_default();
        }
        None
    }

    /// Maps what the outbox did to what the caller sees; over budget closes the session.
    fn outcome(&self, enqueued: Enqueued) -> SendOutcome {
        match enqueued {
            Enqueued::Queued => SendOutcome::Queued,
            Enqueued::Closed => SendOutcome::NotConnected,
            Enqueued::OverBudget => {
                if !self.inner.state.closed.swap(true, Ordering::AcqRel) {
                    self.inner.session.do_send(Close {
                        reason: DisconnectReason::SlowPeer,
                    });
                }
                SendOutcome::PeerSlow
            }
        }
    }

    /// Waits until at most `max_queued` bytes are queued for this peer, or the session has
    /// closed: backpressure for a sender that produces faster than the peer reads, without
    /// polling. The outbound budget still applies; wait here well below it.
    pub async fn drained_to(&self, max_queued: usize) {
        self.inner
            .state
            .queued
            .at_most(max_queued, || self.is_closed())
            .await;
    }

    /// Marks the peer useful now: it sent something the application values (a new block, a
    /// transaction it did not have, an answer to a request). When inbound slots are full and a
    /// newcomer asks for one, the most recently useful inbound peers are among those the
    /// eviction policy protects. One atomic store; call it as often as it happens.
    pub fn mark_useful(&self) {
        self.inner
            .last_useful
            .store(crate::clock::now_ms() + 1, Ordering::Relaxed);
    }

    /// When the application last marked the peer useful ([`crate::clock`] milliseconds), if
    /// ever.
    pub(crate) fn last_useful_ms(&self) -> Option<u64> {
        match self.inner.last_useful.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t - 1),
        }
    }

    /// Asks the session to close with `reason` (sent to the peer when the socket works).
    pub fn disconnect(&self, reason: DisconnectReason) {
        self.inner.session.do_send(Close { reason });
    }

    /// Frames queued by the session itself (pong, ping, disconnect): same budget, no close
    /// signalling through the mailbox since the caller is the session.
    pub(crate) fn send_control(&self, frame: Bytes) -> bool {
        self.inner.state.enqueue_frame(&frame) == Enqueued::Queued
    }

    /// A ping or pong: same budget, but written ahead of queued data (between whole frames),
    /// so that liveness does not wait behind megabytes of application data.
    pub(crate) fn send_liveness(&self, frame: &[u8]) -> bool {
        let state = &self.inner.state;
        state.enqueue(frame.len(), |outbox| {
            outbox.control.extend_from_slice(frame);
            state.control_pending.store(true, Ordering::Release);
        }) == Enqueued::Queued
    }

    /// Lets the next message sent while nothing is in flight be written by its sender
    /// ([`SendState::write_now`]): called when the peer has sent something, so that a
    /// request's reply goes out without waiting for the writer's thread.
    pub(crate) fn arm_write_now(&self) {
        self.inner.state.direct_armed.store(true, Ordering::Relaxed);
    }

    /// Marks the handle closed so that later sends report `NotConnected`.
    pub(crate) fn mark_closed(&self) {
        self.inner.state.closed.store(true, Ordering::Release);
        self.inner.state.queued.wake_all();
    }

    pub(crate) fn bytes_out(&self) -> u64 {
        self.inner.state.bytes_out.load(Ordering::Relaxed)
    }
}

/// What a writer task writes to: the socket's write half behind the record layer, or an
/// in-memory pipe for the test kit. Its own buffers count towards what an idle writer frees.
pub(crate) trait WriteSink: AsyncWrite + Unpin + Send {
    /// Bytes of scratch buffers the sink holds (encryption buffers).
    fn scratch_bytes(&self) -> usize {
        0
    }
    /// Frees those buffers.
    fn release_buffers(&mut self) {}
}

impl<T: AsyncWrite + Unpin + Send> WriteSink for crate::secure::SecureWrite<T> {
    fn scratch_bytes(&self) -> usize {
        crate::secure::SecureWrite::scratch_bytes(self)
    }
    fn release_buffers(&mut self) {
        crate::secure::SecureWrite::release_buffers(self)
    }
}

#[cfg(any(test, feature = "test-util"))]
impl WriteSink for tokio::io::DuplexStream {}

/// What a writer needs besides the socket.
pub(crate) struct WriterParts {
    pub ip: IpAddr,
    pub conn_id: ConnId,
    pub link: LaneLink,
    /// Outbound byte budget.
    pub budget: usize,
    /// Largest frame body the peer accepts.
    pub max_frame_bytes: usize,
    /// Told to close when a send goes over budget.
    pub session: Recipient<Close>,
    /// Told when a write fails.
    pub failed: Recipient<WriterFailed>,
    pub metrics: Arc<NetMetrics>,
    /// Held until the writer has finished.
    pub task: TaskTrackerToken,
}

/// Creates the handle and spawns the writer task on the current thread's runtime. Returns the
/// handle and the sender that tells the writer how to finish.
pub(crate) fn spawn_writer<W: WriteSink + 'static>(
    parts: WriterParts,
    write_half: W,
) -> (PeerHandle, oneshot::Sender<WriterClose>) {
    let (close_tx, close_rx) = oneshot::channel();
    let state = Arc::new(SendState {
        queued: Level::default(),
        bytes_out: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        budget: parts.budget,
        max_frame_bytes: parts.max_frame_bytes,
        outbox: Mutex::new(Outbox::default()),
        control_pending: AtomicBool::new(false),
        wake: Notify::new(),
        direct_armed: AtomicBool::new(false),
        metrics: parts.metrics.clone(),
        #[cfg(test)]
        own_writes: Default::default(),
    });
    let handle = PeerHandle {
        inner: Arc::new(HandleInner {
            ip: parts.ip,
            conn_id: parts.conn_id,
            link: parts.link,
            state: state.clone(),
            session: parts.session,
            last_useful: AtomicU64::new(0),
        }),
    };
    // The writer's future is built here and spawned as it is: wrapping the call in another
    // `async` block would keep a second copy of the socket half (and its cipher) in the task.
    actix_rt::spawn(run_writer(
        Box::new(write_half),
        close_rx,
        state,
        parts.failed,
        parts.metrics,
        parts.task,
    ));
    (handle, close_tx)
}

/// What the writer took from the outbox in one go.
#[derive(Default)]
struct Taken {
    /// Scratch bytes the sink held when it was last parked (what an idle writer may free).
    parked_scratch: usize,
    partial: Vec<u8>,
    sealed: Vec<Bytes>,
    open: Vec<u8>,
    control: Vec<u8>,
}

impl Taken {
    fn is_empty(&self) -> bool {
        self.partial.is_empty()
            && self.sealed.is_empty()
            && self.open.is_empty()
            && self.control.is_empty()
    }
}

/// The writer's socket half: in its hands while it writes, parked in the outbox while idle.
type Sink = Option<Box<dyn WriteSink>>;

/// Takes everything queued, swapping buffers so that the open buffer's allocation is reused,
/// and the sink if it is parked. With nothing queued, parks the sink, marks the writer idle (so
/// the next sender wakes it or writes itself) and returns false; also false while a sender has
/// the sink (it wakes the writer when it puts it back).
fn take(state: &SendState, taken: &mut Taken, wr: &mut Sink) -> bool {
    let mut outbox = state.outbox();
    if wr.is_none() {
        *wr = outbox.sink.take();
        if wr.is_none() {
            outbox.writer_idle = true;
            return false;
        }
    }
    if outbox.is_empty() {
        outbox.writer_idle = true;
        taken.parked_scratch = wr.as_ref().map_or(0, |s| s.scratch_bytes());
        outbox.sink = wr.take();
        state.direct_armed.store(true, Ordering::Relaxed);
        return false;
    }
    std::mem::swap(&mut taken.partial, &mut outbox.partial);
    std::mem::swap(&mut taken.sealed, &mut outbox.sealed);
    std::mem::swap(&mut taken.open, &mut outbox.open);
    std::mem::swap(&mut taken.control, &mut outbox.control);
    // A flush is part of every batch written.
    outbox.unflushed = false;
    state.control_pending.store(false, Ordering::Relaxed);
    true
}

/// Gets the sink back for closing: from the outbox, or from the sender that has it, which
/// wakes the writer when it puts it back because `closing` is set.
async fn reclaim(state: &SendState, wr: &mut Sink) {
    while wr.is_none() {
        {
            let mut outbox = state.outbox();
            outbox.closing = true;
            *wr = outbox.sink.take();
        }
        if wr.is_none() {
            state.wake.notified().await;
        }
    }
}

/// Takes the liveness frames queued since the last take.
fn take_control(state: &SendState, control: &mut Vec<u8>) {
    let mut outbox = state.outbox();
    std::mem::swap(control, &mut outbox.control);
    state.control_pending.store(false, Ordering::Relaxed);
}

/// Frees the write buffers of a writer that stayed idle (the sink's too, if it is parked).
fn release_buffers(state: &SendState, taken: &mut Taken) {
    taken.open = Vec::new();
    taken.parked_scratch = 0;
    taken.partial = Vec::new();
    let mut outbox = state.outbox();
    if outbox.open.is_empty() {
        outbox.open = Vec::new();
    }
    if outbox.partial.is_empty() {
        outbox.partial = Vec::new();
    }
    if let Some(sink) = outbox.sink.as_mut() {
        sink.release_buffers();
    }
}

/// Drains the outbox into the socket until told to close.
///
/// The task's future is part of every idle session's memory, so it holds only what an idle
/// writer needs (the socket half, the outbox, the idle wait): writing a batch and the final
/// flush are futures of their own, boxed for the time they run (one allocation per batch of
/// frames, next to a system call). Inline, they made the task 3.4 KB.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` keeps its
/// arguments and the locals they are moved into side by side in the future, twice the socket
/// half and its cipher (about 1.2 KB) for every session.
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn`: see above
fn run_writer(
    wr: Box<dyn WriteSink>,
    mut close: oneshot::Receiver<WriterClose>,
    state: Arc<SendState>,
    failed: Recipient<WriterFailed>,
    metrics: Arc<NetMetrics>,
    task: TaskTrackerToken,
) -> impl std::future::Future<Output = ()> {
    async move {
        metrics.writers_alive.inc();
        // Closes the outbox and drops a parked sink however the task ends (a stopped runtime
        // drops it without running the rest).
        let _closed = CloseOnDrop(&state);
        let mut wr: Sink = Some(wr);
        let mut taken = Taken::default();
        let how = loop {
            if !take(&state, &mut taken, &mut wr) {
                // Idle. Large buffers left by a burst are kept for the next burst (freeing and
                // regrowing them on every pause cost page faults), but not by a connection that
                // stays idle.
                let holding =
                    taken.open.capacity().max(taken.parked_scratch) > WRITE_BUFFER_KEEP_BYTES;
                tokio::select! {
                    biased;
                    how = &mut close => break how.unwrap_or(WriterClose::Abort),
                    () = state.wake.notified() => continue,
                    () = tokio::time::sleep(WRITE_BUFFER_RELEASE_AFTER), if holding => {
                        release_buffers(&state, &mut taken);
                        continue;
                    }
                }
            }
            let Some(sink) = wr.as_mut() else {
                continue;
            };
            let step = Box::pin(write_or_close(
                &mut **sink,
                &mut taken,
                &state,
                &metrics,
                &mut close,
            ))
            .await;
            match step {
                Step::Written(Ok(())) => {}
                Step::Written(Err(e)) => {
                    failed.do_send(WriterFailed {
                        error: e.to_string(),
                    });
                    break WriterClose::Abort;
                }
                Step::Closed(how) => break how,
            }
        };
        if let WriterClose::Flush(deadline) = how {
            let flush = async {
                reclaim(&state, &mut wr).await;
                while take(&state, &mut taken, &mut wr) {
                    if let Some(sink) = wr.as_mut() {
                        write_taken(&mut **sink, &mut taken, &state, &metrics).await?;
                    }
                }
                // `take` parked the sink: nobody takes it once `closing` is set.
                reclaim(&state, &mut wr).await;
                match wr.as_mut() {
                    Some(sink) => sink.shutdown().await,
                    None => Ok(()),
                }
            };
            let _ = Box::pin(tokio::time::timeout(deadline, flush)).await;
        }
        drop(_closed);
        metrics.writers_alive.dec();
        drop(task);
    }
}

/// Marks the outbox closed and frees what it holds, the parked sink included: later sends
/// report `NotConnected`, and a sender holding the sink drops it when it sees `closed`.
struct CloseOnDrop<'a>(&'a SendState);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let state = self.0;
        let mut outbox = state.outbox();
        outbox.closed = true;
        outbox.closing = true;
        outbox.partial = Vec::new();
        outbox.sealed = Vec::new();
        outbox.open = Vec::new();
        outbox.control = Vec::new();
        let sink = outbox.sink.take();
        drop(outbox);
        drop(sink);
        state.closed.store(true, Ordering::Release);
        state.queued.wake_all();
    }
}

/// How one batch ended.
enum Step {
    /// The batch was written (or the write failed).
    Written(std::io::Result<()>),
    /// The session closed meanwhile: finish this way.
    Closed(WriterClose),
}

/// Writes the batch taken, unless the session closes meanwhile.
async fn write_or_close<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    taken: &mut Taken,
    state: &SendState,
    metrics: &NetMetrics,
    close: &mut oneshot::Receiver<WriterClose>,
) -> Step {
    let write = write_taken(wr, taken, state, metrics);
    tokio::pin!(write);
    tokio::select! {
        biased;
        how = close => match how.unwrap_or(WriterClose::Abort) {
            // Never leave half a frame on the wire before more frames: finish the write in
            // progress within the deadline, or give up on the socket.
            WriterClose::Flush(deadline) => match tokio::time::timeout(deadline, &mut write).await {
                Ok(Ok(())) => Step::Closed(WriterClose::Flush(deadline)),
                _ => Step::Closed(WriterClose::Abort),
            },
            WriterClose::Abort => Step::Closed(WriterClose::Abort),
        },
        r = &mut write => Step::Written(r),
    }
}

/// Writes what was taken: the rest of a sender's own write, liveness frames, then the sealed
/// segments and the open buffer in order (the open buffer is kept, cleared, for the next swap).
/// Data goes out in rounds of whole frames of about [`WRITE_ROUND_BYTES`]; pings and pongs
/// queued meanwhile are written between rounds, never inside a frame.
async fn write_taken<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    taken: &mut Taken,
    state: &SendState,
    metrics: &NetMetrics,
) -> std::io::Result<()> {
    // The rest of a frame a sender began: nothing may come between its two parts.
    if !taken.partial.is_empty() {
        wr.write_all(&taken.partial).await?;
        account(state, metrics, taken.partial.len());
        taken.partial.clear();
    }
    write_control(wr, &mut taken.control, state, metrics).await?;
    for segment in std::mem::take(&mut taken.sealed) {
        write_rounds(wr, &segment, true, &mut taken.control, state, metrics).await?;
    }
    if !taken.open.is_empty() {
        let open = std::mem::take(&mut taken.open);
        let result = write_rounds(wr, &open, false, &mut taken.control, state, metrics).await;
        taken.open = open;
        taken.open.clear();
        result?;
    }
    debug_assert!(taken.is_empty());
    // The record layer may hold the last record of the batch.
    wr.flush().await
}

/// Bytes written between two looks at the liveness queue.
const WRITE_ROUND_BYTES: usize = 64 * 1024;

/// Writes `frames` (whole frames, back to back) in rounds of about [`WRITE_ROUND_BYTES`]; when
/// liveness frames were queued meanwhile, finishes the frame in progress and writes them
/// before going on.
///
/// With `whole_frames` every round ends on a frame boundary: for segments that may hold large
/// frames, where a round ending 10 bytes short of a 64 KiB frame's end made the receiver wake
/// twice per message (measured: 64 KiB messages 15-25 % slower). Without it (the open buffer,
/// whose frames are all smaller than [`LARGE_FRAME_BYTES`]) rounds are cut anywhere and
/// boundaries are looked for only when liveness frames wait (walking the length prefixes from
/// the last boundary found), so a busy connection of small messages reads no prefix.
async fn write_rounds<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    frames: &[u8],
    whole_frames: bool,
    control: &mut Vec<u8>,
    state: &SendState,
    metrics: &NetMetrics,
) -> std::io::Result<()> {
    let mut written = 0;
    // A frame boundary at or before `written`.
    let mut boundary = 0;
    while written < frames.len() {
        let mut end = (written + WRITE_ROUND_BYTES).min(frames.len());
        if whole_frames {
            boundary = frame_boundary(frames, boundary, end);
            end = boundary;
        }
        wr.write_all(&frames[written..end]).await?;
        account(state, metrics, end - written);
        written = end;
        if written < frames.len() && state.control_pending.load(Ordering::Acquire) {
            boundary = frame_boundary(frames, boundary, written);
            if boundary > written {
                wr.write_all(&frames[written..boundary]).await?;
                account(state, metrics, boundary - written);
                written = boundary;
            }
            take_control(state, control);
            write_control(wr, control, state, metrics).await?;
        }
    }
    Ok(())
}

/// The first frame boundary at or after `at`, walking whole frames from `from` (a boundary).
/// The frames were encoded by this crate, so their prefixes are trusted; a short tail (never
/// produced) ends at the end of the buffer.
fn frame_boundary(frames: &[u8], mut from: usize, at: usize) -> usize {
    while from < at {
        let Some(p) = frames.get(from..from + LENGTH_PREFIX_BYTES) else {
            return frames.len();
        };
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        from = (from + LENGTH_PREFIX_BYTES + len).min(frames.len());
    }
    from
}

/// Writes the liveness frames taken, if any, and clears the buffer (keeping its allocation).
async fn write_control<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    control: &mut Vec<u8>,
    state: &SendState,
    metrics: &NetMetrics,
) -> std::io::Result<()> {
    if !control.is_empty() {
        wr.write_all(control).await?;
        account(state, metrics, control.len());
        control.clear();
    }
    Ok(())
}

fn account(state: &SendState, metrics: &NetMetrics, len: usize) {
    state.queued.sub(len);
    state.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    metrics.bytes_out.inc_by(len as u64);
}

#[cfg(test)]
mod round_tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_be_bytes().to_vec();
        f.resize(LENGTH_PREFIX_BYTES + len, 7);
        f
    }

    /// A pong queued while the writer is busy with a long buffer of small frames goes out
    /// between two whole frames, before the rest of the buffer (not after it); the data frames
    /// all arrive, in order. The same with whole-frame rounds.
    #[actix_rt::test]
    async fn a_pong_queued_mid_buffer_goes_out_between_whole_frames_before_the_rest() {
        use tokio::io::AsyncReadExt;
        for whole_frames in [false, true] {
            let mut frames = Vec::new();
            for i in 0..400u32 {
                let mut f = frame(1_000 + (i as usize % 7) * 100);
                f[LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + 4].copy_from_slice(&i.to_be_bytes());
                frames.extend(f);
            }
            let pong = frame(9);
            let state = SendState {
                queued: Level::default(),
                bytes_out: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                budget: usize::MAX,
                max_frame_bytes: usize::MAX,
                outbox: Mutex::new(Outbox::default()),
                control_pending: AtomicBool::new(false),
                wake: Notify::new(),
                direct_armed: AtomicBool::new(false),
                metrics: Arc::new(NetMetrics::default()),
                own_writes: Default::default(),
            };
            state.queued.add(frames.len() + pong.len());
            let metrics = NetMetrics::default();
            // Room for one round: the writer waits in its second round until the reader reads.
            let (mut wr, mut rd) = tokio::io::duplex(WRITE_ROUND_BYTES + 100);
            let mut control = Vec::new();
            let writer = async {
                write_rounds(
                    &mut wr,
                    &frames,
                    whole_frames,
                    &mut control,
                    &state,
                    &metrics,
                )
                .await
                .unwrap();
                drop(wr);
            };
            let reader = async {
                let mut out = vec![0u8; WRITE_ROUND_BYTES];
                rd.read_exact(&mut out).await.unwrap();
                // The session queues a pong while the writer is in the middle of the buffer.
                state.outbox().control.extend_from_slice(&pong);
                state.control_pending.store(true, Ordering::Release);
                rd.read_to_end(&mut out).await.unwrap();
                out
            };
            let ((), out) = tokio::join!(writer, reader);
            assert_eq!(out.len(), frames.len() + pong.len());
            // Parse the output as whole frames: the pong is one of them, not inside another.
            let (mut at, mut data, mut pong_at) = (0, Vec::new(), None);
            while at < out.len() {
                let len = u32::from_be_bytes(out[at..at + 4].try_into().unwrap()) as usize;
                let body = &out[at + LENGTH_PREFIX_BYTES..at + LENGTH_PREFIX_BYTES + len];
                if len == 9 {
                    assert!(pong_at.is_none(), "one pong");
                    pong_at = Some(data.len());
                } else {
                    data.push(u32::from_be_bytes(body[..4].try_into().unwrap()));
                }
                at += LENGTH_PREFIX_BYTES + len;
            }
            assert_eq!(
                data,
                (0..400).collect::<Vec<u32>>(),
                "every frame, in order"
            );
            let pong_at = pong_at.expect("the pong was written");
            assert!(
                pong_at < 300,
                "the pong waited behind the buffer (after frame {pong_at}, whole frames {whole_frames})"
            );
            assert_eq!(state.bytes_out.load(Ordering::Relaxed), out.len() as u64);
        }
    }

    /// Liveness frames go in at frame boundaries only: the boundary found is the end of the
    /// frame in progress (or the position itself when a frame ends there), for frames smaller
    /// and larger than a round.
    #[test]
    fn liveness_frames_go_in_between_whole_frames() {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for len in [3_000, 10, 0, WRITE_ROUND_BYTES * 2, 3_000, 1] {
            buf.extend(frame(len));
            ends.push(buf.len());
        }
        let mut from = 0;
        for at in (0..=buf.len())
            .step_by(997)
            .chain([ends[0], ends[3], buf.len()])
        {
            let want = if at == 0 {
                0
            } else {
                *ends.iter().find(|&&e| e >= at).unwrap()
            };
            // From the start and from the last boundary found, as the writer does.
            assert_eq!(frame_boundary(&buf, 0, at), want, "at {at}");
            if from <= at {
                from = frame_boundary(&buf, from, at);
                assert_eq!(from, want, "at {at}, walking on");
            }
        }
        // A truncated tail (never produced) ends at the end of the buffer.
        let cut = &buf[..ends[3] - 5];
        assert_eq!(frame_boundary(cut, ends[2], ends[2] + 1), cut.len());
    }
}

#[cfg(test)]
mod write_now_tests {
    //! A sender writes a message itself when nothing is in flight: the bytes are on the wire
    //! before the writer task runs, what the socket does not take goes out first and whole,
    //! and a sender in a loop does it once per idle period.

    use std::task::{Context, Poll, Waker};

    use actix::Actor;
    use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

    use super::*;
    use crate::lanes::Lane;
    use crate::testkit::FakeSession;

    /// A handle whose writer writes into `sink`, and the metrics it counts into.
    fn writer_on<W: WriteSink + 'static>(
        sink: W,
    ) -> (PeerHandle, oneshot::Sender<WriterClose>, Arc<NetMetrics>) {
        let session = FakeSession {
            closed: Arc::new(std::sync::OnceLock::new()),
        }
        .start();
        let lane = Lane::spawn_here();
        let metrics = Arc::new(NetMetrics::default());
        let (handle, close) = spawn_writer(
            WriterParts {
                ip: "127.0.0.1".parse().unwrap(),
                conn_id: ConnId::next(),
                link: lane.link(0),
                budget: 1 << 20,
                max_frame_bytes: 1 << 20,
                session: session.clone().recipient(),
                failed: session.recipient(),
                metrics: metrics.clone(),
                task: tokio_util::task::TaskTracker::new().token(),
            },
            sink,
        );
        (handle, close, metrics)
    }

    /// A handle whose writer encrypts (after a real Noise handshake) into a pipe of `pipe`
    /// bytes, idle with its sink parked, and the decrypting read end.
    async fn noise_writer(
        pipe: usize,
    ) -> (
        PeerHandle,
        oneshot::Sender<WriterClose>,
        crate::secure::SecureRead<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    ) {
        use crate::secure::{handshake, NodeKey, SecureRead, SecureWrite};
        let (mut a, mut b) = tokio::io::duplex(pipe);
        let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
        let (ea, eb) = tokio::join!(handshake(&mut a, &ka, true), handshake(&mut b, &kb, false));
        let (ea, eb) = (ea.unwrap(), eb.unwrap());
        let (_, wa) = tokio::io::split(a);
        let (rb, _) = tokio::io::split(b);
        let (h, close, _) = writer_on(SecureWrite::new(wa, Some(ea.send)));
        until_idle(&h).await;
        (h, close, SecureRead::new(rb, Some(eb.recv)))
    }

    /// Lets the writer task run until it is idle with its sink parked (an event, bounded).
    async fn until_idle(handle: &PeerHandle) {
        for _ in 0..1_000 {
            {
                let outbox = handle.inner.state.outbox();
                if outbox.writer_idle && outbox.sink.is_some() && outbox.is_empty() {
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
        panic!("the writer never went idle");
    }

    /// Reads what the pipe holds right now, without yielding to the runtime (so without
    /// letting the writer task run).
    fn read_now(rd: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut space = vec![0; 1 << 16];
        let mut buf = ReadBuf::new(&mut space);
        match std::pin::Pin::new(rd).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => buf.filled().to_vec(),
            _ => Vec::new(),
        }
    }

    /// The frame `send` writes for `msg`.
    fn frame_of(msg: &Vec<u8>) -> Vec<u8> {
        crate::protocol::encode_apps(std::iter::once(msg))
            .unwrap()
            .to_vec()
    }

    #[actix_rt::test]
    async fn a_message_to_an_idle_connection_is_on_the_wire_before_the_writer_runs() {
        let (wr, mut rd) = tokio::io::duplex(1 << 16);
        let (h, _close, metrics) = writer_on(wr);
        until_idle(&h).await;
        let (a, b, c) = (vec![1u8; 10], vec![2u8; 20], vec![3u8; 30]);
        let (fa, fb, fc) = (frame_of(&a), frame_of(&b), frame_of(&c));

        // Written by the sender: in the pipe before this task yields, nothing left queued.
        assert_eq!(h.send(&a).unwrap(), SendOutcome::Queued);
        assert_eq!(read_now(&mut rd), fa);
        assert_eq!(h.queued_bytes(), 0);
        assert_eq!(h.bytes_out(), fa.len() as u64);
        assert_eq!(metrics.bytes_out.get(), fa.len() as u64);

        // The next message, with no word from the peer in between, is the writer's to write:
        // a sender in a loop does not make one system call per message.
        assert_eq!(h.send(&b).unwrap(), SendOutcome::Queued);
        assert!(read_now(&mut rd).is_empty());
        assert_eq!(h.queued_bytes(), fb.len());
        let mut got = vec![0; fb.len()];
        rd.read_exact(&mut got).await.unwrap();
        assert_eq!(got, fb);

        // The peer spoke (the session arms the handle on each read): the reply is written by
        // its sender again.
        until_idle(&h).await;
        assert_eq!(h.send(&a).unwrap(), SendOutcome::Queued);
        h.arm_write_now();
        assert_eq!(h.send(&c).unwrap(), SendOutcome::Queued);
        assert_eq!(read_now(&mut rd), [fa.clone(), fc.clone()].concat());
        assert_eq!(h.queued_bytes(), 0);
        assert_eq!(h.bytes_out(), (2 * fa.len() + fb.len() + fc.len()) as u64);
    }

    #[actix_rt::test]
    async fn what_the_socket_does_not_take_goes_out_first_and_whole_before_a_pong() {
        // The pipe takes 100 bytes at a time: the sender writes the start of the frame, the
        // writer the rest, then the pong, then a message queued after.
        let (wr, mut rd) = tokio::io::duplex(100);
        let (h, _close, _) = writer_on(wr);
        until_idle(&h).await;
        let (a, c) = (vec![4u8; 1_000], vec![5u8; 50]);
        let (fa, fc) = (frame_of(&a), frame_of(&c));
        let pong = crate::protocol::Frame::Pong { nonce: 7 }.encode();

        assert_eq!(h.send(&a).unwrap(), SendOutcome::Queued);
        let first = read_now(&mut rd);
        assert_eq!(first, fa[..100]);
        assert!(h.send_liveness(&pong));
        assert_eq!(h.send(&c).unwrap(), SendOutcome::Queued);

        let total = fa.len() + pong.len() + fc.len();
        let mut rest = vec![0; total - first.len()];
        rd.read_exact(&mut rest).await.unwrap();
        let wire = [first, rest].concat();
        assert_eq!(wire, [fa, pong.to_vec(), fc].concat());
        until_idle(&h).await;
        assert_eq!(h.queued_bytes(), 0);
        assert_eq!(h.bytes_out(), total as u64);
    }

    #[actix_rt::test]
    async fn an_encrypted_record_the_socket_did_not_take_is_sent_by_the_writer() {
        let (h, _close, mut rd) = noise_writer(300).await;
        let (m1, m2) = (vec![6u8; 2_000], vec![7u8; 3_000]);
        let (f1, f2) = (frame_of(&m1), frame_of(&m2));

        // The whole frame is sealed into a record by the sender (nothing left queued), but
        // the pipe takes only part of the record: the writer sends the rest.
        assert_eq!(h.send(&m1).unwrap(), SendOutcome::Queued);
        assert_eq!(h.queued_bytes(), 0);
        let own = &h.inner.state.own_writes;
        assert_eq!(
            own[1].load(Ordering::Relaxed),
            1,
            "the record was not sent whole"
        );
        assert_eq!(h.send(&m2).unwrap(), SendOutcome::Queued);
        let mut got = vec![0; f1.len() + f2.len()];
        rd.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [f1, f2].concat());
    }

    /// Four threads send numbered messages of varied sizes through one handle while a fifth
    /// queues pongs and the peer "speaks" often (re-arming the sender's own write), over a pipe
    /// of 700 bytes, so that senders' own writes, partial writes, the writer's rounds and
    /// liveness frames interleave: every frame arrives whole, each thread's messages in order,
    /// every pong whole between frames, and the bytes counted are the bytes sent.
    #[actix_rt::test]
    async fn concurrent_senders_own_writes_and_pongs_keep_every_frame_whole_and_in_order() {
        use crate::protocol::{decode_app, Frame};
        const THREADS: u8 = 4;
        const PER_THREAD: u16 = 400;
        const PONGS: u64 = 200;
        let (wr, mut rd) = tokio::io::duplex(700);
        let (h, _close, _) = writer_on(wr);
        until_idle(&h).await;
        let mut senders = Vec::new();
        for t in 0..THREADS {
            let h = h.clone();
            senders.push(std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    let mut msg = vec![t, (seq >> 8) as u8, seq as u8];
                    msg.resize(3 + (seq as usize * 37 + t as usize * 11) % 900, t);
                    assert_eq!(h.send(&msg).unwrap(), SendOutcome::Queued);
                    if seq % 3 == 0 {
                        h.arm_write_now();
                    }
                    if seq % 16 == 0 {
                        // Now and then, wait for the writer to catch up, so that senders
                        // find it idle and write themselves.
                        let deadline = std::time::Instant::now() + Duration::from_secs(10);
                        while h.queued_bytes() > 0 {
                            assert!(std::time::Instant::now() < deadline, "never drained");
                            std::thread::yield_now();
                        }
                    }
                }
            }));
        }
        let pinger = {
            let h = h.clone();
            std::thread::spawn(move || {
                for nonce in 0..PONGS {
                    assert!(h.send_liveness(&Frame::Pong { nonce }.encode()));
                    std::thread::yield_now();
                }
            })
        };
        let (mut next, mut pongs, mut wire_bytes) = ([0u16; THREADS as usize], 0u64, 0u64);
        let expected = THREADS as usize * PER_THREAD as usize;
        let mut got = 0;
        while got < expected || pongs < PONGS {
            let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
            rd.read_exact(&mut prefix).await.unwrap();
            let mut body = vec![0; u32::from_be_bytes(prefix) as usize];
            rd.read_exact(&mut body).await.unwrap();
            wire_bytes += (LENGTH_PREFIX_BYTES + body.len()) as u64;
            match Frame::decode(Bytes::from(body)).expect("a whole frame") {
                Frame::Pong { nonce } => {
                    assert_eq!(nonce, pongs, "pongs in order");
                    pongs += 1;
                }
                Frame::App(payload) => {
                    let msg: Vec<u8> = decode_app(&payload).unwrap();
                    let (t, seq) = (msg[0] as usize, u16::from_be_bytes([msg[1], msg[2]]));
                    assert_eq!(seq, next[t], "thread {t}'s messages in order");
                    assert!(msg[3..].iter().all(|&b| b == t as u8));
                    next[t] += 1;
                    got += 1;
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        pinger.join().unwrap();
        until_idle(&h).await;
        assert_eq!(h.queued_bytes(), 0);
        assert_eq!(h.bytes_out(), wire_bytes);
        let own = &h.inner.state.own_writes;
        let (own, partial) = (
            own[0].load(Ordering::Relaxed),
            own[1].load(Ordering::Relaxed),
        );
        eprintln!("senders' own writes: {own}, not taken whole: {partial}");
        assert!(
            own > 0 && partial > 0,
            "{own} own writes, {partial} partial"
        );
    }

    /// After a burst, an idle writer keeps its large buffers (the open buffer, the cipher's
    /// scratch space in the parked sink) for a while, then frees them; a sender's own write
    /// afterwards still works. Virtual time: the release interval passes without waiting.
    #[actix_rt::test]
    async fn an_idle_writer_frees_its_burst_buffers_and_its_parked_sinks() {
        let (h, _close, mut rd) = noise_writer(1 << 20).await;
        tokio::time::pause();
        // A burst of 200 KiB queued at once (the first message is the sender's own write).
        let msg = vec![9u8; 2_000];
        let frame = frame_of(&msg);
        for _ in 0..100 {
            assert_eq!(h.send(&msg).unwrap(), SendOutcome::Queued);
        }
        let mut got = vec![0; 100 * frame.len()];
        rd.read_exact(&mut got).await.unwrap();
        until_idle(&h).await;
        let scratch = |h: &PeerHandle| {
            let outbox = h.inner.state.outbox();
            let sink = outbox
                .sink
                .as_ref()
                .map_or(usize::MAX, |s| s.scratch_bytes());
            (outbox.open.capacity(), sink)
        };
        assert!(
            scratch(&h).1 > WRITE_BUFFER_KEEP_BYTES,
            "the cipher's scratch space is kept right after the burst: {:?}",
            scratch(&h)
        );
        tokio::time::sleep(WRITE_BUFFER_RELEASE_AFTER * 2).await;
        until_idle(&h).await;
        assert_eq!(scratch(&h), (0, 0), "freed after an idle interval");
        assert_eq!(h.send(&msg).unwrap(), SendOutcome::Queued);
        rd.read_exact(&mut got[..frame.len()]).await.unwrap();
        assert_eq!(got[..frame.len()], frame[..]);
    }

    #[actix_rt::test]
    async fn a_closed_writer_lets_go_of_the_socket_while_handles_live_on() {
        let (wr, mut rd) = tokio::io::duplex(1 << 16);
        let (h, close, _) = writer_on(wr);
        until_idle(&h).await;
        // The sink is parked in the outbox, which the handle keeps alive; closing the writer
        // must still drop it, so the peer sees the end of the stream.
        close.send(WriterClose::Abort).unwrap();
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await;
        assert_eq!(end.expect("the socket stays open").unwrap(), 0);
        assert!(h.is_closed());
        assert_eq!(h.send(&vec![1u8]).unwrap(), SendOutcome::NotConnected);
    }
}
