//! Shared harness of the end-to-end tests of the `peerlink` binary: real `peerlink run`
//! processes (killed when their guard drops), free ports found by binding port 0, conditions
//! awaited by polling the admin API with a bounded deadline, never fixed sleeps, and a parser
//! for the Prometheus text of `/metrics`. Each suite uses its own 127.0.x.y range.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any awaited condition may take.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Short liveness timings so that pongs move within a test.
pub const FAST_PINGS: &str = "[network]\nping_interval_ms = 200\nping_timeout_ms = 3000\n\
                          dial_tick_ms = 50\nbackoff_base_ms = 100\nsession_threads = 1\n";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid test IP")
}

/// A port that was free on `ip` a moment ago and that this test process has not handed out
/// before: the kernel may give a just-released port again, so without the record a node's
/// listen and admin ports (two calls in a row) could be the same port, and the node would exit
/// at start with "address in use".
pub fn free_port(ip: IpAddr) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<(IpAddr, u16)>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot bind {ip}:0: {e}"));
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert((ip, port)) {
            return port;
        }
    }
}

/// Polls `f` until it returns `Some`, for at most [`DEADLINE`].
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_within(what, DEADLINE, f)
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_within<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A failed admin request: an HTTP status, or no answer at all.
#[derive(Debug)]
pub enum HttpError {
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
pub struct Node {
    /// The process, until it is terminated or killed.
    pub child: Option<Child>,
    /// Its peer listen address.
    pub listen: SocketAddr,
    /// Base URL of its admin API.
    pub admin: String,
    /// Its admin token, if the config sets one.
    pub token: Option<String>,
    /// Its config, log and (by default) data directory.
    pub dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node listening on `ip` (fresh ports), dialling `peers`, with `config` as its
    /// config file.
    pub fn start(ip: IpAddr, listen_port: u16, peers: &[SocketAddr], config: &str) -> Node {
        Node::start_with(ip, listen_port, peers, config, None, &[])
    }

    /// Like [`Node::start`], with the data directory `data_dir` (default: inside the node's
    /// temp dir) and `extra` arguments after `run`. The log is appended to, so a restarted
    /// node's earlier runs stay readable.
    pub fn start_with(
        ip: IpAddr,
        listen_port: u16,
        peers: &[SocketAddr],
        config: &str,
        data_dir: Option<&std::path::Path>,
        extra: &[&str],
    ) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config).expect("write config");
        let listen = SocketAddr::new(ip, listen_port);
        let admin = SocketAddr::new(ip, free_port(ip));
        let data = data_dir.map_or_else(|| dir.path().join("data"), |d| d.to_path_buf());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerlink"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(data)
            .args(extra);
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

    /// SIGKILL: the process dies at once, without any shutdown; waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    /// `/status` as JSON.
    pub fn status(&self) -> Value {
        self.get_json("/status")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Panics with the node's log if the process has exited.
    pub fn assert_running(&mut self) {
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
    pub fn get(&self, path: &str) -> Result<String, HttpError> {
        let mut req = ureq::get(&format!("{}{path}", self.admin)).timeout(Duration::from_secs(5));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        Ok(req.call()?.into_string().expect("utf-8 body"))
    }

    pub fn get_json(&self, path: &str) -> Value {
        let body = self
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e:?}\n{}", self.listen, self.log()));
        serde_json::from_str(&body).expect("JSON body")
    }

    pub fn post_json(&self, path: &str, body: Value) -> Result<Value, HttpError> {
        let resp = ureq::post(&format!("{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send_json(body)?;
        Ok(resp.into_json().expect("JSON body"))
    }

    pub fn peers(&self) -> Vec<Value> {
        self.get_json("/peers")["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn recent_disconnects(&self) -> Vec<Value> {
        self.get_json("/peers")["recent_disconnects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status; returns it and the time it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
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
pub fn connected_pair(a: &str, b: &str) -> (Node, Node) {
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
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Value.
    pub value: f64,
}

/// Parses Prometheus/OpenMetrics text line by line; panics on any malformed sample line.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
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
