//! The bodies of the fuzz targets and the seed corpus, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by the root package's `tests/fuzz_replay.rs`, which replays the seeds,
//! the regression inputs in `fuzz/regressions/` and a bounded number of mutations on every
//! `cargo test` (so CI checks the targets without building libFuzzer).
//!
//! Every target takes arbitrary bytes, must never panic on them, and asserts what the decoder
//! promises: frames never exceed the cap in force, what decodes re-encodes to itself, the
//! batching codec yields the same frames as the plain one.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use peerlink::app::NodeMsg;
use peerlink::chain::block::Block;
use peerlink_actors::fuzzing::{
    decode_app, session_read_path, BytesMut, Decoder, Frame, FrameBatchCodec, FrameCodec,
    HelloPolicy, MAX_HANDSHAKE_FRAME_BYTES,
};

/// The frame cap after the handshake (the default `network.max_frame_bytes`, 4 MiB).
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// Our nonce in the handshake target: a Hello carrying it is a self-connection.
pub const OUR_NONCE: u64 = 42;

/// The Hello policy of the handshake target: the magic and genesis of PROTOCOL.md's `hello`
/// vector, so that the seed reaches the post-handshake states.
pub fn spec_policy() -> HelloPolicy {
    let mut genesis = [0u8; 32];
    for (i, g) in genesis.iter_mut().enumerate() {
        *g = i as u8;
    }
    HelloPolicy {
        magic: *b"plnk",
        genesis,
    }
}

/// Target `frame_codec`: byte 0 picks the cap (bit 0: before or after the handshake) and the
/// read size (bits 1..7); the rest is the byte stream from a peer. Asserts: no frame longer
/// than the cap is yielded; the plain and the batching codec yield the same frames and fail
/// on the same input; every frame that decodes survives encode and decode unchanged.
pub fn frame_codec(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let cap = if mode & 1 == 0 {
        MAX_HANDSHAKE_FRAME_BYTES
    } else {
        MAX_FRAME_BYTES
    };
    let chunk = usize::from(mode >> 1) + 1;
    let mut plain = FrameCodec::new(Arc::new(AtomicUsize::new(cap)));
    let mut batch = FrameBatchCodec::new(
        Arc::new(AtomicUsize::new(cap)),
        Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    let (mut from_plain, mut from_batch) = (Vec::new(), Vec::new());
    let (mut plain_failed, mut batch_failed) = (false, false);
    for piece in stream.chunks(chunk) {
        if !plain_failed {
            a.extend_from_slice(piece);
            loop {
                match plain.decode(&mut a) {
                    Ok(Some(body)) => from_plain.push(body),
                    Ok(None) => break,
                    Err(_) => {
                        plain_failed = true;
                        break;
                    }
                }
            }
        }
        if !batch_failed {
            b.extend_from_slice(piece);
            loop {
                match batch.decode(&mut b) {
                    Ok(Some(bodies)) => from_batch.extend(bodies),
                    Ok(None) => break,
                    Err(_) => {
                        batch_failed = true;
                        break;
                    }
                }
            }
        }
    }
    assert_eq!(from_plain, from_batch, "plain and batching codecs disagree");
    assert_eq!(plain_failed, batch_failed, "only one codec failed");
    for body in from_plain {
        assert!(body.len() <= cap, "frame of {} over cap {cap}", body.len());
        if let Ok(frame) = Frame::decode(body.clone()) {
            let wire = frame.encode();
            let again = Frame::decode(wire.slice(4..));
            assert_eq!(again.ok(), Some(frame), "frame changes through encode");
        }
    }
}

/// Target `handshake`: byte 0 is the read size, the rest the bytes a peer sends from the
/// connection's first byte; runs the session's read path (codec, frames, handshake phases, App
/// payload checks). Asserts (inside the read path): no frame over the cap in force, control
/// frames round-trip. Here: nothing is handled after a close, and post-handshake frames only
/// exist after a handshake.
pub fn handshake(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let out = session_read_path(
        stream,
        usize::from(chunk) + 1,
        MAX_FRAME_BYTES,
        &spec_policy(),
        OUR_NONCE,
    );
    assert!(out.handshake_done || out.frames_after_handshake == 0);
    assert!(out.app_payloads <= out.frames_after_handshake);
}

/// Target `node_msg`: the bytes are an App payload; decodes it as the node's [`NodeMsg`] the
/// way the network does (depth cap, trailing bytes refused). Asserts: what decodes re-encodes
/// and decodes to the same message.
pub fn node_msg(data: &[u8]) {
    if let Ok(msg) = decode_app::<NodeMsg>(data) {
        let again = rmp_serde::to_vec(&msg).expect("a decoded NodeMsg encodes");
        let back: NodeMsg = decode_app(&again).expect("an encoded NodeMsg decodes");
        assert_eq!(back, msg);
    }
}

/// Target `block`: the bytes are a stored block record (chain store); decodes it. Asserts: what
/// decodes re-encodes to exactly the same bytes.
pub fn block(data: &[u8]) {
    if let Ok(b) = Block::decode(data) {
        assert_eq!(b.encode(), data, "block record is not canonical");
    }
}

/// PROTOCOL.md, the source of the seed corpus.
pub const SPEC: &str = include_str!("../../PROTOCOL.md");

/// Writes `target`'s seeds into the directory named by `PEERLINK_FUZZ_SEEDS`, if set (called
/// from each target's libFuzzer init, before the corpus is read; `fuzz/run.sh` sets it).
pub fn write_seeds_from_env(target: &str) {
    let Some(dir) = std::env::var_os("PEERLINK_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, inputs) in seeds(SPEC) {
        if name == target {
            for (i, input) in inputs.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), input).expect("write a seed");
            }
        }
    }
}

