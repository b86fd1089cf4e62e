//! The chain store on real redb files: reopen verifies and resumes, the network is checked,
//! appends are idempotent (no block stored twice), reorgs are atomic, and a writer killed with
//! SIGKILL at arbitrary moments always leaves a valid prefix that the next open resumes from.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use peerlink::chain::{
    genesis_hash, produce as produce_with, random_block as random_block_with, Block, ChainError,
    ChainStore, ProducerKey,
};

const NET: &str = "storetest";

/// The key that signs this suite's blocks (the store does not check signatures).
fn key() -> ProducerKey {
    ProducerKey::from_seed([0x11; 32])
}

fn produce(s: &mut ChainStore, n: u64, bytes: usize) -> Result<u64, ChainError> {
    produce_with(s, &key(), n, bytes)
}

fn random_block(s: &ChainStore, bytes: usize) -> Block {
    random_block_with(s, &key(), bytes)
}

#[test]
fn reopen_verifies_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let tip = {
        let mut s = ChainStore::open(dir.path(), NET).unwrap();
        assert_eq!(s.height(), 0);
        assert_eq!(s.tip_hash(), genesis_hash(NET));
        produce(&mut s, 300, 100).unwrap();
        s.tip_hash()
    };
    let mut s = ChainStore::open(dir.path(), NET).unwrap();
    assert_eq!(
        (s.height(), s.tip_hash(), s.repaired_from()),
        (300, tip, None)
    );
    // Resumes: the next block links to the reopened tip.
    let b = random_block(&s, 10);
    assert_eq!(b.prev, tip);
    s.append(&[b]).unwrap();
    assert_eq!(s.height(), 301);
    let blocks = s.blocks(1, 1_000, usize::MAX).unwrap();
    assert_eq!(blocks.len(), 301);
    assert!(blocks.windows(2).all(|w| w[1].prev == w[0].hash()));
}

#[test]
fn another_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(ChainStore::open(dir.path(), NET).unwrap());
    match ChainStore::open(dir.path(), "other") {
        Err(ChainError::WrongNetwork { stored, wanted }) => {
            assert_eq!((stored.as_str(), wanted.as_str()), (NET, "other"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_block_is_stored_twice_and_bad_links_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ChainStore::open(dir.path(), NET).unwrap();
    produce(&mut s, 10, 8).unwrap();
    let again = s.blocks(5, 6, usize::MAX).unwrap();
    assert_eq!(s.append(&again).unwrap(), 0, "already stored: skipped");
    let mut next = random_block(&s, 8);
    let mut bad = random_block(&s, 8);
    bad.prev = [1; 32];
    assert!(s.append(&[bad]).is_err());
    assert_eq!(s.height(), 10);
    // A batch whose second block is bad writes nothing at all.
    let mut second = next.clone();
    second.height += 1;
    second.prev = [2; 32];
    assert!(s.append(&[next.clone(), second]).is_err());
    assert_eq!(s.height(), 10);
    next.timestamp_ms += 1;
    assert_eq!(s.append(&[next]).unwrap(), 1);
    // A conflicting block at a stored height needs a reorg.
    let conflicting = Block {
        payload: vec![9],
        ..s.block(3).unwrap().unwrap()
    };
    assert!(matches!(
        s.append(&[conflicting]),
        Err(ChainError::InvalidBlock { height: 3, .. })
    ));
}

#[test]
fn reorg_switches_branches_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ChainStore::open(dir.path(), NET).unwrap();
    produce(&mut s, 20, 8).unwrap();
    let ancestor_hash = s.hash_at(15).unwrap();
    let mut branch = Vec::new();
    let mut prev = ancestor_hash;
    for h in 16..=22 {
        let b = Block::signed(h, prev, 7, vec![0xbb], &key());
        prev = b.hash();
        branch.push(b);
    }
    // A broken branch changes nothing.
    let mut broken = branch.clone();
    broken[3].prev = [0; 32];
    assert!(s.reorg(15, &broken).is_err());
    assert_eq!(s.height(), 20);
    assert_eq!(s.reorg(15, &branch).unwrap(), 5);
    assert_eq!((s.height(), s.tip_hash()), (22, prev));
    drop(s);
    let s = ChainStore::open(dir.path(), NET).unwrap();
    assert_eq!(
        (s.height(), s.tip_hash(), s.repaired_from()),
        (22, prev, None)
    );
    assert_eq!(s.block(16).unwrap().unwrap().payload, vec![0xbb]);
}

/// Appends batches of blocks, checking each commit. Also the child of
/// [`a_writer_killed_with_sigkill_leaves_a_valid_prefix`]: with `PEERLINK_CHAIN_CHILD_DIR` set it
/// writes into that directory, printing each committed height, until it is killed.
#[test]
fn writer_appends_batches() {
    let child_dir = std::env::var("PEERLINK_CHAIN_CHILD_DIR").ok();
    let tmp = tempfile::tempdir().unwrap();
    let dir = child_dir
        .as_deref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let mut s = ChainStore::open(&dir, NET).unwrap();
    let batches = if child_dir.is_some() { u64::MAX } else { 3 };
    for _ in 0..batches {
        let before = s.height();
        produce(&mut s, 37, 200).unwrap();
        assert_eq!(s.height(), before + 37);
        println!("height {}", s.height());
    }
}

#[test]
fn a_writer_killed_with_sigkill_leaves_a_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    for round in 0..4 {
        let mut child = Command::new(&exe)
            .args([
                "writer_appends_batches",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PEERLINK_CHAIN_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill at a different point each round (after 2, 5, 8, 11 committed batches).
        let want = 2 + 3 * round;
        let mut seen = 0;
        let mut committed = 0;
        while seen < want {
            let line = lines.next().expect("child alive").unwrap();
            if let Some(h) = line.strip_prefix("height ") {
                committed = h.parse().unwrap();
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let s = ChainStore::open(dir.path(), NET).expect("reopens after kill -9");
        assert_eq!(
            s.repaired_from(),
            None,
            "nothing to repair: commits are atomic"
        );
        assert!(s.height() >= committed, "every reported commit survived");
        assert!(s.height() > last);
        assert_eq!(s.height() % 37, 0, "whole batches only: {}", s.height());
        let blocks = s.blocks(1, usize::MAX, usize::MAX).unwrap();
        assert_eq!(blocks.len() as u64, s.height());
        assert!(blocks.windows(2).all(|w| w[1].prev == w[0].hash()));
        last = s.height();
    }
}
