//! Persistence of the address book: the [`AddrStore`] trait an application implements on its
//! own storage (the crate knows no database), the [`StoredBook`] it keeps (the book's snapshot
//! with its bucket secret, plus the anchors), and the store thread that runs every load and save
//! off the control plane, so a slow disk never stalls the registry, acceptor or connector.
//!
//! The discovery actor takes a snapshot on the control thread (a copy of the entries: about
//! 0.2 ms for 5,000 of them) and hands it to the store thread, which encodes and writes it. At
//! most one save is in flight; a periodic save that comes due while the previous one still runs
//! is skipped (the next one carries newer data anyway). `Network::shutdown` waits for a final
//! save, bounded by [`FINAL_SAVE_TIMEOUT`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::addr_book::AddrBookSnapshot;

pub use crate::constants::DEFAULT_ADDR_BOOK_SAVE_INTERVAL;

/// Longest wait for the final save at shutdown: a save of 5,000 entries takes milliseconds, and
/// this plus the close flush (2 s) and the shutdown grace (0.5 s) stays within the node's 3 s
/// network shutdown bound.
pub const FINAL_SAVE_TIMEOUT: Duration = Duration::from_millis(500);

/// What is persisted: the book (entries and bucket secret) and the anchors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBook {
    /// The book's entries and its bucket secret (the secret must survive restarts, or every
    /// address would land in another bucket).
    pub book: AddrBookSnapshot,
    /// The outbound peers to dial first at the next start (the longest-connected outbound
    /// peers at save time, oldest first; configured peers and seeds are never anchors).
    pub anchors: Vec<SocketAddr>,
}

/// Why a load or a save failed (the store's own error, boxed: the crate knows no database).
pub type AddrStoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where the address book lives between runs. Implemented by the application on its storage
/// (the peerlink node: a table of its redb file). Called on a thread of its own, never on an
/// actor's thread, one call at a time.
pub trait AddrStore: Send + 'static {
    /// The stored book, `Ok(None)` when nothing was ever stored. An `Err` (unreadable, corrupt,
    /// of an unknown version) is logged as a warning and the node starts with an empty book and
    /// a fresh secret; the next save overwrites the bad record.
    fn load(&mut self) -> Result<Option<StoredBook>, AddrStoreError>;

    /// Stores `book` durably, replacing what was stored (a crash during the save leaves the
    /// previous record or the new one, never a mix).
    fn save(&mut self, book: &StoredBook) -> Result<(), AddrStoreError>;
}

/// How a save ended: how many entries and anchors it wrote and how long it took, or why it
/// failed.
pub(crate) type SaveResult = Result<(usize, usize, Duration), String>;

enum Job {
    Save(StoredBook, oneshot::Sender<SaveResult>),
    /// The last save: the store is dropped (releasing the application's database) before the
    /// answer is sent, and the thread ends.
    Finish(StoredBook, oneshot::Sender<SaveResult>),
}

