//! Discovery in the node, end to end with real `peerlink run` processes and real redb files:
//! seeds bootstrap a node and are then let go, the address book and the anchors survive a
//! kill -9 and a clean restart, and a damaged stored book gives an empty book with a warning.
//!
//! The shape of every test: a seed `S` (discovery on) and five nodes `A..E` that only dial `S`
//! (discovery off: they neither dial nor gossip, so the node under test is the only one that
//! chooses peers), and the node under test `N` with `target_outbound = 2`. `S` learns the
//! listen addresses of `A..E` from their Hellos; `N` learns them from `S`'s answer to its
//! `GetAddrs`. Every wait polls the admin API with a deadline; a save point is observed through
//! `/status` (`discovery.saves`, `saved_anchors`), never guessed with a sleep. IPs: 127.0.77.x,
//! 127.0.78.x and 127.0.79.x (one range per test, no other suite uses them).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use peerlink::addr_store::RedbAddrStore;
use peerlink_actors::discovery::{AddrBookSnapshot, StoredAddr};
use peerlink_actors::{AddrStore, StoredBook};
use serde_json::Value;

/// Connects and handshakes fast; dials that go nowhere give up within 2 s.
fn base(extra: &str) -> String {
    format!(
        "[network]\nping_interval_ms = 500\nping_timeout_ms = 3000\ndial_tick_ms = 50\n\
         backoff_base_ms = 100\nsession_threads = 1\nconnect_timeout_ms = 1000\n\
         handshake_timeout_ms = 1000\n{extra}"
    )
}

fn discovery(node: &Node) -> Value {
    node.status()["discovery"].clone()
}

fn outbound_ips(node: &Node) -> BTreeSet<IpAddr> {
    node.peers()
        .iter()
        .filter(|p| p["direction"] == "outbound")
        .filter_map(|p| p["ip"].as_str().and_then(|s| s.parse().ok()))
        .collect()
}

fn ips_of(addrs: &Value) -> BTreeSet<IpAddr> {
    addrs
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str()?.parse::<SocketAddr>().ok())
                .map(|s| s.ip())
                .collect()
        })
        .unwrap_or_default()
}

/// `S` on `net.1` and `A..E` on `net.11..=15`, each of `A..E` dialling only `S`; returns when
/// `S` knows all five.
fn seed_and_five(net: u8) -> (Node, Vec<Node>) {
    let s_ip = ip(&format!("127.0.{net}.1"));
    let seed = Node::start(s_ip, free_port(s_ip), &[], &base(""));
    let mut others = Vec::new();
    for last in 11..=15u8 {
        let a = ip(&format!("127.0.{net}.{last}"));
        others.push(Node::start(
            a,
            free_port(a),
            &[seed.listen],
            &base("discovery = false\n"),
        ));
    }
    wait_for("the seed to know the five nodes", || {
        (discovery(&seed)["known"].as_u64()? >= 5).then_some(())
    });
    (seed, others)
}

/// A node told only of a seed learns the addresses and connects to two nodes besides the seed;
/// the seed is dialled once and disconnected by us (`requested`) once it answered; it is not
/// dialled again while the book holds at least 2 x target_outbound addresses (the book has 5,
/// the target is 2: full enough), asserted over 15 more saves (3 s, three discovery ticks).
#[test]
fn seeds_bootstrap_a_node_then_are_let_go() {
    let (seed, others) = seed_and_five(77);
    let others_ips: BTreeSet<IpAddr> = others.iter().map(|n| n.listen.ip()).collect();
    let n_ip = ip("127.0.77.2");
    let node = Node::start(
        n_ip,
        free_port(n_ip),
        &[],
        &base(&format!(
            "target_outbound = 2\naddr_book_save_interval_ms = 200\nseeds = [\"{}\"]\n",
            seed.listen
        )),
    );
    let outbound = wait_for("two outbound peers besides the seed", || {
        let out = outbound_ips(&node);
        (out.len() == 2 && out.is_subset(&others_ips)).then_some(out)
    });
    let d = discovery(&node);
    assert!(d["known"].as_u64().unwrap() >= 5, "{d}");
    assert_eq!(d["seed_dials"], 1, "{d}");
    // We closed the seed connection ourselves once it answered.
    wait_for("the seed connection closed by us", || {
        node.recent_disconnects()
            .iter()
            .any(|r| {
                r["ip"] == seed.listen.ip().to_string()
                    && r["reason"] == "requested"
                    && r["by_peer"] == false
            })
            .then_some(())
    });
    // Not redialled: 15 saves later (200 ms apart, three discovery ticks) still one seed dial,
    // and no outbound connection to the seed.
    let saves = d["saves"].as_u64().unwrap();
    wait_for("15 more saves", || {
        (discovery(&node)["saves"].as_u64()? >= saves + 15).then_some(())
    });
    let d = discovery(&node);
    assert_eq!(d["seed_dials"], 1, "the seed was dialled again: {d}");
    assert!(!outbound_ips(&node).contains(&seed.listen.ip()));
    assert_eq!(outbound_ips(&node), outbound, "the outbound peers stayed");
}

