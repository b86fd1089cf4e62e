//! Scenarios (e) memory per idle connection and (f) handshakes per second, shaped like
//! peerlink-bench's `conns` module: the server (one libp2p swarm listening on 127.0.0.1) runs in
//! a child process of its own so that its RSS is its own; the clients run here, one swarm on a
//! two-worker runtime dialing the server `n` times (a multiaddr without a peer id always
//! dials anew), at most 32 handshakes in flight. A connection counts once the server's swarm
//! reports `ConnectionEstablished` (TCP, multistream-select, the security handshake and yamux
//! done). The parent times from its first dial to the child's last such event, on
//! CLOCK_MONOTONIC.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use tokio::sync::watch;

use crate::common::{err, in_tokio, monotonic_ns, raise_fd_limit, rss_bytes};
use crate::node::{build, listen, Sec};

/// Handshakes the clients keep in flight at once.
const CLIENT_WINDOW: usize = 32;
/// Bound of any wait for the child.
const CHILD_WAIT: Duration = Duration::from_secs(120);

/// What one child run measured.
#[derive(Debug, Clone, Copy)]
pub struct ConnsResult {
    /// RSS growth of the server per idle connection, bytes.
    pub bytes_per_conn: f64,
    /// Connections opened and upgraded per second.
    pub handshakes_per_sec: f64,
}

/// Runs one child server, connects `n` clients and collects the measurements.
pub fn measure(sec: Sec, n: usize) -> Result<ConnsResult, String> {
    raise_fd_limit();
    let exe = std::env::current_exe().map_err(err)?;
    let mut child = Command::new(exe)
        .args(["--child", sec.as_str(), "--n", &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start child: {e}"))?;
    let out = measure_with(&mut child, sec, n);
    // A child that already reported exits by itself; after a failure it is killed at once.
    let grace = if out.is_ok() { 10 } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(grace);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

fn measure_with(child: &mut Child, sec: Sec, n: usize) -> Result<ConnsResult, String> {
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = move |prefix: &str| -> Result<String, String> {
        let deadline = Instant::now() + CHILD_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l[prefix.len()..].trim().to_string()),
                Ok(l) if l.starts_with("error") => return Err(format!("child: {l}")),
                Ok(_) => continue,
                Err(_) => return Err(format!("child sent no '{prefix}' line")),
            }
        }
    };
    let addr: Multiaddr = line("addr ")?.parse().map_err(err)?;
    // Two worker threads, as peerlink-bench's clients: the swarm runs each connection's
    // upgrade (TCP, multistream-select, Noise, yamux) as a task of its own, so both cores serve
    // the dialer's handshakes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(err)?;
    let (start_ns, result) = rt.block_on(async move {
        let mut swarm = build(sec)?;
        let start_ns = monotonic_ns();
        let (mut issued, mut done) = (0usize, 0usize);
        let dials = async {
            while done < n {
                while issued < n && issued - done < CLIENT_WINDOW {
                    swarm.dial(addr.clone()).map_err(err)?;
                    issued += 1;
                }
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => done += 1,
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(format!("dial {done} of {n}: {error}"))
                    }
                    _ => {}
                }
            }
            Ok::<(), String>(())
        };
        tokio::time::timeout(CHILD_WAIT, dials)
            .await
            .map_err(|_| format!("{done} of {n} connections in {CHILD_WAIT:?}"))??;
        // Keep serving the (idle) connections until the child has measured.
        let driver = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        let result = tokio::task::spawn_blocking(move || line("result "))
            .await
            .map_err(err)?;
        driver.abort();
        Ok::<_, String>((start_ns, result))
    })?;
    let fields: HashMap<String, f64> = result?
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    let get = |k: &str| fields.get(k).copied().ok_or(format!("no {k} in result"));
    let secs = (get("end_ns")? - start_ns as f64) / 1e9;
    Ok(ConnsResult {
        bytes_per_conn: (get("rss1")? - get("rss0")?) / n as f64,
        handshakes_per_sec: n as f64 / secs.max(1e-9),
    })
}

/// Child entry point: runs the server, prints `addr` then `result`, exits.
pub fn child_main(sec: Sec, n: usize) -> Result<(), String> {
    raise_fd_limit();
    in_tokio(async move {
        let mut swarm = build(sec)?;
        let addr = listen(&mut swarm, Ipv4Addr::LOCALHOST).await?;
        let (count, mut established) = watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                    count.send_modify(|c| *c += 1);
                }
            }
        });
        // Let the runtime settle before the baseline RSS.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rss0 = rss_bytes()?;
        println!("addr {addr}");
        std::io::stdout().flush().map_err(err)?;
        let all = tokio::time::timeout(CHILD_WAIT, established.wait_for(|c| *c >= n as u64))
            .await
            .map(|r| r.is_ok());
        if all != Ok(true) {
            return Err(format!("{} of {n} connections", *established.borrow()));
        }
        let end_ns = monotonic_ns();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss1 = rss_bytes()?;
        println!("result end_ns={end_ns} rss0={rss0} rss1={rss1}");
        std::io::stdout().flush().map_err(err)?;
        // Exit without closing every connection one by one: the parent closes its side.
        std::process::exit(0)
    })
}
