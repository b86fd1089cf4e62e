//! Chain commits off the sync actor's thread: [`ChainWriter`] is the actor that owns the
//! [`ChainStore`] on an arbiter of its own and commits, in order, every change the sync actor
//! decided; [`ChainView`] is what the sync actor holds instead of the store: the hash index of
//! the chain as decided (the engine's [`Chain`]), which sends each change to the writer and
//! counts the bytes still on their way to disk.
//!
//! So no handler of the sync actor waits for an fsync. The chain on disk is always a prefix of
//! what was decided, one redb transaction per change (a kill -9 leaves the last committed chain,
//! as before). After each commit the writer tells the request server ([`IndexUpdate`]), which
//! therefore serves only committed blocks, and the sync actor ([`Committed`]), which releases the
//! bytes from the download window. A failed commit (a full disk) hands the sync actor the hashes
//! of the chain actually stored; the view resets to them and sync resumes from there.
//!
//! The writer also persists the node's bans (the `bans` table of the same redb file): the sync
//! actor keeps the ban book in memory and sends each save and delete here, in order with the
//! commits, so the store keeps one owner. Bans are loaded before the writer starts.

use std::net::IpAddr;

use actix::prelude::*;

use crate::bans::BanRecord;
use crate::chain::produce::now_ms;
use crate::chain::{Block, BlockHash, Chain, ChainStore, IndexUpdate, ProducerKey};

/// Owns the store. Start it with [`ChainWriter::start_on`].
pub struct ChainWriter {
    store: Option<ChainStore>,
    follower: Recipient<IndexUpdate>,
}

/// Commit a change: drop every block above `ancestor`, append `blocks`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Commit {
    /// Height below which nothing changes.
    pub ancestor: u64,
    /// The new blocks above it.
    pub blocks: Vec<Block>,
    /// Wire bytes of `blocks` (returned in [`Committed`]).
    pub bytes: u64,
    /// Who hears of the outcome.
    pub done_to: Option<Recipient<Committed>>,
    /// Sequence number of this commit (1, 2, ... per view), echoed in [`Committed`].
    pub seq: u64,
}

/// Outcome of a [`Commit`], sent to its `done_to`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Committed {
    /// The commit's bytes, now off the window.
    pub bytes: u64,
    /// `None` on success; on failure the hashes and timestamps of the chain actually stored.
    pub failed: Option<(Vec<BlockHash>, Vec<u64>)>,
    /// Height and hash of the stored tip after this commit.
    pub tip: (u64, BlockHash),
    /// The commit's sequence number.
    pub seq: u64,
}

/// Persist a ban (and drop the record it evicted from the book, if any).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveBan {
    /// The ban.
    pub record: BanRecord,
    /// The IP whose ban the book dropped to make room.
    pub evicted: Option<IpAddr>,
}

/// Delete the stored bans of these IPs (lifted or expired).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteBans(pub Vec<IpAddr>);

/// Close the store (after every commit queued before this message) and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStore;

impl ChainWriter {
    /// Starts the writer of `store` on `arbiter`; `follower` hears of every commit.
    pub fn start_on(
        arbiter: &ArbiterHandle,
        store: ChainStore,
        follower: Recipient<IndexUpdate>,
    ) -> Addr<Self> {
        ChainWriter::start_in_arbiter(arbiter, move |_| ChainWriter {
            store: Some(store),
            follower,
        })
    }
}

impl Actor for ChainWriter {
    type Context = Context<Self>;
}

impl Handler<Commit> for ChainWriter {
    type Result = ();

    fn handle(&mut self, c: Commit, _: &mut Context<Self>) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let result = if c.ancestor == store.height() {
            store.append(&c.blocks).map(|_| ())
        } else {
            store.reorg(c.ancestor, &c.blocks).map(|_| ())
        };
        let failed = match result {
            Ok(()) => {
                self.follower.do_send(IndexUpdate {
                    ancestor: c.ancestor,
                    hashes: c.blocks.iter().map(Block::hash).collect(),
                });
                None
            }
            Err(e) => {
                log::error!(
                    "chain: cannot commit {} blocks above {}: {e}",
                    c.blocks.len(),
                    c.ancestor
                );
                Some(stored_index(store))
            }
        };
        if let Some(to) = c.done_to {
            to.do_send(Committed {
                bytes: c.bytes,
                failed,
                tip: (store.height(), store.tip_hash()),
                seq: c.seq,
            });
        }
    }
}

