//! The validity hook of block sync: [`BlockRule`] is what a chain must satisfy beyond linking
//! by hash, and [`ProducerRule`] is the peerlink node's rule (signed by one of the network's
//! producers, timestamps not going back nor too far ahead, a size limit). The sync engine calls
//! the rule on every run of blocks before it writes them, so another application can plug in
//! its own rule (proof of work, another signature scheme) without touching sync.

use std::thread;

use crate::chain::producer::{verify_batch, verify_one, ChainParams};
use crate::chain::Block;

/// Blocks verified per thread at least: below that, a thread costs more than it saves.
const MIN_BLOCKS_PER_THREAD: usize = 32;

/// Why a block is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBlock {
    /// Height of the first invalid block.
    pub height: u64,
    /// What is wrong with it (for logs and the ban reason).
    pub reason: String,
}

/// A chain's validity rule, applied by the sync engine before blocks are written.
pub trait BlockRule: Send + 'static {
    /// Checks `blocks`, consecutive from the block whose timestamp is `parent_timestamp_ms`
    /// (the engine has already checked heights, links by hash and the expected hashes), at
    /// wall clock `now_ms` (milliseconds since the Unix epoch). Returns the first invalid one.
    fn check(
        &self,
        parent_timestamp_ms: u64,
        blocks: &[Block],
        now_ms: u64,
    ) -> Result<(), InvalidBlock>;
}

/// Links by hash only: every block is valid. For tests of the sync policy, and chains whose
/// validity is checked elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyBlock;

impl BlockRule for AnyBlock {
    fn check(&self, _: u64, _: &[Block], _: u64) -> Result<(), InvalidBlock> {
        Ok(())
    }
}

/// The peerlink node's rule: each block is signed by a producer of the network, no larger
/// than `max_block_bytes` (stored size, header and payload), with a timestamp not before its
/// parent's and not more than `max_future_ms` ahead of the local clock. Signatures are checked
/// in batches, spread over `threads` threads.
#[derive(Debug, Clone)]
pub struct ProducerRule {
    params: ChainParams,
    max_block_bytes: usize,
    max_future_ms: u64,
    threads: usize,
}

impl ProducerRule {
    /// The rule for `params` with these bounds, using every core for signatures.
    pub fn new(params: ChainParams, max_block_bytes: usize, max_future_ms: u64) -> Self {
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            params,
            max_block_bytes,
            max_future_ms,
            threads,
        }
    }

    /// Uses at most `threads` threads for signatures (1: on the caller's thread only).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The cheap checks of one block (everything but the signature).
    fn check_fields(&self, parent_ts: u64, b: &Block, now_ms: u64) -> Option<String> {
        if b.size() > self.max_block_bytes {
            return Some(format!(
                "block of {} bytes exceeds the limit of {}",
                b.size(),
                self.max_block_bytes
            ));
        }
        if !self.params.is_producer(&b.producer) {
            return Some(format!(
                "signed by {}, not a producer of this network",
                crate::chain::producer::hex(&b.producer[..8])
            ));
        }
        if b.timestamp_ms < parent_ts {
            return Some(format!(
                "timestamp {} before its parent's {parent_ts}",
                b.timestamp_ms
            ));
        }
        if b.timestamp_ms > now_ms.saturating_add(self.max_future_ms) {
            return Some(format!(
                "timestamp {} is {} ms ahead of our clock (limit {} ms)",
                b.timestamp_ms,
                b.timestamp_ms - now_ms,
                self.max_future_ms
            ));
        }
        None
    }
}

/// Index of the first block of `blocks` whose signature is invalid, if any.
fn first_bad_signature(blocks: &[Block]) -> Option<usize> {
    let items: Vec<_> = blocks
        .iter()
        .map(|b| (b.producer, b.hash(), b.signature))
        .collect();
    if verify_batch(&items) {
        return None;
    }
    items
        .iter()
        .position(|(pk, hash, sig)| !verify_one(pk, hash, sig))
        .or(Some(0))
}

