//! Scenario g: block sync between two complete in-process nodes (redb stores, sync actors,
//! networks on 127.0.120.x), 1 KiB blocks, measured twice in the same run: with the node's
//! validity rule (ed25519 signatures checked in batches over every core, timestamps, size) and
//! with a rule that accepts every linked block, so that the table shows what verification costs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use peerlink::chain::{produce, ChainParams, ChainStore, ProducerKey};
use peerlink::devnet::{devnet_net_config, devnet_sync_config};
use peerlink::sync::rule::AnyBlock;
use peerlink::sync::{start_node_with, NodeSetup};

/// Payload bytes of every block.
pub const BLOCK_BYTES: usize = 1024;

/// Longest wait for one sync.
const LIMIT: Duration = Duration::from_secs(120);

/// Blocks per second at which node B syncs `blocks` blocks from node A (`verify`: with the
/// producer rule; otherwise links only). `ip_last` picks the pair 127.0.120.ip_last and +1.
pub fn rate(blocks: u64, verify: bool, ip_last: u8) -> Result<f64, String> {
    crate::peer::in_actix(move || run(blocks, verify, ip_last))
}

async fn run(blocks: u64, verify: bool, ip_last: u8) -> Result<f64, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let (dir_a, dir_b) = (
        tempfile::tempdir().map_err(|x| e(&x))?,
        tempfile::tempdir().map_err(|x| e(&x))?,
    );
    let key = ProducerKey::generate();
    let params = ChainParams::new("bench", [key.public()]);
    let mut store_a = ChainStore::open(dir_a.path(), &params).map_err(|x| e(&x))?;
    produce(&mut store_a, &key, blocks, BLOCK_BYTES).map_err(|x| e(&x))?;
    let target = store_a.tip_hash();
    let store_b = ChainStore::open(dir_b.path(), &params).map_err(|x| e(&x))?;
    let cfg = devnet_sync_config(BLOCK_BYTES);
    let a = start_node_with(
        devnet_net_config(Ipv4Addr::new(127, 0, 120, ip_last)),
        store_a,
        cfg.clone(),
        NodeSetup::default(),
    )
    .await
    .map_err(|x| e(&x))?;
    let setup = NodeSetup {
        rule: (!verify).then(|| Box::new(AnyBlock) as Box<dyn peerlink::sync::BlockRule>),
        ..NodeSetup::default()
    };
    let b = start_node_with(
        devnet_net_config(Ipv4Addr::new(127, 0, 120, ip_last + 1)),
        store_b,
        cfg,
        setup,
    )
    .await
    .map_err(|x| e(&x))?;
    let started = Instant::now();
    b.net.connect(a.net.local_addr());
    let outcome = loop {
        let s = b.status().await.map_err(|x| e(&x))?;
        if s.height == blocks && s.tip == target {
            break Ok(blocks as f64 / started.elapsed().as_secs_f64());
        }
        if started.elapsed() > LIMIT {
            break Err(format!("B reached {} of {blocks} in {LIMIT:?}", s.height));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    b.shutdown().await;
    a.shutdown().await;
    outcome
}

/// Blocks per second the producer rule checks (signatures in batches of 128, as sync applies
/// them) on `threads` threads, without any networking or storage: what verification alone
/// allows on this machine at this moment.
pub fn verify_rate(threads: usize, blocks: u64) -> f64 {
    use peerlink::chain::Block;
    use peerlink::sync::{BlockRule, ProducerRule};
    let key = ProducerKey::generate();
    let params = ChainParams::new("bench", [key.public()]);
    let rule = ProducerRule::new(params, 1 << 20, 60_000).with_threads(threads);
    let mut prev = [0u8; 32];
    let chain: Vec<Block> = (1..=blocks.max(128))
        .map(|h| {
            let b = Block::signed(h, prev, 1, vec![h as u8; BLOCK_BYTES], &key);
            prev = b.hash();
            b
        })
        .collect();
    let started = Instant::now();
    let mut checked = 0u64;
    for run in chain.chunks(128) {
        if rule.check(0, run, 2).is_ok() {
            checked += run.len() as u64;
        }
    }
    checked as f64 / started.elapsed().as_secs_f64()
}
