//! `DialPlan`: the connector's address book and backoff policy as a plain struct, tested without
//! sockets. It decides which addresses are due; the connector carries out the dials.
//!
//! Backoff per address: after the n-th consecutive failure the next dial waits
//! `min(base * 2^(n-1), max)`, scaled by a jitter factor in [0.8, 1.2) so that nodes that lost
//! each other at once do not redial in lockstep. A connection that lived at least `reset_after`
//! clears the failures: its loss is news, and the peer is redialled after `base`.
//!
//! What the peer says does not steer the plan for good: only our own nonce coming back in a
//! Hello ([`DialPlan::mark_own`]) marks an address as ours for good. A `self_connection`,
//! `banned`, `wrong_genesis`, `wrong_network` or `wrong_version` reason (from the peer or found
//! at the handshake) means the longest backoff, `max`, after which the address is tried again;
//! an operator's connect ([`DialPlan::add`] with `now_due`) clears the address's failures and
//! backoff (not an "own" mark, which only our own nonce sets and which is proof).
//!
//! An address whose IP is connected by another socket (the peer dialled us) is not dialled; when
//! that connection is lost it is dialled at once, when either side chose to end it
//! ([`DialPlan::ip_released`]) it waits a base interval, so a peer's goodbye is not undone.
//!
//! One-shot entries ([`DialPlan::add_once`]) are dialled once and forgotten when the dial fails
//! or the connection ends: the discovery actor decides its own redials (seeds, anchors and
//! addresses from its book), so the connector only keeps the configured `peers` connected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::canonical_ip;
use crate::reason::DisconnectReason;

/// Backoff parameters.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// A connection living this long resets the failures.
    pub reset_after: Duration,
}

impl Backoff {
    /// Delay after `failures` consecutive failures, before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.base;
        }
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What the plan knows about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrStatus {
    /// The address.
    pub addr: SocketAddr,
    /// Dials started since it was added.
    pub attempts: u32,
    /// Consecutive failures.
    pub failures: u32,
    /// It leads back to this node; never dialled again.
    pub own: bool,
    /// A dial is running or its session is alive.
    pub busy: bool,
    /// Time until it is due (zero when due now).
    pub due_in: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    attempts: u32,
    failures: u32,
    own: bool,
    busy: bool,
    registered: bool,
    /// Dialled once, forgotten when the dial fails or the connection ends.
    once: bool,
    next_at: Instant,
    added: Instant,
}

/// The address book with its backoff state.
#[derive(Debug, Clone)]
pub struct DialPlan {
    entries: HashMap<SocketAddr, Entry>,
    backoff: Backoff,
    max_entries: usize,
}