impl BlockRule for ProducerRule {
    fn check(
        &self,
        parent_timestamp_ms: u64,
        blocks: &[Block],
        now_ms: u64,
    ) -> Result<(), InvalidBlock> {
        let mut parent_ts = parent_timestamp_ms;
        let mut first_bad: Option<(usize, String)> = None;
        for (i, b) in blocks.iter().enumerate() {
            if let Some(reason) = self.check_fields(parent_ts, b, now_ms) {
                first_bad = Some((i, reason));
                break;
            }
            parent_ts = b.timestamp_ms;
        }
        // Signatures of the blocks before the first other fault.
        let end = first_bad.as_ref().map_or(blocks.len(), |(i, _)| *i);
        let signed = &blocks[..end];
        let threads = self
            .threads
            .min(signed.len() / MIN_BLOCKS_PER_THREAD)
            .max(1);
        let bad_sig = if threads == 1 {
            first_bad_signature(signed)
        } else {
            let chunk = signed.len().div_ceil(threads);
            thread::scope(|s| {
                let handles: Vec<_> = signed
                    .chunks(chunk)
                    .enumerate()
                    .map(|(n, c)| s.spawn(move || first_bad_signature(c).map(|i| n * chunk + i)))
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap_or(Some(0)))
                    .min()
            })
        };
        if let Some(i) = bad_sig {
            first_bad = Some((i, "bad producer signature".to_string()));
        }
        match first_bad {
            None => Ok(()),
            Some((i, reason)) => Err(InvalidBlock {
                height: blocks[i].height,
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{genesis_for, ProducerKey};

    fn chain(key: &ProducerKey, n: u64, ts: u64) -> Vec<Block> {
        let mut prev = genesis_for("r").hash();
        (1..=n)
            .map(|h| {
                let b = Block::signed(h, prev, ts + h, vec![h as u8; 100], key);
                prev = b.hash();
                b
            })
            .collect()
    }

    fn rule(key: &ProducerKey) -> ProducerRule {
        ProducerRule::new(ChainParams::new("r", [key.public()]), 1024, 1000)
    }

    #[test]
    fn a_producer_chain_passes_on_any_thread_count() {
        let k = ProducerKey::from_seed([3; 32]);
        let blocks = chain(&k, 200, 10);
        for threads in [1, 2, 3] {
            rule(&k)
                .with_threads(threads)
                .check(0, &blocks, 1_000)
                .unwrap();
        }
    }

    #[test]
    fn each_fault_is_found_at_its_height() {
        let k = ProducerKey::from_seed([3; 32]);
        let stranger = ProducerKey::from_seed([4; 32]);
        let r = rule(&k).with_threads(2);
        let mut blocks = chain(&k, 100, 10);
        blocks[70].signature[5] ^= 1;
        let e = r.check(0, &blocks, 1_000).unwrap_err();
        assert_eq!(
            (e.height, e.reason.as_str()),
            (71, "bad producer signature")
        );

        let blocks = chain(&stranger, 5, 10);
        let e = r.check(0, &blocks, 1_000).unwrap_err();
        assert_eq!(e.height, 1);
        assert!(e.reason.contains("not a producer"), "{}", e.reason);

        let blocks = chain(&k, 5, 10_000);
        let e = r.check(0, &blocks, 10).unwrap_err();
        assert!(e.reason.contains("ahead of our clock"), "{}", e.reason);
        let blocks = chain(&k, 5, 10);
        let e = r.check(100, &blocks, 1_000).unwrap_err();
        assert!(e.reason.contains("before its parent"), "{}", e.reason);

        let big = vec![Block::signed(1, [0; 32], 1, vec![0; 1024], &k)];
        let e = r.check(0, &big, 1_000).unwrap_err();
        assert!(e.reason.contains("exceeds the limit"), "{}", e.reason);
    }
}
