//! Fuzz target `frame_codec`: see `peerlink_fuzz::frame_codec` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("frame_codec"),
    |data: &[u8]| peerlink_fuzz::frame_codec(data)
);