impl DialPlan {
    /// An empty plan.
    pub fn new(backoff: Backoff, max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            backoff,
            max_entries: max_entries.max(1),
        }
    }

    /// Adds an address (due at once when `now_due`). When the book is full, the oldest entry that
    /// is neither busy nor connected is evicted; if there is none, the address is not added.
    /// `now_due` on a known address (an operator's connect) also clears its failures; an
    /// address proven to be our own stays undialled.
    pub fn add(&mut self, addr: SocketAddr, now: Instant, now_due: bool) -> bool {
        if let Some(e) = self.entries.get_mut(&addr) {
            if now_due {
                e.next_at = now;
                e.failures = 0;
            }
            return true;
        }
        if self.entries.len() >= self.max_entries {
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| !e.busy)
                .min_by_key(|(_, e)| e.added)
                .map(|(a, _)| *a);
            match victim {
                Some(v) => {
                    self.entries.remove(&v);
                }
                None => return false,
            }
        }
        self.entries.insert(
            addr,
            Entry {
                attempts: 0,
                failures: 0,
                own: false,
                busy: false,
                registered: false,
                once: false,
                next_at: now,
                added: now,
            },
        );
        true
    }

    /// Adds a one-shot address, due now: dialled once, forgotten when the dial fails or its
    /// connection ends. An address already in the plan (a configured peer) stays as it is,
    /// made due now. Returns whether the plan holds it.
    pub fn add_once(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.next_at = e.next_at.min(now);
            return true;
        }
        if !self.add(addr, now, true) {
            return false;
        }
        if let Some(e) = self.entries.get_mut(&addr) {
            e.once = true;
        }
        true
    }

    /// Marks an address as this node's own (our nonce came back): it is not dialled again
    /// unless an operator asks for it.
    pub fn mark_own(&mut self, addr: SocketAddr, now: Instant) {
        self.add(addr, now, false);
        if let Some(e) = self.entries.get_mut(&addr) {
            e.own = true;
        }
    }

    /// Addresses to dial now, soonest-due first, at most `slots`, skipping own, busy and banned
    /// addresses and IPs that already have a connection.
    pub fn due(
        &self,
        now: Instant,
        slots: usize,
        skip_ip: impl Fn(IpAddr) -> bool,
    ) -> Vec<SocketAddr> {
        let mut due: Vec<(Instant, SocketAddr)> = self
            .entries
            .iter()
            .filter(|(a, e)| !e.own && !e.busy && e.next_at <= now && !skip_ip(a.ip()))
            .map(|(a, e)| (e.next_at, *a))
            .collect();
        due.sort();
        let mut ips = Vec::new();
        due.into_iter()
            .filter(|(_, a)| {
                // One dial per IP at a time: the registry would keep only one anyway.
                if ips.contains(&a.ip()) {
                    false
                } else {
                    ips.push(a.ip());
                    true
                }
            })
            .take(slots)
            .map(|(_, a)| a)
            .collect()
    }

    /// Outbound connections that count against the target: dials running and sessions alive.
    pub fn busy_count(&self) -> usize {
        self.entries.values().filter(|e| e.busy).count()
    }

    /// A dial to `addr` starts.
    pub fn dial_started(&mut self, addr: SocketAddr) {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.busy = true;
            e.registered = false;
            e.attempts += 1;
        }
    }

    /// The TCP connect failed or timed out.
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant, jitter: f64) {
        if self.entries.get(&addr).is_some_and(|e| e.once) {
            self.entries.remove(&addr);
            return;
        }
        if let Some(e) = self.entries.get_mut(&addr) {
            e.busy = false;
            e.failures = e.failures.saturating_add(1);
            e.next_at = now + scaled(self.backoff.delay(e.failures), jitter);
        }
    }

    /// The dialled session registered.
    pub fn registered(&mut self, addr: SocketAddr) {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.registered = true;
        }
    }

    /// The dialled session ended after living `lived` registered (None: never registered).
    pub fn ended(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        lived: Option<Duration>,
        reason: DisconnectReason,
        jitter: f64,
    ) {
        let backoff = self.backoff;
        if self.entries.get(&addr).is_some_and(|e| e.once) {
            self.entries.remove(&addr);
            return;
        }
        let Some(e) = self.entries.get_mut(&addr) else {
            return;
        };
        e.busy = false;
        e.registered = false;
        match reason {
            // Another socket to the same node won; nothing is wrong with the address.
            DisconnectReason::Duplicate => e.next_at = now + backoff.base,
            // The peer's word (or a mismatch that may be fixed by an upgrade): a long wait, not
            // a permanent mark. A self-connection proven by our own nonce was marked by
            // `mark_own` already.
            DisconnectReason::SelfConnection
            | DisconnectReason::WrongNetwork
            | DisconnectReason::WrongGenesis
            | DisconnectReason::WrongVersion
            | DisconnectReason::Banned => {
                e.failures = e.failures.saturating_add(1);
                e.next_at = now + scaled(backoff.max, jitter);
            }
            _ if lived.is_some_and(|l| l >= backoff.reset_after) => {
                e.failures = 0;
                e.next_at = now + scaled(backoff.base, jitter);
            }
            _ => {
                e.failures = e.failures.saturating_add(1);
                e.next_at = now + scaled(backoff.delay(e.failures), jitter);
            }
        }
    }

    /// A connection to `ip` that the plan did not dial for these addresses (an inbound one, or
    /// one dialled at another port) ended and left the IP unconnected. Its addresses that were
    /// due meanwhile (skipped because the IP was connected) are dialled now when the
    /// connection was lost (`PingTimeout`, `ConnectionLost`): the link is news, as for a
    /// dialled one. Any other end is a choice (the peer's or ours: a request, a shutdown, an
    /// eviction, a limit, misbehaviour), and an instant redial would undo it, so they wait a
    /// base interval first, as after a `Duplicate`. An operator's `connect` still dials at once.
    pub fn ip_released(&mut self, ip: IpAddr, now: Instant, reason: DisconnectReason, jitter: f64) {
        if matches!(
            reason,
            DisconnectReason::PingTimeout | DisconnectReason::ConnectionLost
        ) {
            return;
        }
        let wait = scaled(self.backoff.base, jitter);
        for (a, e) in self.entries.iter_mut() {
            if canonical_ip(a.ip()) == ip && !e.own && !e.busy && e.next_at <= now {
                e.next_at = now + wait;
            }
        }
    }

    /// Status of every address, sorted by address.
    pub fn status(&self, now: Instant) -> Vec<AddrStatus> {
        let mut v: Vec<AddrStatus> = self
            .entries
            .iter()
            .map(|(a, e)| AddrStatus {
                addr: *a,
                attempts: e.attempts,
                failures: e.failures,
                own: e.own,
                busy: e.busy,
                due_in: e.next_at.saturating_duration_since(now),
            })
            .collect();
        v.sort_by_key(|s| s.addr);
        v
    }
}