impl Handler<SaveBan> for ChainWriter {
    type Result = ();

    fn handle(&mut self, msg: SaveBan, _: &mut Context<Self>) {
        let Some(store) = self.store.as_ref() else {
            return;
        };
        let mut result = store.save_ban(&msg.record);
        if let Some(evicted) = msg.evicted {
            result = result.and_then(|_| store.delete_bans(&[evicted]));
        }
        if let Err(e) = result {
            log::error!("cannot persist the ban of {}: {e}", msg.record.ip);
        }
    }
}

impl Handler<DeleteBans> for ChainWriter {
    type Result = ();

    fn handle(&mut self, msg: DeleteBans, _: &mut Context<Self>) {
        let Some(store) = self.store.as_ref() else {
            return;
        };
        if let Err(e) = store.delete_bans(&msg.0) {
            log::error!("cannot delete {} stored ban(s): {e}", msg.0.len());
        }
    }
}

/// Hashes and timestamps of every stored block, by height.
fn stored_index(store: &ChainStore) -> (Vec<BlockHash>, Vec<u64>) {
    let hashes = store.hashes(0, store.height() as usize + 1).to_vec();
    let timestamps = (0..=store.height())
        .map(|h| store.timestamp_at(h).unwrap_or(0))
        .collect();
    (hashes, timestamps)
}

impl Handler<CloseStore> for ChainWriter {
    type Result = ();

    fn handle(&mut self, _: CloseStore, ctx: &mut Context<Self>) {
        self.store = None;
        ctx.stop();
    }
}

/// The chain as the sync actor decided it; see the module docs.
pub struct ChainView {
    hashes: Vec<BlockHash>,
    /// Timestamp of each block of `hashes` (for the validity rule's timestamp bound).
    timestamps: Vec<u64>,
    writer: Addr<ChainWriter>,
    done_to: Option<Recipient<Committed>>,
    pending_bytes: u64,
    /// The stored tip as last reported by the writer.
    committed: (u64, BlockHash),
    /// Sequence number of the last commit sent, and of the last one done.
    sent_seq: u64,
    done_seq: u64,
}

impl std::fmt::Debug for ChainView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainView")
            .field("height", &self.height())
            .field("pending_bytes", &self.pending_bytes)
            .finish()
    }
}

impl ChainView {
    /// Starts the writer of `store` on `arbiter` (`follower` hears of every commit) and
    /// returns the view of its chain.
    pub fn start(
        arbiter: &ArbiterHandle,
        store: ChainStore,
        follower: Recipient<IndexUpdate>,
    ) -> Self {
        let (hashes, timestamps) = stored_index(&store);
        Self {
            timestamps,
            committed: (store.height(), store.tip_hash()),
            sent_seq: 0,
            done_seq: 0,
            hashes,
            writer: ChainWriter::start_on(arbiter, store, follower),
            done_to: None,
            pending_bytes: 0,
        }
    }

    /// Where commit outcomes go (the sync actor, once started).
    pub fn set_done_to(&mut self, to: Recipient<Committed>) {
        self.done_to = Some(to);
    }

    /// Height of the tip.
    pub fn height(&self) -> u64 {
        self.hashes.len().saturating_sub(1) as u64
    }

    /// Hash of the tip.
    pub fn tip_hash(&self) -> BlockHash {
        self.hashes.last().copied().unwrap_or([0; 32])
    }

    /// Bytes of applied blocks not yet committed.
    pub fn pending_bytes_held(&self) -> u64 {
        self.pending_bytes
    }

