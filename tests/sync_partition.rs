//! Four nodes split 2|2: each pair builds its own branch, then the split heals and all four
//! converge on the longer branch. At equal length each side keeps the tip it had (a lower tip
//! hash does not win: peers could grind one), until one side grows.

mod sync_support;

use std::time::Duration;

use sync_support::*;

/// Starts four nodes at 127.0.2.`base`.. connected as {0,1} and {2,3}; node 0 produces `left`
/// blocks and node 2 `right` blocks; then connects 1-2 and 3-0 and returns the common tip.
async fn split_then_heal(base: u8, left: u64, right: u64) -> ([u8; 32], u64, Vec<Node>) {
    assert_ne!(left, right, "equal lengths do not converge by themselves");
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
    let (height, tip) = if left > right {
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
async fn at_equal_length_the_lower_tip_hash_does_not_replace_a_tip() {
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(Node::start(41 + i, 0, sync_config()).await);
    }
    nodes[1].node.net.connect(nodes[0].addr());
    nodes[3].node.net.connect(nodes[2].addr());
    for _ in 0..6 {
        nodes[0].node.produce().await.unwrap();
        nodes[2].node.produce().await.unwrap();
    }
    let (l, r) = (nodes[0].status().await, nodes[2].status().await);
    wait_tip(&nodes[1], 6, l.tip, Duration::from_secs(10)).await;
    wait_tip(&nodes[3], 6, r.tip, Duration::from_secs(10)).await;
    // The side with the higher tip hash would have switched under a "lower hash wins" rule.
    let high = if l.tip > r.tip { 0 } else { 2 };
    nodes[1].node.net.connect(nodes[2].addr());
    nodes[3].node.net.connect(nodes[0].addr());
    for n in &nodes {
        wait_for(
            "each node to see both sides",
            Duration::from_secs(10),
            || async { (n.status().await.peers == 2).then_some(()) },
        )
        .await;
    }
    // The high side grows by one block on its own tip: everyone converges on it, and the high
    // side never left its branch.
    let produced = nodes[high].node.produce().await.unwrap();
    for n in &nodes {
        wait_tip(n, 7, produced.hash, Duration::from_secs(15)).await;
    }
    for (i, n) in nodes.iter().enumerate() {
        let s = n.status().await;
        assert_eq!(s.misbehaving, 0);
        let expected = if i == high || i == high + 1 { 0 } else { 1 };
        assert_eq!(s.reorgs, expected, "node {i} (high side {high})");
    }
    for n in &nodes {
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
