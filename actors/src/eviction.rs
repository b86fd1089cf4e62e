//! Inbound eviction when the inbound slots are full, after Bitcoin Core's: a newcomer may take
//! the place of an existing inbound peer, but an attacker must not be able to displace the peers
//! that matter. Some peers are protected, each for a reason an attacker cannot cheaply fake:
//! a few by network group (chosen by a keyed hash, so the attacker cannot know which groups),
//! the lowest ping times (a measured property), the most recent useful messages (the application
//! marks a peer useful, e.g. for a new block), and half of the rest by longest uptime. Of those
//! left, the largest network group loses its youngest member: the attacker's many connections
//! from few groups are what gets evicted. Peers the operator listed (`peers`) are never evicted.
//!
//! One addition to Bitcoin Core's rule: a connection younger than `min_age_ms` is not eligible.
//! Without it, a busy seed hit by many bootstrapping nodes evicts each newcomer for the next one
//! before its address answer arrives, and nobody learns anything (seen in the simulator); with
//! it, a newcomer is refused until someone is old enough to make way, and retries.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::netgroup::{keyed_hash, netgroup, NetGroup};
use crate::ConnId;

/// What the policy knows about one inbound peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionCandidate {
    /// The connection.
    pub conn: ConnId,
    /// Its canonical IP.
    pub ip: IpAddr,
    /// When it connected (ms).
    pub connected_ms: u64,
    /// Lowest ping round trip measured (ms), if any.
    pub min_ping_ms: Option<u64>,
    /// When it last sent something the application marked useful (ms), if ever.
    pub last_useful_ms: Option<u64>,
    /// Never evicted (an operator-listed peer).
    pub always_keep: bool,
}

/// How many peers each protection covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvictionConfig {
    /// Peers protected by keyed network group (one per group).
    pub protect_by_group: usize,
    /// Peers protected by lowest ping.
    pub protect_by_ping: usize,
    /// Peers protected by most recent useful message.
    pub protect_by_useful: usize,
    /// Fraction of the remaining peers protected by longest uptime.
    pub protect_uptime_fraction: f64,
    /// Connections younger than this are never evicted.
    pub min_age_ms: u64,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        Self {
            protect_by_group: 4,
            protect_by_ping: 8,
            protect_by_useful: 4,
            protect_uptime_fraction: 0.5,
            min_age_ms: 10_000,
        }
    }
}

/// Why a peer was protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Listed by the operator.
    AlwaysKeep,
    /// Connected less than `min_age_ms` ago.
    Young,
    /// Its network group came out on top of the keyed hash.
    Group,
    /// Among the lowest pings.
    Ping,
    /// Among the most recently useful.
    Useful,
    /// Among the longest connected.
    Uptime,
}

/// The outcome: whom to evict (none when everyone is protected) and who was protected why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionDecision {
    /// The connection to close with `Disconnect{evicted}`.
    pub victim: Option<ConnId>,
    /// Protected connections with their reason.
    pub protected: Vec<(ConnId, Protection)>,
}

