//! End-to-end tests of the `peerlink` binary: real processes on distinct 127.0.1.x addresses
//! (this suite's range, so it can run beside the others), free ports found by binding port 0,
//! conditions awaited by polling the admin API with a bounded deadline, never fixed sleeps.
//! Every child process is killed when its guard drops, so a failing test leaves nothing running.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any awaited condition may take.
const DEADLINE: Duration = Duration::from_secs(15);

/// The documented shutdown bound (`peerlink::node::SHUTDOWN_DEADLINE`).
const SHUTDOWN_BOUND: Duration = peerlink::node::SHUTDOWN_DEADLINE;

/// Short liveness timings so that pongs move within a test.
const FAST_PINGS: &str = "[network]\nping_interval_ms = 200\nping_timeout_ms = 3000\n\
                          dial_tick_ms = 50\nbackoff_base_ms = 100\nsession_threads = 1\n";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid test IP")
}

/// A port that was free on `ip` a moment ago.
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind {ip}:0: {e}"))
}

/// Polls `f` until it returns `Some`, for at most [`DEADLINE`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A failed admin request: an HTTP status, or no answer at all.
#[derive(Debug)]
enum HttpError {
    /// The node answered with this non-2xx status.
    Status(u16),
    /// No HTTP answer (connection refused, timeout...).
    Transport(#[allow(dead_code)] String),
}

impl From<ureq::Error> for HttpError {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::Status(code, _) => HttpError::Status(code),
            other => HttpError::Transport(other.to_string()),
        }
    }
}

/// A running `peerlink run` process; killed on drop.
struct Node {
    child: Option<Child>,
    listen: SocketAddr,
    admin: String,
    token: Option<String>,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node listening on `ip` (fresh ports), dialling `peers`, with `config` as its
    /// config file.
    fn start(ip: IpAddr, listen_port: u16, peers: &[SocketAddr], config: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config).expect("write config");
        let listen = SocketAddr::new(ip, listen_port);
        let admin = SocketAddr::new(ip, free_port(ip));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerlink"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        for p in peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        let child = cmd.spawn().expect("spawn peerlink");
        let token = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("token = "))
            .map(|t| t.trim_matches('"').to_string());
        let mut node = Node {
            child: Some(child),
            listen,
            admin: format!("http://{admin}"),
            token,
            dir,
        };
        wait_for(&format!("admin API of {listen}"), || {
            node.assert_running();
            node.get("/status").ok()
        });
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Panics with the node's log if the process has exited.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "node {} exited early ({status}):\n{}",
                    self.listen,
                    self.log()
                );
            }
        }
    }

    /// GET `path` with the node's token; the body as text.
    fn get(&self, path: &str) -> Result<String, HttpError> {
        let mut req = ureq::get(&format!("{}{path}", self.admin)).timeout(Duration::from_secs(5));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        Ok(req.call()?.into_string().expect("utf-8 body"))
    }

    fn get_json(&self, path: &str) -> Value {
        let body = self
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e:?}\n{}", self.listen, self.log()));
        serde_json::from_str(&body).expect("JSON body")
    }

    fn post_json(&self, path: &str, body: Value) -> Result<Value, HttpError> {
        let resp = ureq::post(&format!("{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send_json(body)?;
        Ok(resp.into_json().expect("JSON body"))
    }

    fn peers(&self) -> Vec<Value> {
        self.get_json("/peers")["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn recent_disconnects(&self) -> Vec<Value> {
        self.get_json("/peers")["recent_disconnects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status; returns it and the time it took.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let sent = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status()
            .expect("run kill");
        assert!(sent.success());
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node did not exit after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- log of node {} ----\n{}", self.listen, self.log());
        }
    }
}

/// Starts two nodes on `a` and `b`, each told to dial the other, and waits until each lists
/// exactly the other as its only peer.
fn connected_pair(a: &str, b: &str) -> (Node, Node) {
    let (a, b) = (ip(a), ip(b));
    let (pa, pb) = (free_port(a), free_port(b));
    let na = Node::start(a, pa, &[SocketAddr::new(b, pb)], FAST_PINGS);
    let nb = Node::start(b, pb, &[SocketAddr::new(a, pa)], FAST_PINGS);
    wait_for("each node to list exactly the other", || {
        let (peers_a, peers_b) = (na.peers(), nb.peers());
        let ok = peers_a.len() == 1
            && peers_b.len() == 1
            && peers_a[0]["ip"] == b.to_string()
            && peers_b[0]["ip"] == a.to_string()
            && peers_a[0]["direction"] != peers_b[0]["direction"];
        ok.then_some(())
    });
    (na, nb)
}

/// One `name{labels} value` sample of Prometheus text.
#[derive(Debug)]
struct Sample {
    name: String,
    value: f64,
}

/// Parses Prometheus/OpenMetrics text line by line; panics on any malformed sample line.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in metrics line `{line}`"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value not a float in `{line}`"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                assert!(labels.ends_with('}'), "unclosed labels in `{line}`");
                for pair in labels[..labels.len() - 1]
                    .split(',')
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in `{line}`"));
                    assert!(!k.is_empty(), "empty label name in `{line}`");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "unquoted label value in `{line}`"
                    );
                }
                name
            }
            None => series,
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in `{line}`"
        );
        samples.push(Sample {
            name: name.to_string(),
            value,
        });
    }
    samples
}

