//! The peerlink side of scenarios (a)-(d): real `Network` nodes on distinct 127.0.x.y
//! addresses in one process, inside a fresh actix system per scenario. The application actors
//! ([`Sink`]) run on their own Arbiter, like an application's actors would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use peerlink_actors::{Inbound, Network, NetworkConfig, PeerHandle, SendOutcome, SessionThreads};
use tokio::sync::mpsc;

use crate::common::{percentile, BenchMsg, CpuMeter, CpuUse, Tally};
use crate::Sizes;

/// Bytes queued to one peer above which the sender pauses: an eighth of the default budget,
/// so that the benchmark never trips the slow-peer rule.
const QUEUE_HIGH_WATER_BYTES: usize = 1024 * 1024;
/// Messages sent but not yet counted by the receiving application above which the sender
/// pauses (application-level flow control: actor mailboxes are unbounded).
const MAX_IN_FLIGHT: u64 = 100_000;
/// Ping interval of bench nodes: long, so that pings never disturb the throughput figures.
const DEFAULT_BENCH_PING_MS: u64 = 120_000;
/// Most rounds of broadcasts run as load while (d) samples.
const MAX_LOAD_ROUNDS: usize = 1_000;
/// Messages per `PeerHandle::send_many` call in [`Path::HandleMany`].
pub const SEND_MANY_BATCH: u64 = 64;
/// Bound of any single wait.
const WAIT: Duration = Duration::from_secs(60);

/// How a peerlink sender reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `Network::send`: looks the peer up in the registry's published map, then sends.
    Registry,
    /// `PeerHandle::send`: no registry hop.
    Handle,
    /// `PeerHandle::send_many`, [`SEND_MANY_BATCH`] messages per call (the sender batches, as
    /// the raw baseline's sender does).
    HandleMany,
}

/// The application actor of every bench node: counts data, echoes pings, forwards pongs.
pub struct Sink {
    tally: Arc<Tally>,
    pongs: Option<mpsc::UnboundedSender<u64>>,
}

