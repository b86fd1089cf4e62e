//! End-to-end acceptance tests of block sync through the `peerlink` binary: `peerlink produce`
//! builds a chain offline, `peerlink run` serves it, a fresh node syncs it, survives SIGKILL
//! halfway and resumes from its stored height; `--produce-every` grows a chain that a peer
//! follows; `peerlink devnet` succeeds on a 5-node line and on 12 nodes found by discovery, and
//! fails clearly on a timeout. Real processes on 127.0.3.x (this suite's range), bounded waits
//! on the admin API.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use peerlink::chain::producer::parse_public_key;
use peerlink::chain::{to_hex, ChainParams, ChainStore};

/// Network name of the chains in this suite (the default of `peerlink run`).
const NETWORK: &str = "devnet";

/// Chain served by node A in the kill test: 1 KiB blocks, enough that the throttled sync
/// below takes a few seconds in a debug build, so that the kill lands halfway.
const KILL_TEST_BLOCKS: u64 = 20_000;

/// Node B's sync, throttled: one request of 16 blocks in flight at a time.
const THROTTLED_SYNC: &str = "[sync]\nblocks_per_request = 16\nmax_in_flight = 1\n\
                              max_in_flight_per_peer = 1\ntick_ms = 50\n";

/// Longest wait for a sync to finish or a process to exit in this suite.
const SYNC_LIMIT: Duration = Duration::from_secs(40);

/// Runs `peerlink` with `args` to completion (bounded by `limit`); returns status and stdout.
fn run_to_end(args: &[&str], limit: Duration) -> (std::process::ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_peerlink"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn peerlink");
    let mut guard = KillOnDrop(child);
    let status = wait_within(&format!("peerlink {args:?} to exit"), limit, || {
        guard.0.try_wait().expect("try_wait")
    });
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out_path), read(&err_path))
}

/// Kills the child on drop (a failing test leaves nothing running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `peerlink keygen` into `dir`; returns the printed public key (hex).
pub fn keygen(dir: &Path) -> String {
    let (status, out, err) = run_to_end(
        &["keygen", "--data-dir", &dir.display().to_string()],
        SYNC_LIMIT,
    );
    assert!(status.success(), "keygen failed: {err}");
    out.lines()
        .find_map(|l| l.strip_prefix("public key "))
        .unwrap_or_else(|| panic!("no public key line in: {out}"))
        .trim()
        .to_string()
}

/// The chain parameters of this suite's network with the producer `key` (hex).
fn params(key: &str) -> ChainParams {
    ChainParams::new(NETWORK, [parse_public_key(key).expect("valid key")])
}

/// `peerlink produce` into `dir` (which holds a producer key); returns the printed (height,
/// tip hex).
fn produce(dir: &Path, blocks: u64, bytes: usize) -> (u64, String) {
    let (status, out, err) = run_to_end(
        &[
            "produce",
            "--blocks",
            &blocks.to_string(),
            "--block-bytes",
            &bytes.to_string(),
            "--data-dir",
            &dir.display().to_string(),
            "--network",
            NETWORK,
        ],
        SYNC_LIMIT,
    );
    assert!(status.success(), "produce failed: {err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no `{name}` line in: {out}"))
            .trim()
            .to_string()
    };
    let height = field("height ").parse().expect("numeric height");
    (height, field("tip "))
}

fn height(node: &Node) -> u64 {
    node.status()["height"].as_u64().expect("numeric height")
}

