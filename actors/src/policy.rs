//! Duplicate resolution: the plain rule the registry applies when a connection registers for an
//! IP that already has one. It is a pure function of values both ends of a connection know after
//! the handshake, so both ends always keep the same socket (DESIGN.md invariants 1-3):
//!
//! 1. No entry for the IP: accept (if the direction's limit allows).
//! 2. The registered connection has another remote nonce or another remote key: the peer
//!    restarted, and the new connection replaces the old one at once (the old one may be
//!    half-open).
//! 3. Same remote nonce (two sockets to the same node instance, e.g. a simultaneous open): keep
//!    the connection dialled by the node with the larger nonce. If both were dialled by the same
//!    node, keep the one whose dialler-side port is larger. Every input here (who dialled, both
//!    nonces, both ports) is seen identically by the two ends, so they agree without talking.
//!
//! Never "prefer inbound", never "first wins locally".

use crate::protocol::DisconnectReason;
use crate::{ConnId, Direction};

/// What the policy needs to know about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnFacts {
    /// Local id of the connection.
    pub conn_id: ConnId,
    /// Who dialled it, from our side.
    pub direction: Direction,
    /// Nonce the peer sent in its Hello.
    pub remote_nonce: u64,
    /// TCP port on the dialling side of the socket (our local port if we dialled, the peer's
    /// port otherwise).
    pub dialer_port: u16,
    /// Static key the peer authenticated with (none on the plaintext transport).
    pub remote_key: Option<crate::secure::PublicKey>,
}

/// Decision for a registering connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Store it; there was no entry.
    Accept,
    /// Store it and close the existing connection with `reason`.
    Replace {
        /// The connection being replaced.
        old: ConnId,
        /// Why the old one is closed.
        reason: DisconnectReason,
    },
    /// Refuse it and close it with `reason`; the existing entry stays.
    Reject(DisconnectReason),
}

/// Counts of registered connections, for limit checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Registered inbound connections.
    pub inbound: usize,
    /// Registered outbound connections.
    pub outbound: usize,
}

/// The duplicate and limit policy of one node.
#[derive(Debug, Clone, Copy)]
pub struct DuplicatePolicy {
    /// Our own nonce.
    pub local_nonce: u64,
    /// Most registered inbound connections.
    pub max_inbound: usize,
    /// Most registered outbound connections.
    pub max_outbound: usize,
}

impl DuplicatePolicy {
    /// Decides what happens to `new`, given the entry already stored for its IP.
    pub fn resolve(
        &self,
        existing: Option<&ConnFacts>,
        new: &ConnFacts,
        occ: Occupancy,
    ) -> Resolution {
        let Some(old) = existing else {
            let full = match new.direction {
                Direction::Inbound => occ.inbound >= self.max_inbound,
                Direction::Outbound => occ.outbound >= self.max_outbound,
            };
            return if full {
                Resolution::Reject(DisconnectReason::TooManyPeers)
            } else {
                Resolution::Accept
            };
        };
        // Another node instance behind the IP (new nonce, or new key): a restart, replace now.
        if old.remote_nonce != new.remote_nonce || old.remote_key != new.remote_key {
            return Resolution::Replace {
                old: old.conn_id,
                reason: DisconnectReason::PeerRestarted,
            };
        }
        if self.keep_rank(new) > self.keep_rank(old) {
            Resolution::Replace {
                old: old.conn_id,
                reason: DisconnectReason::Duplicate,
            }
        } else {
            Resolution::Reject(DisconnectReason::Duplicate)
        }
    }

