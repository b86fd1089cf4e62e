//! The secure transport between real nodes on real sockets (127.0.0.150-169): a relay that
//! flips one bit after the handshake gets the connection closed with `decrypt_failed`, with
//! nothing corrupt delivered and the node still serving; pinned keys and `allowed_keys` refuse
//! the wrong keys and admit the right ones; a node reached under its own key sees a
//! self-connection; a clear-text client gets no byte of the node's Hello.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use peerlink_actors::secure::{NodeKey, PeerAddr, PublicKey};
use peerlink_actors::wire::Frame;
use peerlink_actors::{DisconnectReason, NetworkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn keyed(ip_last: u8) -> (NetworkConfig, PublicKey) {
    let key = NodeKey::generate();
    let public = key.public();
    (
        NetworkConfig {
            node_key: Some(key),
            ..test_config(ip_last)
        },
        public,
    )
}

/// A relay on 127.0.0.`ip_last` to `server`; once `armed`, flips the last bit of the next chunk
/// going from the server to the client.
async fn flipping_relay(ip_last: u8, server: SocketAddr, armed: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(lo(ip_last), 0))
        .await
        .expect("relay binds");
    let addr = listener.local_addr().expect("addr");
    actix_rt::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(lo(ip_last), 0))
            .expect("relay binds its source");
        let Ok(upstream) = socket.connect(server).await else {
            return;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        actix_rt::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = uw.shutdown().await;
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = ur.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if armed.swap(false, Ordering::AcqRel) {
                buf[n - 1] ^= 0x01;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    });
    addr
}

fn text(seq: u64) -> TestMsg {
    TestMsg::Text {
        seq,
        body: format!("message {seq} from b"),
    }
}

#[actix::test]
async fn a_flipped_bit_closes_with_a_reason_and_nothing_corrupt_is_delivered() {
    let (config_a, _) = keyed(150);
    let (config_b, key_b) = keyed(151);
    let mut a = TestNode::start(config_a).await;
    let mut b = TestNode::start(config_b).await;
    let armed = Arc::new(AtomicBool::new(false));
    let relay = flipping_relay(152, b.addr(), armed.clone()).await;
    a.net.connect(relay);
    let info = a.connected().await;
    assert_eq!(info.ip, lo(152));
    assert_eq!(info.conn.remote_key, Some(key_b), "a knows b by its key");
    b.connected().await;
    let to_a = b.net.handle(lo(152)).expect("b registered the relay's IP");
    for seq in 0..5 {
        to_a.send(&text(seq)).expect("encodes");
    }
    for seq in 0..5 {
        assert_eq!(a.next_msg().await.1, text(seq));
    }

    let rejected_before = frames_rejected(a.net.metrics(), DisconnectReason::DecryptFailed);
    armed.store(true, Ordering::Release);
    for seq in 5..10 {
        to_a.send(&text(seq)).expect("encodes");
    }
    let record = a.disconnected().await;
    assert_eq!(record.reason, DisconnectReason::DecryptFailed);
    assert!(!record.by_peer);
    assert_eq!(
        frames_rejected(a.net.metrics(), DisconnectReason::DecryptFailed),
        rejected_before + 1
    );
    // Whatever arrived is exactly what b sent, in order; the tampered record delivered nothing.
    let mut next = 5;
    while let Ok((_, msg)) = a.inbound.try_recv() {
        assert_eq!(
            msg,
            text(next),
            "only authentic messages reach the application"
        );
        next += 1;
    }
    assert!(next < 10, "the tampered record was not delivered");

    // A stays up: it serves a new peer.
    let (config_c, key_c) = keyed(153);
    let mut c = TestNode::start(config_c).await;
    c.net.connect(a.addr());
    let info = a.connected().await;
    assert_eq!((info.ip, info.conn.remote_key), (lo(153), Some(key_c)));
    c.connected().await;
    c.net
        .handle(a.ip())
        .expect("c registered a")
        .send(&text(42))
        .expect("encodes");
    assert_eq!(a.next_msg().await.1, text(42));
}

