//! The producer: appends blocks with random payloads signed by a producer key, for devnets,
//! tests, `peerlink produce` and `run --produce-every`. The store does not check who signed:
//! the validity rule (`crate::sync::rule`) is what peers apply to blocks they receive.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

use crate::chain::{Block, ChainError, ChainStore, ProducerKey};

/// Blocks appended per transaction by [`produce`]: big enough that the commit cost is amortised,
/// small enough that a kill loses little work.
const PRODUCE_BATCH_BLOCKS: u64 = 1_000;

/// Builds the block that would follow the store's tip, with `payload_bytes` random bytes, signed
/// by `key`. Its timestamp is the wall clock, or the parent's if the clock is behind it (the
/// timestamp rule forbids going back).
pub fn random_block(store: &ChainStore, key: &ProducerKey, payload_bytes: usize) -> Block {
    let mut payload = vec![0u8; payload_bytes];
    rand::rng().fill_bytes(&mut payload);
    next_block(store, key, payload)
}

/// The block with `payload` that would follow the store's tip, signed by `key`.
pub fn next_block(store: &ChainStore, key: &ProducerKey, payload: Vec<u8>) -> Block {
    let parent_ts = store.timestamp_at(store.height()).unwrap_or(0);
    Block::signed(
        store.height() + 1,
        store.tip_hash(),
        now_ms().max(parent_ts),
        payload,
        key,
    )
}

/// Appends `n` blocks with `payload_bytes` random bytes each, signed by `key`, in transactions of
/// at most `PRODUCE_BATCH_BLOCKS`. Returns the new tip height.
pub fn produce(
    store: &mut ChainStore,
    key: &ProducerKey,
    n: u64,
    payload_bytes: usize,
) -> Result<u64, ChainError> {
    let mut left = n;
    let mut rng = rand::rng();
    while left > 0 {
        let batch = left.min(PRODUCE_BATCH_BLOCKS);
        let mut blocks = Vec::with_capacity(batch as usize);
        let (mut height, mut prev) = (store.height(), store.tip_hash());
        let mut ts = store.timestamp_at(height).unwrap_or(0);
        for _ in 0..batch {
            let mut payload = vec![0u8; payload_bytes];
            rng.fill_bytes(&mut payload);
            ts = now_ms().max(ts);
            let b = Block::signed(height + 1, prev, ts, payload, key);
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
