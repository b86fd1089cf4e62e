//! `Block`: the unit of the chain, its fixed binary encoding, its BLAKE3 hash and its producer's
//! signature, and the genesis block that every network derives from its [`ChainParams`] (name
//! and producer keys). Kept apart from storage and sync so that both agree on one definition of
//! a block and it can be property-tested alone.
//!
//! ## Hash
//!
//! The hash is `BLAKE3(header)` where the fixed 120-byte header is
//! `height (u64 BE) | prev (32 bytes) | timestamp_ms (u64 BE) | payload_len (u64 BE) |
//! BLAKE3(payload) (32 bytes) | producer (32 bytes)`. Hashing the payload's digest rather than
//! the payload itself commits to exactly the same data and lets a header be checked without its
//! body. The signature is not hashed: the producer signs the hash
//! ([`crate::chain::producer`]).
//!
//! ## Stored encoding
//!
//! `height | prev | timestamp_ms | payload_len | producer | signature` (152 bytes, integers
//! big-endian) followed by the payload. On the wire a block travels as a MessagePack array
//! `[height, prev(bin), timestamp_ms, payload(bin), producer(bin), signature(bin)]` (field order
//! is wire format; PROTOCOL.md section 11.1).

use serde::{Deserialize, Serialize};

use crate::chain::producer::{ChainParams, ProducerKey, PublicKey, SignatureBytes};
use crate::chain::ChainError;

/// A block hash (BLAKE3, 32 bytes).
pub type BlockHash = [u8; 32];

/// Largest payload a block may carry: a block must fit in one maximum frame with room to spare
/// (the default frame cap is 4 MiB), and a reorg buffers up to `max_reorg_depth` blocks.
pub const MAX_BLOCK_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Bytes of the fixed part of the stored encoding (everything but the payload).
pub const STORED_HEADER_BYTES: usize = 8 + 32 + 8 + 8 + 32 + 64;

/// Bytes of the header that is hashed.
pub const HASHED_HEADER_BYTES: usize = 8 + 32 + 8 + 8 + 32 + 32;

/// Upper bound of the MessagePack overhead of one block on the wire beyond its payload: array
/// marker, three integers of at most 9 bytes, four bin headers of at most 5 bytes, the prev
/// hash, the producer key and the signature.
pub const WIRE_OVERHEAD_BYTES: usize = 1 + 9 + (5 + 32) + 9 + 5 + (5 + 32) + (5 + 64);

/// Size of a block for the size limit (`[sync] max_block_bytes`): its stored encoding, header
/// and payload.
pub fn block_size(payload_len: usize) -> usize {
    STORED_HEADER_BYTES + payload_len
}

/// One block of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Distance from genesis (genesis is 0).
    pub height: u64,
    /// Hash of the block at `height - 1` (all zero for genesis).
    #[serde(with = "serde_bytes")]
    pub prev: BlockHash,
    /// Producer's wall clock when the block was made, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Application data; opaque to the chain.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Public key of the producer that signed the block (all zero for genesis).
    #[serde(with = "serde_bytes")]
    pub producer: PublicKey,
    /// The producer's signature of the block hash (all zero for genesis).
    #[serde(with = "serde_bytes")]
    pub signature: SignatureBytes,
}

impl Default for Block {
    fn default() -> Self {
        Block {
            height: 0,
            prev: [0; 32],
            timestamp_ms: 0,
            payload: Vec::new(),
            producer: [0; 32],
            signature: [0; 64],
        }
    }
}

impl Block {
    /// A block at `height` after `prev`, signed by `key`.
    pub fn signed(
        height: u64,
        prev: BlockHash,
        timestamp_ms: u64,
        payload: Vec<u8>,
        key: &ProducerKey,
    ) -> Block {
        let mut b = Block {
            height,
            prev,
            timestamp_ms,
            payload,
            producer: key.public(),
            signature: [0; 64],
        };
        b.signature = key.sign(&b.hash());
        b
    }

    /// The block's hash (see the module docs for what is hashed).
    pub fn hash(&self) -> BlockHash {
        *blake3::hash(&self.hashed_header()).as_bytes()
    }

    /// The fixed header that [`Block::hash`] hashes.
    pub fn hashed_header(&self) -> [u8; HASHED_HEADER_BYTES] {
        let mut h = [0u8; HASHED_HEADER_BYTES];
        h[..56].copy_from_slice(&self.stored_header()[..56]);
        h[56..88].copy_from_slice(blake3::hash(&self.payload).as_bytes());
        h[88..].copy_from_slice(&self.producer);
        h
    }

    fn stored_header(&self) -> [u8; STORED_HEADER_BYTES] {
        let mut h = [0u8; STORED_HEADER_BYTES];
        h[..8].copy_from_slice(&self.height.to_be_bytes());
        h[8..40].copy_from_slice(&self.prev);
        h[40..48].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        h[48..56].copy_from_slice(&(self.payload.len() as u64).to_be_bytes());
        h[56..88].copy_from_slice(&self.producer);
        h[88..152].copy_from_slice(&self.signature);
        h
    }

    /// Size for the block size limit: stored header plus payload.
    pub fn size(&self) -> usize {
        block_size(self.payload.len())
    }

