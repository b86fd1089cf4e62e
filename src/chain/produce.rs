//! The offline producer: appends blocks with random payloads, for devnets, tests and
//! `peerlink produce`. No consensus here: any node may extend its own chain.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

use crate::chain::{Block, ChainError, ChainStore};

/// Blocks appended per transaction by [`produce`]: big enough that the commit cost is amortised,
/// small enough that a kill loses little work.
const PRODUCE_BATCH_BLOCKS: u64 = 1_000;

/// Builds the block that would follow the store's tip, with `payload_bytes` random bytes.
pub fn random_block(store: &ChainStore, payload_bytes: usize) -> Block {
    let mut payload = vec![0u8; payload_bytes];
    rand::rng().fill_bytes(&mut payload);
    Block {
        height: store.height() + 1,
        prev: store.tip_hash(),
        timestamp_ms: now_ms(),
        payload,
    }
}

/// Appends `n` blocks with `payload_bytes` random bytes each, in transactions of at most
/// `PRODUCE_BATCH_BLOCKS`. Returns the new tip height.
pub fn produce(store: &mut ChainStore, n: u64, payload_bytes: usize) -> Result<u64, ChainError> {
    let mut left = n;
    let mut rng = rand::rng();
    while left > 0 {
        let batch = left.min(PRODUCE_BATCH_BLOCKS);
        let mut blocks = Vec::with_capacity(batch as usize);
        let (mut height, mut prev) = (store.height(), store.tip_hash());
        for _ in 0..batch {
            let mut payload = vec![0u8; payload_bytes];
            rng.fill_bytes(&mut payload);
            let b = Block {
                height: height + 1,
                prev,
                timestamp_ms: now_ms(),
                payload,
            };
            height = b.height;
            prev = b.hash();
            blocks.push(b);
        }
        store.append(&blocks)?;
        left -= batch;
    }
    Ok(store.height())
}

/// Wall clock in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
