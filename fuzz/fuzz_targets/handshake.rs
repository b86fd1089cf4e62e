//! Fuzz target `handshake`: see `peerlink_fuzz::handshake` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("handshake"),
    |data: &[u8]| peerlink_fuzz::handshake(data)
);
