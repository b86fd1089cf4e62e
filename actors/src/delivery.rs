//! Inbound delivery: how application messages get from a session to the application's actor.
//!
//! There is one delivery mode. A session hands over each burst of messages read from one peer
//! (the frames of the reads it handled before giving way, at most 16 reads, or fewer when they
//! reach the inbound budget or 256 KiB of small messages) as one [`Inbound`]: one mailbox hop
//! per burst, not per message. The application walks the burst with [`Inbound::msgs`], writing
//! per-message code and paying per-burst costs. A burst's buffers go back to its session when
//! the application drops it, for a later burst. The session checks that each payload is one well-formed MessagePack value
//! and hands the payloads over still encoded; `msgs()` decodes them on the application's
//! thread, so each message is allocated and freed by the same thread.
//!
//! Every `Inbound` holds inbound credit ([`crate::credit`]) for its bytes until it is dropped,
//! which is how a slow application pushes back on the peer instead of growing a mailbox.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::constants::LARGE_FRAME_BYTES;
use crate::credit::{Credit, InboundCredit};
use crate::error::CodecError;
use crate::handle::PeerHandle;
use crate::protocol::{check_app_payload, decode_checked_app};
use crate::reason::DisconnectReason;

/// What an application message type must be: serde both ways, sendable across threads.
pub trait AppMessage: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> AppMessage for T {}

/// Application messages received from one peer in one burst, in arrival order, delivered to
/// the application's recipient as one actor message.
///
/// ```
/// # use actix::prelude::*;
/// # use peerlink_actors::Inbound;
/// struct Echo;
/// impl Actor for Echo { type Context = Context<Self>; }
/// impl Handler<Inbound<String>> for Echo {
///     type Result = ();
///     fn handle(&mut self, inbound: Inbound<String>, _: &mut Context<Self>) {
///         for msg in inbound.msgs() {
///             // Replies go out on the socket the message came in on.
///             let _ = inbound.from.send(&msg);
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Inbound<M> {
    /// The connection they came in on. Reply through it so that the reply goes out on the same
    /// socket (`from.send(&reply)`).
    pub from: PeerHandle,
    /// The encoded small payloads, back to back.
    payloads: Vec<u8>,
    /// Per message, in order: where it ends in `payloads`, or [`LARGE`] for the next of
    /// `large`.
    ends: Vec<usize>,
    /// Large payloads (at least [`LARGE_FRAME_BYTES`]), kept as the bytes they arrived in.
    large: Vec<Bytes>,
    /// Returned to the session's inbound budget when this burst is dropped.
    _credit: Credit,
    /// Where the burst's buffers go back for the session to reuse when it is dropped.
    spare: Option<Arc<SpareBurst>>,
    _msg: PhantomData<fn() -> M>,
}

impl<M> Drop for Inbound<M> {
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            spare.give(
                std::mem::take(&mut self.payloads),
                std::mem::take(&mut self.ends),
            );
        }
    }
}

impl<M: 'static> Message for Inbound<M> {
    type Result = ();
}

impl<M: DeserializeOwned> Inbound<M> {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none (never true for a delivered burst).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload bytes of the burst.
    pub fn bytes(&self) -> usize {
        self.payloads.len() + self.large.iter().map(Bytes::len).sum::<usize>()
    }

