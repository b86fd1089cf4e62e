//! `peerlink devnet`: several complete nodes (chain store, sync actor, network) in one process,
//! connected by peer discovery (by default) or wired in a fixed shape, with one producer; a live
//! table while they sync and a final report that checks what the design promises (every node
//! on the same tip, one connection per peer IP, pongs answered, and under discovery a connected
//! graph in which every node holds its target of peers).
//!
//! ## What it does
//!
//! 1. Node 0's chain is built offline: `blocks - LIVE_BLOCKS` blocks of `block_bytes` random
//!    bytes ([`crate::chain::produce()`]), in a temporary directory that is deleted at the end.
//! 2. `nodes` nodes start, each with its own data directory under the temporary one, listening
//!    on `base_ip + i` port 0 (peers are keyed by IP, so every node needs its own loopback
//!    address). Their sessions share one pool of session threads (one per core) and one control
//!    plane thread ([`SessionThreads`]), so that 100 nodes cost 100 x 3 sync threads, not
//!    100 x 5 threads; each node still has its own sync, chain-writer and request-server
//!    threads. The open-file limit is raised to its hard limit when the nodes may need more
//!    than the soft one ([`raise_fd_limit`]; said in the output).
//! 3. Who dials whom ([`Topology`]): by default, `discovery`: the first [`DEVNET_SEEDS`] nodes
//!    are seeds (each told the next seed), every other node is told one seed, and address
//!    gossip and outbound selection do the rest (discovery on, with the short timers of
//!    [`DiscoveryConfig::fast`]). `line` (node `i` dials node `i + 1`, so blocks must cross
//!    `n - 1` hops), `ring` and `seed` keep their fixed shapes with discovery off.
//! 4. Phase "sync": the clock starts when the dials are issued; it stops for each node when
//!    its tip is node 0's tip. Under discovery, the time at which every node held at least
//!    `min(target_outbound, n - 1)` peers in a connected graph is recorded too.
//! 5. Phase "relay": node 0 produces the last [`LIVE_BLOCKS`] blocks live, one at a time; each
//!    must reach every node through announces and requests, hop by hop, before the next one
//!    is produced ([`LIVE_BLOCK_INTERVAL`] apart).
//! 6. Report (with each node's outbound/inbound peers and known addresses, the degree spread
//!    and the process RSS); exit status 0 only if every node ends on node 0's tip hash with one
//!    connection per peer IP, and either exactly its neighbours (fixed shapes) or, under
//!    discovery, at least its target of peers in a connected graph.
//!
//! Pings run every [`DEVNET_PING_INTERVAL_MS`] (per 8 nodes: [`devnet_net_config_for`]) so that
//! the pong rate is measured even in a short run.
//!
//! `--duration D` adds a soak phase after the relay phase: node 0 keeps producing a block every
//! [`crate::soak::SOAK_BLOCK_INTERVAL`] for `D`, every `--report-every` the devnet prints
//! reconnects, pong rate, one-entry-per-IP violations and RSS per node, and the run ends with
//! the soak's verdict ([`crate::soak::SoakTracker`]) in the exit status. Under discovery a
//! node's expected connections during the soak are those it held when the soak started.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use peerlink_actors::discovery::DiscoveryConfig;
use peerlink_actors::{
    Direction, DiscoveryStats, NetworkConfig, PeerInfo, RegistryStats, SessionThreads,
};

use crate::chain::block::MAX_BLOCK_PAYLOAD_BYTES;
use crate::chain::{
    produce, short_hex, to_hex, BlockHash, ChainError, ChainParams, ChainStore, ProducerKey,
};
use crate::cli::DevnetArgs;
use crate::soak::{process_rss_bytes, NodeSample, SoakTracker, SOAK_BLOCK_INTERVAL};
use crate::sync::{start_node_with, NodeSetup, SyncConfig, SyncError, SyncNode, SyncStatus};

/// Network name of the devnet's chain.
pub const DEVNET_NETWORK: &str = "devnet";

/// Blocks node 0 produces live at the end (the rest is built before the nodes start): enough
/// to see announce and relay cross every hop, few enough to keep the run short.
pub const LIVE_BLOCKS: u64 = 5;

/// Interval between the live blocks: a producer's pace, and time for a few pings per
/// connection, so that the pong rate means something even when the sync phase is short.
pub const LIVE_BLOCK_INTERVAL: Duration = Duration::from_millis(250);

/// Ping interval of every devnet connection, milliseconds: short, so that a run of a few
/// seconds sends enough pings for a meaningful pong rate.
pub const DEVNET_PING_INTERVAL_MS: u64 = 200;

/// How often the live table is redrawn on a terminal.
pub const TABLE_REFRESH: Duration = Duration::from_secs(1);

/// How often the table is printed when stdout is not a terminal (a log file should not get a
/// table every second).
pub const PLAIN_TABLE_INTERVAL: Duration = Duration::from_secs(5);

/// How often node statuses are polled while waiting for a tip (per 8 nodes: each poll asks
/// every node's sync actor, so a devnet of 100 nodes polls less often).
const POLL: Duration = Duration::from_millis(10);

/// How often statuses are polled while a live block crosses the network (per 8 nodes).
const RELAY_POLL: Duration = Duration::from_millis(2);

/// `base` scaled to the number of nodes: one poll asks every node.
fn poll_every(base: Duration, nodes: usize) -> Duration {
    base * (nodes.div_ceil(8).max(1) as u32)
}

/// Seeds of the discovery topology: nodes 0, 1 and 2 (each told the next one); every other
/// node is told one of them.
pub const DEVNET_SEEDS: usize = 3;

pub use crate::cli::Topology;

