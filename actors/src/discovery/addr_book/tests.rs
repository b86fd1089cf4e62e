//! Unit and property tests of the address book.

use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::Ipv4Addr;

const NOW: u64 = 1_800_000_000_000;

fn v4(a: u8, b: u8, c: u8, d: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), 9000)
}

fn book() -> AddrBook {
    AddrBook::new(AddrBookConfig::default(), [7; 32])
}

#[test]
fn mapped_ipv6_is_the_same_entry_as_ipv4() {
    let mut b = book();
    let src: IpAddr = "9.9.9.9".parse().unwrap();
    assert_eq!(
        b.add(v4(1, 2, 3, 4), src, NOW / 1000, NOW),
        AddResult::Added
    );
    let mapped: SocketAddr = "[::ffff:1.2.3.4]:9000".parse().unwrap();
    assert_eq!(b.add(mapped, src, NOW / 1000, NOW), AddResult::Updated);
    assert_eq!(b.len(), 1);
    assert!(b.contains(mapped));
}

#[test]
fn junk_is_refused_and_loopback_needs_the_switch() {
    let mut b = book();
    let src: IpAddr = "9.9.9.9".parse().unwrap();
    for junk in [
        "0.0.0.0:1",
        "1.2.3.4:0",
        "224.1.1.1:5",
        "127.0.0.1:5",
        "10.0.0.1:5",
    ] {
        assert_eq!(
            b.add(junk.parse().unwrap(), src, NOW / 1000, NOW),
            AddResult::Unroutable
        );
    }
    let mut config = AddrBookConfig::default();
    config.reach.allow_loopback = true;
    let mut local = AddrBook::new(config, [7; 32]);
    assert_eq!(
        local.add("127.0.1.5:9".parse().unwrap(), src, NOW / 1000, NOW),
        AddResult::Added
    );
}

#[test]
fn one_group_is_capped() {
    let mut b = book();
    let cap = b.config().max_per_group;
    let mut added = 0;
    for i in 0..200u8 {
        let src = IpAddr::V4(Ipv4Addr::new(50, i, 0, 1));
        if b.add(v4(1, 2, i, 1), src, NOW / 1000, NOW) == AddResult::Added {
            added += 1;
        }
    }
    assert_eq!(added, cap);
    assert_eq!(b.group_count(netgroup("1.2.0.0".parse().unwrap())), cap);
}

#[test]
fn one_source_fills_at_most_its_buckets_and_its_cap() {
    let mut b = book();
    let src: IpAddr = "9.9.9.9".parse().unwrap();
    let mut n = 0u32;
    for g in 0..10_000u32 {
        for k in 0..10u32 {
            let ip = Ipv4Addr::from((g + 1) << 16 | k);
            let _ = b.add(SocketAddr::new(IpAddr::V4(ip), 1), src, NOW / 1000, NOW);
            n += 1;
        }
    }
    assert_eq!(n, 100_000);
    let c = *b.config();
    assert!(b.len() <= c.max_per_source_group, "{}", b.len());
    assert!(b.len() <= c.buckets_per_source_group * c.bucket_size);
    let buckets: std::collections::BTreeSet<usize> = b
        .new_slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_some())
        .map(|(i, _)| i / c.bucket_size)
        .collect();
    assert!(buckets.len() <= c.buckets_per_source_group);
    b.check_consistent();
}

#[test]
fn good_moves_to_tried_and_tried_bias_selects_it() {
    let mut b = book();
    let src: IpAddr = "9.9.9.9".parse().unwrap();
    for i in 1..50u8 {
        b.add(v4(20, i, 1, 1), src, NOW / 1000, NOW);
    }
    b.mark_good(v4(20, 7, 1, 1), NOW);
    assert!(b.is_tried("20.7.1.1".parse().unwrap()));
    assert_eq!(b.tried_len(), 1);
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..20 {
        assert_eq!(
            b.select(&mut rng, 1.0, false, NOW, |_| true),
            Some(v4(20, 7, 1, 1))
        );
        let n = b.select(&mut rng, 1.0, true, NOW, |_| true).unwrap();
        assert_ne!(n, v4(20, 7, 1, 1));
    }
    // The filter is respected.
    assert_ne!(
        b.select(&mut rng, 1.0, false, NOW, |a| a != v4(20, 7, 1, 1)),
        Some(v4(20, 7, 1, 1))
    );
    b.check_consistent();
}

#[test]
fn entries_age_out_by_last_seen_and_by_failures() {
    let mut b = book();
    let src: IpAddr = "9.9.9.9".parse().unwrap();
    let horizon = b.config().horizon_s;
    b.add(v4(30, 1, 1, 1), src, NOW / 1000 - horizon - 10, NOW);
    b.add(v4(30, 2, 1, 1), src, NOW / 1000, NOW);
    b.add(v4(30, 3, 1, 1), src, NOW / 1000, NOW);
    for _ in 0..3 {
        b.mark_failed(v4(30, 2, 1, 1), NOW);
    }
    // Recently tried: kept for now.
    assert_eq!(b.sweep(NOW + 1_000), 1);
    assert_eq!(b.sweep(NOW + 120_000), 1);
    assert_eq!(b.len(), 1);
    assert!(b.contains(v4(30, 3, 1, 1)));
    b.check_consistent();
}