/// The value of the sample `name` in the node's /metrics.
fn metric(node: &Node, name: &str) -> f64 {
    let text = node.get("/metrics").expect("GET /metrics");
    parse_metrics(&text)
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn a_node_killed_mid_sync_resumes_from_its_stored_height() {
    let work = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (work.path().join("a"), work.path().join("b"));
    let key = keygen(&a_dir);
    let producer = ["--producer", key.as_str()];
    let (tip_height, tip) = produce(&a_dir, KILL_TEST_BLOCKS, 1024);
    assert_eq!(tip_height, KILL_TEST_BLOCKS);

    // A serves the chain `peerlink produce` built; B (fresh) syncs it from A.
    let (a_ip, b_ip) = (ip("127.0.3.2"), ip("127.0.3.3"));
    let a = Node::start_with(
        a_ip,
        free_port(a_ip),
        &[],
        FAST_PINGS,
        Some(&a_dir),
        &producer,
    );
    let a_status = a.status();
    assert_eq!(a_status["height"], KILL_TEST_BLOCKS);
    assert_eq!(a_status["tip"], tip.as_str());
    let b_config = format!("{FAST_PINGS}{THROTTLED_SYNC}");
    let b_port = free_port(b_ip);
    let mut b = Node::start_with(
        b_ip,
        b_port,
        &[a.listen],
        &b_config,
        Some(&b_dir),
        &producer,
    );

    // SIGKILL B once it holds between 10 % and 90 % of the chain.
    let (low, high) = (KILL_TEST_BLOCKS / 10, KILL_TEST_BLOCKS * 9 / 10);
    let seen = wait_within(
        "B to be between 10 % and 90 % of the chain",
        SYNC_LIMIT,
        || {
            let h = height(&b);
            assert!(
                h < high,
                "B synced past 90 % ({h}) before the test could kill it"
            );
            (h >= low).then_some(h)
        },
    );
    b.kill9();

    // The store B left behind opens cleanly: a verified prefix, nothing repaired.
    let committed = {
        let store = ChainStore::open(&b_dir, params(&key)).expect("B's store opens after SIGKILL");
        assert_eq!(store.repaired_from(), None, "the store needed repair");
        assert!(store.height() > 0 && store.height() < KILL_TEST_BLOCKS);
        store.height()
    };
    eprintln!("killed B at height {seen} (observed); {committed} committed");

    // Restarted on the same data dir, B resumes from there and downloads only the rest.
    let mut b = Node::start_with(
        b_ip,
        b_port,
        &[a.listen],
        &b_config,
        Some(&b_dir),
        &producer,
    );
    let first = height(&b);
    assert!(
        first >= committed,
        "restarted at {first}, below the stored {committed}"
    );
    let started = Instant::now();
    wait_within("B to reach A's tip after the restart", SYNC_LIMIT, || {
        let s = b.status();
        (s["height"] == KILL_TEST_BLOCKS && s["tip"] == tip.as_str()).then_some(())
    });
    eprintln!(
        "B resumed from {first} and finished in {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(&b, "peerlink_sync_blocks_synced_total"),
        (KILL_TEST_BLOCKS - committed) as f64,
        "blocks below the stored height were downloaded again"
    );
    assert_eq!(metric(&b, "peerlink_sync_height"), KILL_TEST_BLOCKS as f64);

    // After a clean exit the store holds every height exactly once, linked up to A's tip.
    let (status, _) = b.terminate();
    assert!(status.success(), "{}", b.log());
    let store = ChainStore::open(&b_dir, params(&key)).expect("B's store opens");
    assert_eq!(store.repaired_from(), None);
    assert_eq!(store.height(), KILL_TEST_BLOCKS);
    assert_eq!(to_hex(&store.tip_hash()), tip);
    let blocks = store
        .blocks(0, usize::MAX, usize::MAX)
        .expect("readable blocks");
    assert_eq!(blocks.len() as u64, KILL_TEST_BLOCKS + 1);
    assert!(blocks.iter().enumerate().all(|(i, b)| b.height == i as u64));
}

#[test]
fn produce_every_grows_a_chain_that_a_peer_follows() {
    let (c_ip, d_ip) = (ip("127.0.3.4"), ip("127.0.3.5"));
    let c_data = tempfile::tempdir().expect("tempdir");
    let key = keygen(c_data.path());
    let c = Node::start_with(
        c_ip,
        free_port(c_ip),
        &[],
        FAST_PINGS,
        Some(c_data.path()),
        &[
            "--produce-every",
            "50ms",
            "--block-bytes",
            "64",
            "--producer",
            &key,
        ],
    );
    let d = Node::start_with(
        d_ip,
        free_port(d_ip),
        &[c.listen],
        FAST_PINGS,
        None,
        &["--producer", &key],
    );
    wait_for(
        "D to follow C to height 10 or more, on the same tip",
        || {
            let (sc, sd) = (c.status(), d.status());
            let same = sc["tip"] == sd["tip"] && sc["height"] == sd["height"];
            (same && sd["height"].as_u64().unwrap_or(0) >= 10).then_some(())
        },
    );
    assert!(metric(&c, "peerlink_sync_height") >= 10.0);
    assert!(metric(&d, "peerlink_sync_blocks_synced_total") >= 10.0);
    assert_eq!(metric(&c, "peerlink_sync_blocks_synced_total"), 0.0);
}

#[test]
fn devnet_of_five_nodes_reaches_one_tip() {
    let (status, out, err) = run_to_end(
        &[
            "devnet",
            "--nodes",
            "5",
            "--blocks",
            "2000",
            "--base-ip",
            "127.0.3.40",
            "--topology",
            "line",
            "--timeout",
            "30s",
        ],
        SYNC_LIMIT,
    );
    assert!(status.success(), "devnet failed ({status}):\n{out}\n{err}");
    let report = out
        .split("== devnet report")
        .nth(1)
        .unwrap_or_else(|| panic!("no report in:\n{out}"));
    let tip = report
        .lines()
        .find_map(|l| l.strip_prefix("chain: height 2000 tip "))
        .unwrap_or_else(|| panic!("no final chain line in:\n{report}"));
    assert_eq!(tip.len(), 64);
    // One row per node, each at height 2000 on the same tip, one connection per neighbour.
    let rows: Vec<Vec<&str>> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() > 6 && w[1].starts_with("127.0.3.4"))
        .collect();
    assert_eq!(rows.len(), 5, "{report}");
    for (i, w) in rows.iter().enumerate() {
        assert_eq!(w[2], "2000", "{report}");
        assert_eq!(w[3], &tip[..12], "{report}");
        let conns = if i == 0 || i == 4 { "1/1" } else { "2/2" };
        assert_eq!(w[5], conns, "{report}");
    }
    assert!(out.contains("devnet: ok"), "{out}");
}

