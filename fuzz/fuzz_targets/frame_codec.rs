//! Fuzz target `frame_codec`: see `peerlink_fuzz::frame_codec` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerlink_fuzz::frame_codec(data));
