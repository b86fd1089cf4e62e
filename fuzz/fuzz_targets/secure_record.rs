//! Fuzz target `secure_record`: see `peerlink_fuzz::secure_record` for what it feeds and what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: peerlink_fuzz::write_seeds_from_env("secure_record"),
    |data: &[u8]| peerlink_fuzz::secure_record(data)
);
