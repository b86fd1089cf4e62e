//! Fuzz target `noise_initiator`: see `peerlink_fuzz::noise_initiator` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("noise_initiator"),
    |data: &[u8]| peerlink_fuzz::noise_initiator(data)
);
