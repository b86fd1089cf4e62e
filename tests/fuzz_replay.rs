//! The fuzz targets (`fuzz/`, see TESTING.md) on every `cargo test`, without libFuzzer: each
//! target's body runs over its seed corpus (PROTOCOL.md's vectors), over every input in
//! `fuzz/regressions/<target>/` (what a fuzzing run once found; each one is a regression
//! test), and over a bounded number of seeded random mutations of the seeds. A panic is a
//! failure: a target panics only when a decoder breaks a promise.

// `fuzz/src/lib.rs` gates its `node` module on the fuzz crate's feature, which this package
// does not have: the node targets come in as a module of their own below.
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code, unexpected_cfgs)]
mod targets;

#[path = "../fuzz/src/node.rs"]
#[allow(dead_code)]
mod node_targets;

// `node.rs` reaches the shared helpers through `super::`, as in the fuzz crate.
use targets::{check_book, seeds, small_book_config, vectors};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SPEC: &str = include_str!("../PROTOCOL.md");

/// Mutations per target: a few seconds in a debug build.
const MUTATIONS: usize = 20_000;

/// Every target, in the order of the seed lists (the libFuzzer binaries of `fuzz/Cargo.toml`,
/// and `addr_record`, replayed only).
const TARGETS: [&str; 11] = [
    "frame_codec",
    "handshake",
    "noise_responder",
    "noise_initiator",
    "secure_record",
    "addrs",
    "addr_snapshot",
    "node_msg",
    "block",
    "ban_record",
    "addr_record",
];

fn all_seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut all = targets::seeds(SPEC);
    all.extend(node_targets::seeds(SPEC));
    all
}

/// Mutations of `name`'s seeds: the secure channel targets run X25519 and AES-GCM per input
/// (a debug build does a few hundred a second), so they get fewer.
fn mutations(name: &str) -> usize {
    match name {
        "noise_responder" | "noise_initiator" | "secure_record" => MUTATIONS / 20,
        _ => MUTATIONS,
    }
}

fn target_fn(name: &str) -> fn(&[u8]) {
    match name {
        "frame_codec" => targets::frame_codec,
        "handshake" => targets::handshake,
        "noise_responder" => targets::noise_responder,
        "noise_initiator" => targets::noise_initiator,
        "secure_record" => targets::secure_record,
        "addrs" => targets::addrs,
        "addr_snapshot" => targets::addr_snapshot,
        "node_msg" => node_targets::node_msg,
        "block" => node_targets::block,
        "ban_record" => node_targets::ban_record,
        "addr_record" => node_targets::addr_record,
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn every_target_has_seeds_from_the_spec() {
    let seeds = all_seeds();
    let names: Vec<&str> = seeds.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, TARGETS);
    for (name, inputs) in &seeds {
        assert!(!inputs.is_empty(), "target {name} has no seed");
    }
    // The handshake seeds reach the post-handshake states (the spec's hello passes the policy).
    let hello = &targets::vectors(SPEC, "```hex")[0];
    let out = peerlink_actors::fuzzing::session_read_path(
        hello,
        7,
        targets::MAX_FRAME_BYTES,
        &targets::spec_policy(),
        targets::OUR_NONCE,
    );
    assert!(out.handshake_done && out.closed.is_none(), "{out:?}");
}

#[test]
fn seeds_and_regressions_replay_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for (name, inputs) in all_seeds() {
        let run = target_fn(name);
        for input in &inputs {
            run(input);
        }
        if let Ok(entries) = std::fs::read_dir(dir.join(name)) {
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                run(&bytes);
            }
        }
    }
}

#[test]
fn mutated_seeds_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed_f022);
    for (name, inputs) in all_seeds() {
        let run = target_fn(name);
        for _ in 0..mutations(name) {
            let mut input = inputs[rng.random_range(0..inputs.len())].clone();
            for _ in 0..rng.random_range(1..8) {
                let len = input.len();
                match rng.random_range(0..4) {
                    0 if len > 0 => input[rng.random_range(0..len)] = rng.random(),
                    1 if len > 0 => input.truncate(rng.random_range(0..len)),
                    2 => input.insert(rng.random_range(0..=len), rng.random()),
                    _ if len > 0 => {
                        let at = rng.random_range(0..len);
                        input[at] = input[at].wrapping_add(1)
                    }
                    _ => input.push(rng.random()),
                }
            }
            run(&input);
        }
    }
}
