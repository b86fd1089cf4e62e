//! The node's ban book: which IPs are banned, until when, why and on whose word. A plain struct
//! ([`BanBook`]: events in, decisions out, time passed in) owned by the sync actor, which
//! persists every change in the node's redb store ([`crate::chain::ChainStore::save_ban`]) and
//! hands it to the networking subsystem (`Network::ban` / `Network::unban`), where the acceptor
//! refuses a banned IP before the handshake and the connector never dials it.
//!
//! Rules: bans are keyed by canonical IP (an IPv4-mapped IPv6 address is the IPv4 address); the
//! node's own addresses (listen and admin IPs) are never banned; the book holds at most
//! `[network] max_bans` entries (when full, the ban that ends soonest makes room); an automatic
//! ban never shortens a longer ban in force, an operator's ban sets the expiry it names.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use peerlink_actors::{canonical_ip, DisconnectReason};
use serde::{Deserialize, Serialize};

/// What a misbehaving peer did; the node bans for a duration per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Sent or named a block that is not valid.
    InvalidBlock,
    /// Broke the message rules (a request out of range, an answer of the wrong shape).
    ProtocolViolation,
    /// Answered requests never made, beyond the allowance.
    Unrequested,
    /// Claimed a longer chain again and again and had nothing to give.
    Useless,
}

impl Fault {
    /// Short snake_case name (logs, ban reasons).
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::InvalidBlock => "invalid_block",
            Fault::ProtocolViolation => "protocol_violation",
            Fault::Unrequested => "unrequested",
            Fault::Useless => "useless",
        }
    }
}

/// `[bans]`: how long each kind of misbehaviour bans the peer's IP, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanConfig {
    /// A block that breaks the chain's rule (bad signature, not a producer, timestamp, size,
    /// wrong link or hash): 24 h. Honest nodes never send one.
    pub invalid_block_secs: u64,
    /// A message or frame that breaks the protocol (bad frame, request out of range, answer of
    /// the wrong shape): 1 h. Could be a buggy client rather than an attacker.
    pub protocol_violation_secs: u64,
    /// Answers to requests never made beyond `[sync] unrequested_allowance`: 1 h.
    pub unrequested_secs: u64,
    /// A peer that keeps claiming a longer chain it does not have: 10 min (it may be
    /// misconfigured, and it costs us only round trips).
    pub useless_secs: u64,
    /// `peerlink ban` and `POST /bans` without a duration: 24 h.
    pub manual_secs: u64,
}

impl Default for BanConfig {
    fn default() -> Self {
        Self {
            invalid_block_secs: 24 * 3600,
            protocol_violation_secs: 3600,
            unrequested_secs: 3600,
            useless_secs: 600,
            manual_secs: 24 * 3600,
        }
    }
}

impl BanConfig {
    /// Ban duration for a sync fault.
    pub fn for_fault(&self, fault: Fault) -> Duration {
        Duration::from_secs(match fault {
            Fault::InvalidBlock => self.invalid_block_secs,
            Fault::ProtocolViolation => self.protocol_violation_secs,
            Fault::Unrequested => self.unrequested_secs,
            Fault::Useless => self.useless_secs,
        })
    }

    /// Ban duration for a connection the network layer closed for `reason`, if that reason is
    /// the peer's fault (a malformed or oversized frame, a frame out of turn, a bad Hello).
    pub fn for_disconnect(&self, reason: DisconnectReason) -> Option<Duration> {
        match reason {
            DisconnectReason::BadFrame
            | DisconnectReason::FrameTooLarge
            | DisconnectReason::ProtocolViolation
            | DisconnectReason::BadHello => Some(Duration::from_secs(self.protocol_violation_secs)),
            _ => None,
        }
    }
}

/// One ban, as stored and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned IP (canonical).
    pub ip: IpAddr,
    /// When the ban ends, milliseconds since the Unix epoch.
    pub until_unix_ms: u64,
    /// When it was set, milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// Why (fault kind and details).
    pub reason: String,
    /// Who decided: `sync`, `network` or `operator`.
    pub source: String,
}