/// Applies the policy to the current inbound peers at `now_ms`; `key` is the node's secret.
pub fn select_to_evict(
    candidates: &[EvictionCandidate],
    key: &[u8; 32],
    config: &EvictionConfig,
    now_ms: u64,
) -> EvictionDecision {
    let mut protected = Vec::new();
    let mut left: Vec<EvictionCandidate> = Vec::new();
    for c in candidates {
        if c.always_keep {
            protected.push((c.conn, Protection::AlwaysKeep));
        } else if now_ms.saturating_sub(c.connected_ms) < config.min_age_ms {
            protected.push((c.conn, Protection::Young));
        } else {
            left.push(*c);
        }
    }
    // Deterministic base order.
    left.sort_by_key(|c| c.conn);

    // 1. By keyed network group: the top groups by keyed hash keep their oldest peer.
    let mut groups: BTreeMap<NetGroup, Vec<EvictionCandidate>> = BTreeMap::new();
    for c in &left {
        groups.entry(netgroup(c.ip)).or_default().push(*c);
    }
    let mut ranked: Vec<(u64, NetGroup)> = groups
        .keys()
        .map(|g| (keyed_hash(key, &[b"evict", g.as_bytes()]), *g))
        .collect();
    ranked.sort_by(|a, b| b.cmp(a));
    for (_, g) in ranked.into_iter().take(config.protect_by_group) {
        if let Some(oldest) = groups[&g].iter().min_by_key(|c| (c.connected_ms, c.conn)) {
            protect(&mut left, &mut protected, oldest.conn, Protection::Group);
        }
    }
    // 2. Lowest ping.
    left.sort_by_key(|c| (c.min_ping_ms.unwrap_or(u64::MAX), c.conn));
    let take: Vec<ConnId> = left
        .iter()
        .filter(|c| c.min_ping_ms.is_some())
        .take(config.protect_by_ping)
        .map(|c| c.conn)
        .collect();
    for conn in take {
        protect(&mut left, &mut protected, conn, Protection::Ping);
    }
    // 3. Most recently useful.
    left.sort_by_key(|c| (std::cmp::Reverse(c.last_useful_ms), c.conn));
    let take: Vec<ConnId> = left
        .iter()
        .filter(|c| c.last_useful_ms.is_some())
        .take(config.protect_by_useful)
        .map(|c| c.conn)
        .collect();
    for conn in take {
        protect(&mut left, &mut protected, conn, Protection::Useful);
    }
    // 4. Half of the rest by uptime.
    left.sort_by_key(|c| (c.connected_ms, c.conn));
    let n = (left.len() as f64 * config.protect_uptime_fraction.clamp(0.0, 1.0)) as usize;
    let take: Vec<ConnId> = left.iter().take(n).map(|c| c.conn).collect();
    for conn in take {
        protect(&mut left, &mut protected, conn, Protection::Uptime);
    }
    // 5. The largest group (ties: the one with the youngest member) loses its youngest.
    let mut groups: BTreeMap<NetGroup, Vec<EvictionCandidate>> = BTreeMap::new();
    for c in &left {
        groups.entry(netgroup(c.ip)).or_default().push(*c);
    }
    let victim = groups
        .values()
        .max_by_key(|members| {
            let youngest = members
                .iter()
                .map(|c| (c.connected_ms, c.conn))
                .max()
                .unwrap_or((0, ConnId(0)));
            (members.len(), youngest)
        })
        .and_then(|members| members.iter().max_by_key(|c| (c.connected_ms, c.conn)))
        .map(|c| c.conn);
    EvictionDecision { victim, protected }
}