#[test]
fn future_timestamps_are_not_trusted() {
    let mut b = book();
    let src: IpAddr = "9.9.9.9".parse().unwrap();
    b.add(v4(31, 1, 1, 1), src, NOW / 1000 + 1_000_000, NOW);
    let e = b.get("31.1.1.1".parse().unwrap()).unwrap();
    assert!(e.last_seen < NOW / 1000);
}

#[test]
fn sample_excludes_the_asker_and_is_capped() {
    let mut b = book();
    for i in 1..=200u8 {
        let src = IpAddr::V4(Ipv4Addr::new(60, i, 0, 1));
        b.add(v4(40, i, 1, 1), src, NOW / 1000, NOW);
    }
    let mut rng = StdRng::seed_from_u64(3);
    let asker: IpAddr = "40.5.1.1".parse().unwrap();
    let s = b.sample(&mut rng, 150, Some(asker), NOW);
    assert_eq!(s.len(), 150);
    assert!(s.iter().all(|k| k.addr.ip() != asker));
    let all = b.sample(&mut rng, 1000, Some(asker), NOW);
    assert_eq!(all.len(), b.len() - 1);
}

#[test]
fn the_secret_decides_placement() {
    let src: IpAddr = "9.9.9.9".parse().unwrap();
    let mut a = AddrBook::new(AddrBookConfig::default(), [1; 32]);
    let mut b = AddrBook::new(AddrBookConfig::default(), [2; 32]);
    for i in 1..=100u8 {
        a.add(v4(70, i, 1, 1), src, NOW / 1000, NOW);
        b.add(v4(70, i, 1, 1), src, NOW / 1000, NOW);
    }
    let slots = |x: &AddrBook| x.entries.values().map(|e| e.slot).collect::<Vec<_>>();
    assert_ne!(slots(&a), slots(&b));
}

#[test]
fn snapshot_restores_the_same_book() {
    let mut b = book();
    for i in 1..=100u8 {
        let src = IpAddr::V4(Ipv4Addr::new(61, i, 0, 1));
        b.add(v4(41, i, 1, 1), src, NOW / 1000, NOW);
    }
    for i in 1..=10u8 {
        b.mark_good(v4(41, i, 1, 1), NOW);
    }
    b.mark_failed(v4(41, 50, 1, 1), NOW);
    let snap = b.snapshot();
    let r = AddrBook::restore(AddrBookConfig::default(), &snap);
    assert_eq!(r.snapshot(), snap);
    assert_eq!(r.tried_len(), 10);
    r.check_consistent();
    let bytes = rmp_serde::to_vec(&snap).unwrap();
    let back: AddrBookSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, snap);
}

#[derive(Debug, Clone)]
enum Op {
    Add(u32, u32, u32),
    Good(u32),
    Fail(u32),
    Remove(u32),
    Sweep,
    Tick(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..300, 0u32..40, 0u32..1000).prop_map(|(a, s, t)| Op::Add(a, s, t)),
        2 => (0u32..300).prop_map(Op::Good),
        2 => (0u32..300).prop_map(Op::Fail),
        1 => (0u32..300).prop_map(Op::Remove),
        1 => Just(Op::Sweep),
        1 => (0u32..100_000).prop_map(Op::Tick),
    ]
}

fn addr_of(i: u32) -> SocketAddr {
    // 300 addresses over 30 groups.
    v4(80 + (i % 30) as u8, 1, (i / 30) as u8, 1)
}

proptest! {
    #[test]
    fn bounds_hold_over_random_histories(ops in proptest::collection::vec(op(), 1..400)) {
        let config = AddrBookConfig {
            max_entries: 100,
            new_buckets: 8,
            tried_buckets: 4,
            bucket_size: 8,
            buckets_per_source_group: 2,
            tried_buckets_per_group: 2,
            max_per_group: 6,
            max_per_source_group: 40,
            ..AddrBookConfig::default()
        };
        let mut b = AddrBook::new(config, [9; 32]);
        let mut now = NOW;
        for op in ops {
            match op {
                Op::Add(a, s, t) => {
                    let src = IpAddr::V4(Ipv4Addr::new(150, s as u8, 0, 1));
                    let _ = b.add(addr_of(a), src, now / 1000 - t as u64 * 3600, now);
                }
                Op::Good(a) => b.mark_good(addr_of(a), now),
                Op::Fail(a) => b.mark_failed(addr_of(a), now),
                Op::Remove(a) => b.remove(addr_of(a)),
                Op::Sweep => { b.sweep(now); }
                Op::Tick(s) => now += s as u64 * 1000,
            }
            b.check_consistent();
            prop_assert!(b.len() <= config.max_entries);
            prop_assert!(b.max_group_count() <= config.max_per_group);
            prop_assert!(b.max_source_count() <= config.max_per_source_group);
        }
    }
}