impl Topology {
    /// The dials `(from, to)` of a network of `n` nodes issued at the start. Under discovery,
    /// each seed dials the next seed and node `i` the seed `i % DEVNET_SEEDS`; the rest of the
    /// graph is discovery's.
    pub fn edges(self, n: usize) -> Vec<(usize, usize)> {
        let line = (0..n.saturating_sub(1)).map(|i| (i, i + 1));
        match self {
            Topology::Discovery => {
                let seeds = DEVNET_SEEDS.min(n);
                let ring = (0..seeds)
                    .map(|i| (i, (i + 1) % seeds))
                    .filter(|(a, b)| a != b);
                // Two seeds would dial each other: one dial is enough.
                let ring = ring.filter(|&(a, b)| seeds > 2 || a < b);
                ring.chain((seeds..n).map(|i| (i, i % seeds))).collect()
            }
            Topology::Line => line.collect(),
            Topology::Ring if n >= 3 => line.chain(std::iter::once((n - 1, 0))).collect(),
            Topology::Ring => line.collect(),
            Topology::Seed => (1..n).map(|i| (i, 0)).collect(),
        }
    }

    /// Connections node `i` of `n` holds when every dial succeeded: exactly that many for the
    /// fixed shapes; under discovery at least that many, `min(target_outbound, n - 1)`.
    pub fn expected(self, i: usize, n: usize, target_outbound: usize) -> usize {
        match self {
            Topology::Discovery => target_outbound.min(n.saturating_sub(1)),
            _ => self
                .edges(n)
                .iter()
                .filter(|(a, b)| *a == i || *b == i)
                .count(),
        }
    }

    /// Whether discovery runs (only in the discovery topology: the fixed shapes stay what they
    /// say).
    pub fn discovery(self) -> bool {
        self == Topology::Discovery
    }
}

/// Why a devnet run failed. Each message says what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A flag is out of range.
    #[error("invalid devnet argument: {0}")]
    Args(String),
    /// The temporary directory could not be created.
    #[error("cannot create the devnet's temporary directory: {0}")]
    TempDir(std::io::Error),
    /// A chain store failed.
    #[error("chain store: {0}")]
    Chain(#[from] ChainError),
    /// A node could not start or its sync actor stopped.
    #[error("node: {0}")]
    Sync(#[from] SyncError),
    /// Writing the table failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
    /// Not every node reached the tip in time.
    #[error("timed out after {}: {what}", humantime::format_duration(*after))]
    Timeout {
        /// The `--timeout`.
        after: Duration,
        /// Which nodes were missing what.
        what: String,
    },
    /// Interrupted by Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// The run finished but a check failed (tips differ, duplicate or missing connections).
    #[error("check failed: {0}")]
    Check(String),
}

/// The network configuration of devnet node `i`: listens on `ip` port 0, short timeouts and
/// pings (the session threads are the devnet's shared ones).
pub fn devnet_net_config(ip: Ipv4Addr) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::new(IpAddr::V4(ip), 0),
        // The default: a devnet of 100 nodes opens some 800 connections at once, and a loaded
        // machine must not turn that storm into handshake timeouts.
        handshake_timeout_ms: 5_000,
        ping_interval_ms: DEVNET_PING_INTERVAL_MS,
        ping_timeout_ms: 5_000,
        connect_timeout_ms: 1_000,
        dial_tick_ms: 50,
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        session_threads: 1,
        // The devnet's topologies (line, ring, seed) are the links it dials.
        discovery: false,
        ..NetworkConfig::default()
    }
}

/// [`devnet_net_config`] for a devnet of `nodes` nodes: the ping interval grows with the node
/// count (every 200 ms per 8 nodes), so that the pings of 100 nodes' connections (some 1,600)
/// stay a few thousand a second in all, not a load of their own; the ping timeout stays at
/// least five intervals.
pub fn devnet_net_config_for(ip: Ipv4Addr, nodes: usize) -> NetworkConfig {
    let base = devnet_net_config(ip);
    let ping_interval_ms = base.ping_interval_ms * nodes.div_ceil(8).max(1) as u64;
    NetworkConfig {
        ping_interval_ms,
        ping_timeout_ms: base.ping_timeout_ms.max(5 * ping_interval_ms),
        ..base
    }
}

/// The sync configuration of every devnet node: the defaults, with a short tick and stall
/// timeout, and no progress bar or progress lines (the devnet prints its own table).
pub fn devnet_sync_config(block_bytes: usize) -> SyncConfig {
    SyncConfig {
        payload_bytes: block_bytes,
        tick_ms: 50,
        stall_timeout_ms: 2_000,
        progress_bar: false,
        progress_log_interval_ms: u64::MAX / 2,
        ..SyncConfig::default()
    }
}

/// One node's line in the final report.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// Index (0 = producer).
    pub index: usize,
    /// Listen address.
    pub addr: SocketAddr,
    /// Final height.
    pub height: u64,
    /// Final tip.
    pub tip: BlockHash,
    /// Time from the dials until it had node 0's pre-built tip (None for node 0).
    pub synced_after: Option<Duration>,
    /// Registered connections.
    pub connections: usize,
    /// Distinct peer IPs among them.
    pub distinct_ips: usize,
    /// Of the connections, those this node dialled.
    pub outbound: usize,
    /// Its neighbours in a fixed topology (exactly), or under discovery the least it must hold
    /// (`min(target_outbound, n - 1)`).
    pub expected: usize,
    /// Addresses in its discovery address book (None: discovery off).
    pub known: Option<usize>,
    /// Registrations beyond its current connections (fixed shapes: beyond its neighbours).
    pub reconnects: u64,
    /// Pings sent over its current connections.
    pub pings_sent: u64,
    /// Pongs matched over its current connections.
    pub pongs_matched: u64,
}

impl NodeReport {
    /// Pongs matched per answerable ping: one ping per connection may be in flight when the
    /// counters are read (sent less than a round trip ago), so it is not counted as missing.
    pub fn pong_rate(&self) -> Option<f64> {
        let answerable = self
            .pings_sent
            .saturating_sub(self.connections as u64)
            .max(self.pongs_matched);
        (answerable > 0).then(|| self.pongs_matched as f64 / answerable as f64)
    }
}

