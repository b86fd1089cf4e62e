//! Fuzz target `addrs`: see `peerlink_fuzz::addrs` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("addrs"),
    |data: &[u8]| peerlink_fuzz::addrs(data)
);
