//! Hostile sources and connection churn during sync, in process on 127.0.8.x (real
//! `Network<NodeMsg>`s on real sockets, real redb stores):
//!
//! - storm: a peer that claims a far higher chain and answers every request with a well-formed
//!   empty list (re-announcing a new tip each time) is asked a bounded number of times, at a
//!   bounded rate, and then dropped as misbehaving, while the node syncs from an honest peer;
//! - announce: a new connection gets exactly one `Announce` per tip;
//! - replacement: the source restarts (new nonce, same IP) while blocks are in flight; sync
//!   goes on over the new connection;
//! - window: a source that withholds the lowest range of 1 MiB blocks cannot make the node hold
//!   more than the byte window plus the answers in flight.

mod sync_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use peerlink::app::{NodeMsg, WireHash};
use peerlink::chain::{genesis_for, genesis_hash, produce, Block, ChainStore};
use peerlink::sync::SyncConfig;
use peerlink_actors::{DisconnectReason, Inbound, Network, NetworkConfig, PeerEvent, PeerHandle};
use sync_support::*;
use tokio::sync::mpsc;

/// Network config on 127.0.8.`last`.
fn net8(last: u8) -> NetworkConfig {
    NetworkConfig {
        listen: SocketAddr::from(([127, 0, 8, last], 0)),
        ..net_config(last)
    }
}

/// A node on 127.0.8.`last` with the store in `dir`.
async fn node8(dir: tempfile::TempDir, last: u8, cfg: SyncConfig) -> Node {
    let store = ChainStore::open(dir.path(), params()).expect("store opens");
    let setup = peerlink::sync::NodeSetup {
        producer_key: Some(producer_key()),
        ..peerlink::sync::NodeSetup::default()
    };
    let node = peerlink::sync::start_node_with(net8(last), store, cfg, setup)
        .await
        .expect("node starts");
    Node { node, dir }
}

/// A store of `n` blocks of `bytes` payload bytes.
fn small_chain(n: u64, bytes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = ChainStore::open(dir.path(), params()).expect("store opens");
    produce(&mut s, &producer_key(), n, bytes).expect("produce");
    dir
}

/// A fake peer's network on 127.0.8.`last`, delivering to `app`, announcing `height`.
async fn fake_net<A>(last: u8, app: Addr<A>, height: u64) -> Network<NodeMsg>
where
    A: Actor<Context = Context<A>> + Handler<Inbound<NodeMsg>> + Handler<PeerEvent>,
{
    let mut cfg = net8(last);
    cfg.genesis = genesis_hash(params());
    let net: Network<NodeMsg> = Network::start(cfg, app.clone().recipient())
        .await
        .expect("fake network starts");
    net.set_best_height(height);
    net.subscribe(app.recipient());
    net
}

// ---------------------------------------------------------------------------------------------
// Storm

/// Claims a far higher chain, answers every request with an empty list and re-announces a new
/// tip after each answer.
struct StormPeer {
    asked: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<PeerEvent>,
}

const STORM_HEIGHT: u64 = 1_000_000;

impl Actor for StormPeer {
    type Context = Context<Self>;
}

impl Handler<Inbound<NodeMsg>> for StormPeer {
    type Result = ();
    fn handle(&mut self, m: Inbound<NodeMsg>, _: &mut Context<Self>) {
        for msg in m.msgs() {
            self.on_msg(&m.from, msg);
        }
    }
}

impl StormPeer {
    fn on_msg(&mut self, from: &PeerHandle, msg: NodeMsg) {
        let reply = match msg {
            NodeMsg::GetHashes {
                request_id, from, ..
            } => NodeMsg::Hashes {
                request_id,
                from,
                hashes: Vec::new(),
            },
            NodeMsg::GetBlocks { request_id, .. } => NodeMsg::Blocks {
                request_id,
                blocks: Vec::new(),
            },
            _ => return,
        };
        let n = self.asked.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = from.send(&reply);
        let mut tip = [0x5a; 32];
        tip[..8].copy_from_slice(&n.to_be_bytes());
        let _ = from.send(&NodeMsg::Announce {
            height: STORM_HEIGHT + n,
            tip,
        });
    }
}

impl Handler<PeerEvent> for StormPeer {
    type Result = ();
    fn handle(&mut self, e: PeerEvent, _: &mut Context<Self>) {
        if let PeerEvent::Connected { handle, .. } = &e {
            let _ = handle.send(&NodeMsg::Announce {
                height: STORM_HEIGHT,
                tip: [0x5a; 32],
            });
        }
        let _ = self.events.send(e);
    }
}

