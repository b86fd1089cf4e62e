//! Scenarios (e) memory per idle session and (f) handshakes per second. Each measurement runs
//! the server (a peerlink node, or the raw tokio baseline server) in a child process of its
//! own, so that its RSS is not polluted by earlier scenarios and its file descriptors fit the
//! limit; the clients run here, raw tokio sockets speaking the handshake by hand, each bound to
//! its own 127.x.y.z source address because peers are keyed by IP.
//!
//! The child prints `addr <listen address>` once it is ready and `result key=value ...` once
//! every session is registered; the parent times the run from its first connect to the child's
//! registration of the last one, on CLOCK_MONOTONIC which both processes share.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use peerlink_actors::secure::{handshake, NodeKey, SecureRead, SecureWrite};
use peerlink_actors::wire::{Frame, Hello, HelloPolicy};
use peerlink_actors::wire::{
    MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION, READ_BUFFER_INITIAL_BYTES,
};
use peerlink_actors::{Network, NetworkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::common::{
    client_ip, heap_in_use_bytes, monotonic_ns, raise_fd_limit, rss_bytes, CpuMeter, CpuUse, Tally,
};
use crate::peer::{in_actix, Sink};
use crate::raw::{connect_from, in_tokio};

/// Handshakes the clients keep in flight at once.
const CLIENT_WINDOW: usize = 32;
/// Bound of any wait for the child.
const CHILD_WAIT: Duration = Duration::from_secs(90);

/// Which server a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// A peerlink node.
    Peerlink,
    /// The raw tokio baseline server.
    Baseline,
}

impl Server {
    /// Name used on the child's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Server::Peerlink => "peerlink",
            Server::Baseline => "baseline",
        }
    }
}

/// What one child run measured.
#[derive(Debug, Clone, Copy)]
pub struct SessionsResult {
    /// RSS growth per registered idle session, bytes.
    pub bytes_per_session: f64,
    /// Growth of the heap in use (live allocations) per session, bytes.
    pub heap_per_session: f64,
    /// Connections opened, handshaken and registered per second.
    pub handshakes_per_sec: f64,
    /// CPU seconds per wall second of the server process while the sessions came in.
    pub server_cores: f64,
    /// Server threads busy at least a quarter of that time.
    pub busy_threads: usize,
    /// CPU seconds per wall second of this (client) process meanwhile.
    pub client_cores: f64,
}

