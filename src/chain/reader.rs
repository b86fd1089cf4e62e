//! `ChainReader`: read-only access to the chain store from a thread other than the writer's.
//! redb serves any number of read transactions concurrently with one writer, so the node's
//! request server ([`crate::sync::server`]) answers peers' `GetBlocks` / `GetHashes` from its
//! own arbiter while the sync actor commits, and no actor that handles peers blocks on disk.
//!
//! The reader keeps its own copy of the hash index (32 bytes per block) and follows the writer
//! through [`IndexUpdate`]s sent after each commit, in commit order. It serves only what its
//! index names, and a block read from disk is served only if its hash is the one in the index:
//! a reader that is one update behind answers short, never with blocks of another branch than
//! its hashes.

use std::sync::Arc;

use redb::Database;

use crate::chain::store::BLOCKS;
use crate::chain::{Block, BlockHash, ChainError};

/// A committed change of the chain: every block above `ancestor` was replaced by `hashes`
/// (heights `ancestor + 1 ..`). An append is the update whose ancestor is the old tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexUpdate {
    /// Height below which nothing changed.
    pub ancestor: u64,
    /// Hashes of the new blocks above `ancestor`.
    pub hashes: Vec<BlockHash>,
}

/// Read side of a [`crate::chain::ChainStore`]. See the module docs.
pub struct ChainReader {
    db: Arc<Database>,
    /// Hash of every committed block by height; never empty (genesis).
    hashes: Vec<BlockHash>,
}

impl std::fmt::Debug for ChainReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainReader")
            .field("height", &self.height())
            .finish()
    }
}

impl ChainReader {
    /// A reader of `db` whose committed chain has `hashes` (made by `ChainStore::reader`).
    pub(crate) fn new(db: Arc<Database>, hashes: Vec<BlockHash>) -> Self {
        Self { db, hashes }
    }

    /// Height of the tip as this reader knows it.
    pub fn height(&self) -> u64 {
        self.hashes.len().saturating_sub(1) as u64
    }

    /// Follows a commit.
    pub fn follow(&mut self, update: IndexUpdate) {
        let keep = usize::try_from(update.ancestor.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(self.hashes.len())
            .max(1);
        self.hashes.truncate(keep);
        self.hashes.extend(update.hashes);
    }

    /// Hashes of the blocks `from..from + count` that are stored (possibly fewer or none).
    pub fn hashes(&self, from: u64, count: usize) -> &[BlockHash] {
        let len = self.hashes.len() as u64;
        if from >= len {
            return &[];
        }
        let end = from.saturating_add(count as u64).min(len);
        &self.hashes[from as usize..end as usize]
    }

    /// Blocks from `from` on: at most `count`, no more than `max_bytes` of wire size except that
    /// the first block is always included, and only blocks whose hash is the index's.
    pub fn blocks(
        &self,
        from: u64,
        count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Block>, ChainError> {
        let mut out = Vec::new();
        if count == 0 || from > self.height() {
            return Ok(out);
        }
        let tx = self.db.begin_read().map_err(redb::Error::from)?;
        let table = tx.open_table(BLOCKS)?;
        let mut bytes = 0usize;
        for entry in table.range(from..=self.height())? {
            let (_, v) = entry?;
            let b = Block::decode(v.value())?;
            bytes += b.wire_size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            if self.hashes.get(b.height as usize) != Some(&b.hash()) {
                break;
            }
            out.push(b);
            if out.len() == count {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{produce, ChainStore, ProducerKey};

    fn key() -> ProducerKey {
        ProducerKey::from_seed([1; 32])
    }

    #[test]
    fn the_reader_serves_what_its_index_names_and_follows_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ChainStore::open(dir.path(), "t").unwrap();
        produce(&mut s, &key(), 10, 16).unwrap();
        let mut r = s.reader();
        assert_eq!(r.height(), 10);
        assert_eq!(r.blocks(3, 4, usize::MAX).unwrap().len(), 4);
        // A reorg the reader has not followed yet: it answers short, never the new branch.
        let b5 = s.block(5).unwrap().unwrap();
        let mut other = crate::chain::random_block(&s, &key(), 16);
        other.height = 6;
        other.prev = b5.hash();
        s.reorg(5, std::slice::from_ref(&other)).unwrap();
        let got = r.blocks(4, 4, usize::MAX).unwrap();
        assert_eq!(got.iter().map(|b| b.height).collect::<Vec<_>>(), vec![4, 5]);
        r.follow(IndexUpdate {
            ancestor: 5,
            hashes: vec![other.hash()],
        });
        assert_eq!(r.height(), 6);
        assert_eq!(r.blocks(6, 4, usize::MAX).unwrap(), vec![other]);
        assert_eq!(r.hashes(5, 10).len(), 2);
        assert!(r.hashes(7, 10).is_empty());
    }

    #[test]
    fn answers_are_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ChainStore::open(dir.path(), "t").unwrap();
        produce(&mut s, &key(), 20, 1000).unwrap();
        let r = s.reader();
        let one = r.blocks(1, 1, usize::MAX).unwrap()[0].wire_size();
        assert_eq!(r.blocks(1, 20, one * 3).unwrap().len(), 3);
        assert_eq!(r.blocks(1, 20, 1).unwrap().len(), 1, "at least one block");
    }
}
