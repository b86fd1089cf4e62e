//! `SyncConfig`: every tunable of block sync, as a serde struct the node embeds as the `[sync]`
//! section of its TOML file. Durations are integers with their unit in the key (`_ms`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::MAX_BLOCKS_PER_REQUEST;
use crate::chain::block::{block_size, MAX_BLOCK_PAYLOAD_BYTES, WIRE_OVERHEAD_BYTES};
use crate::sync::SyncError;

/// Room left in a frame beyond the blocks of a `Blocks` message (enum tag, request id, array
/// header, App frame header).
pub const RESPONSE_FRAME_MARGIN_BYTES: usize = 1024;

/// Configuration of the sync engine. Unknown keys are rejected when parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// A request unanswered this long is re-sent to another peer and its peer penalised
    /// (excluded for a while, doubling with each stall), in milliseconds.
    pub stall_timeout_ms: u64,
    /// Blocks asked for in one `GetBlocks` (at most `MAX_BLOCKS_PER_REQUEST`).
    pub blocks_per_request: u32,
    /// Requests in flight at once, over all peers.
    pub max_in_flight: usize,
    /// Requests in flight at once to one peer.
    pub max_in_flight_per_peer: usize,
    /// Blocks downloaded ahead of the tip at most (bounds memory: blocks wait here until every
    /// block below them has arrived). Must cover `max_reorg_depth + blocks_per_request`.
    pub window_blocks: u64,
    /// Deepest fork this node switches away from: a better chain whose common ancestor with ours
    /// is more than this many blocks below our tip is ignored (logged). Bounds the blocks held
    /// in memory before a reorg and the cost of a reorg.
    pub max_reorg_depth: u64,
    /// Most bytes of blocks in one `Blocks` answer; must leave a frame margin under the
    /// network's `max_frame_bytes`.
    pub max_response_bytes: usize,
    /// How often stalls are checked and requests scheduled, in milliseconds.
    pub tick_ms: u64,
    /// Random payload bytes of each block this node produces.
    pub payload_bytes: usize,
    /// Interval of the "sync: height x / y" info lines while behind, in milliseconds.
    pub progress_log_interval_ms: u64,
    /// Show an indicatif progress bar while far behind, when stderr is a terminal (when it is
    /// not, the periodic info lines are the only progress report).
    pub progress_bar: bool,
    /// Answer peers' `GetBlocks` / `GetHashes`. `false` makes a node that withholds every
    /// answer: for tests and diagnostics only.
    pub serve: bool,
    /// Largest valid block, in bytes of its stored encoding (152-byte header plus payload).
    /// A larger block is invalid and its sender banned. At most 1 MiB + 152.
    pub max_block_bytes: usize,
    /// How far a block's timestamp may be ahead of our clock, in milliseconds. A block further
    /// ahead is invalid and its sender banned (a block's timestamp may never be before its
    /// parent's either).
    pub max_future_ms: u64,
    /// Answers to requests never made that a connection may send before it is disconnected
    /// and banned (a few are tolerated: a request can be dropped on our side, e.g. when a
    /// round restarts, while its answer is under way).
    pub unrequested_allowance: u32,
    /// Rounds in a row a peer may claim a longer chain it then does not have before it is
    /// disconnected and banned as useless.
    pub useless_allowance: u32,
    /// Most bytes of blocks downloaded ahead of the tip and not yet written (besides the
    /// lowest missing range, which is always fetched): bounds memory when blocks are large or a
    /// source withholds the lowest range. Memory for blocks stays under this plus
    /// `max_in_flight` answers (each at most the network's `max_frame_bytes`).
    pub window_bytes: u64,
    /// Requests of one peer in service at once: answered, with the answers not yet read by the
    /// peer. A peer that does not read is not served further.
    pub serve_in_service_per_peer: usize,
    /// Requests of one peer waiting for service; one more drops the peer (`SlowPeer`).
    pub serve_queue_requests_per_peer: usize,
    /// Bytes of one peer's waiting requests (wire size plus a 128-byte overhead each); more
    /// drops the peer (`SlowPeer`).
    pub serve_queue_bytes_per_peer: usize,
    /// First exclusion of a source whose answer made no progress (empty while it claims more),
    /// in milliseconds; it doubles with each such answer in a row.
    pub no_progress_cooldown_ms: u64,
    /// Answers in a row without progress after which the source is disconnected
    /// (`Misbehaving`).
    pub max_no_progress_answers: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            stall_timeout_ms: 5_000,
            blocks_per_request: 128,
            max_in_flight: 8,
            max_in_flight_per_peer: 2,
            window_blocks: 4_096,
            max_reorg_depth: 100,
            max_response_bytes: 2 * 1024 * 1024,
            tick_ms: 250,
            payload_bytes: 256,
            progress_log_interval_ms: 5_000,
            progress_bar: true,
            serve: true,
            max_block_bytes: 1024 * 1024,
            max_future_ms: 15_000,
            unrequested_allowance: 4,
            useless_allowance: 3,
            window_bytes: 64 * 1024 * 1024,
            serve_in_service_per_peer: 2,
            serve_queue_requests_per_peer: 64,
            serve_queue_bytes_per_peer: 16 * 1024,
            no_progress_cooldown_ms: 500,
            max_no_progress_answers: 6,
        }
    }
}