#[actix::test]
async fn a_pinned_peer_presenting_another_key_is_refused() {
    let (config_b, key_b) = keyed(155);
    let b = TestNode::start(config_b).await;
    let wrong = NodeKey::generate().public();
    let (config_a, _) = keyed(154);
    let a = TestNode::start(NetworkConfig {
        peers: vec![PeerAddr {
            key: Some(wrong),
            addr: b.addr(),
        }],
        ..config_a
    })
    .await;
    eventually("a refuses b's key", || async {
        (disconnects(a.net.metrics(), DisconnectReason::KeyMismatch, false) > 0).then_some(())
    })
    .await;
    eventually("b is told why", || async {
        (disconnects(b.net.metrics(), DisconnectReason::KeyMismatch, true) > 0).then_some(())
    })
    .await;
    assert!(a.net.peers().await.is_empty());
    a.net.shutdown().await;

    // Pinned to the right key: admitted.
    let (config_a2, _) = keyed(156);
    let mut a2 = TestNode::start(NetworkConfig {
        peers: vec![format!("{key_b}@{}", b.addr()).parse().expect("peer entry")],
        ..config_a2
    })
    .await;
    let info = a2.connected().await;
    assert_eq!((info.ip, info.conn.remote_key), (b.ip(), Some(key_b)));
}

#[actix::test]
async fn allowed_keys_admit_listed_keys_only() {
    let (config_b, key_b) = keyed(158);
    let (config_c, _) = keyed(159);
    let (config_a, _) = keyed(157);
    let mut a = TestNode::start(NetworkConfig {
        allowed_keys: vec![key_b],
        ..config_a
    })
    .await;
    let mut b = TestNode::start(config_b).await;
    let c = TestNode::start(config_c).await;
    c.net.connect(a.addr());
    eventually("a refuses c's key", || async {
        (disconnects(a.net.metrics(), DisconnectReason::KeyNotAllowed, false) > 0).then_some(())
    })
    .await;
    eventually("c is told why", || async {
        (disconnects(c.net.metrics(), DisconnectReason::KeyNotAllowed, true) > 0).then_some(())
    })
    .await;
    b.net.connect(a.addr());
    let info = a.connected().await;
    assert_eq!((info.ip, info.conn.remote_key), (b.ip(), Some(key_b)));
    b.connected().await;
    let peers = a.net.peers().await;
    assert_eq!(peers.len(), 1, "{peers:?}");
}

#[actix::test]
async fn a_node_reached_under_its_own_key_is_a_self_connection() {
    // Two processes' worth of state (different nonces), one identity: the key says "self".
    let key = NodeKey::generate();
    let a = TestNode::start(NetworkConfig {
        node_key: Some(key.clone()),
        ..test_config(160)
    })
    .await;
    let b = TestNode::start(NetworkConfig {
        node_key: Some(key),
        ..test_config(161)
    })
    .await;
    a.net.connect(b.addr());
    eventually("both ends see themselves", || async {
        (disconnects(a.net.metrics(), DisconnectReason::SelfConnection, false) > 0
            && disconnects(b.net.metrics(), DisconnectReason::SelfConnection, false) > 0)
            .then_some(())
    })
    .await;
    assert!(a.net.peers().await.is_empty());
    assert!(b.net.peers().await.is_empty());
}

#[actix::test]
async fn a_clear_text_client_gets_nothing_in_clear() {
    let node = TestNode::on(162).await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(lo(163), 0)).expect("bind");
    let mut stream: TcpStream = socket.connect(node.addr()).await.expect("connects");
    let hello = Frame::Hello(hello_for(node.net.config(), 7)).encode();
    stream.write_all(&hello).await.expect("writes");
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await;
    // Closed (EOF or reset) without a byte: no Hello, no magic, no genesis.
    assert!(read.is_ok(), "the node closes the connection");
    assert!(got.is_empty(), "the node sent {} bytes", got.len());
    eventually("handshake failure counted", || async {
        (disconnects(node.net.metrics(), DisconnectReason::HandshakeFailed, false) > 0)
            .then_some(())
    })
    .await;
}
