//! Two nodes, 5,000 blocks: a fresh node syncs the whole chain from one peer over real sockets
//! and ends on the same tip; its store reopens verified at that tip.

mod sync_support;

use std::time::{Duration, Instant};

use peerlink::chain::ChainStore;
use peerlink::sync::SyncState;
use sync_support::*;

const BLOCKS: u64 = 5_000;

#[actix::test]
async fn a_fresh_node_reaches_the_same_tip() {
    let a = Node::start(2, BLOCKS, sync_config()).await;
    let target = a.status().await;
    assert_eq!(target.height, BLOCKS);
    let b = Node::start(3, 0, sync_config()).await;
    let started = Instant::now();
    b.node.net.connect(a.addr());
    let s = wait_tip(&b, BLOCKS, target.tip, Duration::from_secs(60)).await;
    let took = started.elapsed();
    eprintln!(
        "synced {BLOCKS} blocks in {took:?}: {:.0} blocks/s",
        BLOCKS as f64 / took.as_secs_f64()
    );
    assert_eq!(s.blocks_synced, BLOCKS);
    assert_eq!(s.misbehaving, 0);
    // The source's blocks moved b's tip, so b marked it useful (what eviction protects);
    // b gave a nothing, so a never marked b.
    let a_at_b = b.node.net.peers().await;
    let a_at_b = a_at_b
        .iter()
        .find(|p| p.ip == a.addr().ip())
        .expect("a is b's peer");
    assert!(a_at_b.useful_ago.is_some(), "b marked a useful: {a_at_b:?}");
    let b_at_a = a.node.net.peers().await;
    let b_at_a = b_at_a
        .iter()
        .find(|p| p.ip == b.addr().ip())
        .expect("b is a's peer");
    assert_eq!(b_at_a.useful_ago, None, "a never marked b useful");
    wait_for("b reports synced", Duration::from_secs(5), || async {
        (b.status().await.state == SyncState::Synced).then_some(())
    })
    .await;
    b.node.shutdown().await;
    a.node.shutdown().await;
    let store = ChainStore::open(b.dir.path(), params()).expect("reopens");
    assert_eq!((store.height(), store.tip_hash()), (BLOCKS, target.tip));
}
