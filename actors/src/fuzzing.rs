//! Entry points for the coverage-guided fuzz targets in `fuzz/` and their corpus replay test
//! (feature `fuzzing`, hidden from the docs): the decoders a peer's bytes reach, re-exported
//! through this one path so that the crate's modules can stay private, and
//! [`session_read_path`], the session's read path (codec, frame decoding, handshake phases,
//! App payload check) without the actor around it.
//!
//! Nothing here is API: it exists so that fuzzers reach exactly the code a peer reaches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use bytes::{Bytes, BytesMut};
pub use tokio_util::codec::Decoder;

pub use crate::constants::{MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION};
pub use crate::error::CodecError;
pub use crate::protocol::{
    decode_app, DisconnectReason, Frame, FrameBatchCodec, FrameCodec, Hello, HelloPolicy,
    LENGTH_PREFIX_BYTES,
};

/// The session's check of an App payload (exactly one MessagePack value, nothing after it).
pub fn check_app_payload(payload: &[u8]) -> Result<(), CodecError> {
    crate::protocol::check_app_payload(payload)
}

/// Length of the first MessagePack value in `buf` (`None`: truncated or reserved marker).
pub fn msgpack_value_len(buf: &[u8]) -> Option<usize> {
    crate::protocol::msgpack_value_len(buf)
}

/// What [`session_read_path`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadPathOutcome {
    /// The handshake completed (a Hello passed the policy and was not our own nonce).
    pub handshake_done: bool,
    /// Frames handled after the handshake.
    pub frames_after_handshake: usize,
    /// App payloads accepted.
    pub app_payloads: usize,
    /// Why the session would have closed, if it would.
    pub closed: Option<DisconnectReason>,
}

/// Feeds `bytes` to the session's read path as a peer would send them, `chunk` bytes per read,
/// with the session's decisions (the order of `PeerSession::on_frame`): before the handshake
/// the cap is [`MAX_HANDSHAKE_FRAME_BYTES`] and only a Hello (checked against `policy` and
/// `our_nonce`) is allowed; after it the cap is `max_frame_bytes` and Ping, Pong and App (its
/// payload checked) are; a second Hello, a bad frame or a Disconnect close. The registry step
/// is taken as accepted.
///
/// Panics (for the fuzzer) only if an invariant of the codec breaks: a yielded frame is longer
/// than the cap in force, or a decoded control frame does not survive encode and decode.
pub fn session_read_path(
    bytes: &[u8],
    chunk: usize,
    max_frame_bytes: usize,
    policy: &HelloPolicy,
    our_nonce: u64,
) -> ReadPathOutcome {
    let cap = Arc::new(AtomicUsize::new(MAX_HANDSHAKE_FRAME_BYTES));
    let batching = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut codec = FrameBatchCodec::new(cap.clone(), batching.clone());
    let mut buf = BytesMut::new();
    let mut out = ReadPathOutcome::default();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let cap_now = cap.load(Ordering::Relaxed);
            let batch = match codec.decode(&mut buf) {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    out.closed = Some(e.disconnect_reason());
                    return out;
                }
            };
            for body in batch.bodies() {
                assert!(
                    body.len() <= cap_now,
                    "codec yielded {} bytes under a cap of {cap_now}",
                    body.len()
                );
                // The session takes App payloads of an active connection straight from the
                // read buffer (`app_payload`) and gives every other body to `Frame::decode`:
                // what the fast path takes or refuses, the full decoder must take (the same
                // payload) or refuse too. (A body it leaves may still decode as an App frame:
                // MessagePack allows other spellings of one, e.g. the variant's index.)
                let fast = crate::protocol::app_payload(body);
                let decoded = Frame::decode(batch.share(body));
                match (&fast, &decoded) {
                    (Some(Ok(p)), Ok(Frame::App(q))) => assert_eq!(p, &&q[..]),
                    (Some(Err(_)), Err(_)) | (None, _) => {}
                    _ => panic!("app_payload {fast:?} disagrees with Frame::decode {decoded:?}"),
                }
                let frame = match decoded {
                    Ok(f) => f,
                    Err(e) => {
                        out.closed = Some(e.disconnect_reason());
                        return out;
                    }
                };
                check_round_trip(&frame);
                if out.handshake_done {
                    out.frames_after_handshake += 1;
                }
                let close = match (out.handshake_done, frame) {
                    (_, Frame::Disconnect { reason }) => Some(reason),
                    (false, Frame::Hello(hello)) => match policy.check(&hello) {
                        Err(reason) => Some(reason),
                        Ok(()) if hello.nonce == our_nonce => {
                            Some(DisconnectReason::SelfConnection)
                        }
                        Ok(()) => {
                            out.handshake_done = true;
                            cap.store(max_frame_bytes, Ordering::Relaxed);
                            batching.store(true, Ordering::Relaxed);
                            None
                        }
                    },
                    (false, _) => Some(DisconnectReason::ProtocolViolation),
                    (true, Frame::Hello(_)) => Some(DisconnectReason::BadHello),
                    (true, Frame::Ping { .. } | Frame::Pong { .. }) => None,
                    // Address gossip goes to the discovery actor, which bounds it by rate.
                    (true, Frame::GetAddrs {} | Frame::Addrs { .. }) => None,
                    (true, Frame::App(payload)) => match check_app_payload(&payload) {
                        Ok(()) => {
                            out.app_payloads += 1;
                            None
                        }
                        Err(e) => Some(e.disconnect_reason()),
                    },
                };
                if close.is_some() {
                    out.closed = close;
                    return out;
                }
            }
        }
    }
    out
}

