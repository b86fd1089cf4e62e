//! The node's configuration file: one TOML document with the sections `[network]` (the
//! networking subsystem's own [`NetworkConfig`], embedded as is), `[node]`, `[sync]` (block
//! sync's [`SyncConfig`], embedded as is) and `[admin]`.
//!
//! Every section rejects unknown keys and falls back to built-in defaults for missing ones, so an
//! empty file is a valid configuration. `config/node.toml` documents every key and equals
//! [`Config::default()`] exactly (a test checks it). Errors name the file, the line and the key:
//! an operator should never have to guess which line of which file is wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use peerlink_actors::NetworkConfig;
use serde::{Deserialize, Serialize};

use crate::bans::BanConfig;
use crate::chain::producer::parse_public_key;
use crate::chain::{ChainParams, PublicKey};
use crate::sync::{SyncConfig, SyncError};

/// Default address of the admin HTTP API: loopback only, so that a node started without a
/// token exposes nothing to the network.
pub const DEFAULT_ADMIN_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7701);

/// Default network name; it selects the genesis block (see [`crate::chain::genesis_for`]).
pub const DEFAULT_NETWORK_NAME: &str = "devnet";

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "peerlink-data";

/// The user agent this build sends when `[node] user_agent` is empty.
pub const BUILT_IN_USER_AGENT: &str = concat!("peerlink/", env!("CARGO_PKG_VERSION"));

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[network]`: listen address, peers, limits, timeouts, magic (see `peerlink-actors`).
    pub network: NetworkConfig,
    /// `[node]`: network name, data directory, user agent, block production.
    pub node: NodeConfig,
    /// `[sync]`: block sync tunables (see [`SyncConfig`]).
    pub sync: SyncConfig,
    /// `[admin]`: the admin HTTP API.
    pub admin: AdminConfig,
    /// `[bans]`: ban durations per kind of misbehaviour.
    pub bans: BanConfig,
}

/// `[node]`: what this node is, beyond its networking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Network name ("devnet", ...). Nodes of different networks refuse each other: the genesis
    /// block, whose hash is sent in the Hello, is derived from it.
    pub network: String,
    /// Directory for the node's persistent data, the chain store (created at start if missing).
    pub data_dir: PathBuf,
    /// User agent sent in the Hello; empty means `peerlink/<version>`.
    pub user_agent: String,
    /// Append a block with `[sync] payload_bytes` random bytes every this many milliseconds;
    /// 0 (the default) produces nothing.
    pub produce_every_ms: u64,
    /// Public keys (64 hex digits each) of the network's block producers: only blocks signed by
    /// one of them are valid, and the genesis hash commits to the set, so nodes with another
    /// set refuse each other (`wrong_genesis`). Empty (the default): nobody can produce.
    pub producers: Vec<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            network: DEFAULT_NETWORK_NAME.to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            user_agent: String::new(),
            produce_every_ms: 0,
            producers: Vec::new(),
        }
    }
}

impl NodeConfig {
    /// The producer keys, parsed.
    pub fn producer_keys(&self) -> Result<Vec<PublicKey>, String> {
        self.producers.iter().map(|k| parse_public_key(k)).collect()
    }

    /// The chain parameters: network name and producer keys (invalid keys are left out;
    /// [`Config::validate`] refuses them).
    pub fn chain_params(&self) -> ChainParams {
        ChainParams::new(
            self.network.clone(),
            self.producers
                .iter()
                .filter_map(|k| parse_public_key(k).ok()),
        )
    }

    /// The user agent actually sent: the configured one, or `peerlink/<version>`.
    pub fn effective_user_agent(&self) -> String {
        if self.user_agent.is_empty() {
            BUILT_IN_USER_AGENT.to_string()
        } else {
            self.user_agent.clone()
        }
    }
}

/// `[admin]`: the HTTP API operators and `peerlink status` use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address the admin API listens on.
    pub bind: SocketAddr,
    /// Bearer token required on every request when set. Mandatory when `bind` is not loopback.
    pub token: Option<String>,
    /// Host names (besides the bind address itself, `localhost` when bound to loopback) that
    /// requests may name in their `Host` header; others are refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: DEFAULT_ADMIN_BIND,
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// A configuration that cannot be used. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{}", parse_message(path, *line, *col, key.as_deref(), message))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        col: Option<usize>,
        /// The dotted key (`network.ping_interval_ms`), when known.
        key: Option<String>,
        /// toml's description of the problem.
        message: String,
    },
    /// Every value parsed but one is out of range or inconsistent with another.
    #[error("{}invalid value for `{key}`: {reason}", location(path.as_deref(), *line))]
    Invalid {
        /// The file, when the configuration came from one.
        path: Option<PathBuf>,
        /// 1-based line of the key in that file, when it is set there.
        line: Option<usize>,
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn parse_message(
    path: &Path,
    line: Option<usize>,
    col: Option<usize>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = format!("{}", path.display());
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
        if let Some(col) = col {
            out.push_str(&format!(":{col}"));
        }
    }
    out.push_str(": ");
    if let Some(key) = key {
        out.push_str(&format!("key `{key}`: "));
    }
    out.push_str(message);
    out
}

fn location(path: Option<&Path>, line: Option<usize>) -> String {
    match (path, line) {
        (Some(p), Some(l)) => format!("{}:{l}: ", p.display()),
        (Some(p), None) => format!("{}: ", p.display()),
        _ => String::new(),
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match toml::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

impl Config {
    /// Reads and parses `path`, then validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, path)?;
        config.validate_in(Some((path, &text)))?;
        Ok(config)
    }

    /// Parses `text` (named `path` in errors) without validating values.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let start = e.span().map(|s| s.start);
            let (line, col) = match start {
                Some(offset) => {
                    let (l, c) = line_col(text, offset);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                col,
                key: start.and_then(|offset| key_at(text, offset)),
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Checks the values: the networking subsystem's own rules and the node's (an admin API
    /// reachable from other machines needs a token).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(None)
    }

    fn validate_in(&self, source: Option<(&Path, &str)>) -> Result<(), ConfigError> {
        let invalid = |section: &str, key: &str, reason: String| ConfigError::Invalid {
            path: source.map(|(p, _)| p.to_path_buf()),
            line: source.and_then(|(_, text)| find_key_line(text, section, key)),
            key: format!("{section}.{key}"),
            reason,
        };
        let mut network = self.network.clone();
        network.user_agent = self.node.effective_user_agent();
        if let Err(e) = network.validate() {
            let section = if e.key == "user_agent" {
                "node"
            } else {
                "network"
            };
            return Err(invalid(section, e.key, e.reason));
        }
        if let Err(SyncError::Config { key, reason }) =
            self.sync.validate(self.network.max_frame_bytes)
        {
            return Err(invalid("sync", key, reason));
        }
        if self.node.network.trim().is_empty() {
            return Err(invalid("node", "network", "must not be empty".into()));
        }
        if let Err(reason) = self.node.producer_keys() {
            return Err(invalid("node", "producers", reason));
        }
        if let Some(token) = &self.admin.token {
            if token.trim().is_empty() {
                return Err(invalid(
                    "admin",
                    "token",
                    "must not be empty (remove the key to disable authentication)".into(),
                ));
            }
        }
        if !self.admin.bind.ip().is_loopback() && self.admin.token.is_none() {
            return Err(invalid(
                "admin",
                "token",
                format!(
                    "the admin API binds {} (not loopback), which requires a token: \
                     set [admin] token or bind 127.0.0.1",
                    self.admin.bind
                ),
            ));
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The dotted key whose line contains `offset`: the nearest `[section]` header above it plus the
/// key before `=` on that line. Good enough for the flat files this node uses.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_string(),
    })
}

/// 1-based line on which `key` is set inside `[section]`, if it is.
fn find_key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            current = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            if current == section && k.trim().trim_matches('"') == key {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[network]\nping_interval_ms = 100\nbogus_key = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml:3:"), "{text}");
        assert!(text.contains("bogus_key"), "{text}");
    }

    #[test]
    fn bad_type_names_the_key() {
        let err = parse("[admin]\n\n[network]\nping_interval_ms = \"fast\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml:4:"), "{text}");
        assert!(text.contains("network.ping_interval_ms"), "{text}");
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let text = "[network]\nping_interval_ms = 1000\nping_timeout_ms = 10\n";
        let config = parse(text).unwrap();
        let err = config
            .validate_in(Some((Path::new("x.toml"), text)))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.toml:3: invalid value for `network.ping_timeout_ms`: must be at least ping_interval_ms"
        );
    }

    #[test]
    fn public_admin_needs_a_token() {
        let mut config = parse("[admin]\nbind = \"0.0.0.0:7701\"\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("admin.token"), "{err}");
        assert!(err.contains("requires a token"), "{err}");
        config.admin.token = Some("secret".into());
        config.validate().unwrap();
    }

    #[test]
    fn sync_section_is_validated_with_its_key() {
        let text = "[sync]\nblocks_per_request = 0\n";
        let config = parse(text).unwrap();
        let err = config
            .validate_in(Some((Path::new("x.toml"), text)))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml:2: "), "{err}");
        assert!(err.contains("sync.blocks_per_request"), "{err}");
    }

    #[test]
    fn user_agent_defaults_to_version() {
        assert_eq!(
            NodeConfig::default().effective_user_agent(),
            BUILT_IN_USER_AGENT
        );
    }
}
