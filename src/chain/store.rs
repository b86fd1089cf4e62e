//! `ChainStore`: the chain on disk (redb, one file in the node's data directory) plus an
//! in-memory index of every block hash by height. It owns the invariants of the stored chain:
//! heights are 0..=tip without gaps, block 0 is this network's genesis, every block links to
//! its predecessor by hash, and no height is stored twice.
//!
//! Every mutation ([`ChainStore::append`], [`ChainStore::reorg`]) is one redb write transaction
//! committed with immediate durability, so a kill -9 at any moment leaves the last committed
//! chain: a valid prefix of what was being written. [`ChainStore::open`] re-verifies the whole
//! stored chain (decode, height, linkage, genesis) and, should a record ever be invalid (disk
//! corruption, tampering), truncates to the longest valid prefix in one transaction and logs it.
//! Verification is linear in the chain length (about a microsecond per small block).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::chain::{genesis_for, Block, BlockHash, ChainError, ChainParams, ChainReader};

/// redb page cache per store. redb defaults to 1 GiB, which a devnet of eight nodes in one
/// process would multiply; sync writes sequentially and reads recent blocks, so 32 MiB is plenty.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "chain.redb";

/// height -> stored block encoding.
pub(crate) const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// Bans (see `crate::bans`): canonical IP as text -> MessagePack of `BanRecord`. In the chain's
/// redb file so that the node has one store, one lock and one durability story.
const BANS: TableDefinition<&str, &[u8]> = TableDefinition::new("bans");
/// Metadata: "network" -> network name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_NETWORK: &str = "network";

/// The node's chain. Single writer: owned by one actor (or one CLI command) at a time; redb also
/// refuses a second open of the same file.
pub struct ChainStore {
    /// Shared with [`ChainReader`]s (redb serves reads concurrently with the writer).
    db: Arc<Database>,
    path: PathBuf,
    params: ChainParams,
    /// Hash of every stored block, indexed by height; never empty (genesis).
    hashes: Vec<BlockHash>,
    /// Timestamp of every stored block, indexed by height (for the timestamp rule).
    timestamps: Vec<u64>,
    /// Height from which an invalid record was dropped at open, if any.
    repaired_from: Option<u64>,
}

impl std::fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainStore")
            .field("path", &self.path)
            .field("network", &self.params.network)
            .field("height", &self.height())
            .finish()
    }
}

impl ChainStore {
    /// Opens (or creates) the chain of the network `params` (a network name, or a
    /// [`ChainParams`] with its producer keys) in `dir`, verifies it and resumes at its tip. A
    /// new store holds only the genesis block. A store of another network, or of the same
    /// network with another producer set (another genesis), is refused.
    pub fn open(
        dir: impl AsRef<Path>,
        params: impl Into<ChainParams>,
    ) -> Result<ChainStore, ChainError> {
        let params = params.into();
        let network_name = params.network.as_str();
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| ChainError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)?;
        let genesis = genesis_for(&params);
        // Create the tables, record the network and genesis on first open.
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let stored = meta.get(META_NETWORK)?.map(|v| v.value().to_vec());
            match stored {
                Some(name) if name != network_name.as_bytes() => {
                    return Err(ChainError::WrongNetwork {
                        stored: String::from_utf8_lossy(&name).into_owned(),
                        wanted: network_name.to_string(),
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(META_NETWORK, network_name.as_bytes())?;
                }
            }
            let mut blocks = tx.open_table(BLOCKS)?;
            let stored = blocks.get(0u64)?.map(|v| v.value().to_vec());
            match stored {
                None => {
                    blocks.insert(0u64, genesis.encode().as_slice())?;
                }
                Some(bytes) if bytes != genesis.encode() => {
                    return Err(ChainError::WrongGenesis {
                        network: network_name.to_string(),
                    });
                }
                Some(_) => {}
            }
        }
        tx.commit()?;

        let (hashes, timestamps, bad) = verify(&db, &genesis)?;
        let mut store = ChainStore {
            db: Arc::new(db),
            path,
            params,
            hashes,
            timestamps,
            repaired_from: None,
        };
        if let Some((height, reason)) = bad {
            log::warn!(
                "chain store {}: invalid record at height {height} ({reason}); truncating to {}",
                store.path.display(),
                store.height()
            );
            store.delete_from(height)?;
            store.repaired_from = Some(height);
        }
        log::info!(
            "chain store {} opened at height {} (tip {})",
            store.path.display(),
            store.height(),
            crate::chain::short_hex(&store.tip_hash())
        );
        Ok(store)
    }

    /// Height of the tip (0: only genesis).
    pub fn height(&self) -> u64 {
        (self.hashes.len() - 1) as u64
    }

    /// Hash of the tip.
    pub fn tip_hash(&self) -> BlockHash {
        self.hashes[self.hashes.len() - 1]
    }

    /// Hash of the genesis block.
    pub fn genesis_hash(&self) -> BlockHash {
        self.hashes[0]
    }

    /// Name of the network this chain belongs to.
    pub fn network(&self) -> &str {
        &self.params.network
    }

