//! What the rest of the crate says to a session and reads from it: the [`Close`] and
//! [`WriterFailed`] messages and the session's live counters ([`SessionStats`], read as
//! [`PeerStats`]). Kept apart from `session.rs` so that the handle and the registry, which the
//! session uses, do not import the session back: the only import circle left in the crate is
//! the peer handle and its broadcast lanes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::reason::DisconnectReason;

/// Live counters of one session, shared with the registry for snapshots (atomics, no lock).
#[derive(Debug, Default)]
pub struct SessionStats {
    pub(crate) rtt_us: AtomicU64,
    /// Lowest round trip measured, microseconds (0 = none yet); read by eviction.
    min_rtt_us: AtomicU64,
    pub(crate) pings_sent: AtomicU64,
    pub(crate) pongs_matched: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
}

/// A peer's counters at one instant: the session's live counters and its writer's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    /// Last round trip time.
    pub rtt: Option<Duration>,
    /// Pings sent.
    pub pings_sent: u64,
    /// Pongs matched.
    pub pongs_matched: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl SessionStats {
    /// Records a measured round trip (the session is the one writer).
    pub(crate) fn record_rtt(&self, rtt: Duration) {
        let us = (rtt.as_micros() as u64).max(1);
        self.rtt_us.store(us, Ordering::Relaxed);
        let min = self.min_rtt_us.load(Ordering::Relaxed);
        if min == 0 || us < min {
            self.min_rtt_us.store(us, Ordering::Relaxed);
        }
    }

    /// Lowest round trip measured so far, if any.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        let us = self.min_rtt_us.load(Ordering::Relaxed);
        (us > 0).then(|| Duration::from_micros(us))
    }

    /// Reads the counters, with the writer's byte count.
    pub fn snapshot(&self, bytes_out: u64) -> PeerStats {
        let rtt_us = self.rtt_us.load(Ordering::Relaxed);
        PeerStats {
            rtt: (rtt_us > 0).then(|| Duration::from_micros(rtt_us)),
            pings_sent: self.pings_sent.load(Ordering::Relaxed),
            pongs_matched: self.pongs_matched.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
        }
    }
}

/// Close the session with a reason (sent to the peer when the socket works).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct Close {
    /// Why.
    pub reason: DisconnectReason,
}

/// The writer task failed to write; the connection is gone.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct WriterFailed {
    pub error: String,
}
