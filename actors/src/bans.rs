//! `BanList`: banned IPs with an expiry, bounded in size. One list per network, on the control
//! plane's thread: the acceptor owns the changes (`BanPeer`, `UnbanPeer`) and refuses banned
//! inbound connections; the connector reads the same list and never dials them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix::Message;

/// Ban an IP: refuse its connections and never dial it, for `duration`. Sent to the acceptor
/// and the connector by [`crate::Network::ban`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct BanPeer {
    /// The IP.
    pub ip: IpAddr,
    /// For how long.
    pub duration: Duration,
}

/// Lift a ban on an IP. Sent to the acceptor and the connector by [`crate::Network::unban`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct UnbanPeer {
    /// The IP.
    pub ip: IpAddr,
}

/// Banned IPs and when each ban ends.
#[derive(Debug, Clone)]
pub struct BanList {
    until: HashMap<IpAddr, Instant>,
    max: usize,
}

impl BanList {
    /// An empty list holding at most `max` entries.
    pub fn new(max: usize) -> Self {
        Self {
            until: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Bans `ip` for `duration` from `now` (a ban already in force is only extended). When
    /// full, expired entries go first, then the one that expires soonest. A zero `duration`
    /// lifts the ban instead (what `Network::unban` sends).
    pub fn ban(&mut self, ip: IpAddr, duration: Duration, now: Instant) {
        if duration.is_zero() {
            self.until.remove(&ip);
            return;
        }
        let end = now + duration;
        if !self.until.contains_key(&ip) && self.until.len() >= self.max {
            self.until.retain(|_, t| *t > now);
            if self.until.len() >= self.max {
                if let Some(soonest) = self
                    .until
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(ip, _)| *ip)
                {
                    self.until.remove(&soonest);
                }
            }
        }
        let entry = self.until.entry(ip).or_insert(end);
        *entry = (*entry).max(end);
    }

    /// Lifts a ban.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        self.until.remove(&ip).is_some()
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.until.get(&ip).is_some_and(|t| *t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_and_stay_bounded() {
        let now = Instant::now();
        let mut b = BanList::new(2);
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        b.ban(ip(1), Duration::from_secs(10), now);
        b.ban(ip(2), Duration::from_secs(20), now);
        assert!(b.is_banned(ip(1), now));
        assert!(!b.is_banned(ip(1), now + Duration::from_secs(11)));
        b.ban(ip(3), Duration::from_secs(30), now);
        assert_eq!(b.until.len(), 2);
        assert!(
            !b.is_banned(ip(1), now),
            "the soonest-expiring ban is evicted"
        );
        assert!(b.is_banned(ip(3), now));
        assert!(b.unban(ip(3)));
        assert!(!b.is_banned(ip(3), now));
        b.ban(ip(2), Duration::ZERO, now);
        assert!(!b.is_banned(ip(2), now), "a zero duration lifts the ban");
    }
}
