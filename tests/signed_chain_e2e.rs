//! Acceptance tests of signed blocks, fork choice and bans against real `peerlink run`
//! processes, with raw TCP peers written here from PROTOCOL.md (frames encoded by hand with
//! rmp-serde, the node's App messages as `NodeMsg`): a longer chain not signed by a producer is
//! refused and its sender banned (before the handshake from then on, across kill -9, until
//! `unban`); a stranger's block, a block from the future and an oversized block are each refused
//! with their reason; an equal-height fork with a lower tip hash does not replace the tip;
//! networks with different producers refuse each other; the admin API refuses form posts, foreign
//! Host headers and missing tokens, and `peerlink ban` / `bans` / `unban` round-trip. This suite
//! uses 127.0.110.x.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use peerlink::app::{NodeMsg, WireHash};
use peerlink::chain::producer::hex;
use peerlink::chain::{genesis_hash, Block, ChainParams, ProducerKey};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::Value;

/// The node's default network name.
const NETWORK: &str = "devnet";

/// How long a raw peer waits for the node's next frame.
const READ_LIMIT: Duration = Duration::from_secs(15);

/// A frame as PROTOCOL.md section 3 describes it (rmp-serde: enums as one-entry maps, struct
/// variants as arrays).
#[derive(Debug, Serialize, Deserialize)]
enum Wire {
    Hello {
        magic: ByteBuf,
        version: u32,
        genesis: ByteBuf,
        nonce: u64,
        listen_port: u16,
        best_height: u64,
        user_agent: String,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Disconnect {
        reason: String,
    },
    App(ByteBuf),
    /// Address gossip (section 3.2): a node with discovery on asks every peer once.
    GetAddrs {},
    Addrs {
        addrs: Vec<(ByteBuf, u16, u64)>,
    },
}

/// A peer on a raw TCP socket bound to its own loopback IP.
struct RawPeer {
    s: TcpStream,
}

impl RawPeer {
    /// Connects from `from` (port 0) to `to`.
    fn connect(from: IpAddr, to: SocketAddr) -> RawPeer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let stream = rt
            .block_on(async {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(SocketAddr::new(from, 0))?;
                sock.connect(to).await
            })
            .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
        let s = stream.into_std().expect("std socket");
        s.set_nonblocking(false).expect("blocking");
        s.set_read_timeout(Some(READ_LIMIT)).expect("timeout");
        RawPeer { s }
    }

    fn send(&mut self, f: &Wire) {
        let body = rmp_serde::to_vec(f).expect("encode");
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        // The node may have closed already; what it said before is what the test reads.
        let _ = self.s.write_all(&out);
    }

    fn send_msg(&mut self, m: &NodeMsg) {
        let payload = rmp_serde::to_vec(m).expect("encode NodeMsg");
        self.send(&Wire::App(ByteBuf::from(payload)));
    }

    /// The next frame, or `None` when the node closed the connection.
    fn read(&mut self) -> Option<Wire> {
        let mut len = [0u8; 4];
        match self.s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading from the node: {e}"),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).ok()?;
        match rmp_serde::from_slice(&body).expect("a frame of PROTOCOL.md") {
            // This raw peer has no addresses to share and wants none: gossip is skipped.
            Wire::GetAddrs {} | Wire::Addrs { .. } => self.read(),
            frame => Some(frame),
        }
    }

    /// Sends our Hello (genesis `genesis`, height `height`) and returns the node's first frame.
    fn hello(&mut self, genesis: [u8; 32], height: u64) -> Wire {
        self.send(&Wire::Hello {
            magic: ByteBuf::from(b"plnk".to_vec()),
            version: 1,
            genesis: ByteBuf::from(genesis.to_vec()),
            nonce: rand::random(),
            listen_port: 0,
            best_height: height,
            user_agent: "raw-test-peer".into(),
        });
        self.read().expect("a first frame from the node")
    }

