//! Scenario j: block propagation over N in-process nodes connected by discovery. Each node is
//! told one of 3 seeds (the seeds each told the next one), discovery (with the short timers of
//! `DiscoveryConfig::fast`) builds the graph, and once every node holds its target of outbound
//! peers in a connected graph, blocks (1 KiB `Data` messages) are produced one at a time at
//! varying nodes; every node relays a block it has not seen to every peer but the sender, once
//! (dedup by id, encoded once per node and queued with `PeerHandle::send_frame`). The figure is
//! the time from the producer until the last node has the block, its median and 99th
//! percentile over the blocks.
//!
//! Baseline, in the same run: the same graph (the peerlink run's final connections, on other
//! loopback addresses) flooded by raw tokio tasks on a 2-worker runtime, one reader and one
//! writer task per connection, the same framing and decoding, a locked set per node for dedup.
//! Peerlink: 2 shared session threads, one control thread, the relay actors on 2 application
//! threads.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::Arbiter;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::StreamExt;
use peerlink_actors::discovery::DiscoveryConfig;
use peerlink_actors::{
    Direction, Inbound, Network, NetworkConfig, PeerEvent, PeerHandle, SessionThreads,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::common::{percentile, raise_fd_limit, BenchMsg};
use crate::peer::in_actix;
use crate::raw::{connect_from, in_tokio};

/// Nominal size of a block message.
pub const BLOCK_BYTES: usize = 1024;
/// Seeds of the discovery graph.
const SEEDS: usize = 3;
/// Bound of the convergence wait and of each block's flood.
const WAIT: Duration = Duration::from_secs(60);
/// Pause between blocks, so that one block's flood never overlaps the next.
const GAP: Duration = Duration::from_millis(10);

/// What one side measured.
#[derive(Debug, Clone)]
pub struct Propagation {
    /// Per block: ms from the producer until every node had it.
    pub to_all_ms: Vec<f64>,
    /// Per block: ms until half the nodes had it.
    pub to_half_ms: Vec<f64>,
}

impl Propagation {
    /// Median and 99th percentile of the time to reach every node, ms.
    pub fn all_p50_p99(&self) -> (f64, f64) {
        (
            percentile(&self.to_all_ms, 50.0),
            percentile(&self.to_all_ms, 99.0),
        )
    }
}

/// What the peerlink side learned besides the times: the graph and how it formed.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Undirected edges `(dialler, dialled)` between node indexes.
    pub edges: Vec<(usize, usize)>,
    /// Seconds from the first dial until every node had its target outbound peers, connected.
    pub converged_s: f64,
    /// Degree min, median, max.
    pub degree: (usize, usize, usize),
    /// Fewest outbound peers of any node.
    pub outbound_min: usize,
}

/// Arrivals of blocks at nodes: `(block id, node, when)`.
type Arrivals = mpsc::UnboundedSender<(u64, usize, Instant)>;

/// Collects the arrivals of block `id` at all `n` nodes; returns (to all, to half) in ms after
/// the producer's own arrival.
async fn flood_times(
    rx: &mut mpsc::UnboundedReceiver<(u64, usize, Instant)>,
    id: u64,
    n: usize,
) -> Result<(f64, f64), String> {
    let mut times: Vec<Option<Instant>> = vec![None; n];
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while got < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((b, i, at))) if b == id && i < n && times[i].is_none() => {
                times[i] = Some(at);
                got += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("arrival channel closed".into()),
            Err(_) => {
                return Err(format!(
                    "block {id} reached {got} of {n} nodes within {WAIT:?}"
                ))
            }
        }
    }
    let mut at: Vec<Instant> = times.into_iter().flatten().collect();
    at.sort();
    let first = at[0];
    let ms = |t: Instant| t.duration_since(first).as_secs_f64() * 1000.0;
    Ok((ms(at[n - 1]), ms(at[(n - 1) / 2])))
}

// ---------------------------------------------------------------------------------------------
// peerlink

/// Relays each block once to every peer but its sender.
struct Relay {
    index: usize,
    peers: BTreeMap<IpAddr, PeerHandle>,
    seen: HashSet<u64>,
    arrivals: Arrivals,
}

impl Relay {
    fn relay(&mut self, msg: &BenchMsg, from: Option<IpAddr>) {
        let BenchMsg::Data { seq, .. } = msg else {
            return;
        };
        if !self.seen.insert(*seq) {
            return;
        }
        let _ = self.arrivals.send((*seq, self.index, Instant::now()));
        let Ok(frame) = peerlink_actors::wire::encode_app(msg) else {
            return;
        };
        for (ip, h) in &self.peers {
            if Some(*ip) != from {
                let _ = h.send_frame(frame.clone());
            }
        }
    }
}

impl Actor for Relay {
    type Context = Context<Self>;
}

impl Handler<Inbound<BenchMsg>> for Relay {
    type Result = ();
    fn handle(&mut self, inbound: Inbound<BenchMsg>, _: &mut Context<Self>) {
        let from = inbound.from.ip();
        for msg in inbound.msgs() {
            self.relay(&msg, Some(from));
        }
    }
}

