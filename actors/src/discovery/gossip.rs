//! `AddrGossip`: the rules of address gossip, per connection. A node answers `GetAddrs` on a
//! given connection at most once per `answer_interval_ms`, with at most 1,000 live addresses,
//! never the asker's own. Incoming addresses pass a per-connection token bucket (Bitcoin Core's:
//! 0.1 address per second, burst 1,000); the excess is dropped, never stored, so a peer that
//! floods addresses costs a bounded amount of book churn. Small unsolicited announcements of
//! fresh addresses (a node advertising itself) are relayed to a couple of other peers, which is
//! how a new node's address spreads beyond its first neighbours.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rand::Rng;

use super::addr_book::{AddrBook, KnownAddr};
use super::TokenBucket;
use crate::ConnId;

/// Most addresses in one `Addrs` answer (and on the wire).
pub const MAX_ADDRS_PER_MESSAGE: usize = 1_000;

/// Gossip tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GossipConfig {
    /// A connection gets at most one `GetAddrs` answer per this interval.
    pub answer_interval_ms: u64,
    /// Most addresses per answer.
    pub max_per_answer: usize,
    /// Incoming addresses per second per connection (token refill).
    pub rate_per_s: f64,
    /// Token bucket size (and the tokens a new connection starts with, since both sides ask
    /// once on connect).
    pub burst: f64,
    /// How often a node advertises its own listen address to its peers.
    pub advertise_interval_ms: u64,
    /// An announcement of at most this many addresses, all seen within `relay_fresh_s`, is
    /// relayed.
    pub relay_max_items: usize,
    /// See `relay_max_items`.
    pub relay_fresh_s: u64,
    /// Peers each relayed announcement goes to.
    pub relay_fanout: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            answer_interval_ms: 10 * 60 * 1000,
            max_per_answer: MAX_ADDRS_PER_MESSAGE,
            rate_per_s: 0.1,
            burst: 1_000.0,
            advertise_interval_ms: 10 * 60 * 1000,
            relay_max_items: 10,
            relay_fresh_s: 10 * 60,
            relay_fanout: 2,
        }
    }
}

#[derive(Debug, Clone)]
struct PeerGossip {
    answered_at: Option<u64>,
    tokens: TokenBucket,
    dropped: u64,
}

/// The gossip rules for every connection of one node.
#[derive(Debug, Clone)]
pub struct AddrGossip {
    config: GossipConfig,
    peers: BTreeMap<ConnId, PeerGossip>,
    next_advertise_ms: Option<u64>,
}

