//! # peerlink (the node)
//!
//! The node that launches the `peerlink-actors` networking subsystem: configuration, CLI,
//! admin API, chain store, block sync and the devnet.
//!
//! ## Layout
//!
//! - `config`, `cli`: the TOML config (`[network]` is `peerlink_actors::NetworkConfig`) and the
//!   command line; flags override the file.
//! - `node`: `peerlink run`: opens the chain store, starts block sync and the admin API, handles
//!   signals for a graceful shutdown.
//! - `admin`: the HTTP admin API (status, peers, Prometheus metrics, connect/disconnect, bans).
//! - `app`: `NodeMsg`, the node's application messages inside App frames.
//! - `chain`: signed blocks, producer keys, genesis per network and producer set, and the redb
//!   chain store (which also keeps the bans).
//! - `sync`: the block sync policy (`SyncEngine`), its validity hook (`BlockRule`) and the
//!   actor that carries it out.
//! - `addr_store`: discovery's address book and anchors, persisted in the chain's redb file.
//! - `bans`: the ban book (durations per fault, own addresses never banned, bounded).
//! - `devnet`: N nodes in one process, the main demo and end-to-end check; `soak`: the
//!   verdict of `devnet --duration` (long runs).
//! - `flood`: hostile peers (draining flooders, a non-reader, handshake probes) for the
//!   acceptance tests and `peerlink-bench`.
#![deny(missing_docs)]

pub mod addr_store;
pub mod admin;
pub mod app;
pub mod bans;
pub mod chain;
pub mod cli;
pub mod config;
pub mod devnet;
pub mod flood;
pub mod metrics;
pub mod node;
pub mod soak;
pub mod sync;
