//! `SourcePolicy`: how the requester treats a source whose answers make no progress, as a plain
//! struct (events in, decisions out, time passed in) with unit and property tests.
//!
//! An empty answer is legal (the responder's chain may have changed), but a source that keeps
//! claiming more than it gives would otherwise be asked again at once, forever: a request storm
//! that costs it nothing. So each answer without progress (an empty `Hashes` or `Blocks` to a
//! request it claimed to be able to answer, a locate that shows it is not ahead) is a *strike*:
//! the source is not asked for `base * 2^(strikes - 1)` (capped at `base * 2^MAX_DOUBLINGS`),
//! and at `max_strikes` strikes in a row it is dropped (the engine disconnects it as
//! `Misbehaving`). Any answer with progress clears its strikes. Records outlive a disconnect (a
//! dropped source that reconnects is at the brink: one more answer without progress drops it
//! again) and are bounded in number: the one whose cooldown ends first is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most doublings of the cooldown.
pub const MAX_DOUBLINGS: u32 = 6;

/// Most sources remembered.
pub const MAX_SOURCE_RECORDS: usize = 1024;

/// What to do with a source after an answer without progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Do not ask it before this instant.
    CoolDown(Instant),
    /// It reached the bound: drop it.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    strikes: u32,
    until: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct SourcePolicy {
    base: Duration,
    max_strikes: u32,
    records: HashMap<IpAddr, Record>,
}

impl SourcePolicy {
    /// A policy with a first cooldown of `base` and a drop at `max_strikes` strikes in a row.
    pub fn new(base: Duration, max_strikes: u32) -> Self {
        Self {
            base,
            max_strikes: max_strikes.max(1),
            records: HashMap::new(),
        }
    }

    /// `peer`'s answer made progress: its strikes are cleared.
    pub fn progress(&mut self, peer: IpAddr) {
        self.records.remove(&peer);
    }

    /// `peer`'s answer made no progress.
    pub fn no_progress(&mut self, peer: IpAddr, now: Instant) -> Verdict {
        if !self.records.contains_key(&peer) && self.records.len() >= MAX_SOURCE_RECORDS {
            let oldest = self
                .records
                .iter()
                .min_by_key(|(_, r)| r.until)
                .map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                self.records.remove(&ip);
            }
        }
        let r = self.records.entry(peer).or_insert(Record {
            strikes: 0,
            until: now,
        });
        r.strikes += 1;
        if r.strikes >= self.max_strikes {
            // Remembered at the brink with the longest cooldown: back after a reconnect, its
            // next answer without progress drops it again.
            r.strikes = self.max_strikes - 1;
            r.until = now + self.base * (1u32 << MAX_DOUBLINGS);
            return Verdict::Drop;
        }
        r.until = now + self.base * (1u32 << (r.strikes - 1).min(MAX_DOUBLINGS));
        Verdict::CoolDown(r.until)
    }

    /// Whether `peer` may be asked at `now`.
    pub fn available(&self, peer: IpAddr, now: Instant) -> bool {
        self.records.get(&peer).is_none_or(|r| r.until <= now)
    }

    /// Strikes of `peer` in a row.
    pub fn strikes(&self, peer: IpAddr) -> u32 {
        self.records.get(&peer).map_or(0, |r| r.strikes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: Duration = Duration::from_millis(100);

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn cooldowns_double_and_the_source_is_dropped_at_the_bound() {
        let mut p = SourcePolicy::new(BASE, 4);
        let t0 = Instant::now();
        assert_eq!(p.no_progress(ip(1), t0), Verdict::CoolDown(t0 + BASE));
        assert!(!p.available(ip(1), t0));
        assert!(p.available(ip(1), t0 + BASE));
        assert_eq!(p.no_progress(ip(1), t0), Verdict::CoolDown(t0 + BASE * 2));
        assert_eq!(p.no_progress(ip(1), t0), Verdict::CoolDown(t0 + BASE * 4));
        assert_eq!(p.no_progress(ip(1), t0), Verdict::Drop);
        assert!(p.available(ip(2), t0), "others are not affected");
    }

    #[test]
    fn progress_clears_the_strikes() {
        let mut p = SourcePolicy::new(BASE, 3);
        let t0 = Instant::now();
        p.no_progress(ip(1), t0);
        p.no_progress(ip(1), t0);
        p.progress(ip(1));
        assert!(p.available(ip(1), t0));
        assert_eq!(p.no_progress(ip(1), t0), Verdict::CoolDown(t0 + BASE));
    }

    proptest! {
        /// A source that never makes progress is asked at most `max_strikes` times however
        /// long it stays (asked whenever available), and the records stay bounded.
        #[test]
        fn a_source_without_progress_is_asked_a_bounded_number_of_times(
            max in 1u32..10, steps in 1usize..2000, others in 0u16..1500,
        ) {
            let mut p = SourcePolicy::new(BASE, max);
            let t0 = Instant::now();
            for i in 0..others {
                let o = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
                p.no_progress(o, t0);
            }
            prop_assert!(p.records.len() <= MAX_SOURCE_RECORDS);
            let mut asked = 0u32;
            let mut dropped = false;
            for s in 0..steps {
                let now = t0 + Duration::from_millis(10 * s as u64);
                if !dropped && p.available(ip(9), now) {
                    asked += 1;
                    if p.no_progress(ip(9), now) == Verdict::Drop {
                        dropped = true;
                    }
                }
            }
            prop_assert!(asked <= max);
            prop_assert!(p.records.len() <= MAX_SOURCE_RECORDS);
        }
    }
}
