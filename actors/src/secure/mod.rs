//! The secure transport: node identity keys, the Noise XX handshake and the AEAD record layer
//! that every connection runs under the frame codec. It exists so that a relay between two
//! nodes sees neither the network magic, the genesis hash nor any payload, cannot change a bit
//! unnoticed, and so that a peer is known by a key no NAT neighbour shares.
//!
//! Layout:
//!
//! - [`identity`]: [`NodeKey`] (static X25519 key pair, the node's identity), [`PublicKey`]
//!   (hex on every human surface), [`PeerAddr`] (`KEYHEX@IP:PORT` pinning) and [`Transport`].
//! - [`handshake`](mod@handshake): the Noise `XX` handshake over a fresh TCP stream (three length-prefixed
//!   messages with a small cap), returning the transport cipher states and the peer's key.
//! - [`cipher`]: [`RecordCipher`], one direction's AES-256-GCM key (a half of the Noise split),
//!   counter nonce and rekey schedule, on AWS-LC's AEAD (`aws-lc-rs`).
//! - [`record`]: [`record::SecureRead`] / [`record::SecureWrite`], an `AsyncRead` and an
//!   `AsyncWrite` that turn the byte stream into AEAD records (2-byte length + ciphertext) and
//!   back. The frame codec and the writer task run on top of them unchanged; a plaintext
//!   transport is the same types without a cipher.
//!
//! Choices, each with its reason:
//!
//! - **Noise `XX`** (`Noise_XX_25519_AESGCM_SHA256`, the `snow` crate with its ring resolver for
//!   the hash and the handshake's AEAD, and AWS-LC's X25519 (module `x25519`), 2.2x faster than
//!   curve25519-dalek here; a small-order peer key fails the handshake):
//!   mutual authentication without knowing the peer's key beforehand (a dialer usually has only
//!   an address), both static keys bound to the transcript, ephemeral X25519 for forward secrecy.
//!   A pinned key is checked after the handshake against the authenticated static key.
//! - **AES-256-GCM over ChaCha20-Poly1305**: measured on this machine (AES-NI, VAES): see
//!   `BENCHMARKS.md`; AES-GCM is several times faster at every record size that matters here.
//! - **Records under the framing, not frames under records**: the writer hands whole outbox
//!   buffers to [`record::SecureWrite`], so hundreds of small frames share one AEAD call, and
//!   the frame codec (caps, batching) is untouched.
//! - **Each direction owned by one half**: after the handshake the two keys of the Noise split
//!   go one to the reader, one to the writer ([`RecordCipher`]); the handshake state is dropped
//!   at once. No lock between the halves and nothing boxed: an idle encrypted session costs two
//!   AES key schedules more than a plaintext one (see `BENCHMARKS.md`, scenario e).
//! - **Counter nonces** (Noise's own `n`, one per direction), **rekey** (Noise `REKEY`) after
//!   [`REKEY_AFTER_RECORDS`] records in each direction, done identically by the sender and the
//!   receiver, so no message is needed to agree on it; nonce exhaustion (2^64 - 1 records) is
//!   an error that closes the connection.
//! - **No compression** (it leaks plaintext through lengths).

pub mod cipher;
pub mod handshake;
pub mod identity;
pub mod record;
pub(crate) mod x25519;

#[cfg(test)]
mod tests;

pub use cipher::RecordCipher;
pub use handshake::{handshake, Established};
pub use identity::{KeyFileError, NodeKey, PeerAddr, PublicKey, Transport};
pub use record::{SecureRead, SecureWrite};

/// Noise protocol name: pattern XX, X25519, AES-256-GCM, SHA-256.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_AESGCM_SHA256";

/// Noise prologue, bound into the handshake hash: a peer speaking another protocol (or another
/// version of this one) fails the handshake instead of misreading records.
pub const NOISE_PROLOGUE: &[u8] = b"peerlink/1";

