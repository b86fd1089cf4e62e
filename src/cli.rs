//! The command line: `peerlink run` starts a node, `peerlink status` and `peerlink peers` ask a
//! running one through its admin API. Parsing only; `main` carries the commands out.
//!
//! To add a subcommand, add a variant to [`Command`] and a match arm in `main`. Subcommands that
//! start a node reuse [`NodeArgs`] (config file plus overrides) by flattening it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};

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
    /// Show a running node's status (from its admin API).
    Status(QueryArgs),
    /// List a running node's peers and recent disconnects (from its admin API).
    Peers(QueryArgs),
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
    /// Address to listen on for peers (overrides [network] listen).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_socket_addr)]
    pub listen: Option<SocketAddr>,
    /// Peer to keep connected to; repeatable. Replaces [network] peers when given.
    #[arg(long = "peer", value_name = "IP:PORT", value_parser = parse_socket_addr)]
    pub peers: Vec<SocketAddr>,
    /// Address of the admin HTTP API (overrides [admin] bind).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_socket_addr)]
    pub admin: Option<SocketAddr>,
    /// Data directory (overrides [node] data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
        // Flags may have changed what the file's validation saw (e.g. --admin 0.0.0.0:7701).
        config.validate()?;
        Ok(config)
    }
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
    fn malformed_peer_is_a_clear_error() {
        let err = Cli::try_parse_from(["peerlink", "run", "--peer", "nonsense"]).unwrap_err();
        assert!(err.to_string().contains("malformed address `nonsense`"));
    }
}
