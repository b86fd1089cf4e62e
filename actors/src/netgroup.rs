//! Network groups and the small primitives every admission, eviction and discovery policy
//! shares: [`NetGroup`] (IPv4 /16, IPv6 /32, one loopback address), subnets (/24, /64),
//! reachability of an address, the keyed hash that places addresses, and a token bucket. Below
//! the registry and the acceptor, which use the admission and eviction policies, so that the
//! discovery actor (which uses the registry) is not imported back by them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::canonical_ip;

/// A network group: the unit of diversity (IPv4 /16, IPv6 /32, one loopback address).
/// The first byte names the kind, the rest hold the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetGroup(pub [u8; 17]);

impl NetGroup {
    /// Bytes for keyed hashing.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

const KIND_V4: u8 = 4;
const KIND_V6: u8 = 6;
const KIND_LOOPBACK: u8 = 1;

/// The network group of an address, after canonicalization (IPv4-mapped IPv6 is IPv4).
pub fn netgroup(ip: IpAddr) -> NetGroup {
    let mut g = [0u8; 17];
    match canonical_ip(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => {
            g[0] = KIND_LOOPBACK;
            g[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V4(v4) => {
            g[0] = KIND_V4;
            g[1..3].copy_from_slice(&v4.octets()[..2]);
        }
        IpAddr::V6(v6) if v6.is_loopback() => {
            g[0] = KIND_LOOPBACK;
            g[1..17].copy_from_slice(&v6.octets());
        }
        IpAddr::V6(v6) => {
            g[0] = KIND_V6;
            g[1..5].copy_from_slice(&v6.octets()[..4]);
        }
    }
    NetGroup(g)
}

/// The subnet of an address for pending-handshake limits: IPv4 /24, IPv6 /64, one loopback
/// address.
pub fn subnet(ip: IpAddr) -> NetGroup {
    let mut g = [0u8; 17];
    match canonical_ip(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => {
            g[0] = KIND_LOOPBACK;
            g[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V4(v4) => {
            g[0] = KIND_V4;
            g[1..4].copy_from_slice(&v4.octets()[..3]);
        }
        IpAddr::V6(v6) if v6.is_loopback() => {
            g[0] = KIND_LOOPBACK;
            g[1..17].copy_from_slice(&v6.octets());
        }
        IpAddr::V6(v6) => {
            g[0] = KIND_V6;
            g[1..9].copy_from_slice(&v6.octets()[..8]);
        }
    }
    NetGroup(g)
}

/// Which address classes a node accepts into its book and its gossip (default: neither
/// loopback nor private ranges, as on a public network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reachability {
    /// Accept 127.0.0.0/8 and ::1 (tests and devnets run there; never on a public network).
    pub allow_loopback: bool,
    /// Accept private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    pub allow_private: bool,
}

/// Canonicalizes a socket address: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// Whether an address is worth storing, dialling and gossiping: a nonzero port and an IP that
/// can be reached (not unspecified, multicast, broadcast, reserved, documentation, link-local;
/// loopback and private ranges only when `reach` allows them).
pub fn is_routable(addr: SocketAddr, reach: Reachability) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match canonical_ip(addr.ip()) {
        IpAddr::V4(v4) => v4_routable(v4, reach),
        IpAddr::V6(v6) => v6_routable(v6, reach),
    }
}

fn v4_routable(ip: Ipv4Addr, reach: Reachability) -> bool {
    let o = ip.octets();
    if ip.is_loopback() {
        return reach.allow_loopback;
    }
    let private = ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64);
    if private {
        return reach.allow_private;
    }
    !(o[0] == 0
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] >= 240
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0))
}

fn v6_routable(ip: Ipv6Addr, reach: Reachability) -> bool {
    let s = ip.segments();
    if ip.is_loopback() {
        return reach.allow_loopback;
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return reach.allow_private;
    }
    !(ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || s[0] == 0)
}

