//! Four nodes, one of which withholds every answer (`SyncConfig::serve = false`) and has the
//! lowest IP, so it is the first sync source picked: the fresh node's requests to it stall,
//! are re-sent to the others after the stall timeout, and sync completes.

mod sync_support;

use std::time::{Duration, Instant};

use peerlink::sync::SyncConfig;
use sync_support::*;

#[actix::test]
async fn sync_completes_from_the_others_when_one_peer_withholds() {
    let seed = chain_dir(2_000);
    let (dir_w, dir_h1, dir_h2) = (
        copy_chain(seed.path()),
        copy_chain(seed.path()),
        copy_chain(seed.path()),
    );
    let withholder = Node::start_in(
        dir_w,
        11,
        SyncConfig {
            serve: false,
            ..sync_config()
        },
    )
    .await;
    let h1 = Node::start_in(dir_h1, 12, sync_config()).await;
    let h2 = Node::start_in(dir_h2, 13, sync_config()).await;
    let target = h1.status().await;
    assert_eq!(withholder.status().await.tip, target.tip);

    let fresh = Node::start(14, 0, sync_config()).await;
    for n in [&withholder, &h1, &h2] {
        fresh.node.net.connect(n.addr());
    }
    let started = Instant::now();
    // Bound: a few stall timeouts (600 ms) plus the transfer.
    let s = wait_tip(&fresh, 2_000, target.tip, Duration::from_secs(20)).await;
    eprintln!(
        "synced with a withholding peer in {:?}, {} stalls",
        started.elapsed(),
        s.stalls
    );
    assert!(s.stalls >= 1, "the withholder was asked and stalled");
    assert_eq!(s.misbehaving, 0, "stalling is not misbehaviour");
    for n in [&fresh, &withholder, &h1, &h2] {
        n.node.shutdown().await;
    }
}