impl Handler<PeerEvent> for Relay {
    type Result = ();
    fn handle(&mut self, event: PeerEvent, _: &mut Context<Self>) {
        match event {
            PeerEvent::Connected { info, handle } => {
                self.peers.insert(info.ip, handle);
            }
            PeerEvent::Disconnected(r) => {
                if self
                    .peers
                    .get(&r.ip)
                    .is_some_and(|h| h.conn_id() == r.conn_id)
                {
                    self.peers.remove(&r.ip);
                }
            }
        }
    }
}

/// A block to produce at this node.
#[derive(Message)]
#[rtype(result = "()")]
struct Produce(BenchMsg);

impl Handler<Produce> for Relay {
    type Result = ();
    fn handle(&mut self, msg: Produce, _: &mut Context<Self>) {
        self.relay(&msg.0, None);
    }
}

fn peerlink_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 130, 1 + i as u8)
}

fn baseline_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 131, 1 + i as u8)
}

/// Whether the undirected graph of `edges` over `n` nodes is connected.
fn connected(n: usize, edges: &[(usize, usize)]) -> bool {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(x) = stack.pop() {
        for &y in &adj[x] {
            if !seen[y] {
                seen[y] = true;
                stack.push(y);
            }
        }
    }
    seen.into_iter().all(|s| s)
}

/// The peerlink side: discovery builds the graph, then `blocks` floods.
pub fn peerlink(nodes: usize, blocks: u64) -> Result<(Propagation, Graph), String> {
    assert!(nodes <= 250, "one /24 of loopback addresses");
    in_actix(move || async move {
        let threads = SessionThreads::new(2);
        let apps = [Arbiter::new(), Arbiter::new()];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut nets = Vec::with_capacity(nodes);
        let mut relays = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let arrivals = tx.clone();
            let relay = Relay::start_in_arbiter(&apps[i % 2].handle(), move |_| Relay {
                index: i,
                peers: BTreeMap::new(),
                seen: HashSet::new(),
                arrivals,
            });
            let config = NetworkConfig {
                listen: SocketAddr::new(IpAddr::V4(peerlink_ip(i)), 0),
                transport: crate::common::transport(),
                handshake_timeout_ms: 10_000,
                connect_timeout_ms: 5_000,
                backoff_base_ms: 100,
                backoff_max_ms: 2_000,
                dial_tick_ms: 50,
                ..NetworkConfig::default()
            };
            let net = Network::<BenchMsg>::builder(config)
                .session_threads(&threads)
                .discovery_config(DiscoveryConfig::fast())
                .start(relay.clone().recipient())
                .await
                .map_err(|e| format!("node {i}: {e}"))?;
            net.subscribe(relay.clone().recipient());
            nets.push(net);
            relays.push(relay);
        }
        let result = drive_peerlink(&nets, &relays, &mut rx, blocks).await;
        join_all(nets.iter().map(|n| n.shutdown())).await;
        for a in &apps {
            a.stop();
        }
        result
    })
}

