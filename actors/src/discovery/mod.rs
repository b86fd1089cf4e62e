//! Peer discovery policies: the address book, the address gossip rules, outbound selection,
//! inbound admission and inbound eviction, each a plain struct fed events with the time passed
//! in (milliseconds on whatever clock the caller runs: the wall clock in a node, virtual time in
//! the simulator). None of them owns a socket or reads a clock, so a seeded discrete-event
//! simulator (`sim`) runs a thousand nodes over them and property tests check their bounds over
//! random histories.
//!
//! Network groups are the unit of diversity everywhere: an attacker gets many addresses cheaply
//! but few groups. A group is the /16 of an IPv4 address and the /32 of an IPv6 address; a
//! subnet (for pending-handshake limits) is the /24 or /64. Loopback addresses, which only
//! appear when a test or a devnet allows them, form one group and one subnet per address, so
//! that many nodes on 127.0.x.y behave like nodes spread over the internet.

mod actor;
pub(crate) mod addr_book;
mod config;
pub(crate) mod gossip;
pub(crate) mod seeds;
pub(crate) mod selection;
pub mod sim;
pub(crate) mod store;

pub use actor::DiscoveryStats;
pub(crate) use actor::{Discovery, DiscoverySetup, FlushBook, GetDiscoveryStats, SetConnector};
pub(crate) use store::StoreThread;

pub use config::{DiscoveryConfig, DEFAULT_DISCOVERY_TICK, DEFAULT_FEELER_INTERVAL};

pub use crate::admission::{Admission, AdmissionConfig, AdmissionRefusal};
pub use crate::eviction::{
    select_to_evict, EvictionCandidate, EvictionConfig, EvictionDecision, Protection,
};
pub use addr_book::{AddResult, AddrBook, AddrBookConfig, AddrBookSnapshot, KnownAddr, StoredAddr};
pub use gossip::{AddrGossip, GossipConfig};
pub use seeds::{SeedConfig, SeedPlan};
pub use selection::{DialChoice, DialKind, OutboundSelector, SelectionConfig};
pub use store::{
    AddrStore, AddrStoreError, StoredBook, DEFAULT_ADDR_BOOK_SAVE_INTERVAL, FINAL_SAVE_TIMEOUT,
};

pub use crate::netgroup::{canonical_addr, is_routable, netgroup, subnet, NetGroup, Reachability};
pub(crate) use crate::netgroup::{ip_bytes, keyed_hash, TokenBucket};