/// The seed corpus of every target, from PROTOCOL.md's vectors: `(target, inputs)`.
pub fn seeds(spec: &str) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let frames = vectors(spec, "```hex");
    let msgs = vectors(spec, "```nodemsg");
    let mut frame_seeds = Vec::new();
    for f in &frames {
        for mode in [0u8, 1, 2 * 7, 2 * 7 + 1] {
            frame_seeds.push([vec![mode], f.clone()].concat());
        }
    }
    // A stream: every canonical frame after the spec's hello, read in several sizes.
    let hello = frames.first().cloned().unwrap_or_default();
    let mut handshake_seeds = Vec::new();
    for f in &frames {
        for chunk in [0u8, 3, 255] {
            handshake_seeds.push([vec![chunk], hello.clone(), f.clone()].concat());
        }
    }
    let all: Vec<u8> = frames.iter().skip(1).flatten().copied().collect();
    handshake_seeds.push([vec![16], hello, all].concat());
    let mut block_seeds = Vec::new();
    for m in &msgs {
        if let Ok(NodeMsg::Blocks { blocks, .. }) = decode_app::<NodeMsg>(m) {
            block_seeds.extend(blocks.iter().map(Block::encode));
        }
    }
    vec![
        ("frame_codec", frame_seeds),
        ("handshake", handshake_seeds),
        ("node_msg", msgs),
        ("block", block_seeds),
    ]
}

/// The bytes of every vector block opening with `fence` (` ```hex ` or ` ```nodemsg `).
pub fn vectors(spec: &str, fence: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        if !line.trim().starts_with(fence) {
            continue;
        }
        let mut digits = String::new();
        for body in lines.by_ref() {
            if body.trim() == "```" {
                break;
            }
            let data = body.split('#').next().unwrap_or("");
            digits.extend(data.chars().filter(|c| !c.is_whitespace()));
        }
        let bytes: Option<Vec<u8>> = (0..digits.len() / 2)
            .map(|i| u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        out.extend(bytes);
    }
    out
}
