//! The command line: `peerlink run` starts a node, `peerlink keygen` creates a producer key,
//! `peerlink produce` builds a chain offline, `peerlink devnet` runs several nodes in one process
//! and reports on their sync, `peerlink status`, `peerlink peers`, `peerlink bans`, `peerlink
//! ban` and `peerlink unban` talk to a running node through its admin API, `peerlink id` prints
//! the node key. Parsing only; `main`
//! carries the commands out.
//!
//! To add a subcommand, add a variant to [`Command`] and a match arm in `main`. Subcommands that
//! start a node reuse [`NodeArgs`] (config file plus overrides) by flattening it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};
use peerlink_actors::secure::PeerAddr;

/// Environment variable read for the admin token when `--token` is not given.
pub const TOKEN_ENV: &str = "PEERLINK_ADMIN_TOKEN";

/// peerlink: a peer-to-peer node built on actix actors.
#[derive(Debug, Parser)]
#[command(name = "peerlink", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Create a block producer key (DIR/producer.key, mode 0600) and print its public key.
    Keygen(KeygenArgs),
    /// Append blocks with random payloads to a chain store, offline, and print the new tip.
    Produce(ProduceArgs),
    /// Run a devnet of several nodes in this process: one produces, the others sync the chain
    /// across several hops; prints a live table and a final report.
    Devnet(DevnetArgs),
    /// Show a running node's status (from its admin API).
    Status(QueryArgs),
    /// List a running node's peers and recent disconnects (from its admin API).
    Peers(QueryArgs),
    /// Print this node's public key (its identity), creating the key file in the data dir if
    /// there is none yet.
    Id(IdArgs),
    /// List a running node's bans (from its admin API).
    Bans(QueryArgs),
    /// Ban an IP on a running node (persisted; its connection is closed).
    Ban(BanArgs),
    /// Lift a ban on a running node.
    Unban(UnbanArgs),
}

/// Arguments of `peerlink id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Data directory holding the node key (`node.key`, created with mode 0600 if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Arguments of `peerlink keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Data directory to write producer.key into (created if missing; an existing key is
    /// never overwritten).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Arguments of `peerlink ban`.
#[derive(Debug, Args)]
pub struct BanArgs {
    /// The IP to ban.
    #[arg(value_name = "IP", value_parser = parse_ip)]
    pub ip: IpAddr,
    /// How long, e.g. `1h`, `30m` (default: the node's bans.manual_secs).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Why (recorded with the ban).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// The node to ask.
    #[command(flatten)]
    pub query: QueryArgs,
}

/// Arguments of `peerlink unban`.
#[derive(Debug, Args)]
pub struct UnbanArgs {
    /// The IP whose ban to lift.
    #[arg(value_name = "IP", value_parser = parse_ip)]
    pub ip: IpAddr,
    /// The node to ask.
    #[command(flatten)]
    pub query: QueryArgs,
}

/// Arguments of `peerlink run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file and overrides.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// A config file plus the flags that override it; shared by every subcommand that starts a node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// TOML config file (see config/node.toml); built-in defaults when absent.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on for peers (overrides network.listen).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_socket_addr)]
    pub listen: Option<SocketAddr>,
    /// Peer to keep connected to, `IP:PORT` or `KEYHEX@IP:PORT` (pins the key the peer must
    /// present); repeatable. Replaces network.peers when given.
    #[arg(long = "peer", value_name = "[KEYHEX@]IP:PORT", value_parser = parse_peer)]
    pub peers: Vec<PeerAddr>,
    /// Address of the admin HTTP API (overrides admin.bind).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_socket_addr)]
    pub admin: Option<SocketAddr>,
    /// Data directory (overrides node.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Produce a block this often, e.g. `100ms`, `2s` (overrides node.produce_every_ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub produce_every: Option<Duration>,
    /// Random payload bytes of each produced block (overrides sync.payload_bytes).
    #[arg(long, value_name = "BYTES")]
    pub block_bytes: Option<usize>,
    /// Public key (64 hex digits) of a block producer; repeatable. Replaces node.producers
    /// when given.
    #[arg(long = "producer", value_name = "HEX")]
    pub producers: Vec<String>,
}

impl NodeArgs {
    /// The configuration in force: the file (or built-in defaults), then the flags, validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.network.listen = listen;
        }
        if !self.peers.is_empty() {
            config.network.peers = self.peers.clone();
        }
        if let Some(admin) = self.admin {
            config.admin.bind = admin;
        }
        if let Some(dir) = &self.data_dir {
            config.node.data_dir = dir.clone();
        }
        if let Some(every) = self.produce_every {
            // At least 1 ms: a zero duration would mean "off", which the flag never asks for.
            config.node.produce_every_ms =
                u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        }
        if let Some(bytes) = self.block_bytes {
            config.sync.payload_bytes = bytes;
        }
        if !self.producers.is_empty() {
            config.node.producers = self.producers.clone();
        }
        // Flags may have changed what the file's validation saw (e.g. --admin 0.0.0.0:7701).
        config.validate()?;
        Ok(config)
    }
}

/// Arguments of `peerlink produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Blocks to append.
    #[arg(long, value_name = "N")]
    pub blocks: u64,
    /// Data directory holding the chain store (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Network name (selects the genesis block; must match the store's).
    #[arg(long, value_name = "NAME", default_value = crate::config::DEFAULT_NETWORK_NAME)]
    pub network: String,
    /// Random payload bytes per block.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub block_bytes: usize,
    /// Public key (64 hex digits) of a producer of the network; repeatable. Default: the key
    /// in DIR/producer.key alone. Must match the nodes' node.producers (the genesis commits
    /// to the set).
    #[arg(long = "producer", value_name = "HEX")]
    pub producers: Vec<String>,
}

