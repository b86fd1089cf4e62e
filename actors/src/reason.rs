//! `DisconnectReason`: why a connection ends. Every layer uses it (the codec's errors map to
//! one, the session sends one, the registry records one), so it lives apart from the frames
//! and from the error types, and neither imports the other through it. Its wire form (a
//! string) is in PROTOCOL.md section 8.

use serde::{Deserialize, Serialize};

/// Why a connection is closed. Sent in a `Frame::Disconnect` when the socket still works,
/// logged and counted in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DisconnectReason {
    /// An operator or the application asked for it.
    Requested,
    /// The node is shutting down.
    Shutdown,
    /// Another connection to the same node won the duplicate resolution.
    Duplicate,
    /// The node restarted (new nonce) and its new connection replaced this one.
    PeerRestarted,
    /// The connection leads back to this very node.
    SelfConnection,
    /// The network magic differs.
    WrongNetwork,
    /// The genesis hash differs.
    WrongGenesis,
    /// The protocol version is not supported.
    WrongVersion,
    /// The Hello was invalid (user agent too long) or came twice.
    BadHello,
    /// A frame was not valid MessagePack or not a known frame.
    BadFrame,
    /// A frame's length prefix exceeded the cap.
    FrameTooLarge,
    /// A valid frame at the wrong time (application data before the handshake, for instance).
    ProtocolViolation,
    /// No valid Hello within the handshake timeout.
    HandshakeTimeout,
    /// No pong echoing our ping within the ping timeout.
    PingTimeout,
    /// The peer did not read fast enough: its outbound queue exceeded the budget.
    SlowPeer,
    /// The peer's IP is banned.
    Banned,
    /// Inbound, pending or outbound limits are full.
    TooManyPeers,
    /// Inbound slots were full and the eviction policy chose this connection to make room for a
    /// newcomer.
    Evicted,
    /// The application found the peer's data invalid (bad block, unrequested response...).
    Misbehaving,
    /// The socket closed or failed without a Disconnect frame. Never sent.
    ConnectionLost,
    /// The Noise handshake failed (garbage, another protocol, failed authentication). Never
    /// sent: there is no channel to send it in.
    HandshakeFailed,
    /// A record failed authentication (tampered with, truncated or forged); nothing of it was
    /// delivered.
    DecryptFailed,
    /// The peer's IP is pinned to another key (`KEYHEX@IP:PORT`).
    KeyMismatch,
    /// `allowed_keys` is set and the peer's key is not in it.
    KeyNotAllowed,
    /// A reason this build does not know, received from a newer peer. Decoding it never fails,
    /// so new reasons can be added without breaking older nodes. Never sent.
    #[serde(other)]
    Unknown,
}

impl DisconnectReason {
    /// All reasons, for metrics and tests.
    pub const ALL: [DisconnectReason; 25] = [
        Self::Requested,
        Self::Shutdown,
        Self::Duplicate,
        Self::PeerRestarted,
        Self::SelfConnection,
        Self::WrongNetwork,
        Self::WrongGenesis,
        Self::WrongVersion,
        Self::BadHello,
        Self::BadFrame,
        Self::FrameTooLarge,
        Self::ProtocolViolation,
        Self::HandshakeTimeout,
        Self::PingTimeout,
        Self::SlowPeer,
        Self::Banned,
        Self::TooManyPeers,
        Self::Evicted,
        Self::Misbehaving,
        Self::ConnectionLost,
        Self::HandshakeFailed,
        Self::DecryptFailed,
        Self::KeyMismatch,
        Self::KeyNotAllowed,
        Self::Unknown,
    ];

    /// Short snake_case name for logs, metrics labels and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Shutdown => "shutdown",
            Self::Duplicate => "duplicate",
            Self::PeerRestarted => "peer_restarted",
            Self::SelfConnection => "self_connection",
            Self::WrongNetwork => "wrong_network",
            Self::WrongGenesis => "wrong_genesis",
            Self::WrongVersion => "wrong_version",
            Self::BadHello => "bad_hello",
            Self::BadFrame => "bad_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::ProtocolViolation => "protocol_violation",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::PingTimeout => "ping_timeout",
            Self::SlowPeer => "slow_peer",
            Self::Banned => "banned",
            Self::TooManyPeers => "too_many_peers",
            Self::Evicted => "evicted",
            Self::Misbehaving => "misbehaving",
            Self::ConnectionLost => "connection_lost",
            Self::HandshakeFailed => "handshake_failed",
            Self::DecryptFailed => "decrypt_failed",
            Self::KeyMismatch => "key_mismatch",
            Self::KeyNotAllowed => "key_not_allowed",
            Self::Unknown => "unknown",
        }
    }

    /// Whether a Disconnect frame carrying this reason is worth sending (the socket may work).
    pub fn is_sent_on_wire(self) -> bool {
        !matches!(
            self,
            Self::ConnectionLost | Self::SlowPeer | Self::HandshakeFailed | Self::Unknown
        )
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