fn scaled(d: Duration, jitter: f64) -> Duration {
    d.mul_f64(jitter.clamp(0.8, 1.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(60),
        }
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 7000))
    }

    #[test]
    fn one_shot_entries_are_forgotten_after_one_dial() {
        let now = Instant::now();
        let mut p = DialPlan::new(backoff(), 16);
        assert!(p.add_once(addr(3), now));
        assert_eq!(p.due(now, 8, |_| false), vec![addr(3)]);
        p.dial_started(addr(3));
        p.dial_failed(addr(3), now, 1.0);
        assert!(
            p.status(now).is_empty(),
            "a failed one-shot dial is forgotten"
        );
        p.add_once(addr(3), now);
        p.dial_started(addr(3));
        p.registered(addr(3));
        assert_eq!(p.busy_count(), 1);
        p.ended(addr(3), now, None, DisconnectReason::Requested, 1.0);
        assert!(
            p.status(now).is_empty(),
            "an ended one-shot connection is forgotten"
        );
        // A configured peer stays a kept entry when discovery dials it too.
        p.add(addr(4), now, false);
        p.add_once(addr(4), now);
        p.dial_started(addr(4));
        p.dial_failed(addr(4), now, 1.0);
        assert_eq!(p.status(now).len(), 1);
    }

    #[test]
    fn an_address_held_by_another_connection_waits_after_a_chosen_end_not_after_a_loss() {
        let now = Instant::now();
        let mut p = DialPlan::new(backoff(), 16);
        p.add(addr(5), now, true);
        p.add(addr(6), now, true);
        // Both IPs were connected inbound while due; 127.0.0.5's peer asked to disconnect.
        p.ip_released(addr(5).ip(), now, DisconnectReason::Requested, 1.0);
        assert_eq!(p.due(now, 8, |_| false), vec![addr(6)]);
        let s = p.status(now);
        assert_eq!(s[0].due_in, backoff().base, "{s:?}");
        // 127.0.0.6 was lost: dialled at once, as before.
        p.ip_released(addr(6).ip(), now, DisconnectReason::PingTimeout, 1.0);
        p.ip_released(addr(6).ip(), now, DisconnectReason::ConnectionLost, 1.0);
        assert_eq!(p.due(now, 8, |_| false), vec![addr(6)]);
        // An operator's connect overrides the wait; a busy address is left alone.
        p.add(addr(5), now, true);
        p.dial_started(addr(5));
        p.ip_released(addr(5).ip(), now, DisconnectReason::Shutdown, 1.0);
        assert!(p.status(now)[0].busy);
        p.dial_failed(addr(5), now, 1.0);
        assert_eq!(
            p.status(now)[0].due_in,
            backoff().base,
            "the failure's backoff"
        );
        // An address not yet due keeps its later time.
        let mut q = DialPlan::new(backoff(), 16);
        q.add(addr(7), now, false);
        q.dial_failed(addr(7), now, 1.0);
        q.dial_failed(addr(7), now, 1.0);
        q.ip_released(addr(7).ip(), now, DisconnectReason::Requested, 1.0);
        assert_eq!(q.status(now)[0].due_in, backoff().delay(2));
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = backoff();
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(5), Duration::from_secs(16));
        assert_eq!(b.delay(9), Duration::from_secs(256));
        assert_eq!(b.delay(10), Duration::from_secs(300));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn failures_delay_and_long_connections_reset() {
        let now = Instant::now();
        let mut p = DialPlan::new(backoff(), 16);
        p.add(addr(2), now, true);
        assert_eq!(p.due(now, 8, |_| false), vec![addr(2)]);
        p.dial_started(addr(2));
        assert!(
            p.due(now, 8, |_| false).is_empty(),
            "busy addresses are not due"
        );
        p.dial_failed(addr(2), now, 1.0);
        p.dial_started(addr(2));
        p.dial_failed(addr(2), now, 1.0);
        assert!(p
            .due(now + Duration::from_millis(1999), 8, |_| false)
            .is_empty());
        assert_eq!(
            p.due(now + Duration::from_secs(2), 8, |_| false),
            vec![addr(2)]
        );
        p.dial_started(addr(2));
        p.registered(addr(2));
        p.ended(
            addr(2),
            now,
            Some(Duration::from_secs(61)),
            DisconnectReason::PingTimeout,
            1.0,
        );
        assert_eq!(p.status(now)[0].failures, 0);
        assert_eq!(
            p.due(now + Duration::from_secs(1), 8, |_| false),
            vec![addr(2)]
        );
    }

    #[test]
    fn own_connected_and_wrong_network_addresses_are_skipped() {
        let now = Instant::now();
        let mut p = DialPlan::new(backoff(), 16);
        p.add(addr(2), now, true);
        p.add(addr(3), now, true);
        p.add(addr(4), now, true);
        p.mark_own(addr(2), now);
        let connected = addr(3).ip();
        assert_eq!(p.due(now, 8, |ip| ip == connected), vec![addr(4)]);
        p.dial_started(addr(4));
        p.ended(addr(4), now, None, DisconnectReason::WrongGenesis, 1.0);
        assert!(p
            .due(now + Duration::from_secs(299), 8, |_| false)
            .iter()
            .all(|a| *a != addr(4)));
    }

    #[test]
    fn book_is_bounded() {
        let now = Instant::now();
        let mut p = DialPlan::new(backoff(), 2);
        assert!(p.add(addr(2), now, false));
        assert!(p.add(addr(3), now + Duration::from_millis(1), false));
        p.dial_started(addr(2));
        p.dial_started(addr(3));
        assert!(
            !p.add(addr(4), now, false),
            "busy entries are never evicted"
        );
        p.dial_failed(addr(3), now, 1.0);
        assert!(p.add(addr(4), now, false));
        assert_eq!(p.status(now).len(), 2);
    }

    #[test]
    fn the_peers_word_is_a_long_backoff_not_a_permanent_mark() {
        let now = Instant::now();
        let mut p = DialPlan::new(backoff(), 16);
        p.add(addr(2), now, true);
        for reason in [
            DisconnectReason::SelfConnection,
            DisconnectReason::Banned,
            DisconnectReason::WrongGenesis,
        ] {
            p.dial_started(addr(2));
            p.ended(addr(2), now, None, reason, 1.0);
            assert!(!p.status(now)[0].own, "{reason:?} is not proof");
            assert!(p
                .due(now + Duration::from_secs(299), 8, |_| false)
                .is_empty());
            assert_eq!(
                p.due(now + Duration::from_secs(300), 8, |_| false),
                vec![addr(2)],
                "{reason:?}: tried again after the longest backoff"
            );
        }
        assert!(p.status(now)[0].failures >= 3);
        p.add(addr(2), now, true);
        let s = &p.status(now)[0];
        assert!(
            !s.own && s.failures == 0,
            "an operator's connect resets the address"
        );
        assert_eq!(p.due(now, 8, |_| false), vec![addr(2)]);
        // Our own nonce is proof: that mark stays.
        p.mark_own(addr(2), now);
        p.add(addr(2), now, true);
        assert!(p
            .due(now + Duration::from_secs(10_000), 8, |_| false)
            .is_empty());
    }

    proptest! {
        #[test]
        fn delay_is_monotonic_and_capped(f in 0u32..100) {
            let b = backoff();
            prop_assert!(b.delay(f) <= b.delay(f + 1));
            prop_assert!(b.delay(f) <= b.max);
            prop_assert!(b.delay(f) >= b.base.min(b.max));
        }
    }
}