/// The outcome of a successful run.
#[derive(Debug, Clone)]
pub struct DevnetReport {
    /// Blocks built before the start.
    pub prebuilt: u64,
    /// Blocks produced live.
    pub live: u64,
    /// Payload bytes per block.
    pub block_bytes: usize,
    /// Time until the last node had the pre-built chain.
    pub sync_time: Duration,
    /// Longest time a live block took to reach every node.
    pub relay_max: Duration,
    /// The final tip.
    pub tip: BlockHash,
    /// Who dialled whom.
    pub topology: Topology,
    /// Under discovery: time from the dials until every node held at least its expected peers
    /// in a connected graph (None: fixed shapes, or not observed).
    pub settled_after: Option<Duration>,
    /// Whether the final graph of connections is connected.
    pub graph_connected: bool,
    /// Resident memory of the whole process at the end, bytes.
    pub rss_bytes: u64,
    /// Disconnects of registered connections over all nodes since the start.
    pub disconnects: u64,
    /// Reasons of the most recent disconnects (each node remembers its last few), counted over
    /// all nodes, as `reason` (`by peer` when the peer closed).
    pub disconnect_reasons: std::collections::BTreeMap<String, u64>,
    /// Per node.
    pub nodes: Vec<NodeReport>,
}

/// Open files the devnet may need per node: its listener, its chain store, the event loops of
/// its three threads, and both ends of each connection it holds, with room for dials in flight
/// and accepted sockets still handshaking.
const FDS_PER_NODE_BASE: u64 = 32;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when `need` open files would not fit under
/// the soft one. Returns a line for the output: what was done, or that even the hard limit is
/// short (the run goes on; accepts and dials beyond the limit fail and are retried).
pub fn raise_fd_limit(need: u64) -> Option<String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Some("devnet: cannot read the open-file limit (RLIMIT_NOFILE)".into());
    }
    let (soft, hard): (u64, u64) = (lim.rlim_cur, lim.rlim_max);
    if need <= soft {
        return None;
    }
    let mut note = String::new();
    if soft < hard {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            note = format!(
                "devnet: raised the open-file limit (RLIMIT_NOFILE) from {soft} to its hard limit \
                 {hard} (the nodes may need about {need})"
            );
            log::info!("{note}");
            if need <= hard {
                return Some(note);
            }
            note.push('\n');
        }
    }
    let line = format!(
        "devnet: warning: the nodes may need about {need} open files, the hard limit is {hard} \
         (raise it with `ulimit -Hn` as root); dials and accepts beyond it fail"
    );
    log::warn!("{line}");
    Some(note + &line)
}

/// Runs the devnet described by `args` inside the current actix system, writing the live table
/// and the report to `out`. `Ok` only when every check passed.
pub async fn run(args: &DevnetArgs, out: &mut dyn Write) -> Result<DevnetReport, DevnetError> {
    check_args(args)?;
    // Registered now (not at the task's first poll), so that Ctrl-C while the chain is built
    // still ends in the clean shutdown below, which also deletes the temporary directory.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        actix_rt::spawn(async move {
            if sigint.recv().await.is_some() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    let root = tempfile::Builder::new()
        .prefix("peerlink-devnet-")
        .tempdir()
        .map_err(DevnetError::TempDir)?;
    let live = LIVE_BLOCKS.min(args.blocks);
    let prebuilt = args.blocks - live;

    let built = Instant::now();
    // The devnet's one producer: node 0, with a key made for this run. Every node's genesis
    // commits to it and every node checks its signature on every block.
    let key = ProducerKey::generate();
    let params = ChainParams::new(DEVNET_NETWORK, [key.public()]);
    let mut store0 = ChainStore::open(root.path().join("node-0"), &params)?;
    produce(&mut store0, &key, prebuilt, args.block_bytes)?;
    let target = (store0.height(), store0.tip_hash());
    writeln!(
        out,
        "devnet: {} nodes ({:?} topology) on {}..; node 0 built {prebuilt} blocks of {} bytes in \
         {:.1} s (tip {}), {live} more will be produced live",
        args.nodes,
        args.topology,
        args.base_ip,
        args.block_bytes,
        built.elapsed().as_secs_f64(),
        short_hex(&target.1)
    )?;

    let target_outbound = NetworkConfig::default().target_outbound as u64;
    let need = args.nodes as u64 * (FDS_PER_NODE_BASE + 4 * target_outbound);
    if let Some(note) = raise_fd_limit(need) {
        writeln!(out, "{note}")?;
    }

    // One pool of session threads (and one control plane thread) for every node.
    let threads = SessionThreads::new(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    );
    let discovery = args.topology.discovery().then(DiscoveryConfig::fast);
    let mut nodes = Vec::with_capacity(args.nodes);
    let mut store0 = Some(store0);
    let mut started = Ok(());
    for i in 0..args.nodes {
        let store = match store0.take() {
            Some(s) => Ok(s),
            None => ChainStore::open(root.path().join(format!("node-{i}")), &params),
        };
        let ip = node_ip(args.base_ip, i);
        let net = devnet_net_config_for(ip, args.nodes);
        let cfg = devnet_sync_config(args.block_bytes);
        let setup = NodeSetup {
            producer_key: (i == 0).then(|| key.clone()),
            session_threads: Some(threads.clone()),
            discovery,
            ..NodeSetup::default()
        };
        let node = match store {
            Ok(store) => start_node_with(net, store, cfg, setup).await,
            Err(e) => Err(e.into()),
        };
        match node {
            Ok(node) => nodes.push(node),
            Err(e) => {
                started = Err(DevnetError::from(e));
                break;
            }
        }
    }
    let result = match started {
        Ok(()) => drive(args, &nodes, target, prebuilt, live, &interrupted, out).await,
        Err(e) => Err(e),
    };
    join_all(nodes.iter().map(|n| n.shutdown())).await;
    drop(threads);
    drop(root);
    result
}

