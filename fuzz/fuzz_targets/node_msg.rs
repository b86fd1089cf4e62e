//! Fuzz target `node_msg`: see `peerlink_fuzz::node::node_msg` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("node_msg"),
    |data: &[u8]| peerlink_fuzz::node::node_msg(data)
);
