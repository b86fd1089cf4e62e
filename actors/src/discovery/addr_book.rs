//! `AddrBook`: the bounded address book of peers this node has heard of, after Bitcoin Core's
//! addrman. Addresses heard of sit in the *new* table; addresses this node connected to sit in
//! the *tried* table. Both are arrays of fixed buckets, and the bucket and slot of an address are
//! chosen by a keyed hash with this node's secret, so a stranger cannot choose where its
//! addresses land nor push out the addresses of a chosen victim group.
//!
//! Bounds (all documented defaults, see [`AddrBookConfig`]): at most 5,000 entries; at most
//! `max_per_group` entries per network group (/16, /32), at most `max_per_source_group` entries
//! learned from one source group, and a source group reaches only `buckets_per_source_group` of
//! the new buckets, so one peer (or one /16 of peers) can fill at most a quarter of the new
//! table however much it sends. One entry per canonical IP (IPv4-mapped IPv6 is IPv4), matching
//! the registry's one connection per IP. Entries age out: unseen past the horizon, or failing
//! too often (see `is_terrible`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{canonical_addr, ip_bytes, is_routable, keyed_hash, netgroup, NetGroup, Reachability};

/// Default bound on entries; operators of public networks rarely need more than a few thousand.
pub const DEFAULT_MAX_ENTRIES: usize = 5_000;

/// Address book tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddrBookConfig {
    /// Most entries in both tables together.
    pub max_entries: usize,
    /// Buckets in the new table.
    pub new_buckets: usize,
    /// Buckets in the tried table.
    pub tried_buckets: usize,
    /// Slots per bucket.
    pub bucket_size: usize,
    /// Of the new buckets, how many one source group can reach.
    pub buckets_per_source_group: usize,
    /// Of the tried buckets, how many one network group can reach.
    pub tried_buckets_per_group: usize,
    /// Most entries of one network group.
    pub max_per_group: usize,
    /// Most entries learned from one source group.
    pub max_per_source_group: usize,
    /// An address unseen this long (seconds) is dropped.
    pub horizon_s: u64,
    /// Failures after which a never-connected address is dropped.
    pub max_failures_new: u32,
    /// Failures after which an address that last worked over `failure_window_s` ago is dropped.
    pub max_failures: u32,
    /// See `max_failures`.
    pub failure_window_s: u64,
    /// Which address classes are accepted.
    pub reach: Reachability,
}

impl Default for AddrBookConfig {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            new_buckets: 64,
            tried_buckets: 16,
            bucket_size: 64,
            buckets_per_source_group: 16,
            tried_buckets_per_group: 4,
            max_per_group: 16,
            max_per_source_group: 1_000,
            horizon_s: 30 * 24 * 3600,
            max_failures_new: 3,
            max_failures: 10,
            failure_window_s: 7 * 24 * 3600,
            reach: Reachability::default(),
        }
    }
}

/// An address with when it was last seen (unix seconds): what gossip carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAddr {
    /// The address (canonical).
    pub addr: SocketAddr,
    /// Unix seconds when it was last known to be alive.
    pub last_seen: u64,
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddResult {
    /// A new entry.
    Added,
    /// The address was known; its last-seen time may have moved forward.
    Updated,
    /// Unroutable or junk.
    Unroutable,
    /// Its network group or its source group is at its cap.
    GroupFull,
    /// Its slot holds a good entry, or the book is full.
    NoRoom,
}

/// One stored entry, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAddr {
    /// The address.
    pub addr: SocketAddr,
    /// Who told us of it.
    pub source: IpAddr,
    /// Unix seconds when last known alive.
    pub last_seen: u64,
    /// Unix seconds of the last successful connection (0: never).
    pub last_success: u64,
    /// Consecutive failed dials.
    pub failures: u32,
    /// In the tried table.
    pub tried: bool,
}

/// The persisted form of a book: its secret (so buckets stay put) and its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrBookSnapshot {
    /// The bucket key.
    pub secret: [u8; 32],
    /// Every entry.
    pub entries: Vec<StoredAddr>,
}

#[derive(Debug, Clone)]
struct Entry {
    addr: SocketAddr,
    source: IpAddr,
    source_group: NetGroup,
    last_seen: u64,
    last_success: u64,
    last_try_ms: Option<u64>,
    failures: u32,
    tried: bool,
    slot: usize,
}