/// Largest handshake message accepted (length prefix excluded). XX messages are 32, 96 and 64
/// bytes with the empty payloads peerlink sends; a bigger message is refused before it is read,
/// so an unauthenticated peer makes us buffer at most this much.
pub const MAX_HANDSHAKE_MESSAGE_BYTES: usize = 256;

/// Largest Noise message (ciphertext, tag included): the Noise limit.
pub const MAX_RECORD_BYTES: usize = 65535;

/// AEAD tag appended to each record.
pub const TAG_BYTES: usize = 16;

/// Largest plaintext carried by one record.
pub const MAX_RECORD_PLAINTEXT_BYTES: usize = MAX_RECORD_BYTES - TAG_BYTES;

/// Records sent (and received) in one direction under one key before both sides rekey: 2^20
/// records is at most 64 GiB per key, far below AES-GCM's limits, and costs one rekey (a few
/// hundred nanoseconds) per 2^20 records.
pub const REKEY_AFTER_RECORDS: u64 = 1 << 20;

/// Why a secure channel could not be set up or failed. Every variant closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A handshake message announced more than [`MAX_HANDSHAKE_MESSAGE_BYTES`].
    #[error("handshake message of {0} bytes exceeds the cap")]
    HandshakeTooLarge(usize),
    /// The handshake failed (bad message, wrong prologue, failed authentication).
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    /// A record did not authenticate: tampered with, truncated or out of order. Nothing of it
    /// is delivered.
    #[error("record failed authentication")]
    Decrypt,
    /// A record shorter than its tag.
    #[error("record of {0} bytes is shorter than its tag")]
    RecordTooShort(usize),
    /// The responder refused the connection before the handshake (banned, too many peers) with
    /// a clear-text `Disconnect` frame.
    #[error("refused before the handshake: {0}")]
    Refused(crate::reason::DisconnectReason),
    /// The nonce space of a key is used up (2^64 - 1 records): the connection ends.
    #[error("nonce exhausted")]
    Exhausted,
}

impl SecureError {
    /// Whether this error was a record that failed authentication (as opposed to a socket that
    /// failed), looked up inside an `io::Error` from the record layer.
    pub fn is_decrypt_failure(e: &std::io::Error) -> bool {
        matches!(
            e.get_ref().and_then(|i| i.downcast_ref::<SecureError>()),
            Some(SecureError::Decrypt | SecureError::RecordTooShort(_))
        )
    }
}

impl From<SecureError> for std::io::Error {
    fn from(e: SecureError) -> Self {
        match e {
            SecureError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Whether a peer that authenticated with `remote` may connect, checked in this order: not
/// our own key (`SelfConnection`), the key pinned for its IP if any (`KeyMismatch`), one of
/// `allowed` if that list is not empty (`KeyNotAllowed`).
pub fn admit_key(
    own: Option<&PublicKey>,
    pinned: Option<&PublicKey>,
    allowed: &[PublicKey],
    remote: &PublicKey,
) -> Result<(), crate::reason::DisconnectReason> {
    use crate::reason::DisconnectReason;
    if own == Some(remote) {
        return Err(DisconnectReason::SelfConnection);
    }
    if pinned.is_some_and(|p| p != remote) {
        return Err(DisconnectReason::KeyMismatch);
    }
    if !allowed.is_empty() && !allowed.contains(remote) {
        return Err(DisconnectReason::KeyNotAllowed);
    }
    Ok(())
}

/// Readies a configuration for start: draws a node key if the application set none (a new
/// identity for this run), and warns loudly about the plaintext transport.
pub(crate) fn prepare(config: &mut crate::NetworkConfig) {
    let key = config.node_key.get_or_insert_with(NodeKey::generate);
    match config.transport {
        Transport::Noise => log::info!("node key {} (noise transport)", key.public()),
        Transport::Plaintext => log::warn!(
            "transport = \"plaintext\": connections are neither encrypted nor authenticated; \
             use it only for benchmarks and interop tests (node key {} unused)",
            key.public()
        ),
    }
}
