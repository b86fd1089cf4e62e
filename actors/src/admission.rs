//! `Admission`: who may start an inbound handshake. Pending handshakes are limited per IP, per
//! subnet (/24, /64) and in total, and each network group (/16, /32) has an accept-rate token
//! bucket, so one IP holding silent sockets, or one subnet opening many, cannot keep everyone
//! else out (after commonware-p2p's per-IP and per-subnet handshake limits). All keys are
//! canonical (IPv4-mapped IPv6 counts as IPv4), so a peer cannot double its share by switching
//! notation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::canonical_ip;
use crate::netgroup::{netgroup, subnet, NetGroup, TokenBucket};

/// Admission tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// Pending handshakes in total.
    pub max_pending_total: usize,
    /// Pending handshakes from one IP.
    pub max_pending_per_ip: usize,
    /// Pending handshakes from one subnet (/24, /64).
    pub max_pending_per_subnet: usize,
    /// Accepted connections per second per network group (token refill).
    pub accept_rate_per_group: f64,
    /// Accept burst per network group.
    pub accept_burst_per_group: f64,
    /// Most groups whose rate state is kept (full buckets are forgotten first).
    pub max_groups_tracked: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_pending_total: 64,
            max_pending_per_ip: 4,
            max_pending_per_subnet: 16,
            accept_rate_per_group: 10.0,
            accept_burst_per_group: 40.0,
            max_groups_tracked: 4_096,
        }
    }
}

/// Why an inbound connection was refused before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefusal {
    /// Too many handshakes pending in total.
    #[error("too many pending handshakes")]
    PendingTotal,
    /// Too many handshakes pending from this IP.
    #[error("too many pending handshakes from this ip")]
    PendingPerIp,
    /// Too many handshakes pending from this subnet.
    #[error("too many pending handshakes from this subnet")]
    PendingPerSubnet,
    /// This network group connects faster than its accept rate.
    #[error("accept rate of this network group exceeded")]
    GroupRate,
}

/// Pending-handshake and accept-rate bookkeeping of one listener.
#[derive(Debug, Clone)]
pub struct Admission {
    config: AdmissionConfig,
    total: usize,
    per_ip: BTreeMap<IpAddr, usize>,
    per_subnet: BTreeMap<NetGroup, usize>,
    rates: BTreeMap<NetGroup, TokenBucket>,
}

impl Admission {
    /// Nothing pending.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            total: 0,
            per_ip: BTreeMap::new(),
            per_subnet: BTreeMap::new(),
            rates: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Handshakes pending in total.
    pub fn pending(&self) -> usize {
        self.total
    }

