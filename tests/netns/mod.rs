//! Multi-host harness for the fault tests: network namespaces joined by veth pairs to a bridge
//! in a hub namespace, real `peerlink run` processes inside them (`ip netns exec`), faults
//! injected per host with nftables (no netem in this kernel): a cut drops every packet to and
//! from the lab's subnet, loss drops `numgen random mod 100 < N`, a partition drops the other
//! side's addresses.
//!
//! Isolation: every lab has its own namespaces, named from the process id and a counter, so
//! that tests run in parallel; addresses (10.213.0.0/24) exist only inside those namespaces and
//! are never routed anywhere; [`Lab`]'s `Drop` kills the lab's processes and deletes its
//! namespaces (which deletes the veths) even when the test panics. Admin APIs listen on each
//! namespace's own loopback and are queried from a thread that joined the namespace
//! (`setns`), so the host's network is never touched.
//!
//! Needs root, `ip` and `nft`. Without them [`Lab::new`] returns `None` after saying why, and
//! the test returns; with `PEERLINK_REQUIRE_NETNS=1` (set by `.ci/run`) it panics instead, so
//! CI can never skip them silently.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Port every node listens on for peers (each host has its own address).
pub const PEER_PORT: u16 = 7700;
/// Port of every node's admin API, on its namespace's own loopback.
pub const ADMIN_PORT: u16 = 7701;

static LABS: AtomicUsize = AtomicUsize::new(0);

/// Runs `cmd args`; panics with its stderr if it fails.
fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why namespace tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        if !run_ok(tool, &[arg]) {
            return Some(format!(
                "`{tool}` is missing (apt-get install iproute2 nftables)"
            ));
        }
    }
    let probe = format!(
        "plprobe{}x{}",
        std::process::id(),
        LABS.fetch_add(1, Ordering::Relaxed)
    );
    if !run_ok("ip", &["netns", "add", &probe]) {
        return Some("`ip netns add` fails".into());
    }
    let nft_ok = run_ok(
        "ip",
        &[
            "netns", "exec", &probe, "nft", "add", "table", "inet", "probe",
        ],
    );
    run_ok("ip", &["netns", "del", &probe]);
    (!nft_ok).then(|| "nftables does not work inside a namespace".into())
}

/// One host of a lab: a namespace with one veth into the hub's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// The host's address inside the lab.
    pub ip: Ipv4Addr,
}

impl Host {
    /// The address its node listens on for peers.
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.into(), PEER_PORT)
    }

    /// Runs `f` on a thread that joined this host's network namespace.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// GET `path` from this host's admin API as JSON; `None` when it does not answer.
    pub fn admin_get(&self, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{ADMIN_PORT}{path}");
        self.within(move || {
            ureq::get(&url)
                .timeout(Duration::from_secs(3))
                .call()
                .ok()?
                .into_json()
                .ok()
        })
    }

    /// Applies an nftables script inside the namespace.
    pub fn nft(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write nft script");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops every packet between this host and `peers` (both directions) in a `fault` table
    /// that replaces any earlier fault of this host: no FIN, no RST, the link just goes silent.
    pub fn drop_to(&self, peers: &[Ipv4Addr]) {
        let set: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let set = set.join(", ");
        self.nft(&format!(
            "table inet fault\ndelete table inet fault\ntable inet fault {{\n\
             chain inbound {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
             chain outbound {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n}}\n"
        ));
    }

    /// Drops `percent` % of this host's lab packets at random, both directions.
    pub fn lose(&self, percent: u32) {
        self.nft(&format!(
            "table inet fault\ndelete table inet fault\ntable inet fault {{\n\
             chain inbound {{ type filter hook input priority 0; ip saddr 10.213.0.0/24 numgen random \
             mod 100 < {percent} counter drop; }}\n\
             chain outbound {{ type filter hook output priority 0; ip daddr 10.213.0.0/24 numgen \
             random mod 100 < {percent} counter drop; }}\n}}\n"
        ));
    }

    /// Packets dropped so far by this host's fault rules that count (`lose`).
    pub fn dropped_packets(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "nft", "list", "table", "inet", "fault",
            ])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }

    /// Removes this host's faults.
    pub fn heal(&self) {
        self.nft("table inet fault\ndelete table inet fault\n");
    }
}