/// Who dials whom in the devnet (`--topology`; its dials are `crate::devnet`'s `Topology::edges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Peer discovery: each node is told one of [`DEVNET_SEEDS`](crate::devnet::DEVNET_SEEDS) seeds and finds the others by
    /// address gossip, keeping `target_outbound` outbound peers.
    Discovery,
    /// Node i dials node i + 1: blocks cross n - 1 hops (discovery off).
    Line,
    /// The line, closed: the last node also dials node 0 (two paths to every node; discovery
    /// off).
    Ring,
    /// Every node dials node 0 (a star around the seed; discovery off).
    Seed,
}

/// Arguments of `peerlink devnet`.
#[derive(Debug, Clone, Args)]
pub struct DevnetArgs {
    /// Nodes to run (at least 2; 100 work in one process). Node i listens on base-ip + i;
    /// `--topology` says whom it dials.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub nodes: usize,
    /// Length of the chain node 0 produces (the last few are produced live, the rest before
    /// the nodes start).
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub blocks: u64,
    /// Random payload bytes per block.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub block_bytes: usize,
    /// Give up (and exit non-zero) if the nodes have not all reached the tip by then.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// IPv4 loopback address of node 0; node i uses this address + i (all in 127.0.0.0/8).
    #[arg(long, value_name = "IP", default_value = "127.0.0.2")]
    pub base_ip: Ipv4Addr,
    /// Who dials whom: `discovery` (each node is told one of 3 seeds and finds the others by
    /// address gossip), or with discovery off `line` (i dials i + 1, so blocks cross nodes - 1
    /// hops), `ring` (the line closed: the last dials node 0) or `seed` (every node dials node
    /// 0).
    #[arg(long, value_enum, default_value_t = Topology::Discovery)]
    pub topology: Topology,
    /// Soak: after the sync, keep the nodes running this long (node 0 producing a block every
    /// 2 s), print reconnects, pong rate, one-entry-per-IP violations and RSS over time, and end
    /// with a verdict (exit status). `0s` (the default) skips the soak.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How often the soak prints its figures.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub report_every: Duration,
}

/// Arguments of the commands that query a running node.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Base URL of the node's admin API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7701")]
    pub admin: String,
    /// Bearer token, if the node requires one (default: $PEERLINK_ADMIN_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl QueryArgs {
    /// The token to send: `--token`, else the environment.
    pub fn effective_token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()))
    }
}

/// `IP:PORT` with an error message an operator can act on.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("malformed address `{s}`: expected IP:PORT such as 127.0.0.1:7700 or [::1]:7700")
    })
}

/// A peer entry: `IP:PORT`, or `KEYHEX@IP:PORT` to pin the key the peer must present.
pub fn parse_peer(s: &str) -> Result<PeerAddr, String> {
    s.parse().map_err(|e| {
        format!(
            "malformed address `{s}`: expected IP:PORT or KEYHEX@IP:PORT (64 hex digits, as \
             printed by `peerlink id`) such as 127.0.0.1:7700 ({e})"
        )
    })
}

/// An IP address with an error message an operator can act on.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("malformed IP `{s}`: expected an address such as 10.0.0.1 or ::1"))
}

/// A human duration such as `100ms`, `2s` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("malformed duration `{s}`: {e} (examples: 100ms, 2s, 1m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "peerlink",
            "run",
            "--listen",
            "127.0.0.9:9000",
            "--peer",
            "127.0.0.8:9000",
            "--peer",
            "127.0.0.7:9000",
            "--admin",
            "127.0.0.9:9001",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let config = run.node.load_config().unwrap();
        assert_eq!(config.network.listen, "127.0.0.9:9000".parse().unwrap());
        assert_eq!(config.network.peers.len(), 2);
        assert_eq!(config.admin.bind, "127.0.0.9:9001".parse().unwrap());
    }

    #[test]
    fn produce_every_and_block_bytes_override_the_file() {
        let cli = Cli::try_parse_from([
            "peerlink",
            "run",
            "--produce-every",
            "100ms",
            "--block-bytes",
            "64",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let config = run.node.load_config().unwrap();
        assert_eq!(config.node.produce_every_ms, 100);
        assert_eq!(config.sync.payload_bytes, 64);
        assert!(Cli::try_parse_from(["peerlink", "run", "--produce-every", "soon"]).is_err());
    }

    #[test]
    fn devnet_defaults() {
        let cli = Cli::try_parse_from(["peerlink", "devnet"]).unwrap();
        let Command::Devnet(d) = cli.command else {
            panic!("not devnet")
        };
        assert_eq!((d.nodes, d.blocks, d.block_bytes), (8, 5000, 1024));
        assert_eq!(d.timeout, Duration::from_secs(120));
        assert!(d.base_ip.is_loopback());
        assert_eq!(d.topology, Topology::Discovery);
        assert_eq!(d.duration, Duration::ZERO);
        let cli = Cli::try_parse_from([
            "peerlink",
            "devnet",
            "--duration",
            "30m",
            "--topology",
            "ring",
        ])
        .unwrap();
        let Command::Devnet(d) = cli.command else {
            panic!("not devnet")
        };
        assert_eq!(d.duration, Duration::from_secs(1800));
        assert_eq!(d.topology, Topology::Ring);
    }

    #[test]
    fn malformed_peer_is_a_clear_error() {
        let err = Cli::try_parse_from(["peerlink", "run", "--peer", "nonsense"]).unwrap_err();
        assert!(err.to_string().contains("malformed address `nonsense`"));
    }
}
