//! The monotonic millisecond clock that the actors hand to the plain policies (eviction reads
//! connection ages and useful marks in it). One process-wide origin, so that a time stamped by
//! a session thread (a useful mark on a `PeerHandle`) and one read by the registry on the
//! control plane compare directly; monotonic, so a wall-clock step never makes a peer look old.

use std::sync::OnceLock;
use std::time::Instant;

/// The origin: the first time anything in the process read this clock.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Milliseconds from the origin to `at` (0 for instants before it).
pub(crate) fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(origin()).as_millis() as u64
}

/// Milliseconds from the origin to now.
pub(crate) fn now_ms() -> u64 {
    ms_at(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_monotonic_and_earlier_instants_read_smaller() {
        let before = Instant::now();
        let a = now_ms();
        let b = now_ms();
        assert!(b >= a);
        assert!(ms_at(before) <= a);
        assert!(ms_at(before + std::time::Duration::from_secs(5)) >= a + 4_999);
    }
}