/// A set of hosts on one bridge; removed on drop.
pub struct Lab {
    hub: String,
    /// The hosts, addresses 10.213.0.1, .2, ...
    pub hosts: Vec<Host>,
}

impl Lab {
    /// Creates `n` hosts, or returns `None` (after printing why) where namespaces cannot be
    /// used; panics instead when `PEERLINK_REQUIRE_NETNS=1`.
    pub fn new(n: usize) -> Option<Lab> {
        if let Some(why) = unavailable() {
            if std::env::var("PEERLINK_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("namespace tests required but unavailable: {why}");
            }
            eprintln!("SKIPPED: namespace tests need root, ip and nft: {why}");
            return None;
        }
        let id = format!(
            "pl{}x{}",
            std::process::id() % 100_000,
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{id}h");
        // From here on, Drop removes whatever was created.
        let mut lab = Lab {
            hub: hub.clone(),
            hosts: Vec::new(),
        };
        run("ip", &["netns", "add", &hub]);
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{id}n{i}");
            let ip = Ipv4Addr::new(10, 213, 0, i as u8 + 1);
            run("ip", &["netns", "add", &ns]);
            lab.hosts.push(Host { ns: ns.clone(), ip });
            let (a, b) = (format!("{id}a{i}"), format!("{id}b{i}"));
            run(
                "ip",
                &[
                    "link", "add", &a, "netns", &ns, "type", "veth", "peer", "name", &b, "netns",
                    &hub,
                ],
            );
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", &a],
            );
            // Wire-sized packets: without this, GSO/GRO hand nftables 64 KiB super-packets and
            // "5 % of packets" would mean a few huge losses.
            for (n, dev) in [(&ns, &a), (&hub, &b)] {
                run(
                    "ip",
                    &[
                        "-n",
                        n,
                        "link",
                        "set",
                        dev,
                        "gso_max_size",
                        "1500",
                        "gro_max_size",
                        "1500",
                    ],
                );
            }
            run("ip", &["-n", &ns, "link", "set", &a, "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &["-n", &hub, "link", "set", &b, "master", "br0", "up"],
            );
        }
        Some(lab)
    }

    /// Addresses of the hosts with the given indices.
    pub fn ips(&self, which: &[usize]) -> Vec<Ipv4Addr> {
        which.iter().map(|&i| self.hosts[i].ip).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            // Any process still inside (a node a panicking test did not stop) dies first.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &h.ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = run_ok("ip", &["netns", "del", &h.ns]);
        }
        let _ = run_ok("ip", &["netns", "del", &self.hub]);
    }
}

/// A `peerlink run` process inside a host's namespace; killed on drop.
pub struct NsNode {
    /// The host it runs on.
    pub host: Host,
    /// The process (its pid is peerlink's: `ip netns exec` execs it).
    pub child: Option<Child>,
    /// Data directory (kept across restarts).
    pub data: PathBuf,
    dir: PathBuf,
}

impl NsNode {
    /// Starts `peerlink run` on `host` with `config` (TOML text), dialling `peers`, with
    /// `extra` arguments; waits until its admin API answers.
    pub fn start(
        host: &Host,
        dir: &Path,
        config: &str,
        peers: &[SocketAddr],
        extra: &[&str],
    ) -> NsNode {
        std::fs::create_dir_all(dir).expect("node dir");
        let config_path = dir.join("node.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut node = NsNode {
            host: host.clone(),
            child: None,
            data: dir.join("data"),
            dir: dir.to_path_buf(),
        };
        node.spawn(peers, extra);
        node
    }

