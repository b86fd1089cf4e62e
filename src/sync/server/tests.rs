//! Unit and property tests of [`ServeQueue`].

use super::*;
use proptest::prelude::*;

const LIMITS: ServeLimits = ServeLimits {
    in_service: 2,
    queued: 4,
    queued_bytes: 1000,
};

#[test]
fn connections_are_served_in_turn() {
    let mut q = ServeQueue::new(ServeLimits {
        in_service: 100,
        ..LIMITS
    });
    for i in 0..3 {
        assert_eq!(q.push(ConnId(1), i, 10), Admit::Queued);
    }
    assert_eq!(q.push(ConnId(2), 10, 10), Admit::Queued);
    assert_eq!(q.push(ConnId(2), 11, 10), Admit::Queued);
    let order: Vec<_> = std::iter::from_fn(|| q.take_next()).collect();
    assert_eq!(
        order,
        vec![
            (ConnId(1), 0),
            (ConnId(2), 10),
            (ConnId(1), 1),
            (ConnId(2), 11),
            (ConnId(1), 2)
        ]
    );
}

#[test]
fn a_connection_that_does_not_drain_waits_and_is_dropped_beyond_its_queue() {
    let mut q = ServeQueue::new(LIMITS);
    for i in 0..6 {
        assert_eq!(q.push(ConnId(1), i, 10), Admit::Queued, "request {i}");
        // Two get into service, the rest wait.
        let _ = q.take_next();
    }
    assert_eq!(q.in_service(ConnId(1)), 2);
    assert!(q.is_full(ConnId(1)));
    assert!(q.take_next().is_none(), "not served again before it drains");
    assert!(matches!(q.push(ConnId(1), 6, 10), Admit::Drop(_)));
    assert_eq!(q.waiting(), 0, "its requests are gone");
    assert!(q.take_next().is_none());
}

#[test]
fn bytes_are_bounded_too() {
    let mut q = ServeQueue::new(LIMITS);
    assert_eq!(q.push(ConnId(1), 0, 600), Admit::Queued);
    assert!(matches!(q.push(ConnId(1), 1, 600), Admit::Drop(_)));
}

#[test]
fn drained_connections_are_served_again_and_removed_ones_never() {
    let mut q = ServeQueue::new(LIMITS);
    for i in 0..4 {
        q.push(ConnId(1), i, 10);
        q.push(ConnId(2), 10 + i, 10);
    }
    assert_eq!(q.take_next(), Some((ConnId(1), 0)));
    assert_eq!(q.take_next(), Some((ConnId(2), 10)));
    assert_eq!(q.take_next(), Some((ConnId(1), 1)));
    assert_eq!(q.take_next(), Some((ConnId(2), 11)));
    assert_eq!(q.take_next(), None);
    q.drained(ConnId(2));
    assert_eq!(q.remove(ConnId(1)), 2);
    q.drained(ConnId(1));
    assert_eq!(q.take_next(), Some((ConnId(2), 12)));
    assert_eq!(q.take_next(), Some((ConnId(2), 13)));
    assert_eq!(q.take_next(), None);
}

#[test]
fn turns_share_work_not_request_counts() {
    let mut q = ServeQueue::new(ServeLimits {
        in_service: 100,
        queued: 100,
        queued_bytes: 100_000,
    });
    // A flooder asks 1,024 blocks at a time, an honest node 128.
    for i in 0..4 {
        q.push_work(ConnId(1), 100 + i, 10, 1024);
    }
    for i in 0..16 {
        q.push_work(ConnId(2), i, 10, 128);
    }
    let order: Vec<_> = std::iter::from_fn(|| q.take_next()).take(10).collect();
    let big = order.iter().filter(|(c, _)| *c == ConnId(1)).count();
    let small = order.iter().filter(|(c, _)| *c == ConnId(2)).count();
    assert_eq!((big, small), (1, 9), "{order:?}");
}

#[derive(Debug, Clone)]
enum Op {
    Push(u8),
    Next,
    Drained(u8),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4).prop_map(Op::Push),
        4 => Just(Op::Next),
        2 => (0u8..4).prop_map(Op::Drained),
        1 => (0u8..4).prop_map(Op::Remove),
    ]
}

proptest! {
    /// Over any history: no connection has more than `in_service` requests in service or more
    /// than `queued` waiting, a removed or dropped connection's requests are never served, and
    /// every request is served at most once, in its connection's order.
    #[test]
    fn bounds_hold_and_gone_connections_are_never_served(ops in prop::collection::vec(op(), 0..300)) {
        let mut q = ServeQueue::new(LIMITS);
        let mut next_id = 0u32;
        // Per connection: ids pushed and not yet served or dropped.
        let mut live: HashMap<u8, VecDeque<u32>> = HashMap::new();
        for op in ops {
            match op {
                Op::Push(c) => {
                    next_id += 1;
                    match q.push(ConnId(u64::from(c)), next_id, 100) {
                        Admit::Queued => live.entry(c).or_default().push_back(next_id),
                        Admit::Drop(_) => { live.remove(&c); }
                    }
                }
                Op::Next => {
                    if let Some((conn, id)) = q.take_next() {
                        let c = conn.0 as u8;
                        let expected = live.get_mut(&c).and_then(|l| l.pop_front());
                        prop_assert_eq!(expected, Some(id), "served in order, never after removal");
                        prop_assert!(q.in_service(conn) <= LIMITS.in_service);
                    }
                }
                Op::Drained(c) => q.drained(ConnId(u64::from(c))),
                Op::Remove(c) => {
                    q.remove(ConnId(u64::from(c)));
                    live.remove(&c);
                }
            }
            for (c, l) in &live {
                prop_assert!(l.len() <= LIMITS.queued, "conn {} has {} waiting", c, l.len());
            }
            prop_assert_eq!(q.waiting(), live.values().map(|l| l.len()).sum::<usize>());
        }
    }
}
