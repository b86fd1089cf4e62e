//! `NetworkConfig`: every tunable of the subsystem in one serde struct, so that a node can embed
//! it as the `[network]` section of its TOML file. Durations are integers with their unit in the
//! key (`_ms`); defaults come from [`crate::constants`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::constants::*;
use crate::error::ConfigError;
use crate::secure::{NodeKey, PeerAddr, PublicKey, Transport};

/// Configuration of one node's networking. Unknown keys are rejected when parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Address the acceptor listens on; its IP is also the source IP of outbound connections,
    /// so that peers key this node by the right address.
    pub listen: SocketAddr,
    /// Peers the connector keeps dialling (up to `target_outbound` at once): `IP:PORT`, or
    /// `KEYHEX@IP:PORT` to pin the key the peer at that IP must present.
    pub peers: Vec<PeerAddr>,
    /// Run peer discovery: address gossip with every peer, an address book (persisted when
    /// the application gives the network an `AddrStore`), and outbound peers chosen from it up
    /// to `target_outbound`, beyond `peers`. Default: on. Off, the node connects to `peers` only
    /// (a fixed topology). `NetworkBuilder::discovery` overrides it.
    pub discovery: bool,
    /// Bootstrap addresses (`IP:PORT` or `KEYHEX@IP:PORT`), used only with `discovery`: a seed
    /// is dialled while the address book is short (fewer than twice `target_outbound`
    /// addresses), asked for addresses, then disconnected; it is never kept as a peer, never
    /// picked from the book, never an anchor. Unlike `peers`, which are always kept connected.
    pub seeds: Vec<PeerAddr>,
    /// Interval between saves of the address book and anchors to the application's store
    /// (with discovery and an `AddrStore`), milliseconds; a final save runs at shutdown.
    pub addr_book_save_interval_ms: u64,
    /// How connections are carried: `noise` (encrypted and authenticated, the default) or
    /// `plaintext` (only for benchmarks and interop tests; logged as a warning at start).
    pub transport: Transport,
    /// When not empty, only peers presenting one of these keys are admitted (a permissioned
    /// network, e.g. a masternode set).
    pub allowed_keys: Vec<PublicKey>,
    /// Network magic, sent as 4 big-endian bytes in the Hello; a peer with another magic belongs
    /// to another network and is refused.
    pub magic: u32,
    /// Largest frame body accepted after the handshake, in bytes.
    pub max_frame_bytes: usize,
    /// Per-peer bytes queued but not yet written before the peer counts as slow and is dropped.
    pub outbound_budget_bytes: usize,
    /// Per-peer application bytes delivered but not yet consumed before the session pauses
    /// reading from that peer.
    pub inbound_budget_bytes: usize,
    /// Time a peer has to complete the handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Interval between pings, in milliseconds.
    pub ping_interval_ms: u64,
    /// Time a ping may stay unanswered before the connection closes, in milliseconds.
    pub ping_timeout_ms: u64,
    /// Time a TCP connect may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Most registered inbound connections. When they are full, a newcomer that completes its
    /// handshake takes the place of one chosen by the eviction policy (closed with
    /// `Disconnect{evicted}`), or is refused with `too_many_peers` when every inbound peer is
    /// protected. Inbound sockets in all (registered, handshaking or closing) are at most
    /// `max_inbound + max_pending_handshakes`; beyond that new sockets are refused at accept.
    pub max_inbound: usize,
    /// Number of outbound connections the connector keeps.
    pub target_outbound: usize,
    /// Most inbound connections still handshaking at once (all IPs together).
    pub max_pending_handshakes: usize,
    /// Most inbound handshakes pending from one IP (IPv4-mapped IPv6 counts as IPv4).
    pub max_pending_per_ip: usize,
    /// Most inbound handshakes pending from one subnet (IPv4 /24, IPv6 /64).
    pub max_pending_per_subnet: usize,
    /// Inbound connections accepted per second from one network group (IPv4 /16, IPv6 /32;
    /// each loopback address is a group of its own), after the burst.
    pub accept_rate_per_group_per_s: u32,
    /// Inbound connections one network group may open at once before its rate applies.
    pub accept_burst_per_group: u32,
    /// Inbound connections younger than this are never evicted, in milliseconds.
    pub eviction_min_age_ms: u64,
    /// Most addresses in the connector's address book.
    pub max_address_book: usize,
    /// Most entries in the ban list.
    pub max_bans: usize,
    /// First redial delay after a failed dial or a short-lived connection, in milliseconds.
    pub backoff_base_ms: u64,
    /// Longest redial delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// A connection that lived this long resets its address's backoff, in milliseconds.
    pub backoff_reset_after_ms: u64,
    /// How often the connector looks for addresses to dial, in milliseconds.
    pub dial_tick_ms: u64,
    /// Threads (actix Arbiters) that run sessions; 0 means one per CPU core.
    pub session_threads: usize,
    /// User agent sent in the Hello (at most 256 bytes). Set by the application.
    #[serde(skip)]
    pub user_agent: String,
    /// Genesis hash sent in the Hello; peers with another genesis are refused. Set by the
    /// application (a chain-agnostic application may leave it zero).
    #[serde(skip)]
    pub genesis: [u8; 32],
    /// The node's static key (its identity). Set by the application, which keeps it in a key
    /// file; `None` makes `Network::start` draw a fresh one (a new identity per start).
    #[serde(skip)]
    pub node_key: Option<NodeKey>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            peers: Vec::new(),
            discovery: true,
            seeds: Vec::new(),
            addr_book_save_interval_ms: ms(crate::constants::DEFAULT_ADDR_BOOK_SAVE_INTERVAL),
            transport: Transport::Noise,
            allowed_keys: Vec::new(),
            magic: 0x706c_6e6b, // "plnk"
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_budget_bytes: DEFAULT_OUTBOUND_BUDGET_BYTES,
            inbound_budget_bytes: DEFAULT_INBOUND_BUDGET_BYTES,
            handshake_timeout_ms: ms(DEFAULT_HANDSHAKE_TIMEOUT),
            ping_interval_ms: ms(DEFAULT_PING_INTERVAL),
            ping_timeout_ms: ms(DEFAULT_PING_TIMEOUT),
            connect_timeout_ms: ms(DEFAULT_CONNECT_TIMEOUT),
            max_inbound: DEFAULT_MAX_INBOUND,
            target_outbound: DEFAULT_TARGET_OUTBOUND,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            max_pending_per_subnet: DEFAULT_MAX_PENDING_PER_SUBNET,
            accept_rate_per_group_per_s: DEFAULT_ACCEPT_RATE_PER_GROUP_PER_S,
            accept_burst_per_group: DEFAULT_ACCEPT_BURST_PER_GROUP,
            eviction_min_age_ms: ms(DEFAULT_EVICTION_MIN_AGE),
            max_address_book: DEFAULT_MAX_ADDRESS_BOOK,
            max_bans: DEFAULT_MAX_BANS,
            backoff_base_ms: ms(DEFAULT_BACKOFF_BASE),
            backoff_max_ms: ms(DEFAULT_BACKOFF_MAX),
            backoff_reset_after_ms: ms(DEFAULT_BACKOFF_RESET_AFTER),
            dial_tick_ms: ms(DEFAULT_DIAL_TICK),
            session_threads: 0,
            user_agent: concat!("peerlink/", env!("CARGO_PKG_VERSION")).to_string(),
            genesis: [0; 32],
            node_key: None,
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl NetworkConfig {
    /// Handshake timeout as a `Duration`.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// Ping interval as a `Duration`.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }
    /// Ping timeout as a `Duration`.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }
    /// Connect timeout as a `Duration`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    /// The admission policy's settings: the pending-handshake limits and the per-group accept
    /// rate.
    pub fn admission(&self) -> crate::admission::AdmissionConfig {
        crate::admission::AdmissionConfig {
            max_pending_total: self.max_pending_handshakes,
            max_pending_per_ip: self.max_pending_per_ip,
            max_pending_per_subnet: self.max_pending_per_subnet,
            accept_rate_per_group: f64::from(self.accept_rate_per_group_per_s),
            accept_burst_per_group: f64::from(self.accept_burst_per_group),
            max_groups_tracked: MAX_ACCEPT_GROUPS_TRACKED,
        }
    }

    /// The eviction policy's settings: the policy's protections, with `eviction_min_age_ms`.
    pub fn eviction(&self) -> crate::eviction::EvictionConfig {
        crate::eviction::EvictionConfig {
            min_age_ms: self.eviction_min_age_ms,
            ..crate::eviction::EvictionConfig::default()
        }
    }

    /// Dial tick as a `Duration`.
    pub fn dial_tick(&self) -> Duration {
        Duration::from_millis(self.dial_tick_ms)
    }

    /// The key pinned for `ip` by a `KEYHEX@IP:PORT` entry of `peers` or `seeds`, if any.
    pub fn pinned_key(&self, ip: IpAddr) -> Option<PublicKey> {
        self.peers
            .iter()
            .chain(&self.seeds)
            .find(|p| p.key.is_some() && crate::canonical_ip(p.addr.ip()) == ip)
            .and_then(|p| p.key)
    }

    /// Number of session threads this config asks for, resolving 0 to the number of cores.
    pub fn session_thread_count(&self) -> usize {
        if self.session_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.session_threads
        }
    }

    /// Checks the values against each other; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| Err(ConfigError { key, reason });
        if self.max_frame_bytes < MAX_HANDSHAKE_FRAME_BYTES
            || self.max_frame_bytes > MAX_FRAME_BYTES_CEILING
        {
            return bad(
                "max_frame_bytes",
                format!(
                    "must be between {MAX_HANDSHAKE_FRAME_BYTES} and {MAX_FRAME_BYTES_CEILING}"
                ),
            );
        }
        if self.outbound_budget_bytes < self.max_frame_bytes + 4 {
            return bad(
                "outbound_budget_bytes",
                "must hold at least one maximum frame (max_frame_bytes + 4)".into(),
            );
        }
        if self.inbound_budget_bytes < self.max_frame_bytes {
            return bad(
                "inbound_budget_bytes",
                "must hold at least one maximum frame (max_frame_bytes)".into(),
            );
        }
        if self.handshake_timeout_ms == 0 {
            return bad("handshake_timeout_ms", "must be positive".into());
        }
        if self.ping_interval_ms == 0 {
            return bad("ping_interval_ms", "must be positive".into());
        }
        if self.ping_timeout_ms < self.ping_interval_ms {
            return bad(
                "ping_timeout_ms",
                "must be at least ping_interval_ms".into(),
            );
        }
        if self.connect_timeout_ms == 0 {
            return bad("connect_timeout_ms", "must be positive".into());
        }
        if self.dial_tick_ms == 0 {
            return bad("dial_tick_ms", "must be positive".into());
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return bad(
                "backoff_max_ms",
                "backoff_base_ms must be positive and at most backoff_max_ms".into(),
            );
        }
        if self.user_agent.len() > MAX_USER_AGENT_BYTES {
            return bad(
                "user_agent",
                format!("longer than {MAX_USER_AGENT_BYTES} bytes"),
            );
        }
        if self.addr_book_save_interval_ms == 0 {
            return bad("addr_book_save_interval_ms", "must be positive".into());
        }
        if let Some(s) = self.seeds.iter().find(|s| s.addr.port() == 0) {
            return bad("seeds", format!("{} has port 0", s.addr));
        }
        if self.max_pending_handshakes == 0 {
            return bad("max_pending_handshakes", "must be positive".into());
        }
        if self.max_pending_per_ip == 0 {
            return bad("max_pending_per_ip", "must be positive".into());
        }
        if self.max_pending_per_subnet < self.max_pending_per_ip {
            return bad(
                "max_pending_per_subnet",
                "must be at least max_pending_per_ip".into(),
            );
        }
        if self.accept_burst_per_group == 0 {
            return bad("accept_burst_per_group", "must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NetworkConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = NetworkConfig {
            ping_timeout_ms: 10,
            ..NetworkConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ping_timeout_ms");
        c = NetworkConfig {
            outbound_budget_bytes: 10,
            ..NetworkConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "outbound_budget_bytes");
    }

    #[test]
    fn admission_and_eviction_settings_follow_the_config() {
        let c = NetworkConfig {
            max_pending_handshakes: 20,
            max_pending_per_ip: 2,
            max_pending_per_subnet: 5,
            accept_rate_per_group_per_s: 3,
            accept_burst_per_group: 7,
            eviction_min_age_ms: 1_234,
            ..NetworkConfig::default()
        };
        c.validate().unwrap();
        let a = c.admission();
        assert_eq!(
            (
                a.max_pending_total,
                a.max_pending_per_ip,
                a.max_pending_per_subnet
            ),
            (20, 2, 5)
        );
        assert_eq!(
            (a.accept_rate_per_group, a.accept_burst_per_group),
            (3.0, 7.0)
        );
        assert_eq!(c.eviction().min_age_ms, 1_234);
        let bad = NetworkConfig {
            max_pending_per_ip: 0,
            ..NetworkConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "max_pending_per_ip");
        let bad = NetworkConfig {
            max_pending_per_subnet: 1,
            ..NetworkConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "max_pending_per_subnet");
        let bad = NetworkConfig {
            accept_burst_per_group: 0,
            ..NetworkConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "accept_burst_per_group");
    }
}
