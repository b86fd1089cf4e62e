//! `NodeMsg`: the node application's own messages, carried in App frames of the peerlink wire
//! protocol (see PROTOCOL.md). The networking crate is generic over this type and never looks
//! inside it. Owned by the block sync layer (`crate::sync`), which documents the exchange.
//!
//! Encoding (rmp-serde defaults): the enum is a one-entry map from the variant name to its
//! fields as an array; hashes and payloads are MessagePack `bin`. Frozen by PROTOCOL.md
//! section 11, whose hex vectors the tests below read from the document itself.

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

    /// The specification: every `nodemsg` vector in it is checked below.
    const SPEC: &str = include_str!("../PROTOCOL.md");

    /// Every "```nodemsg name=..." block of PROTOCOL.md as (name, bytes); on each line,
    /// everything after `#` is a comment.
    fn spec_vectors() -> Vec<(String, Vec<u8>)> {
        fenced("```nodemsg")
    }

    /// Every block of PROTOCOL.md fenced with `tag name=...`, as (name, bytes).
    fn fenced(tag: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut lines = SPEC.lines();
        while let Some(line) = lines.next() {
            let Some(info) = line.trim().strip_prefix(tag) else {
                continue;
            };
            let name = info
                .trim()
                .strip_prefix("name=")
                .unwrap_or_else(|| panic!("PROTOCOL.md: {tag} vector without name: {line}"))
                .to_string();
            let mut digits = String::new();
            for body in lines.by_ref() {
                if body.trim() == "```" {
                    break;
                }
                let data = body.split('#').next().unwrap_or("");
                digits.extend(data.chars().filter(|c| !c.is_whitespace()));
            }
            assert!(
                digits.len() % 2 == 0 && digits.chars().all(|c| c.is_ascii_hexdigit()),
                "PROTOCOL.md: vector {name} is not whole hex bytes"
            );
            let bytes = (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
                .collect();
            out.push((name, bytes));
        }
        out
    }

    /// The producer key of the vectors: RFC 8032 section 7.1, test 1.
    fn vector_key() -> crate::chain::ProducerKey {
        let seed = crate::chain::producer::from_hex(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        )
        .unwrap();
        crate::chain::ProducerKey::from_seed(seed.try_into().unwrap())
    }

    /// The block of the `blocks` vector: height 1 after a zero prev, timestamp 0, payload `ab`,
    /// signed by [`vector_key`].
    fn vector_block() -> Block {
        Block::signed(1, [0; 32], 0, vec![0xab], &vector_key())
    }

    /// The message each vector of the spec encodes.
    fn expected() -> Vec<(&'static str, NodeMsg)> {
        let hash = [0x11; 32];
        vec![
            (
                "announce",
                NodeMsg::Announce {
                    height: 5,
                    tip: hash,
                },
            ),
            (
                "get-blocks",
                NodeMsg::GetBlocks {
                    request_id: 1,
                    from: 2,
                    count: 3,
                },
            ),
            (
                "get-blocks-wide-integers",
                NodeMsg::GetBlocks {
                    request_id: 1 << 32,
                    from: 1000,
                    count: MAX_BLOCKS_PER_REQUEST,
                },
            ),
            (
                "blocks",
                NodeMsg::Blocks {
                    request_id: 9,
                    blocks: vec![vector_block()],
                },
            ),
            (
                "blocks-empty",
                NodeMsg::Blocks {
                    request_id: 9,
                    blocks: vec![],
                },
            ),
            (
                "get-hashes",
                NodeMsg::GetHashes {
                    request_id: 1,
                    from: 2,
                    count: 3,
                },
            ),
            (
                "hashes",
                NodeMsg::Hashes {
                    request_id: 1,
                    from: 2,
                    hashes: vec![WireHash(hash)],
                },
            ),
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x} ")).collect()
    }

    #[test]
    fn spec_vectors_match_the_encoder_and_decoder() {
        let spec = spec_vectors();
        let mut names: Vec<&str> = spec.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let mut want: Vec<&str> = expected().iter().map(|(n, _)| *n).collect();
        want.sort_unstable();
        assert_eq!(
            names, want,
            "PROTOCOL.md lists exactly the checked vectors, once each"
        );
        for (name, msg) in expected() {
            let bytes = &spec.iter().find(|(n, _)| n == name).unwrap().1;
            let encoded = rmp_serde::to_vec(&msg).unwrap();
            assert_eq!(hex(&encoded), hex(bytes), "vector {name}");
            let decoded: NodeMsg = rmp_serde::from_slice(bytes).unwrap();
            assert_eq!(decoded, msg, "vector {name}");
        }
    }

    /// The `bytes` vectors of section 11.1: key, genesis, block hash, signed message, signature.
    #[test]
    fn signed_block_vectors_match() {
        use crate::chain::producer::{signing_message, ChainParams};
        let key = vector_key();
        let block = vector_block();
        let params = ChainParams::new("devnet", [key.public()]);
        let want: Vec<(&str, Vec<u8>)> = vec![
            ("producer-public-key", key.public().to_vec()),
            (
                "genesis-payload",
                crate::chain::genesis_for(&params).payload,
            ),
            ("genesis-hash", crate::chain::genesis_hash(&params).to_vec()),
            ("block-header", block.hashed_header().to_vec()),
            ("block-hash", block.hash().to_vec()),
            ("signed-message", signing_message(&block.hash()).to_vec()),
            ("signature", block.signature.to_vec()),
        ];
        let spec = fenced("```bytes");
        let names: Vec<&str> = spec.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            want.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "PROTOCOL.md lists exactly these bytes vectors, in this order"
        );
        for ((name, bytes), (_, w)) in spec.iter().zip(&want) {
            assert_eq!(hex(bytes), hex(w), "vector {name}");
        }
        assert!(crate::chain::producer::verify_one(
            &key.public(),
            &block.hash(),
            &block.signature
        ));
    }

    #[test]
    fn every_variant_has_a_vector() {
        let covered: std::collections::BTreeSet<&str> = expected()
            .iter()
            .map(|(_, m)| match m {
                NodeMsg::Announce { .. } => "Announce",
                NodeMsg::GetBlocks { .. } => "GetBlocks",
                NodeMsg::Blocks { .. } => "Blocks",
                NodeMsg::GetHashes { .. } => "GetHashes",
                NodeMsg::Hashes { .. } => "Hashes",
            })
            .collect();
        assert_eq!(covered.len(), 5);
    }
}
