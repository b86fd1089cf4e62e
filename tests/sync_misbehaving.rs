//! A fake peer (a raw `Network<NodeMsg>` with its own actor) answers `GetHashes` honestly and
//! `GetBlocks` with one corrupted block: the node disconnects it as `Misbehaving` and stores
//! nothing of the bad answer.

mod sync_support;

use std::time::Duration;

use actix::prelude::*;
use peerlink::app::{NodeMsg, WireHash};
use peerlink::chain::{genesis_for, genesis_hash, Block, ChainStore};
use peerlink_actors::{DisconnectReason, Inbound, Network, PeerEvent, PeerHandle};
use sync_support::*;
use tokio::sync::mpsc;

/// How the fake corrupts the blocks it serves.
#[derive(Clone, Copy)]
enum Corruption {
    /// Flips a payload byte of block 5: its hash changes.
    BadHash,
    /// Sets a wrong prev hash on block 5.
    WrongPrev,
}

const BAD_HEIGHT: u64 = 5;

struct FakePeer {
    chain: Vec<Block>,
    corruption: Corruption,
    events: mpsc::UnboundedSender<PeerEvent>,
}

impl Actor for FakePeer {
    type Context = Context<Self>;
}

impl Handler<Inbound<NodeMsg>> for FakePeer {
    type Result = ();
    fn handle(&mut self, m: Inbound<NodeMsg>, _: &mut Context<Self>) {
        for msg in m.msgs() {
            self.answer(&m.from, msg);
        }
    }
}

impl FakePeer {
    fn answer(&self, to: &PeerHandle, msg: NodeMsg) {
        let range = |from: u64, count: u32| {
            (from..from + u64::from(count)).filter(|h| (*h as usize) < self.chain.len())
        };
        let reply = match msg {
            NodeMsg::GetHashes {
                request_id,
                from,
                count,
            } => NodeMsg::Hashes {
                request_id,
                from,
                hashes: range(from, count)
                    .map(|h| WireHash(self.chain[h as usize].hash()))
                    .collect(),
            },
            NodeMsg::GetBlocks {
                request_id,
                from,
                count,
            } => {
                let mut blocks: Vec<Block> = range(from, count)
                    .map(|h| self.chain[h as usize].clone())
                    .collect();
                for b in blocks.iter_mut().filter(|b| b.height == BAD_HEIGHT) {
                    match self.corruption {
                        Corruption::BadHash => b.payload[0] ^= 0xff,
                        Corruption::WrongPrev => b.prev = [0xee; 32],
                    }
                }
                NodeMsg::Blocks { request_id, blocks }
            }
            _ => return,
        };
        let _ = to.send(&reply);
    }
}

impl Handler<PeerEvent> for FakePeer {
    type Result = ();
    fn handle(&mut self, e: PeerEvent, _: &mut Context<Self>) {
        let _ = self.events.send(e);
    }
}

fn fake_chain(n: u64) -> Vec<Block> {
    let mut chain = vec![genesis_for(params())];
    for h in 1..=n {
        let prev = chain.last().unwrap().hash();
        chain.push(Block::signed(
            h,
            prev,
            h,
            vec![h as u8; 32],
            &producer_key(),
        ));
    }
    chain
}

async fn bad_blocks_disconnect(corruption: Corruption, fake_ip: u8, node_ip: u8) {
    let chain = fake_chain(20);
    let (tx, mut events) = mpsc::unbounded_channel();
    let fake = FakePeer {
        chain: chain.clone(),
        corruption,
        events: tx,
    }
    .start();
    let mut cfg = net_config(fake_ip);
    cfg.genesis = genesis_hash(params());
    let net: Network<NodeMsg> = Network::start(cfg, fake.clone().recipient()).await.unwrap();
    net.set_best_height(20);
    net.subscribe(fake.recipient());

    let node = Node::start(node_ip, 0, sync_config()).await;
    node.node.net.connect(net.local_addr());
    let record = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.expect("events") {
                PeerEvent::Disconnected(r) => return r,
                PeerEvent::Connected { .. } => continue,
            }
        }
    })
    .await
    .expect("the fake peer is disconnected");
    assert_eq!(record.reason, DisconnectReason::Misbehaving);
    assert!(record.by_peer, "the node closed the connection");
    let s = node.status().await;
    assert!(s.misbehaving >= 1);
    assert!(
        s.height < BAD_HEIGHT,
        "nothing at or above the bad block is stored: {}",
        s.height
    );
    net.shutdown().await;
    node.node.shutdown().await;
    let store = ChainStore::open(node.dir.path(), params()).unwrap();
    assert!(store.height() < BAD_HEIGHT);
}

#[actix::test]
async fn a_block_with_a_bad_hash_gets_the_peer_disconnected() {
    bad_blocks_disconnect(Corruption::BadHash, 21, 22).await;
}

#[actix::test]
async fn a_block_with_a_wrong_prev_gets_the_peer_disconnected() {
    bad_blocks_disconnect(Corruption::WrongPrev, 23, 24).await;
}