/// The address book. See the module docs.
#[derive(Debug, Clone)]
pub struct AddrBook {
    config: AddrBookConfig,
    secret: [u8; 32],
    entries: BTreeMap<IpAddr, Entry>,
    new_slots: Vec<Option<IpAddr>>,
    tried_slots: Vec<Option<IpAddr>>,
    per_group: BTreeMap<NetGroup, usize>,
    per_source: BTreeMap<NetGroup, usize>,
    new_count: usize,
}

/// Timestamps further than this ahead of now are treated as lies.
const FUTURE_SLACK_S: u64 = 600;
/// An address tried this recently is never dropped as terrible (its try is still running).
const RECENT_TRY_MS: u64 = 60_000;
/// Fewest random probes before `select` falls back to a scan.
const SELECT_PROBES: usize = 64;

impl AddrBook {
    /// An empty book with a bucket key (draw it at random once per node, then persist it).
    pub fn new(config: AddrBookConfig, secret: [u8; 32]) -> Self {
        let new_len = config.new_buckets.max(1) * config.bucket_size.max(1);
        let tried_len = config.tried_buckets.max(1) * config.bucket_size.max(1);
        Self {
            config,
            secret,
            entries: BTreeMap::new(),
            new_slots: vec![None; new_len],
            tried_slots: vec![None; tried_len],
            per_group: BTreeMap::new(),
            per_source: BTreeMap::new(),
            new_count: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AddrBookConfig {
        &self.config
    }

    /// Entries in both tables.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in the new table.
    pub fn new_len(&self) -> usize {
        self.new_count
    }

    /// Entries in the tried table.
    pub fn tried_len(&self) -> usize {
        self.entries.len() - self.new_count
    }

    /// Entries of one network group.
    pub fn group_count(&self, group: NetGroup) -> usize {
        self.per_group.get(&group).copied().unwrap_or(0)
    }

    /// The largest count of any network group.
    pub fn max_group_count(&self) -> usize {
        self.per_group.values().copied().max().unwrap_or(0)
    }

    /// The largest count learned from one source group.
    pub fn max_source_count(&self) -> usize {
        self.per_source.values().copied().max().unwrap_or(0)
    }

    /// An upper estimate of the heap this book holds, in bytes: what a memory bound asserts on.
    pub fn approx_heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Option<IpAddr>>();
        let entry = std::mem::size_of::<Entry>() + std::mem::size_of::<IpAddr>() + 16;
        let group = std::mem::size_of::<NetGroup>() + 8 + 16;
        (self.new_slots.len() + self.tried_slots.len()) * slot
            + self.entries.len() * entry
            + (self.per_group.len() + self.per_source.len()) * group
    }

    /// Whether the address's IP is known.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.entries.contains_key(&canonical_addr(addr).ip())
    }

    /// The entry for an IP, if known.
    pub fn get(&self, ip: IpAddr) -> Option<KnownAddr> {
        self.entries
            .get(&crate::canonical_ip(ip))
            .map(|e| KnownAddr {
                addr: e.addr,
                last_seen: e.last_seen,
            })
    }

    /// Whether the IP is in the tried table.
    pub fn is_tried(&self, ip: IpAddr) -> bool {
        self.entries
            .get(&crate::canonical_ip(ip))
            .is_some_and(|e| e.tried)
    }

