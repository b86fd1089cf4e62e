//! One libp2p node as a Rust developer would set it up: `SwarmBuilder` with TCP, a security
//! upgrade (Noise, or plaintext) and yamux, and `libp2p-stream`'s behaviour (one raw stream
//! per peer and protocol, opened through a `Control`). A task drives the swarm; the node
//! dials on request and counts established connections so that callers wait on that count.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, plaintext, tcp, yamux, Multiaddr, PeerId, Stream, StreamProtocol, Swarm};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::common::err;

/// The one protocol every scenario speaks on its streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/peerlink-bench/1");
/// Bound of any single wait during setup.
pub const SETUP_WAIT: Duration = Duration::from_secs(30);
/// Connections stay open while idle (libp2p closes idle connections by default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The security upgrade of a run; both use yamux over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sec {
    /// `noise::Config` (XX handshake, ChaCha20-Poly1305): libp2p's recommended default.
    Noise,
    /// `plaintext::Config`: peer ids exchanged, nothing encrypted.
    Plaintext,
}

impl Sec {
    /// Name used on the command line and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Sec::Noise => "noise",
            Sec::Plaintext => "plaintext",
        }
    }

    /// The inverse of [`Sec::as_str`].
    pub fn parse(s: &str) -> Option<Sec> {
        match s {
            "noise" => Some(Sec::Noise),
            "plaintext" => Some(Sec::Plaintext),
            _ => None,
        }
    }
}

/// A swarm with a fresh ed25519 identity; must be called inside a tokio runtime.
pub fn build(sec: Sec) -> Result<Swarm<libp2p_stream::Behaviour>, String> {
    let tcp_config = tcp::Config::default().nodelay(true);
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(IDLE_TIMEOUT);
    Ok(match sec {
        Sec::Noise => builder
            .with_tcp(tcp_config, noise::Config::new, yamux::Config::default)
            .map_err(err)?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .map_err(err)?
            .with_swarm_config(config)
            .build(),
        Sec::Plaintext => builder
            .with_tcp(
                tcp_config,
                |k: &Keypair| Ok::<_, Infallible>(plaintext::Config::new(k)),
                yamux::Config::default,
            )
            .map_err(err)?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .map_err(err)?
            .with_swarm_config(config)
            .build(),
    })
}

/// Starts listening on `ip` (port chosen by the system) and waits for the address.
pub async fn listen(
    swarm: &mut Swarm<libp2p_stream::Behaviour>,
    ip: Ipv4Addr,
) -> Result<Multiaddr, String> {
    let want: Multiaddr = format!("/ip4/{ip}/tcp/0").parse().map_err(err)?;
    swarm.listen_on(want).map_err(err)?;
    tokio::time::timeout(SETUP_WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
                SwarmEvent::ListenerError { error, .. } => return Err(err(error)),
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| "no listen address".to_string())?
}

/// A listening node whose swarm runs in a task of its own.
pub struct Node {
    /// Its peer id.
    pub peer: PeerId,
    /// Where it listens.
    pub addr: Multiaddr,
    /// Opens and accepts streams.
    pub control: libp2p_stream::Control,
    dial: mpsc::UnboundedSender<(PeerId, Multiaddr)>,
    established: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Node {
    /// Builds a node listening on `ip` and starts driving it.
    pub async fn start(sec: Sec, ip: Ipv4Addr) -> Result<Node, String> {
        let mut swarm = build(sec)?;
        let addr = listen(&mut swarm, ip).await?;
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        let (dial, mut dials) = mpsc::unbounded_channel::<(PeerId, Multiaddr)>();
        let (count, established) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some((peer, addr)) = dials.recv() => {
                        // A new source port: the default, binding the dial to the listen
                        // port, failed with EADDRINUSE between loopback addresses here.
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .allocate_new_port()
                            .build();
                        if let Err(e) = swarm.dial(opts) {
                            eprintln!("dial failed: {e}");
                        }
                    }
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { .. } => count.send_modify(|n| *n += 1),
                        SwarmEvent::OutgoingConnectionError { error, .. } => {
                            eprintln!("outgoing connection failed: {error}")
                        }
                        _ => {}
                    },
                }
            }
        });
        Ok(Node {
            peer,
            addr,
            control,
            dial,
            established,
            task,
        })
    }

    /// Dials `to` and waits until the connection is established.
    pub async fn connect(&mut self, to: &Node) -> Result<(), String> {
        self.connect_to(to.addr.clone(), to.peer).await
    }

    /// Dials `peer` at `addr` and waits until the connection is established.
    pub async fn connect_to(&mut self, addr: Multiaddr, peer: PeerId) -> Result<(), String> {
        let before = *self.established.borrow();
        self.dial.send((peer, addr)).map_err(err)?;
        tokio::time::timeout(SETUP_WAIT, self.established.wait_for(|n| *n > before))
            .await
            .map_err(|_| format!("no connection to {peer} in {SETUP_WAIT:?}"))?
            .map_err(err)?;
        Ok(())
    }

    /// Opens a stream of [`PROTOCOL`] to `to` (connected before).
    pub async fn open(&self, to: PeerId) -> Result<Stream, String> {
        tokio::time::timeout(SETUP_WAIT, self.control.clone().open_stream(to, PROTOCOL))
            .await
            .map_err(|_| "stream not opened in time".to_string())?
            .map_err(err)
    }

    /// Accepts streams of [`PROTOCOL`], handing each to `serve` in a task of its own.
    pub fn serve<F, Fut>(&self, serve: F) -> Result<(), String>
    where
        F: Fn(Stream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut incoming = self.control.clone().accept(PROTOCOL).map_err(err)?;
        tokio::spawn(async move {
            while let Some((_peer, stream)) = incoming.next().await {
                tokio::spawn(serve(stream));
            }
        });
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}
