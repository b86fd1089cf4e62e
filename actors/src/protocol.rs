//! The wire: frames, their MessagePack encoding and the length-prefixed codec. Wire types are
//! serde only; the session translates them into actor messages. The layout is frozen in
//! `PROTOCOL.md` with hex vectors that the tests below check byte for byte.
//!
//! A frame on the wire is a 4-byte big-endian body length followed by the body, one MessagePack
//! value: the [`Frame`] enum as rmp-serde encodes it (a one-entry map from the variant name to its
//! fields, structs as arrays). Application payloads are MessagePack `bin`; peerlink always emits
//! `bin 32` for them so that it can encode a message straight into the frame buffer.

use std::cell::RefCell;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

use crate::constants::{
    ENCODE_SCRATCH_MAX_BYTES, LARGE_FRAME_BYTES, MAX_DECODE_DEPTH, MAX_USER_AGENT_BYTES,
    PROTOCOL_VERSION, READ_BUFFER_INITIAL_BYTES, READ_BUFFER_MAX_BYTES,
};
use crate::error::CodecError;
pub use crate::reason::DisconnectReason;

/// Length of the frame length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The first message on every connection, sent by both sides without waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Network magic; another value means another network.
    #[serde(with = "serde_bytes")]
    pub magic: [u8; 4],
    /// Protocol version; see [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Hash of the genesis block (zero for chain-agnostic applications).
    #[serde(with = "serde_bytes")]
    pub genesis: [u8; 32],
    /// Random nonce drawn once per process start: identifies the node instance, detects
    /// self-connections and restarts, and breaks simultaneous-open ties.
    pub nonce: u64,
    /// Port the sender listens on (0: not listening); with the connection's IP it gives the
    /// address to redial.
    pub listen_port: u16,
    /// Best height of the sender's application state, for sync decisions.
    pub best_height: u64,
    /// Free-form software name, at most 256 bytes.
    pub user_agent: String,
}

/// One frame body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Handshake; the first frame each side sends.
    Hello(Hello),
    /// Liveness probe; must be answered with a Pong echoing the nonce.
    Ping {
        /// Random value to echo.
        nonce: u64,
    },
    /// Answer to a Ping.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// The sender is closing the connection, and why.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
    },
    /// An application message: the MessagePack encoding of the application's own type, as `bin`.
    App(Bytes),
    /// Asks the peer for addresses of other nodes (answered at most once per interval).
    GetAddrs {},
    /// Addresses of nodes, as an answer to `GetAddrs` or unsolicited (a node advertising its own
    /// listen address). At most [`MAX_ADDRS_PER_FRAME`] entries.
    Addrs {
        /// The addresses.
        addrs: Vec<WireAddr>,
    },
}

/// Most entries in one `Addrs` frame; a receiver processes at most this many.
pub const MAX_ADDRS_PER_FRAME: usize = 1_000;

/// One address in an `Addrs` frame: `[ip, port, last_seen]`, the IP as `bin` of 4 (IPv4) or 16
/// (IPv6) bytes, `last_seen` in unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAddr {
    /// 4 or 16 bytes.
    #[serde(with = "serde_bytes")]
    pub ip: Vec<u8>,
    /// TCP port.
    pub port: u16,
    /// Unix seconds when the node was last known to be alive.
    pub last_seen: u64,
}

impl WireAddr {
    /// The wire form of an address (IPv4-mapped IPv6 is sent as IPv4).
    pub fn new(addr: std::net::SocketAddr, last_seen: u64) -> Self {
        let ip = match crate::canonical_ip(addr.ip()) {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        Self {
            ip,
            port: addr.port(),
            last_seen,
        }
    }

    /// The socket address, or `None` when the IP is neither 4 nor 16 bytes.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let ip = match self.ip.len() {
            4 => std::net::IpAddr::from(<[u8; 4]>::try_from(self.ip.as_slice()).ok()?),
            16 => std::net::IpAddr::from(<[u8; 16]>::try_from(self.ip.as_slice()).ok()?),
            _ => return None,
        };
        Some(std::net::SocketAddr::new(
            crate::canonical_ip(ip),
            self.port,
        ))
    }
}

