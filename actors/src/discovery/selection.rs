//! `OutboundSelector`: which address to dial next. Anchors (the outbound peers of the previous
//! run) come first after a restart, so an attacker who filled the book while the node was down
//! still does not choose its first peers. Then the book: tried addresses are preferred (they
//! worked before), and at most one outbound peer per network group while the book holds any
//! dialable address of an unused group, so that taking over a node's outbound set needs many
//! groups, not many addresses. When the outbound set is full, an occasional feeler dials a new
//! address of an unused group only to learn whether it works (moving it to the tried table).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use rand::Rng;

use super::addr_book::AddrBook;
use super::{canonical_addr, netgroup};

/// Selection tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectionConfig {
    /// Outbound connections to keep.
    pub target_outbound: usize,
    /// Probability of drawing from the tried table first.
    pub tried_bias: f64,
    /// Interval between feelers when the outbound set is full.
    pub feeler_interval_ms: u64,
    /// Outbound peers remembered as anchors for the next start.
    pub max_anchors: usize,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self {
            target_outbound: 8,
            tried_bias: 0.7,
            feeler_interval_ms: 120_000,
            max_anchors: 2,
        }
    }
}

/// Why an address is dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialKind {
    /// An outbound peer of the previous run.
    Anchor,
    /// A regular outbound peer from the book.
    Outbound,
    /// A short test connection to a new address; closed after the handshake.
    Feeler,
}

/// One dial decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialChoice {
    /// Where to dial.
    pub addr: SocketAddr,
    /// Why.
    pub kind: DialKind,
}

/// The outbound dial policy of one node.
#[derive(Debug, Clone)]
pub struct OutboundSelector {
    config: SelectionConfig,
    anchors: Vec<SocketAddr>,
    next_feeler_ms: Option<u64>,
}