/// Control frames decode back to themselves after encoding; App frames keep their payload.
fn check_round_trip(frame: &Frame) {
    let wire = frame.encode();
    let again = Frame::decode(wire.slice(LENGTH_PREFIX_BYTES..));
    assert_eq!(
        again.as_ref().ok(),
        Some(frame),
        "frame does not survive encode and decode: {again:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The secure channel (Noise XX handshake and AEAD records), driven in memory.

pub use crate::secure::{NodeKey, PublicKey, RecordCipher, SecureError, SecureRead, SecureWrite};

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Polls `f` to completion on this thread. The in-memory streams below are never pending for
/// long (a stalled read is ready on the next poll), so a future that is still pending after a
/// million polls is stuck: that panics, for the fuzzer, as a hang it can report.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("an in-memory future made no progress in a million polls");
}

/// A peer's side of a connection in memory: reads yield `input` at most `chunk` bytes at a time
/// (with `stall`, every other read is first pending, as a socket without data is), then end of
/// stream; writes are kept in `written`.
struct MemStream<'a> {
    input: &'a [u8],
    pos: usize,
    chunk: usize,
    stall: bool,
    stalled: bool,
    written: Vec<u8>,
}

impl<'a> MemStream<'a> {
    fn new(input: &'a [u8], chunk: usize, stall: bool) -> Self {
        Self {
            input,
            pos: 0,
            chunk: chunk.max(1),
            stall,
            stalled: false,
            written: Vec::new(),
        }
    }
}

