//! One error enum per layer of the subsystem: decoding frames, starting the network, config.

use std::io;

use crate::reason::DisconnectReason;

/// A frame that could not be decoded. Every variant closes the connection it came from, and
/// nothing else: see [`CodecError::disconnect_reason`].
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announced more than the current cap; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Cap in force (4 KiB before the handshake).
        max: usize,
    },
    /// A frame of length zero: no MessagePack value fits in it.
    #[error("empty frame")]
    Empty,
    /// The body is not a valid frame (bad MessagePack, unknown variant, trailing bytes, too deep).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The socket failed while reading.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

impl CodecError {
    /// The reason sent to the peer (and counted) when this error closes its connection.
    pub fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            CodecError::FrameTooLarge { .. } => DisconnectReason::FrameTooLarge,
            CodecError::Empty | CodecError::Malformed(_) => DisconnectReason::BadFrame,
            CodecError::Io(_) => DisconnectReason::ConnectionLost,
        }
    }
}

/// An invalid configuration value; names the key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid value for `{key}`: {reason}")]
pub struct ConfigError {
    /// The offending key, as spelled in TOML.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Errors of [`crate::Network::start`].
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The actor system is shutting down.
    #[error("the network is shut down")]
    Stopped,
    /// A thread of the subsystem (the address book store's) could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    /// An application message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A message is larger than the frame cap: no peer would accept it, so nothing was sent.
    #[error("message of {len} bytes exceeds the frame cap of {max} bytes")]
    TooLarge {
        /// Encoded size of the frame.
        len: usize,
        /// The configured `max_frame_bytes`.
        max: usize,
    },
}
