//! Four nodes split 2|2: each pair builds its own branch, then the split heals and all four
//! converge on one chain: the longer branch, or at equal length the one with the lower tip hash.

mod sync_support;

use std::time::Duration;

use sync_support::*;

/// Starts four nodes at 127.0.2.`base`.. connected as {0,1} and {2,3}; node 0 produces `left`
/// blocks and node 2 `right` blocks; then connects 1-2 and 3-0 and returns the common tip.
async fn split_then_heal(base: u8, left: u64, right: u64) -> ([u8; 32], u64, Vec<Node>) {
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(Node::start(base + i, 0, sync_config()).await);
    }
    nodes[1].node.net.connect(nodes[0].addr());
    nodes[3].node.net.connect(nodes[2].addr());
    for _ in 0..left {
        nodes[0].node.produce().await.unwrap();
    }
    for _ in 0..right {
        nodes[2].node.produce().await.unwrap();
    }
    let (l, r) = (nodes[0].status().await, nodes[2].status().await);
    assert_ne!(l.tip, r.tip);
    wait_tip(&nodes[1], left, l.tip, Duration::from_secs(10)).await;
    wait_tip(&nodes[3], right, r.tip, Duration::from_secs(10)).await;
    // Heal.
    nodes[1].node.net.connect(nodes[2].addr());
    nodes[3].node.net.connect(nodes[0].addr());
    let (height, tip) = if left > right || (left == right && l.tip < r.tip) {
        (left, l.tip)
    } else {
        (right, r.tip)
    };
    for n in &nodes {
        wait_tip(n, height, tip, Duration::from_secs(15)).await;
    }
    (tip, height, nodes)
}

#[actix::test]
async fn the_longer_branch_wins_after_healing() {
    let (_, _, nodes) = split_then_heal(31, 5, 8).await;
    let reorgs: u64 = futures_reorgs(&nodes).await;
    assert!(
        reorgs >= 2,
        "both nodes of the short side switched branches"
    );
    for n in &nodes {
        n.node.shutdown().await;
    }
}

#[actix::test]
async fn at_equal_length_the_lower_tip_hash_wins() {
    let (_, _, nodes) = split_then_heal(41, 6, 6).await;
    for n in &nodes {
        assert_eq!(n.status().await.misbehaving, 0);
        n.node.shutdown().await;
    }
}

async fn futures_reorgs(nodes: &[Node]) -> u64 {
    let mut total = 0;
    for n in nodes {
        total += n.status().await.reorgs;
    }
    total
}