fn check_args(args: &DevnetArgs) -> Result<(), DevnetError> {
    if args.nodes < 2 {
        return Err(DevnetError::Args("--nodes must be at least 2".into()));
    }
    let last = u32::from(args.base_ip) as u64 + args.nodes as u64 - 1;
    if !args.base_ip.is_loopback() || last > u64::from(u32::from(Ipv4Addr::new(127, 255, 255, 254)))
    {
        return Err(DevnetError::Args(format!(
            "--base-ip {} + {} nodes must stay inside 127.0.0.0/8",
            args.base_ip, args.nodes
        )));
    }
    if args.blocks == 0 {
        return Err(DevnetError::Args("--blocks must be at least 1".into()));
    }
    if args.block_bytes > MAX_BLOCK_PAYLOAD_BYTES {
        return Err(DevnetError::Args(format!(
            "--block-bytes must be at most {MAX_BLOCK_PAYLOAD_BYTES}"
        )));
    }
    Ok(())
}

/// Address of node `i`.
pub fn node_ip(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + i as u32)
}

/// Connects the line, waits for both phases, checks and reports.
async fn drive(
    args: &DevnetArgs,
    nodes: &[SyncNode],
    target: (u64, BlockHash),
    prebuilt: u64,
    live: u64,
    interrupted: &AtomicBool,
    out: &mut dyn Write,
) -> Result<DevnetReport, DevnetError> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    for (a, b) in args.topology.edges(nodes.len()) {
        nodes[a].net.connect(nodes[b].net.local_addr());
    }
    let mut table = Table::new(std::io::stdout().is_terminal());
    let mut settle = Settle::new(args.topology, nodes.len());

    // Phase 1: the pre-built chain reaches every node.
    let mut synced_after: Vec<Option<Duration>> = vec![None; nodes.len()];
    synced_after[0] = Some(Duration::ZERO);
    loop {
        let statuses = statuses(nodes).await?;
        for (i, s) in statuses.iter().enumerate() {
            if synced_after[i].is_none() && (s.height, s.tip) == target {
                synced_after[i] = Some(started.elapsed());
            }
        }
        settle.maybe_check(nodes, started).await;
        if synced_after.iter().all(Option::is_some) {
            break;
        }
        table.maybe_draw(nodes, &statuses, out).await?;
        check_time(args, deadline, interrupted, &statuses, target)?;
        tokio::time::sleep(poll_every(POLL, nodes.len())).await;
    }
    let sync_time = synced_after
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    let statuses_now = statuses(nodes).await?;
    table.draw(nodes, &statuses_now, out).await?;
    writeln!(
        out,
        "sync: every node has the {prebuilt} pre-built blocks after {:.2} s",
        sync_time.as_secs_f64()
    )?;

    // Phase 2: blocks produced live cross every hop.
    let mut relay_max = Duration::ZERO;
    for k in 0..live {
        if k > 0 {
            tokio::time::sleep(LIVE_BLOCK_INTERVAL.saturating_sub(relay_max)).await;
        }
        let produced = nodes[0].produce().await?;
        let t = Instant::now();
        let want = (produced.height, produced.hash);
        loop {
            let statuses = statuses(nodes).await?;
            if statuses.iter().all(|s| (s.height, s.tip) == want) {
                break;
            }
            table.maybe_draw(nodes, &statuses, out).await?;
            check_time(args, deadline, interrupted, &statuses, want)?;
            tokio::time::sleep(poll_every(RELAY_POLL, nodes.len())).await;
        }
        relay_max = relay_max.max(t.elapsed());
        settle.maybe_check(nodes, started).await;
    }

    // Under discovery: every node holds its expected peers in a connected graph.
    while settle.pending() {
        settle.check(nodes, started).await;
        if !settle.pending() {
            break;
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(DevnetError::Interrupted);
        }
        if Instant::now() >= deadline {
            return Err(DevnetError::Timeout {
                after: args.timeout,
                what: settle.shortfall(),
            });
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    if let Some(after) = settle.settled_after {
        writeln!(
            out,
            "discovery: every node held at least {} peers in a connected graph after {:.2} s",
            settle.want,
            after.as_secs_f64()
        )?;
    }

    let soak = if args.duration.is_zero() {
        None
    } else {
        Some(soak(args, nodes, interrupted, out).await?)
    };

    // Final state.
    let statuses = statuses(nodes).await?;
    table.draw(nodes, &statuses, out).await?;
    let mut reports = Vec::with_capacity(nodes.len());
    let all_peers = join_all(nodes.iter().map(|n| n.net.peers())).await;
    let books = join_all(nodes.iter().map(|n| n.net.discovery_stats())).await;
    let n = nodes.len();
    let mut disconnects = 0;
    let mut disconnect_reasons = std::collections::BTreeMap::new();
    for (i, (node, s)) in nodes.iter().zip(&statuses).enumerate() {
        let stats = node.net.stats().await.map_err(SyncError::from)?;
        disconnects += stats.disconnects;
        for d in &stats.recent_disconnects {
            let side = if d.by_peer { " by peer" } else { "" };
            *disconnect_reasons
                .entry(format!("{}{side}", d.reason))
                .or_insert(0) += 1;
        }
        reports.push(node_report(
            i,
            args.topology,
            args.topology
                .expected(i, n, node.net.config().target_outbound),
            node,
            s,
            &all_peers[i],
            &stats,
            books[i].as_ref(),
            synced_after[i],
        ));
    }
    let report = DevnetReport {
        prebuilt,
        live,
        block_bytes: args.block_bytes,
        sync_time,
        relay_max,
        tip: statuses[0].tip,
        topology: args.topology,
        settled_after: settle.settled_after,
        graph_connected: graph_connected(nodes, &all_peers),
        rss_bytes: process_rss_bytes(),
        disconnects,
        disconnect_reasons,
        nodes: reports,
    };
    write!(out, "{}", render_report(&report))?;
    check_report(&report)?;
    match soak {
        Some(Err(failed)) => Err(DevnetError::Check(failed)),
        _ => Ok(report),
    }
}

/// Samples every node's counters for the soak; `expected` are the connections each must hold.
async fn soak_samples(
    nodes: &[SyncNode],
    expected: &[usize],
) -> Result<Vec<NodeSample>, DevnetError> {
    let statuses = statuses(nodes).await?;
    let mut samples = Vec::with_capacity(nodes.len());
    for (i, (node, s)) in nodes.iter().zip(&statuses).enumerate() {
        let peers = node.net.peers().await;
        let stats = node.net.stats().await.map_err(SyncError::from)?;
        samples.push(NodeSample {
            connects: stats.connects,
            disconnects: stats.disconnects,
            replaced: stats.replaced,
            connections: peers.len(),
            distinct_ips: peers.iter().map(|p| p.ip).collect::<BTreeSet<_>>().len(),
            expected: expected.get(i).copied().unwrap_or_default(),
            pings_sent: peers.iter().map(|p| p.stats.pings_sent).sum(),
            pongs_matched: peers.iter().map(|p| p.stats.pongs_matched).sum(),
            height: s.height,
        });
    }
    Ok(samples)
}

/// The soak phase: `--duration` of pings and a block every [`SOAK_BLOCK_INTERVAL`], sampled
/// every `--report-every`; then every node must reach node 0's tip again. Returns the verdict
/// (`Err` text when a threshold was missed); errors only when the run itself broke.
async fn soak(
    args: &DevnetArgs,
    nodes: &[SyncNode],
    interrupted: &AtomicBool,
    out: &mut dyn Write,
) -> Result<Result<String, String>, DevnetError> {
    writeln!(
        out,
        "soak: {} nodes ({:?}) for {}, a block every {} s, figures every {}",
        nodes.len(),
        args.topology,
        humantime::format_duration(args.duration),
        SOAK_BLOCK_INTERVAL.as_secs(),
        humantime::format_duration(args.report_every)
    )?;
    // Fixed shapes: exactly the neighbours. Discovery: the peers held when the soak starts
    // (a settled graph has no reason to change).
    let expected: Vec<usize> = if args.topology.discovery() {
        join_all(nodes.iter().map(|n| n.net.peers()))
            .await
            .iter()
            .map(Vec::len)
            .collect()
    } else {
        let n = nodes.len();
        (0..n)
            .map(|i| {
                let target = nodes[i].net.config().target_outbound;
                args.topology.expected(i, n, target)
            })
            .collect()
    };
    let mut tracker = SoakTracker::new(soak_samples(nodes, &expected).await?);
    let started = Instant::now();
    let end = started + args.duration;
    let every = args.report_every.max(Duration::from_millis(100));
    let mut next_report = started + every;
    let mut next_block = started + SOAK_BLOCK_INTERVAL;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return Err(DevnetError::Interrupted);
        }
        let now = Instant::now();
        if now >= next_block {
            nodes[0].produce().await?;
            next_block += SOAK_BLOCK_INTERVAL;
        }
        if now >= next_report || now >= end {
            let samples = soak_samples(nodes, &expected).await?;
            let text = tracker.observe(started.elapsed(), &samples, process_rss_bytes());
            write!(out, "{text}")?;
            out.flush()?;
            next_report += every;
        }
        if now >= end {
            break;
        }
        let wake = next_block.min(next_report).min(end);
        tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
    }
    // The last block must reach every node before the final checks.
    let want = {
        let s = nodes[0].status().await?;
        (s.height, s.tip)
    };
    let deadline = Instant::now() + args.timeout;
    loop {
        let statuses = statuses(nodes).await?;
        if statuses.iter().all(|s| (s.height, s.tip) == want) {
            break;
        }
        check_time(args, deadline, interrupted, &statuses, want)?;
        tokio::time::sleep(poll_every(POLL, nodes.len())).await;
    }
    let verdict = tracker.verdict();
    match &verdict {
        Ok(s) | Err(s) => writeln!(out, "{s}")?,
    }
    Ok(verdict)
}

