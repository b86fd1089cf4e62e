//! The node's own Prometheus metrics (uptime, block sync), registered beside the subsystem's.
//! Shared by the node (which creates them) and the admin API (which refreshes and serves
//! them), so neither of those imports the other for them.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sync::{SyncState, SyncStatus};

/// Node-level metrics, registered beside the subsystem's under `peerlink_node_`.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Seconds since start; refreshed on every scrape.
    pub uptime_seconds: Gauge,
}

impl NodeMetrics {
    /// Registers the metrics in `registry` (give it a `node` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "uptime_seconds",
            "Seconds since the node started",
            self.uptime_seconds.clone(),
        );
    }

    /// Brings the gauges up to date before an encode.
    pub fn refresh(&self, started: Instant) {
        self.uptime_seconds
            .set(started.elapsed().as_secs().try_into().unwrap_or(i64::MAX));
    }
}

/// Discovery metrics, registered beside the subsystem's under `peerlink_discovery_`, brought up
/// to date from [`peerlink_actors::DiscoveryStats`] at scrape time.
#[derive(Debug, Default)]
pub struct DiscoveryMetrics {
    /// Addresses in the book.
    pub known: Gauge,
    /// Addresses in the tried table.
    pub tried: Gauge,
    /// Saves of the book since start.
    pub book_saves: Counter,
    /// Failed saves since start.
    pub book_save_failures: Counter,
    /// Seed dials since start.
    pub seed_dials: Counter,
    /// Gossiped addresses dropped by the per-peer rate limit since start.
    pub addrs_dropped: Counter,
}

impl DiscoveryMetrics {
    /// Registers the metrics in `registry` (give it a `discovery` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("known", "Addresses in the address book", self.known.clone());
        registry.register(
            "tried",
            "Addresses in the book's tried table (a connection to them worked)",
            self.tried.clone(),
        );
        registry.register(
            "book_saves",
            "Saves of the address book and anchors to the store since start",
            self.book_saves.clone(),
        );
        registry.register(
            "book_save_failures",
            "Saves of the address book that failed since start",
            self.book_save_failures.clone(),
        );
        registry.register(
            "seed_dials",
            "Dials to seeds since start (only while the book is short)",
            self.seed_dials.clone(),
        );
        registry.register(
            "addrs_dropped",
            "Gossiped addresses dropped by the per-peer rate limit since start",
            self.addrs_dropped.clone(),
        );
    }

    /// Sets the metrics from the address book's counters (counters only ever move up).
    pub fn refresh(&self, s: &peerlink_actors::DiscoveryStats) {
        let to_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.known.set(to_i64(s.known));
        self.tried.set(to_i64(s.tried));
        for (counter, total) in [
            (&self.book_saves, s.saves),
            (&self.book_save_failures, s.save_failures),
            (&self.seed_dials, s.seed_dials),
            (&self.addrs_dropped, s.dropped),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }
}

/// Block sync metrics, registered beside the subsystem's under `peerlink_sync_`. Brought up to
/// date from a [`SyncStatus`] at scrape time ([`SyncMetrics::refresh`]), so the sync actor
/// never touches them.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    /// Our tip height.
    pub height: Gauge,
    /// Highest height a connected peer claims (our own if higher).
    pub best_peer_height: Gauge,
    /// Blocks written by sync since start.
    pub blocks_synced: Counter,
    /// Blocks written by sync per second, over the last second or so.
    pub rate_blocks_per_second: Gauge<f64, AtomicU64>,
    /// 1 while syncing, 0 when synced.
    pub syncing: Gauge,
    /// Branch switches since start.
    pub reorgs: Counter,
    /// Requests that stalled since start.
    pub stalls: Counter,
}

impl SyncMetrics {
    /// Registers the metrics in `registry` (give it a `sync` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("height", "Height of our chain tip", self.height.clone());
        registry.register(
            "best_peer_height",
            "Highest chain height a connected peer claims (ours if higher)",
            self.best_peer_height.clone(),
        );
        registry.register(
            "blocks_synced",
            "Blocks downloaded from peers and stored since start",
            self.blocks_synced.clone(),
        );
        registry.register(
            "rate_blocks_per_second",
            "Blocks stored by sync per second, over the last second or so",
            self.rate_blocks_per_second.clone(),
        );
        registry.register(
            "syncing",
            "1 while a peer has a better chain than ours, 0 when synced",
            self.syncing.clone(),
        );
        registry.register(
            "reorgs",
            "Switches to a better branch since start",
            self.reorgs.clone(),
        );
        registry.register(
            "stalls",
            "Block or hash requests that went unanswered past the stall timeout",
            self.stalls.clone(),
        );
    }

    /// Sets the metrics from the sync actor's status (counters only ever move up).
    pub fn refresh(&self, s: &SyncStatus) {
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.height.set(to_i64(s.height));
        self.best_peer_height.set(to_i64(s.best_peer_height));
        self.rate_blocks_per_second.set(s.sync_rate_blocks_per_s);
        self.syncing.set(i64::from(s.state == SyncState::Syncing));
        for (counter, total) in [
            (&self.blocks_synced, s.blocks_synced),
            (&self.reorgs, s.reorgs),
            (&self.stalls, s.stalls),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_metrics_follow_the_status() {
        let m = SyncMetrics::default();
        let mut s = SyncStatus {
            height: 10,
            tip: [0; 32],
            best_peer_height: 20,
            state: SyncState::Syncing,
            blocks_synced: 7,
            sync_rate_blocks_per_s: 3.5,
            peers: 1,
            reorgs: 0,
            stalls: 1,
            misbehaving: 0,
            window_held_bytes: 0,
        };
        m.refresh(&s);
        m.refresh(&s);
        assert_eq!(
            (m.height.get(), m.blocks_synced.get(), m.stalls.get()),
            (10, 7, 1)
        );
        s.blocks_synced = 9;
        s.state = SyncState::Synced;
        m.refresh(&s);
        assert_eq!((m.blocks_synced.get(), m.syncing.get()), (9, 0));
        assert_eq!(m.rate_blocks_per_second.get(), 3.5);
    }
}