    /// Sequence number of the last commit sent to the writer.
    pub fn sent_seq(&self) -> u64 {
        self.sent_seq
    }

    /// Sequence number of the last commit the writer reported done.
    pub fn done_seq(&self) -> u64 {
        self.done_seq
    }

    /// Height and hash of the tip on disk (what peers can be served), as last reported.
    pub fn committed_tip(&self) -> (u64, BlockHash) {
        self.committed
    }

    /// A commit finished; `true` if it failed and the view was reset to the stored chain.
    pub fn committed(&mut self, c: Committed) -> bool {
        self.pending_bytes = self.pending_bytes.saturating_sub(c.bytes);
        self.committed = c.tip;
        self.done_seq = self.done_seq.max(c.seq);
        match c.failed {
            Some((hashes, timestamps)) if !hashes.is_empty() => {
                self.hashes = hashes;
                self.timestamps = timestamps;
                true
            }
            _ => false,
        }
    }

    /// Appends a block produced here on top of the tip, signed by `key` (its timestamp is now,
    /// or the parent's if our clock is behind it).
    pub fn produce(&mut self, key: &ProducerKey, payload: Vec<u8>) -> Result<Block, String> {
        let parent_ts = self.timestamp_at(self.height()).unwrap_or(0);
        let block = Block::signed(
            self.height() + 1,
            self.tip_hash(),
            now_ms().max(parent_ts),
            payload,
            key,
        );
        self.apply(self.height(), std::slice::from_ref(&block))?;
        Ok(block)
    }

    /// Timestamp of the block at `height`.
    pub fn timestamp_at(&self, height: u64) -> Option<u64> {
        self.timestamps.get(usize::try_from(height).ok()?).copied()
    }

    /// Persists `record` (after the commits sent before it), dropping `evicted`'s stored ban.
    pub fn save_ban(&self, record: BanRecord, evicted: Option<IpAddr>) {
        self.writer.do_send(SaveBan { record, evicted });
    }

    /// Deletes the stored bans of `ips`.
    pub fn delete_bans(&self, ips: Vec<IpAddr>) {
        if !ips.is_empty() {
            self.writer.do_send(DeleteBans(ips));
        }
    }

    /// Closes the store once every queued commit is done.
    pub async fn close(&self) {
        let _ = self.writer.send(CloseStore).await;
    }
}

impl Chain for ChainView {
    fn height(&self) -> u64 {
        ChainView::height(self)
    }
    fn tip_hash(&self) -> BlockHash {
        ChainView::tip_hash(self)
    }
    fn hash_at(&self, height: u64) -> Option<BlockHash> {
        self.hashes.get(usize::try_from(height).ok()?).copied()
    }
    fn timestamp_at(&self, height: u64) -> Option<u64> {
        ChainView::timestamp_at(self, height)
    }
    fn apply(&mut self, ancestor: u64, blocks: &[Block]) -> Result<(), String> {
        let Some(mut hash) = self.hash_at(ancestor) else {
            return Err(format!("no block at {ancestor}"));
        };
        let mut height = ancestor;
        let mut new = Vec::with_capacity(blocks.len());
        let mut new_ts = Vec::with_capacity(blocks.len());
        for b in blocks {
            if !b.extends(height, &hash) {
                return Err(format!(
                    "block {} does not link to block {height}",
                    b.height
                ));
            }
            height = b.height;
            hash = b.hash();
            new.push(hash);
            new_ts.push(b.timestamp_ms);
        }
        self.hashes.truncate(ancestor as usize + 1);
        self.hashes.extend(new);
        self.timestamps.truncate(ancestor as usize + 1);
        self.timestamps.extend(new_ts);
        let bytes = blocks.iter().map(|b| b.wire_size() as u64).sum();
        self.pending_bytes += bytes;
        self.sent_seq += 1;
        self.writer.do_send(Commit {
            seq: self.sent_seq,
            ancestor,
            blocks: blocks.to_vec(),
            bytes,
            done_to: self.done_to.clone(),
        });
        Ok(())
    }
    fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }
}
