//! [`Chain`]: the read and write access to the chain that the block sync engine needs,
//! implemented by the store itself (tests, tools) and by the [`ChainView`] the sync actor holds
//! (whose commits go to the writer). Defined here, next to its implementations, so that the
//! chain module does not import the sync layer above it.
//!
//! [`ChainView`]: crate::chain::ChainView

use crate::chain::{Block, BlockHash, ChainStore};

/// Read and write access to the chain that the sync engine needs.
pub trait Chain {
    /// Height of the tip.
    fn height(&self) -> u64;
    /// Hash of the tip.
    fn tip_hash(&self) -> BlockHash;
    /// Hash of the block at `height`.
    fn hash_at(&self, height: u64) -> Option<BlockHash>;
    /// Timestamp of the block at `height` (for the validity rule).
    fn timestamp_at(&self, height: u64) -> Option<u64>;
    /// Drops blocks above `ancestor` (if any) and appends `blocks`, atomically.
    fn apply(&mut self, ancestor: u64, blocks: &[Block]) -> Result<(), String>;
    /// Bytes of applied blocks still held in memory on their way to disk (counted in the
    /// download window).
    fn pending_bytes(&self) -> u64 {
        0
    }
}

impl Chain for ChainStore {
    fn height(&self) -> u64 {
        ChainStore::height(self)
    }
    fn tip_hash(&self) -> BlockHash {
        ChainStore::tip_hash(self)
    }
    fn hash_at(&self, height: u64) -> Option<BlockHash> {
        ChainStore::hash_at(self, height)
    }
    fn timestamp_at(&self, height: u64) -> Option<u64> {
        ChainStore::timestamp_at(self, height)
    }
    fn apply(&mut self, ancestor: u64, blocks: &[Block]) -> Result<(), String> {
        let r = if ancestor == ChainStore::height(self) {
            self.append(blocks).map(|_| ())
        } else {
            self.reorg(ancestor, blocks).map(|_| ())
        };
        r.map_err(|e| e.to_string())
    }
}
