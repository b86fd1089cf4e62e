//! The admin HTTP API (actix-web), for operators and for `peerlink status` / `peers` / `bans` /
//! `ban` / `unban`. Bound to loopback by default.
//!
//! ## Hardening (a web page the operator opens must not be able to use it)
//!
//! - **Host check**: a request whose `Host` header is not the bind address (`IP:PORT`, or the
//!   IP alone), `localhost[:PORT]` when bound to loopback, or one of `[admin] allowed_hosts`, is
//!   refused with 403: a page served from a DNS name that resolves to 127.0.0.1 (DNS rebinding)
//!   names its own host.
//! - **JSON only on mutating endpoints**: every `POST` needs `Content-Type: application/json`
//!   (415 otherwise) and a JSON object body (400 otherwise). A browser form or a "simple"
//!   cross-origin request cannot send that content type without a CORS preflight, which this
//!   API never answers.
//! - **Token**: when `[admin] token` is set, every request, on loopback too, needs
//!   `Authorization: Bearer <token>` (401 otherwise). The comparison hashes both sides with
//!   BLAKE3 and compares the digests in constant time, so neither the content nor the length
//!   of the token leaks through timing. If the handler cannot find its configuration it
//!   refuses (500): it fails closed.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /status` | node nonce, network, listen address, chain height and tip, sync state, best peer height, peer counts, uptime, and with discovery the address book (`discovery`: known, tried, loaded, saves, saved anchors, seed dials) |
//! | `GET /peers` | one row per registered peer, plus the most recent disconnects and their reasons |
//! | `GET /metrics` | Prometheus/OpenMetrics text: the subsystem's metrics, the node's and block sync's, prefix `peerlink_` |
//! | `POST /peers/{ip}/disconnect` | closes the connection to `ip` (reason `requested`); 404 if none |
//! | `POST /connect` | body `{"addr": "IP:PORT"}`: adds the address to the dial plan (clearing its backoff) and dials it now |
//! | `GET /bans` | `bans`: `ip`, `until` / `since` (unix s), `reason`, `source` |
//! | `POST /ban` | body `{"ip": IP, "duration": "1h" (optional), "reason": TEXT (optional)}`: bans, persists, closes the connection |
//! | `POST /unban` | body `{"ip": IP}`: lifts the ban (404 if there was none) |
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
use crate::bans::BanRecord;
use crate::chain::to_hex;
use crate::metrics::{DiscoveryMetrics, NodeMetrics, SyncMetrics};
use crate::sync::{BanIp, GetSyncStatus, ListBans, SyncActor, UnbanIp};

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
    /// The discovery metrics inside `registry`, refreshed on scrape from the address book.
    pub discovery_metrics: Arc<DiscoveryMetrics>,
    /// The sync metrics inside `registry`, refreshed on scrape from the sync actor's status.
    pub sync_metrics: Arc<SyncMetrics>,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// The address the API is bound to (for the Host check).
    pub bind: SocketAddr,
    /// Further host names allowed in the Host header.
    pub allowed_hosts: Vec<String>,
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
    /// Discovery's address book (absent when `[network] discovery = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryReport>,
}

/// The address book's counts in `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryReport {
    /// Addresses in the book.
    pub known: usize,
    /// Of them, in the tried table (a connection to them worked).
    pub tried: usize,
    /// Addresses loaded from the store at start.
    pub loaded: usize,
    /// Saves of the book to the store since start.
    pub saves: u64,
    /// Addresses written by the last save.
    pub saved_known: usize,
    /// Anchors written by the last save (dialled first at the next start).
    pub saved_anchors: Vec<SocketAddr>,
    /// Seed dials since start.
    pub seed_dials: u64,
    /// Gossiped addresses dropped by the per-peer rate limit since start.
    pub dropped: u64,
}

impl From<&peerlink_actors::DiscoveryStats> for DiscoveryReport {
    fn from(s: &peerlink_actors::DiscoveryStats) -> Self {
        Self {
            known: s.known,
            tried: s.tried,
            loaded: s.loaded,
            saves: s.saves,
            saved_known: s.saved_entries,
            saved_anchors: s.saved_anchors.clone(),
            seed_dials: s.seed_dials,
            dropped: s.dropped,
        }
    }
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
    /// Milliseconds since the node last found the peer useful (its blocks moved our tip);
    /// `null` if never. Recently useful inbound peers are kept when a newcomer evicts one.
    pub useful_ago_ms: Option<u64>,
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

/// Body of `POST /ban`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// The IP.
    pub ip: String,
    /// How long (humantime: `90s`, `1h`, `2d`); absent: `[bans] manual_secs`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Body of `POST /unban`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbanRequest {
    /// The IP.
    pub ip: String,
}

