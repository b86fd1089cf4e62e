//! Fuzz target `addr_snapshot`: see `peerlink_fuzz::addr_snapshot` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("addr_snapshot"),
    |data: &[u8]| peerlink_fuzz::addr_snapshot(data)
);