#[allow(clippy::too_many_arguments)]
fn node_report(
    index: usize,
    topology: Topology,
    expected: usize,
    node: &SyncNode,
    s: &SyncStatus,
    peers: &[PeerInfo],
    stats: &RegistryStats,
    book: Option<&DiscoveryStats>,
    synced_after: Option<Duration>,
) -> NodeReport {
    let first = if topology.discovery() {
        peers.len()
    } else {
        expected
    };
    NodeReport {
        index,
        addr: node.net.local_addr(),
        height: s.height,
        tip: s.tip,
        synced_after: (index > 0).then_some(synced_after).flatten(),
        connections: peers.len(),
        distinct_ips: peers.iter().map(|p| p.ip).collect::<BTreeSet<_>>().len(),
        outbound: peers
            .iter()
            .filter(|p| p.conn.direction == Direction::Outbound)
            .count(),
        expected,
        known: book.map(|b| b.known),
        reconnects: stats.connects.saturating_sub(first as u64),
        pings_sent: peers.iter().map(|p| p.stats.pings_sent).sum(),
        pongs_matched: peers.iter().map(|p| p.stats.pongs_matched).sum(),
    }
}

/// How often the discovery topology's shape is checked while the phases run (each check asks
/// every node for its peers).
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Watches for the discovery topology to settle: every node holding at least
/// `min(target_outbound, n - 1)` peers, the graph connected.
struct Settle {
    discovery: bool,
    want: usize,
    settled_after: Option<Duration>,
    last_check: Option<Instant>,
    short: Vec<(usize, usize)>,
    connected: bool,
}

impl Settle {
    fn new(topology: Topology, n: usize) -> Self {
        let target = NetworkConfig::default().target_outbound;
        Self {
            discovery: topology.discovery(),
            want: topology.expected(0, n, target),
            settled_after: None,
            last_check: None,
            short: Vec::new(),
            connected: false,
        }
    }

