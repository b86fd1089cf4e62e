//! Fuzz target `noise_responder`: see `peerlink_fuzz::noise_responder` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("noise_responder"),
    |data: &[u8]| peerlink_fuzz::noise_responder(data)
);
