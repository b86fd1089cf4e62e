//! Shared harness for the sync tests: in-process nodes (real `Network<NodeMsg>` on distinct
//! 127.0.2.x addresses, real redb stores in temp dirs, short timeouts) and bounded waiting on
//! sync status. Every wait polls actor state with a deadline; none sleeps as synchronisation.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use peerlink::chain::{produce, ChainParams, ChainStore, ProducerKey, DB_FILE_NAME};
use peerlink::sync::{start_node_with, NodeSetup, SyncConfig, SyncNode, SyncStatus};
use peerlink_actors::NetworkConfig;
use tempfile::TempDir;

/// Network name of every test node.
pub const NETWORK: &str = "synctest";

/// The one producer of the test network (a fixed key: every test node agrees on it).
pub fn producer_key() -> ProducerKey {
    ProducerKey::from_seed([0x5a; 32])
}

/// The test network: [`NETWORK`] produced by [`producer_key`].
pub fn params() -> ChainParams {
    ChainParams::new(NETWORK, [producer_key().public()])
}

/// Network config on 127.0.2.`ip_last` with short timeouts; dials nothing unless told.
pub fn net_config(ip_last: u8) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::from(([127, 0, 2, ip_last], 0)),
        handshake_timeout_ms: 2_000,
        ping_interval_ms: 2_000,
        ping_timeout_ms: 6_000,
        connect_timeout_ms: 1_000,
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        dial_tick_ms: 50,
        session_threads: 1,
        ..NetworkConfig::default()
    }
}

/// Sync config with a short stall timeout.
pub fn sync_config() -> SyncConfig {
    SyncConfig {
        stall_timeout_ms: 600,
        tick_ms: 50,
        ..SyncConfig::default()
    }
}

/// A running node and its data directory.
pub struct Node {
    /// The node.
    pub node: SyncNode,
    /// Its data dir (deleted on drop).
    pub dir: TempDir,
}

impl Node {
    /// Starts a node on 127.0.2.`ip_last` whose store is `dir`; it can produce (it holds the
    /// test network's producer key).
    pub async fn start_in(dir: TempDir, ip_last: u8, cfg: SyncConfig) -> Node {
        let store = ChainStore::open(dir.path(), params()).expect("store opens");
        let setup = NodeSetup {
            producer_key: Some(producer_key()),
            ..NodeSetup::default()
        };
        let node = start_node_with(net_config(ip_last), store, cfg, setup)
            .await
            .expect("node starts");
        Node { node, dir }
    }

    /// Starts a node with a fresh store holding `blocks` produced blocks.
    pub async fn start(ip_last: u8, blocks: u64, cfg: SyncConfig) -> Node {
        let dir = chain_dir(blocks);
        Self::start_in(dir, ip_last, cfg).await
    }

    /// Its listen address.
    pub fn addr(&self) -> SocketAddr {
        self.node.net.local_addr()
    }

    /// Its status.
    pub async fn status(&self) -> SyncStatus {
        self.node.status().await.expect("actor alive")
    }
}

/// A temp dir with a store of `blocks` produced blocks (256-byte payloads).
pub fn chain_dir(blocks: u64) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = ChainStore::open(dir.path(), params()).expect("store opens");
    produce(&mut store, &producer_key(), blocks, 256).expect("produce");
    dir
}

/// A temp dir holding a copy of the (closed) store in `from`.
pub fn copy_chain(from: &Path) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(from.join(DB_FILE_NAME), dir.path().join(DB_FILE_NAME)).expect("copy");
    dir
}

/// Polls `f` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `node` has height `height` and tip `tip`.
pub async fn wait_tip(node: &Node, height: u64, tip: [u8; 32], limit: Duration) -> SyncStatus {
    wait_for(
        &format!("{} at height {height}", node.addr()),
        limit,
        || async {
            let s = node.status().await;
            (s.height == height && s.tip == tip).then_some(s)
        },
    )
    .await
}
