//! Fuzz target `block`: see `peerlink_fuzz::node::block` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("block"),
    |data: &[u8]| peerlink_fuzz::node::block(data)
);