/// The fixed bytes that start every App frame body: a one-entry map, the key "App".
const APP_PREFIX: [u8; 5] = [0x81, 0xa3, b'A', b'p', b'p'];
/// `bin 32` marker.
const BIN32: u8 = 0xc6;
/// Header size of an App body as peerlink writes it: prefix plus `bin 32` marker and length.
pub(crate) const APP_HEADER_BYTES: usize = APP_PREFIX.len() + 5;
/// The value given to rmp-serde's `set_max_depth` so that exactly [`MAX_DECODE_DEPTH`] nested
/// arrays/maps are accepted: rmp-serde fails when its counter reaches zero, i.e. it allows one
/// level less than the number it is given.
const RMP_MAX_DEPTH: usize = MAX_DECODE_DEPTH + 1;

impl Frame {
    /// Encodes the frame with its length prefix, ready for the socket.
    pub fn encode(&self) -> Bytes {
        match self {
            Frame::App(payload) => {
                let mut buf =
                    BytesMut::with_capacity(LENGTH_PREFIX_BYTES + APP_HEADER_BYTES + payload.len());
                start_app(&mut buf);
                buf.extend_from_slice(payload);
                finish_app(buf)
            }
            other => {
                let mut buf = BytesMut::with_capacity(64);
                buf.put_u32(0);
                // Encoding our own control types into memory cannot fail.
                rmp_serde::encode::write(&mut (&mut buf).writer(), other)
                    .expect("control frames always encode");
                let body_len = (buf.len() - LENGTH_PREFIX_BYTES) as u32;
                buf[..LENGTH_PREFIX_BYTES].copy_from_slice(&body_len.to_be_bytes());
                buf.freeze()
            }
        }
    }

    /// Decodes a frame body (without its length prefix). App payloads are sliced, not copied.
    pub fn decode(body: Bytes) -> Result<Frame, CodecError> {
        if body.is_empty() {
            return Err(CodecError::Empty);
        }
        if let Some(payload) = app_payload(&body) {
            return payload.map(|p| Frame::App(body.slice_ref(p)));
        }
        // Other spellings of the header (PROTOCOL.md 3.1): the kind must still be a string,
        // and an App payload still a bin.
        let (kind, rest) = frame_kind(&body)?;
        if kind == b"App" {
            let (&marker, rest) = rest
                .split_first()
                .ok_or_else(|| CodecError::Malformed("app frame: no payload".into()))?;
            return bin_payload(marker, rest).map(|p| Frame::App(body.slice_ref(p)));
        }
        let mut cursor = Cursor::new(&body[..]);
        let mut de = rmp_serde::Deserializer::new(&mut cursor);
        de.set_max_depth(RMP_MAX_DEPTH);
        let frame =
            Frame::deserialize(&mut de).map_err(|e| CodecError::Malformed(e.to_string()))?;
        if cursor.position() as usize != body.len() {
            return Err(CodecError::Malformed(
                "trailing bytes after the frame".into(),
            ));
        }
        Ok(frame)
    }

    /// Short name of the frame kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Ping { .. } => "ping",
            Frame::Pong { .. } => "pong",
            Frame::Disconnect { .. } => "disconnect",
            Frame::App(_) => "app",
            Frame::GetAddrs {} => "get_addrs",
            Frame::Addrs { .. } => "addrs",
        }
    }
}

/// The payload of an App frame body, without copying; `None` if the body is not an App frame.
/// The App frame's header is checked as [`Frame::decode`] does (the payload itself is not).
pub(crate) fn app_payload(body: &[u8]) -> Option<Result<&[u8], CodecError>> {
    // Exactly the prefix peerlink writes; other spellings go through `Frame::decode`.
    let (&marker, rest) = body.strip_prefix(&APP_PREFIX[..])?.split_first()?;
    Some(bin_payload(marker, rest))
}

