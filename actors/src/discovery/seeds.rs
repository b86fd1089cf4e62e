//! `SeedPlan`: when to dial a seed. Seeds (`[network] seeds`) are for bootstrap only, like
//! Bitcoin's `-seednode`: a seed is dialled only while the address book is short (fewer than
//! `min_book` addresses besides the seeds) and the node is below its outbound target; one seed
//! at a time, in turn, with a delay between seed dials that doubles from `retry_base_ms` up to
//! `retry_max_ms`. Once the book is full enough the seeds are left alone for good (unless the
//! book runs short again, say after a long downtime aged it out). The discovery actor closes a
//! seed connection once the seed has answered our `GetAddrs` (or after `linger_ms`), never keeps
//! it as an outbound peer, never picks a seed from the book and never saves one as an anchor.

use std::net::SocketAddr;

use super::canonical_addr;

/// Seed dialling tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedConfig {
    /// The book is "full enough" from this many addresses (seeds not counted): no seed is
    /// dialled then. The discovery actor uses twice the outbound target: enough to choose the
    /// outbound peers among distinct groups with some left for feelers and failures.
    pub min_book: usize,
    /// Delay after the first seed dial before another one, milliseconds.
    pub retry_base_ms: u64,
    /// Longest delay between seed dials, milliseconds.
    pub retry_max_ms: u64,
    /// A seed connection is closed this long after it opened even if the seed never answered,
    /// milliseconds.
    pub linger_ms: u64,
}

impl SeedConfig {
    /// The defaults for a node keeping `target_outbound` outbound peers: `min_book` twice the
    /// target, 10 s doubling to 10 min between seed dials, 30 s linger.
    pub fn for_target(target_outbound: usize) -> Self {
        Self {
            min_book: (2 * target_outbound).max(1),
            retry_base_ms: 10_000,
            retry_max_ms: 600_000,
            linger_ms: 30_000,
        }
    }
}

/// The seed dial policy of one node.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    config: SeedConfig,
    seeds: Vec<SocketAddr>,
    next: usize,
    dials: u32,
    next_at_ms: u64,
}

impl SeedPlan {
    /// A plan over `seeds` (canonicalized; duplicates dropped).
    pub fn new(config: SeedConfig, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        let mut list: Vec<SocketAddr> = Vec::new();
        for s in seeds.into_iter().map(canonical_addr) {
            if !list.contains(&s) {
                list.push(s);
            }
        }
        Self {
            config,
            seeds: list,
            next: 0,
            dials: 0,
            next_at_ms: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SeedConfig {
        &self.config
    }

    /// The seeds.
    pub fn seeds(&self) -> &[SocketAddr] {
        &self.seeds
    }

    /// Whether `addr`'s IP is a seed's.
    pub fn is_seed(&self, addr: SocketAddr) -> bool {
        let addr = canonical_addr(addr);
        self.seeds.iter().any(|s| s.ip() == addr.ip())
    }

    /// Seed dials decided so far.
    pub fn dials(&self) -> u32 {
        self.dials
    }

    /// The seed to dial now, if any. `book_len` counts the book's addresses that are not
    /// seeds; `outbound` the outbound peers and dials under way; `busy` is true for seeds that
    /// are connected or being dialled.
    pub fn next_dial(
        &mut self,
        book_len: usize,
        outbound: usize,
        target_outbound: usize,
        busy: impl Fn(SocketAddr) -> bool,
        now_ms: u64,
    ) -> Option<SocketAddr> {
        if self.seeds.is_empty()
            || book_len >= self.config.min_book
            || outbound >= target_outbound
            || now_ms < self.next_at_ms
            || self.seeds.iter().any(|s| busy(*s))
        {
            return None;
        }
        let seed = self.seeds[self.next % self.seeds.len()];
        self.next = (self.next + 1) % self.seeds.len();
        let shift = self.dials.min(16);
        let delay = self
            .config
            .retry_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.config.retry_max_ms);
        self.dials = self.dials.saturating_add(1);
        self.next_at_ms = now_ms.saturating_add(delay);
        Some(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seed(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 3, n], 7000))
    }

    fn plan() -> SeedPlan {
        SeedPlan::new(SeedConfig::for_target(4), [seed(1), seed(2), seed(1)])
    }

    #[test]
    fn seeds_in_turn_while_the_book_is_short_with_growing_delays() {
        let mut p = plan();
        assert_eq!(p.next_dial(0, 0, 4, |_| false, 0), Some(seed(1)));
        // Not again before the retry delay, even if the book is still empty.
        assert_eq!(p.next_dial(0, 0, 4, |_| false, 9_999), None);
        assert_eq!(p.next_dial(0, 0, 4, |_| false, 10_000), Some(seed(2)));
        // The delay doubled.
        assert_eq!(p.next_dial(0, 0, 4, |_| false, 29_999), None);
        assert_eq!(p.next_dial(0, 0, 4, |_| false, 30_000), Some(seed(1)));
        assert_eq!(p.dials(), 3);
    }

    #[test]
    fn no_seed_once_the_book_is_full_enough_or_outbound_is_full() {
        let mut p = plan();
        let min = p.config().min_book;
        assert_eq!(min, 8);
        assert_eq!(p.next_dial(min, 0, 4, |_| false, 0), None);
        assert_eq!(p.next_dial(0, 4, 4, |_| false, 0), None);
        assert_eq!(p.next_dial(min - 1, 3, 4, |_| false, 0), Some(seed(1)));
    }

    #[test]
    fn never_while_a_seed_is_connected_or_dialled() {
        let mut p = plan();
        assert_eq!(p.next_dial(0, 0, 4, |a| a == seed(2), 0), None);
        assert!(p.is_seed("[::ffff:127.0.3.2]:1".parse().unwrap()));
        assert!(!p.is_seed(seed(3)));
    }

    proptest! {
        /// Over any history, seed dials are at least `retry_base_ms` apart, and none happens
        /// while the book holds `min_book` addresses.
        #[test]
        fn seed_dials_are_spaced_and_stop_when_the_book_is_full(
            steps in proptest::collection::vec((0usize..20, 0usize..6, 0u64..20_000), 1..200),
        ) {
            let mut p = plan();
            let mut now = 0u64;
            let mut last: Option<u64> = None;
            for (book, outbound, dt) in steps {
                now += dt;
                if let Some(s) = p.next_dial(book, outbound, 4, |_| false, now) {
                    prop_assert!(p.is_seed(s));
                    prop_assert!(book < p.config().min_book);
                    prop_assert!(outbound < 4);
                    if let Some(l) = last {
                        prop_assert!(now - l >= p.config().retry_base_ms);
                    }
                    last = Some(now);
                }
            }
        }
    }
}