impl Sink {
    /// A sink counting data into `tally` and forwarding pongs to `pongs`.
    pub fn new(tally: Arc<Tally>, pongs: Option<mpsc::UnboundedSender<u64>>) -> Sink {
        Sink { tally, pongs }
    }
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Inbound<BenchMsg>> for Sink {
    type Result = ();

    fn handle(&mut self, b: Inbound<BenchMsg>, _ctx: &mut Context<Self>) {
        for msg in b.msgs() {
            self.on_msg(&b.from, msg);
        }
    }
}

impl Sink {
    fn on_msg(&mut self, from: &PeerHandle, msg: BenchMsg) {
        match msg {
            BenchMsg::Data { .. } => self.tally.hit(),
            BenchMsg::Ping { id } => {
                let _ = from.send(&BenchMsg::Pong { id });
            }
            BenchMsg::Pong { id } => {
                if let Some(tx) = &self.pongs {
                    let _ = tx.send(id);
                }
            }
        }
    }
}

/// Runs `f` in a fresh actix system on its own thread and returns its output.
pub fn in_actix<F, Fut, T>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("bench-actix".into())
        .spawn(move || {
            let system = actix::System::new();
            let out = system.block_on(f());
            System::current().stop();
            out
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "peerlink scenario panicked".to_string())?
}

/// A node plus its application actor's tally.
struct Node {
    net: Network<BenchMsg>,
    ip: IpAddr,
}

/// The nodes of one scenario and the Arbiter their application actors run on.
struct Cluster {
    app: Arbiter,
    /// Application threads of the broadcast receivers (as many as the baseline's runtime has
    /// workers), apart from `app` so that (d)'s echo is not queued behind the load's
    /// deliveries: those peers stand for other machines.
    load_apps: [Arbiter; 2],
    /// Session threads shared by the broadcast receivers: the baseline's receivers are tasks
    /// on one two-worker runtime, and nodes in one process share session threads the same way
    /// (one thread per node would put 32 threads on two cores).
    load_sessions: SessionThreads,
    nodes: Vec<Node>,
    /// Threads of the nodes that run on one thread each ([`Cluster::add_on_one_thread`]):
    /// the application actor's Arbiter, which is also the node's session thread.
    own_threads: Vec<Arbiter>,
    /// Ping interval of the nodes added from now on.
    ping_interval_ms: u64,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            app: Arbiter::new(),
            load_apps: [Arbiter::new(), Arbiter::new()],
            load_sessions: SessionThreads::new(2),
            nodes: Vec::new(),
            own_threads: Vec::new(),
            ping_interval_ms: DEFAULT_BENCH_PING_MS,
        }
    }

    /// Starts a node that runs on one thread of its own: its application actor and its
    /// sessions share one Arbiter (`SessionThreads::on`), as each raw baseline node is one
    /// runtime on one thread. Returns the node's index and its thread.
    async fn add_on_one_thread(
        &mut self,
        ip: Ipv4Addr,
        tally: Arc<Tally>,
        pongs: Option<mpsc::UnboundedSender<u64>>,
    ) -> Result<(usize, ArbiterHandle), String> {
        let thread = Arbiter::new();
        let handle = thread.handle();
        let sink = Sink::start_in_arbiter(&handle, move |_| Sink { tally, pongs });
        let net = Network::builder(self.node_config(ip, 0))
            .session_threads(&SessionThreads::on(std::slice::from_ref(&handle)))
            .start(sink.recipient())
            .await
            .map_err(|e| format!("node {ip}: {e}"))?;
        self.own_threads.push(thread);
        self.nodes.push(Node {
            net,
            ip: IpAddr::V4(ip),
        });
        Ok((self.nodes.len() - 1, handle))
    }

    /// The configuration of every bench node on `ip`.
    fn node_config(&self, ip: Ipv4Addr, session_threads: usize) -> NetworkConfig {
        NetworkConfig {
            listen: SocketAddr::new(IpAddr::V4(ip), 0),
            session_threads,
            max_inbound: 1024,
            target_outbound: 64,
            ping_interval_ms: self.ping_interval_ms,
            ping_timeout_ms: 360_000,
            handshake_timeout_ms: 10_000,
            transport: crate::common::transport(),
            // The benchmark's topology is what it dials; no address gossip or extra dials.
            discovery: false,
            ..NetworkConfig::default()
        }
    }

    /// Starts a node on `ip` whose application actor counts into `tally` (and forwards pongs).
    async fn add(
        &mut self,
        ip: Ipv4Addr,
        session_threads: usize,
        tally: Arc<Tally>,
        pongs: Option<mpsc::UnboundedSender<u64>>,
    ) -> Result<usize, String> {
        self.add_on(false, ip, session_threads, tally, pongs).await
    }

    /// [`Cluster::add`], with the application actor on the load thread when `load`.
    async fn add_on(
        &mut self,
        load: bool,
        ip: Ipv4Addr,
        session_threads: usize,
        tally: Arc<Tally>,
        pongs: Option<mpsc::UnboundedSender<u64>>,
    ) -> Result<usize, String> {
        let app = if load {
            &self.load_apps[self.nodes.len() % 2]
        } else {
            &self.app
        };
        let sink = Sink::start_in_arbiter(&app.handle(), move |_| Sink { tally, pongs });
        let mut builder = Network::builder(self.node_config(ip, session_threads));
        if load {
            builder = builder.session_threads(&self.load_sessions);
        }
        let net = builder
            .start(sink.recipient())
            .await
            .map_err(|e| format!("node {ip}: {e}"))?;
        self.nodes.push(Node {
            net,
            ip: IpAddr::V4(ip),
        });
        Ok(self.nodes.len() - 1)
    }

    /// Node `from` dials node `to`; returns both send handles once both ends registered.
    async fn connect(&self, from: usize, to: usize) -> Result<(PeerHandle, PeerHandle), String> {
        let (a, b) = (&self.nodes[from], &self.nodes[to]);
        a.net.connect(b.net.local_addr());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let (Some(ab), Some(ba)) = (a.net.handle(b.ip), b.net.handle(a.ip)) {
                return Ok((ab, ba));
            }
            if Instant::now() > deadline {
                return Err(format!("{} and {} did not connect", a.ip, b.ip));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shutdown(self) {
        for n in &self.nodes {
            n.net.shutdown().await;
        }
        self.app.stop();
        for a in self.load_apps.iter().chain(&self.own_threads) {
            a.stop();
        }
    }
}

/// Pauses while a peer's queue is above the high-water mark (until it drains to half of it,
/// woken by the writer through `PeerHandle::drained_to`) or too many messages are in flight;
/// fails after [`WAIT`].
async fn flow_control(
    handles: &[PeerHandle],
    sent: u64,
    tally: &Tally,
    started: Instant,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::from_std(started + WAIT);
    for h in handles {
        if h.queued_bytes() > QUEUE_HIGH_WATER_BYTES {
            tokio::time::timeout_at(deadline, h.drained_to(QUEUE_HIGH_WATER_BYTES / 2))
                .await
                .map_err(|_| "flow control: peer queue did not drain".to_string())?;
        }
    }
    while sent.saturating_sub(tally.count()) > MAX_IN_FLIGHT {
        if started.elapsed() > WAIT {
            return Err("flow control: receiver stalled".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn queued(outcome: SendOutcome) -> Result<(), String> {
    match outcome {
        SendOutcome::Queued => Ok(()),
        other => Err(format!("send refused: {other:?}")),
    }
}

/// Scenarios (a) and (b): `count` messages of `size` bytes over one connection. Returns
/// messages per second received and decoded by the other node's application.
pub fn one_connection(path: Path, count: u64, size: usize) -> Result<f64, String> {
    in_actix(move || async move {
        let tally = Arc::new(Tally::default());
        let mut c = Cluster::new();
        let a = c
            .add(Ipv4Addr::new(127, 0, 1, 2), 0, tally.clone(), None)
            .await?;
        let b = c
            .add(Ipv4Addr::new(127, 0, 1, 3), 0, tally.clone(), None)
            .await?;
        let (ab, _) = c.connect(a, b).await?;
        let net = c.nodes[a].net.clone();
        let b_ip = c.nodes[b].ip;
        let handles = [ab.clone()];
        let warmup = (count / 10).clamp(1, 10_000);
        let mut sent = 0u64;
        let mut elapsed = Duration::ZERO;
        for (round, n) in [warmup, count].into_iter().enumerate() {
            let start = Instant::now();
            let mut i = 0;
            while i < n {
                if i % 64 == 0 {
                    flow_control(&handles, sent, &tally, start).await?;
                }
                match path {
                    Path::Handle => queued(
                        ab.send(&BenchMsg::data(i, size))
                            .map_err(|e| e.to_string())?,
                    )?,
                    Path::HandleMany => {
                        let k = SEND_MANY_BATCH.min(n - i);
                        let msgs: Vec<BenchMsg> =
                            (i..i + k).map(|j| BenchMsg::data(j, size)).collect();
                        queued(ab.send_many(&msgs).map_err(|e| e.to_string())?)?;
                        i += k;
                        sent += k;
                        continue;
                    }
                    Path::Registry => queued(
                        net.send(b_ip, &BenchMsg::data(i, size))
                            .map_err(|e| e.to_string())?,
                    )?,
                }
                i += 1;
                sent += 1;
            }
            tally.wait_for(sent, WAIT).await?;
            if round == 1 {
                elapsed = start.elapsed();
            }
        }
        c.shutdown().await;
        Ok(count as f64 / elapsed.as_secs_f64())
    })
}

/// Starts a broadcaster and `peers` receiving nodes (one session thread each) that dial it;
/// returns the broadcaster's index and its handles to every peer.
async fn broadcast_cluster(
    c: &mut Cluster,
    peers: usize,
    tally: &Arc<Tally>,
) -> Result<(usize, Vec<PeerHandle>), String> {
    let x = c
        .add(Ipv4Addr::new(127, 0, 2, 1), 0, tally.clone(), None)
        .await?;
    let mut handles = Vec::with_capacity(peers);
    for p in 0..peers {
        let ip = Ipv4Addr::new(127, 0, 2, 10 + p as u8);
        let i = c.add_on(true, ip, 1, tally.clone(), None).await?;
        let (_, xp) = c.connect(i, x).await?;
        handles.push(xp);
    }
    Ok((x, handles))
}

/// Sends `count` broadcasts of `size` bytes through `Network::broadcast`; every peer must
/// queue each one.
async fn broadcast_run(
    net: &Network<BenchMsg>,
    handles: &[PeerHandle],
    tally: &Tally,
    count: u64,
    size: usize,
) -> Result<Duration, String> {
    let peers = handles.len() as u64;
    let base = tally.count();
    let start = Instant::now();
    for i in 0..count {
        if i % 64 == 0 {
            flow_control(handles, base + i * peers, tally, start).await?;
        }
        let n = net
            .broadcast(&BenchMsg::data(i, size), None)
            .await
            .map_err(|e| e.to_string())?;
        if n as u64 != peers {
            return Err(format!("broadcast reached {n} of {peers} peers"));
        }
    }
    tally.wait_for(base + count * peers, WAIT).await?;
    Ok(start.elapsed())
}

/// Scenario (c): deliveries per second of `count` broadcasts to `peers` peers, and the CPU use.
pub fn broadcast(peers: usize, count: u64, size: usize) -> Result<(f64, CpuUse), String> {
    in_actix(move || async move {
        let tally = Arc::new(Tally::default());
        let mut c = Cluster::new();
        let (x, handles) = broadcast_cluster(&mut c, peers, &tally).await?;
        let net = c.nodes[x].net.clone();
        broadcast_run(&net, &handles, &tally, (count / 10).max(1), size).await?;
        let meter = CpuMeter::start();
        let elapsed = broadcast_run(&net, &handles, &tally, count, size).await?;
        let (_, cpu) = meter.stop();
        c.shutdown().await;
        Ok(((count * peers as u64) as f64 / elapsed.as_secs_f64(), cpu))
    })
}

/// Round trip samples in microseconds of `pings` application-level echoes through a
/// `PeerHandle`, measured on a dedicated application thread.
async fn ping_loop(
    app: &ArbiterHandle,
    to: PeerHandle,
    mut pongs: mpsc::UnboundedReceiver<u64>,
    pings: u64,
) -> Result<Vec<f64>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.spawn(async move {
        let run = async {
            let mut samples = Vec::with_capacity(pings as usize);
            for id in 0..pings {
                let t = Instant::now();
                queued(to.send(&BenchMsg::Ping { id }).map_err(|e| e.to_string())?)?;
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), pongs.recv()).await {
                        Ok(Some(got)) if got == id => break,
                        Ok(Some(_)) => continue,
                        _ => return Err(format!("no pong for ping {id}")),
                    }
                }
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(samples)
        };
        let _ = tx.send(run.await);
    });
    rx.await.map_err(|_| "ping thread died".to_string())?
}

/// Round trip samples in microseconds of the session's own Ping/Pong (interval 1 ms), read from
/// the peer list each time a new pong was matched, until `pings` samples.
async fn session_ping_loop(
    net: &Network<BenchMsg>,
    peer: IpAddr,
    pings: u64,
) -> Result<Vec<f64>, String> {
    let mut samples = Vec::with_capacity(pings as usize);
    let mut last = 0;
    let deadline = Instant::now() + WAIT;
    while (samples.len() as u64) < pings {
        if Instant::now() > deadline {
            return Err(format!("only {} session pings in {WAIT:?}", samples.len()));
        }
        if let Some(info) = net.peers().await.into_iter().find(|p| p.ip == peer) {
            if info.stats.pongs_matched > last {
                last = info.stats.pongs_matched;
                if let Some(rtt) = info.stats.rtt {
                    samples.push(rtt.as_secs_f64() * 1e6);
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(samples)
}

/// Which round trip scenario (d) measures on the peerlink side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rtt {
    /// Application echo: Ping through a `PeerHandle`, the peer's application answers Pong.
    AppEcho,
    /// [`Rtt::AppEcho`] with each node on one thread (application and sessions on one Arbiter,
    /// the pings sent from the pinging node's thread), the shape of the raw baseline.
    AppEchoOneThread,
    /// The session's own Ping/Pong, measured by the session.
    SessionPing,
}

/// Scenario (d): round trip p50 and p99 in microseconds, idle or while broadcasts of (c) run
/// (they run, in rounds, for as long as the sampling does).
pub fn ping(sizes: Sizes, load: bool, kind: Rtt) -> Result<(f64, f64), String> {
    in_actix(move || async move {
        let tally = Arc::new(Tally::default());
        let mut c = Cluster::new();
        let (ptx, prx) = mpsc::unbounded_channel();
        if kind == Rtt::SessionPing {
            c.ping_interval_ms = 1;
        }
        let (pip, qip) = (Ipv4Addr::new(127, 0, 3, 1), Ipv4Addr::new(127, 0, 3, 2));
        // The thread the pings are sent from: the pinging node's application thread.
        let (p, q, ping_thread) = if kind == Rtt::AppEchoOneThread {
            let (p, p_thread) = c
                .add_on_one_thread(pip, tally.clone(), Some(ptx.clone()))
                .await?;
            let (q, _) = c.add_on_one_thread(qip, tally.clone(), None).await?;
            (p, q, p_thread)
        } else {
            let p = c.add(pip, 0, tally.clone(), Some(ptx.clone())).await?;
            let q = c.add(qip, 0, tally.clone(), None).await?;
            // The pings go out from the application's thread, where the pongs arrive (the
            // raw baseline's pinger reads its own socket too).
            (p, q, c.app.handle())
        };
        c.ping_interval_ms = DEFAULT_BENCH_PING_MS;
        let (pq, _) = c.connect(p, q).await?;
        let done = Arc::new(AtomicBool::new(false));
        let bcast = if load {
            let btally = Arc::new(Tally::default());
            let (x, handles) = broadcast_cluster(&mut c, sizes.c_peers, &btally).await?;
            let net = c.nodes[x].net.clone();
            let done = done.clone();
            let count = sizes.d_load_msgs;
            let task = actix_rt::spawn(async move {
                for _ in 0..MAX_LOAD_ROUNDS {
                    broadcast_run(&net, &handles, &btally, count, 256).await?;
                    if done.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
                Err::<(), String>("load rounds exhausted before the pings finished".into())
            });
            // Let the broadcast get going before sampling.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some(task)
        } else {
            None
        };
        let samples = match kind {
            Rtt::AppEcho | Rtt::AppEchoOneThread => {
                ping_loop(&ping_thread, pq, prx, sizes.d_pings).await
            }
            Rtt::SessionPing => {
                let net = c.nodes[p].net.clone();
                session_ping_loop(&net, c.nodes[q].ip, sizes.d_pings).await
            }
        };
        done.store(true, Ordering::Release);
        if let Some(task) = bcast {
            task.await.map_err(|e| e.to_string())??;
        }
        let samples = samples?;
        drop(ptx);
        c.shutdown().await;
        if samples.len() < 20 {
            return Err(format!("only {} ping samples", samples.len()));
        }
        // The first tenth is warm-up.
        let s = &samples[samples.len() / 10..];
        Ok((percentile(s, 50.0), percentile(s, 99.0)))
    })
}