    /// Still waiting for the discovery topology to settle.
    fn pending(&self) -> bool {
        self.discovery && self.settled_after.is_none()
    }

    /// Checks when pending and the last check is at least [`SETTLE_POLL`] old.
    async fn maybe_check(&mut self, nodes: &[SyncNode], started: Instant) {
        if self.pending() && self.last_check.is_none_or(|t| t.elapsed() >= SETTLE_POLL) {
            self.check(nodes, started).await;
        }
    }

    async fn check(&mut self, nodes: &[SyncNode], started: Instant) {
        self.last_check = Some(Instant::now());
        let peers = join_all(nodes.iter().map(|n| n.net.peers())).await;
        self.short = peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.len() < self.want)
            .map(|(i, p)| (i, p.len()))
            .collect();
        self.connected = graph_connected(nodes, &peers);
        if self.short.is_empty() && self.connected {
            self.settled_after = Some(started.elapsed());
        }
    }

    /// What is missing, for a timeout.
    fn shortfall(&self) -> String {
        let short: Vec<String> = self
            .short
            .iter()
            .map(|(i, n)| format!("node {i} has {n}"))
            .collect();
        format!(
            "discovery did not settle: {} nodes below {} peers ({}), graph {}",
            short.len(),
            self.want,
            short.join(", "),
            if self.connected {
                "connected"
            } else {
                "not connected"
            }
        )
    }
}

/// Whether the connections in `peers` (one list per node) join every node.
fn graph_connected(nodes: &[SyncNode], peers: &[Vec<PeerInfo>]) -> bool {
    let index: std::collections::BTreeMap<IpAddr, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.net.local_addr().ip(), i))
        .collect();
    let edges: Vec<(usize, usize)> = peers
        .iter()
        .enumerate()
        .flat_map(|(i, ps)| {
            let index = &index;
            ps.iter()
                .filter_map(move |p| index.get(&p.ip).map(|&j| (i, j)))
        })
        .collect();
    is_connected(nodes.len(), &edges)
}

/// Whether the undirected graph with `edges` over `n` vertices is connected.
pub fn is_connected(n: usize, edges: &[(usize, usize)]) -> bool {
    if n == 0 {
        return true;
    }
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        if a < n && b < n {
            adj[a].push(b);
            adj[b].push(a);
        }
    }
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(x) = stack.pop() {
        for &y in &adj[x] {
            if !seen[y] {
                seen[y] = true;
                stack.push(y);
            }
        }
    }
    seen.iter().all(|s| *s)
}

/// Minimum, median and maximum of `values` (zeros when empty).
pub fn spread(values: &[usize]) -> (usize, usize, usize) {
    let mut v = values.to_vec();
    v.sort_unstable();
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(&a), Some(&b), Some(&c)) => (a, b, c),
        _ => (0, 0, 0),
    }
}

/// The checks behind the exit status.
pub fn check_report(r: &DevnetReport) -> Result<(), DevnetError> {
    let mut problems = Vec::new();
    for n in &r.nodes {
        if n.tip != r.tip {
            problems.push(format!(
                "node {} ends on tip {} at height {}, node 0 on {}",
                n.index,
                short_hex(&n.tip),
                n.height,
                short_hex(&r.tip)
            ));
        }
        if n.distinct_ips != n.connections {
            problems.push(format!(
                "node {} has {} connections for {} peer IPs",
                n.index, n.connections, n.distinct_ips
            ));
        }
        if r.topology.discovery() {
            if n.connections < n.expected {
                problems.push(format!(
                    "node {} has {} connections, at least {} expected (its target of peers)",
                    n.index, n.connections, n.expected
                ));
            }
        } else if n.connections != n.expected {
            problems.push(format!(
                "node {} has {} connections, expected {} (its neighbours in the topology)",
                n.index, n.connections, n.expected
            ));
        }
    }
    if !r.graph_connected {
        problems.push("the graph of connections is not connected".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DevnetError::Check(problems.join("; ")))
    }
}

