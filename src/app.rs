//! `NodeMsg`: the node application's own messages, carried in App frames of the peerlink wire
//! protocol (see PROTOCOL.md). The networking crate is generic over this type and never looks
//! inside it. Owned by the block sync layer; extend it there.

use serde::{Deserialize, Serialize};

/// Messages the node application exchanges with peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMsg {
    /// The sender's best chain tip changed.
    Announce {
        /// Height of the new tip.
        height: u64,
        /// Hash of the new tip.
        #[serde(with = "serde_bytes")]
        tip: [u8; 32],
    },
}