/// Runs one child server, connects `n` clients from the 127.`block`.x.y block, and collects
/// the measurements.
pub fn measure(server: Server, n: usize, block: u8) -> Result<SessionsResult, String> {
    raise_fd_limit();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // Profiling hook: `PEERLINK_BENCH_CHILD_WRAPPER=heaptrack` runs every server child under
    // that command (e.g. a heap profiler); lines it prints are ignored.
    let mut command = match std::env::var_os("PEERLINK_BENCH_CHILD_WRAPPER") {
        Some(wrapper) => {
            let mut c = Command::new(wrapper);
            c.arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = command
        .args(["--child", server.as_str(), "--n", &n.to_string()])
        .args(["--transport", crate::common::transport_name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start child: {e}"))?;
    let out = measure_with(&mut child, n, block);
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

fn measure_with(child: &mut Child, n: usize, block: u8) -> Result<SessionsResult, String> {
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = |prefix: &str| -> Result<String, String> {
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
    let addr: SocketAddr = line("addr ")?
        .parse()
        .map_err(|e| format!("bad addr: {e}"))?;
    // Each client is a new node with a key of its own, made before the clock starts: a node
    // creates its key once, at its first start, not per handshake.
    let keys: Vec<NodeKey> = if crate::common::noise() {
        (0..n).map(|_| NodeKey::generate()).collect()
    } else {
        Vec::new()
    };
    let start_ns = monotonic_ns();
    let meter = CpuMeter::start();
    let (clients, client_cpu) = run_clients(addr, n, block, keys, &meter)?;
    let result = line("result ");
    drop(clients);
    let fields: HashMap<String, f64> = result?
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    let get = |k: &str| fields.get(k).copied().ok_or(format!("no {k} in result"));
    let end_ns = get("end_ns")?;
    let secs = (end_ns - start_ns as f64) / 1e9;
    Ok(SessionsResult {
        bytes_per_session: (get("rss1")? - get("rss0")?) / n as f64,
        heap_per_session: (get("heap1")? - get("heap0")?) / n as f64,
        handshakes_per_sec: n as f64 / secs.max(1e-9),
        server_cores: get("cores")?,
        busy_threads: get("busy")? as usize,
        client_cores: client_cpu.cores,
    })
}

/// The Hello every client sends (nonce varies per client).
fn client_hello(nonce: u64) -> Bytes {
    Frame::Hello(Hello {
        magic: NetworkConfig::default().magic.to_be_bytes(),
        version: PROTOCOL_VERSION,
        genesis: [0; 32],
        nonce,
        listen_port: 0,
        best_height: 0,
        user_agent: "peerlink-bench".into(),
    })
    .encode()
}

/// Opens `n` connections, each from its own source IP, sends a Hello and reads the server's.
/// Returns the sockets, which stay open (and idle) until dropped, and the clients' CPU use since
/// `meter` started (read while the client threads still exist).
/// The clients run on two worker threads (one per core): on one thread their own handshake
/// work (a Noise handshake costs the initiator as much as the responder) capped the figure
/// below what the server can do.
fn run_clients(
    addr: SocketAddr,
    n: usize,
    block: u8,
    keys: Vec<NodeKey>,
    meter: &CpuMeter,
) -> Result<(Vec<std::net::TcpStream>, CpuUse), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let streams = rt.block_on(async move {
        let window = Arc::new(Semaphore::new(CLIENT_WINDOW));
        let mut set = tokio::task::JoinSet::new();
        let mut keys = keys.into_iter();
        for i in 0..n {
            let key = keys.next();
            let permit = window
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            set.spawn(async move {
                let r = tokio::time::timeout(Duration::from_secs(30), client(addr, i, block, key))
                    .await;
                drop(permit);
                r.map_err(|_| format!("client {i} timed out"))?
            });
        }
        let mut streams = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            streams.push(r.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(streams)
    })?;
    let (_, cpu) = meter.stop();
    Ok((streams, cpu))
}

async fn client(
    addr: SocketAddr,
    i: usize,
    block: u8,
    key: Option<NodeKey>,
) -> Result<std::net::TcpStream, String> {
    let mut s = connect_from(client_ip(block, i), addr).await?;
    // Over Noise: the handshake (initiator, a fresh key per client, as a new node would), then
    // the Hello inside the channel.
    let (send, recv) = if let Some(key) = key {
        let est = handshake(&mut s, &key, true)
            .await
            .map_err(|e| e.to_string())?;
        (Some(est.send), Some(est.recv))
    } else {
        (None, None)
    };
    let mut out = SecureWrite::new(Vec::new(), send);
    out.write_all(&client_hello(0x5eed_0000_0000 + i as u64))
        .await
        .map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;
    s.write_all(out.get_ref())
        .await
        .map_err(|e| e.to_string())?;
    let mut rd = SecureRead::new(&mut s, recv);
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_HANDSHAKE_FRAME_BYTES {
        return Err(format!("server hello of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    drop(rd);
    match Frame::decode(Bytes::from(body)).map_err(|e| e.to_string())? {
        Frame::Hello(_) => {}
        other => return Err(format!("client {i}: server sent {}", other.kind())),
    }
    s.into_std().map_err(|e| e.to_string())
}

/// Child entry point: runs the server, prints `addr` then `result`, exits.
pub fn child_main(server: Server, n: usize) -> Result<(), String> {
    raise_fd_limit();
    match server {
        Server::Peerlink => in_actix(move || peerlink_server(n)),
        Server::Baseline => in_tokio(baseline_server(n)),
    }
}

/// RSS and heap in use before the sessions come in.
struct Before {
    rss: u64,
    heap: u64,
}

fn report_ready(addr: SocketAddr) -> Result<(Before, CpuMeter), String> {
    std::thread::sleep(Duration::from_millis(100));
    let before = Before {
        rss: rss_bytes()?,
        heap: heap_in_use_bytes(),
    };
    let meter = CpuMeter::start();
    println!("addr {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    Ok((before, meter))
}

async fn wait_registered(n: u64, count: impl Fn() -> u64) -> Result<u64, String> {
    let deadline = Instant::now() + CHILD_WAIT;
    while count() < n {
        if Instant::now() > deadline {
            return Err(format!("{} of {n} sessions registered", count()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(monotonic_ns())
}

fn report_result(end_ns: u64, before: &Before, meter: &CpuMeter) -> Result<(), String> {
    let (_, cpu) = meter.stop();
    std::thread::sleep(Duration::from_millis(300));
    let rss1 = rss_bytes()?;
    let heap1 = heap_in_use_bytes();
    println!(
        "result end_ns={end_ns} rss0={} rss1={rss1} heap0={} heap1={heap1} cores={:.3} busy={}",
        before.rss, before.heap, cpu.cores, cpu.busy_threads
    );
    std::io::stdout().flush().map_err(|e| e.to_string())
}

async fn peerlink_server(n: usize) -> Result<(), String> {
    let config = NetworkConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_inbound: n + 100,
        max_pending_handshakes: 1024,
        ping_interval_ms: 120_000,
        ping_timeout_ms: 360_000,
        handshake_timeout_ms: 30_000,
        transport: crate::common::transport(),
        // The benchmark's topology is what it dials; no address gossip or extra dials.
        discovery: false,
        ..NetworkConfig::default()
    };
    let app = actix::Actor::start(Sink::new(Arc::new(Tally::default()), None));
    let net: Network<crate::common::BenchMsg> = Network::start(config, app.recipient())
        .await
        .map_err(|e| e.to_string())?;
    let (before, meter) = report_ready(net.local_addr())?;
    let connects = net
        .metrics()
        .connects
        .get_or_create(&vec![("direction", "inbound")])
        .clone();
    let end_ns = wait_registered(n as u64, || connects.get()).await?;
    report_result(end_ns, &before, &meter)?;
    // Exit without closing 10,000 sessions one by one: the parent closes its side.
    std::process::exit(0)
}

async fn baseline_server(n: usize) -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let registered = Arc::new(AtomicU64::new(0));
    // The registry: one task owning the map IP -> connection id, like the registry actor.
    let (reg_tx, mut reg_rx) = mpsc::unbounded_channel::<(IpAddr, u64)>();
    let counter = registered.clone();
    tokio::spawn(async move {
        let mut map = HashMap::new();
        while let Some((ip, id)) = reg_rx.recv().await {
            map.insert(ip, id);
            counter.store(map.len() as u64, Ordering::Release);
        }
    });
    let policy = HelloPolicy {
        magic: NetworkConfig::default().magic.to_be_bytes(),
        genesis: [0; 32],
    };
    let our_hello = client_hello(1);
    let key = crate::common::noise().then(NodeKey::generate);
    tokio::spawn(async move {
        let mut next_id = 0u64;
        while let Ok((stream, peer)) = listener.accept().await {
            next_id += 1;
            let (id, reg, policy, hello) =
                (next_id, reg_tx.clone(), policy.clone(), our_hello.clone());
            let key = key.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream.set_nodelay(true);
                // The same cipher as peerlink's transport, driven by plain tokio tasks.
                let (send, recv) = match &key {
                    Some(key) => match handshake(&mut stream, key, false).await {
                        Ok(est) => (Some(est.send), Some(est.recv)),
                        Err(_) => return,
                    },
                    None => (None, None),
                };
                let (rd, wr) = stream.into_split();
                let (rd, mut wr) = (SecureRead::new(rd, recv), SecureWrite::new(wr, send));
                if wr.write_all(&hello).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
                let codec = LengthDelimitedCodec::builder()
                    .max_frame_length(MAX_HANDSHAKE_FRAME_BYTES)
                    .new_codec();
                let mut frames = FramedRead::with_capacity(rd, codec, READ_BUFFER_INITIAL_BYTES);
                let Some(Ok(first)) = frames.next().await else {
                    return;
                };
                match Frame::decode(first.freeze()) {
                    Ok(Frame::Hello(h)) if policy.check(&h).is_ok() => {}
                    _ => return,
                }
                let _ = reg.send((peer.ip(), id));
                // Idle: read until the peer closes.
                while let Some(Ok(_)) = frames.next().await {}
                drop(wr);
            });
        }
    });
    let (before, meter) = report_ready(addr)?;
    let end_ns = wait_registered(n as u64, || registered.load(Ordering::Acquire)).await?;
    report_result(end_ns, &before, &meter)?;
    std::process::exit(0)
}
