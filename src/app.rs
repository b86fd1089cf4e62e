//! `NodeMsg`: the node application's own messages, carried in App frames of the peerlink wire
//! protocol (see PROTOCOL.md). The networking crate is generic over this type and never looks
//! inside it. Owned by the block sync layer (`crate::sync`), which documents the exchange.
//!
//! Encoding (rmp-serde defaults, frozen by the tests below): the enum is a one-entry map from
//! the variant name to its fields as an array; hashes and payloads are MessagePack `bin`.

use serde::{Deserialize, Serialize};

use crate::chain::{Block, BlockHash};

/// Most blocks a `GetBlocks` may ask for. The answer is further bounded by bytes (see
/// `SyncConfig::max_response_bytes`), so this only caps the work of one request.
pub const MAX_BLOCKS_PER_REQUEST: u32 = 1_024;

/// Most hashes a `GetHashes` may ask for: 16 Ki hashes encode to about 560 KiB, well within
/// the 4 MiB frame cap, and cover 16 Ki blocks of download scheduling.
pub const MAX_HASHES_PER_REQUEST: u32 = 16 * 1024;

/// A block hash on the wire (MessagePack `bin 8` of 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WireHash(#[serde(with = "serde_bytes")] pub BlockHash);

/// Messages the node application exchanges with peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMsg {
    /// The sender's best chain tip changed (or a connection just opened). Sent once per new tip
    /// to every peer; never forwarded as is, so it cannot loop.
    Announce {
        /// Height of the new tip.
        height: u64,
        /// Hash of the new tip.
        #[serde(with = "serde_bytes")]
        tip: [u8; 32],
    },
    /// Asks for the blocks `from..from + count` of the receiver's best chain.
    GetBlocks {
        /// Echoed in the answer; unique per requester.
        request_id: u64,
        /// First height wanted.
        from: u64,
        /// How many, at most [`MAX_BLOCKS_PER_REQUEST`].
        count: u32,
    },
    /// Answer to `GetBlocks`: consecutive blocks from the requested height, possibly fewer than
    /// asked (the responder stops at its tip and at its byte bound), possibly none.
    Blocks {
        /// The request's id.
        request_id: u64,
        /// The blocks, in height order.
        blocks: Vec<Block>,
    },
    /// Asks for the hashes of the blocks `from..from + count` of the receiver's best chain:
    /// used to locate the common ancestor and to know the hash of every block before
    /// downloading it.
    GetHashes {
        /// Echoed in the answer.
        request_id: u64,
        /// First height wanted (at least 1).
        from: u64,
        /// How many, at most [`MAX_HASHES_PER_REQUEST`].
        count: u32,
    },
    /// Answer to `GetHashes`: hashes of consecutive blocks from `from`, possibly fewer than asked.
    Hashes {
        /// The request's id.
        request_id: u64,
        /// Height of the first hash.
        from: u64,
        /// The hashes, in height order.
        hashes: Vec<WireHash>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn wire_vectors() {
        let enc = |m: &NodeMsg| hex(&rmp_serde::to_vec(m).unwrap());
        let tip = [0x11; 32];
        assert_eq!(
            enc(&NodeMsg::Announce { height: 5, tip }),
            format!("81a8416e6e6f756e636592 05c420{}", hex(&tip)).replace(' ', "")
        );
        assert_eq!(
            enc(&NodeMsg::GetBlocks {
                request_id: 1,
                from: 2,
                count: 3
            }),
            "81a9476574426c6f636b7393010203"
        );
        assert_eq!(
            enc(&NodeMsg::Hashes {
                request_id: 1,
                from: 2,
                hashes: vec![WireHash(tip)]
            }),
            format!("81a6486173686573930102 91c420{}", hex(&tip)).replace(' ', "")
        );
        let block = Block {
            height: 1,
            prev: [0; 32],
            timestamp_ms: 0,
            payload: vec![0xab],
        };
        let m = NodeMsg::Blocks {
            request_id: 9,
            blocks: vec![block],
        };
        assert_eq!(
            enc(&m),
            format!(
                "81a6426c6f636b73 9209 91 9401c420{}00c401ab",
                "00".repeat(32)
            )
            .replace(' ', "")
        );
        let back: NodeMsg = rmp_serde::from_slice(&rmp_serde::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
