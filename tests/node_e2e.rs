//! End-to-end tests of the `peerlink` binary: real processes on distinct 127.0.1.x addresses
//! (this suite's range, so it can run beside the others), free ports found by binding port 0,
//! conditions awaited by polling the admin API with a bounded deadline, never fixed sleeps.
//! Every child process is killed when its guard drops, so a failing test leaves nothing running.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The documented shutdown bound (`peerlink::node::SHUTDOWN_DEADLINE`).
const SHUTDOWN_BOUND: Duration = peerlink::node::SHUTDOWN_DEADLINE;

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
    // A fresh chain: genesis only, the same on both ends (same network, same genesis).
    assert_eq!(status["height"], 0);
    assert_eq!(status["sync_state"], "synced");
    assert_eq!(status["tip"].as_str().map(str::len), Some(64));
    assert_eq!(status["tip"], b.get_json("/status")["tip"]);
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
    a.post_json(&format!("/peers/{b_ip}/disconnect"), serde_json::json!({}))
        .expect("POST disconnect");
    wait_for("the peer to record the requested disconnect", || {
        b.recent_disconnects()
            .iter()
            .any(|d| d["ip"] == a_ip.to_string() && d["reason"] == "requested")
            .then_some(())
    });
    match a.post_json("/peers/127.0.1.99/disconnect", serde_json::json!({})) {
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
