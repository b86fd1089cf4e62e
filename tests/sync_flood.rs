//! Flood acceptance test, on 127.0.9.x: a real `peerlink run` process serves a chain of 20,000
//! blocks while four draining flooders (distinct IPs) request 1,024-block ranges as fast as
//! their answers come back (16 in flight each) and a non-reader sends requests and never reads.
//! Meanwhile a fresh in-process node syncs the whole chain from it. Asserted: the honest sync
//! completes; new peers keep completing handshakes and `GET /status` keeps answering within
//! bounds; the node's RSS stays under a bound; the non-reader is dropped as a slow peer.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use peerlink::chain::producer::hex;
use peerlink::chain::{genesis_hash, produce, ChainParams, ChainStore, ProducerKey};
use peerlink::flood::{handshake_probe, non_reader, peer_config, Flooders};
use peerlink::sync::{start_node, SyncConfig};

const BLOCKS: u64 = 20_000;
const NETWORK: &str = "devnet";

/// The producer of the served chain (named with `--producer`, so the node's genesis commits
/// to it).
fn key() -> ProducerKey {
    ProducerKey::from_seed([0x91; 32])
}

fn params() -> ChainParams {
    ChainParams::new(NETWORK, [key().public()])
}
/// Before the fix `GET /status` and new handshakes took more than 5 s under this flood.
const LATENCY_BOUND: Duration = Duration::from_secs(3);
const RSS_BOUND_KIB: u64 = 256 * 1024;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

struct HonestReport {
    sync_time: Duration,
    handshakes: Vec<Duration>,
    flood_answers: u64,
}

/// The actix side: flooders, the non-reader, handshake probes and the honest fresh node.
async fn flood_and_sync(target: SocketAddr) -> HonestReport {
    let genesis = genesis_hash(params());
    let ip = |last: u8| IpAddr::from([127, 0, 9, last]);
    let flooders = Flooders::start(
        target,
        &[ip(10), ip(11), ip(12), ip(13)],
        genesis,
        BLOCKS,
        16,
    )
    .await
    .expect("flooders start");
    let non_reader = actix_rt::spawn(non_reader(target, ip(20), genesis, 100_000));
    // The flood is under way before the honest node starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while flooders.answers() < 40 {
        assert!(Instant::now() < deadline, "flooders get answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ChainStore::open(dir.path(), params()).expect("store");
    let mut net = peer_config(ip(2), genesis);
    net.ping_interval_ms = 2_000;
    let honest = start_node(
        net,
        store,
        SyncConfig {
            progress_bar: false,
            ..SyncConfig::default()
        },
    )
    .await
    .expect("honest node starts");
    let started = Instant::now();
    honest.net.connect(target);
    let mut handshakes = Vec::new();
    let mut probe_ip = 30u8;
    loop {
        let s = honest.status().await.expect("status");
        if s.height == BLOCKS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "honest sync stuck at {}",
            s.height
        );
        // A new peer handshakes while the flood goes on (each on a fresh IP).
        let took = handshake_probe(target, ip(probe_ip), genesis, Duration::from_secs(10))
            .await
            .expect("probe starts")
            .expect("a new peer completes its handshake during the flood");
        handshakes.push(took);
        probe_ip = if probe_ip >= 90 { 30 } else { probe_ip + 1 };
    }
    let sync_time = started.elapsed();
    let flood_answers = flooders.answers();
    flooders.stop().await;
    non_reader.abort();
    honest.shutdown().await;
    HonestReport {
        sync_time,
        handshakes,
        flood_answers,
    }
}

#[test]
fn a_flooded_node_serves_an_honest_sync_and_stays_responsive() {
    let data = tempfile::tempdir().expect("temp dir");
    {
        let mut s = ChainStore::open(data.path(), params()).expect("store");
        produce(&mut s, &key(), BLOCKS, 64).expect("produce");
    }
    let node_ip = ip("127.0.9.1");
    let port = free_port(node_ip);
    // Plaintext: the non-reader speaks raw frames (the flooders and probes use plaintext too).
    let config = format!(
        "{}[sync]\nprogress_bar = false\n",
        FAST_PINGS.replacen("[network]\n", "[network]\ntransport = \"plaintext\"\n", 1)
    );
    assert!(
        config.contains("plaintext"),
        "FAST_PINGS starts with [network]"
    );
    let producer = hex(&key().public());
    let mut node = Node::start_with(
        node_ip,
        port,
        &[],
        &config,
        Some(data.path()),
        &["--producer", &producer],
    );
    let pid = node.child.as_ref().expect("running").id();
    let target = SocketAddr::new(node_ip, port);

    let actix_side =
        std::thread::spawn(move || actix_rt::System::new().block_on(flood_and_sync(target)));
    let mut status_latencies = Vec::new();
    let mut max_rss = 0;
    while !actix_side.is_finished() {
        let t = Instant::now();
        node.get("/status")
            .expect("GET /status answers during the flood");
        status_latencies.push(t.elapsed());
        max_rss = max_rss.max(rss_kib(pid));
        // Sampling interval of the probe, not a synchronisation.
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = actix_side.join().expect("actix side");
    let status_max = status_latencies.iter().max().copied().unwrap_or_default();
    let hs_max = report.handshakes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "flood: honest sync of {BLOCKS} blocks in {:?}; {} flood answers; GET /status p99 {:?} \
         max {:?} ({} samples); handshake p99 {:?} max {:?} ({} probes); RSS max {} MiB",
        report.sync_time,
        report.flood_answers,
        p99(status_latencies.clone()),
        status_max,
        status_latencies.len(),
        p99(report.handshakes.clone()),
        hs_max,
        report.handshakes.len(),
        max_rss / 1024
    );
    assert!(report.flood_answers > 0, "the flooders were served too");
    assert!(
        status_max < LATENCY_BOUND,
        "GET /status took {status_max:?}"
    );
    assert!(hs_max < LATENCY_BOUND, "a handshake took {hs_max:?}");
    assert!(max_rss < RSS_BOUND_KIB, "RSS {} MiB", max_rss / 1024);
    // The non-reader was dropped as a slow peer (the flooders drain their answers and the
    // probes close cleanly, so it is the only slow peer).
    wait_for("the non-reader dropped as slow", || {
        let text = node.get("/metrics").ok()?;
        let slow: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("peerlink_disconnects_total{") && l.contains("reason=\"slow_peer\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        (slow >= 1.0).then_some(())
    });
    node.assert_running();
}