/// The address book and the anchors survive a kill -9 right after an observed save, and a clean
/// restart (whose final save, at shutdown, is the only one that saw the new outbound set).
#[test]
fn the_book_and_anchors_survive_kill9_and_a_clean_restart() {
    let (seed, mut others) = seed_and_five(78);
    let n_ip = ip("127.0.78.2");
    let port = free_port(n_ip);
    let data = tempfile::tempdir().expect("tempdir");
    let fast_saves = |seeds: &str| {
        base(&format!(
            "target_outbound = 2\naddr_book_save_interval_ms = 200\nseeds = [{seeds}]\n"
        ))
    };
    let mut node = Node::start_with(
        n_ip,
        port,
        &[],
        &fast_saves(&format!("\"{}\"", seed.listen)),
        Some(data.path()),
        &[],
    );
    // A save point that holds the whole book and the two outbound peers as anchors.
    let (known, anchors) = wait_for("a save with 5 addresses and 2 anchors", || {
        let d = discovery(&node);
        let anchors = ips_of(&d["saved_anchors"]);
        let known = d["saved_known"].as_u64()?;
        (known >= 5 && anchors.len() == 2 && anchors == outbound_ips(&node))
            .then_some((known, anchors))
    });
    assert!(
        !anchors.contains(&seed.listen.ip()),
        "a seed is never an anchor"
    );
    node.kill9();

    // Restart without seeds or peers: the anchors are dialled first and fill the target (two),
    // and the book is the saved one.
    let node = Node::start_with(n_ip, port, &[], &fast_saves(""), Some(data.path()), &[]);
    let d = discovery(&node);
    assert!(d["loaded"].as_u64().unwrap() >= known, "{d}");
    wait_for("the anchors connected again", || {
        (outbound_ips(&node) == anchors).then_some(())
    });
    assert!(discovery(&node)["known"].as_u64().unwrap() >= known);
    let mut node = node;
    node.terminate();
    assert!(node.log().contains("address book saved at shutdown"));

    // Clean restart with saves an hour apart: only the final save at shutdown records what
    // changes now. One anchor dies; another node takes its place.
    let slow_saves = base("target_outbound = 2\naddr_book_save_interval_ms = 3600000\n");
    let mut node = Node::start_with(n_ip, port, &[], &slow_saves, Some(data.path()), &[]);
    wait_for("the anchors connected again", || {
        (outbound_ips(&node) == anchors).then_some(())
    });
    let dead = *anchors.iter().next().unwrap();
    let victim = others
        .iter_mut()
        .find(|n| n.listen.ip() == dead)
        .expect("an anchor is one of A..E");
    victim.kill9();
    let new_set = wait_within(
        "a replacement for the dead anchor",
        Duration::from_secs(40),
        || {
            let out = outbound_ips(&node);
            (out.len() == 2 && !out.contains(&dead)).then_some(out)
        },
    );
    assert_eq!(discovery(&node)["saves"], 0, "no periodic save ran");
    node.terminate();
    assert!(node.log().contains("address book saved at shutdown"));

    let node = Node::start_with(n_ip, port, &[], &slow_saves, Some(data.path()), &[]);
    let d = discovery(&node);
    assert!(
        d["loaded"].as_u64().unwrap() >= known,
        "the book came back whole: {d}"
    );
    wait_for("the new anchors connected", || {
        (outbound_ips(&node) == new_set).then_some(())
    });
}

/// A stored book that does not decode (a damaged disk): the node logs a warning, starts with an
/// empty book, runs, and its next save replaces the record with a good one.
#[test]
fn a_corrupt_stored_book_gives_an_empty_book_and_a_warning() {
    let n_ip = ip("127.0.79.2");
    let port = free_port(n_ip);
    let data = tempfile::tempdir().expect("tempdir");
    let config = base("addr_book_save_interval_ms = 200\n");
    // First a good record with three addresses, written as the node writes it.
    let mut node = Node::start_with(n_ip, port, &[], &config, Some(data.path()), &[]);
    node.terminate();
    let open = || {
        let db = redb::Database::open(data.path().join("chain.redb")).expect("the chain store");
        RedbAddrStore::new(Arc::new(db))
    };
    let entries = (1..=3u8)
        .map(|i| StoredAddr {
            addr: SocketAddr::new(ip(&format!("127.0.79.{}", 100 + i)), 9),
            source: ip("127.0.79.99"),
            last_seen: 1_800_000_000,
            last_success: 0,
            failures: 0,
            tried: false,
        })
        .collect();
    open()
        .save(&StoredBook {
            book: AddrBookSnapshot {
                secret: [5; 32],
                entries,
            },
            anchors: Vec::new(),
        })
        .expect("save");
    let mut node = Node::start_with(n_ip, port, &[], &config, Some(data.path()), &[]);
    assert_eq!(discovery(&node)["loaded"], 3);
    node.terminate();

    // Damage it: the version byte survives, the rest is cut off.
    let good = open().raw().expect("readable").expect("a record");
    open().put_raw(&good[..good.len() / 2]).expect("write");
    let node = Node::start_with(n_ip, port, &[], &config, Some(data.path()), &[]);
    let d = discovery(&node);
    assert_eq!(
        (d["loaded"].as_u64(), d["known"].as_u64()),
        (Some(0), Some(0)),
        "{d}"
    );
    assert!(
        node.log().contains("address book store unreadable"),
        "{}",
        node.log()
    );
    wait_for("a save after the damaged record", || {
        (discovery(&node)["saves"].as_u64()? >= 1).then_some(())
    });
    let mut node = node;
    node.terminate();
    assert!(open().load().expect("the record decodes again").is_some());
}