fn pongs(node: &Node) -> f64 {
    let text = node.get("/metrics").expect("GET /metrics");
    let samples = parse_metrics(&text);
    assert!(samples.iter().all(|s| s.name.starts_with("peerlink_")));
    samples
        .iter()
        .find(|s| s.name == "peerlink_pongs_matched_total")
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no peerlink_pongs_matched_total in:\n{text}"))
}

#[test]
fn two_nodes_keep_one_connection_and_export_metrics() {
    let (a, b) = connected_pair("127.0.1.2", "127.0.1.3");
    // Still exactly one entry each once pings flow (no duplicate cycling).
    let first = pongs(&a);
    wait_for("the pong counter to grow between scrapes", || {
        (pongs(&a) > first).then_some(())
    });
    assert_eq!(a.peers().len(), 1);
    assert_eq!(b.peers().len(), 1);
    let row = &a.peers()[0];
    assert_eq!(row["listen_port"], b.listen.port());
    assert!(row["pongs_matched"].as_u64().unwrap_or(0) > 0);
    assert!(row["connected_since"].as_u64().unwrap_or(0) > 1_600_000_000);
    let status = a.get_json("/status");
    assert_eq!(status["network"], "devnet");
    assert_eq!(status["listen"], a.listen.to_string());
    assert_eq!(status["node_nonce"].as_str().map(str::len), Some(16));
    assert_eq!(
        status["peers_inbound"].as_u64().unwrap_or(0)
            + status["peers_outbound"].as_u64().unwrap_or(0),
        1
    );
    assert!(status["height"].is_null());
}

#[test]
fn sigterm_exits_zero_and_the_peer_records_shutdown() {
    let (mut a, b) = connected_pair("127.0.1.4", "127.0.1.5");
    let (status, took) = a.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", a.log());
    assert!(
        took <= SHUTDOWN_BOUND,
        "shutdown took {took:?}, documented bound {SHUTDOWN_BOUND:?}"
    );
    let a_ip = a.listen.ip().to_string();
    wait_for("the peer to record the shutdown", || {
        let recorded = b
            .recent_disconnects()
            .iter()
            .any(|d| d["ip"] == a_ip.as_str() && d["reason"] == "shutdown" && d["by_peer"] == true);
        (recorded && b.peers().is_empty()).then_some(())
    });
    assert!(a.log().contains("shutting down"), "{}", a.log());
}