impl AsyncRead for MemStream<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stall && !this.stalled && this.pos < this.input.len() {
            this.stalled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.stalled = false;
        let n = this
            .chunk
            .min(buf.remaining())
            .min(this.input.len() - this.pos);
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MemStream<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().written.extend_from_slice(b);
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What [`noise_handshake`] saw.
#[derive(Debug)]
pub struct NoiseOutcome {
    /// The handshake completed: the static key the peer proved it holds.
    pub remote: Option<PublicKey>,
    /// Why it failed, if it did.
    pub error: Option<SecureError>,
    /// Bytes this side sent (its handshake messages, length prefixes included).
    pub written: Vec<u8>,
    /// Bytes of the peer's input consumed.
    pub consumed: usize,
}

/// Runs the node's Noise XX handshake (`secure::handshake`, the code every connection runs) as
/// the initiator or the responder, with static key `key` and the ephemeral secret `ephemeral`
/// fixed, against a peer whose bytes are `peer_bytes`, read `chunk` bytes at a time.
pub fn noise_handshake(
    peer_bytes: &[u8],
    chunk: usize,
    key: &NodeKey,
    initiator: bool,
    ephemeral: &[u8; 32],
) -> NoiseOutcome {
    let mut stream = MemStream::new(peer_bytes, chunk, false);
    let result = block_on(crate::secure::handshake::run(
        &mut stream,
        key,
        initiator,
        Some(ephemeral),
    ));
    let (remote, error) = match result {
        Ok(e) => (Some(e.remote), None),
        Err(e) => (None, Some(e)),
    };
    NoiseOutcome {
        remote,
        error,
        written: stream.written,
        consumed: stream.pos,
    }
}

/// One direction of the record layer keyed with `key` (a Noise split key): `(sealer, opener)`,
/// both at nonce 0, rekeying after `rekey_after` records. Records sealed with the first open
/// with the second. Fresh for every input: no handshake (X25519 costs milliseconds per input in
/// an instrumented build) and no state carried from one input to the next.
pub fn record_cipher_pair(key: &[u8; 32], rekey_after: u64) -> (RecordCipher, RecordCipher) {
    let (mut a, mut b) = (*key, *key);
    (
        RecordCipher::new(&mut a, rekey_after),
        RecordCipher::new(&mut b, rekey_after),
    )
}

/// The sending side of the record layer in memory: [`SecureWrite`] over a byte sink.
pub struct RecordSender {
    writer: SecureWrite<Sink>,
    taken: usize,
}

#[derive(Default)]
struct Sink(Vec<u8>);

impl AsyncWrite for Sink {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().0.extend_from_slice(b);
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl RecordSender {
    /// A sender sealing with `cipher` (see [`record_cipher_pair`]).
    pub fn new(cipher: RecordCipher) -> Self {
        Self {
            writer: SecureWrite::new(Sink::default(), Some(cipher)),
            taken: 0,
        }
    }

    /// Writes `plain` and flushes: its records (one per 65,519 bytes, at least one). Returns
    /// the ciphertext they add to the stream.
    pub fn send(&mut self, plain: &[u8]) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncWriteExt;
        let writer = &mut self.writer;
        block_on(async {
            writer.write_all(plain).await?;
            writer.flush().await
        })?;
        // The sink only grows; what this call added is everything not yet taken.
        let sink = &self.writer.get_ref().0;
        let added = sink[self.taken..].to_vec();
        self.taken = sink.len();
        Ok(added)
    }
}

/// What [`read_records`] delivered.
#[derive(Debug)]
pub struct RecordsRead {
    /// Plaintext delivered, in order.
    pub plain: Vec<u8>,
    /// The error that ended the stream (`None`: a clean end of stream).
    pub error: Option<io::Error>,
    /// After the error, one more read failed too (a failed stream stays failed).
    pub stays_failed: bool,
}

/// Reads `wire` through [`SecureRead`] opening with `cipher`, the socket yielding `chunk` bytes per read (pending before every other read with
/// `stall`), the caller reading into a buffer of `read_size` bytes, until the end or an error.
pub fn read_records(
    wire: &[u8],
    cipher: RecordCipher,
    chunk: usize,
    stall: bool,
    read_size: usize,
) -> RecordsRead {
    use tokio::io::AsyncReadExt;
    let mut reader = SecureRead::new(MemStream::new(wire, chunk, stall), Some(cipher));
    let mut buf = vec![0u8; read_size.max(1)];
    let mut out = RecordsRead {
        plain: Vec::new(),
        error: None,
        stays_failed: false,
    };
    loop {
        match block_on(reader.read(&mut buf)) {
            Ok(0) => return out,
            Ok(n) => out.plain.extend_from_slice(&buf[..n]),
            Err(e) => {
                out.error = Some(e);
                out.stays_failed = block_on(reader.read(&mut buf)).is_err();
                return out;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Address gossip: what the discovery actor does with a `GetAddrs` or `Addrs` frame.

pub use crate::discovery::{
    is_routable, netgroup, AddResult, AddrBook, AddrBookConfig, AddrBookSnapshot, AddrGossip,
    GossipConfig, KnownAddr, Reachability, StoredAddr,
};
pub use crate::protocol::{WireAddr, MAX_ADDRS_PER_FRAME};
pub use crate::ConnId;

/// What [`apply_gossip_frame`] did with one frame.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GossipOutcome {
    /// The `Addrs` answer to a `GetAddrs` (`None`: not answered, within the interval).
    pub answer: Option<Vec<KnownAddr>>,
    /// Entries of an `Addrs` processed (the token bucket let them through).
    pub processed: usize,
    /// Entries of an `Addrs` dropped (over the frame cap or the bucket).
    pub dropped: usize,
    /// Entries new to the book.
    pub added: Vec<KnownAddr>,
    /// Connections the news is relayed to.
    pub relay_to: Vec<ConnId>,
}

/// A gossip frame as the discovery actor receives it.
#[derive(Debug, Clone)]
pub struct GossipInput {
    /// The connection it came on.
    pub conn: ConnId,
    /// The peer's IP.
    pub from: std::net::IpAddr,
    /// The frame (`GetAddrs` or `Addrs`; others are ignored).
    pub frame: Frame,
    /// Now, in milliseconds.
    pub now_ms: u64,
}

/// The discovery actor's handling of a gossip frame (the body of `Handler<GossipFrame> for
/// Discovery`, in `discovery/actor.rs`, which this mirrors; keep the two in step): a
/// `GetAddrs` is answered by the gossip rules from the book; an `Addrs` passes the frame cap
/// and the connection's token bucket, and each entry with a 4- or 16-byte IP that is not our
/// `listen` address goes to the book; small fresh news is relayed. Other frames do nothing. An
/// unknown connection is taken as connected first (the actor does that for a frame that
/// overtook the registry's event). Seed bookkeeping is left out (it closes a connection, it
/// does not touch the book).
pub fn apply_gossip_frame<R: rand::Rng>(
    book: &mut AddrBook,
    gossip: &mut AddrGossip,
    listen: std::net::SocketAddr,
    input: GossipInput,
    rng: &mut R,
) -> GossipOutcome {
    let GossipInput {
        conn,
        from,
        frame,
        now_ms,
    } = input;
    if !gossip.knows(conn) {
        // A frame that overtook the registry's event about its connection.
        gossip.on_connect(conn, now_ms);
    }
    let mut out = GossipOutcome::default();
    match frame {
        Frame::GetAddrs {} => {
            out.answer = gossip.on_get_addrs(conn, from, now_ms, book, rng);
        }
        Frame::Addrs { addrs } => {
            let count = addrs.len().min(MAX_ADDRS_PER_FRAME);
            let n = gossip.on_addrs(conn, count, now_ms);
            out.processed = n;
            out.dropped = addrs.len() - n;
            for w in addrs.iter().take(n) {
                let Some(addr) = w.socket_addr() else {
                    continue;
                };
                if addr == listen {
                    continue;
                }
                if book.add(addr, from, w.last_seen, now_ms) == AddResult::Added {
                    out.added.push(KnownAddr {
                        addr,
                        last_seen: w.last_seen,
                    });
                }
            }
            if n <= gossip.config().relay_max_items {
                out.relay_to = gossip.relay_targets(conn, &out.added, now_ms, rng);
            }
        }
        _ => {}
    }
    out
}