#[actix::test]
async fn a_source_answering_empty_lists_is_asked_rarely_then_dropped_while_sync_goes_on() {
    let honest = node8(small_chain(3_000, 64), 2, sync_config()).await;
    let target = honest.status().await;
    let asked = Arc::new(AtomicU64::new(0));
    let (tx, mut events) = mpsc::unbounded_channel();
    let storm = StormPeer {
        asked: asked.clone(),
        events: tx,
    }
    .start();
    let storm_net = fake_net(3, storm, STORM_HEIGHT).await;
    let cfg = SyncConfig {
        no_progress_cooldown_ms: 100,
        max_no_progress_answers: 6,
        ..sync_config()
    };
    let fresh = node8(tempfile::tempdir().unwrap(), 4, cfg).await;
    let started = Instant::now();
    fresh.node.net.connect(storm_net.local_addr());
    fresh.node.net.connect(honest.addr());

    let s = wait_tip(&fresh, 3_000, target.tip, Duration::from_secs(30)).await;
    let synced_in = started.elapsed();
    // Dropped after 6 answers without progress: cooldowns 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s.
    let record = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await.expect("events") {
                PeerEvent::Disconnected(r) => return r,
                PeerEvent::Connected { .. } => continue,
            }
        }
    })
    .await
    .expect("the storm peer is dropped");
    let elapsed = started.elapsed();
    let n = asked.load(Ordering::Relaxed);
    let rate = n as f64 / elapsed.as_secs_f64();
    eprintln!(
        "storm: synced in {synced_in:?}; storm peer asked {n} times in {elapsed:?} \
         ({rate:.1}/s), dropped as {:?}",
        record.reason
    );
    assert_eq!(record.reason, DisconnectReason::Misbehaving);
    assert!(record.by_peer, "the node dropped it");
    assert!(s.misbehaving <= 1, "only the storm peer: {s:?}");
    // Before: 14-26 k requests per second. Now: at most 6 strikes plus the requests already
    // in flight when each answer came back.
    assert!(n <= 20, "storm peer asked {n} times");
    assert!(rate < 20.0, "storm peer asked {rate:.1} times per second");
    storm_net.shutdown().await;
    fresh.node.shutdown().await;
    honest.node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// One Announce per tip per connection

struct Recorder {
    got: mpsc::UnboundedSender<NodeMsg>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<Inbound<NodeMsg>> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Inbound<NodeMsg>, _: &mut Context<Self>) {
        for msg in m.msgs() {
            if matches!(msg, NodeMsg::Announce { .. }) {
                // Ask something so that a later answer marks "everything before it has arrived".
                let _ = m.from.send(&NodeMsg::GetHashes {
                    request_id: 1,
                    from: 0,
                    count: 1,
                });
            }
            let _ = self.got.send(msg);
        }
    }
}

impl Handler<PeerEvent> for Recorder {
    type Result = ();
    fn handle(&mut self, _: PeerEvent, _: &mut Context<Self>) {}
}

#[actix::test]
async fn a_new_connection_gets_one_announce_per_tip() {
    let node = node8(small_chain(10, 16), 20, sync_config()).await;
    let (tx, mut got) = mpsc::unbounded_channel();
    let rec = Recorder { got: tx }.start();
    let net = fake_net(21, rec, 0).await;
    net.connect(node.addr());
    let mut announces = Vec::new();
    // Everything the node sent before its answer to our GetHashes has arrived with it.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match got.recv().await.expect("messages") {
                NodeMsg::Hashes { .. } => return,
                NodeMsg::Announce { height, tip } => announces.push((height, tip)),
                _ => {}
            }
        }
    })
    .await
    .expect("the node answers");
    let tip = node.status().await.tip;
    assert_eq!(
        announces,
        vec![(10, tip)],
        "exactly one Announce of the tip"
    );
    // A new tip: exactly one more.
    let produced = node.node.produce().await.expect("produce");
    announces.clear();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match got.recv().await.expect("messages") {
                NodeMsg::Hashes { .. } => return,
                NodeMsg::Announce { height, tip } => announces.push((height, tip)),
                _ => {}
            }
        }
    })
    .await
    .expect("the node announces and answers");
    assert_eq!(announces, vec![(11, produced.hash)]);
    net.shutdown().await;
    node.node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Replacement during sync

