//! Two nodes sync through a byte-copying relay (a userspace TCP proxy written here, on
//! 127.0.2.150-155): over the default Noise transport the relayed bytes contain neither the
//! network magic, the genesis hash nor any block payload in clear, and the sync completes. The
//! same relay over the plaintext transport does see all three: the detector can fail.

mod sync_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerlink::chain::ChainStore;
use peerlink::sync::start_node;
use peerlink_actors::secure::Transport;
use peerlink_actors::NetworkConfig;
use sync_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

const BLOCKS: u64 = 200;

/// Everything the relay copied, per direction.
#[derive(Default)]
struct Seen {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

/// Accepts one connection on `relay_ip` and copies bytes both ways to `server`, dialling from
/// `relay_ip` too (so both nodes key the relay by that IP), recording every byte.
async fn relay(relay_ip: [u8; 4], server: SocketAddr) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind(SocketAddr::from((relay_ip, 0)))
        .await
        .expect("relay binds");
    let addr = listener.local_addr().expect("relay addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    actix_rt::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((relay_ip, 0)))
            .expect("relay dials from its IP");
        let Ok(upstream) = socket.connect(server).await else {
            return;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let up = record.clone();
        actix_rt::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                up.lock().unwrap().to_server.extend_from_slice(&buf[..n]);
            }
            let _ = uw.shutdown().await;
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = ur.read(&mut buf).await {
            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            record
                .lock()
                .unwrap()
                .to_client
                .extend_from_slice(&buf[..n]);
        }
        let _ = cw.shutdown().await;
    });
    (addr, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn config(ip: [u8; 4], transport: Transport) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::from((ip, 0)),
        transport,
        ..net_config(0)
    }
}

/// Syncs a fresh node from a node holding `BLOCKS` blocks through the relay; returns what the
/// relay saw, the magic, the genesis hash and the payloads of the chain.
async fn sync_through_relay(
    base: u8,
    transport: Transport,
) -> (Seen, [u8; 4], [u8; 32], Vec<Vec<u8>>) {
    let dir_a = chain_dir(BLOCKS);
    let store_a = ChainStore::open(dir_a.path(), params()).expect("store");
    let tip = store_a.tip_hash();
    let genesis = store_a.genesis_hash();
    let payloads: Vec<Vec<u8>> = (1..=BLOCKS)
        .map(|h| store_a.block(h).expect("read").expect("block").payload)
        .collect();
    let cfg_a = config([127, 0, 2, base], transport);
    let magic = cfg_a.magic.to_be_bytes();
    let a = start_node(cfg_a, store_a, sync_config())
        .await
        .expect("a starts");
    let (relay_addr, seen) = relay([127, 0, 2, base + 1], a.net.local_addr()).await;
    let dir_b = tempfile::tempdir().expect("tmp");
    let store_b = ChainStore::open(dir_b.path(), params()).expect("store");
    let b = Node {
        node: start_node(
            config([127, 0, 2, base + 2], transport),
            store_b,
            sync_config(),
        )
        .await
        .expect("b starts"),
        dir: dir_b,
    };
    b.node.net.connect(relay_addr);
    wait_tip(&b, BLOCKS, tip, Duration::from_secs(30)).await;
    b.node.shutdown().await;
    a.shutdown().await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    drop(dir_a);
    (seen, magic, genesis, payloads)
}

#[actix::test]
async fn relay_sees_no_clear_text_and_sync_completes() {
    let (seen, magic, genesis, payloads) = sync_through_relay(150, Transport::Noise).await;
    assert!(seen.to_server.len() > 64 && seen.to_client.len() > BLOCKS as usize * 256);
    for (dir, bytes) in [("to a", &seen.to_server), ("to b", &seen.to_client)] {
        assert!(!contains(bytes, &magic), "magic in clear {dir}");
        assert!(!contains(bytes, &genesis), "genesis hash in clear {dir}");
        // Any 16-byte piece of any payload (256 random bytes each) would be a leak.
        let windows: std::collections::HashSet<&[u8]> = bytes.windows(16).collect();
        for (h, p) in payloads.iter().enumerate() {
            for w in p.chunks(16) {
                assert!(
                    !windows.contains(w),
                    "payload of block {} in clear {dir}",
                    h + 1
                );
            }
        }
    }
}

/// The control: the same relay, plaintext transport, sees everything the test above looks for.
#[actix::test]
async fn plaintext_relay_sees_magic_genesis_and_payloads() {
    let (seen, magic, genesis, payloads) = sync_through_relay(153, Transport::Plaintext).await;
    let both = [seen.to_server.as_slice(), seen.to_client.as_slice()].concat();
    assert!(contains(&both, &magic));
    assert!(contains(&both, &genesis));
    assert!(contains(
        &seen.to_client,
        &payloads[BLOCKS as usize / 2][..16]
    ));
}
