//! The admin HTTP API (actix-web), for operators and for `peerlink status` / `peerlink peers`.
//! Bound to loopback by default; when `[admin] token` is set every request needs
//! `Authorization: Bearer <token>`.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /status` | node nonce, network, listen address, chain height and tip, sync state, best peer height, peer counts, uptime |
//! | `GET /peers` | one row per registered peer, plus the most recent disconnects and their reasons |
//! | `GET /metrics` | Prometheus/OpenMetrics text: the subsystem's metrics, the node's and block sync's, prefix `peerlink_` |
//! | `POST /peers/{ip}/disconnect` | closes the connection to `ip` (reason `requested`); 404 if none |
//! | `POST /connect` | body `{"addr": "IP:PORT"}`: adds the address to the dial plan and dials it now |
//!
//! The response types are public so that the CLI (and tests) read the same shapes the server
//! writes.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use peerlink_actors::{DisconnectReason, DisconnectRecord, Network, PeerInfo, RegistryStats};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::app::NodeMsg;
use crate::chain::to_hex;
use crate::node::{NodeMetrics, SyncMetrics};
use crate::sync::{GetSyncStatus, SyncActor};

/// How long the admin server lets in-flight requests finish when it stops, in seconds.
pub const ADMIN_SHUTDOWN_TIMEOUT_SECS: u64 = 1;

/// Everything the handlers read. Shared by the server's worker threads.
pub struct AdminState {
    /// The node's networking.
    pub network: Network<NodeMsg>,
    /// The sync actor (the application), asked for the chain's status.
    pub sync: Addr<SyncActor>,
    /// `[node] network`.
    pub network_name: String,
    /// User agent this node sends.
    pub user_agent: String,
    /// When the node started (monotonic).
    pub started: Instant,
    /// Every metric of the node, prefix `peerlink`.
    pub registry: Registry,
    /// The node-level metrics inside `registry`, refreshed on scrape.
    pub node_metrics: Arc<NodeMetrics>,
    /// The sync metrics inside `registry`, refreshed on scrape from the sync actor's status.
    pub sync_metrics: Arc<SyncMetrics>,
    /// Required bearer token, if any.
    pub token: Option<String>,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node instance's nonce, 16 hex digits.
    pub node_nonce: String,
    /// This node's public key (its identity), 64 hex digits.
    pub node_key: String,
    /// `noise` or `plaintext`.
    pub transport: String,
    /// Network name.
    pub network: String,
    /// Address the node listens on for peers.
    pub listen: SocketAddr,
    /// User agent this node sends.
    pub user_agent: String,
    /// Height of our chain tip.
    pub height: u64,
    /// Hash of our chain tip, 64 hex digits.
    pub tip: String,
    /// "synced" or "syncing".
    pub sync_state: String,
    /// Highest height a connected peer claims (our own if it is higher).
    pub best_peer_height: u64,
    /// Blocks per second stored by sync over the last second or so.
    pub sync_rate_blocks_per_s: f64,
    /// Registered inbound peers.
    pub peers_inbound: usize,
    /// Registered outbound peers.
    pub peers_outbound: usize,
    /// Seconds since the node started.
    pub uptime_seconds: u64,
}

/// One row of `GET /peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// Canonical peer IP.
    pub ip: IpAddr,
    /// The key the peer authenticated with, 64 hex digits (none on the plaintext transport).
    pub key: Option<String>,
    /// Port the peer listens on (from its Hello), if it listens.
    pub listen_port: Option<u16>,
    /// "inbound" or "outbound".
    pub direction: String,
    /// Connection id on this node.
    pub conn_id: u64,
    /// Unix time of registration, seconds.
    pub connected_since: u64,
    /// Last ping round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Pings sent on this connection.
    pub pings_sent: u64,
    /// Pongs that echoed our ping.
    pub pongs_matched: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Height the peer announced in its Hello.
    pub best_height: u64,
    /// Peer software.
    pub user_agent: String,
}

/// A recent disconnect in `GET /peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisconnectRow {
    /// Peer IP.
    pub ip: IpAddr,
    /// Connection id.
    pub conn_id: u64,
    /// Reason (snake_case, as in metrics labels).
    pub reason: String,
    /// Whether the peer closed rather than us.
    pub by_peer: bool,
    /// Unix time of the disconnect, seconds.
    pub at: u64,
    /// How long the connection had been registered, seconds.
    pub lifetime_seconds: f64,
}

/// `GET /peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersReport {
    /// Registered peers, sorted by IP.
    pub peers: Vec<PeerRow>,
    /// The most recent disconnects, newest last.
    pub recent_disconnects: Vec<DisconnectRow>,
}