    /// Decodes the messages in arrival order. A payload that is not a valid `M` (well-formed
    /// MessagePack of another shape) ends the iteration and closes the connection with
    /// `bad_frame`, as the session does for malformed frames.
    pub fn msgs(&self) -> impl Iterator<Item = M> + '_ {
        let mut start = 0;
        let mut large = self.large.iter();
        let mut failed = false;
        self.ends.iter().map_while(move |&end| {
            if failed {
                return None;
            }
            let payload = if end == LARGE {
                large.next()?
            } else {
                let small = &self.payloads[start..end];
                start = end;
                small
            };
            // Checked by the session (`Inbox::push`) before it was delivered.
            match decode_checked_app::<M>(payload) {
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

/// The `ends` entry of a large payload.
const LARGE: usize = usize::MAX;

/// Copied payload bytes at which a burst of small messages is handed over without waiting for
/// the end of its reads ([`Inbox::is_full`]); also the most payload bytes an [`Inbox`]
/// preallocates for the next burst.
const BURST_BYTES_KEPT: usize = 256 * 1024;

/// Messages in a burst of [`BURST_BYTES_KEPT`] from which it counts as one of small messages
/// (1 KiB on average or less), handed over at that size.
const SMALL_BURST_MESSAGES: usize = BURST_BYTES_KEPT / 1024;

/// Largest payload buffer a session keeps as a spare ([`SpareBurst`]): a burst of 16 full reads
/// is about 1 MiB; larger ones (a burst of very large messages on the plaintext transport) are
/// freed.
const SPARE_BYTES_MAX: usize = 2 * 1024 * 1024;

/// A session's spare burst buffers. The application's thread gives a delivered burst's buffers
/// back when it drops the burst, and the session takes them for a later burst: a busy
/// connection allocates no new buffer per burst (no fresh pages to fault in, no reallocation
/// as the burst grows) and frees none on another thread than the one that allocated it. At
/// most [`SPARES`] buffers of at most [`SPARE_BYTES_MAX`] each are kept, and only while the
/// connection is busy: [`SpareBurst::idle`] (a ping interval without a burst) frees them and
/// refuses returns until the next burst.
#[derive(Debug, Default)]
pub(crate) struct SpareBurst {
    slot: Mutex<Spare>,
}

/// Spare buffers kept per session: one burst with the application and one being filled leave
/// one more to come back while the next is filled.
const SPARES: usize = 2;

#[derive(Debug, Default)]
struct Spare {
    /// A burst was delivered since the connection was last found idle.
    busy: bool,
    /// Payload and message-end buffers, empty, with their capacity.
    bufs: Vec<(Vec<u8>, Vec<usize>)>,
}

impl SpareBurst {
    fn slot(&self) -> std::sync::MutexGuard<'_, Spare> {
        // Nothing done under the lock can panic; a poisoned slot is still a valid one.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A spare pair of buffers (empty, perhaps with capacity), marking the connection busy.
    fn take(&self) -> (Vec<u8>, Vec<usize>) {
        let mut slot = self.slot();
        slot.busy = true;
        slot.bufs.pop().unwrap_or_default()
    }

    /// Keeps a delivered burst's buffers if the connection is busy and fewer than [`SPARES`]
    /// are kept; otherwise they are freed here.
    fn give(&self, mut payloads: Vec<u8>, mut ends: Vec<usize>) {
        if payloads.capacity() > SPARE_BYTES_MAX || payloads.capacity() == 0 {
            return;
        }
        payloads.clear();
        ends.clear();
        let mut slot = self.slot();
        if slot.busy && slot.bufs.len() < SPARES {
            if slot.bufs.capacity() < SPARES {
                slot.bufs.reserve_exact(SPARES);
            }
            slot.bufs.push((payloads, ends));
        }
    }

    /// The connection has been idle: free the spares and keep none until the next burst.
    pub(crate) fn idle(&self) {
        let mut slot = self.slot();
        slot.busy = false;
        let old = std::mem::take(&mut slot.bufs);
        drop(slot);
        drop(old);
    }

    /// Capacity of the spare payload buffers held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slot().bufs.iter().map(|b| b.0.capacity()).sum()
    }
}

/// Extra bytes of inbound credit a delivered message costs beyond its payload: its offset in
/// the burst and its share of the burst's envelope. A peer sending empty messages still uses
/// up the budget, so tiny messages cannot queue without bound.
pub(crate) const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// A session's receiver of application payloads: checks each payload as its frame arrives (so
/// the read buffer it came from is free again before the next read) and hands the payloads of
/// a burst to the application in one go.
pub(crate) struct Inbox {
    deliver: Arc<dyn Fn(PayloadBurst) + Send + Sync>,
    payloads: Vec<u8>,
    ends: Vec<usize>,
    large: Vec<Bytes>,
    /// Payload bytes of `large`.
    large_bytes: usize,
    /// Payloads of at least this size are kept as they came (`usize::MAX`: none).
    keep_from: usize,
    /// Buffers of delivered bursts, back for reuse.
    spare: Arc<SpareBurst>,
    /// A burst was handed over since the last [`Inbox::idle_check`].
    flushed: bool,
}

/// A burst on its way to the application, before it is typed.
pub(crate) struct PayloadBurst {
    pub(crate) from: PeerHandle,
    pub(crate) payloads: Vec<u8>,
    pub(crate) ends: Vec<usize>,
    pub(crate) large: Vec<Bytes>,
    pub(crate) credit: Credit,
    pub(crate) spare: Option<Arc<SpareBurst>>,
}

impl<M> From<PayloadBurst> for Inbound<M> {
    fn from(b: PayloadBurst) -> Self {
        Inbound {
            from: b.from,
            payloads: b.payloads,
            ends: b.ends,
            large: b.large,
            _credit: b.credit,
            spare: b.spare,
            _msg: PhantomData,
        }
    }
}

/// How a network's sessions hand bursts to the application: shared by all of its sessions.
#[derive(Clone)]
pub(crate) struct Delivery {
    deliver: Arc<dyn Fn(PayloadBurst) + Send + Sync>,
}

impl Delivery {
    /// Bursts become [`Inbound<M>`] sent to `app`.
    pub(crate) fn to<M: AppMessage>(app: Recipient<Inbound<M>>) -> Self {
        Self {
            deliver: Arc::new(move |burst| app.do_send(Inbound::<M>::from(burst))),
        }
    }

    /// A new session's inbox. With `keep_large`, payloads of at least [`LARGE_FRAME_BYTES`]
    /// are handed over as the bytes they arrived in instead of copied: measured on the
    /// encrypted transport, whose reader fills the frame buffer record by record (64 KiB
    /// messages 1.3x faster, BENCHMARKS.md); on the plaintext transport, whose frame buffer is
    /// filled straight from the socket, keeping it pinned made the reader allocate a fresh one
    /// per read (1.3x slower), so there the copy stays.
    pub(crate) fn inbox(&self, keep_large: bool) -> Inbox {
        Inbox {
            deliver: self.deliver.clone(),
            payloads: Vec::new(),
            ends: Vec::new(),
            large: Vec::new(),
            large_bytes: 0,
            keep_from: if keep_large {
                LARGE_FRAME_BYTES
            } else {
                usize::MAX
            },
            spare: Arc::default(),
            flushed: false,
        }
    }
}

impl Inbox {
    /// Checks one App payload and keeps it for the next [`Inbox::flush`]. An error (not one
    /// well-formed MessagePack value) closes the connection; the payloads before it are still
    /// delivered.
    /// A large payload (at least [`LARGE_FRAME_BYTES`], when the inbox keeps large ones) is
    /// kept as the shared bytes it came in (no copy of a 64 KiB message on the session's
    /// thread); small ones are copied into one buffer per burst, so that they do not pin the
    /// read buffer.
    pub(crate) fn push(
        &mut self,
        payload: &[u8],
        share: impl FnOnce() -> Bytes,
    ) -> Result<(), CodecError> {
        check_app_payload(payload)?;
        if payload.len() >= self.keep_from {
            self.large_bytes += payload.len();
            self.large.push(share());
            self.ends.push(LARGE);
        } else {
            self.payloads.extend_from_slice(payload);
            self.ends.push(self.payloads.len());
        }
        Ok(())
    }

    /// The inbound credit the kept payloads will hold once delivered.
    pub(crate) fn cost(&self) -> usize {
        cost_of(self.payloads.len() + self.large_bytes, self.ends.len())
    }

    /// Whether nothing is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Whether the burst should be handed over now: it holds at least [`BURST_BYTES_KEPT`] of
    /// copied payloads in many small messages (at least [`SMALL_BURST_MESSAGES`]), so that its
    /// buffer stays small and is reused whole (a burst of 16 full reads of small messages grew
    /// its buffer to 1 MiB, reallocating and faulting in fresh pages). Bursts of larger
    /// messages end with their reads: handing them over at 256 KiB, or whenever their buffer
    /// was full, made 64 KiB messages 5-15 % slower (more hand-overs to the application).
    pub(crate) fn is_full(&self) -> bool {
        self.payloads.len() >= BURST_BYTES_KEPT && self.ends.len() >= SMALL_BURST_MESSAGES
    }

    /// Hands the kept payloads to the application, in order, holding inbound credit for them.
    pub(crate) fn flush(&mut self, from: &PeerHandle, credit: &Arc<InboundCredit>) {
        if self.ends.is_empty() {
            return;
        }
        // The next burst is likely about as long as this one: room for it in one allocation,
        // usually the buffers of an earlier burst the application is done with.
        let (mut payloads, mut ends) = self.spare.take();
        payloads.reserve(self.payloads.len().min(BURST_BYTES_KEPT));
        ends.reserve(self.ends.len().min(BURST_BYTES_KEPT / 64));
        let cost = self.cost();
        let payloads = std::mem::replace(&mut self.payloads, payloads);
        let ends = std::mem::replace(&mut self.ends, ends);
        let large = std::mem::take(&mut self.large);
        self.large_bytes = 0;
        self.flushed = true;
        let credit = credit.take(cost);
        (self.deliver)(PayloadBurst {
            from: from.clone(),
            payloads,
            ends,
            large,
            credit,
            spare: Some(self.spare.clone()),
        });
    }

    /// Called once per ping interval: after an interval without a burst, the connection is
    /// idle and keeps no buffers for bursts (neither the spare nor its own empty ones).
    pub(crate) fn idle_check(&mut self) {
        if std::mem::take(&mut self.flushed) || !self.ends.is_empty() {
            return;
        }
        self.spare.idle();
        self.payloads = Vec::new();
        self.ends = Vec::new();
    }
}

/// Inbound credit of `n` messages of `bytes` payload bytes in all.
pub(crate) fn cost_of(bytes: usize, n: usize) -> usize {
    bytes + n * MESSAGE_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of an App frame carrying `n` bytes of `fill` as MessagePack bin.
    fn bin(n: usize, fill: u8) -> Bytes {
        let mut v = crate::protocol::encode_app(&serde_bytes::ByteBuf::from(vec![fill; n]))
            .unwrap()
            .to_vec();
        // After the length prefix and the App header.
        Bytes::from(v.split_off(4 + crate::protocol::APP_HEADER_BYTES))
    }

    /// A handle to a session that does nothing, for bursts to come from.
    fn test_handle() -> PeerHandle {
        let session = crate::testkit::FakeSession {
            closed: Arc::new(std::sync::OnceLock::new()),
        }
        .start();
        crate::testkit::fake_handle(
            "127.0.0.1".parse().unwrap(),
            1 << 20,
            1 << 20,
            session.clone().recipient(),
            session.recipient(),
        )
        .0
    }

    /// The buffers of bursts the application dropped carry the next bursts (the same
    /// allocations: a busy connection allocates none per burst); a connection idle for an
    /// interval keeps no buffer, and a burst dropped after that is not kept.
    #[actix_rt::test]
    async fn dropped_bursts_buffers_carry_the_next_bursts_until_the_connection_is_idle() {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        let delivery = Delivery {
            deliver: Arc::new(move |b| sink.lock().unwrap().push(b)),
        };
        let mut inbox = delivery.inbox(false);
        let credit = Arc::new(InboundCredit::new(1 << 20));
        let handle = test_handle();
        let nil = Bytes::from_static(&[0xc0]);
        let burst = |inbox: &mut Inbox, n: usize| {
            for _ in 0..n {
                inbox.push(&nil, || nil.clone()).unwrap();
            }
            inbox.flush(&handle, &credit);
            let b = got.lock().unwrap().pop().expect("a burst");
            Inbound::<()>::from(b)
        };
        let first = burst(&mut inbox, 1_000);
        assert_eq!(first.msgs().count(), 1_000);
        // Each burst is collected in a buffer of its own while the earlier ones are held.
        let second = burst(&mut inbox, 1_000);
        let third = burst(&mut inbox, 1_000);
        let bufs = [&first, &second, &third].map(|b| b.payloads.as_ptr());
        assert!(bufs[0] != bufs[1] && bufs[1] != bufs[2] && bufs[0] != bufs[2]);
        drop(first);
        drop(second);
        assert!(
            inbox.spare.held() >= 2_000,
            "the dropped bursts' buffers are kept"
        );
        // The fourth was already being collected in a new buffer; the fifth and sixth reuse.
        let fourth = burst(&mut inbox, 10);
        let fifth = burst(&mut inbox, 10);
        let sixth = burst(&mut inbox, 10);
        assert!(![bufs[0], bufs[1]].contains(&fourth.payloads.as_ptr()));
        assert_eq!(fifth.payloads.as_ptr(), bufs[1], "reused, not allocated");
        assert_eq!(sixth.payloads.as_ptr(), bufs[0], "reused, not allocated");
        assert_eq!(sixth.len(), 10);
        drop(third);
        assert!(inbox.spare.held() > 0);
        // One interval with bursts, one without: idle.
        inbox.idle_check();
        assert!(inbox.spare.held() > 0);
        inbox.idle_check();
        assert_eq!(inbox.spare.held(), 0);
        assert_eq!(inbox.payloads.capacity(), 0);
        drop((fourth, fifth, sixth));
        assert_eq!(
            inbox.spare.held(),
            0,
            "an idle connection keeps no returned buffer"
        );
        // The next burst makes it busy again.
        drop(burst(&mut inbox, 5));
        assert!(inbox.spare.held() > 0);
    }

    /// A burst of small messages is handed over at 256 KiB; one of larger messages (copied or
    /// kept as they came) is not, it ends with its reads (or at 256 messages).
    #[test]
    fn a_burst_of_small_messages_is_full_at_256_kib() {
        let delivery = Delivery {
            deliver: Arc::new(|_| {}),
        };
        let fill = |inbox: &mut Inbox, payload: &Bytes| {
            let mut pushed = 0;
            while !inbox.is_full() {
                inbox.push(payload, || payload.clone()).unwrap();
                pushed += payload.len();
                assert!(pushed < 8 * BURST_BYTES_KEPT, "never full");
            }
            pushed
        };
        let small = bin(100, 1);
        let mut inbox = delivery.inbox(true);
        let pushed = fill(&mut inbox, &small);
        assert!((BURST_BYTES_KEPT..BURST_BYTES_KEPT + small.len()).contains(&pushed));
        let larger = bin(2 * 1024, 1);
        let mut inbox = delivery.inbox(true);
        for _ in 1..SMALL_BURST_MESSAGES {
            inbox.push(&larger, || larger.clone()).unwrap();
        }
        assert!(inbox.payloads.len() > BURST_BYTES_KEPT && !inbox.is_full());
        // Large payloads kept as they came fill no buffer.
        let mut inbox = delivery.inbox(true);
        let large = bin(LARGE_FRAME_BYTES, 2);
        for _ in 0..(4 * BURST_BYTES_KEPT / LARGE_FRAME_BYTES) {
            inbox.push(&large, || large.clone()).unwrap();
        }
        assert!(!inbox.is_full());
        assert_eq!(inbox.large.len(), 4 * BURST_BYTES_KEPT / LARGE_FRAME_BYTES);
    }

    /// Tiny messages cost their overhead: a peer cannot queue many empty messages for free.
    #[test]
    fn inbound_cost_counts_a_per_message_overhead() {
        let delivery = Delivery {
            deliver: Arc::new(|_| {}),
        };
        let mut inbox = delivery.inbox(true);
        assert!(inbox.is_empty());
        for _ in 0..1_000 {
            inbox.push(&[0xc0], Bytes::new).unwrap(); // nil: one byte
        }
        assert_eq!(inbox.cost(), 1_000 * (1 + MESSAGE_OVERHEAD_BYTES));
        assert!(
            inbox.push(&[0x92, 0x01], Bytes::new).is_err(),
            "truncated array refused"
        );
        assert!(
            inbox.push(&[0x01, 0x02], Bytes::new).is_err(),
            "trailing bytes refused"
        );
        assert_eq!(inbox.cost(), 1_000 * (1 + MESSAGE_OVERHEAD_BYTES));
    }

    /// Large payloads are kept as the bytes they came in (the same allocation, not a copy),
    /// small ones are copied; the burst yields them in arrival order and counts them all.
    #[actix_rt::test]
    async fn large_payloads_are_delivered_in_order_without_a_copy() {
        let got = Arc::new(std::sync::Mutex::new(None));
        let sink = got.clone();
        let delivery = Delivery {
            deliver: Arc::new(move |b| *sink.lock().unwrap() = Some(b)),
        };
        let mut inbox = delivery.inbox(true);
        let msgs = [
            bin(3, 1),
            bin(LARGE_FRAME_BYTES, 2),
            bin(10, 3),
            bin(100_000, 4),
        ];
        for m in &msgs {
            inbox.push(m, || m.clone()).unwrap();
        }
        let total: usize = msgs.iter().map(Bytes::len).sum();
        assert_eq!(inbox.cost(), cost_of(total, 4));
        let credit = Arc::new(InboundCredit::new(1 << 20));
        let handle = test_handle();
        inbox.flush(&handle, &credit);
        let burst = got.lock().unwrap().take().expect("one burst");
        assert_eq!(burst.large.len(), 2);
        assert_eq!(
            burst.large[0].as_ptr(),
            msgs[1].as_ptr(),
            "kept, not copied"
        );
        let inbound: Inbound<serde_bytes::ByteBuf> = burst.into();
        assert_eq!(inbound.bytes(), total);
        let sizes: Vec<(usize, u8)> = inbound.msgs().map(|m| (m.len(), m[0])).collect();
        assert_eq!(
            sizes,
            [(3, 1), (LARGE_FRAME_BYTES, 2), (10, 3), (100_000, 4)]
        );
        assert!(inbox.is_empty() && inbox.cost() == 0);
    }
}
