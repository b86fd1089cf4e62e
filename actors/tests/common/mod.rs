//! Shared harness for the actor-level tests: nodes on distinct 127.0.0.x addresses with short
//! timeouts, an application actor that forwards everything it receives into channels, and
//! waiting helpers that wait for events (bounded), never for time.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actix::prelude::*;
use peerlink_actors::{Inbound, Network, NetworkConfig, PeerEvent, PeerHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Upper bound for any single wait in these tests; reaching it fails the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// The test application's message type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestMsg {
    /// A numbered text message.
    Text { seq: u64, body: String },
    /// Raw bytes, for bulk traffic.
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Forwards application messages and peer events into channels.
pub struct Collector {
    pub inbound: mpsc::UnboundedSender<(PeerHandle, TestMsg)>,
    pub events: mpsc::UnboundedSender<PeerEvent>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Inbound<TestMsg>> for Collector {
    type Result = ();
    fn handle(&mut self, m: Inbound<TestMsg>, _: &mut Context<Self>) {
        for msg in m.msgs() {
            let _ = self.inbound.send((m.from.clone(), msg));
        }
    }
}

impl Handler<PeerEvent> for Collector {
    type Result = ();
    fn handle(&mut self, e: PeerEvent, _: &mut Context<Self>) {
        let _ = self.events.send(e);
    }
}

/// One running node plus the receiving ends of its collector.
pub struct TestNode {
    pub net: Network<TestMsg>,
    pub inbound: mpsc::UnboundedReceiver<(PeerHandle, TestMsg)>,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
}

/// Short timeouts for tests; the connector dials nothing unless told, and discovery is off (a
/// test's topology is what it sets up; `TestNode::start_discovery` turns it on).
pub fn test_config(ip_last: u8) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::from(([127, 0, 0, ip_last], 0)),
        discovery: false,
        handshake_timeout_ms: 1_000,
        ping_interval_ms: 1_000,
        ping_timeout_ms: 3_000,
        connect_timeout_ms: 1_000,
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        dial_tick_ms: 50,
        session_threads: 2,
        ..NetworkConfig::default()
    }
}

impl TestNode {
    pub async fn start(config: NetworkConfig) -> TestNode {
        Self::start_from(Network::builder(config)).await
    }

    /// Starts a network from `builder` with a collector as its application.
    pub async fn start_from(builder: peerlink_actors::NetworkBuilder<TestMsg>) -> TestNode {
        let (itx, inbound) = mpsc::unbounded_channel();
        let (etx, events) = mpsc::unbounded_channel();
        let app = Collector {
            inbound: itx,
            events: etx,
        }
        .start();
        let net = builder
            .start(app.clone().recipient())
            .await
            .expect("network starts");
        net.subscribe(app.recipient());
        TestNode {
            net,
            inbound,
            events,
        }
    }

    /// Starts a node with peer discovery on.
    pub async fn start_discovery(config: NetworkConfig) -> TestNode {
        Self::start_from(Network::builder(config).discovery(true)).await
    }

    pub async fn on(ip_last: u8) -> TestNode {
        Self::start(test_config(ip_last)).await
    }

    pub fn ip(&self) -> IpAddr {
        self.net.local_addr().ip()
    }

    pub fn addr(&self) -> SocketAddr {
        self.net.local_addr()
    }

    /// Waits for the next Connected event.
    pub async fn connected(&mut self) -> peerlink_actors::PeerInfo {
        loop {
            match self.next_event().await {
                PeerEvent::Connected { info, .. } => return info,
                PeerEvent::Disconnected(_) => continue,
            }
        }
    }

    /// Waits for the next Disconnected event.
    pub async fn disconnected(&mut self) -> peerlink_actors::DisconnectRecord {
        loop {
            match self.next_event().await {
                PeerEvent::Disconnected(r) => return r,
                PeerEvent::Connected { .. } => continue,
            }
        }
    }