/// Body of `POST /connect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Address to dial, `IP:PORT`.
    pub addr: String,
}

/// Binds nothing: serves on `listener` (already bound, so that a busy port is reported before
/// the node starts anything). The returned server must be spawned; stop it through its handle.
pub fn start(listener: std::net::TcpListener, state: AdminState) -> std::io::Result<Server> {
    listener.set_nonblocking(true)?;
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(4096))
            .wrap(from_fn(require_token))
            .route("/status", web::get().to(status))
            .route("/peers", web::get().to(peers))
            .route("/metrics", web::get().to(metrics))
            .route("/peers/{ip}/disconnect", web::post().to(disconnect))
            .route("/connect", web::post().to(connect))
    })
    // One worker: the API answers an operator, not traffic; peers are served by the actors.
    .workers(1)
    .disable_signals()
    .shutdown_timeout(ADMIN_SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Rejects every request without the configured bearer token (when one is configured).
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<AdminState>>()
        .and_then(|s| s.token.clone());
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()));
        if !ok {
            let response = HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(serde_json::json!({"error": "missing or invalid bearer token"}));
            return Err(
                actix_web::error::InternalError::from_response("unauthorized", response).into(),
            );
        }
    }
    next.call(req).await
}

/// Compares without an early exit, so the time taken does not leak a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": message.into()}))
}

/// The registry's counters, or a 503 response when the network has stopped.
async fn registry_stats(state: &AdminState) -> Result<RegistryStats, HttpResponse> {
    state.network.stats().await.map_err(|e| {
        error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )
    })
}

