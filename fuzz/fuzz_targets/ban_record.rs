//! Fuzz target `ban_record`: see `peerlink_fuzz::node::ban_record` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("ban_record"),
    |data: &[u8]| peerlink_fuzz::node::ban_record(data)
);