/// The bytes of a `bin` (`marker` and what follows it) that must fill the rest of the frame.
fn bin_payload(marker: u8, rest: &[u8]) -> Result<&[u8], CodecError> {
    let malformed = |what: &str| Err(CodecError::Malformed(format!("app frame: {what}")));
    let header = match marker {
        0xc4 => 1,
        0xc5 => 2,
        BIN32 => 4,
        _ => return malformed("payload is not bin"),
    };
    let Some((len, payload)) = be_len(rest, header) else {
        return malformed("truncated bin header");
    };
    if len != payload.len() {
        return malformed("bin length does not match the frame");
    }
    Ok(payload)
}

/// The kind of a frame body (the key of its one-entry map, a MessagePack `str` in any of its
/// length forms) and the bytes after it. A frame kind given as an integer (a variant index)
/// or any other type is refused: PROTOCOL.md 3.1 names kinds by string only.
fn frame_kind(body: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let malformed = |what: &str| CodecError::Malformed(format!("frame: {what}"));
    let (n, rest) = match body.split_first() {
        Some((&b, rest)) if b & 0xf0 == 0x80 => Some((usize::from(b & 0x0f), rest)),
        Some((0xde, rest)) => be_len(rest, 2),
        Some((0xdf, rest)) => be_len(rest, 4),
        _ => return Err(malformed("not a map")),
    }
    .ok_or_else(|| malformed("truncated map header"))?;
    if n != 1 {
        return Err(malformed("not a map of one entry"));
    }
    let (len, rest) = match rest.split_first() {
        Some((&b, rest)) if b & 0xe0 == 0xa0 => Some((usize::from(b & 0x1f), rest)),
        Some((0xd9, rest)) => be_len(rest, 1),
        Some((0xda, rest)) => be_len(rest, 2),
        Some((0xdb, rest)) => be_len(rest, 4),
        _ => return Err(malformed("the kind is not a string")),
    }
    .ok_or_else(|| malformed("truncated kind"))?;
    if rest.len() < len {
        return Err(malformed("truncated kind"));
    }
    Ok(rest.split_at(len))
}

/// A big-endian length of `width` bytes at the start of `bytes`, and what follows it.
fn be_len(bytes: &[u8], width: usize) -> Option<(usize, &[u8])> {
    if bytes.len() < width {
        return None;
    }
    let (len, rest) = bytes.split_at(width);
    Some((
        len.iter().fold(0usize, |n, &b| n << 8 | usize::from(b)),
        rest,
    ))
}

/// Writes the length placeholder and App header into `buf`; the payload follows.
fn start_app(buf: &mut BytesMut) {
    buf.put_u32(0);
    buf.extend_from_slice(&APP_PREFIX);
    buf.put_u8(BIN32);
    buf.put_u32(0);
}

/// Patches the lengths written by [`start_app`] and freezes the frame.
fn finish_app(mut buf: BytesMut) -> Bytes {
    let body_len = (buf.len() - LENGTH_PREFIX_BYTES) as u32;
    let payload_len = body_len - APP_HEADER_BYTES as u32;
    buf[..4].copy_from_slice(&body_len.to_be_bytes());
    let at = LENGTH_PREFIX_BYTES + APP_PREFIX.len() + 1;
    buf[at..at + 4].copy_from_slice(&payload_len.to_be_bytes());
    buf.freeze()
}

/// Encodes an application message straight into a complete App frame (one allocation). The
/// result is shared as is between all peers of a broadcast.
///
/// The message is serialized into a per-thread scratch buffer and copied once into a frame of
/// exactly its size: growing a small buffer by doubling cost several reallocations per message
/// (a 64 KiB message went through ten, the last one past the allocator's mmap threshold).
pub fn encode_app<M: Serialize>(msg: &M) -> Result<Bytes, rmp_serde::encode::Error> {
    encode_apps(std::iter::once(msg))
}