    /// Handshakes pending from one IP.
    pub fn pending_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&canonical_ip(ip)).copied().unwrap_or(0)
    }

    /// An inbound socket from `ip` arrived: admit its handshake (the caller must call `end`
    /// exactly once later) or refuse it.
    pub fn try_begin(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), AdmissionRefusal> {
        let ip = canonical_ip(ip);
        let sub = subnet(ip);
        if self.total >= self.config.max_pending_total {
            return Err(AdmissionRefusal::PendingTotal);
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.config.max_pending_per_ip {
            return Err(AdmissionRefusal::PendingPerIp);
        }
        if self.per_subnet.get(&sub).copied().unwrap_or(0) >= self.config.max_pending_per_subnet {
            return Err(AdmissionRefusal::PendingPerSubnet);
        }
        let group = netgroup(ip);
        let (rate, burst) = (
            self.config.accept_rate_per_group,
            self.config.accept_burst_per_group,
        );
        if !self.rates.contains_key(&group) {
            self.make_room(now_ms);
        }
        let bucket = self
            .rates
            .entry(group)
            .or_insert_with(|| TokenBucket::new(burst, now_ms));
        if bucket.take(1, rate, burst, now_ms) == 0 {
            return Err(AdmissionRefusal::GroupRate);
        }
        self.total += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        *self.per_subnet.entry(sub).or_default() += 1;
        Ok(())
    }

    /// A handshake admitted by `try_begin` finished (either way).
    pub fn end(&mut self, ip: IpAddr) {
        let ip = canonical_ip(ip);
        let Some(n) = self.per_ip.get_mut(&ip) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.per_ip.remove(&ip);
        }
        let sub = subnet(ip);
        if let Some(n) = self.per_subnet.get_mut(&sub) {
            *n -= 1;
            if *n == 0 {
                self.per_subnet.remove(&sub);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Groups whose rate state is kept.
    pub fn groups_tracked(&self) -> usize {
        self.rates.len()
    }

    fn make_room(&mut self, now_ms: u64) {
        if self.rates.len() < self.config.max_groups_tracked {
            return;
        }
        let (rate, burst) = (
            self.config.accept_rate_per_group,
            self.config.accept_burst_per_group,
        );
        // Full buckets hold no information.
        self.rates
            .retain(|_, b| b.refill(rate, burst, now_ms) < burst);
        if self.rates.len() >= self.config.max_groups_tracked {
            if let Some(first) = self.rates.keys().next().copied() {
                self.rates.remove(&first);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_ip_cannot_take_all_pending_slots() {
        let mut a = Admission::new(AdmissionConfig::default());
        let per_ip = a.config().max_pending_per_ip;
        for _ in 0..per_ip {
            a.try_begin(ip("5.5.5.5"), NOW).unwrap();
        }
        for _ in 0..100 {
            assert_eq!(
                a.try_begin(ip("5.5.5.5"), NOW),
                Err(AdmissionRefusal::PendingPerIp)
            );
        }
        // The mapped form is the same IP.
        assert_eq!(
            a.try_begin(ip("::ffff:5.5.5.5"), NOW),
            Err(AdmissionRefusal::PendingPerIp)
        );
        a.try_begin(ip("6.6.6.6"), NOW).unwrap();
        a.end(ip("5.5.5.5"));
        a.try_begin(ip("5.5.5.5"), NOW).unwrap();
    }

    #[test]
    fn subnet_and_total_limits() {
        let mut a = Admission::new(AdmissionConfig::default());
        let sub = a.config().max_pending_per_subnet;
        for i in 0..sub {
            a.try_begin(IpAddr::from([7, 7, 7, i as u8]), NOW).unwrap();
        }
        assert_eq!(
            a.try_begin(ip("7.7.7.200"), NOW),
            Err(AdmissionRefusal::PendingPerSubnet)
        );
        a.try_begin(ip("7.7.8.1"), NOW).unwrap();
        // IPv6 /64.
        let mut b = Admission::new(AdmissionConfig::default());
        for i in 0..sub {
            b.try_begin(ip(&format!("2a01:4f8:1:2::{:x}", i + 1)), NOW)
                .unwrap();
        }
        assert_eq!(
            b.try_begin(ip("2a01:4f8:1:2::ffff"), NOW),
            Err(AdmissionRefusal::PendingPerSubnet)
        );
        b.try_begin(ip("2a01:4f8:1:3::1"), NOW).unwrap();
        // Total.
        let mut c = Admission::new(AdmissionConfig {
            max_pending_total: 3,
            ..AdmissionConfig::default()
        });
        for i in 1..=3u8 {
            c.try_begin(IpAddr::from([i, 1, 1, 1]), NOW).unwrap();
        }
        assert_eq!(
            c.try_begin(ip("9.1.1.1"), NOW),
            Err(AdmissionRefusal::PendingTotal)
        );
    }

    #[test]
    fn group_accept_rate_refills() {
        let mut a = Admission::new(AdmissionConfig::default());
        let burst = a.config().accept_burst_per_group as usize;
        for i in 0..burst {
            a.try_begin(IpAddr::from([8, 8, (i / 200) as u8, (i % 200) as u8]), NOW)
                .unwrap();
            a.end(IpAddr::from([8, 8, (i / 200) as u8, (i % 200) as u8]));
        }
        assert_eq!(
            a.try_begin(ip("8.8.9.9"), NOW),
            Err(AdmissionRefusal::GroupRate)
        );
        // Other groups are unaffected.
        a.try_begin(ip("8.9.9.9"), NOW).unwrap();
        // 1 s later: 10 more.
        a.try_begin(ip("8.8.9.9"), NOW + 1_000).unwrap();
    }

    #[test]
    fn rate_state_is_bounded() {
        let mut a = Admission::new(AdmissionConfig {
            max_groups_tracked: 10,
            ..AdmissionConfig::default()
        });
        for i in 0..1000u32 {
            let x = IpAddr::from((i + 0x0b00_0000 + (i << 16)).to_be_bytes());
            let _ = a.try_begin(x, NOW + i as u64);
            a.end(x);
            assert!(a.groups_tracked() <= 10);
        }
    }

    proptest! {
        #[test]
        fn limits_hold_and_ends_release(
            ops in proptest::collection::vec((any::<bool>(), 0u8..6, 0u8..4, 0u64..500), 1..300)
        ) {
            let cfg = AdmissionConfig { max_pending_total: 10, max_pending_per_ip: 2, max_pending_per_subnet: 4, ..AdmissionConfig::default() };
            let mut a = Admission::new(cfg);
            let mut now = NOW;
            let mut open: Vec<IpAddr> = Vec::new();
            for (begin, sub, host, dt) in ops {
                now += dt;
                if begin {
                    let x = IpAddr::from([20, 1, sub, host]);
                    if a.try_begin(x, now).is_ok() { open.push(x); }
                } else if let Some(x) = open.pop() {
                    a.end(x);
                }
                prop_assert!(a.pending() <= cfg.max_pending_total);
                prop_assert_eq!(a.pending(), open.len());
                for x in &open {
                    prop_assert!(a.pending_from(*x) <= cfg.max_pending_per_ip);
                    let same_sub = open.iter().filter(|y| subnet(**y) == subnet(*x)).count();
                    prop_assert!(same_sub <= cfg.max_pending_per_subnet);
                }
            }
            for x in open.drain(..) { a.end(x); }
            prop_assert_eq!(a.pending(), 0);
        }
    }
}
