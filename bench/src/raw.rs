//! The raw tokio baseline of scenarios (a)-(d): the same messages with the same framing (4-byte
//! big-endian length + rmp-serde), tasks on a 2-worker tokio runtime, no actors. Writers encode
//! straight into a 64 KiB batch buffer (the batching peerlink's writer does); readers use
//! tokio-util's `LengthDelimitedCodec` with its defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::common::{percentile, put_raw_frame, raw_frame, BenchMsg, CpuMeter, CpuUse, Tally};
use crate::Sizes;

/// Batch size of the baseline writers: the same as peerlink's `WRITE_BATCH_BYTES`.
const BATCH_BYTES: usize = 64 * 1024;
/// Most rounds of broadcasts run as load while (d) samples.
const MAX_LOAD_ROUNDS: usize = 1_000;
/// Bound of any single wait.
const WAIT: Duration = Duration::from_secs(60);

/// Runs `f` on a fresh 2-worker tokio runtime and shuts it down.
pub fn in_tokio<F, T>(f: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    T: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = rt
        .block_on(async { tokio::spawn(f).await })
        .map_err(|e| format!("baseline task failed: {e}"))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Connects to `to` from the source address `from`.
pub async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(err)?;
    socket
        .bind(SocketAddr::new(from.into(), 0))
        .map_err(|e| format!("bind {from}: {e}"))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .map_err(|_| format!("connect {from} -> {to} timed out"))?
        .map_err(|e| format!("connect {from} -> {to}: {e}"))?;
    stream.set_nodelay(true).map_err(err)?;
    Ok(stream)
}

/// Reads frames until EOF: counts data, answers pings, forwards pongs.
async fn receive(
    stream: TcpStream,
    tally: Arc<Tally>,
    pongs: Option<mpsc::UnboundedSender<u64>>,
) -> Result<(), String> {
    let (rd, wr) = stream.into_split();
    receive_io(rd, wr, tally, pongs).await
}

/// [`receive`] over any byte stream (the Noise record layer for the encrypted rows); each
/// pong is flushed (a no-op on a plain socket).
async fn receive_io(
    rd: impl AsyncRead + Unpin,
    mut wr: impl AsyncWrite + Unpin,
    tally: Arc<Tally>,
    pongs: Option<mpsc::UnboundedSender<u64>>,
) -> Result<(), String> {
    let mut frames = FramedRead::new(rd, LengthDelimitedCodec::new());
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(err)?;
        match rmp_serde::from_slice::<BenchMsg>(&frame).map_err(err)? {
            BenchMsg::Data { .. } => tally.hit(),
            BenchMsg::Ping { id } => {
                wr.write_all(&raw_frame(&BenchMsg::Pong { id })?)
                    .await
                    .map_err(err)?;
                wr.flush().await.map_err(err)?
            }
            BenchMsg::Pong { id } => {
                if let Some(tx) = &pongs {
                    let _ = tx.send(id);
                }
            }
        }
    }
    Ok(())
}

/// A listener on `ip` and a connection to it from `from`: (client side, server side).
async fn pair(ip: Ipv4Addr, from: Ipv4Addr) -> Result<(TcpStream, TcpStream), String> {
    let listener = TcpListener::bind((ip, 0)).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let (client, accepted) = tokio::join!(connect_from(from, addr), listener.accept());
    let (server, _) = accepted.map_err(err)?;
    server.set_nodelay(true).map_err(err)?;
    Ok((client?, server))
}

/// Sends `count` data messages of `size` bytes, batched.
async fn send_data(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    buf: &mut BytesMut,
    count: u64,
    size: usize,
) -> Result<(), String> {
    for i in 0..count {
        put_raw_frame(buf, &BenchMsg::data(i, size))?;
        if buf.len() >= BATCH_BYTES {
            wr.write_all(buf).await.map_err(err)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        wr.write_all(buf).await.map_err(err)?;
        buf.clear();
    }
    wr.flush().await.map_err(err)
}

/// Scenarios (a) and (b): messages per second received and decoded.
pub fn one_connection(count: u64, size: usize) -> Result<f64, String> {
    in_tokio(async move {
        let tally = Arc::new(Tally::default());
        let (mut client, server) =
            pair(Ipv4Addr::new(127, 0, 1, 3), Ipv4Addr::new(127, 0, 1, 2)).await?;
        let reader = tokio::spawn(receive(server, tally.clone(), None));
        let warmup = (count / 10).clamp(1, 10_000);
        let sender = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(2 * BATCH_BYTES);
            send_data(&mut client, &mut buf, warmup, size).await?;
            tally.wait_for(warmup, WAIT).await?;
            let start = Instant::now();
            send_data(&mut client, &mut buf, count, size).await?;
            tally.wait_for(warmup + count, WAIT).await?;
            Ok::<_, String>(start.elapsed())
        });
        let elapsed = sender.await.map_err(err)??;
        reader.abort();
        Ok(count as f64 / elapsed.as_secs_f64())
    })
}