/// Encodes several application messages as consecutive App frames in one buffer (one
/// allocation for all of them). Queued with one [`crate::PeerHandle::send_frame`], they cost one
/// hand-over to the writer instead of one each; the peer receives ordinary frames.
pub fn encode_apps<'a, M: Serialize + 'a>(
    msgs: impl IntoIterator<Item = &'a M>,
) -> Result<Bytes, rmp_serde::encode::Error> {
    with_encoded_apps(msgs, scratch_into_bytes)
}

/// The encoded frames in `scratch` as shared bytes: large ones (at least
/// [`LARGE_FRAME_BYTES`], which the outbox keeps as they are) take the scratch buffer itself,
/// so a 64 KiB message is not copied again on its way to the writer; small ones are copied
/// and the scratch stays for the next message.
pub(crate) fn scratch_into_bytes(scratch: &mut Vec<u8>) -> Bytes {
    if scratch.len() >= LARGE_FRAME_BYTES {
        // The next message is likely as large: room for it at once, not regrown by doubling.
        let next = Vec::with_capacity(scratch.len());
        Bytes::from(std::mem::replace(scratch, next))
    } else {
        Bytes::copy_from_slice(scratch)
    }
}

/// Encodes the messages as consecutive App frames into this thread's scratch buffer and passes
/// them to `f` (which copies them where they go, or takes the buffer, see
/// [`scratch_into_bytes`]): no allocation once the scratch has grown.
pub(crate) fn with_encoded_apps<'a, M: Serialize + 'a, R>(
    msgs: impl IntoIterator<Item = &'a M>,
    f: impl FnOnce(&mut Vec<u8>) -> R,
) -> Result<R, rmp_serde::encode::Error> {
    ENCODE_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let result = append_apps(&mut scratch, msgs).map(|_| f(&mut scratch));
            if scratch.capacity() > ENCODE_SCRATCH_MAX_BYTES {
                *scratch = Vec::new();
            }
            result
        }
        // Only if a Serialize impl itself encodes a message: use a fresh buffer.
        Err(_) => {
            let mut fresh = Vec::new();
            append_apps(&mut fresh, msgs).map(|_| f(&mut fresh))
        }
    })
}

