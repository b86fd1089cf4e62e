//! `NetMetrics`: the subsystem's live counters and histograms, updated by the actors as things
//! happen and rendered in Prometheus text format by whoever registers them (the node's
//! `/metrics`). Built on the maintained `prometheus-client` crate; these are metrics, not peer
//! state, and no actor reads them to make a decision.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::protocol::DisconnectReason;
use crate::Direction;

/// Label set with one label.
pub type Label = Vec<(&'static str, &'static str)>;

/// All metrics of one node's networking.
#[derive(Debug)]
pub struct NetMetrics {
    /// Registered connections, by direction.
    pub connections: Family<Label, Gauge>,
    /// Connections registered since start, by direction.
    pub connects: Family<Label, Counter>,
    /// Connections closed, by reason and by who closed (local or peer).
    pub disconnects: Family<Label, Counter>,
    /// Outcomes of Register: accepted, replaced_restart, replaced_duplicate, rejected_duplicate,
    /// rejected_limit.
    pub duplicate_resolutions: Family<Label, Counter>,
    /// Unregister messages ignored because their conn id was stale.
    pub stale_unregisters: Counter,
    /// Pings we sent.
    pub pings_sent: Counter,
    /// Pongs that echoed an outstanding ping.
    pub pongs_matched: Counter,
    /// Ping round trip times, seconds.
    pub rtt_seconds: Histogram,
    /// Lifetime of registered connections when they close, seconds.
    pub connection_lifetime_seconds: Histogram,
    /// Bytes read from peers.
    pub bytes_in: Counter,
    /// Bytes written to peers.
    pub bytes_out: Counter,
    /// Frames that closed their connection, by reason (bad_frame, frame_too_large, ...).
    pub frames_rejected: Family<Label, Counter>,
    /// Inbound connections refused at accept time, by reason.
    pub accepts_refused: Family<Label, Counter>,
    /// Inbound sockets refused by the admission policy before their handshake, by the limit
    /// that refused them: pending_total, pending_per_ip, pending_per_subnet, group_rate.
    pub admission_refused: Family<Label, Counter>,
    /// Inbound peers evicted to make room for a newcomer.
    pub evictions: Counter,
    /// Dials attempted.
    pub dials: Counter,
    /// Dials that failed before a TCP connection existed.
    pub dial_failures: Counter,
    /// Accept calls that failed (EMFILE, ENFILE, ...); each pauses the accept loop briefly.
    pub accept_errors: Counter,
    /// Writer tasks alive (sockets still open on our side).
    pub writers_alive: Gauge,
    /// Peer events not delivered because their subscriber was too far behind.
    pub events_dropped: Counter,
}

impl Default for NetMetrics {
    fn default() -> Self {
        Self {
            connections: Family::default(),
            connects: Family::default(),
            disconnects: Family::default(),
            duplicate_resolutions: Family::default(),
            stale_unregisters: Counter::default(),
            pings_sent: Counter::default(),
            pongs_matched: Counter::default(),
            // 50 us .. ~26 s
            rtt_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            // 10 ms .. ~3 days
            connection_lifetime_seconds: Histogram::new(exponential_buckets(0.01, 3.0, 17)),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            frames_rejected: Family::default(),
            accepts_refused: Family::default(),
            admission_refused: Family::default(),
            evictions: Counter::default(),
            dials: Counter::default(),
            dial_failures: Counter::default(),
            accept_errors: Counter::default(),
            writers_alive: Gauge::default(),
            events_dropped: Counter::default(),
        }
    }
}

impl NetMetrics {
    /// Registers every metric under the `peerlink_` prefix given by the caller's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections",
            "Registered connections by direction",
            self.connections.clone(),
        );
        registry.register(
            "connects",
            "Connections registered since start",
            self.connects.clone(),
        );
        registry.register(
            "disconnects",
            "Connections closed, by reason and initiator",
            self.disconnects.clone(),
        );
        registry.register(
            "duplicate_resolutions",
            "Outcomes of registering a connection",
            self.duplicate_resolutions.clone(),
        );
        registry.register(
            "stale_unregisters",
            "Unregisters ignored for a stale conn id",
            self.stale_unregisters.clone(),
        );
        registry.register("pings_sent", "Pings sent", self.pings_sent.clone());
        registry.register(
            "pongs_matched",
            "Pongs echoing an outstanding ping",
            self.pongs_matched.clone(),
        );
        registry.register(
            "ping_rtt_seconds",
            "Ping round trip time",
            self.rtt_seconds.clone(),
        );
        registry.register(
            "connection_lifetime_seconds",
            "Lifetime of registered connections at close",
            self.connection_lifetime_seconds.clone(),
        );
        registry.register("bytes_in", "Bytes read from peers", self.bytes_in.clone());
        registry.register(
            "bytes_out",
            "Bytes written to peers",
            self.bytes_out.clone(),
        );
        registry.register(
            "frames_rejected",
            "Frames that closed their connection, by reason",
            self.frames_rejected.clone(),
        );
        registry.register(
            "accepts_refused",
            "Inbound connections refused at accept, by reason",
            self.accepts_refused.clone(),
        );
        registry.register(
            "admission_refused",
            "Inbound sockets refused by the admission policy, by limit",
            self.admission_refused.clone(),
        );
        registry.register(
            "evictions",
            "Inbound peers evicted to make room for a newcomer",
            self.evictions.clone(),
        );
        registry.register("dials", "Outbound dials attempted", self.dials.clone());
        registry.register(
            "dial_failures",
            "Outbound dials that failed to connect",
            self.dial_failures.clone(),
        );
        registry.register(
            "accept_errors",
            "Accept calls that failed (the loop pauses after each)",
            self.accept_errors.clone(),
        );
        registry.register(
            "open_sockets",
            "Sockets still open (writer tasks alive)",
            self.writers_alive.clone(),
        );
        registry.register(
            "events_dropped",
            "Peer events dropped because their subscriber was too far behind",
            self.events_dropped.clone(),
        );
    }

    pub(crate) fn direction(d: Direction) -> Label {
        vec![("direction", d.as_str())]
    }

    pub(crate) fn reason(r: DisconnectReason) -> Label {
        vec![("reason", r.as_str())]
    }

    pub(crate) fn limit(l: &'static str) -> Label {
        vec![("limit", l)]
    }

    pub(crate) fn outcome(o: &'static str) -> Label {
        vec![("outcome", o)]
    }

    pub(crate) fn record_disconnect(&self, reason: DisconnectReason, by_peer: bool) {
        self.disconnects
            .get_or_create(&vec![
                ("reason", reason.as_str()),
                ("initiator", if by_peer { "peer" } else { "local" }),
            ])
            .inc();
    }
}