fn protect(
    left: &mut Vec<EvictionCandidate>,
    protected: &mut Vec<(ConnId, Protection)>,
    conn: ConnId,
    why: Protection,
) {
    if let Some(i) = left.iter().position(|c| c.conn == conn) {
        left.remove(i);
        protected.push((conn, why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(id: u64, ip: [u8; 4], connected_ms: u64) -> EvictionCandidate {
        EvictionCandidate {
            conn: ConnId(id),
            ip: IpAddr::from(ip),
            connected_ms,
            min_ping_ms: None,
            last_useful_ms: None,
            always_keep: false,
        }
    }

    #[test]
    fn evicts_the_youngest_of_the_largest_group_and_keeps_the_protected() {
        let key = [3u8; 32];
        let cfg = EvictionConfig::default();
        let mut cands = Vec::new();
        // 20 honest peers, each in its own group, old, some with good pings, some useful.
        for i in 0..20u64 {
            let mut c = cand(i, [30 + i as u8, 1, 1, 1], 1_000 + i);
            c.min_ping_ms = Some(50 + i);
            if i < 6 {
                c.last_useful_ms = Some(90_000 + i);
            }
            cands.push(c);
        }
        // 20 attacker peers from one /16, young, fast pings.
        for i in 0..20u64 {
            let mut c = cand(100 + i, [66, 6, 1, i as u8], 50_000 + i);
            c.min_ping_ms = Some(1);
            cands.push(c);
        }
        let d = select_to_evict(&cands, &key, &cfg, 100_000);
        // The youngest attacker connection goes.
        assert_eq!(d.victim, Some(ConnId(119)));
        // The most recently useful honest peers are protected for it.
        for i in 2..6u64 {
            assert!(
                d.protected.contains(&(ConnId(i), Protection::Useful))
                    || d.protected.iter().any(|(c, _)| *c == ConnId(i))
            );
        }
        // Always-keep peers are never chosen, even when everything else is protected.
        let only = vec![EvictionCandidate {
            always_keep: true,
            ..cand(1, [1, 1, 1, 1], 5)
        }];
        let d = select_to_evict(&only, &key, &cfg, 100_000);
        assert_eq!(d.victim, None);
        assert_eq!(d.protected, vec![(ConnId(1), Protection::AlwaysKeep)]);
    }

    #[test]
    fn young_connections_are_not_eligible() {
        let cfg = EvictionConfig::default();
        let cands: Vec<_> = (0..40u64)
            .map(|i| cand(i, [40 + i as u8, 1, 1, 1], 1_000 + i))
            .collect();
        let now = 1_000 + cfg.min_age_ms - 1;
        let d = select_to_evict(&cands, &[1; 32], &cfg, now);
        assert_eq!(d.victim, None);
        assert!(d.protected.iter().all(|p| p.1 == Protection::Young));
        let d = select_to_evict(&cands, &[1; 32], &cfg, now + 100);
        assert!(d.victim.is_some());
    }

    #[test]
    fn few_candidates_are_all_protected() {
        let cands: Vec<_> = (0..4u64)
            .map(|i| cand(i, [40 + i as u8, 1, 1, 1], i))
            .collect();
        let d = select_to_evict(&cands, &[1; 32], &EvictionConfig::default(), 100_000);
        assert_eq!(d.victim, None);
        assert_eq!(d.protected.len(), 4);
    }

    fn arb_cand() -> impl Strategy<Value = EvictionCandidate> {
        (
            0u64..1000,
            0u8..8,
            0u8..4,
            0u64..100_000,
            proptest::option::of(0u64..500),
            proptest::option::of(0u64..100_000),
            proptest::bool::weighted(0.05),
        )
            .prop_map(|(id, g, h, t, ping, useful, keep)| EvictionCandidate {
                conn: ConnId(id),
                ip: IpAddr::from([50, g, 0, h]),
                connected_ms: t,
                min_ping_ms: ping,
                last_useful_ms: useful,
                always_keep: keep,
            })
    }

    proptest! {
        #[test]
        fn victim_is_unprotected_youngest_of_a_largest_group(
            mut cands in proptest::collection::vec(arb_cand(), 0..60),
            key in any::<[u8; 32]>(),
        ) {
            cands.sort_by_key(|c| c.conn);
            cands.dedup_by_key(|c| c.conn);
            let cfg = EvictionConfig { min_age_ms: 0, ..EvictionConfig::default() };
            let d = select_to_evict(&cands, &key, &cfg, 200_000);
            // Same input, same answer.
            prop_assert_eq!(&d, &select_to_evict(&cands, &key, &cfg, 200_000));
            let prot: std::collections::BTreeSet<ConnId> = d.protected.iter().map(|p| p.0).collect();
            prop_assert_eq!(prot.len(), d.protected.len());
            for c in &cands {
                if c.always_keep {
                    prop_assert!(d.protected.contains(&(c.conn, Protection::AlwaysKeep)));
                }
            }
            let rest: Vec<&EvictionCandidate> = cands.iter().filter(|c| !prot.contains(&c.conn)).collect();
            match d.victim {
                None => prop_assert!(rest.is_empty()),
                Some(v) => {
                    prop_assert!(!prot.contains(&v));
                    let vc = cands.iter().find(|c| c.conn == v).unwrap();
                    prop_assert!(!vc.always_keep);
                    let size = |g: NetGroup| rest.iter().filter(|c| netgroup(c.ip) == g).count();
                    let vg = netgroup(vc.ip);
                    for c in &rest {
                        prop_assert!(size(netgroup(c.ip)) <= size(vg));
                        if netgroup(c.ip) == vg {
                            prop_assert!((c.connected_ms, c.conn) <= (vc.connected_ms, vc.conn));
                        }
                    }
                }
            }
            // Enough unprotected candidates always yield a victim.
            let keep = cands.iter().filter(|c| c.always_keep).count();
            if cands.len() - keep > cfg.protect_by_group + cfg.protect_by_ping + cfg.protect_by_useful + 1 {
                prop_assert!(d.victim.is_some());
            }
        }
    }
}