#[test]
fn admin_connect_and_disconnect() {
    let (a_ip, b_ip) = (ip("127.0.1.9"), ip("127.0.1.10"));
    let a = Node::start(a_ip, free_port(a_ip), &[], FAST_PINGS);
    let b = Node::start(b_ip, free_port(b_ip), &[], FAST_PINGS);
    assert!(a.peers().is_empty());
    let reply = a
        .post_json(
            "/connect",
            serde_json::json!({"addr": b.listen.to_string()}),
        )
        .expect("POST /connect");
    assert_eq!(reply["dialling"], b.listen.to_string());
    wait_for("the dialled connection", || {
        (a.peers().len() == 1 && b.peers().len() == 1).then_some(())
    });
    match a.post_json("/connect", serde_json::json!({"addr": "not-an-address"})) {
        Err(HttpError::Status(400)) => {}
        other => panic!("expected 400, got {other:?}"),
    }
    a.post_json(&format!("/peers/{b_ip}/disconnect"), Value::Null)
        .expect("POST disconnect");
    wait_for("the peer to record the requested disconnect", || {
        b.recent_disconnects()
            .iter()
            .any(|d| d["ip"] == a_ip.to_string() && d["reason"] == "requested")
            .then_some(())
    });
    match a.post_json("/peers/127.0.1.99/disconnect", Value::Null) {
        Err(HttpError::Status(404)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
}

#[test]
fn token_protects_every_endpoint() {
    let ip = ip("127.0.1.8");
    let config = format!("{FAST_PINGS}\n[admin]\ntoken = \"s3cret\"\n");
    let node = Node::start(ip, free_port(ip), &[], &config);
    for path in ["/status", "/peers", "/metrics"] {
        let url = format!("{}{path}", node.admin);
        match ureq::get(&url).call() {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("{path} without token: expected 401, got {other:?}"),
        }
        match ureq::get(&url).set("Authorization", "Bearer wrong").call() {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("{path} with a wrong token: expected 401, got {other:?}"),
        }
        let ok = ureq::get(&url)
            .set("Authorization", "Bearer s3cret")
            .call()
            .unwrap_or_else(|e| panic!("{path} with token: {e}"));
        assert_eq!(ok.status(), 200);
    }
    match ureq::post(&format!("{}/connect", node.admin))
        .send_json(serde_json::json!({"addr": "127.0.1.8:1"}))
    {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("POST /connect without token: expected 401, got {other:?}"),
    }

    // The CLI reads the same API.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_peerlink"))
            .args(args)
            .env_remove("PEERLINK_ADMIN_TOKEN")
            .output()
            .expect("run peerlink");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (st, out, err) = cli(&["status", "--admin", &node.admin, "--token", "s3cret"]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("devnet") && out.contains(&node.listen.to_string()),
        "{out}"
    );
    let (st, out, err) = cli(&[
        "peers",
        "--admin",
        &node.admin,
        "--token",
        "s3cret",
        "--json",
    ]);
    assert!(st.success(), "{err}");
    let json: Value = serde_json::from_str(&out).expect("peers --json prints JSON");
    assert!(json["peers"].as_array().is_some_and(|p| p.is_empty()));
    let (st, _, err) = cli(&["status", "--admin", &node.admin]);
    assert!(!st.success());
    assert!(err.contains("401"), "{err}");
}

/// Runs `peerlink` with `args` (expected to fail fast); returns its status and stderr.
fn run_expecting_exit(args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerlink"))
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peerlink");
    let mut guard = ChildGuard(Some(child.stderr.take().expect("stderr")), child);
    let status = wait_for(&format!("peerlink {args:?} to exit"), || {
        guard.1.try_wait().expect("try_wait")
    });
    let mut stderr = String::new();
    if let Some(mut pipe) = guard.0.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}

/// Kills the child on drop.
struct ChildGuard(Option<std::process::ChildStderr>, Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    let ip = ip("127.0.1.6");
    let listen = format!("{ip}:{}", free_port(ip));
    let admin = format!("{ip}:{}", free_port(ip));
    let dir = tempfile::tempdir().expect("tempdir");
    let base = |config: &PathBuf| {
        vec![
            "run".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            listen.clone(),
            "--admin".into(),
            admin.clone(),
        ]
    };
    let check = |args: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, stderr) = run_expecting_exit(&args);
        assert!(!status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: `{n}` not in: {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    };

    // Unknown key: file, line and key.
    let unknown = write_config(&dir, "[network]\nping_interval_ms = 200\nbogus_key = 1\n");
    check(
        base(&unknown),
        &[&format!("{}:3:", unknown.display()), "bogus_key"],
    );
    // Wrong type: file, line and the dotted key.
    let bad_type = write_config(&dir, "[node]\n\n[network]\nping_interval_ms = \"fast\"\n");
    check(
        base(&bad_type),
        &[
            &format!("{}:4:", bad_type.display()),
            "network.ping_interval_ms",
        ],
    );
    // Inconsistent values: the key and its line.
    let invalid = write_config(
        &dir,
        "[network]\nping_interval_ms = 500\nping_timeout_ms = 10\n",
    );
    check(
        base(&invalid),
        &[
            &format!("{}:3:", invalid.display()),
            "network.ping_timeout_ms",
        ],
    );
    // Unreadable file.
    check(
        vec![
            "run".into(),
            "--config".into(),
            "/nonexistent/peerlink.toml".into(),
        ],
        &["/nonexistent/peerlink.toml", "cannot read"],
    );
    // Malformed peer address.
    check(
        vec![
            "run".into(),
            "--listen".into(),
            listen.clone(),
            "--peer".into(),
            "nonsense".into(),
        ],
        &["malformed address `nonsense`"],
    );
    // Admin API on a non-loopback address without a token.
    let empty = write_config(&dir, "");
    let mut args = base(&empty);
    args[6] = "0.0.0.0:0".into();
    check(args, &["admin.token", "requires a token"]);

    // Listen address in use.
    let busy = TcpListener::bind((ip, 0)).expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let mut args = base(&empty);
    args[4] = busy_addr.clone();
    check(args, &[&format!("cannot listen on {busy_addr}"), "in use"]);
    // Admin address in use.
    let mut args = base(&empty);
    args[6] = busy_addr.clone();
    check(args, &[&format!("admin API on {busy_addr}"), "in use"]);
}
