//! The fuzz targets (`fuzz/`, see TESTING.md) on every `cargo test`, without libFuzzer: each
//! target's body runs over its seed corpus (PROTOCOL.md's vectors), over every input in
//! `fuzz/regressions/<target>/` (what a fuzzing run once found; each one is a regression
//! test), and over a bounded number of seeded random mutations of the seeds. A panic is a
//! failure: a target panics only when a decoder breaks a promise.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SPEC: &str = include_str!("../PROTOCOL.md");

/// Mutations per target: a few seconds in a debug build.
const MUTATIONS: usize = 20_000;

fn target_fn(name: &str) -> fn(&[u8]) {
    match name {
        "frame_codec" => targets::frame_codec,
        "handshake" => targets::handshake,
        "node_msg" => targets::node_msg,
        "block" => targets::block,
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn every_target_has_seeds_from_the_spec() {
    let seeds = targets::seeds(SPEC);
    let names: Vec<&str> = seeds.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["frame_codec", "handshake", "node_msg", "block"]);
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
    for (name, inputs) in targets::seeds(SPEC) {
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
    for (name, inputs) in targets::seeds(SPEC) {
        let run = target_fn(name);
        for _ in 0..MUTATIONS {
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