    /// The network's parameters (name and producer keys).
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// Timestamp of the block at `height`, if stored.
    pub fn timestamp_at(&self, height: u64) -> Option<u64> {
        self.timestamps.get(usize::try_from(height).ok()?).copied()
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// If the open found an invalid record, the height from which the chain was truncated.
    pub fn repaired_from(&self) -> Option<u64> {
        self.repaired_from
    }

    /// Hash of the block at `height`, if stored.
    pub fn hash_at(&self, height: u64) -> Option<BlockHash> {
        self.hashes.get(usize::try_from(height).ok()?).copied()
    }

    /// Hashes of the blocks `from..from + count` that are stored (possibly fewer or none).
    pub fn hashes(&self, from: u64, count: usize) -> &[BlockHash] {
        let len = self.hashes.len() as u64;
        if from >= len {
            return &[];
        }
        let end = (from + count as u64).min(len);
        &self.hashes[from as usize..end as usize]
    }

    /// A read side for another thread, at the current tip; keep it current with
    /// [`crate::chain::IndexUpdate`]s after each commit.
    pub fn reader(&self) -> ChainReader {
        ChainReader::new(Arc::clone(&self.db), self.hashes.clone())
    }

    /// The block at `height`, if stored.
    pub fn block(&self, height: u64) -> Result<Option<Block>, ChainError> {
        let tx = self.db.begin_read().map_err(redb::Error::from)?;
        let table = tx.open_table(BLOCKS)?;
        let got = table.get(height)?;
        got.map(|v| Block::decode(v.value())).transpose()
    }

    /// Blocks from `from` on: at most `count` of them, and no more than `max_bytes` of wire size
    /// ([`Block::wire_size`]) except that the first block is always included.
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
        for entry in table.range(from..)? {
            let (_, v) = entry?;
            let b = Block::decode(v.value())?;
            bytes += b.wire_size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(b);
            if out.len() == count {
                break;
            }
        }
        Ok(out)
    }

