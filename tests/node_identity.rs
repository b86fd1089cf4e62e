//! The node's identity end to end, with real `peerlink` processes on 127.0.5.x: `peerlink id`
//! creates the key file (mode 0600) and prints the public key; a node keeps that key across
//! restarts and shows it in `/status`; peers see each other's keys in `/peers`, a pinned
//! `KEYHEX@IP:PORT` entry connects; a key file with loose permissions stops the node with one
//! clear line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;

fn peerlink_id(data_dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peerlink"))
        .arg("id")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run peerlink id");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert_eq!(key.len(), 64, "{key}");
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    key
}

#[test]
fn identity_persists_and_peers_see_keys() {
    let data = tempfile::tempdir().expect("tempdir");
    let key = peerlink_id(data.path());
    let key_file = data.path().join("node.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(peerlink_id(data.path()), key, "id is stable");

    let a_ip = ip("127.0.5.2");
    let a_port = free_port(a_ip);
    let mut a = Node::start_with(a_ip, a_port, &[], FAST_PINGS, Some(data.path()), &[]);
    let status = a.get_json("/status");
    assert_eq!(status["node_key"], key.as_str());
    assert_eq!(status["transport"], "noise");
    let (exit, _) = a.terminate();
    assert!(exit.success());
    // Same data dir, same identity.
    let a = Node::start_with(a_ip, a_port, &[], FAST_PINGS, Some(data.path()), &[]);
    assert_eq!(a.get_json("/status")["node_key"], key.as_str());

    // B pins A's key and connects; each side lists the other's key.
    let b_ip = ip("127.0.5.3");
    let pinned = format!("{key}@{}", a.listen);
    let b = Node::start_with(
        b_ip,
        free_port(b_ip),
        &[],
        FAST_PINGS,
        None,
        &["--peer", &pinned],
    );
    let b_key = b.get_json("/status")["node_key"]
        .as_str()
        .expect("b's key")
        .to_string();
    wait_for("b connected to a with a's key", || {
        let peers = b.peers();
        (peers.len() == 1 && peers[0]["key"] == key.as_str()).then_some(())
    });
    wait_for("a lists b's key", || {
        let peers = a.peers();
        (peers.len() == 1 && peers[0]["key"] == b_key.as_str()).then_some(())
    });
    assert!(a.log().contains(&key), "a logs its key");
}

struct Output {
    status: std::process::ExitStatus,
    stderr: String,
}

#[test]
fn a_key_file_with_loose_permissions_is_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    peerlink_id(data.path());
    let key_file = data.path().join("node.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let node_ip = ip("127.0.5.4");
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerlink"))
        .arg("run")
        .arg("--listen")
        .arg(format!("{node_ip}:{}", free_port(node_ip)))
        .arg("--admin")
        .arg(format!("{node_ip}:{}", free_port(node_ip)))
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run peerlink");
    // Bounded: a node that started anyway is killed when the wait fails.
    let status = wait_for("peerlink run to refuse the key", || {
        let exited = child.try_wait().expect("try_wait");
        if exited.is_none() && std::time::Instant::now() > started + DEADLINE / 2 {
            let _ = child.kill();
        }
        exited
    });
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let out = Output { status, stderr };
    assert!(!out.status.success());
    let stderr = &out.stderr;
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(
        last.contains("node.key") && last.contains("644"),
        "{stderr}"
    );
    assert!(last.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The key was left as it was: the operator decides.
    let mode = std::fs::metadata(&key_file)
        .expect("key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
}