    /// Adds an address heard from `source` (the peer that told us, or the address itself for
    /// a self-advertisement) claiming it was alive at `last_seen` (unix seconds).
    pub fn add(
        &mut self,
        addr: SocketAddr,
        source: IpAddr,
        last_seen: u64,
        now_ms: u64,
    ) -> AddResult {
        let addr = canonical_addr(addr);
        let source = crate::canonical_ip(source);
        if !is_routable(addr, self.config.reach) {
            return AddResult::Unroutable;
        }
        let now_s = now_ms / 1000;
        let last_seen = if last_seen > now_s + FUTURE_SLACK_S {
            now_s.saturating_sub(5 * 24 * 3600)
        } else {
            last_seen
        };
        if let Some(e) = self.entries.get_mut(&addr.ip()) {
            if last_seen > e.last_seen {
                e.last_seen = last_seen;
            }
            // A node advertising itself knows its own port best.
            if source == addr.ip() && !e.tried {
                e.addr = addr;
            }
            return AddResult::Updated;
        }
        let group = netgroup(addr.ip());
        let source_group = netgroup(source);
        if self.group_count(group) >= self.config.max_per_group
            || self.per_source.get(&source_group).copied().unwrap_or(0)
                >= self.config.max_per_source_group
        {
            return AddResult::GroupFull;
        }
        let slot = self.new_slot(addr.ip(), group, source_group);
        if let Some(occupant) = self.new_slots[slot] {
            let terrible = self
                .entries
                .get(&occupant)
                .is_none_or(|e| self.is_terrible(e, now_ms));
            if !terrible {
                return AddResult::NoRoom;
            }
            self.remove_ip(occupant);
        }
        if self.entries.len() >= self.config.max_entries {
            return AddResult::NoRoom;
        }
        let entry = Entry {
            addr,
            source,
            source_group,
            last_seen,
            last_success: 0,
            last_try_ms: None,
            failures: 0,
            tried: false,
            slot,
        };
        self.insert(entry);
        AddResult::Added
    }

