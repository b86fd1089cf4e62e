//! Scenarios (a)-(d) over libp2p streams, shaped like peerlink-bench's raw tokio baseline
//! (`bench/src/raw.rs`): nodes on one 2-worker tokio runtime, one stream per peer, writers
//! batching frames into 64 KiB writes, readers using tokio-util's `LengthDelimitedCodec` and
//! counting each frame. Messages are raw bytes (4-byte length + payload); nothing is encoded.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::Stream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::common::{err, in_tokio, percentile, put_frame, Tally};
use crate::node::{Node, Sec};

/// Batch size of the writers: the same as peerlink's and the raw baseline's.
const BATCH_BYTES: usize = 64 * 1024;
/// Bound of any single wait for deliveries.
const WAIT: Duration = Duration::from_secs(60);

/// Reads frames until the stream ends, counting each.
async fn count_frames(stream: Stream, tally: Arc<Tally>) {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(1 << 20)
        .new_codec();
    let mut frames = FramedRead::new(stream.compat(), codec);
    while let Some(Ok(_)) = frames.next().await {
        tally.hit();
    }
}

/// Sends frames `seq..seq + count` of `size` payload bytes, batched, then flushes.
async fn send_frames(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    seq: u64,
    count: u64,
    size: usize,
) -> Result<(), String> {
    for i in seq..seq + count {
        put_frame(buf, i, size);
        if buf.len() >= BATCH_BYTES {
            stream.write_all(buf).await.map_err(err)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        stream.write_all(buf).await.map_err(err)?;
        buf.clear();
    }
    stream.flush().await.map_err(err)
}

/// A receiving node counting every frame of every stream into `tally`.
async fn receiver(sec: Sec, ip: Ipv4Addr, tally: &Arc<Tally>) -> Result<Node, String> {
    let node = Node::start(sec, ip).await?;
    let tally = tally.clone();
    node.serve(move |s| count_frames(s, tally.clone()))?;
    Ok(node)
}

/// Scenarios (a) and (b): messages per second received over one stream.
pub fn one_connection(sec: Sec, count: u64, size: usize) -> Result<f64, String> {
    in_tokio(async move {
        let tally = Arc::new(Tally::default());
        let rx = receiver(sec, Ipv4Addr::new(127, 0, 1, 3), &tally).await?;
        let mut tx = Node::start(sec, Ipv4Addr::new(127, 0, 1, 2)).await?;
        tx.connect(&rx).await?;
        let mut stream = tx.open(rx.peer).await?;
        let warmup = (count / 10).clamp(1, 10_000);
        let mut buf = Vec::with_capacity(2 * BATCH_BYTES);
        send_frames(&mut stream, &mut buf, 0, warmup, size).await?;
        tally.wait_for(warmup, WAIT).await?;
        let start = Instant::now();
        send_frames(&mut stream, &mut buf, warmup, count, size).await?;
        tally.wait_for(warmup + count, WAIT).await?;
        let elapsed = start.elapsed();
        drop((tx, rx));
        Ok(count as f64 / elapsed.as_secs_f64())
    })
}

/// Scenario (c): one node broadcasting each message to `peers` nodes over a stream to each;
/// deliveries per second.
pub fn broadcast(sec: Sec, peers: usize, count: u64, size: usize) -> Result<f64, String> {
    in_tokio(async move {
        let tally = Arc::new(Tally::default());
        let mut src = Node::start(sec, Ipv4Addr::new(127, 0, 2, 1)).await?;
        let mut nodes = Vec::with_capacity(peers);
        let mut streams = Vec::with_capacity(peers);
        for p in 0..peers {
            let node = receiver(sec, Ipv4Addr::new(127, 0, 2, 10 + p as u8), &tally).await?;
            src.connect(&node).await?;
            streams.push(src.open(node.peer).await?);
            nodes.push(node);
        }
        let mut bufs: Vec<Vec<u8>> = (0..peers)
            .map(|_| Vec::with_capacity(2 * BATCH_BYTES))
            .collect();
        let warmup = (count / 10).max(1);
        broadcast_run(&mut streams, &mut bufs, &tally, 0, warmup, size).await?;
        let elapsed = broadcast_run(&mut streams, &mut bufs, &tally, warmup, count, size).await?;
        drop((src, nodes));
        Ok((count * peers as u64) as f64 / elapsed.as_secs_f64())
    })
}

/// Builds each frame once and appends it to every peer's batch.
async fn broadcast_run(
    streams: &mut [Stream],
    bufs: &mut [Vec<u8>],
    tally: &Tally,
    seq: u64,
    count: u64,
    size: usize,
) -> Result<Duration, String> {
    let base = tally.count();
    let start = Instant::now();
    let mut frame = Vec::with_capacity(size + 4);
    for i in seq..seq + count {
        frame.clear();
        put_frame(&mut frame, i, size);
        for (out, buf) in streams.iter_mut().zip(bufs.iter_mut()) {
            buf.extend_from_slice(&frame);
            if buf.len() >= BATCH_BYTES {
                out.write_all(buf).await.map_err(err)?;
                buf.clear();
            }
        }
    }
    for (out, buf) in streams.iter_mut().zip(bufs.iter_mut()) {
        out.write_all(buf).await.map_err(err)?;
        out.flush().await.map_err(err)?;
        buf.clear();
    }
    tally
        .wait_for(base + count * streams.len() as u64, WAIT)
        .await?;
    Ok(start.elapsed())
}

/// Reads one frame (4-byte length + body) into `body`.
async fn read_frame(stream: &mut Stream, body: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    body.resize(len, 0);
    stream.read_exact(body).await
}

/// Answers every frame with the same frame until the stream ends.
async fn echo(mut stream: Stream) {
    let mut body = Vec::new();
    let mut out = Vec::new();
    while read_frame(&mut stream, &mut body).await.is_ok() {
        out.clear();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// Scenario (d): echo round trip p50/p99 in microseconds, back to back, over a stream to a node
/// that runs on a runtime of its own on another thread (as the raw baseline's echo does).
pub fn ping(sec: Sec, pings: u64) -> Result<(f64, f64), String> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::Builder::new()
        .name("libp2p-echo".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(err)?;
            rt.block_on(async move {
                let node = Node::start(sec, Ipv4Addr::new(127, 0, 3, 2)).await?;
                node.serve(echo)?;
                let _ = addr_tx.send((node.addr.clone(), node.peer));
                let _ = stop_rx.await;
                drop(node);
                Ok::<(), String>(())
            })
        })
        .map_err(err)?;
    let out = match addr_rx.recv_timeout(Duration::from_secs(30)) {
        Ok((addr, peer)) => in_tokio(async move {
            let mut client = Node::start(sec, Ipv4Addr::new(127, 0, 3, 1)).await?;
            client.connect_to(addr, peer).await?;
            let mut stream = client.open(peer).await?;
            let mut samples = Vec::with_capacity(pings as usize);
            let mut body = Vec::new();
            for id in 0..pings {
                let t = Instant::now();
                let mut frame = Vec::with_capacity(12);
                put_frame(&mut frame, id, 8);
                stream.write_all(&frame).await.map_err(err)?;
                stream.flush().await.map_err(err)?;
                tokio::time::timeout(Duration::from_secs(5), read_frame(&mut stream, &mut body))
                    .await
                    .map_err(|_| format!("no echo for ping {id}"))?
                    .map_err(err)?;
                if body[..] != frame[4..] {
                    return Err(format!("echo of ping {id} differs"));
                }
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            drop(client);
            let s = &samples[samples.len() / 10..];
            Ok((percentile(s, 50.0), percentile(s, 99.0)))
        }),
        Err(_) => Err("echo node did not start".into()),
    };
    let _ = stop_tx.send(());
    match server.join() {
        Ok(Ok(())) => out,
        Ok(Err(e)) => out.and(Err(format!("echo node: {e}"))),
        Err(_) => out.and(Err("echo node panicked".into())),
    }
}