/// Scenarios (a) and (b) over Noise: the same sender and receiver tasks as
/// [`one_connection`], the stream run through the same Noise handshake and AEAD record layer
/// as peerlink's transport (`peerlink_actors::secure`), so the ratio isolates peerlink's own
/// overhead from the cipher's.
pub fn one_connection_noise(count: u64, size: usize) -> Result<f64, String> {
    use peerlink_actors::secure::{handshake, NodeKey, SecureRead, SecureWrite};
    in_tokio(async move {
        let tally = Arc::new(Tally::default());
        let (mut client, mut server) =
            pair(Ipv4Addr::new(127, 0, 1, 3), Ipv4Addr::new(127, 0, 1, 2)).await?;
        let (ck, sk) = (NodeKey::generate(), NodeKey::generate());
        let (ce, se) = tokio::join!(
            handshake(&mut client, &ck, true),
            handshake(&mut server, &sk, false)
        );
        let established = |e: Result<peerlink_actors::secure::Established, _>| {
            e.map_err(|e: peerlink_actors::secure::SecureError| e.to_string())
        };
        // The client sends, the server receives.
        let (cc, sc) = (Some(established(ce)?.send), Some(established(se)?.recv));
        let (_client_rd, cw) = client.into_split();
        let (sr, _server_wr) = server.into_split();
        let mut cw = SecureWrite::new(cw, cc);
        let reader_tally = tally.clone();
        let reader = tokio::spawn(async move {
            let mut frames = FramedRead::new(SecureRead::new(sr, sc), LengthDelimitedCodec::new());
            while let Some(frame) = frames.next().await {
                let frame = frame.map_err(err)?;
                if let BenchMsg::Data { .. } =
                    rmp_serde::from_slice::<BenchMsg>(&frame).map_err(err)?
                {
                    reader_tally.hit();
                }
            }
            Ok::<_, String>(())
        });
        let warmup = (count / 10).clamp(1, 10_000);
        let sender = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(2 * BATCH_BYTES);
            send_data(&mut cw, &mut buf, warmup, size).await?;
            tally.wait_for(warmup, WAIT).await?;
            let start = Instant::now();
            send_data(&mut cw, &mut buf, count, size).await?;
            tally.wait_for(warmup + count, WAIT).await?;
            Ok::<_, String>(start.elapsed())
        });
        let elapsed = sender.await.map_err(err)??;
        reader.abort();
        Ok(count as f64 / elapsed.as_secs_f64())
    })
}

/// A broadcaster with a socket to each of `peers` receivers, which count into `tally`.
async fn broadcast_setup(peers: usize, tally: &Arc<Tally>) -> Result<Vec<TcpStream>, String> {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 2, 1), 0))
        .await
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let mut outs = Vec::with_capacity(peers);
    for p in 0..peers {
        let (client, accepted) = tokio::join!(
            connect_from(Ipv4Addr::new(127, 0, 2, 10 + p as u8), addr),
            listener.accept()
        );
        tokio::spawn(receive(client?, tally.clone(), None));
        let (server, _) = accepted.map_err(err)?;
        server.set_nodelay(true).map_err(err)?;
        outs.push(server);
    }
    Ok(outs)
}

/// Encodes each message once and appends it to every peer's batch.
async fn broadcast_run(
    outs: &mut [TcpStream],
    bufs: &mut [BytesMut],
    tally: &Tally,
    count: u64,
    size: usize,
) -> Result<Duration, String> {
    let base = tally.count();
    let start = Instant::now();
    for i in 0..count {
        let frame = raw_frame(&BenchMsg::data(i, size))?;
        for (out, buf) in outs.iter_mut().zip(bufs.iter_mut()) {
            buf.extend_from_slice(&frame);
            if buf.len() >= BATCH_BYTES {
                out.write_all(buf).await.map_err(err)?;
                buf.clear();
            }
        }
    }
    for (out, buf) in outs.iter_mut().zip(bufs.iter_mut()) {
        out.write_all(buf).await.map_err(err)?;
        buf.clear();
    }
    tally
        .wait_for(base + count * outs.len() as u64, WAIT)
        .await?;
    Ok(start.elapsed())
}

/// Scenario (c): deliveries per second and CPU use.
pub fn broadcast(peers: usize, count: u64, size: usize) -> Result<(f64, CpuUse), String> {
    in_tokio(async move {
        let tally = Arc::new(Tally::default());
        let mut outs = broadcast_setup(peers, &tally).await?;
        let mut bufs: Vec<BytesMut> = (0..peers)
            .map(|_| BytesMut::with_capacity(2 * BATCH_BYTES))
            .collect();
        broadcast_run(&mut outs, &mut bufs, &tally, (count / 10).max(1), size).await?;
        let meter = CpuMeter::start();
        let elapsed = broadcast_run(&mut outs, &mut bufs, &tally, count, size).await?;
        let (_, cpu) = meter.stop();
        Ok(((count * peers as u64) as f64 / elapsed.as_secs_f64(), cpu))
    })
}