impl AddrGossip {
    /// No connections yet.
    pub fn new(config: GossipConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            next_advertise_ms: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// A connection completed its handshake. A second call for the same connection keeps its
    /// state: its first gossip frame may reach the caller before the news of the connection.
    pub fn on_connect(&mut self, conn: ConnId, now_ms: u64) {
        let burst = self.config.burst;
        self.peers.entry(conn).or_insert_with(|| PeerGossip {
            answered_at: None,
            tokens: TokenBucket::new(burst, now_ms),
            dropped: 0,
        });
    }

    /// Whether `conn` is tracked.
    pub fn knows(&self, conn: ConnId) -> bool {
        self.peers.contains_key(&conn)
    }

    /// A connection closed.
    pub fn on_disconnect(&mut self, conn: ConnId) {
        self.peers.remove(&conn);
    }

    /// Connections tracked.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// `GetAddrs` arrived on `conn` from `asker`: the answer, or `None` when this connection
    /// was answered within the interval (or is unknown).
    pub fn on_get_addrs<R: Rng>(
        &mut self,
        conn: ConnId,
        asker: IpAddr,
        now_ms: u64,
        book: &AddrBook,
        rng: &mut R,
    ) -> Option<Vec<KnownAddr>> {
        let interval = self.config.answer_interval_ms;
        let max = self.config.max_per_answer.min(MAX_ADDRS_PER_MESSAGE);
        let peer = self.peers.get_mut(&conn)?;
        if peer
            .answered_at
            .is_some_and(|t| now_ms.saturating_sub(t) < interval)
        {
            return None;
        }
        peer.answered_at = Some(now_ms);
        Some(book.sample(rng, max, Some(asker), now_ms))
    }

    /// `Addrs` with `count` entries arrived on `conn`: how many of them (from the front) may be
    /// processed; the rest are dropped and counted.
    pub fn on_addrs(&mut self, conn: ConnId, count: usize, now_ms: u64) -> usize {
        let (rate, burst) = (self.config.rate_per_s, self.config.burst);
        let Some(peer) = self.peers.get_mut(&conn) else {
            return 0;
        };
        let got = peer.tokens.take(count as u64, rate, burst, now_ms) as usize;
        peer.dropped += (count - got) as u64;
        got
    }

    /// Addresses dropped on `conn` by the token bucket so far.
    pub fn dropped(&self, conn: ConnId) -> u64 {
        self.peers.get(&conn).map_or(0, |p| p.dropped)
    }

    /// Which connections an accepted announcement from `from` is relayed to: none unless it is
    /// small and fresh; else up to `relay_fanout` random other connections.
    pub fn relay_targets<R: Rng>(
        &self,
        from: ConnId,
        addrs: &[KnownAddr],
        now_ms: u64,
        rng: &mut R,
    ) -> Vec<ConnId> {
        let fresh = now_ms / 1000;
        if addrs.is_empty()
            || addrs.len() > self.config.relay_max_items
            || addrs
                .iter()
                .any(|a| fresh.saturating_sub(a.last_seen) > self.config.relay_fresh_s)
        {
            return Vec::new();
        }
        let mut others: Vec<ConnId> = self.peers.keys().copied().filter(|c| *c != from).collect();
        let n = self.config.relay_fanout.min(others.len());
        for i in 0..n {
            let j = rng.random_range(i..others.len());
            others.swap(i, j);
        }
        others.truncate(n);
        others
    }

    /// Whether the node should advertise its own address now (true once per interval; the first
    /// call schedules without advertising, since a fresh connection already asks and answers).
    pub fn advertise_due(&mut self, now_ms: u64) -> bool {
        match self.next_advertise_ms {
            None => {
                self.next_advertise_ms = Some(now_ms + self.config.advertise_interval_ms);
                false
            }
            Some(t) if now_ms >= t => {
                self.next_advertise_ms = Some(now_ms + self.config.advertise_interval_ms);
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::addr_book::AddrBookConfig;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::net::{Ipv4Addr, SocketAddr};

    const NOW: u64 = 1_800_000_000_000;

    /// Built once: the property tests share it.
    fn full_book() -> &'static AddrBook {
        static BOOK: std::sync::OnceLock<AddrBook> = std::sync::OnceLock::new();
        BOOK.get_or_init(build_book)
    }

    fn build_book() -> AddrBook {
        let mut b = AddrBook::new(AddrBookConfig::default(), [5; 32]);
        for g in 0..3000u32 {
            let ip = Ipv4Addr::from((g + 0x0b00) << 16 | 1);
            let src = IpAddr::V4(Ipv4Addr::from((g % 200 + 0x2000) << 16 | 1));
            b.add(SocketAddr::new(IpAddr::V4(ip), 1), src, NOW / 1000, NOW);
        }
        b
    }

    #[test]
    fn answers_once_per_interval_at_most_1000_never_the_asker() {
        let book = full_book();
        assert!(book.len() > 1000);
        let mut g = AddrGossip::new(GossipConfig::default());
        let mut rng = StdRng::seed_from_u64(1);
        let c = ConnId(1);
        g.on_connect(c, NOW);
        let asker = book.sample(&mut rng, 1, None, NOW)[0].addr.ip();
        let a = g.on_get_addrs(c, asker, NOW, book, &mut rng).unwrap();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|k| k.addr.ip() != asker));
        assert!(g
            .on_get_addrs(c, asker, NOW + 1000, book, &mut rng)
            .is_none());
        let later = NOW + g.config().answer_interval_ms;
        assert!(g.on_get_addrs(c, asker, later, book, &mut rng).is_some());
        // Unknown connection: no answer.
        assert!(g
            .on_get_addrs(ConnId(9), asker, NOW, book, &mut rng)
            .is_none());
        // Connecting again (the event after an early frame) keeps the connection's state.
        g.on_connect(c, later);
        assert!(g
            .on_get_addrs(c, asker, later + 1, book, &mut rng)
            .is_none());
    }

    #[test]
    fn token_bucket_drops_the_excess() {
        let mut g = AddrGossip::new(GossipConfig::default());
        let c = ConnId(1);
        g.on_connect(c, NOW);
        assert_eq!(g.on_addrs(c, 1000, NOW), 1000);
        assert_eq!(g.on_addrs(c, 1000, NOW), 0);
        assert_eq!(g.dropped(c), 1000);
        // 100 s later: 10 more tokens.
        assert_eq!(g.on_addrs(c, 1000, NOW + 100_000), 10);
        g.on_disconnect(c);
        assert_eq!(g.on_addrs(c, 5, NOW), 0);
    }

    #[test]
    fn only_small_fresh_announcements_are_relayed() {
        let mut g = AddrGossip::new(GossipConfig::default());
        for i in 1..=5 {
            g.on_connect(ConnId(i), NOW);
        }
        let mut rng = StdRng::seed_from_u64(2);
        let fresh = KnownAddr {
            addr: "1.2.3.4:5".parse().unwrap(),
            last_seen: NOW / 1000,
        };
        let t = g.relay_targets(ConnId(1), &[fresh], NOW, &mut rng);
        assert_eq!(t.len(), 2);
        assert!(!t.contains(&ConnId(1)));
        let stale = KnownAddr {
            last_seen: NOW / 1000 - 3600,
            ..fresh
        };
        assert!(g
            .relay_targets(ConnId(1), &[stale], NOW, &mut rng)
            .is_empty());
        assert!(g
            .relay_targets(ConnId(1), &[fresh; 11], NOW, &mut rng)
            .is_empty());
    }

    #[test]
    fn advertises_once_per_interval() {
        let mut g = AddrGossip::new(GossipConfig::default());
        let i = g.config().advertise_interval_ms;
        assert!(!g.advertise_due(NOW));
        assert!(!g.advertise_due(NOW + i - 1));
        assert!(g.advertise_due(NOW + i));
        assert!(!g.advertise_due(NOW + i + 1));
    }

    proptest! {
        // Each case samples a 2,000-entry book dozens of times: fewer cases keep this fast.
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn accepted_never_exceeds_burst_plus_rate(
            events in proptest::collection::vec((0u64..200_000, 0usize..2000), 1..100)
        ) {
            let cfg = GossipConfig::default();
            let mut g = AddrGossip::new(cfg);
            let c = ConnId(1);
            g.on_connect(c, NOW);
            let mut now = NOW;
            let mut accepted = 0usize;
            for (dt, n) in events {
                now += dt;
                let got = g.on_addrs(c, n, now);
                prop_assert!(got <= n);
                accepted += got;
                let allowed = cfg.burst + (now - NOW) as f64 / 1000.0 * cfg.rate_per_s;
                prop_assert!(accepted as f64 <= allowed + 1e-6);
            }
        }

        #[test]
        fn answers_are_spaced_by_the_interval(times in proptest::collection::vec(0u64..3_600_000, 1..50)) {
            let book = full_book();
            let mut g = AddrGossip::new(GossipConfig::default());
            let mut rng = StdRng::seed_from_u64(4);
            let c = ConnId(1);
            g.on_connect(c, NOW);
            let mut now = NOW;
            let mut last: Option<u64> = None;
            let asker: IpAddr = "11.0.0.1".parse().unwrap();
            for dt in times {
                now += dt;
                if let Some(a) = g.on_get_addrs(c, asker, now, book, &mut rng) {
                    prop_assert!(a.len() <= MAX_ADDRS_PER_MESSAGE);
                    prop_assert!(a.iter().all(|k| k.addr.ip() != asker));
                    if let Some(l) = last {
                        prop_assert!(now - l >= g.config().answer_interval_ms);
                    }
                    last = Some(now);
                }
            }
        }
    }
}