    /// The rank both ends compute for a connection: (nonce of the dialler, dialler's port).
    /// Higher rank is kept.
    pub fn keep_rank(&self, c: &ConnFacts) -> (u64, u16) {
        let dialer_nonce = match c.direction {
            Direction::Outbound => self.local_nonce,
            Direction::Inbound => c.remote_nonce,
        };
        (dialer_nonce, c.dialer_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(nonce: u64) -> DuplicatePolicy {
        DuplicatePolicy {
            local_nonce: nonce,
            max_inbound: 8,
            max_outbound: 8,
        }
    }

    fn facts(id: u64, direction: Direction, remote_nonce: u64, dialer_port: u16) -> ConnFacts {
        ConnFacts {
            conn_id: ConnId(id),
            direction,
            remote_nonce,
            dialer_port,
            remote_key: None,
        }
    }

    /// Which connection a node ends up holding after both register, in a given order.
    fn survivor(p: &DuplicatePolicy, first: ConnFacts, second: ConnFacts) -> ConnId {
        match p.resolve(Some(&first), &second, Occupancy::default()) {
            Resolution::Replace { .. } => second.conn_id,
            Resolution::Reject(_) => first.conn_id,
            Resolution::Accept => panic!("an existing entry is never accepted beside"),
        }
    }

    #[test]
    fn first_connection_is_accepted() {
        let p = policy(1);
        let c = facts(1, Direction::Inbound, 2, 5000);
        assert_eq!(
            p.resolve(None, &c, Occupancy::default()),
            Resolution::Accept
        );
    }

    #[test]
    fn limits_reject_new_entries_only() {
        let p = policy(1);
        let full = Occupancy {
            inbound: 8,
            outbound: 0,
        };
        let c = facts(1, Direction::Inbound, 2, 5000);
        assert_eq!(
            p.resolve(None, &c, full),
            Resolution::Reject(DisconnectReason::TooManyPeers)
        );
        let out = facts(2, Direction::Outbound, 2, 5000);
        assert_eq!(p.resolve(None, &out, full), Resolution::Accept);
    }

    #[test]
    fn new_nonce_is_a_restart_and_replaces() {
        let p = policy(10);
        let old = facts(1, Direction::Outbound, 5, 4000);
        let new = facts(2, Direction::Inbound, 6, 3000);
        assert_eq!(
            p.resolve(Some(&old), &new, Occupancy::default()),
            Resolution::Replace {
                old: ConnId(1),
                reason: DisconnectReason::PeerRestarted
            }
        );
    }

    #[test]
    fn new_key_is_a_restart_and_replaces() {
        let p = policy(10);
        let key = |b| Some(crate::secure::PublicKey([b; 32]));
        let old = ConnFacts {
            remote_key: key(1),
            ..facts(1, Direction::Outbound, 5, 4000)
        };
        // Same nonce (as unlikely as it is), another key: another node instance.
        let new = ConnFacts {
            remote_key: key(2),
            ..facts(2, Direction::Outbound, 5, 4001)
        };
        assert_eq!(
            p.resolve(Some(&old), &new, Occupancy::default()),
            Resolution::Replace {
                old: ConnId(1),
                reason: DisconnectReason::PeerRestarted
            }
        );
        // Same key and nonce: an ordinary duplicate.
        let dup = ConnFacts {
            remote_key: key(1),
            ..facts(3, Direction::Outbound, 5, 3999)
        };
        assert_eq!(
            p.resolve(Some(&old), &dup, Occupancy::default()),
            Resolution::Reject(DisconnectReason::Duplicate)
        );
    }

    #[test]
    fn simultaneous_open_keeps_the_larger_nonces_dial() {
        // A (nonce 10) dialled c1 from port 4000, B (nonce 5) dialled c2 from port 5000.
        let a = policy(10);
        let b = policy(5);
        let a_c1 = facts(1, Direction::Outbound, 5, 4000);
        let a_c2 = facts(2, Direction::Inbound, 5, 5000);
        let b_c1 = facts(7, Direction::Inbound, 10, 4000);
        let b_c2 = facts(8, Direction::Outbound, 10, 5000);
        assert_eq!(survivor(&a, a_c1, a_c2), ConnId(1));
        assert_eq!(survivor(&a, a_c2, a_c1), ConnId(1));
        assert_eq!(survivor(&b, b_c1, b_c2), ConnId(7));
        assert_eq!(survivor(&b, b_c2, b_c1), ConnId(7));
    }

    proptest! {
        /// Whatever the nonces, ports and registration orders, both ends keep the same socket
        /// (identified by its dialler and dialler port).
        #[test]
        fn both_ends_agree(
            na in any::<u64>(), nb in any::<u64>(),
            dials in proptest::collection::vec((any::<bool>(), any::<u16>()), 2),
            a_swap in any::<bool>(), b_swap in any::<bool>(),
        ) {
            prop_assume!(na != nb);
            prop_assume!(dials[0] != dials[1]);
            let a = policy(na);
            let b = policy(nb);
            // A socket: (dialled_by_a, dialler port). Seen from A and from B.
            let view = |me_is_a: bool, i: usize| {
                let (by_a, port) = dials[i];
                let direction = if by_a == me_is_a { Direction::Outbound } else { Direction::Inbound };
                facts(i as u64, direction, if me_is_a { nb } else { na }, port)
            };
            let order = |swap: bool, me_is_a: bool| {
                if swap { (view(me_is_a, 1), view(me_is_a, 0)) } else { (view(me_is_a, 0), view(me_is_a, 1)) }
            };
            let (a1, a2) = order(a_swap, true);
            let (b1, b2) = order(b_swap, false);
            prop_assert_eq!(survivor(&a, a1, a2), survivor(&b, b1, b2));
        }
    }
}