/// The final report as text.
pub fn render_report(r: &DevnetReport) -> String {
    let mut s = String::new();
    let secs = r.sync_time.as_secs_f64().max(1e-9);
    let bytes = r.prebuilt as f64 * r.block_bytes as f64;
    let first = r
        .nodes
        .get(1)
        .and_then(|n| n.synced_after)
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-9);
    let _ = writeln!(s, "\n== devnet report");
    let _ = writeln!(
        s,
        "chain: height {} tip {}",
        r.nodes.first().map_or(0, |n| n.height),
        to_hex(&r.tip)
    );
    let _ = writeln!(
        s,
        "sync: {} blocks of {} bytes; node 1 (1 hop) had them after {:.2} s ({:.0} blocks/s, {:.1} MB/s); \
         every node after {:.2} s ({:.0} blocks/s, {:.1} MB/s end to end{})",
        r.prebuilt,
        r.block_bytes,
        first,
        r.prebuilt as f64 / first,
        bytes / first / 1e6,
        secs,
        r.prebuilt as f64 / secs,
        bytes / secs / 1e6,
        match r.topology {
            Topology::Line => format!(" over {} hops", r.nodes.len().saturating_sub(1)),
            _ => String::new(),
        }
    );
    let _ = writeln!(
        s,
        "relay: {} live blocks, each reached all {} nodes within {:.1} ms",
        r.live,
        r.nodes.len(),
        r.relay_max.as_secs_f64() * 1000.0
    );
    let degrees: Vec<usize> = r.nodes.iter().map(|n| n.connections).collect();
    let outbound: Vec<usize> = r.nodes.iter().map(|n| n.outbound).collect();
    let (dmin, dmed, dmax) = spread(&degrees);
    let (omin, omed, omax) = spread(&outbound);
    let _ = write!(
        s,
        "peers ({:?} topology): degree min/median/max {dmin}/{dmed}/{dmax}, outbound \
         min/median/max {omin}/{omed}/{omax}",
        r.topology
    );
    let known: Vec<usize> = r.nodes.iter().filter_map(|n| n.known).collect();
    if !known.is_empty() {
        let (kmin, kmed, _) = spread(&known);
        let _ = write!(s, ", known addresses min/median {kmin}/{kmed}");
    }
    if let Some(after) = r.settled_after {
        let _ = write!(
            s,
            "; settled (every node >= {} peers, connected) after {:.2} s",
            r.nodes.first().map_or(0, |n| n.expected),
            after.as_secs_f64()
        );
    }
    let _ = writeln!(
        s,
        "; graph {}",
        if r.graph_connected {
            "connected"
        } else {
            "NOT connected"
        }
    );
    if r.disconnects > 0 {
        let reasons: Vec<String> = r
            .disconnect_reasons
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "disconnects: {} (recent reasons: {})",
            r.disconnects,
            reasons.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "memory: RSS {:.1} MiB for {} nodes ({:.2} MiB per node)",
        r.rss_bytes as f64 / (1024.0 * 1024.0),
        r.nodes.len(),
        r.rss_bytes as f64 / (1024.0 * 1024.0) / r.nodes.len().max(1) as f64
    );
    let _ = writeln!(
        s,
        "{:<5} {:<22} {:>10} {:>12} {:>10} {:>9} {:>10} {:>7} {:>6} {:>17}",
        "NODE",
        "ADDR",
        "HEIGHT",
        "TIP",
        "SYNCED (s)",
        "CONNS/IPS",
        "RECONNECTS",
        "OUT/IN",
        "KNOWN",
        "PONGS/PINGS"
    );
    for n in &r.nodes {
        let synced = n
            .synced_after
            .map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64()));
        let rate = n
            .pong_rate()
            .map_or("-".to_string(), |r| format!("{:.1} %", r * 100.0));
        let _ = writeln!(
            s,
            "{:<5} {:<22} {:>10} {:>12} {:>10} {:>9} {:>10} {:>7} {:>6} {:>17}",
            n.index,
            n.addr.to_string(),
            n.height,
            short_hex(&n.tip),
            synced,
            format!("{}/{}", n.connections, n.distinct_ips),
            n.reconnects,
            format!(
                "{}/{}",
                n.outbound,
                n.connections - n.outbound.min(n.connections)
            ),
            n.known.map_or("-".to_string(), |k| k.to_string()),
            format!("{rate} ({}/{})", n.pongs_matched, n.pings_sent)
        );
    }
    s
}

async fn statuses(nodes: &[SyncNode]) -> Result<Vec<SyncStatus>, DevnetError> {
    join_all(nodes.iter().map(|n| n.status()))
        .await
        .into_iter()
        .map(|r| r.map_err(DevnetError::from))
        .collect()
}

fn check_time(
    args: &DevnetArgs,
    deadline: Instant,
    interrupted: &AtomicBool,
    statuses: &[SyncStatus],
    want: (u64, BlockHash),
) -> Result<(), DevnetError> {
    if interrupted.load(Ordering::SeqCst) {
        return Err(DevnetError::Interrupted);
    }
    if Instant::now() < deadline {
        return Ok(());
    }
    let missing: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| (s.height, s.tip) != want)
        .map(|(i, s)| format!("node {i} at height {}", s.height))
        .collect();
    Err(DevnetError::Timeout {
        after: args.timeout,
        what: format!(
            "{} of {} nodes did not reach height {} ({})",
            missing.len(),
            statuses.len(),
            want.0,
            missing.join(", ")
        ),
    })
}

/// The live table: redrawn in place on a terminal, printed now and then otherwise.
struct Table {
    terminal: bool,
    last: Option<Instant>,
    lines: usize,
}

