//! Process faults on real `peerlink run` processes (127.0.13.x, this suite's range): a peer
//! frozen with SIGSTOP and resumed, a node SIGKILLed at random heights of a sync for ten
//! rounds. Nothing may be lost: the frozen peer is dropped for its silence and comes back as
//! exactly one connection on the current tip; the killed node reopens an intact store every
//! time, never below what it had reported, and ends on the producer's tip.

mod common;
mod producer;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use peerlink::chain::{to_hex, ChainStore};
use rand::{Rng, SeedableRng};

const NETWORK: &str = "devnet";

/// How long the peer stays frozen: the low end of the 10-30 s, far past its timeout.
const FREEZE: Duration = Duration::from_secs(10);

/// Ping every 250 ms, give up after 1.5 s.
const LIVENESS: &str = "[network]\nping_interval_ms = 250\nping_timeout_ms = 1500\n\
                        dial_tick_ms = 50\nbackoff_base_ms = 100\nbackoff_max_ms = 500\n\
                        session_threads = 1\n";

/// The killed node's sync, throttled (16 blocks per request, one at a time) so that kills land
/// inside the sync.
const THROTTLED_SYNC: &str = "[sync]\nblocks_per_request = 16\nmax_in_flight = 1\n\
                              max_in_flight_per_peer = 1\ntick_ms = 50\n";

const KILL_ROUNDS: usize = 10;
const KILL_CHAIN_BLOCKS: u64 = 20_000;

/// The test network with its one producer (the genesis commits to it).
fn chain_params() -> peerlink::chain::producer::ChainParams {
    let key = peerlink::chain::producer::parse_public_key(producer::key_hex()).expect("key");
    peerlink::chain::producer::ChainParams::new(NETWORK, [key])
}