    /// Announces the tip of `chain` (index = height), then serves it until the node
    /// disconnects; returns the reason it gave.
    fn serve(&mut self, chain: &[Block]) -> String {
        let tip = chain.last().expect("a chain");
        self.send_msg(&NodeMsg::Announce {
            height: tip.height,
            tip: tip.hash(),
        });
        loop {
            match self.read() {
                None => return "closed without Disconnect".into(),
                Some(Wire::Disconnect { reason }) => return reason,
                Some(Wire::Ping { nonce }) => self.send(&Wire::Pong { nonce }),
                Some(Wire::App(p)) => {
                    if let Some(reply) = answer(chain, &p) {
                        self.send_msg(&reply);
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// The answer to a `GetHashes` / `GetBlocks` in `payload` from `chain`.
fn answer(chain: &[Block], payload: &[u8]) -> Option<NodeMsg> {
    let range = |from: u64, count: u32| {
        (from..from + u64::from(count)).filter(|h| (*h as usize) < chain.len())
    };
    match rmp_serde::from_slice(payload).expect("a NodeMsg") {
        NodeMsg::GetHashes {
            request_id,
            from,
            count,
        } => Some(NodeMsg::Hashes {
            request_id,
            from,
            hashes: range(from, count)
                .map(|h| WireHash(chain[h as usize].hash()))
                .collect(),
        }),
        NodeMsg::GetBlocks {
            request_id,
            from,
            count,
        } => Some(NodeMsg::Blocks {
            request_id,
            blocks: range(from, count)
                .map(|h| chain[h as usize].clone())
                .collect(),
        }),
        _ => None,
    }
}

/// `len` blocks after genesis of `params`; block `h` is made by `make(h, prev)`.
fn chain_of(
    params: &ChainParams,
    len: u64,
    mut make: impl FnMut(u64, [u8; 32]) -> Block,
) -> Vec<Block> {
    let mut chain = vec![peerlink::chain::genesis_for(params)];
    for h in 1..=len {
        let prev = chain[h as usize - 1].hash();
        chain.push(make(h, prev));
    }
    chain
}

fn now_ms() -> u64 {
    peerlink::chain::produce::now_ms()
}

/// Runs the `peerlink` binary; status, stdout, stderr.
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_peerlink"))
        .args(args)
        .env_remove("PEERLINK_ADMIN_TOKEN")
        .output()
        .expect("run peerlink");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `peerlink keygen --data-dir dir`: the new key.
fn keygen(dir: &Path) -> ProducerKey {
    let (ok, out, err) = cli(&["keygen", "--data-dir", &dir.display().to_string()]);
    assert!(ok, "keygen: {err}");
    assert!(out.contains("public key "), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ProducerKey::path_in(dir))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }
    ProducerKey::load_from(dir).expect("key readable")
}

/// A node on `ip` whose network's producer is `key` (data in `data`), with extra `config`
/// (which starts with the `[network]` section). The raw peers of these tests speak the frame
/// protocol as PROTOCOL.md writes it, without the Noise layer, so the node runs plaintext.
fn producer_node(ip_s: &str, data: &Path, key: &ProducerKey, config: &str) -> Node {
    let ip = ip(ip_s);
    let config = config.replacen("[network]\n", "[network]\ntransport = \"plaintext\"\n", 1);
    assert!(config.contains("plaintext"), "config starts with [network]");
    Node::start_with(
        ip,
        free_port(ip),
        &[],
        &config,
        Some(data),
        &["--producer", &hex(&key.public())],
    )
}

fn bans(node: &Node) -> Vec<Value> {
    node.get_json("/bans")["bans"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ban_of(node: &Node, ip: &str) -> Option<Value> {
    bans(node).into_iter().find(|b| b["ip"] == ip)
}

#[test]
fn an_unsigned_longer_chain_is_refused_and_its_sender_banned_across_restarts() {
    let data = tempfile::tempdir().expect("tempdir");
    let key = keygen(data.path());
    let (ok, _, err) = cli(&[
        "produce",
        "--blocks",
        "3",
        "--block-bytes",
        "64",
        "--data-dir",
        &data.path().display().to_string(),
    ]);
    assert!(ok, "produce: {err}");
    let mut node = producer_node("127.0.110.2", data.path(), &key, FAST_PINGS);
    let before = node.status();
    assert_eq!(before["height"], 3);

    // A stranger's chain: 40 blocks that link correctly from our genesis, signed by a key that
    // is not a producer of this network.
    let params = ChainParams::new(NETWORK, [key.public()]);
    let stranger = ProducerKey::from_seed([0x77; 32]);
    let forged = chain_of(&params, 40, |h, prev| {
        Block::signed(h, prev, now_ms(), vec![h as u8; 64], &stranger)
    });
    let raw_ip = ip("127.0.110.3");
    let mut raw = RawPeer::connect(raw_ip, node.listen);
    assert!(matches!(
        raw.hello(genesis_hash(&params), 40),
        Wire::Hello { .. }
    ));
    assert_eq!(raw.serve(&forged), "Misbehaving");

    // The node kept its chain, banned the IP with the reason, and recorded the disconnect.
    let after = node.status();
    assert_eq!(
        (after["height"].clone(), after["tip"].clone()),
        (before["height"].clone(), before["tip"].clone())
    );
    let ban = wait_for("the ban to be listed", || ban_of(&node, "127.0.110.3"));
    let reason = ban["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("invalid_block") && reason.contains("not a producer"),
        "{ban}"
    );
    assert_eq!(ban["source"], "sync");
    assert!(
        ban["until"].as_u64().unwrap_or(0) > now_ms() / 1000 + 23 * 3600,
        "24 h: {ban}"
    );
    let (ok, out, err) = cli(&["bans", "--admin", &node.admin]);
    assert!(ok && out.contains("127.0.110.3"), "{out}{err}");
    wait_for("the disconnect in the history", || {
        node.recent_disconnects()
            .into_iter()
            .find(|d| d["ip"] == "127.0.110.3" && d["reason"] == "misbehaving")
    });

    // Its next connection is refused before the handshake: Disconnect{Banned} instead of Hello.
    let mut again = RawPeer::connect(raw_ip, node.listen);
    match again.read() {
        Some(Wire::Disconnect { reason }) => assert_eq!(reason, "Banned"),
        other => panic!("expected Disconnect{{Banned}} first, got {other:?}"),
    }

    // kill -9 and restart on the same data dir: the ban is still there and still applied.
    node.kill9();
    let node = producer_node("127.0.110.2", data.path(), &key, FAST_PINGS);
    assert!(ban_of(&node, "127.0.110.3").is_some(), "{:?}", bans(&node));
    let mut again = RawPeer::connect(raw_ip, node.listen);
    match again.read() {
        Some(Wire::Disconnect { reason }) => assert_eq!(reason, "Banned"),
        other => panic!("after restart: expected Disconnect{{Banned}}, got {other:?}"),
    }

    // unban lets it back in.
    let (ok, out, err) = cli(&["unban", "127.0.110.3", "--admin", &node.admin]);
    assert!(ok, "{out}{err}");
    assert!(ban_of(&node, "127.0.110.3").is_none());
    let mut back = RawPeer::connect(raw_ip, node.listen);
    assert!(matches!(
        back.hello(genesis_hash(&params), 0),
        Wire::Hello { .. }
    ));
}

/// Makes block `h` after `prev`.
type MakeBlock<'a> = dyn Fn(u64, [u8; 32]) -> Block + 'a;

#[test]
fn a_strangers_block_a_future_block_and_an_oversized_block_are_each_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    let key = keygen(data.path());
    let config = format!("{FAST_PINGS}[sync]\nmax_block_bytes = 1024\nmax_future_ms = 60000\n");
    let node = producer_node("127.0.110.10", data.path(), &key, &config);
    let params = ChainParams::new(NETWORK, [key.public()]);
    let stranger = ProducerKey::from_seed([0x78; 32]);
    // Block 1 is the bad one; 2..=5 are fine (signed by the producer).
    let cases: Vec<(&str, &str, Box<MakeBlock>)> = vec![
        (
            "127.0.110.11",
            "not a producer",
            Box::new(|h, prev| {
                let signer = if h == 1 { &stranger } else { &key };
                Block::signed(h, prev, now_ms(), vec![1; 16], signer)
            }),
        ),
        (
            "127.0.110.12",
            "ahead of our clock",
            Box::new(|h, prev| {
                let ts = if h == 1 {
                    now_ms() + 3_600_000
                } else {
                    now_ms() + 3_700_000
                };
                Block::signed(h, prev, ts, vec![2; 16], &key)
            }),
        ),
        (
            "127.0.110.13",
            "exceeds the limit",
            Box::new(|h, prev| {
                let size = if h == 1 { 2000 } else { 16 };
                Block::signed(h, prev, now_ms(), vec![3; size], &key)
            }),
        ),
    ];
    for (raw_ip, why, make) in cases {
        let chain = chain_of(&params, 5, make);
        let mut raw = RawPeer::connect(ip(raw_ip), node.listen);
        assert!(matches!(
            raw.hello(genesis_hash(&params), 5),
            Wire::Hello { .. }
        ));
        assert_eq!(raw.serve(&chain), "Misbehaving", "{raw_ip}");
        let ban = wait_for(&format!("the ban of {raw_ip}"), || ban_of(&node, raw_ip));
        let reason = ban["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("invalid_block") && reason.contains(why),
            "{raw_ip}: {ban}"
        );
        assert_eq!(node.status()["height"], 0, "nothing of it was stored");
    }
}

#[test]
fn an_equal_height_fork_with_a_lower_tip_hash_does_not_replace_the_tip() {
    let data = tempfile::tempdir().expect("tempdir");
    let key = keygen(data.path());
    let (ok, _, err) = cli(&[
        "produce",
        "--blocks",
        "3",
        "--data-dir",
        &data.path().display().to_string(),
    ]);
    assert!(ok, "produce: {err}");
    let node = producer_node("127.0.110.20", data.path(), &key, FAST_PINGS);
    let tip = node.status()["tip"].as_str().expect("tip").to_string();
    let params = ChainParams::new(NETWORK, [key.public()]);
    // A valid fork (signed by the producer) of the same height whose tip hash is lower: a few
    // tries of the last payload suffice.
    let fork = (0u32..)
        .map(|nonce| {
            chain_of(&params, 3, |h, prev| {
                let payload = [h.to_be_bytes().to_vec(), nonce.to_be_bytes().to_vec()].concat();
                Block::signed(h, prev, now_ms(), payload, &key)
            })
        })
        .find(|c| hex(&c[3].hash()) < tip)
        .expect("a lower tip");
    let mut raw = RawPeer::connect(ip("127.0.110.21"), node.listen);
    assert!(matches!(
        raw.hello(genesis_hash(&params), 3),
        Wire::Hello { .. }
    ));
    raw.send_msg(&NodeMsg::Announce {
        height: 3,
        tip: fork[3].hash(),
    });
    // The node handles one connection's messages in order: had the announce started a sync,
    // its request would reach us before the answer to ours.
    raw.send_msg(&NodeMsg::GetHashes {
        request_id: 77,
        from: 1,
        count: 3,
    });
    loop {
        match raw.read().expect("the node answers") {
            Wire::Ping { nonce } => raw.send(&Wire::Pong { nonce }),
            Wire::App(p) => match rmp_serde::from_slice(&p).expect("NodeMsg") {
                NodeMsg::Hashes {
                    request_id: 77,
                    hashes,
                    ..
                } => {
                    assert_eq!(hex(&hashes[2].0), tip, "the node serves its own chain");
                    break;
                }
                NodeMsg::Announce { .. } => {}
                other => panic!("the node asked for the equal-height fork: {other:?}"),
            },
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(node.status()["tip"], tip.as_str());
    assert!(bans(&node).is_empty(), "an honest fork is not punished");
}

#[test]
fn networks_with_different_producers_refuse_each_other() {
    let (a_data, b_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ka, kb) = (keygen(a_data.path()), keygen(b_data.path()));
    // Both on the default (Noise) transport: the genesis check happens inside the channel.
    let a_ip = ip("127.0.110.30");
    let a = Node::start_with(
        a_ip,
        free_port(a_ip),
        &[],
        FAST_PINGS,
        Some(a_data.path()),
        &["--producer", &hex(&ka.public())],
    );
    let b_ip = ip("127.0.110.31");
    let b = Node::start_with(
        b_ip,
        free_port(b_ip),
        &[a.listen],
        FAST_PINGS,
        Some(b_data.path()),
        &["--producer", &hex(&kb.public())],
    );
    // Each side refuses the other's Hello (whichever Hello arrives first, both see the other
    // genesis): both count the disconnect as wrong_genesis.
    let counted = |n: &Node| {
        let text = n.get("/metrics").expect("GET /metrics");
        text.lines().any(|l| {
            l.starts_with("peerlink_disconnects_total{") && l.contains("reason=\"wrong_genesis\"")
        })
    };
    wait_for("A to count wrong_genesis", || counted(&a).then_some(()));
    wait_for("B to count wrong_genesis", || counted(&b).then_some(()));
    assert!(a.peers().is_empty() && b.peers().is_empty());
    assert!(
        bans(&a).is_empty() && bans(&b).is_empty(),
        "a mismatch is not a ban"
    );
}

#[test]
fn admin_refuses_forms_foreign_hosts_and_missing_tokens_and_ban_cli_round_trips() {
    let token = "t0ken";
    let config = format!("{FAST_PINGS}[admin]\ntoken = \"{token}\"\n");
    let node_ip = ip("127.0.110.40");
    let node = Node::start(node_ip, free_port(node_ip), &[], &config);
    let url = |p: &str| format!("{}{p}", node.admin);
    let bearer = format!("Bearer {token}");
    let status = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(resp) => resp.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("no HTTP answer: {e}"),
    };
    // A browser form: refused even with the token.
    assert_eq!(
        status(
            ureq::post(&url("/ban"))
                .set("Authorization", &bearer)
                .send_form(&[("ip", "127.0.110.41")])
        ),
        415
    );
    // A foreign Host header (DNS rebinding): refused even with the token.
    assert_eq!(
        status(
            ureq::get(&url("/status"))
                .set("Authorization", &bearer)
                .set("Host", "evil.example")
                .call()
        ),
        403
    );
    // No token on loopback: refused.
    assert_eq!(
        status(ureq::post(&url("/ban")).send_json(serde_json::json!({"ip": "127.0.110.41"}))),
        401
    );
    // JSON without a body object: refused.
    assert_eq!(
        status(
            ureq::post(&url("/peers/127.0.110.41/disconnect"))
                .set("Authorization", &bearer)
                .set("Content-Type", "application/json")
                .send_string("")
        ),
        400
    );
    assert!(
        bans(&node).is_empty(),
        "nothing of the refused requests took effect"
    );

    // The CLI round trip.
    let admin = node.admin.as_str();
    let (ok, out, err) = cli(&[
        "ban",
        "127.0.110.41",
        "--for",
        "1h",
        "--reason",
        "testing",
        "--admin",
        admin,
        "--token",
        token,
    ]);
    assert!(ok, "ban: {out}{err}");
    let (ok, out, err) = cli(&["bans", "--json", "--admin", admin, "--token", token]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("bans --json prints JSON");
    let row = listed["bans"]
        .as_array()
        .and_then(|b| b.iter().find(|r| r["ip"] == "127.0.110.41").cloned())
        .unwrap_or_else(|| panic!("not listed: {out}"));
    assert_eq!(
        (row["reason"].as_str(), row["source"].as_str()),
        (Some("testing"), Some("operator"))
    );
    let left = row["until"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(now_ms() / 1000);
    assert!((3500..=3600).contains(&left), "1 h: {row}");
    let (ok, out, _) = cli(&["bans", "--admin", admin, "--token", token]);
    assert!(
        ok && out.contains("127.0.110.41") && out.contains("testing"),
        "{out}"
    );
    // The node's own address is never banned.
    let (ok, _, err) = cli(&["ban", "127.0.110.40", "--admin", admin, "--token", token]);
    assert!(!ok && err.contains("409") && err.contains("own"), "{err}");
    let (ok, out, err) = cli(&["unban", "127.0.110.41", "--admin", admin, "--token", token]);
    assert!(ok, "unban: {out}{err}");
    let (ok, out, _) = cli(&["bans", "--json", "--admin", admin, "--token", token]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["bans"].as_array().map(Vec::len), Some(0), "{out}");
}