    pub async fn next_event(&mut self) -> PeerEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("event within the wait bound")
            .expect("event channel open")
    }

    pub async fn next_msg(&mut self) -> (PeerHandle, TestMsg) {
        tokio::time::timeout(WAIT, self.inbound.recv())
            .await
            .expect("message within the wait bound")
            .expect("inbound channel open")
    }
}

/// Polls `f` until it returns Some, bounded by [`WAIT`]. For state that has no event (a
/// registry count reaching a value); each poll is an actor round trip, not a sleep-and-hope.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Raw peers, metrics and memory helpers (for the acceptance tests).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::BytesMut;
use peerlink_actors::secure::{
    handshake, NodeKey, PublicKey, SecureError, SecureRead, SecureWrite, Transport,
};
use peerlink_actors::wire::Frame;
use peerlink_actors::wire::PROTOCOL_VERSION;
use peerlink_actors::wire::{FrameCodec, Hello};
use peerlink_actors::{DisconnectReason, NetMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::codec::Decoder;

/// `127.0.0.<last>`.
pub fn lo(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A Hello that `config`'s node accepts, with the given nonce.
pub fn hello_for(config: &NetworkConfig, nonce: u64) -> Hello {
    Hello {
        magic: config.magic.to_be_bytes(),
        version: PROTOCOL_VERSION,
        genesis: config.genesis,
        nonce,
        listen_port: 0,
        best_height: 0,
        user_agent: "raw-test-peer".into(),
    }
}

/// What a raw peer read.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A complete frame.
    Frame(Frame),
    /// The node closed the connection (EOF, or a reset after it closed).
    Closed,
}

/// A hand-driven peer on a plain tokio socket that speaks the protocol byte by byte, to observe
/// exactly what a node puts on the wire and to send what a `Network` never would. It runs the
/// node's transport: the Noise handshake, then frames inside AEAD records (hostile frames are
/// sent inside the channel, as an authenticated stranger would), or clear text for a node
/// configured `transport = "plaintext"`.
pub struct RawPeer {
    rd: SecureRead<OwnedReadHalf>,
    wr: SecureWrite<OwnedWriteHalf>,
    buf: BytesMut,
    codec: FrameCodec,
    /// A refusal the node sent in clear instead of its handshake: read as a Disconnect frame.
    refused: Option<DisconnectReason>,
    /// The raw peer's own static key.
    pub key: NodeKey,
    /// The key the node authenticated with (none in plaintext, or when refused).
    pub remote_key: Option<PublicKey>,
}

impl RawPeer {
    /// Connects from `127.0.0.<from_last>` (so that the node keys it by that IP) to `to`.
    pub async fn connect(from_last: u8, to: SocketAddr) -> RawPeer {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(lo(from_last), 0))
            .expect("bind raw peer");
        let stream = tokio::time::timeout(WAIT, socket.connect(to))
            .await
            .expect("connect within the wait bound")
            .expect("raw peer connects");
        Self::from_stream(stream).await
    }

    /// Accepts one connection on `listener` (a node dialling the raw peer).
    pub async fn accept(listener: &TcpListener) -> RawPeer {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("accept within the wait bound")
            .expect("accept");
        Self::secure(stream, false, Transport::Noise, NodeKey::generate()).await
    }

    /// A raw peer over a stream it dialled (the Noise initiator).
    pub async fn from_stream(stream: TcpStream) -> RawPeer {
        Self::secure(stream, true, Transport::Noise, NodeKey::generate()).await
    }

    /// A raw peer speaking clear text (for a node configured `transport = "plaintext"`).
    pub fn plaintext(stream: TcpStream) -> RawPeer {
        let (rd, wr) = stream.into_split();
        Self::with_halves(
            SecureRead::new(rd, None),
            SecureWrite::new(wr, None),
            NodeKey::generate(),
        )
    }

    /// Runs `transport` on `stream` with `key` as the raw peer's identity. A handshake the node
    /// ends (refusal in clear, or a close) leaves a peer whose reads report that.
    pub async fn secure(
        mut stream: TcpStream,
        initiator: bool,
        transport: Transport,
        key: NodeKey,
    ) -> RawPeer {
        let _ = stream.set_nodelay(true);
        if transport == Transport::Plaintext {
            return Self::plaintext(stream);
        }
        let res = tokio::time::timeout(WAIT, handshake(&mut stream, &key, initiator))
            .await
            .expect("handshake within the wait bound");
        let (rd, wr) = stream.into_split();
        match res {
            Ok(est) => {
                let mut peer = Self::with_halves(
                    SecureRead::new(rd, Some(est.recv)),
                    SecureWrite::new(wr, Some(est.send)),
                    key,
                );
                peer.remote_key = Some(est.remote);
                peer
            }
            Err(e) => {
                let mut peer =
                    Self::with_halves(SecureRead::new(rd, None), SecureWrite::new(wr, None), key);
                match e {
                    SecureError::Refused(reason) => peer.refused = Some(reason),
                    // The node closed during the handshake: reads see the close.
                    SecureError::Io(_) => {}
                    other => panic!("raw peer handshake failed: {other}"),
                }
                peer
            }
        }
    }

    fn with_halves(
        rd: SecureRead<OwnedReadHalf>,
        wr: SecureWrite<OwnedWriteHalf>,
        key: NodeKey,
    ) -> RawPeer {
        RawPeer {
            rd,
            wr,
            buf: BytesMut::new(),
            // The raw peer accepts anything the node may legally send.
            codec: FrameCodec::new(Arc::new(AtomicUsize::new(64 * 1024 * 1024))),
            refused: None,
            key,
            remote_key: None,
        }
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.send_raw(&frame.encode()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("raw peer writes");
        self.wr.flush().await.expect("raw peer flushes");
    }

    /// The next frame, or `Closed`; bounded by [`WAIT`]. Panics on bytes that are no frame.
    pub async fn recv(&mut self) -> Read {
        tokio::time::timeout(WAIT, self.recv_unbounded())
            .await
            .expect("frame or close within the wait bound")
    }

    async fn recv_unbounded(&mut self) -> Read {
        if let Some(reason) = self.refused.take() {
            return Read::Frame(Frame::Disconnect { reason });
        }
        loop {
            if let Some(body) = self
                .codec
                .decode(&mut self.buf)
                .expect("node sends valid frames")
            {
                return Read::Frame(Frame::decode(body).expect("node sends decodable frames"));
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) => {
                    assert!(self.buf.is_empty(), "connection closed inside a frame");
                    return Read::Closed;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Read::Closed,
                Err(e) => panic!("raw peer read failed: {e}"),
            }
        }
    }

    /// Reads the next frame and checks that it is the node's Hello.
    pub async fn expect_hello(&mut self) -> Hello {
        match self.recv().await {
            Read::Frame(Frame::Hello(h)) => h,
            other => panic!("expected the node's Hello, got {other:?}"),
        }
    }

    /// Reads the next frame and checks that it is `Disconnect{reason}`.
    pub async fn expect_disconnect(&mut self, reason: DisconnectReason) {
        match self.recv().await {
            Read::Frame(Frame::Disconnect { reason: got }) => assert_eq!(got, reason),
            other => panic!("expected Disconnect{{{reason}}}, got {other:?}"),
        }
    }

    /// Checks that the node closed the connection with nothing more on the wire.
    pub async fn expect_closed(&mut self) {
        assert_eq!(self.recv().await, Read::Closed);
    }

    /// Sends a valid Hello for `config`'s node and reads the node's Hello.
    pub async fn handshake(&mut self, config: &NetworkConfig) -> Hello {
        self.send(&Frame::Hello(hello_for(config, rand::random())))
            .await;
        self.expect_hello().await
    }

    /// Reads and discards bytes until the node closes; returns how many. Bounded by [`WAIT`].
    pub async fn drain_to_close(&mut self) -> usize {
        let mut n = self.buf.len();
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        let drain = async {
            loop {
                match self.rd.read(&mut chunk).await {
                    Ok(0) => return n,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return n,
                    // A slow peer's socket is aborted mid-write: it ends inside a record.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return n,
                    Err(e) => panic!("raw peer read failed: {e}"),
                }
            }
        };
        tokio::time::timeout(WAIT, drain)
            .await
            .expect("close within the wait bound")
    }
}

/// A raw listener on `127.0.0.<last>:0`, for a node to dial.
pub async fn raw_listener(last: u8) -> TcpListener {
    TcpListener::bind(SocketAddr::new(lo(last), 0))
        .await
        .expect("raw listener binds")
}

/// Disconnects counted by a node's metrics for `reason`, closed locally (`by_peer` false) or by
/// the peer.
pub fn disconnects(metrics: &NetMetrics, reason: DisconnectReason, by_peer: bool) -> u64 {
    let initiator = if by_peer { "peer" } else { "local" };
    metrics
        .disconnects
        .get_or_create(&vec![("reason", reason.as_str()), ("initiator", initiator)])
        .get()
}

/// Frames that closed their connection, by reason.
pub fn frames_rejected(metrics: &NetMetrics, reason: DisconnectReason) -> u64 {
    metrics
        .frames_rejected
        .get_or_create(&vec![("reason", reason.as_str())])
        .get()
}

/// A size field of `/proc/self/status` (Linux), in bytes.
pub fn proc_status_bytes(key: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("{key} line"));
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} value"));
    kib * 1024
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> usize {
    proc_status_bytes("VmRSS")
}