    /// Appends consecutive blocks in one transaction. Blocks already stored (same height and
    /// hash) are skipped, so a repeated append is harmless; any other block must extend the tip.
    /// Returns how many blocks were added. On error nothing is written.
    pub fn append(&mut self, blocks: &[Block]) -> Result<usize, ChainError> {
        let mut new_hashes = Vec::new();
        let mut new_times = Vec::new();
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BLOCKS)?;
            let mut tip_height = self.height();
            let mut tip_hash = self.tip_hash();
            for b in blocks {
                let h = b.hash();
                if b.height <= tip_height && new_hashes.is_empty() {
                    if self.hash_at(b.height) == Some(h) {
                        continue;
                    }
                    return Err(ChainError::InvalidBlock {
                        height: b.height,
                        reason: "conflicts with a stored block (a reorg is needed)".into(),
                    });
                }
                if !b.extends(tip_height, &tip_hash) {
                    return Err(ChainError::InvalidBlock {
                        height: b.height,
                        reason: format!("does not link to block {tip_height}"),
                    });
                }
                table.insert(b.height, b.encode().as_slice())?;
                tip_height = b.height;
                tip_hash = h;
                new_hashes.push(h);
                new_times.push(b.timestamp_ms);
            }
        }
        if new_hashes.is_empty() {
            tx.abort().map_err(redb::Error::from)?;
            return Ok(0);
        }
        tx.commit()?;
        let added = new_hashes.len();
        self.hashes.extend(new_hashes);
        self.timestamps.extend(new_times);
        Ok(added)
    }

    /// Switches branches in one transaction: drops every block above `ancestor`, then appends
    /// `blocks`, which must start at `ancestor + 1` and link to the block at `ancestor`. Returns
    /// how many blocks were dropped. Genesis can never be dropped. On error nothing changes.
    pub fn reorg(&mut self, ancestor: u64, blocks: &[Block]) -> Result<u64, ChainError> {
        let tip = self.height();
        if ancestor > tip {
            return Err(ChainError::BadReorg { ancestor, tip });
        }
        let mut new_hashes = Vec::with_capacity(blocks.len());
        let mut new_times = Vec::with_capacity(blocks.len());
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BLOCKS)?;
            for h in (ancestor + 1..=tip).rev() {
                table.remove(h)?;
            }
            let (mut height, mut hash) = (ancestor, self.hashes[ancestor as usize]);
            for b in blocks {
                if !b.extends(height, &hash) {
                    return Err(ChainError::InvalidBlock {
                        height: b.height,
                        reason: format!("does not link to block {height} of the new branch"),
                    });
                }
                table.insert(b.height, b.encode().as_slice())?;
                height = b.height;
                hash = b.hash();
                new_hashes.push(hash);
                new_times.push(b.timestamp_ms);
            }
        }
        tx.commit()?;
        self.hashes.truncate(ancestor as usize + 1);
        self.hashes.extend(new_hashes);
        self.timestamps.truncate(ancestor as usize + 1);
        self.timestamps.extend(new_times);
        Ok(tip - ancestor)
    }

    /// The address book store on this database (its own table, `addr_book`): hand it to the
    /// network before the store moves to its writer.
    pub fn addr_store(&self) -> crate::addr_store::RedbAddrStore {
        crate::addr_store::RedbAddrStore::new(self.db.clone())
    }

    /// Stores (or replaces) a ban, durably, in one transaction.
    pub fn save_ban(&self, record: &crate::bans::BanRecord) -> Result<(), ChainError> {
        let bytes = record
            .encode()
            .map_err(|e| ChainError::Decode(e.to_string()))?;
        let tx = self.db.begin_write()?;
        tx.open_table(BANS)?
            .insert(record.ip.to_string().as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes the bans of `ips`, durably, in one transaction.
    pub fn delete_bans(&self, ips: &[std::net::IpAddr]) -> Result<(), ChainError> {
        if ips.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BANS)?;
            for ip in ips {
                table.remove(ip.to_string().as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored ban (expired ones included; undecodable records are skipped and logged).
    pub fn load_bans(&self) -> Result<Vec<crate::bans::BanRecord>, ChainError> {
        let tx = self.db.begin_read().map_err(redb::Error::from)?;
        let table = match tx.open_table(BANS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.range::<&str>(..)? {
            let (k, v) = entry?;
            match crate::bans::BanRecord::decode(v.value()) {
                Ok(r) => out.push(r),
                Err(e) => log::warn!("ban record {} undecodable ({e}); ignored", k.value()),
            }
        }
        Ok(out)
    }

    /// Drops every block above `height` (never genesis). Returns how many were dropped.
    pub fn truncate(&mut self, height: u64) -> Result<u64, ChainError> {
        self.reorg(height.min(self.height()), &[])
    }

    /// Deletes every record at or above `height` (used to repair at open).
    fn delete_from(&mut self, height: u64) -> Result<(), ChainError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BLOCKS)?;
            let doomed: Vec<u64> = table
                .range(height..)?
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for h in doomed {
                table.remove(h)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Reads the whole chain in height order. Returns the hashes and timestamps of the longest valid
/// prefix and, if a record broke the chain, its height and what was wrong.
#[allow(clippy::type_complexity)]
fn verify(
    db: &Database,
    genesis: &Block,
) -> Result<(Vec<BlockHash>, Vec<u64>, Option<(u64, String)>), ChainError> {
    let tx = db.begin_read().map_err(redb::Error::from)?;
    let table = tx.open_table(BLOCKS)?;
    let mut hashes: Vec<BlockHash> = Vec::with_capacity(table.len()? as usize);
    let mut times: Vec<u64> = Vec::with_capacity(hashes.capacity());
    for entry in table.range(0u64..)? {
        let (k, v) = entry?;
        let height = k.value();
        let block = match Block::decode(v.value()) {
            Ok(b) => b,
            Err(e) => return Ok((hashes, times, Some((height, e.to_string())))),
        };
        let problem = if height != hashes.len() as u64 {
            Some(format!("gap: expected height {}", hashes.len()))
        } else if block.height != height {
            Some(format!("record claims height {}", block.height))
        } else if height == 0 && block != *genesis {
            Some("not this network's genesis".to_string())
        } else if height > 0 && block.prev != hashes[height as usize - 1] {
            Some("prev hash does not match the previous block".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            let at = height.min(hashes.len() as u64);
            return Ok((hashes, times, Some((at, p))));
        }
        hashes.push(block.hash());
        times.push(block.timestamp_ms);
    }
    Ok((hashes, times, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::produce;

    #[test]
    fn a_corrupt_record_truncates_to_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ChainStore::open(dir.path(), "t").unwrap();
            produce(
                &mut s,
                &crate::chain::ProducerKey::from_seed([1; 32]),
                10,
                16,
            )
            .unwrap();
            // Overwrite block 6 with one whose prev is wrong, as a bad disk would.
            let mut b = s.block(6).unwrap().unwrap();
            b.prev = [9; 32];
            let tx = s.db.begin_write().unwrap();
            tx.open_table(BLOCKS)
                .unwrap()
                .insert(6u64, b.encode().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let s = ChainStore::open(dir.path(), "t").unwrap();
        assert_eq!(s.height(), 5);
        assert_eq!(s.repaired_from(), Some(6));
        assert!(
            s.block(7).unwrap().is_none(),
            "records above the break are gone"
        );
        drop(s);
        let s = ChainStore::open(dir.path(), "t").unwrap();
        assert_eq!((s.height(), s.repaired_from()), (5, None));
    }

    #[test]
    fn an_undecodable_record_truncates() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ChainStore::open(dir.path(), "t").unwrap();
            produce(
                &mut s,
                &crate::chain::ProducerKey::from_seed([1; 32]),
                4,
                16,
            )
            .unwrap();
            let tx = s.db.begin_write().unwrap();
            tx.open_table(BLOCKS)
                .unwrap()
                .insert(3u64, &b"short"[..])
                .unwrap();
            tx.commit().unwrap();
        }
        let s = ChainStore::open(dir.path(), "t").unwrap();
        assert_eq!(s.height(), 2);
    }
}