impl OutboundSelector {
    /// A selector that dials `anchors` (loaded from storage) first.
    pub fn new(config: SelectionConfig, anchors: Vec<SocketAddr>) -> Self {
        let mut anchors: Vec<SocketAddr> = anchors.into_iter().map(canonical_addr).collect();
        anchors.truncate(config.max_anchors);
        Self {
            config,
            anchors,
            next_feeler_ms: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SelectionConfig {
        &self.config
    }

    /// Anchors not yet dialled.
    pub fn pending_anchors(&self) -> &[SocketAddr] {
        &self.anchors
    }

    /// The next dial, if any. `outbound` are the current outbound peers and running outbound
    /// dials; `busy` is true for addresses that must not be dialled now (connected, dialling,
    /// our own, backing off).
    pub fn next_dial<R: Rng>(
        &mut self,
        book: &AddrBook,
        outbound: &[SocketAddr],
        busy: impl Fn(SocketAddr) -> bool,
        now_ms: u64,
        rng: &mut R,
    ) -> Option<DialChoice> {
        let used: BTreeSet<_> = outbound.iter().map(|a| netgroup(a.ip())).collect();
        if outbound.len() < self.config.target_outbound {
            while !self.anchors.is_empty() {
                let a = self.anchors.remove(0);
                if !busy(a) {
                    return Some(DialChoice {
                        addr: a,
                        kind: DialKind::Anchor,
                    });
                }
            }
            let fresh_group = |a: SocketAddr| !busy(a) && !used.contains(&netgroup(a.ip()));
            let pick = book
                .select(rng, self.config.tried_bias, false, now_ms, fresh_group)
                .or_else(|| book.select(rng, self.config.tried_bias, false, now_ms, |a| !busy(a)));
            return pick.map(|addr| DialChoice {
                addr,
                kind: DialKind::Outbound,
            });
        }
        let due = match self.next_feeler_ms {
            None => {
                self.next_feeler_ms = Some(now_ms + self.config.feeler_interval_ms);
                false
            }
            Some(t) => now_ms >= t,
        };
        if !due {
            return None;
        }
        self.next_feeler_ms = Some(now_ms + self.config.feeler_interval_ms);
        // A feeler moves an address from the new table to the tried one (or ages it out): an
        // unused group first, any untried address else (its connection closes at once, so
        // it never makes two outbound peers of one group).
        book.select(rng, 0.0, true, now_ms, |a| {
            !busy(a) && !used.contains(&netgroup(a.ip()))
        })
        .or_else(|| book.select(rng, 0.0, true, now_ms, |a| !busy(a)))
        .map(|addr| DialChoice {
            addr,
            kind: DialKind::Feeler,
        })
    }

    /// Every dial to start now: as many as the node is short of `target_outbound` (its
    /// outbound peers plus dials in flight, `outbound`), each chosen as [`Self::next_dial`]
    /// would with the earlier choices counted as dials in flight (so no IP twice, one group
    /// each while the book offers unused groups); a feeler, when one is due on a full set,
    /// ends the list. Dialling one address per tick would leave a fresh node short of its
    /// target for `target_outbound` ticks.
    pub fn next_dials<R: Rng>(
        &mut self,
        book: &AddrBook,
        outbound: &[SocketAddr],
        busy: impl Fn(SocketAddr) -> bool,
        now_ms: u64,
        rng: &mut R,
    ) -> Vec<DialChoice> {
        let mut out = outbound.to_vec();
        let mut chosen: Vec<DialChoice> = Vec::new();
        for _ in 0..=self.config.target_outbound {
            let taken = |a: SocketAddr| busy(a) || chosen.iter().any(|c| c.addr.ip() == a.ip());
            let Some(choice) = self.next_dial(book, &out, taken, now_ms, rng) else {
                break;
            };
            chosen.push(choice);
            if choice.kind == DialKind::Feeler {
                break;
            }
            out.push(choice.addr);
        }
        chosen
    }

    /// An outbound peer to let go because its network group is used twice while the book now
    /// holds a dialable address of an unused group (repeats are only a stopgap for a young book).
    /// `outbound` lists the outbound peers oldest first; the youngest repeat is named.
    pub fn group_surplus<R: Rng>(
        &self,
        book: &AddrBook,
        outbound: &[SocketAddr],
        busy: impl Fn(SocketAddr) -> bool,
        now_ms: u64,
        rng: &mut R,
    ) -> Option<SocketAddr> {
        let mut seen = BTreeSet::new();
        let repeats: Vec<SocketAddr> = outbound
            .iter()
            .filter(|a| !seen.insert(netgroup(a.ip())))
            .copied()
            .collect();
        let repeat = *repeats.last()?;
        let used: BTreeSet<_> = outbound.iter().map(|a| netgroup(a.ip())).collect();
        book.select(rng, self.config.tried_bias, false, now_ms, |a| {
            !busy(a) && !used.contains(&netgroup(a.ip()))
        })
        .map(|_| repeat)
    }

    /// The anchors to persist: the longest-connected outbound peers (pass them oldest first).
    pub fn anchors_to_save(&self, outbound_oldest_first: &[SocketAddr]) -> Vec<SocketAddr> {
        outbound_oldest_first
            .iter()
            .take(self.config.max_anchors)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::addr_book::AddrBookConfig;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::net::{IpAddr, Ipv4Addr};

    const NOW: u64 = 1_800_000_000_000;

    fn addr(g: u8, h: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(90, g, 0, h)), 7)
    }

    fn book_of(addrs: &[SocketAddr]) -> AddrBook {
        let mut b = AddrBook::new(AddrBookConfig::default(), [4; 32]);
        for (i, a) in addrs.iter().enumerate() {
            let src = IpAddr::V4(Ipv4Addr::new(91, i as u8, 0, 1));
            b.add(*a, src, NOW / 1000, NOW);
        }
        b
    }

    #[test]
    fn anchors_first_then_one_per_group_then_repeat_groups() {
        let addrs: Vec<_> = (1..=3)
            .flat_map(|g| (1..=3).map(move |h| addr(g, h)))
            .collect();
        let book = book_of(&addrs);
        let anchor = addr(200, 1);
        let mut s = OutboundSelector::new(SelectionConfig::default(), vec![anchor]);
        let mut rng = StdRng::seed_from_u64(1);
        let mut out: Vec<SocketAddr> = Vec::new();
        let first = s.next_dial(&book, &out, |_| false, NOW, &mut rng).unwrap();
        assert_eq!(first.kind, DialKind::Anchor);
        assert_eq!(first.addr, anchor);
        out.push(anchor);
        let mut groups = BTreeSet::new();
        for _ in 0..3 {
            let busy = |a: SocketAddr| out.contains(&a);
            let c = s.next_dial(&book, &out, busy, NOW, &mut rng).unwrap();
            assert_eq!(c.kind, DialKind::Outbound);
            assert!(
                groups.insert(netgroup(c.addr.ip())),
                "group repeated too early"
            );
            out.push(c.addr);
        }
        // All three groups used: now a repeat is allowed.
        let busy = |a: SocketAddr| out.contains(&a);
        let c = s.next_dial(&book, &out, busy, NOW, &mut rng).unwrap();
        assert!(!out.contains(&c.addr));
    }

    #[test]
    fn tried_is_preferred() {
        let addrs: Vec<_> = (1..=50).map(|g| addr(g, 1)).collect();
        let mut book = book_of(&addrs);
        book.mark_good(addr(7, 1), NOW);
        let cfg = SelectionConfig {
            tried_bias: 1.0,
            ..SelectionConfig::default()
        };
        let mut s = OutboundSelector::new(cfg, vec![]);
        let mut rng = StdRng::seed_from_u64(2);
        let c = s.next_dial(&book, &[], |_| false, NOW, &mut rng).unwrap();
        assert_eq!(c.addr, addr(7, 1));
    }

    #[test]
    fn feelers_when_full_once_per_interval_to_new_addresses() {
        let addrs: Vec<_> = (1..=20).map(|g| addr(g, 1)).collect();
        let mut book = book_of(&addrs);
        let out: Vec<_> = (1..=8).map(|g| addr(g, 1)).collect();
        for a in &out {
            book.mark_good(*a, NOW);
        }
        let mut s = OutboundSelector::new(SelectionConfig::default(), vec![]);
        let mut rng = StdRng::seed_from_u64(3);
        let busy = |a: SocketAddr| out.contains(&a);
        assert_eq!(s.next_dial(&book, &out, busy, NOW, &mut rng), None);
        let t = NOW + s.config().feeler_interval_ms;
        let f = s.next_dial(&book, &out, busy, t, &mut rng).unwrap();
        assert_eq!(f.kind, DialKind::Feeler);
        assert!(!book.is_tried(f.addr.ip()));
        assert_eq!(s.next_dial(&book, &out, busy, t + 1, &mut rng), None);
    }

    #[test]
    fn a_repeated_group_is_let_go_once_an_alternative_appears() {
        let mut book = book_of(&[addr(1, 1), addr(1, 2)]);
        let s = OutboundSelector::new(SelectionConfig::default(), vec![]);
        let mut rng = StdRng::seed_from_u64(5);
        let out = vec![addr(1, 1), addr(1, 2)];
        let busy = |a: SocketAddr| out.contains(&a);
        assert_eq!(s.group_surplus(&book, &out, busy, NOW, &mut rng), None);
        book.add(addr(2, 1), "91.200.0.1".parse().unwrap(), NOW / 1000, NOW);
        assert_eq!(
            s.group_surplus(&book, &out, busy, NOW, &mut rng),
            Some(addr(1, 2))
        );
        let distinct = vec![addr(1, 1), addr(2, 1)];
        assert_eq!(
            s.group_surplus(&book, &distinct, |a| distinct.contains(&a), NOW, &mut rng),
            None
        );
    }

    #[test]
    fn a_fresh_node_dials_its_whole_shortfall_at_once() {
        let addrs: Vec<_> = (1..=30).map(|g| addr(g, 1)).collect();
        let book = book_of(&addrs);
        let mut s = OutboundSelector::new(SelectionConfig::default(), vec![]);
        let mut rng = StdRng::seed_from_u64(6);
        let out = vec![addr(1, 1), addr(2, 1)];
        let busy = |a: SocketAddr| out.contains(&a);
        let dials = s.next_dials(&book, &out, busy, NOW, &mut rng);
        assert_eq!(dials.len(), 6);
        let groups: BTreeSet<_> = dials.iter().map(|d| netgroup(d.addr.ip())).collect();
        assert_eq!(groups.len(), 6, "one group each: {dials:?}");
        assert!(dials
            .iter()
            .all(|d| d.kind == DialKind::Outbound && !busy(d.addr)));
        // Full: nothing (the first call on a full set only schedules the feeler).
        let mut full = out.clone();
        full.extend(dials.iter().map(|d| d.addr));
        assert!(s
            .next_dials(&book, &full, |a| full.contains(&a), NOW, &mut rng)
            .is_empty());
    }

    proptest! {
        #[test]
        fn next_dials_fill_the_shortfall_without_repeats(
            spec in proptest::collection::vec((1u8..40, 1u8..4), 0..60),
            nout in 0usize..10,
            seed in any::<u64>(),
        ) {
            let addrs: Vec<_> = spec.iter().map(|(g, h)| addr(*g, *h)).collect();
            let book = book_of(&addrs);
            let cfg = SelectionConfig::default();
            let mut s = OutboundSelector::new(cfg, vec![]);
            let mut rng = StdRng::seed_from_u64(seed);
            let out: Vec<SocketAddr> = addrs.iter().take(nout).copied().collect();
            let busy = |a: SocketAddr| out.iter().any(|o| o.ip() == a.ip());
            let dials = s.next_dials(&book, &out, busy, NOW, &mut rng);
            let ips: BTreeSet<_> = dials.iter().map(|d| d.addr.ip()).collect();
            prop_assert_eq!(ips.len(), dials.len(), "an IP twice: {:?}", dials);
            prop_assert!(dials.iter().all(|d| !busy(d.addr) && book.contains(d.addr)));
            let short = cfg.target_outbound.saturating_sub(out.len());
            let outbound = dials.iter().filter(|d| d.kind == DialKind::Outbound).count();
            prop_assert!(outbound <= short);
            prop_assert!(dials.iter().filter(|d| d.kind == DialKind::Feeler).count() <= 1);
            // Enough free addresses: the whole shortfall is dialled now, not one per tick.
            let free: BTreeSet<_> = addrs
                .iter()
                .filter(|a| book.contains(**a) && !busy(**a))
                .map(|a| a.ip())
                .collect();
            prop_assert_eq!(outbound, short.min(free.len()));
        }

        #[test]
        fn never_busy_and_never_a_used_group_while_others_exist(
            spec in proptest::collection::vec((1u8..12, 1u8..4), 1..40),
            nout in 0usize..8,
            seed in any::<u64>(),
        ) {
            let addrs: Vec<_> = spec.iter().map(|(g, h)| addr(*g, *h)).collect();
            let book = book_of(&addrs);
            let mut s = OutboundSelector::new(SelectionConfig::default(), vec![]);
            let mut rng = StdRng::seed_from_u64(seed);
            let out: Vec<SocketAddr> = addrs.iter().take(nout).copied().collect();
            let busy = |a: SocketAddr| out.contains(&a);
            let used: BTreeSet<_> = out.iter().map(|a| netgroup(a.ip())).collect();
            let alternative = addrs.iter().any(|a| book.contains(*a) && !busy(*a) && !used.contains(&netgroup(a.ip())));
            match s.next_dial(&book, &out, busy, NOW, &mut rng) {
                Some(c) => {
                    prop_assert!(!busy(c.addr));
                    if alternative {
                        prop_assert!(!used.contains(&netgroup(c.addr.ip())));
                    }
                }
                None => prop_assert!(addrs.iter().all(|a| !book.contains(*a) || busy(*a))),
            }
        }
    }
}
