//! # peerlink (the node)
//!
//! The node that launches the `peerlink-actors` networking subsystem: configuration, CLI,
//! admin API, chain store, block sync and the devnet.

pub mod admin;
pub mod app;
pub mod chain;
pub mod cli;
pub mod config;
pub mod devnet;
pub mod node;
pub mod sync;