    /// The stored encoding: fixed header then payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_HEADER_BYTES + self.payload.len());
        out.extend_from_slice(&self.stored_header());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes the stored encoding; every byte must be accounted for.
    pub fn decode(bytes: &[u8]) -> Result<Block, ChainError> {
        let bad = |reason: &str| ChainError::Decode(reason.to_string());
        if bytes.len() < STORED_HEADER_BYTES {
            return Err(bad("shorter than the block header"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&bytes[8..40]);
        let payload_len = u64_at(48);
        if payload_len != (bytes.len() - STORED_HEADER_BYTES) as u64 {
            return Err(bad("payload length does not match the record"));
        }
        let mut producer = [0u8; 32];
        producer.copy_from_slice(&bytes[56..88]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[88..152]);
        Ok(Block {
            height: u64_at(0),
            prev,
            timestamp_ms: u64_at(40),
            payload: bytes[STORED_HEADER_BYTES..].to_vec(),
            producer,
            signature,
        })
    }

    /// Upper bound of this block's size inside a `Blocks` message.
    pub fn wire_size(&self) -> usize {
        WIRE_OVERHEAD_BYTES + self.payload.len()
    }

    /// Whether this block can follow a block `parent_hash` at `parent_height`.
    pub fn extends(&self, parent_height: u64, parent_hash: &BlockHash) -> bool {
        self.height == parent_height + 1 && &self.prev == parent_hash
    }
}

/// The genesis block of a network: height 0, zero prev hash, timestamp 0, zero producer and
/// signature, payload `"peerlink genesis:" + name + 0x00 + producer keys` (each 32 bytes, in
/// ascending order). Nodes of networks with another name or another producer set get another
/// genesis hash and refuse each other at the handshake (`NetworkConfig::genesis`).
pub fn genesis_for(params: impl Into<ChainParams>) -> Block {
    let params = params.into();
    let mut payload = format!("peerlink genesis:{}", params.network).into_bytes();
    payload.push(0);
    for key in params.producers() {
        payload.extend_from_slice(key);
    }
    Block {
        payload,
        ..Block::default()
    }
}

/// Hash of [`genesis_for`]`(params)`.
pub fn genesis_hash(params: impl Into<ChainParams>) -> BlockHash {
    genesis_for(params).hash()
}

/// Short hex prefix of a hash for logs.
pub fn short_hex(hash: &BlockHash) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Full lowercase hex of a hash.
pub fn to_hex(hash: &BlockHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_block() -> impl Strategy<Value = Block> {
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..512),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(height, prev, timestamp_ms, payload, producer, s)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&s);
                Block {
                    height,
                    prev,
                    timestamp_ms,
                    payload,
                    producer,
                    signature,
                }
            })
    }

    proptest! {
        #[test]
        fn stored_encoding_round_trips(b in arb_block()) {
            let bytes = b.encode();
            prop_assert_eq!(bytes.len(), STORED_HEADER_BYTES + b.payload.len());
            prop_assert_eq!(Block::decode(&bytes).unwrap(), b);
        }

        #[test]
        fn wire_encoding_round_trips_and_fits_its_bound(b in arb_block()) {
            let bytes = rmp_serde::to_vec(&b).unwrap();
            prop_assert!(bytes.len() <= b.wire_size());
            let back: Block = rmp_serde::from_slice(&bytes).unwrap();
            prop_assert_eq!(back.hash(), b.hash());
            prop_assert_eq!(back, b);
        }

        #[test]
        fn any_field_change_changes_the_hash(b in arb_block(), flip in any::<u8>(), which in 0u8..5) {
            let mut c = b.clone();
            let flip = flip.max(1);
            match which {
                0 => c.height ^= flip as u64,
                1 => c.prev[0] ^= flip,
                2 => c.timestamp_ms ^= flip as u64,
                3 => c.producer[0] ^= flip,
                _ => c.payload.push(flip),
            }
            prop_assert_ne!(b.hash(), c.hash());
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Block::decode(&bytes);
        }
    }

    #[test]
    fn hash_is_blake3_of_the_fixed_header() {
        let b = Block {
            height: 1,
            prev: [7; 32],
            timestamp_ms: 2,
            payload: b"abc".to_vec(),
            producer: [5; 32],
            signature: [6; 64],
        };
        let mut expected = Vec::new();
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(blake3::hash(b"abc").as_bytes());
        expected.extend_from_slice(&[5; 32]);
        assert_eq!(b.hash(), *blake3::hash(&expected).as_bytes());
        let mut c = b.clone();
        c.signature = [0; 64];
        assert_eq!(b.hash(), c.hash(), "the signature is not hashed");
    }

    #[test]
    fn wire_layout_is_an_array_with_bin_fields() {
        let b = Block {
            height: 1,
            prev: [0xaa; 32],
            timestamp_ms: 2,
            payload: vec![0xbb; 3],
            producer: [0xcc; 32],
            signature: [0xdd; 64],
        };
        let bytes = rmp_serde::to_vec(&b).unwrap();
        let mut expected = vec![0x96, 0x01, 0xc4, 0x20];
        expected.extend_from_slice(&[0xaa; 32]);
        expected.extend_from_slice(&[0x02, 0xc4, 0x03, 0xbb, 0xbb, 0xbb, 0xc4, 0x20]);
        expected.extend_from_slice(&[0xcc; 32]);
        expected.extend_from_slice(&[0xc4, 0x40]);
        expected.extend_from_slice(&[0xdd; 64]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn genesis_depends_on_the_network_name() {
        assert_eq!(genesis_hash("devnet"), genesis_hash("devnet"));
        assert_ne!(genesis_hash("devnet"), genesis_hash("testnet"));
        assert_eq!(genesis_for("x").height, 0);
        let with = |k: u8| ChainParams::new("devnet", [ProducerKey::from_seed([k; 32]).public()]);
        assert_ne!(genesis_hash(with(1)), genesis_hash(with(2)));
        assert_ne!(genesis_hash(with(1)), genesis_hash("devnet"));
    }
}