impl BanRecord {
    /// The stored form (MessagePack, fields as an array in declaration order), as the chain
    /// store keeps it in its `bans` table.
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec(self)
    }

    /// Decodes a stored record (what [`BanRecord::encode`] wrote, or anything a damaged file
    /// holds: junk is an error, never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// Why a ban was not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanRefused {
    /// The IP is one of this node's own addresses.
    #[error("{0} is one of this node's own addresses and is never banned")]
    OwnAddress(IpAddr),
    /// The IP is unspecified (0.0.0.0, ::) and cannot be a peer.
    #[error("{0} is not a peer address")]
    NotAPeer(IpAddr),
}

/// What the caller must carry out after [`BanBook::ban`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanDecision {
    /// The record to persist and apply.
    pub record: BanRecord,
    /// A ban evicted to make room: delete it from the store and lift it in the network.
    pub evicted: Option<IpAddr>,
    /// Whether an existing, longer ban must be lifted in the network before the new one is
    /// applied (the network only ever extends a ban).
    pub shortened: bool,
}

/// The ban book. See the module docs.
#[derive(Debug, Clone)]
pub struct BanBook {
    bans: HashMap<IpAddr, BanRecord>,
    own: HashSet<IpAddr>,
    max: usize,
}

impl BanBook {
    /// An empty book of at most `max` bans that never bans `own` addresses.
    pub fn new(max: usize, own: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            bans: HashMap::new(),
            own: own.into_iter().map(canonical_ip).collect(),
            max: max.max(1),
        }
    }

    /// Bans `ip` for `duration` from `now_ms`. `operator` bans set the expiry they name;
    /// others never shorten a ban in force.
    pub fn ban(
        &mut self,
        ip: IpAddr,
        duration: Duration,
        reason: &str,
        source: &str,
        now_ms: u64,
        operator: bool,
    ) -> Result<BanDecision, BanRefused> {
        let ip = canonical_ip(ip);
        if ip.is_unspecified() {
            return Err(BanRefused::NotAPeer(ip));
        }
        if self.own.contains(&ip) {
            return Err(BanRefused::OwnAddress(ip));
        }
        let until = now_ms.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let mut shortened = false;
        if let Some(old) = self.bans.get(&ip) {
            if old.until_unix_ms > now_ms && old.until_unix_ms >= until && !operator {
                // A longer ban is in force: keep it (and its reason).
                return Ok(BanDecision {
                    record: old.clone(),
                    evicted: None,
                    shortened: false,
                });
            }
            shortened = old.until_unix_ms > until;
        }
        let mut evicted = None;
        if !self.bans.contains_key(&ip) && self.bans.len() >= self.max {
            self.bans.retain(|_, r| r.until_unix_ms > now_ms);
            if self.bans.len() >= self.max {
                evicted = self
                    .bans
                    .values()
                    .min_by_key(|r| (r.until_unix_ms, r.ip))
                    .map(|r| r.ip);
                if let Some(v) = evicted {
                    self.bans.remove(&v);
                }
            }
        }
        let record = BanRecord {
            ip,
            until_unix_ms: until,
            since_unix_ms: now_ms,
            reason: reason.to_string(),
            source: source.to_string(),
        };
        self.bans.insert(ip, record.clone());
        Ok(BanDecision {
            record,
            evicted,
            shortened,
        })
    }

    /// Restores a stored ban (at start). Expired or own-address records are refused (the caller
    /// deletes them from the store).
    pub fn restore(&mut self, record: BanRecord, now_ms: u64) -> bool {
        let ip = canonical_ip(record.ip);
        if record.until_unix_ms <= now_ms || self.own.contains(&ip) || ip.is_unspecified() {
            return false;
        }
        if self.bans.len() >= self.max && !self.bans.contains_key(&ip) {
            return false;
        }
        self.bans.insert(ip, BanRecord { ip, ..record });
        true
    }

    /// Lifts the ban on `ip`; whether there was one.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        self.bans.remove(&canonical_ip(ip)).is_some()
    }

    /// Removes bans that have ended by `now_ms` and returns their IPs.
    pub fn expire(&mut self, now_ms: u64) -> Vec<IpAddr> {
        let gone: Vec<IpAddr> = self
            .bans
            .values()
            .filter(|r| r.until_unix_ms <= now_ms)
            .map(|r| r.ip)
            .collect();
        for ip in &gone {
            self.bans.remove(ip);
        }
        gone
    }

    /// Bans in force at `now_ms`, sorted by IP.
    pub fn list(&self, now_ms: u64) -> Vec<BanRecord> {
        let mut v: Vec<BanRecord> = self
            .bans
            .values()
            .filter(|r| r.until_unix_ms > now_ms)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.ip);
        v
    }

    /// Whether `ip` is banned at `now_ms`.
    pub fn is_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.bans
            .get(&canonical_ip(ip))
            .is_some_and(|r| r.until_unix_ms > now_ms)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn own_addresses_are_never_banned_and_mapped_ipv6_is_ipv4() {
        let mut b = BanBook::new(10, [ip("127.0.0.2")]);
        assert_eq!(
            b.ban(ip("::ffff:127.0.0.2"), H, "x", "sync", 0, false),
            Err(BanRefused::OwnAddress(ip("127.0.0.2")))
        );
        let d = b
            .ban(ip("::ffff:10.0.0.1"), H, "x", "sync", 0, false)
            .unwrap();
        assert_eq!(d.record.ip, ip("10.0.0.1"));
        assert!(b.is_banned(ip("10.0.0.1"), 1));
        assert!(b.ban(ip("0.0.0.0"), H, "x", "sync", 0, false).is_err());
    }

    #[test]
    fn automatic_bans_never_shorten_operator_bans_do() {
        let mut b = BanBook::new(10, []);
        b.ban(ip("10.0.0.1"), 24 * H, "invalid", "sync", 0, false)
            .unwrap();
        let d = b
            .ban(ip("10.0.0.1"), H, "useless", "sync", 0, false)
            .unwrap();
        assert_eq!(d.record.reason, "invalid");
        let d = b.ban(ip("10.0.0.1"), H, "op", "operator", 0, true).unwrap();
        assert!(d.shortened);
        assert_eq!(d.record.until_unix_ms, 3_600_000);
    }

    #[test]
    fn expiry_and_restore() {
        let mut b = BanBook::new(10, [ip("10.0.0.9")]);
        b.ban(ip("10.0.0.1"), H, "x", "sync", 0, false).unwrap();
        assert!(b.expire(3_599_999).is_empty());
        assert_eq!(b.expire(3_600_000), vec![ip("10.0.0.1")]);
        let rec = |ip_s: &str, until| BanRecord {
            ip: ip(ip_s),
            until_unix_ms: until,
            since_unix_ms: 0,
            reason: "r".into(),
            source: "sync".into(),
        };
        assert!(b.restore(rec("10.0.0.2", 100), 50));
        assert!(!b.restore(rec("10.0.0.3", 100), 100), "expired");
        assert!(!b.restore(rec("10.0.0.9", 100), 50), "own address");
        assert_eq!(b.list(50).len(), 1);
    }

    proptest! {
        #[test]
        fn the_book_stays_bounded_and_never_holds_own(
            ops in proptest::collection::vec((0u8..40, 1u64..100, any::<bool>()), 1..200)
        ) {
            let own = IpAddr::from([10, 0, 0, 0]);
            let mut b = BanBook::new(8, [own]);
            for (i, (n, secs, op)) in ops.into_iter().enumerate() {
                let now = i as u64 * 1000;
                let _ = b.ban(IpAddr::from([10, 0, 0, n]), Duration::from_secs(secs), "r", "t", now, op);
                prop_assert!(b.len() <= 8);
                prop_assert!(!b.is_banned(own, now));
            }
        }
    }
}