impl Table {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            last: None,
            lines: 0,
        }
    }

    async fn maybe_draw(
        &mut self,
        nodes: &[SyncNode],
        statuses: &[SyncStatus],
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let every = if self.terminal {
            TABLE_REFRESH
        } else {
            PLAIN_TABLE_INTERVAL
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.draw(nodes, statuses, out).await
    }

    async fn draw(
        &mut self,
        nodes: &[SyncNode],
        statuses: &[SyncStatus],
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        self.last = Some(Instant::now());
        let peers = join_all(nodes.iter().map(|n| n.net.peers())).await;
        let mut text = format!(
            "{:<5} {:<22} {:>5} {:>10} {:>8} {:>12} {:>14}\n",
            "NODE", "ADDR", "PEERS", "HEIGHT", "STATE", "BLOCKS/S", "PONGS/PINGS"
        );
        for (i, (s, p)) in statuses.iter().zip(&peers).enumerate() {
            let pings: u64 = p.iter().map(|p| p.stats.pings_sent).sum();
            let pongs: u64 = p.iter().map(|p| p.stats.pongs_matched).sum();
            let rate = if pings == 0 {
                "-".to_string()
            } else {
                format!("{:.0} %", 100.0 * pongs as f64 / pings as f64)
            };
            let _ = writeln!(
                text,
                "{:<5} {:<22} {:>5} {:>10} {:>8} {:>12.0} {:>14}",
                i,
                nodes[i].net.local_addr().to_string(),
                p.len(),
                s.height,
                s.state.as_str(),
                s.sync_rate_blocks_per_s,
                rate
            );
        }
        if self.terminal {
            if self.lines > 0 {
                // Back to the first line of the previous table, then overwrite it line by line.
                write!(out, "\x1b[{}F", self.lines)?;
            }
            for line in text.lines() {
                writeln!(out, "\x1b[2K{line}")?;
            }
            self.lines = text.lines().count();
        } else {
            write!(out, "{text}")?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tip: u8) -> NodeReport {
        NodeReport {
            index: 1,
            addr: "127.0.0.3:1".parse().unwrap(),
            height: 5,
            tip: [tip; 32],
            synced_after: Some(Duration::from_secs(1)),
            connections: 2,
            distinct_ips: 2,
            outbound: 1,
            expected: 2,
            known: None,
            reconnects: 0,
            pings_sent: 12,
            pongs_matched: 10,
        }
    }

    #[test]
    fn pong_rate_forgives_one_ping_in_flight_per_connection() {
        assert_eq!(report(0).pong_rate(), Some(1.0));
        let mut r = report(0);
        r.pongs_matched = 5;
        assert_eq!(r.pong_rate(), Some(0.5));
        r.pings_sent = 0;
        r.pongs_matched = 0;
        assert_eq!(r.pong_rate(), None);
    }

    #[test]
    fn checks_catch_a_different_tip_and_duplicate_connections() {
        let ok = DevnetReport {
            prebuilt: 1,
            live: 0,
            block_bytes: 1,
            sync_time: Duration::from_secs(1),
            relay_max: Duration::ZERO,
            tip: [1; 32],
            topology: Topology::Line,
            settled_after: None,
            graph_connected: true,
            rss_bytes: 1 << 20,
            disconnects: 0,
            disconnect_reasons: Default::default(),
            nodes: vec![report(1)],
        };
        check_report(&ok).unwrap();
        let mut bad = ok.clone();
        bad.nodes[0].tip = [2; 32];
        assert!(check_report(&bad).is_err());
        let mut dup = ok.clone();
        dup.nodes[0].distinct_ips = 1;
        assert!(check_report(&dup).is_err());
        assert!(render_report(&ok).contains("devnet report"));
        let mut apart = ok.clone();
        apart.graph_connected = false;
        assert!(check_report(&apart).is_err());
        // Discovery: at least the expected peers, more is fine, fewer is not.
        let mut disc = ok.clone();
        disc.topology = Topology::Discovery;
        disc.nodes[0].connections = 5;
        disc.nodes[0].distinct_ips = 5;
        check_report(&disc).unwrap();
        disc.nodes[0].connections = 1;
        disc.nodes[0].distinct_ips = 1;
        assert!(check_report(&disc).is_err());
        let text = render_report(&ok);
        assert!(text.contains("degree min/median/max 2/2/2"), "{text}");
        assert!(text.contains("memory: RSS 1.0 MiB"), "{text}");
    }

    #[test]
    fn topologies_give_each_node_its_neighbours() {
        assert_eq!(Topology::Line.edges(3), vec![(0, 1), (1, 2)]);
        assert_eq!(Topology::Ring.edges(3), vec![(0, 1), (1, 2), (2, 0)]);
        assert_eq!(Topology::Ring.edges(2), vec![(0, 1)]);
        assert_eq!(Topology::Seed.edges(3), vec![(1, 0), (2, 0)]);
        assert_eq!(Topology::Line.expected(0, 4, 8), 1);
        assert_eq!(Topology::Line.expected(1, 4, 8), 2);
        assert_eq!(Topology::Ring.expected(0, 4, 8), 2);
        assert_eq!(Topology::Seed.expected(0, 4, 8), 3);
        assert_eq!(Topology::Seed.expected(3, 4, 8), 1);
        // Discovery: seeds 0, 1, 2 in a ring, every other node told one of them.
        assert_eq!(
            Topology::Discovery.edges(6),
            vec![(0, 1), (1, 2), (2, 0), (3, 0), (4, 1), (5, 2)]
        );
        assert_eq!(Topology::Discovery.edges(2), vec![(0, 1)]);
        assert_eq!(Topology::Discovery.expected(5, 100, 8), 8);
        assert_eq!(Topology::Discovery.expected(5, 6, 8), 5);
        assert!(Topology::Discovery.discovery() && !Topology::Line.discovery());
    }

    #[test]
    fn pings_slow_down_with_the_node_count() {
        let ip = Ipv4Addr::new(127, 0, 0, 2);
        assert_eq!(devnet_net_config_for(ip, 8), devnet_net_config(ip));
        let big = devnet_net_config_for(ip, 100);
        assert_eq!(big.ping_interval_ms, 13 * DEVNET_PING_INTERVAL_MS);
        assert!(big.ping_timeout_ms >= 5 * big.ping_interval_ms);
        big.validate().unwrap();
    }

    #[test]
    fn connectivity_and_spread() {
        assert!(is_connected(3, &[(0, 1), (2, 1)]));
        assert!(!is_connected(4, &[(0, 1), (2, 3)]));
        assert!(is_connected(1, &[]));
        assert!(!is_connected(2, &[(0, 7)]));
        assert_eq!(spread(&[5, 1, 9, 3]), (1, 5, 9));
        assert_eq!(spread(&[]), (0, 0, 0));
    }

    #[test]
    fn the_fd_limit_is_left_alone_when_enough_and_raised_or_reported_otherwise() {
        assert_eq!(raise_fd_limit(16), None);
        // Far beyond any hard limit: reported (after raising the soft limit, if it was lower).
        let note = raise_fd_limit(u64::MAX / 2).expect("a note");
        assert!(note.contains("hard limit"), "{note}");
    }

    #[test]
    fn node_addresses_stay_in_loopback() {
        assert_eq!(
            node_ip(Ipv4Addr::new(127, 0, 0, 2), 3),
            Ipv4Addr::new(127, 0, 0, 5)
        );
        let mut args = crate::cli::DevnetArgs {
            nodes: 2,
            blocks: 1,
            block_bytes: 1,
            timeout: Duration::from_secs(1),
            base_ip: Ipv4Addr::new(127, 255, 255, 254),
            topology: Topology::Line,
            duration: Duration::ZERO,
            report_every: Duration::from_secs(60),
        };
        assert!(check_args(&args).is_err());
        args.base_ip = Ipv4Addr::new(10, 0, 0, 1);
        assert!(check_args(&args).is_err());
        args.base_ip = Ipv4Addr::new(127, 0, 0, 2);
        check_args(&args).unwrap();
    }
}