thread_local! {
    /// Scratch buffer of [`encode_app`], reused by every message encoded on this thread.
    static ENCODE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Appends one App frame per message to `buf` and returns the number of bytes appended. On an
/// encoding error `buf` is left as it was.
pub(crate) fn append_apps<'a, M: Serialize + 'a>(
    buf: &mut Vec<u8>,
    msgs: impl IntoIterator<Item = &'a M>,
) -> Result<usize, rmp_serde::encode::Error> {
    let begin = buf.len();
    for msg in msgs {
        let start = buf.len();
        buf.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
        buf.extend_from_slice(&APP_PREFIX);
        buf.push(BIN32);
        buf.extend_from_slice(&[0; 4]);
        if let Err(e) = rmp_serde::encode::write(buf, msg) {
            buf.truncate(begin);
            return Err(e);
        }
        let body_len = (buf.len() - start - LENGTH_PREFIX_BYTES) as u32;
        let payload_len = body_len - APP_HEADER_BYTES as u32;
        buf[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&body_len.to_be_bytes());
        let at = start + LENGTH_PREFIX_BYTES + APP_PREFIX.len() + 1;
        buf[at..at + 4].copy_from_slice(&payload_len.to_be_bytes());
    }
    Ok(buf.len() - begin)
}

/// Decodes an application message from an App payload, with the nesting depth capped and
/// trailing bytes refused. Collection lengths are bounded by the frame cap: serde never
/// preallocates more than the data present can fill.
pub fn decode_app<M: DeserializeOwned>(payload: &[u8]) -> Result<M, CodecError> {
    check_app_payload(payload)?;
    decode_checked_app(payload)
}

/// [`decode_app`] for a payload already known to be exactly one well-formed MessagePack value
/// (the session checked it with [`check_app_payload`] before delivering it): the walk over the
/// bytes is not repeated.
pub(crate) fn decode_checked_app<M: DeserializeOwned>(payload: &[u8]) -> Result<M, CodecError> {
    // The borrowing reader reads `bin` and `str` data in place; the `Read` based one copied
    // them through a fresh, repeatedly grown buffer for every message.
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    de.set_max_depth(RMP_MAX_DEPTH);
    M::deserialize(&mut de).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Checks that an App payload is exactly one well-formed MessagePack value (no truncation, no
/// trailing bytes), without decoding it.
pub(crate) fn check_app_payload(payload: &[u8]) -> Result<(), CodecError> {
    match msgpack_value_len(payload) {
        Some(n) if n == payload.len() => Ok(()),
        Some(_) => Err(CodecError::Malformed(
            "trailing bytes after the message".into(),
        )),
        None => Err(CodecError::Malformed("truncated message".into())),
    }
}

/// Length in bytes of the first MessagePack value in `buf`; `None` if it is truncated or uses
/// the reserved marker 0xc1. Iterative, counting the items still to read, so nesting costs no
/// stack; every item consumes at least one byte, so it ends within `buf.len()` steps.
pub(crate) fn msgpack_value_len(buf: &[u8]) -> Option<usize> {
    let be = |at: usize, n: usize| -> Option<u64> {
        let bytes = buf.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    };
    let mut pos = 0usize;
    let mut pending: u64 = 1;
    while pending > 0 {
        let marker = *buf.get(pos)?;
        pos += 1;
        pending -= 1;
        // (bytes to skip after the marker, nested items that follow)
        let (skip, items): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => return None,
            // bin8/16/32 and str8/16/32: length, then data
            0xc4 | 0xd9 => (1 + be(pos, 1)?, 0),
            0xc5 | 0xda => (2 + be(pos, 2)?, 0),
            0xc6 | 0xdb => (4 + be(pos, 4)?, 0),
            // ext8/16/32: length, type byte, data
            0xc7 => (1 + 1 + be(pos, 1)?, 0),
            0xc8 => (2 + 1 + be(pos, 2)?, 0),
            0xc9 => (4 + 1 + be(pos, 4)?, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            // fixext 1/2/4/8/16: type byte, data
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, be(pos, 2)?),
            0xdd => (4, be(pos, 4)?),
            0xde => (2, 2 * be(pos, 2)?),
            0xdf => (4, 2 * be(pos, 4)?),
        };
        pos = pos.checked_add(usize::try_from(skip).ok()?)?;
        if pos > buf.len() {
            return None;
        }
        pending = pending.checked_add(items)?;
    }
    Some(pos)
}

/// The values a received Hello is checked against.
#[derive(Debug, Clone)]
pub struct HelloPolicy {
    /// Our magic.
    pub magic: [u8; 4],
    /// Our genesis hash.
    pub genesis: [u8; 32],
}

impl HelloPolicy {
    /// Checks a peer's Hello; the error is the reason to disconnect with.
    pub fn check(&self, hello: &Hello) -> Result<(), DisconnectReason> {
        if hello.magic != self.magic {
            return Err(DisconnectReason::WrongNetwork);
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(DisconnectReason::WrongVersion);
        }
        if hello.genesis != self.genesis {
            return Err(DisconnectReason::WrongGenesis);
        }
        if hello.user_agent.len() > MAX_USER_AGENT_BYTES {
            return Err(DisconnectReason::BadHello);
        }
        Ok(())
    }
}

/// Length-prefixed frame decoder. The cap is shared with the session so that it can be raised
/// once the handshake completes; it is checked against the prefix before any byte of the body
/// is buffered, and the buffer only grows with bytes actually received.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_body: Arc<AtomicUsize>,
}

impl FrameCodec {
    /// A codec with the given shared cap.
    pub fn new(max_body: Arc<AtomicUsize>) -> Self {
        Self { max_body }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        grow_if_full(src);
        let max = self.max_body.load(Ordering::Relaxed);
        let Some(len) = next_frame(src, max)? else {
            return Ok(None);
        };
        src.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(src.split_to(len).freeze()))
    }
}