#[actix::test]
async fn sync_goes_on_over_the_new_connection_when_the_source_restarts() {
    const N: u64 = 40_000;
    let seed = small_chain(N, 16);
    let first_dir = copy_chain(seed.path());
    let second_dir = copy_chain(seed.path());
    let first = node8(first_dir, 30, sync_config()).await;
    // The restarted source, started before it is needed so the replacement comes fast.
    let second = node8(second_dir, 30, sync_config()).await;
    let target = first.status().await;
    // Small requests, few in flight: the sync takes many round trips.
    let slow = SyncConfig {
        blocks_per_request: 16,
        max_in_flight: 2,
        ..sync_config()
    };
    let fresh = node8(tempfile::tempdir().unwrap(), 31, slow).await;
    fresh.node.net.connect(first.addr());
    // Blocks are in flight: the node has some, not all.
    wait_for("sync under way", Duration::from_secs(30), || async {
        let s = fresh.status().await;
        (s.height > 0).then_some(())
    })
    .await;
    // The source "restarts": a new process (new nonce) on the same IP dials the node while
    // the old connection is still open; the node replaces the old connection at once.
    second.node.net.connect(fresh.addr());
    wait_for(
        "the connection replaced",
        Duration::from_secs(10),
        || async {
            let st = fresh.node.net.stats().await.ok()?;
            (st.replaced >= 1).then_some(())
        },
    )
    .await;
    let height_at_replace = fresh.status().await.height;
    first.node.shutdown().await;
    let s = wait_tip(&fresh, N, target.tip, Duration::from_secs(60)).await;
    eprintln!("replaced at height {height_at_replace}; synced: {s:?}");
    assert!(
        height_at_replace < N,
        "the replacement happened mid-sync ({height_at_replace})"
    );
    assert_eq!(s.misbehaving, 0);
    assert_eq!(s.peers, 1);
    fresh.node.shutdown().await;
    second.node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Byte window

const MIB: usize = 1024 * 1024;

/// Serves a chain of 1 MiB blocks, but never answers the first request for the lowest range.
struct Withholder {
    chain: Vec<Block>,
    withheld: bool,
}

impl Actor for Withholder {
    type Context = Context<Self>;
}

impl Handler<Inbound<NodeMsg>> for Withholder {
    type Result = ();
    fn handle(&mut self, m: Inbound<NodeMsg>, _: &mut Context<Self>) {
        for msg in m.msgs() {
            self.on_msg(&m.from, msg);
        }
    }
}

impl Withholder {
    fn on_msg(&mut self, to: &PeerHandle, msg: NodeMsg) {
        let len = self.chain.len() as u64;
        let reply = match msg {
            NodeMsg::GetHashes {
                request_id,
                from,
                count,
            } => NodeMsg::Hashes {
                request_id,
                from,
                hashes: (from..(from + u64::from(count)).min(len))
                    .map(|h| WireHash(self.chain[h as usize].hash()))
                    .collect(),
            },
            NodeMsg::GetBlocks {
                request_id,
                from,
                count,
            } => {
                if from == 1 && !self.withheld {
                    self.withheld = true;
                    return;
                }
                // At most 2 MiB of blocks, like the node.
                let blocks = (from..(from + u64::from(count)).min(len))
                    .take(2)
                    .map(|h| self.chain[h as usize].clone())
                    .take_while({
                        let mut bytes = 0;
                        move |b| {
                            bytes += b.wire_size();
                            bytes <= 2 * MIB || bytes == b.wire_size()
                        }
                    })
                    .collect();
                NodeMsg::Blocks { request_id, blocks }
            }
            _ => return,
        };
        let _ = to.send(&reply);
    }
}

impl Handler<PeerEvent> for Withholder {
    type Result = ();
    fn handle(&mut self, _: PeerEvent, _: &mut Context<Self>) {}
}

#[actix::test]
async fn a_withheld_lowest_range_of_large_blocks_holds_at_most_the_byte_window() {
    const N: u64 = 48;
    let mut chain = vec![genesis_for(params())];
    let key = producer_key();
    for h in 1..=N {
        let prev = chain.last().unwrap().hash();
        // Under `max_block_bytes` (1 MiB with the 152-byte header).
        chain.push(Block::signed(h, prev, h, vec![h as u8; MIB - 256], &key));
    }
    let tip = chain.last().unwrap().hash();
    let w = Withholder {
        chain,
        withheld: false,
    }
    .start();
    let w_net = fake_net(40, w, N).await;
    let cfg = SyncConfig {
        window_bytes: 6 * MIB as u64,
        blocks_per_request: 2,
        max_in_flight: 4,
        max_in_flight_per_peer: 4,
        ..sync_config()
    };
    // Requests are scheduled while less than the window is held; each answer in flight can
    // bring up to a frame (the requester accepts any answer within its frame cap).
    let frame_cap = net8(41).max_frame_bytes;
    let bound = cfg.window_bytes + (cfg.max_in_flight * frame_cap) as u64;
    let fresh = node8(tempfile::tempdir().unwrap(), 41, cfg).await;
    fresh.node.net.connect(w_net.local_addr());
    let max_held = AtomicU64::new(0);
    let (fresh_ref, max_ref) = (&fresh, &max_held);
    wait_for(
        "sync past the withheld range",
        Duration::from_secs(60),
        || async move {
            let s = fresh_ref.status().await;
            max_ref.fetch_max(s.window_held_bytes, Ordering::Relaxed);
            assert!(
                s.window_held_bytes <= bound,
                "holding {} bytes, over the window plus the answers in flight ({bound})",
                s.window_held_bytes
            );
            (s.height == N && s.tip == tip).then_some(())
        },
    )
    .await;
    let max_held = max_held.load(Ordering::Relaxed);
    eprintln!("window: held at most {max_held} bytes (bound {bound})");
    assert!(
        max_held >= 2 * MIB as u64,
        "blocks above the withheld range were held ({max_held}), so the bound was exercised"
    );
    fresh.node.shutdown().await;
    w_net.shutdown().await;
}
