//! `DiscoveryConfig`: the timers of the discovery actor, apart from `NetworkConfig` because they
//! are options of a network started with discovery on ([`crate::NetworkBuilder::discovery_config`]),
//! not keys every node's config file carries. The defaults are what an operator of a public
//! network wants (Bitcoin Core's orders of magnitude); a test or a devnet that must converge in
//! seconds shortens them.

use std::time::Duration;

use super::gossip::GossipConfig;

/// Default interval of the discovery tick: dials toward the target, the advertisement timer.
/// One second keeps a node that lost its peers from waiting noticeably and costs nothing.
pub const DEFAULT_DISCOVERY_TICK: Duration = Duration::from_secs(1);

/// Default interval between feeler dials once the outbound set is full (two minutes, as in
/// Bitcoin Core): enough to keep the tried table fresh, too rare to matter to anyone's load.
pub const DEFAULT_FEELER_INTERVAL: Duration = Duration::from_secs(120);

/// Timers and gossip rules of the discovery actor of one node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscoveryConfig {
    /// How often the actor looks at its outbound count (handing the connector as many addresses
    /// as it is short of `target_outbound`) and at the advertisement timer, in milliseconds.
    pub tick_ms: u64,
    /// Interval between feelers (short test dials to new addresses) while the outbound set is
    /// full, in milliseconds.
    pub feeler_interval_ms: u64,
    /// Gossip rules: answer interval, token bucket, self-advertisement interval, relay fan-out.
    pub gossip: GossipConfig,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            tick_ms: DEFAULT_DISCOVERY_TICK.as_millis() as u64,
            feeler_interval_ms: DEFAULT_FEELER_INTERVAL.as_millis() as u64,
            gossip: GossipConfig::default(),
        }
    }
}

impl DiscoveryConfig {
    /// Timers for a network that must find its shape within seconds (tests, devnets, the
    /// propagation benchmark): a 100 ms tick, a self-advertisement every 10 s and a gossip
    /// answer per connection every 10 s. Never for a public network: each advertisement
    /// round floods every node's address through the whole network (two relays per node), so
    /// its interval is what a network of `n` nodes pays `2 n` small frames per node for.
    pub fn fast() -> Self {
        Self {
            tick_ms: 100,
            feeler_interval_ms: 10_000,
            gossip: GossipConfig {
                answer_interval_ms: 10_000,
                advertise_interval_ms: 10_000,
                ..GossipConfig::default()
            },
        }
    }

    /// The tick as a `Duration` (at least 1 ms).
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_agree_with_the_policies_and_fast_is_faster() {
        let d = DiscoveryConfig::default();
        assert_eq!(d.gossip, GossipConfig::default());
        assert_eq!(
            d.feeler_interval_ms,
            super::super::SelectionConfig::default().feeler_interval_ms
        );
        // A node advertises itself far less often than it ticks.
        assert!(d.gossip.advertise_interval_ms > 100 * d.tick_ms);
        let f = DiscoveryConfig::fast();
        assert!(f.tick_ms < d.tick_ms);
        assert!(f.gossip.advertise_interval_ms < d.gossip.advertise_interval_ms);
        assert!(f.gossip.advertise_interval_ms > f.tick_ms);
        assert_eq!(
            DiscoveryConfig { tick_ms: 0, ..f }.tick(),
            Duration::from_millis(1)
        );
    }
}