/// A read filled the whole buffer: the peer sends faster than one buffer per read. Double it
/// (up to READ_BUFFER_MAX_BYTES) so that a busy connection needs fewer, larger reads while idle
/// ones keep the small initial buffer. Growth follows bytes actually received (at most twice
/// what is buffered), never a length prefix.
fn grow_if_full(src: &mut BytesMut) {
    if src.len() == src.capacity()
        && src.len() >= READ_BUFFER_INITIAL_BYTES
        && src.len() < READ_BUFFER_MAX_BYTES
    {
        src.reserve(src.len());
    }
}

/// Body length of the frame at the head of `buf` if it is complete; an error if its prefix
/// breaks the rules (over `max`, or empty).
fn next_frame(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max {
        return Err(CodecError::FrameTooLarge { len, max });
    }
    if len == 0 {
        return Err(CodecError::Empty);
    }
    Ok((buf.len() - LENGTH_PREFIX_BYTES >= len).then_some(len))
}

/// [`FrameCodec`] yielding every complete frame in the buffer at once, as one [`FrameBatch`]:
/// one stream item per read instead of per frame, and one split of the read buffer for all of
/// them. Until the session sets the shared `batching` flag (when the handshake is done) it
/// yields one frame at a time: the session handles the Hello and then waits for the registry
/// before it may handle anything else, so frames behind the Hello must stay in the buffer, not
/// in a batch being handled. A frame that fails after good ones stays in the buffer and is
/// examined again on the next call.
#[derive(Debug, Clone)]
pub struct FrameBatchCodec {
    max_body: Arc<AtomicUsize>,
    batching: Arc<AtomicBool>,
}

impl FrameBatchCodec {
    /// A batching codec with the given shared cap and handshake flag.
    pub fn new(max_body: Arc<AtomicUsize>, batching: Arc<AtomicBool>) -> Self {
        Self { max_body, batching }
    }
}

impl Decoder for FrameBatchCodec {
    type Item = FrameBatch;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<FrameBatch>, CodecError> {
        grow_if_full(src);
        let max = self.max_body.load(Ordering::Relaxed);
        let batching = self.batching.load(Ordering::Relaxed);
        let mut end = 0;
        let mut count = 0;
        loop {
            match next_frame(&src[end..], max) {
                Ok(Some(len)) => {
                    end += LENGTH_PREFIX_BYTES + len;
                    count += 1;
                    if !batching {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) if count == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok((count > 0).then(|| FrameBatch {
            frames: src.split_to(end).freeze(),
        }))
    }
}

/// Complete frames of one read, back to back with their length prefixes (each one checked by
/// [`FrameBatchCodec`] against the cap in force).
#[derive(Debug, Clone)]
pub struct FrameBatch {
    frames: Bytes,
}

impl FrameBatch {
    /// Number of frames.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn len(&self) -> usize {
        self.bodies().count()
    }

    /// Whether there are none (never true for a batch the codec yields).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes on the wire: the frames with their length prefixes.
    pub fn wire_len(&self) -> usize {
        self.frames.len()
    }

    /// The frame bodies in order, borrowed (no reference count per frame).
    pub fn bodies(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest = &self.frames[..];
        std::iter::from_fn(move || {
            let (prefix, after) = rest.split_first_chunk::<LENGTH_PREFIX_BYTES>()?;
            let (body, next) = after.split_at(u32::from_be_bytes(*prefix) as usize);
            rest = next;
            Some(body)
        })
    }

    /// A body (or part of one) from [`FrameBatch::bodies`] as shared bytes of the batch.
    pub fn share(&self, part: &[u8]) -> Bytes {
        self.frames.slice_ref(part)
    }

    /// The bodies as shared bytes, in order.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn to_bodies(&self) -> Vec<Bytes> {
        self.bodies().map(|b| self.share(b)).collect()
    }
}

#[cfg(test)]
mod tests;