/// One ban in `GET /bans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRow {
    /// Banned IP.
    pub ip: IpAddr,
    /// When it ends, unix seconds.
    pub until: u64,
    /// When it was set, unix seconds.
    pub since: u64,
    /// Why.
    pub reason: String,
    /// Who decided: `sync`, `network` or `operator`.
    pub source: String,
}

impl From<&BanRecord> for BanRow {
    fn from(r: &BanRecord) -> Self {
        BanRow {
            ip: r.ip,
            until: r.until_unix_ms / 1000,
            since: r.since_unix_ms / 1000,
            reason: r.reason.clone(),
            source: r.source.clone(),
        }
    }
}

/// `GET /bans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BansReport {
    /// Bans in force, sorted by IP.
    pub bans: Vec<BanRow>,
}

/// Binds nothing: serves on `listener` (already bound, so that a busy port is reported before
/// the node starts anything). The returned server must be spawned; stop it through its handle.
pub fn start(listener: std::net::TcpListener, state: AdminState) -> std::io::Result<Server> {
    listener.set_nonblocking(true)?;
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(4096)
                    .error_handler(json_error),
            )
            .wrap(from_fn(guard))
            .route("/status", web::get().to(status))
            .route("/peers", web::get().to(peers))
            .route("/metrics", web::get().to(metrics))
            .route("/bans", web::get().to(bans))
            .route("/peers/{ip}/disconnect", web::post().to(disconnect))
            .route("/connect", web::post().to(connect))
            .route("/ban", web::post().to(ban))
            .route("/unban", web::post().to(unban))
    })
    // One worker: the API answers an operator, not traffic; peers are served by the actors.
    .workers(1)
    .disable_signals()
    .shutdown_timeout(ADMIN_SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Every request passes here first: configuration present (fail closed), Host header allowed,
/// bearer token when configured, JSON content type on `POST`. See the module docs.
async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let refuse = |status: actix_web::http::StatusCode, message: &str| {
        let mut response = HttpResponse::build(status);
        if status == actix_web::http::StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        let response = response.json(serde_json::json!({ "error": message }));
        Err(actix_web::error::InternalError::from_response("refused", response).into())
    };
    let Some(state) = req.app_data::<web::Data<AdminState>>() else {
        return refuse(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "admin configuration unavailable",
        );
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, state.bind, &state.allowed_hosts) {
        return refuse(
            actix_web::http::StatusCode::FORBIDDEN,
            "Host header not allowed (set [admin] allowed_hosts to use another name)",
        );
    }
    if let Some(expected) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| token_matches(g, expected)) {
            return refuse(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "missing or invalid bearer token",
            );
        }
    }
    if req.method() == actix_web::http::Method::POST {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return refuse(
                actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST bodies must be JSON (Content-Type: application/json)",
            );
        }
    }
    next.call(req).await
}

/// Whether `host` (a Host header) names this API: its bind address (`IP:PORT` or the IP
/// alone), `localhost` when bound to loopback, or an allowed name (with or without a port).
pub fn host_allowed(host: &str, bind: SocketAddr, allowed: &[String]) -> bool {
    let host = host.trim();
    if host.is_empty() {
        return false;
    }
    // Split an optional port off; IPv6 literals are bracketed.
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p))
            if !n.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && !n.ends_with(':') =>
        {
            (n, Some(p))
        }
        _ => (host, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().ok() != Some(bind.port())) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.parse::<IpAddr>().ok() == Some(bind.ip()) {
        return true;
    }
    if bind.ip().is_loopback() && name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Compares a given token with the expected one by their BLAKE3 digests, in constant time
/// (`blake3::Hash` equality is constant-time): the time taken depends on neither the content
/// nor the length of either token.
fn token_matches(given: &str, expected: &str) -> bool {
    blake3::hash(given.as_bytes()) == blake3::hash(expected.as_bytes())
}

