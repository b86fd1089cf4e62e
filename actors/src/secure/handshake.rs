//! The Noise XX handshake over a fresh stream: three messages, each a 2-byte big-endian length
//! and the Noise message (capped at [`MAX_HANDSHAKE_MESSAGE_BYTES`]), with empty payloads. The
//! dialer is the initiator. The caller bounds the whole exchange with its handshake timeout.
//!
//! ```text
//! -> e                    initiator -> responder   32 bytes
//! <- e, ee, s, es         responder -> initiator   96 bytes (32 + 48 + 16)
//! -> s, se                initiator -> responder   64 bytes (48 + 16)
//! ```

use snow::HandshakeState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::Frame;

use super::{
    NodeKey, PublicKey, RecordCipher, SecureError, MAX_HANDSHAKE_MESSAGE_BYTES, NOISE_PARAMS,
    NOISE_PROLOGUE, REKEY_AFTER_RECORDS,
};

/// A finished handshake: one cipher per direction and the peer's authenticated static key.
/// The handshake state itself is gone.
pub struct Established {
    /// The cipher of the records we send (give it to the [`super::SecureWrite`]).
    pub send: RecordCipher,
    /// The cipher of the records we receive (give it to the [`super::SecureRead`]).
    pub recv: RecordCipher,
    /// The static key the peer proved it holds.
    pub remote: PublicKey,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

fn noise_err(e: snow::Error) -> SecureError {
    SecureError::Handshake(e.to_string())
}

/// Builds the handshake state of one side. `ephemeral` fixes the ephemeral key: only for the
/// test vectors of PROTOCOL.md.
pub(crate) fn build(
    key: &NodeKey,
    initiator: bool,
    ephemeral: Option<&[u8; 32]>,
) -> Result<HandshakeState, SecureError> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|e: snow::Error| SecureError::Handshake(e.to_string()))?;
    let mut builder = snow::Builder::with_resolver(
        params,
        Box::new(super::x25519::Resolver::new(Some(key.agreement().clone()))),
    )
    .local_private_key(key.secret())
    .map_err(noise_err)?
    .prologue(NOISE_PROLOGUE)
    .map_err(noise_err)?;
    if let Some(e) = ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(e);
    }
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(noise_err)
}

/// Writes the next handshake message (empty payload) into `out`, length prefix included.
pub(crate) fn write_step(hs: &mut HandshakeState, out: &mut Vec<u8>) -> Result<(), SecureError> {
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
    out.clear();
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&buf[..n]);
    Ok(())
}

/// Reads one handshake message body (length prefix already removed). A payload, which
/// peerlink never sends, is ignored.
pub(crate) fn read_step(hs: &mut HandshakeState, msg: &[u8]) -> Result<(), SecureError> {
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    hs.read_message(msg, &mut payload).map_err(noise_err)?;
    Ok(())
}

/// The finished handshake's two directions and the peer's key. The Noise `Split()` gives the
/// initiator's sending key first; each key goes to the half that uses it, and the handshake
/// state (hashes, ephemeral keys, the cipher objects snow allocated for its own transport mode)
/// is dropped here.
pub(crate) fn finish(mut hs: HandshakeState) -> Result<Established, SecureError> {
    if !hs.is_handshake_finished() {
        return Err(SecureError::Handshake("handshake not finished".into()));
    }
    let remote = hs
        .get_remote_static()
        .and_then(PublicKey::from_slice)
        .ok_or_else(|| SecureError::Handshake("no remote static key".into()))?;
    let (mut k1, mut k2) = hs.dangerously_get_raw_split();
    let (mut send_key, mut recv_key) = if hs.is_initiator() {
        (k1, k2)
    } else {
        (k2, k1)
    };
    let send = RecordCipher::new(&mut send_key, REKEY_AFTER_RECORDS);
    let recv = RecordCipher::new(&mut recv_key, REKEY_AFTER_RECORDS);
    zeroize::Zeroize::zeroize(&mut k1);
    zeroize::Zeroize::zeroize(&mut k2);
    Ok(Established { send, recv, remote })
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    hs: &mut HandshakeState,
) -> Result<(), SecureError> {
    let mut out = Vec::with_capacity(2 + MAX_HANDSHAKE_MESSAGE_BYTES);
    write_step(hs, &mut out)?;
    stream.write_all(&out).await?;
    Ok(())
}

async fn receive<S: AsyncRead + Unpin>(
    stream: &mut S,
    hs: &mut HandshakeState,
) -> Result<(), SecureError> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(read_refusal(stream).await);
    }
    if len > MAX_HANDSHAKE_MESSAGE_BYTES {
        return Err(SecureError::HandshakeTooLarge(len));
    }
    let mut msg = [0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    stream.read_exact(&mut msg[..len]).await?;
    read_step(hs, &msg[..len])
}

/// Largest clear-text refusal frame read in place of a handshake message.
const MAX_REFUSAL_FRAME_BYTES: usize = 64;

/// No Noise message is empty: two zero bytes where a handshake message starts are the first
/// half of the 4-byte length of a clear-text `Disconnect` frame, which a node sends instead of
/// its handshake when it refuses a connection at accept (banned IP, too many peers).
async fn read_refusal<S: AsyncRead + Unpin>(stream: &mut S) -> SecureError {
    let mut rest = [0u8; 2];
    if let Err(e) = stream.read_exact(&mut rest).await {
        return e.into();
    }
    let len = u16::from_be_bytes(rest) as usize;
    if len == 0 || len > MAX_REFUSAL_FRAME_BYTES {
        return SecureError::Handshake(format!("bad refusal frame of {len} bytes"));
    }
    let mut body = [0u8; MAX_REFUSAL_FRAME_BYTES];
    if let Err(e) = stream.read_exact(&mut body[..len]).await {
        return e.into();
    }
    match Frame::decode(bytes::Bytes::copy_from_slice(&body[..len])) {
        Ok(Frame::Disconnect { reason }) => SecureError::Refused(reason),
        _ => SecureError::Handshake("bad refusal frame".into()),
    }
}

/// Runs the XX handshake on `stream` as the initiator (the dialer) or the responder. Bound it
/// with a timeout: a silent peer makes it wait forever.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &NodeKey,
    initiator: bool,
) -> Result<Established, SecureError> {
    run(stream, key, initiator, None).await
}

/// [`handshake()`] with the ephemeral key fixed by `ephemeral` (`None` draws one, as every real
/// connection does): the fuzz entry points run this, with the keys of PROTOCOL.md's vectors.
pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &NodeKey,
    initiator: bool,
    ephemeral: Option<&[u8; 32]>,
) -> Result<Established, SecureError> {
    let mut hs = build(key, initiator, ephemeral)?;
    if initiator {
        send(stream, &mut hs).await?;
        receive(stream, &mut hs).await?;
        send(stream, &mut hs).await?;
    } else {
        receive(stream, &mut hs).await?;
        send(stream, &mut hs).await?;
        receive(stream, &mut hs).await?;
    }
    finish(hs)
}