async fn status(state: web::Data<AdminState>) -> HttpResponse {
    let stats = match registry_stats(&state).await {
        Ok(s) => s,
        Err(unavailable) => return unavailable,
    };
    let sync = match state.sync.send(GetSyncStatus).await {
        Ok(s) => s,
        Err(_) => {
            return error(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "block sync has stopped",
            )
        }
    };
    HttpResponse::Ok().json(StatusReport {
        node_nonce: format!("{:016x}", state.network.node_nonce()),
        node_key: state
            .network
            .config()
            .node_key
            .as_ref()
            .map(|k| k.public().to_hex())
            .unwrap_or_default(),
        transport: match state.network.config().transport {
            peerlink_actors::secure::Transport::Noise => "noise",
            peerlink_actors::secure::Transport::Plaintext => "plaintext",
        }
        .to_string(),
        network: state.network_name.clone(),
        listen: state.network.local_addr(),
        user_agent: state.user_agent.clone(),
        height: sync.height,
        tip: to_hex(&sync.tip),
        sync_state: sync.state.as_str().to_string(),
        best_peer_height: sync.best_peer_height,
        sync_rate_blocks_per_s: sync.sync_rate_blocks_per_s,
        peers_inbound: stats.inbound,
        peers_outbound: stats.outbound,
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

async fn peers(state: web::Data<AdminState>) -> HttpResponse {
    let peers = state.network.peers().await;
    let stats = match registry_stats(&state).await {
        Ok(s) => s,
        Err(unavailable) => return unavailable,
    };
    HttpResponse::Ok().json(peers_report(&peers, &stats))
}

/// Builds the `/peers` body from the registry's answers.
pub fn peers_report(peers: &[PeerInfo], stats: &RegistryStats) -> PeersReport {
    PeersReport {
        peers: peers.iter().map(peer_row).collect(),
        recent_disconnects: stats
            .recent_disconnects
            .iter()
            .map(disconnect_row)
            .collect(),
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn peer_row(p: &PeerInfo) -> PeerRow {
    PeerRow {
        ip: p.ip,
        key: p.remote_key.map(|k| k.to_hex()),
        listen_port: p.listen_addr.map(|a| a.port()),
        direction: p.direction.as_str().to_string(),
        conn_id: p.conn_id.0,
        connected_since: unix_seconds(p.since),
        rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
        pings_sent: p.pings_sent,
        pongs_matched: p.pongs_matched,
        bytes_in: p.bytes_in,
        bytes_out: p.bytes_out,
        best_height: p.best_height,
        user_agent: p.user_agent.clone(),
    }
}

fn disconnect_row(d: &DisconnectRecord) -> DisconnectRow {
    DisconnectRow {
        ip: d.ip,
        conn_id: d.conn_id.0,
        reason: d.reason.as_str().to_string(),
        by_peer: d.by_peer,
        at: unix_seconds(d.at),
        lifetime_seconds: d.lifetime.as_secs_f64(),
    }
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    state.node_metrics.refresh(state.started);
    if let Ok(s) = state.sync.send(GetSyncStatus).await {
        state.sync_metrics.refresh(&s);
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        );
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body)
}

async fn disconnect(state: web::Data<AdminState>, ip: web::Path<String>) -> HttpResponse {
    let ip: IpAddr = match ip.parse() {
        Ok(ip) => ip,
        Err(_) => {
            return error(
                actix_web::http::StatusCode::BAD_REQUEST,
                format!("malformed IP `{ip}`"),
            )
        }
    };
    if state
        .network
        .disconnect(ip, DisconnectReason::Requested)
        .await
    {
        HttpResponse::Ok().json(serde_json::json!({"disconnected": ip}))
    } else {
        error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("no connection to {ip}"),
        )
    }
}

async fn connect(state: web::Data<AdminState>, body: web::Json<ConnectRequest>) -> HttpResponse {
    match crate::cli::parse_socket_addr(&body.addr) {
        Ok(addr) => {
            state.network.connect(addr);
            HttpResponse::Accepted().json(serde_json::json!({"dialling": addr}))
        }
        Err(message) => error(actix_web::http::StatusCode::BAD_REQUEST, message),
    }
}

/// `peerlink status` output.
pub fn render_status(s: &StatusReport) -> String {
    let rows = [
        ("node key", s.node_key.clone()),
        ("transport", s.transport.clone()),
        ("node nonce", s.node_nonce.clone()),
        ("network", s.network.clone()),
        ("listen", s.listen.to_string()),
        ("user agent", s.user_agent.clone()),
        ("height", s.height.to_string()),
        ("tip", s.tip.clone()),
        (
            "sync",
            format!(
                "{} (best peer height {}, {:.0} blocks/s)",
                s.sync_state, s.best_peer_height, s.sync_rate_blocks_per_s
            ),
        ),
        (
            "peers",
            format!("{} in / {} out", s.peers_inbound, s.peers_outbound),
        ),
        ("uptime", format!("{} s", s.uptime_seconds)),
    ];
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<12} {v}");
    }
    out
}

/// `peerlink peers` output: a table of peers, then the recent disconnects.
pub fn render_peers(r: &PeersReport) -> String {
    let now = unix_seconds(SystemTime::now());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>6} {:<8} {:>10} {:>9} {:>7} {:>7} {:>12} {:>12}  KEY",
        "IP", "PORT", "DIR", "UP (s)", "RTT (ms)", "PINGS", "PONGS", "BYTES IN", "BYTES OUT"
    );
    for p in &r.peers {
        let port = p
            .listen_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        let rtt = p
            .rtt_ms
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<40} {:>6} {:<8} {:>10} {:>9} {:>7} {:>7} {:>12} {:>12}  {}",
            p.ip.to_string(),
            port,
            p.direction,
            now.saturating_sub(p.connected_since),
            rtt,
            p.pings_sent,
            p.pongs_matched,
            p.bytes_in,
            p.bytes_out,
            p.key.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(out, "{} peer(s)", r.peers.len());
    if !r.recent_disconnects.is_empty() {
        let _ = writeln!(out, "\nrecent disconnects (newest last):");
        let _ = writeln!(
            out,
            "{:<40} {:<20} {:<6} {:>10} {:>12}",
            "IP", "REASON", "BY", "AGO (s)", "LIFETIME (s)"
        );
        for d in &r.recent_disconnects {
            let _ = writeln!(
                out,
                "{:<40} {:<20} {:<6} {:>10} {:>12.1}",
                d.ip.to_string(),
                d.reason,
                if d.by_peer { "peer" } else { "local" },
                now.saturating_sub(d.at),
                d.lifetime_seconds
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn tables_render() {
        let report = PeersReport {
            peers: vec![PeerRow {
                ip: "127.0.0.2".parse().unwrap(),
                key: Some("ab".repeat(32)),
                listen_port: Some(7700),
                direction: "outbound".into(),
                conn_id: 3,
                connected_since: 0,
                rtt_ms: Some(0.25),
                pings_sent: 4,
                pongs_matched: 4,
                bytes_in: 10,
                bytes_out: 20,
                best_height: 0,
                user_agent: "peerlink/0.1.0".into(),
            }],
            recent_disconnects: vec![DisconnectRow {
                ip: "127.0.0.3".parse().unwrap(),
                conn_id: 2,
                reason: "shutdown".into(),
                by_peer: true,
                at: 0,
                lifetime_seconds: 1.5,
            }],
        };
        let text = render_peers(&report);
        assert!(text.contains("127.0.0.2"));
        assert!(text.contains("0.25"));
        assert!(text.contains("shutdown"));
        assert!(text.contains("1 peer(s)"));
    }
}