async fn drive_peerlink(
    nets: &[Network<BenchMsg>],
    relays: &[Addr<Relay>],
    rx: &mut mpsc::UnboundedReceiver<(u64, usize, Instant)>,
    blocks: u64,
) -> Result<(Propagation, Graph), String> {
    let n = nets.len();
    let target = nets[0].config().target_outbound.min(n - 1);
    let index: BTreeMap<IpAddr, usize> = (0..n).map(|i| (IpAddr::V4(peerlink_ip(i)), i)).collect();
    let started = Instant::now();
    for (i, net) in nets.iter().enumerate() {
        let seed = if i < SEEDS {
            (i + 1) % SEEDS
        } else {
            i % SEEDS
        };
        if seed != i && seed < n {
            net.connect(nets[seed].local_addr());
        }
    }
    // Convergence: every node has its target outbound peers (or, in a network too small for
    // that, as many peers as there are other nodes) and the graph is connected.
    let graph = loop {
        let peers = join_all(nets.iter().map(|net| net.peers())).await;
        let outbound: Vec<usize> = peers
            .iter()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p.conn.direction == Direction::Outbound)
                    .count()
            })
            .collect();
        let mut edges = Vec::new();
        for (i, ps) in peers.iter().enumerate() {
            for p in ps {
                if let (Some(&j), Direction::Outbound) = (index.get(&p.ip), p.conn.direction) {
                    edges.push((i, j));
                }
            }
        }
        let enough = peers
            .iter()
            .zip(&outbound)
            .all(|(ps, &o)| o >= target || ps.len() >= n - 1);
        if enough && connected(n, &edges) {
            let mut degree: Vec<usize> = peers.iter().map(Vec::len).collect();
            degree.sort_unstable();
            break Graph {
                edges,
                converged_s: started.elapsed().as_secs_f64(),
                degree: (degree[0], degree[n / 2], degree[n - 1]),
                outbound_min: outbound.iter().copied().min().unwrap_or(0),
            };
        }
        if started.elapsed() > WAIT {
            return Err(format!(
                "discovery did not converge within {WAIT:?}: outbound {outbound:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut out = Propagation {
        to_all_ms: Vec::new(),
        to_half_ms: Vec::new(),
    };
    for id in 0..blocks {
        let src = (id as usize * 37) % n;
        relays[src].do_send(Produce(BenchMsg::data(id, BLOCK_BYTES)));
        let (all, half) = flood_times(rx, id, n).await?;
        out.to_all_ms.push(all);
        out.to_half_ms.push(half);
        tokio::time::sleep(GAP).await;
    }
    Ok((out, graph))
}

// ---------------------------------------------------------------------------------------------
// raw tokio baseline

/// One baseline node: its dedup set and a writer channel per connection (with the peer).
struct RawNode {
    index: usize,
    seen: Mutex<HashSet<u64>>,
    writers: Vec<(usize, mpsc::UnboundedSender<Bytes>)>,
    arrivals: Arrivals,
}

impl RawNode {
    /// Forwards a block (its whole frame) to every connection but `from`, once.
    fn relay(&self, id: u64, frame: &Bytes, from: Option<usize>) {
        let first = self.seen.lock().map(|mut s| s.insert(id)).unwrap_or(false);
        if !first {
            return;
        }
        let _ = self.arrivals.send((id, self.index, Instant::now()));
        for (peer, w) in &self.writers {
            if Some(*peer) != from {
                let _ = w.send(frame.clone());
            }
        }
    }
}

/// Raw frame of a block: 4-byte length and the rmp-serde body.
fn raw_block(id: u64) -> Result<Bytes, String> {
    crate::common::raw_frame(&BenchMsg::data(id, BLOCK_BYTES))
}

/// The baseline: the same graph, raw tokio tasks.
pub fn baseline(
    nodes: usize,
    edges: Vec<(usize, usize)>,
    blocks: u64,
) -> Result<Propagation, String> {
    raise_fd_limit();
    in_tokio(async move {
        let mut listeners = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let l = TcpListener::bind((baseline_ip(i), 0))
                .await
                .map_err(|e| format!("bind {}: {e}", baseline_ip(i)))?;
            listeners.push(l);
        }
        // Each node's connections: (peer, stream).
        let mut conns: Vec<Vec<(usize, tokio::net::TcpStream)>> =
            (0..nodes).map(|_| Vec::new()).collect();
        for &(a, b) in &edges {
            let addr = listeners[b].local_addr().map_err(|e| e.to_string())?;
            let (client, accepted) =
                tokio::join!(connect_from(baseline_ip(a), addr), listeners[b].accept());
            let (server, _) = accepted.map_err(|e| e.to_string())?;
            server.set_nodelay(true).map_err(|e| e.to_string())?;
            conns[a].push((b, client?));
            conns[b].push((a, server));
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut states = Vec::with_capacity(nodes);
        let mut readers = Vec::new();
        for (i, list) in conns.into_iter().enumerate() {
            let mut writers = Vec::new();
            let mut reads = Vec::new();
            for (peer, stream) in list {
                let (rd, mut wr) = stream.into_split();
                let (wtx, mut wrx) = mpsc::unbounded_channel::<Bytes>();
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    while let Some(frame) = wrx.recv().await {
                        buf.put_slice(&frame);
                        while let Ok(more) = wrx.try_recv() {
                            buf.put_slice(&more);
                        }
                        if wr.write_all(&buf).await.is_err() {
                            return;
                        }
                        buf.clear();
                    }
                });
                writers.push((peer, wtx));
                reads.push((peer, rd));
            }
            let state = Arc::new(RawNode {
                index: i,
                seen: Mutex::new(HashSet::new()),
                writers,
                arrivals: tx.clone(),
            });
            for (peer, rd) in reads {
                let state = state.clone();
                readers.push(tokio::spawn(async move {
                    let mut frames = FramedRead::new(rd, LengthDelimitedCodec::new());
                    while let Some(Ok(body)) = frames.next().await {
                        let Ok(BenchMsg::Data { seq, .. }) = rmp_serde::from_slice(&body) else {
                            continue;
                        };
                        let mut frame = BytesMut::with_capacity(4 + body.len());
                        frame.put_u32(body.len() as u32);
                        frame.put_slice(&body);
                        state.relay(seq, &frame.freeze(), Some(peer));
                    }
                }));
            }
            states.push(state);
        }
        let mut out = Propagation {
            to_all_ms: Vec::new(),
            to_half_ms: Vec::new(),
        };
        for id in 0..blocks {
            let src = (id as usize * 37) % nodes;
            states[src].relay(id, &raw_block(id)?, None);
            let (all, half) = flood_times(&mut rx, id, nodes).await?;
            out.to_all_ms.push(all);
            out.to_half_ms.push(half);
            tokio::time::sleep(GAP).await;
        }
        for r in readers {
            r.abort();
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectivity() {
        assert!(connected(3, &[(0, 1), (1, 2)]));
        assert!(!connected(3, &[(0, 1)]));
    }
}
