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
        let _ = self.inbound.send((m.from, m.msg));
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

/// Short timeouts for tests; the connector dials nothing unless told.
pub fn test_config(ip_last: u8) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::from(([127, 0, 0, ip_last], 0)),
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
        let (itx, inbound) = mpsc::unbounded_channel();
        let (etx, events) = mpsc::unbounded_channel();
        let app = Collector { inbound: itx, events: etx }.start();
        let net = Network::start(config, app.clone().recipient()).await.expect("network starts");
        net.subscribe(app.recipient());
        TestNode { net, inbound, events }
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
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