impl SyncConfig {
    /// Stall timeout as a `Duration`.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// Tick interval as a `Duration`.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// Checks the values against each other and against the frame cap in force.
    pub fn validate(&self, max_frame_bytes: usize) -> Result<(), SyncError> {
        let bad = |key: &'static str, reason: String| Err(SyncError::Config { key, reason });
        if self.blocks_per_request == 0 || self.blocks_per_request > MAX_BLOCKS_PER_REQUEST {
            return bad(
                "blocks_per_request",
                format!("must be between 1 and {MAX_BLOCKS_PER_REQUEST}"),
            );
        }
        if self.max_in_flight == 0 || self.max_in_flight_per_peer == 0 {
            return bad("max_in_flight", "must be positive".into());
        }
        if self.window_blocks < self.max_reorg_depth + u64::from(self.blocks_per_request) {
            return bad(
                "window_blocks",
                "must be at least max_reorg_depth + blocks_per_request".into(),
            );
        }
        let one_block = MAX_BLOCK_PAYLOAD_BYTES + WIRE_OVERHEAD_BYTES;
        if self.max_response_bytes < one_block
            || self.max_response_bytes + RESPONSE_FRAME_MARGIN_BYTES > max_frame_bytes
        {
            return bad(
                "max_response_bytes",
                format!(
                    "must hold one maximum block ({one_block}) and leave \
                     {RESPONSE_FRAME_MARGIN_BYTES} bytes under max_frame_bytes ({max_frame_bytes})"
                ),
            );
        }
        if self.payload_bytes > MAX_BLOCK_PAYLOAD_BYTES {
            return bad(
                "payload_bytes",
                format!("must be at most {MAX_BLOCK_PAYLOAD_BYTES}"),
            );
        }
        let largest = block_size(MAX_BLOCK_PAYLOAD_BYTES);
        if self.max_block_bytes < block_size(0) || self.max_block_bytes > largest {
            return bad(
                "max_block_bytes",
                format!("must be between {} and {largest}", block_size(0)),
            );
        }
        if block_size(self.payload_bytes) > self.max_block_bytes {
            return bad(
                "payload_bytes",
                format!(
                    "blocks of {} payload bytes would exceed max_block_bytes ({})",
                    self.payload_bytes, self.max_block_bytes
                ),
            );
        }
        if self.serve_in_service_per_peer == 0
            || self.serve_queue_requests_per_peer == 0
            || self.serve_queue_bytes_per_peer < 2 * crate::sync::server::REQUEST_OVERHEAD_BYTES
        {
            return bad(
                "serve_queue_requests_per_peer",
                "serve_in_service_per_peer and serve_queue_requests_per_peer must be positive, \
                 serve_queue_bytes_per_peer at least 256"
                    .into(),
            );
        }
        if self.window_bytes < self.max_response_bytes as u64 {
            return bad("window_bytes", "must be at least max_response_bytes".into());
        }
        if self.no_progress_cooldown_ms == 0 || self.max_no_progress_answers == 0 {
            return bad(
                "no_progress_cooldown_ms",
                "no_progress_cooldown_ms and max_no_progress_answers must be positive".into(),
            );
        }
        if self.stall_timeout_ms == 0 || self.tick_ms == 0 {
            return bad(
                "stall_timeout_ms",
                "stall_timeout_ms and tick_ms must be positive".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_actors::wire::DEFAULT_MAX_FRAME_BYTES;

    #[test]
    fn defaults_agree_with_each_other_and_the_frame_cap() {
        SyncConfig::default()
            .validate(DEFAULT_MAX_FRAME_BYTES)
            .unwrap();
        assert!(SyncConfig::default().tick() < SyncConfig::default().stall_timeout());
    }

    #[test]
    fn a_response_bound_above_the_frame_cap_is_refused() {
        let c = SyncConfig {
            max_response_bytes: DEFAULT_MAX_FRAME_BYTES,
            ..SyncConfig::default()
        };
        assert!(c.validate(DEFAULT_MAX_FRAME_BYTES).is_err());
    }
}
