//! Entry points for the coverage-guided fuzz targets in `fuzz/` and their corpus replay test
//! (feature `fuzzing`, hidden from the docs): the decoders a peer's bytes reach, re-exported
//! through this one path so that the crate's modules can stay private, and
//! [`session_read_path`], the session's read path (codec, frame decoding, handshake phases,
//! App payload check) without the actor around it.
//!
//! Nothing here is API: it exists so that fuzzers reach exactly the code a peer reaches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use bytes::BytesMut;
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
            let bodies = match codec.decode(&mut buf) {
                Ok(Some(bodies)) => bodies,
                Ok(None) => break,
                Err(e) => {
                    out.closed = Some(e.disconnect_reason());
                    return out;
                }
            };
            for body in bodies {
                assert!(
                    body.len() <= cap_now,
                    "codec yielded {} bytes under a cap of {cap_now}",
                    body.len()
                );
                let frame = match Frame::decode(body) {
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