    /// (Re)starts the process with the same config and data.
    pub fn spawn(&mut self, peers: &[SocketAddr], extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.host.ns,
            env!("CARGO_BIN_EXE_peerlink"),
            "run",
        ])
        .arg("--config")
        .arg(self.dir.join("node.toml"))
        .arg("--listen")
        .arg(self.host.peer_addr().to_string())
        .arg("--admin")
        .arg(format!("127.0.0.1:{ADMIN_PORT}"))
        .arg("--data-dir")
        .arg(&self.data)
        .args(["--producer", crate::producer::key_hex()])
        .args(extra);
        crate::producer::install(&self.data);
        for p in peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        self.child = Some(cmd.spawn().expect("spawn peerlink in a namespace"));
        let what = format!("admin API of {}", self.host.ip);
        wait_within(&what, Duration::from_secs(20), || {
            self.assert_running();
            self.host.admin_get("/status")
        });
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, signal: &str) {
        run("kill", &[&format!("-{signal}"), &self.pid().to_string()]);
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("node {} exited ({status}):\n{}", self.host.ip, self.log());
            }
        }
    }

    /// `/status`.
    pub fn status(&self) -> Value {
        self.host
            .admin_get("/status")
            .unwrap_or_else(|| panic!("no /status from {}:\n{}", self.host.ip, self.log()))
    }

    /// `/peers`.
    pub fn peers_report(&self) -> Value {
        self.host
            .admin_get("/peers")
            .unwrap_or_else(|| panic!("no /peers from {}:\n{}", self.host.ip, self.log()))
    }

    /// Registered peers.
    pub fn peers(&self) -> Vec<Value> {
        self.peers_report()["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Height and tip.
    pub fn tip(&self) -> (u64, String) {
        let s = self.status();
        (
            s["height"].as_u64().unwrap_or(0),
            s["tip"].as_str().unwrap_or_default().to_string(),
        )
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // A stopped process must be continued to die cleanly from SIGKILL's point of view
            // too (it dies either way; CONT keeps `wait` prompt).
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- log of node {} ----\n{}", self.host.ip, self.log());
        }
    }
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

/// Builds a chain of `blocks` blocks of `bytes` random bytes in `data` offline.
pub fn produce_offline(data: &Path, blocks: u64, bytes: usize) {
    crate::producer::install(data);
    let status = Command::new(env!("CARGO_BIN_EXE_peerlink"))
        .args(["produce", "--blocks", &blocks.to_string(), "--block-bytes"])
        .arg(bytes.to_string())
        .arg("--data-dir")
        .arg(data)
        .args(["--producer", crate::producer::key_hex()])
        .stdout(Stdio::null())
        .status()
        .expect("run peerlink produce");
    assert!(status.success(), "peerlink produce failed");
}

/// A userspace TCP relay inside a host's namespace, for what nftables cannot do here (no
/// netem): added delay and stalls. It listens on the host's address and forwards each accepted
/// connection to `to`, so both nodes see the relay host's IP as their peer. Stalling holds the
/// bytes (nothing is closed, no FIN, no RST); resuming releases them.
pub struct Relay {
    /// Where nodes dial to go through the relay.
    pub addr: SocketAddr,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// Starts a relay on `host` port `port` forwarding to `to`.
    pub fn start(host: &Host, port: u16, to: SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::sync::Arc;
        let addr = SocketAddr::new(host.ip.into(), port);
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = host.within(move || std::net::TcpListener::bind(addr).expect("relay bind"));
        listener.set_nonblocking(true).expect("nonblocking");
        let (d, s, st, ns) = (
            delay_ms.clone(),
            stalled.clone(),
            stop.clone(),
            host.clone(),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let Ok(outbound) = ns.within(move || std::net::TcpStream::connect(to))
                        else {
                            continue;
                        };
                        let _ = inbound.set_nonblocking(false);
                        for (from, into) in [
                            (inbound.try_clone(), outbound.try_clone()),
                            (outbound.try_clone(), inbound.try_clone()),
                        ] {
                            if let (Ok(from), Ok(into)) = (from, into) {
                                let (d, s, st) = (d.clone(), s.clone(), st.clone());
                                std::thread::spawn(move || pump(from, into, &d, &s, &st));
                            }
                        }
                    }
                    // Polled so that `stop` ends the thread; 10 ms is the accept latency.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Relay {
            addr,
            delay_ms,
            stalled,
            stop,
        }
    }

    /// Delays every chunk by `delay` in each direction.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops (true) or resumes (false) forwarding, holding the bytes meanwhile.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stalled.store(false, Ordering::Relaxed);
    }
}

/// Copies `from` to `into`, chunk by chunk, after the delay and while not stalled.
fn pump(
    mut from: std::net::TcpStream,
    mut into: std::net::TcpStream,
    delay_ms: &std::sync::atomic::AtomicU64,
    stalled: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            // The injected fault itself: this chunk is late by `delay`.
            std::thread::sleep(Duration::from_millis(delay));
        }
        while stalled.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if stop.load(Ordering::Relaxed) || into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(std::net::Shutdown::Write);
}