#[test]
fn devnet_by_discovery_settles_and_reaches_one_tip() {
    // The default topology: each node is told one of 3 seeds and finds the rest by gossip.
    let (status, out, err) = run_to_end(
        &[
            "devnet",
            "--nodes",
            "12",
            "--blocks",
            "500",
            "--base-ip",
            "127.0.3.60",
            "--timeout",
            "30s",
        ],
        SYNC_LIMIT,
    );
    assert!(status.success(), "devnet failed ({status}):\n{out}\n{err}");
    let report = out
        .split("== devnet report")
        .nth(1)
        .unwrap_or_else(|| panic!("no report in:\n{out}"));
    let tip = report
        .lines()
        .find_map(|l| l.strip_prefix("chain: height 500 tip "))
        .unwrap_or_else(|| panic!("no final chain line in:\n{report}"));
    assert!(
        report.contains("peers (Discovery topology)") && report.contains("graph connected"),
        "{report}"
    );
    assert!(
        out.contains("discovery: every node held at least 8 peers"),
        "{out}"
    );
    // One row per node at height 500 on the same tip, at least its target of 8 peers, one
    // connection per IP, and a discovery book (KNOWN) that names every other node.
    let rows: Vec<Vec<&str>> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() > 9 && w[1].starts_with("127.0.3."))
        .collect();
    assert_eq!(rows.len(), 12, "{report}");
    for w in &rows {
        assert_eq!(w[2], "500", "{report}");
        assert_eq!(w[3], &tip[..12], "{report}");
        let (conns, ips) = w[5].split_once('/').expect("CONNS/IPS");
        assert_eq!(conns, ips, "{report}");
        assert!(conns.parse::<usize>().unwrap() >= 8, "{report}");
        assert!(w[8].parse::<usize>().unwrap() >= 8, "{report}");
    }
    assert!(out.contains("devnet: ok"), "{out}");
}

#[test]
fn devnet_timeout_is_a_clear_failure() {
    let (status, out, err) = run_to_end(
        &[
            "devnet",
            "--nodes",
            "2",
            "--blocks",
            "3000",
            "--base-ip",
            "127.0.3.50",
            "--timeout",
            "1ms",
        ],
        SYNC_LIMIT,
    );
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("devnet failed: timed out after 1ms") && err.contains("did not reach height"),
        "{err}"
    );
}
