//! Scenario (i), sync under flood: a node serves a chain of `blocks` small blocks while
//! `flooders` draining flooders (`peerlink::flood`, distinct IPs, 16 requests of 1,024 blocks
//! in flight each) take every answer they can; a fresh honest node syncs the whole chain from
//! it. Measured: the honest sync time, the p99 of `GET /status` on the serving node's real admin
//! API (sampled every 20 ms from another thread) and the p99 of a brand new peer's handshake
//! (probes one after the other during the sync). The same work runs unflooded (`flooders` = 0)
//! in the same bench run for the ratio.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerlink::admin::{self, AdminState};
use peerlink::chain::{produce, ChainParams, ChainStore, ProducerKey};
use peerlink::flood::{handshake_probe, peer_config, Flooders};
use peerlink::metrics::{NodeMetrics, SyncMetrics};
use peerlink::sync::{start_node, SyncConfig};
use prometheus_client::registry::Registry;

/// Figures of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct FloodRun {
    /// Honest sync time, seconds.
    pub sync_s: f64,
    /// p99 of `GET /status`, milliseconds.
    pub status_p99_ms: f64,
    /// p99 of a new peer's handshake, milliseconds.
    pub handshake_p99_ms: f64,
    /// Answers the flooders received.
    pub flood_answers: u64,
}

/// Runs one measurement in its own actix system on 127.0.`ip3`.x.
pub fn measure(blocks: u64, flooders: usize, ip3: u8) -> Result<FloodRun, String> {
    std::thread::spawn(move || actix_rt::System::new().block_on(run(blocks, flooders, ip3)))
        .join()
        .map_err(|_| "flood scenario panicked".to_string())?
}

fn p99_ms(mut v: Vec<Duration>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)].as_secs_f64() * 1e3
}

/// One `GET /status` over a fresh connection; its latency.
fn get_status(addr: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).map_err(|e| e.to_string())?;
    if !body.starts_with(b"HTTP/1.1 200") {
        return Err("GET /status did not answer 200".into());
    }
    Ok(t.elapsed())
}

async fn run(blocks: u64, flooders: usize, ip3: u8) -> Result<FloodRun, String> {
    let ip = |last: u8| IpAddr::from([127, 0, ip3, last]);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let data = tempfile::tempdir().map_err(|e| err(&e))?;
    let key = ProducerKey::generate();
    let params = ChainParams::new("bench", [key.public()]);
    let mut store = ChainStore::open(data.path(), &params).map_err(|e| err(&e))?;
    produce(&mut store, &key, blocks, 64).map_err(|e| err(&e))?;
    let genesis = store.genesis_hash();
    let quiet = SyncConfig {
        progress_bar: false,
        ..SyncConfig::default()
    };
    let serving = start_node(peer_config(ip(1), genesis), store, quiet.clone())
        .await
        .map_err(|e| err(&e))?;
    let target = serving.net.local_addr();

    // The serving node's admin API, as `peerlink run` starts it.
    let listener = std::net::TcpListener::bind((ip(1), 0)).map_err(|e| err(&e))?;
    let admin_addr = listener.local_addr().map_err(|e| err(&e))?;
    let node_metrics = Arc::new(NodeMetrics::default());
    let sync_metrics = Arc::new(SyncMetrics::default());
    let mut registry = Registry::with_prefix("peerlink");
    serving.net.metrics().register(&mut registry);
    node_metrics.register(registry.sub_registry_with_prefix("node"));
    sync_metrics.register(registry.sub_registry_with_prefix("sync"));
    let server = admin::start(
        listener,
        AdminState {
            network: serving.net.clone(),
            sync: serving.actor.clone(),
            network_name: "bench".into(),
            user_agent: "peerlink-bench".into(),
            started: Instant::now(),
            registry,
            node_metrics,
            discovery_metrics: Arc::default(),
            sync_metrics,
            token: None,
            bind: admin_addr,
            allowed_hosts: vec!["bench".into()],
        },
    )
    .map_err(|e| err(&e))?;
    let admin_handle = server.handle();
    actix_rt::spawn(server);

    let flood = if flooders > 0 {
        let ips: Vec<IpAddr> = (0..flooders).map(|i| ip(10 + i as u8)).collect();
        let f = Flooders::start(target, &ips, genesis, blocks, 16)
            .await
            .map_err(|e| err(&e))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while f.answers() < 4 * flooders as u64 {
            if Instant::now() > deadline {
                return Err("flooders got no answers".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Some(f)
    } else {
        None
    };

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                v.push(get_status(admin_addr)?);
                // Sampling interval, not a synchronisation.
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok::<_, String>(v)
        })
    };

    let dir = tempfile::tempdir().map_err(|e| err(&e))?;
    let fresh_store = ChainStore::open(dir.path(), &params).map_err(|e| err(&e))?;
    let honest = start_node(peer_config(ip(2), genesis), fresh_store, quiet)
        .await
        .map_err(|e| err(&e))?;
    let started = Instant::now();
    honest.net.connect(target);
    let mut handshakes = Vec::new();
    let mut probe = 30u8;
    let sync_time = loop {
        let s = honest.status().await.map_err(|e| err(&e))?;
        if s.height == blocks {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("honest sync stuck at {}", s.height));
        }
        let took = handshake_probe(target, ip(probe), genesis, Duration::from_secs(10))
            .await
            .map_err(|e| err(&e))?
            .ok_or("a new peer's handshake took over 10 s")?;
        handshakes.push(took);
        probe = if probe >= 200 { 30 } else { probe + 1 };
    };
    stop.store(true, Ordering::Relaxed);
    let status = sampler
        .join()
        .map_err(|_| "status sampler panicked".to_string())??;
    let flood_answers = match flood {
        Some(f) => {
            let n = f.answers();
            f.stop().await;
            n
        }
        None => 0,
    };
    honest.shutdown().await;
    admin_handle.stop(true).await;
    serving.shutdown().await;
    Ok(FloodRun {
        sync_s: sync_time.as_secs_f64(),
        status_p99_ms: p99_ms(status),
        handshake_p99_ms: p99_ms(handshakes),
        flood_answers,
    })
}