/// A JSON body that is missing, malformed or of the wrong shape: 400 with the reason.
fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    let status = match &err {
        actix_web::error::JsonPayloadError::ContentType => {
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        _ => actix_web::http::StatusCode::BAD_REQUEST,
    };
    let response = error(status, format!("bad JSON body: {err}"));
    actix_web::error::InternalError::from_response(err, response).into()
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
        discovery: state
            .network
            .discovery_stats()
            .await
            .as_ref()
            .map(DiscoveryReport::from),
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
        key: p.conn.remote_key.map(|k| k.to_hex()),
        listen_port: p.meta.listen_addr.map(|a| a.port()),
        direction: p.conn.direction.as_str().to_string(),
        conn_id: p.conn.conn_id.0,
        connected_since: unix_seconds(p.since),
        rtt_ms: p.stats.rtt.map(|d| d.as_secs_f64() * 1000.0),
        pings_sent: p.stats.pings_sent,
        pongs_matched: p.stats.pongs_matched,
        bytes_in: p.stats.bytes_in,
        bytes_out: p.stats.bytes_out,
        useful_ago_ms: p.useful_ago.map(|d| d.as_millis() as u64),
        best_height: p.meta.best_height,
        user_agent: p.meta.user_agent.clone(),
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
    if let Some(d) = state.network.discovery_stats().await {
        state.discovery_metrics.refresh(&d);
    }
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

/// An empty JSON object body, as mutating endpoints without parameters take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn disconnect(
    state: web::Data<AdminState>,
    ip: web::Path<String>,
    _body: web::Json<NoParams>,
) -> HttpResponse {
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

async fn bans(state: web::Data<AdminState>) -> HttpResponse {
    match state.sync.send(ListBans).await {
        Ok(list) => HttpResponse::Ok().json(BansReport {
            bans: list.iter().map(BanRow::from).collect(),
        }),
        Err(_) => error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "block sync has stopped",
        ),
    }
}

async fn ban(state: web::Data<AdminState>, body: web::Json<BanRequest>) -> HttpResponse {
    let bad = |m: String| error(actix_web::http::StatusCode::BAD_REQUEST, m);
    let ip = match crate::cli::parse_ip(&body.ip) {
        Ok(ip) => ip,
        Err(m) => return bad(m),
    };
    let duration = match body.duration.as_deref().map(crate::cli::parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => Some(d),
        Some(Ok(_)) => return bad("duration must be positive".into()),
        Some(Err(m)) => return bad(m),
    };
    let msg = BanIp {
        ip,
        duration,
        reason: body.reason.clone().unwrap_or_default(),
    };
    match state.sync.send(msg).await {
        Ok(Ok(record)) => HttpResponse::Ok().json(BanRow::from(&record)),
        Ok(Err(refused)) => error(actix_web::http::StatusCode::CONFLICT, refused.to_string()),
        Err(_) => error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "block sync has stopped",
        ),
    }
}

async fn unban(state: web::Data<AdminState>, body: web::Json<UnbanRequest>) -> HttpResponse {
    let ip = match crate::cli::parse_ip(&body.ip) {
        Ok(ip) => ip,
        Err(m) => return error(actix_web::http::StatusCode::BAD_REQUEST, m),
    };
    match state.sync.send(UnbanIp(ip)).await {
        Ok(true) => HttpResponse::Ok().json(serde_json::json!({ "unbanned": ip })),
        Ok(false) => error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("{ip} is not banned"),
        ),
        Err(_) => error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "block sync has stopped",
        ),
    }
}

/// `peerlink bans` output.
pub fn render_bans(r: &BansReport) -> String {
    let now = unix_seconds(SystemTime::now());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>10} {:<9} REASON",
        "IP", "LEFT (s)", "SOURCE"
    );
    for b in &r.bans {
        let _ = writeln!(
            out,
            "{:<40} {:>10} {:<9} {}",
            b.ip.to_string(),
            b.until.saturating_sub(now),
            b.source,
            b.reason
        );
    }
    let _ = writeln!(out, "{} ban(s)", r.bans.len());
    out
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
        (
            "addr book",
            match &s.discovery {
                Some(d) => format!(
                    "{} known ({} tried), {} saves, anchors {:?}",
                    d.known, d.tried, d.saves, d.saved_anchors
                ),
                None => "discovery off".to_string(),
            },
        ),
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
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("secret", "secret2"));
        assert!(!token_matches("", "secret"));
    }

    #[test]
    fn host_check() {
        let bind: SocketAddr = "127.0.0.1:7701".parse().unwrap();
        let allowed = vec!["node.example".to_string()];
        for ok in [
            "127.0.0.1:7701",
            "127.0.0.1",
            "localhost:7701",
            "LOCALHOST",
            "node.example:7701",
        ] {
            assert!(host_allowed(ok, bind, &allowed), "{ok}");
        }
        for bad in [
            "",
            "evil.example:7701",
            "127.0.0.1:80",
            "127.0.0.2:7701",
            "localhost.evil",
        ] {
            assert!(!host_allowed(bad, bind, &allowed), "{bad}");
        }
        let v6: SocketAddr = "[::1]:7701".parse().unwrap();
        assert!(host_allowed("[::1]:7701", v6, &[]));
        assert!(host_allowed("[::1]", v6, &[]));
        let public: SocketAddr = "10.0.0.5:7701".parse().unwrap();
        assert!(!host_allowed("localhost:7701", public, &[]));
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
                useful_ago_ms: None,
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