/// The two halves of `stream`, through the Noise handshake (as initiator or responder) and
/// record layer when `noise`, as they are otherwise: the same layer peerlink's encrypted
/// transport uses, so that the encrypted rows compare peerlink with the cipher's own cost.
async fn secure_split(
    mut stream: TcpStream,
    initiator: bool,
    noise: bool,
) -> Result<
    (
        peerlink_actors::secure::SecureRead<tokio::net::tcp::OwnedReadHalf>,
        peerlink_actors::secure::SecureWrite<tokio::net::tcp::OwnedWriteHalf>,
    ),
    String,
> {
    use peerlink_actors::secure::{handshake, NodeKey, SecureRead, SecureWrite};
    let ciphers = if noise {
        let est = handshake(&mut stream, &NodeKey::generate(), initiator)
            .await
            .map_err(|e| e.to_string())?;
        Some((est.recv, est.send))
    } else {
        None
    };
    let (recv, send) = ciphers.unzip();
    let (rd, wr) = stream.into_split();
    Ok((SecureRead::new(rd, recv), SecureWrite::new(wr, send)))
}

/// The echo side of scenario (d), over Noise when `noise`.
async fn echo_server(stream: TcpStream, noise: bool) -> Result<(), String> {
    let (rd, wr) = secure_split(stream, false, noise).await?;
    receive_io(rd, wr, Arc::new(Tally::default()), None).await
}

/// Scenario (d): raw echo round trip p50/p99 in microseconds, idle or under a broadcast.
///
/// With `cross_thread`, the echo server runs on a runtime of its own on another thread, as the
/// other node would (peerlink's two nodes are on different threads too); otherwise it shares
/// the client's runtime and usually its worker thread.
///
/// With `paced`, one ping per millisecond (the cadence of the session pings it is compared
/// with, so that both sides see threads that go idle between pings); otherwise back to back.
pub fn ping(
    sizes: Sizes,
    load: bool,
    cross_thread: bool,
    paced: bool,
) -> Result<(f64, f64), String> {
    // Read here: the echo thread must not depend on when the flag changes.
    let noise = crate::common::noise();
    in_tokio(async move {
        let (client, server) =
            pair(Ipv4Addr::new(127, 0, 3, 2), Ipv4Addr::new(127, 0, 3, 1)).await?;
        let _echo_thread = if cross_thread {
            let server = server.into_std().map_err(err)?;
            let thread = std::thread::Builder::new()
                .name("raw-echo".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(err)?;
                    rt.block_on(async move {
                        let server = TcpStream::from_std(server).map_err(err)?;
                        echo_server(server, noise).await
                    })
                })
                .map_err(err)?;
            Some(thread)
        } else {
            tokio::spawn(echo_server(server, noise));
            None
        };
        // The echo server answers the handshake meanwhile.
        let (rd, wr) = secure_split(client, true, noise).await?;
        let done = Arc::new(AtomicBool::new(false));
        let bcast = if load {
            let tally = Arc::new(Tally::default());
            let mut outs = broadcast_setup(sizes.c_peers, &tally).await?;
            let done = done.clone();
            let count = sizes.d_load_msgs;
            Some(tokio::spawn(async move {
                let mut bufs: Vec<BytesMut> = (0..outs.len())
                    .map(|_| BytesMut::with_capacity(2 * BATCH_BYTES))
                    .collect();
                for _ in 0..MAX_LOAD_ROUNDS {
                    broadcast_run(&mut outs, &mut bufs, &tally, count, 256).await?;
                    if done.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
                Err::<(), String>("load rounds exhausted before the pings finished".into())
            }))
        } else {
            None
        };
        if bcast.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pings = sizes.d_pings;
        let pinger = tokio::spawn(async move {
            let mut wr = wr;
            let mut frames = FramedRead::new(rd, LengthDelimitedCodec::new());
            let mut samples = Vec::with_capacity(pings as usize);
            for id in 0..pings {
                if paced {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let t = Instant::now();
                wr.write_all(&raw_frame(&BenchMsg::Ping { id })?)
                    .await
                    .map_err(err)?;
                wr.flush().await.map_err(err)?;
                let frame = tokio::time::timeout(Duration::from_secs(5), frames.next())
                    .await
                    .map_err(|_| format!("no pong for ping {id}"))?
                    .ok_or("echo closed")?
                    .map_err(err)?;
                match rmp_serde::from_slice::<BenchMsg>(&frame).map_err(err)? {
                    BenchMsg::Pong { id: got } if got == id => {}
                    other => return Err(format!("unexpected {other:?}")),
                }
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, String>(samples)
        });
        let samples = pinger.await.map_err(err);
        done.store(true, Ordering::Release);
        let samples = samples??;
        if let Some(b) = bcast {
            b.await.map_err(err)??;
        }
        if samples.len() < 20 {
            return Err(format!("only {} ping samples", samples.len()));
        }
        let s = &samples[samples.len() / 10..];
        Ok((percentile(s, 50.0), percentile(s, 99.0)))
    })
}