fn produce(dir: &Path, blocks: u64) {
    producer::install(dir);
    let status = Command::new(env!("CARGO_BIN_EXE_peerlink"))
        .args([
            "produce",
            "--blocks",
            &blocks.to_string(),
            "--block-bytes",
            "1024",
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(["--producer", producer::key_hex()])
        .stdout(Stdio::null())
        .status()
        .expect("run peerlink produce");
    assert!(status.success());
}

/// `path` as JSON, or `None` if the admin API did not answer this time (a node just resumed or
/// a loaded machine may miss one poll; the bounded wait around every poll catches a node that
/// stays silent, and a dead one's log is printed when the test fails).
fn try_json(node: &Node, path: &str) -> Option<serde_json::Value> {
    match node.get(path) {
        Ok(body) => serde_json::from_str(&body).ok(),
        Err(e) => {
            eprintln!("GET {path} on {}: {e:?} (polling again)", node.listen);
            None
        }
    }
}

fn try_tip(node: &Node) -> Option<(u64, String)> {
    let s = try_json(node, "/status")?;
    Some((s["height"].as_u64()?, s["tip"].as_str()?.to_string()))
}

fn tip(node: &Node) -> (u64, String) {
    wait_for("a status answer", || try_tip(node))
}

fn try_peer_ips(node: &Node) -> Option<Vec<String>> {
    let p = try_json(node, "/peers")?;
    Some(
        p["peers"]
            .as_array()?
            .iter()
            .map(|p| p["ip"].as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

fn signal(node: &Node, sig: &str) {
    let pid = node.child.as_ref().expect("running").id();
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
}

/// B is frozen (SIGSTOP) for 10 s while A keeps producing: A drops B for its silence with
/// `ping_timeout` within interval + timeout (plus polling slack); after SIGCONT they hold
/// exactly one connection to each other again and B catches up with A's tip.
#[test]
fn a_frozen_peer_is_dropped_then_rejoins_once_and_catches_up() {
    let work = tempfile::tempdir().unwrap();
    produce(&work.path().join("a"), 200);
    let (a_ip, b_ip) = (ip("127.0.13.2"), ip("127.0.13.3"));
    let a = Node::start_with(
        a_ip,
        free_port(a_ip),
        &[],
        LIVENESS,
        Some(&work.path().join("a")),
        &[
            "--produce-every",
            "200ms",
            "--producer",
            producer::key_hex(),
        ],
    );
    let mut b = Node::start_with(
        b_ip,
        free_port(b_ip),
        &[a.listen],
        LIVENESS,
        None,
        &["--producer", producer::key_hex()],
    );
    wait_for("a and b connected, b synced", || {
        let ok = try_peer_ips(&a)? == [b_ip.to_string()]
            && try_peer_ips(&b)? == [a_ip.to_string()]
            && try_tip(&b)?.0 >= 200;
        ok.then_some(())
    });

    signal(&b, "STOP");
    let frozen = Instant::now();
    // Resume B on every exit path, so that a failing assertion does not leave it stopped.
    struct Cont<'a>(&'a Node);
    impl Drop for Cont<'_> {
        fn drop(&mut self) {
            if let Some(c) = &self.0.child {
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
            }
        }
    }
    let cont = Cont(&b);
    let dropped = wait_for("a to drop the frozen b", || {
        try_peer_ips(&a)?.is_empty().then(|| frozen.elapsed())
    });
    assert!(
        dropped <= Duration::from_millis(250 + 1_500 + 1_500),
        "a noticed after {dropped:?}"
    );
    let reasons: Vec<String> = a
        .recent_disconnects()
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(reasons, ["ping_timeout"]);
    // The freeze itself (the fault, not a synchronisation): the rest of the 10 s.
    std::thread::sleep(FREEZE.saturating_sub(frozen.elapsed()));
    let a_height_at_resume = tip(&a).0;
    drop(cont);

    wait_for("exactly one connection again, b on a's tip", || {
        let one =
            try_peer_ips(&a)? == [b_ip.to_string()] && try_peer_ips(&b)? == [a_ip.to_string()];
        let (ta, tb) = (try_tip(&a)?, try_tip(&b)?);
        (one && tb.0 >= a_height_at_resume && ta == tb).then_some(())
    });
    b.assert_running();
    assert!(
        b.recent_disconnects().len() <= 1,
        "{:?}",
        b.recent_disconnects()
    );
}

/// B syncs 20,000 blocks from A and is SIGKILLed at ten random heights of that sync (one
/// restart per round). After every kill its store opens without repair at a height no lower
/// than B last reported, with a block hash at every height up to it; restarted, B resumes
/// from there; finally it holds A's tip.
#[test]
fn ten_sigkills_at_random_points_of_a_sync_leave_an_intact_chain() {
    let seed: u64 = rand::random();
    eprintln!("kill heights seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let work = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (work.path().join("a"), work.path().join("b"));
    produce(&a_dir, KILL_CHAIN_BLOCKS);
    let (a_ip, b_ip) = (ip("127.0.13.4"), ip("127.0.13.5"));
    let a = Node::start_with(
        a_ip,
        free_port(a_ip),
        &[],
        LIVENESS,
        Some(&a_dir),
        &["--producer", producer::key_hex()],
    );
    let target = tip(&a);
    assert_eq!(target.0, KILL_CHAIN_BLOCKS);
    // Ten kill heights spread over the sync: one in each tenth of the chain's first 90 %.
    let step = KILL_CHAIN_BLOCKS * 9 / 10 / KILL_ROUNDS as u64;
    let heights: Vec<u64> = (0..KILL_ROUNDS as u64)
        .map(|r| r * step + rng.random_range(1..step))
        .collect();
    let config = format!("{LIVENESS}{THROTTLED_SYNC}");
    let b_port = free_port(b_ip);
    let mut last_committed = 0;
    for (round, &kill_at) in heights.iter().enumerate() {
        let mut b = Node::start_with(
            b_ip,
            b_port,
            &[a.listen],
            &config,
            Some(&b_dir),
            &["--producer", producer::key_hex()],
        );
        let start_height = tip(&b).0;
        assert!(
            start_height >= last_committed,
            "round {round}: restarted at {start_height}, below the stored {last_committed}"
        );
        let seen = wait_within(
            "b to reach the kill height",
            Duration::from_secs(60),
            || {
                let h = try_tip(&b)?.0;
                (h >= kill_at).then_some(h)
            },
        );
        b.kill9();
        let store =
            ChainStore::open(&b_dir, chain_params()).expect("b's store opens after SIGKILL");
        assert_eq!(
            store.repaired_from(),
            None,
            "round {round}: store needed repair"
        );
        assert!(
            store.height() >= seen,
            "round {round}: reported {seen}, stored {}",
            store.height()
        );
        for h in (0..=store.height()).step_by(997) {
            assert!(store.hash_at(h).is_some(), "round {round}: no block at {h}");
        }
        last_committed = store.height();
        eprintln!("round {round}: killed at reported {seen}, stored {last_committed}");
    }
    let b = Node::start_with(
        b_ip,
        b_port,
        &[a.listen],
        &config,
        Some(&b_dir),
        &["--producer", producer::key_hex()],
    );
    wait_within("b on a's tip", Duration::from_secs(90), || {
        (try_tip(&b)? == target).then_some(())
    });
    drop(b);
    let store = ChainStore::open(&b_dir, chain_params()).unwrap();
    assert_eq!(to_hex(&store.tip_hash()), target.1);
}