/// Peak virtual size of this process, in bytes: catches large reservations that were never
/// touched (and so never show in the RSS).
pub fn vm_peak_bytes() -> usize {
    proc_status_bytes("VmPeak")
}

/// Waits until `node`'s writer tasks (its open sockets) drop to `n`.
pub async fn sockets_settle(net: &Network<TestMsg>, n: i64, what: &str) {
    let m = net.metrics().clone();
    eventually(what, || {
        let m = m.clone();
        async move { (m.writers_alive.get() == n).then_some(()) }
    })
    .await;
}

/// Config for the restart scenarios: pings far apart, so that anything that happens within a
/// second cannot be the ping timeout at work; the connector never redials by itself.
pub fn restart_config(last: u8) -> NetworkConfig {
    NetworkConfig {
        ping_interval_ms: 10_000,
        ping_timeout_ms: 30_000,
        backoff_base_ms: 60_000,
        backoff_max_ms: 120_000,
        ..test_config(last)
    }
}

/// The restart scenario: A (127.0.0.<a>) dialled B (127.0.0.<b>); then B2, a new node instance on
/// B's IP (new nonce, another port) whose predecessor B is still running with its socket open,
/// dials A. Returns (A, B, B2, A's info on the old connection) once A holds the connection to B.
pub async fn connected_pair_and_restarted_b(
    a_last: u8,
    b_last: u8,
) -> (TestNode, TestNode, TestNode, peerlink_actors::PeerInfo) {
    let mut a = TestNode::start(restart_config(a_last)).await;
    let mut b = TestNode::start(restart_config(b_last)).await;
    a.net.connect(b.addr());
    let old = a.connected().await;
    b.connected().await;
    assert_eq!(old.conn.remote_nonce, b.net.node_nonce());
    let b2 = TestNode::start(restart_config(b_last)).await;
    assert_eq!(b2.ip(), b.ip());
    assert_ne!(b2.addr(), b.addr());
    assert_ne!(b2.net.node_nonce(), b.net.node_nonce());
    (a, b, b2, old)
}

// ---------------------------------------------------------------------------------------------
// Shared session threads.

impl TestNode {
    /// Like [`TestNode::start`], but through [`Network::builder`]: the network runs its sessions
    /// on `threads`, shared with other networks, instead of starting threads of its own.
    pub async fn start_on(
        config: NetworkConfig,
        threads: &peerlink_actors::SessionThreads,
    ) -> TestNode {
        Self::start_from(Network::builder(config).session_threads(threads)).await
    }
}