/// The thread that owns the application's [`AddrStore`]. Dropping the handle ends the thread
/// once its queued jobs are done.
pub(crate) struct StoreThread {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl StoreThread {
    /// Starts the thread; it loads the stored book first. The second value resolves to the
    /// loaded book (`None` when nothing usable was stored; a failure is logged here).
    pub(crate) fn start(
        mut store: Box<dyn AddrStore>,
    ) -> std::io::Result<(Self, oneshot::Receiver<Option<StoredBook>>)> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let (loaded_tx, loaded) = oneshot::channel();
        std::thread::Builder::new()
            .name("addr-store".into())
            .spawn(move || {
                let book = match store.load() {
                    Ok(book) => book,
                    Err(e) => {
                        log::warn!(
                            "address book store unreadable ({e}); starting with an empty book"
                        );
                        None
                    }
                };
                let _ = loaded_tx.send(book);
                let save = |store: &mut Box<dyn AddrStore>, book: &StoredBook| -> SaveResult {
                    let started = Instant::now();
                    store
                        .save(book)
                        .map(|()| {
                            (
                                book.book.entries.len(),
                                book.anchors.len(),
                                started.elapsed(),
                            )
                        })
                        .map_err(|e| e.to_string())
                };
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Save(book, done) => {
                            let _ = done.send(save(&mut store, &book));
                        }
                        Job::Finish(book, done) => {
                            let result = save(&mut store, &book);
                            drop(store);
                            let _ = done.send(result);
                            return;
                        }
                    }
                }
            })?;
        Ok((Self { jobs }, loaded))
    }

    /// Queues a save; the receiver resolves when it is done (or fails at once if the thread is
    /// gone).
    pub(crate) fn save(&self, book: StoredBook) -> oneshot::Receiver<SaveResult> {
        self.send(|tx| Job::Save(book, tx))
    }

    /// Queues the last save; the receiver resolves once it is done and the store is dropped
    /// (the application may reopen its database then).
    pub(crate) fn finish(self, book: StoredBook) -> oneshot::Receiver<SaveResult> {
        self.send(|tx| Job::Finish(book, tx))
    }

    fn send(
        &self,
        job: impl FnOnce(oneshot::Sender<SaveResult>) -> Job,
    ) -> oneshot::Receiver<SaveResult> {
        let (tx, rx) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError(Job::Save(_, tx) | Job::Finish(_, tx))) =
            self.jobs.send(job(tx))
        {
            let _ = tx.send(Err("the address book store thread has stopped".into()));
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::addr_book::StoredAddr;
    use std::sync::{Arc, Mutex};

    /// A store in memory (the trait's contract, without a database), optionally broken.
    struct MemStore {
        cell: Arc<Mutex<Option<StoredBook>>>,
        broken: bool,
    }

    impl AddrStore for MemStore {
        fn load(&mut self) -> Result<Option<StoredBook>, AddrStoreError> {
            if self.broken {
                return Err("bad record".into());
            }
            Ok(self.cell.lock().unwrap().clone())
        }
        fn save(&mut self, book: &StoredBook) -> Result<(), AddrStoreError> {
            *self.cell.lock().unwrap() = Some(book.clone());
            Ok(())
        }
    }

    fn sample() -> StoredBook {
        StoredBook {
            book: AddrBookSnapshot {
                secret: [7; 32],
                entries: vec![StoredAddr {
                    addr: "8.8.8.8:7700".parse().unwrap(),
                    source: "9.9.9.9".parse().unwrap(),
                    last_seen: 1,
                    last_success: 0,
                    failures: 0,
                    tried: false,
                }],
            },
            anchors: vec!["1.1.1.1:7700".parse().unwrap()],
        }
    }

    #[tokio::test]
    async fn saves_run_on_the_store_thread_and_load_comes_first() {
        let cell = Arc::new(Mutex::new(Some(sample())));
        let (thread, loaded) = StoreThread::start(Box::new(MemStore {
            cell: cell.clone(),
            broken: false,
        }))
        .unwrap();
        assert_eq!(loaded.await.unwrap(), Some(sample()));
        let mut next = sample();
        next.anchors.clear();
        let (entries, anchors, _) = thread.save(next.clone()).await.unwrap().unwrap();
        assert_eq!((entries, anchors), (1, 0));
        assert_eq!(cell.lock().unwrap().clone(), Some(next));
        // The last save drops the store (here: its handle on the cell) before it answers.
        thread.finish(sample()).await.unwrap().unwrap();
        assert_eq!(Arc::strong_count(&cell), 1, "the store is dropped");
        assert_eq!(cell.lock().unwrap().clone(), Some(sample()));
    }

    /// What a save costs the control thread: the snapshot of a full book (the encoding and the
    /// write run on the store thread). Printed for the report; bounded loosely so that a
    /// regression to something quadratic fails even on a loaded machine.
    #[test]
    fn the_snapshot_of_a_full_book_is_cheap() {
        use crate::discovery::addr_book::{AddrBook, AddrBookConfig};
        use std::net::{IpAddr, Ipv4Addr};
        let mut book = AddrBook::new(AddrBookConfig::default(), [9; 32]);
        let now_ms = 1_800_000_000_000;
        let mut i = 0u32;
        while book.len() < 5_000 && i < 50_000 {
            // One address per /16 group, from 60 source groups.
            let ip = Ipv4Addr::new(11 + (i % 200) as u8, (i / 200 % 256) as u8, 1, 1);
            let src = IpAddr::V4(Ipv4Addr::new(30 + (i % 60) as u8, 0, 0, 1));
            let _ = book.add(
                SocketAddr::new(IpAddr::V4(ip), 7700),
                src,
                now_ms / 1000,
                now_ms,
            );
            if i % 4 == 0 {
                book.mark_good(SocketAddr::new(IpAddr::V4(ip), 7700), now_ms);
            }
            i += 1;
        }
        assert!(book.len() >= 4_000, "filled to {}", book.len());
        let t = Instant::now();
        let snap = book.snapshot();
        let took = t.elapsed();
        println!(
            "snapshot of {} entries ({} tried): {took:?}",
            snap.entries.len(),
            book.tried_len()
        );
        assert_eq!(snap.entries.len(), book.len());
        assert!(took < Duration::from_millis(100), "{took:?}");
    }

    #[tokio::test]
    async fn an_unreadable_store_gives_an_empty_start() {
        let (_thread, loaded) = StoreThread::start(Box::new(MemStore {
            cell: Arc::default(),
            broken: true,
        }))
        .unwrap();
        assert_eq!(loaded.await.unwrap(), None);
    }
}