    /// A dial to the address failed (or a feeler found it dead).
    pub fn mark_failed(&mut self, addr: SocketAddr, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&canonical_addr(addr).ip()) {
            e.failures = e.failures.saturating_add(1);
            e.last_try_ms = Some(now_ms);
        }
    }

    /// A dial to the address is starting.
    pub fn mark_attempt(&mut self, addr: SocketAddr, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&canonical_addr(addr).ip()) {
            e.last_try_ms = Some(now_ms);
        }
    }

    /// The peer at `addr` is alive (a message arrived): its last-seen time moves to now.
    pub fn mark_seen(&mut self, addr: SocketAddr, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&canonical_addr(addr).ip()) {
            e.last_seen = e.last_seen.max(now_ms / 1000);
        }
    }

    /// A connection to `addr` completed its handshake: the address moves to (or stays in) the
    /// tried table. If its tried slot is taken, the occupant goes back to the new table (or is
    /// dropped when its new slot is taken too). An address not yet known is added first with
    /// itself as the source.
    pub fn mark_good(&mut self, addr: SocketAddr, now_ms: u64) {
        let addr = canonical_addr(addr);
        let ip = addr.ip();
        if !self.entries.contains_key(&ip) {
            match self.add(addr, ip, now_ms / 1000, now_ms) {
                AddResult::Added => {}
                _ => return,
            }
        }
        let now_s = now_ms / 1000;
        let Some(e) = self.entries.get_mut(&ip) else {
            return;
        };
        e.failures = 0;
        e.last_success = now_s;
        e.last_seen = e.last_seen.max(now_s);
        e.last_try_ms = Some(now_ms);
        e.addr = addr;
        if e.tried {
            return;
        }
        let group = netgroup(ip);
        let tslot = self.tried_slot(ip, group);
        // Take it out of the new table.
        let Some(mut entry) = self.take_out(ip) else {
            return;
        };
        if let Some(occupant) = self.tried_slots[tslot] {
            if let Some(mut old) = self.take_out(occupant) {
                old.tried = false;
                let nslot = self.new_slot(old.addr.ip(), netgroup(old.addr.ip()), old.source_group);
                if self.new_slots[nslot].is_none() {
                    old.slot = nslot;
                    self.insert(old);
                }
            }
        }
        entry.tried = true;
        entry.slot = tslot;
        self.insert(entry);
    }

    /// Forgets an address.
    pub fn remove(&mut self, addr: SocketAddr) {
        self.remove_ip(canonical_addr(addr).ip());
    }

    /// Drops every entry that has aged out; returns how many went.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let dead: Vec<IpAddr> = self
            .entries
            .iter()
            .filter(|(_, e)| self.is_terrible(e, now_ms))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &dead {
            self.remove_ip(*ip);
        }
        dead.len()
    }

    /// Picks an address to dial: from the tried table with probability `tried_bias` (when it
    /// has entries), else from the new table, at a random slot; `accept` filters (connected
    /// already, group in use, own address...). `new_only` restricts to the new table (feelers).
    pub fn select<R: Rng>(
        &self,
        rng: &mut R,
        tried_bias: f64,
        new_only: bool,
        now_ms: u64,
        accept: impl Fn(SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let tried_first = !new_only
            && self.tried_len() > 0
            && (self.new_count == 0 || rng.random_bool(tried_bias.clamp(0.0, 1.0)));
        let order: &[bool] = match (new_only, tried_first) {
            (true, _) => &[false],
            (false, true) => &[true, false],
            (false, false) => &[false, true],
        };
        for &tried in order {
            let (slots, count) = if tried {
                (&self.tried_slots, self.tried_len())
            } else {
                (&self.new_slots, self.new_count)
            };
            if count == 0 {
                continue;
            }
            let ok = |ip: &IpAddr| {
                self.entries
                    .get(ip)
                    .filter(|e| !self.is_terrible(e, now_ms))
                    .map(|e| e.addr)
                    .filter(|a| accept(*a))
            };
            for _ in 0..SELECT_PROBES {
                let i = rng.random_range(0..slots.len());
                if let Some(a) = slots[i].as_ref().and_then(ok) {
                    return Some(a);
                }
            }
            let start = rng.random_range(0..slots.len());
            for k in 0..slots.len() {
                let i = (start + k) % slots.len();
                if let Some(a) = slots[i].as_ref().and_then(ok) {
                    return Some(a);
                }
            }
        }
        None
    }

    /// Up to `max` random live entries for a gossip answer, never one whose IP is `exclude`.
    pub fn sample<R: Rng>(
        &self,
        rng: &mut R,
        max: usize,
        exclude: Option<IpAddr>,
        now_ms: u64,
    ) -> Vec<KnownAddr> {
        let exclude = exclude.map(crate::canonical_ip);
        let mut all: Vec<KnownAddr> = self
            .new_slots
            .iter()
            .chain(self.tried_slots.iter())
            .flatten()
            .filter(|ip| Some(**ip) != exclude)
            .filter_map(|ip| self.entries.get(ip))
            .filter(|e| !self.is_terrible(e, now_ms))
            .map(|e| KnownAddr {
                addr: e.addr,
                last_seen: e.last_seen,
            })
            .collect();
        let n = max.min(all.len());
        for i in 0..n {
            let j = rng.random_range(i..all.len());
            all.swap(i, j);
        }
        all.truncate(n);
        all
    }

    /// The persisted form.
    pub fn snapshot(&self) -> AddrBookSnapshot {
        AddrBookSnapshot {
            secret: self.secret,
            entries: self
                .entries
                .values()
                .map(|e| StoredAddr {
                    addr: e.addr,
                    source: e.source,
                    last_seen: e.last_seen,
                    last_success: e.last_success,
                    failures: e.failures,
                    tried: e.tried,
                })
                .collect(),
        }
    }

    /// A book rebuilt from its persisted form, under today's configuration (entries that no
    /// longer fit its caps are left out; junk is left out).
    pub fn restore(config: AddrBookConfig, snapshot: &AddrBookSnapshot) -> Self {
        let mut book = AddrBook::new(config, snapshot.secret);
        // Tried first, so they keep their place.
        let (tried, new): (Vec<&StoredAddr>, Vec<&StoredAddr>) =
            snapshot.entries.iter().partition(|s| s.tried);
        for s in tried.into_iter().chain(new) {
            let addr = canonical_addr(s.addr);
            let ip = addr.ip();
            if !is_routable(addr, config.reach)
                || book.entries.contains_key(&ip)
                || book.entries.len() >= config.max_entries
            {
                continue;
            }
            let group = netgroup(ip);
            let source = crate::canonical_ip(s.source);
            let source_group = netgroup(source);
            if book.group_count(group) >= config.max_per_group
                || book.per_source.get(&source_group).copied().unwrap_or(0)
                    >= config.max_per_source_group
            {
                continue;
            }
            let mut tried = s.tried;
            let mut slot = book.tried_slot(ip, group);
            if !tried || book.tried_slots[slot].is_some() {
                tried = false;
                slot = book.new_slot(ip, group, source_group);
                if book.new_slots[slot].is_some() {
                    continue;
                }
            }
            book.insert(Entry {
                addr,
                source,
                source_group,
                last_seen: s.last_seen,
                last_success: s.last_success,
                last_try_ms: None,
                failures: s.failures,
                tried,
                slot,
            });
        }
        book
    }

    fn is_terrible(&self, e: &Entry, now_ms: u64) -> bool {
        if e.last_try_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < RECENT_TRY_MS)
        {
            return false;
        }
        let now_s = now_ms / 1000;
        if e.last_seen > now_s + FUTURE_SLACK_S {
            return true;
        }
        if now_s.saturating_sub(e.last_seen) > self.config.horizon_s {
            return true;
        }
        if e.last_success == 0 && e.failures >= self.config.max_failures_new {
            return true;
        }
        now_s.saturating_sub(e.last_success) > self.config.failure_window_s
            && e.failures >= self.config.max_failures
    }

    fn new_slot(&self, ip: IpAddr, group: NetGroup, source_group: NetGroup) -> usize {
        let k = &self.secret;
        let per_source = self.config.buckets_per_source_group.max(1) as u64;
        let h1 = keyed_hash(k, &[b"new1", group.as_bytes(), source_group.as_bytes()]) % per_source;
        let bucket = keyed_hash(k, &[b"new2", source_group.as_bytes(), &h1.to_le_bytes()])
            % self.config.new_buckets.max(1) as u64;
        let pos = keyed_hash(k, &[b"pos", b"n", &bucket.to_le_bytes(), &ip_bytes(ip)])
            % self.config.bucket_size.max(1) as u64;
        (bucket as usize) * self.config.bucket_size.max(1) + pos as usize
    }

    fn tried_slot(&self, ip: IpAddr, group: NetGroup) -> usize {
        let k = &self.secret;
        let per_group = self.config.tried_buckets_per_group.max(1) as u64;
        let h1 = keyed_hash(k, &[b"tried1", &ip_bytes(ip)]) % per_group;
        let bucket = keyed_hash(k, &[b"tried2", group.as_bytes(), &h1.to_le_bytes()])
            % self.config.tried_buckets.max(1) as u64;
        let pos = keyed_hash(k, &[b"pos", b"t", &bucket.to_le_bytes(), &ip_bytes(ip)])
            % self.config.bucket_size.max(1) as u64;
        (bucket as usize) * self.config.bucket_size.max(1) + pos as usize
    }

    fn insert(&mut self, e: Entry) {
        let ip = e.addr.ip();
        if e.tried {
            self.tried_slots[e.slot] = Some(ip);
        } else {
            self.new_slots[e.slot] = Some(ip);
            self.new_count += 1;
        }
        *self.per_group.entry(netgroup(ip)).or_default() += 1;
        *self.per_source.entry(e.source_group).or_default() += 1;
        self.entries.insert(ip, e);
    }

    fn take_out(&mut self, ip: IpAddr) -> Option<Entry> {
        let e = self.entries.remove(&ip)?;
        if e.tried {
            self.tried_slots[e.slot] = None;
        } else {
            self.new_slots[e.slot] = None;
            self.new_count -= 1;
        }
        dec(&mut self.per_group, netgroup(ip));
        dec(&mut self.per_source, e.source_group);
        Some(e)
    }

    fn remove_ip(&mut self, ip: IpAddr) {
        let _ = self.take_out(ip);
    }

    #[cfg(test)]
    pub(crate) fn check_consistent(&self) {
        let mut groups: BTreeMap<NetGroup, usize> = BTreeMap::new();
        let mut sources: BTreeMap<NetGroup, usize> = BTreeMap::new();
        let mut new = 0;
        for (ip, e) in &self.entries {
            assert_eq!(*ip, e.addr.ip());
            let slots = if e.tried {
                &self.tried_slots
            } else {
                &self.new_slots
            };
            assert_eq!(slots[e.slot], Some(*ip));
            if !e.tried {
                new += 1;
            }
            *groups.entry(netgroup(*ip)).or_default() += 1;
            *sources.entry(e.source_group).or_default() += 1;
        }
        assert_eq!(new, self.new_count);
        assert_eq!(groups, self.per_group);
        assert_eq!(sources, self.per_source);
        let occupied = self
            .new_slots
            .iter()
            .chain(self.tried_slots.iter())
            .flatten()
            .count();
        assert_eq!(occupied, self.entries.len());
    }
}

fn dec(map: &mut BTreeMap<NetGroup, usize>, g: NetGroup) {
    if let Some(c) = map.get_mut(&g) {
        *c -= 1;
        if *c == 0 {
            map.remove(&g);
        }
    }
}

#[cfg(test)]
mod tests;