/// A keyed 64-bit hash (BLAKE3 in keyed mode) of some parts: what places addresses in buckets
/// and protects peers by group. Without the node's secret key a stranger cannot predict it.
pub(crate) fn keyed_hash(key: &[u8; 32], parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new_keyed(key);
    for p in parts {
        h.update(&(p.len() as u32).to_le_bytes());
        h.update(p);
    }
    let out = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// Bytes of an IP for hashing (canonical form).
pub(crate) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A token bucket over milliseconds: `rate_per_s` tokens per second up to `burst`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A bucket holding `start` tokens at `now_ms`.
    pub(crate) fn new(start: f64, now_ms: u64) -> Self {
        Self {
            tokens: start,
            last_ms: now_ms,
        }
    }

    /// Refills for the time since the last call, then takes up to `want` whole tokens; returns
    /// how many were taken.
    pub(crate) fn take(&mut self, want: u64, rate_per_s: f64, burst: f64, now_ms: u64) -> u64 {
        self.refill(rate_per_s, burst, now_ms);
        let got = (self.tokens.floor().max(0.0) as u64).min(want);
        self.tokens -= got as f64;
        got
    }

    /// Tokens after refilling to `now_ms`.
    pub(crate) fn refill(&mut self, rate_per_s: f64, burst: f64, now_ms: u64) -> f64 {
        let dt = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + dt * rate_per_s).min(burst);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn groups_are_slash16_and_slash32_and_mapped_is_v4() {
        assert_eq!(
            netgroup("1.2.3.4".parse().unwrap()),
            netgroup("1.2.200.9".parse().unwrap())
        );
        assert_ne!(
            netgroup("1.2.3.4".parse().unwrap()),
            netgroup("1.3.3.4".parse().unwrap())
        );
        assert_eq!(
            netgroup("::ffff:1.2.3.4".parse().unwrap()),
            netgroup("1.2.9.9".parse().unwrap())
        );
        assert_eq!(
            netgroup("2a01:4f8:1::1".parse().unwrap()),
            netgroup("2a01:4f8:ffff::2".parse().unwrap())
        );
        assert_ne!(
            netgroup("2a01:4f8::1".parse().unwrap()),
            netgroup("2a01:4f9::1".parse().unwrap())
        );
        // Loopback: one group per address.
        assert_ne!(
            netgroup("127.0.1.1".parse().unwrap()),
            netgroup("127.0.1.2".parse().unwrap())
        );
    }

    #[test]
    fn subnets_are_slash24_and_slash64() {
        assert_eq!(
            subnet("1.2.3.4".parse().unwrap()),
            subnet("::ffff:1.2.3.200".parse().unwrap())
        );
        assert_ne!(
            subnet("1.2.3.4".parse().unwrap()),
            subnet("1.2.4.4".parse().unwrap())
        );
        assert_eq!(
            subnet("2a01:4f8:1:2::1".parse().unwrap()),
            subnet("2a01:4f8:1:2:ffff::2".parse().unwrap())
        );
        assert_ne!(
            subnet("2a01:4f8:1:2::1".parse().unwrap()),
            subnet("2a01:4f8:1:3::1".parse().unwrap())
        );
    }

    #[test]
    fn junk_is_unroutable_and_loopback_needs_the_switch() {
        let public = Reachability::default();
        let local = Reachability {
            allow_loopback: true,
            allow_private: false,
        };
        for junk in [
            "0.0.0.0:1",
            "0.1.2.3:1",
            "1.2.3.4:0",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "169.254.1.1:1",
            "192.0.2.1:1",
            "240.0.0.1:1",
            "[::]:1",
            "[ff02::1]:1",
            "[fe80::1]:1",
            "[2001:db8::1]:1",
        ] {
            assert!(!is_routable(sa(junk), public), "{junk}");
            assert!(!is_routable(sa(junk), local), "{junk}");
        }
        assert!(is_routable(sa("8.8.8.8:53"), public));
        assert!(is_routable(sa("[2a01:4f8::1]:1"), public));
        assert!(!is_routable(sa("127.0.1.5:9"), public));
        assert!(is_routable(sa("127.0.1.5:9"), local));
        assert!(is_routable(sa("[::ffff:127.0.1.5]:9"), local));
        assert!(!is_routable(sa("10.1.2.3:9"), local));
        assert!(!is_routable(sa("[::1]:9"), public));
    }

    #[test]
    fn keyed_hash_depends_on_key_and_parts() {
        let a = keyed_hash(&[1; 32], &[b"x", b"y"]);
        assert_eq!(a, keyed_hash(&[1; 32], &[b"x", b"y"]));
        assert_ne!(a, keyed_hash(&[2; 32], &[b"x", b"y"]));
        assert_ne!(a, keyed_hash(&[1; 32], &[b"xy"]));
    }

    #[test]
    fn token_bucket_refills_at_rate_up_to_burst() {
        let mut b = TokenBucket::new(1000.0, 0);
        assert_eq!(b.take(1500, 0.1, 1000.0, 0), 1000);
        assert_eq!(b.take(5, 0.1, 1000.0, 10_000), 1);
        assert_eq!(b.take(5, 0.1, 1000.0, 10_000), 0);
        assert_eq!(b.take(5000, 0.1, 1000.0, 100_000_000), 1000);
    }
}
