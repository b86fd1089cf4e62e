//! Hostile load for the acceptance tests and the benchmark: peers that flood a node with
//! `GetBlocks` for large ranges as fast as their answers come back (draining flooders), a peer
//! that sends requests and never reads (non-reader), and a handshake probe that times how long
//! a brand new peer takes to be registered. They are real peers on real sockets: a
//! `Network<NodeMsg>` per flooder, a raw TCP socket for the non-reader.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use peerlink_actors::wire::{Frame, Hello, PROTOCOL_VERSION};
use peerlink_actors::{Inbound, Network, NetworkConfig, NetworkError, PeerEvent, Transport};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::app::{NodeMsg, MAX_BLOCKS_PER_REQUEST};
use crate::chain::BlockHash;

/// Network config of a hostile peer on `ip`, for a node whose genesis is `genesis`. Plaintext
/// transport: the raw [`non_reader`] speaks the frames directly, so the node under test (given
/// the same config) and every peer of these tests use plaintext.
pub fn peer_config(ip: IpAddr, genesis: BlockHash) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::new(ip, 0),
        genesis,
        transport: Transport::Plaintext,
        session_threads: 1,
        dial_tick_ms: 50,
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        ..NetworkConfig::default()
    }
}

/// Keeps `outstanding` `GetBlocks` of `MAX_BLOCKS_PER_REQUEST` blocks from pseudo-random
/// heights below `top` in flight, sending the next as each answer arrives.
struct Flooder {
    outstanding: usize,
    top: u64,
    next_id: u64,
    seed: u64,
    answers: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Flooder {
    fn request(&mut self) -> NodeMsg {
        // xorshift: cheap, deterministic per flooder.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.next_id += 1;
        let span = self
            .top
            .saturating_sub(u64::from(MAX_BLOCKS_PER_REQUEST))
            .max(1);
        NodeMsg::GetBlocks {
            request_id: self.next_id,
            from: 1 + self.seed % span,
            count: MAX_BLOCKS_PER_REQUEST,
        }
    }
}

impl Actor for Flooder {
    type Context = Context<Self>;
}

impl Handler<Inbound<NodeMsg>> for Flooder {
    type Result = ();
    fn handle(&mut self, m: Inbound<NodeMsg>, _: &mut Context<Self>) {
        for msg in m.msgs() {
            if let NodeMsg::Blocks { blocks, .. } = &msg {
                self.answers.fetch_add(1, Ordering::Relaxed);
                let b: usize = blocks.iter().map(|b| b.wire_size()).sum();
                self.bytes.fetch_add(b as u64, Ordering::Relaxed);
                let next = self.request();
                let _ = m.from.send(&next);
            }
        }
    }
}

impl Handler<PeerEvent> for Flooder {
    type Result = ();
    fn handle(&mut self, e: PeerEvent, _: &mut Context<Self>) {
        if let PeerEvent::Connected { handle, .. } = e {
            for _ in 0..self.outstanding {
                let next = self.request();
                let _ = handle.send(&next);
            }
        }
    }
}

/// Running draining flooders.
pub struct Flooders {
    nets: Vec<Network<NodeMsg>>,
    /// The flooders' arbiter, stopped by [`Flooders::stop`].
    thread: Arbiter,
    answers: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Flooders {
    /// Starts one flooder per IP in `ips`, each dialling `target` and keeping `outstanding`
    /// requests for blocks below `top` in flight. Must run inside an actix system.
    pub async fn start(
        target: SocketAddr,
        ips: &[IpAddr],
        genesis: BlockHash,
        top: u64,
        outstanding: usize,
    ) -> Result<Flooders, NetworkError> {
        let answers = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut nets = Vec::new();
        // The flooders decode every answer they drain: on a thread of their own, so that they
        // do not delay the caller's other actors (the probes, an honest node's handles).
        let thread = Arbiter::new();
        for (i, ip) in ips.iter().enumerate() {
            let f = Flooder {
                outstanding,
                top,
                next_id: 0,
                seed: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                answers: answers.clone(),
                bytes: bytes.clone(),
            };
            let f = Flooder::start_in_arbiter(&thread.handle(), move |_| f);
            let net = Network::start(peer_config(*ip, genesis), f.clone().recipient()).await?;
            net.subscribe(f.recipient());
            net.connect(target);
            nets.push(net);
        }
        Ok(Flooders {
            nets,
            thread,
            answers,
            bytes,
        })
    }

    /// Answers received so far, over all flooders.
    pub fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    /// Block bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stops every flooder.
    pub async fn stop(self) {
        for n in self.nets {
            n.shutdown().await;
        }
        self.thread.stop();
    }
}

/// Collects peer events of a probe.
struct Probe {
    events: mpsc::UnboundedSender<()>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Inbound<NodeMsg>> for Probe {
    type Result = ();
    fn handle(&mut self, _: Inbound<NodeMsg>, _: &mut Context<Self>) {}
}

impl Handler<PeerEvent> for Probe {
    type Result = ();
    fn handle(&mut self, e: PeerEvent, _: &mut Context<Self>) {
        if matches!(e, PeerEvent::Connected { .. }) {
            let _ = self.events.send(());
        }
    }
}

/// A new peer on `ip` dials `target`: the time until the handshake completed on both sides
/// (the probe registered the node), or `None` after `limit`. Must run inside an actix system.
pub async fn handshake_probe(
    target: SocketAddr,
    ip: IpAddr,
    genesis: BlockHash,
    limit: Duration,
) -> Result<Option<Duration>, NetworkError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Probe { events: tx }.start();
    let net: Network<NodeMsg> =
        Network::start(peer_config(ip, genesis), probe.clone().recipient()).await?;
    net.subscribe(probe.recipient());
    let started = Instant::now();
    net.connect(target);
    let took = tokio::time::timeout(limit, rx.recv())
        .await
        .ok()
        .flatten()
        .map(|_| started.elapsed());
    net.shutdown().await;
    Ok(took)
}

/// A peer on `ip` that handshakes with `target`, then writes `requests` `GetBlocks` for
/// `MAX_BLOCKS_PER_REQUEST` blocks and never reads. Returns when every request was written or
/// the node closed the connection (a write failed).
pub async fn non_reader(
    target: SocketAddr,
    ip: IpAddr,
    genesis: BlockHash,
    requests: u64,
) -> std::io::Result<u64> {
    let socket = match ip {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    let mut stream = socket.connect(target).await?;
    let hello = Frame::Hello(Hello {
        magic: NetworkConfig::default().magic.to_be_bytes(),
        version: PROTOCOL_VERSION,
        genesis,
        nonce: rand::random(),
        listen_port: 0,
        best_height: 0,
        user_agent: "non-reader".into(),
    });
    stream.write_all(&hello.encode()).await?;
    let mut sent = 0;
    for id in 0..requests {
        let msg = NodeMsg::GetBlocks {
            request_id: id,
            from: 1,
            count: MAX_BLOCKS_PER_REQUEST,
        };
        let payload = rmp_serde::to_vec(&msg).map_err(std::io::Error::other)?;
        if stream
            .write_all(&Frame::App(Bytes::from(payload)).encode())
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    Ok(sent)
}
