//! What both sides of every scenario share: the message type, the delivery tally, source IP
//! allocation in 127.0.0.0/8, and the process measurements (RSS, CPU time per thread, the
//! monotonic clock, the file descriptor limit).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The application message of every scenario, on both sides. Encoded with rmp-serde (an enum
/// is a one-entry map from the variant name), payload as MessagePack `bin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenchMsg {
    /// Bulk data, counted on arrival.
    Data {
        /// Sequence number (varies so that every message is really encoded).
        seq: u64,
        /// Opaque bytes.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Echo request.
    Ping {
        /// Echoed back.
        id: u64,
    },
    /// Echo answer.
    Pong {
        /// The Ping's id.
        id: u64,
    },
}

/// Bytes of a `Data` message that are not payload (enum map, variant name, array, seq, bin
/// header): a message of nominal size `n` carries `n - DATA_OVERHEAD_BYTES` payload bytes.
pub const DATA_OVERHEAD_BYTES: usize = 20;

impl BenchMsg {
    /// A `Data` message whose MessagePack encoding is about `size` bytes.
    pub fn data(seq: u64, size: usize) -> BenchMsg {
        BenchMsg::Data {
            seq,
            payload: vec![0xa5; size.saturating_sub(DATA_OVERHEAD_BYTES)],
        }
    }
}

/// Appends one raw frame (4-byte big-endian length + rmp-serde body) to `buf`.
pub fn put_raw_frame(buf: &mut BytesMut, msg: &BenchMsg) -> Result<(), String> {
    let at = buf.len();
    buf.put_u32(0);
    rmp_serde::encode::write(&mut buf.writer(), msg).map_err(|e| e.to_string())?;
    let body = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&body.to_be_bytes());
    Ok(())
}

/// One raw frame as shared bytes.
pub fn raw_frame(msg: &BenchMsg) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(64);
    put_raw_frame(&mut buf, msg)?;
    Ok(buf.freeze())
}

/// Counts deliveries and wakes whoever waits for a given total.
#[derive(Debug, Default)]
pub struct Tally {
    count: AtomicU64,
    target: AtomicU64,
    notify: Notify,
}

impl Tally {
    /// One more delivery.
    pub fn hit(&self) {
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }

    /// Deliveries so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until `total` deliveries were counted, at most `timeout`.
    pub async fn wait_for(&self, total: u64, timeout: Duration) -> Result<(), String> {
        self.target.store(total, Ordering::Release);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.count() >= total {
                return Ok(());
            }
            // The notify can be missed when the target is set after the last hit: re-check
            // at least every few milliseconds.
            let step = (tokio::time::Instant::now() + Duration::from_millis(5)).min(deadline);
            let _ = tokio::time::timeout_at(step, notified).await;
            if tokio::time::Instant::now() >= deadline && self.count() < total {
                return Err(format!(
                    "timed out after {timeout:?}: {} of {total} delivered",
                    self.count()
                ));
            }
        }
    }
}

/// The `i`-th client source address of a block: 127.`block`.x.y with x, y in 1..=250, so that
/// every connection of a scenario comes from its own IP (peers are keyed by IP).
pub fn client_ip(block: u8, i: usize) -> Ipv4Addr {
    assert!(i < 250 * 250, "at most 62,500 clients per block");
    Ipv4Addr::new(127, block, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The `p`-th percentile of `v` (nearest rank; NaN when empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Resident set size of this process in bytes (VmRSS from /proc/self/status).
pub fn rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("bad VmRSS line")?;
    Ok(kib * 1024)
}

/// Heap bytes in use by this process (glibc's `mallinfo2`, all arenas: chunks handed out plus
/// mmapped blocks). Beside the RSS it tells live allocations from allocator slack.
pub fn heap_in_use_bytes() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process, so that a child and its
/// parent can time one scenario together.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// CPU time (user + system) of every thread of this process, by thread id, with its name.
pub type CpuByThread = HashMap<u32, (String, f64)>;

/// Reads the CPU seconds used so far by each thread (from /proc/self/task/*/stat).
pub fn cpu_by_thread() -> CpuByThread {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let field = |i: usize| rest.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (field(14), field(15)) {
            out.insert(tid, (name, (u + s) / ticks));
        }
    }
    out
}

/// How a scenario used the CPUs between two [`cpu_by_thread`] snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// CPU seconds of the whole process per wall second (2.0 = both cores busy).
    pub cores: f64,
    /// Threads that were busy at least a quarter of the wall time.
    pub busy_threads: usize,
}

impl CpuUse {
    /// Compares two snapshots taken `wall` apart.
    pub fn between(before: &CpuByThread, after: &CpuByThread, wall: Duration) -> CpuUse {
        let wall = wall.as_secs_f64().max(1e-9);
        let mut total = 0.0;
        let mut busy = 0;
        for (tid, (_, t1)) in after {
            let t0 = before.get(tid).map(|(_, t)| *t).unwrap_or(0.0);
            let d = (t1 - t0).max(0.0);
            total += d;
            if d >= 0.25 * wall {
                busy += 1;
            }
        }
        CpuUse {
            cores: total / wall,
            busy_threads: busy,
        }
    }
}

/// Times a section: wall time and CPU use.
pub struct CpuMeter {
    start: Instant,
    before: CpuByThread,
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start() -> CpuMeter {
        CpuMeter {
            before: cpu_by_thread(),
            start: Instant::now(),
        }
    }

    /// Wall time and CPU use since [`CpuMeter::start`].
    pub fn stop(&self) -> (Duration, CpuUse) {
        let wall = self.start.elapsed();
        (wall, CpuUse::between(&self.before, &cpu_by_thread(), wall))
    }
}

/// Transport of this process's peerlink nodes and baselines: set once from `--transport`
/// before any scenario runs (children get it on their command line).
static NOISE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Selects the transport for what runs next.
pub fn set_noise(on: bool) {
    NOISE.store(on, Ordering::Relaxed);
}

/// Whether scenarios run over Noise (peerlink's default) rather than plaintext.
pub fn noise() -> bool {
    NOISE.load(Ordering::Relaxed)
}

/// The peerlink transport matching [`noise`].
pub fn transport() -> peerlink_actors::secure::Transport {
    if noise() {
        peerlink_actors::secure::Transport::Noise
    } else {
        peerlink_actors::secure::Transport::Plaintext
    }
}

/// The name of the transport, for row labels and child command lines.
pub fn transport_name() -> &'static str {
    if noise() {
        "noise"
    } else {
        "plaintext"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_messages_have_the_nominal_size() {
        for size in [256, 64 * 1024] {
            let frame = raw_frame(&BenchMsg::data(u64::MAX, size)).unwrap();
            let body = frame.len() - 4;
            assert!(body <= size && body + 8 >= size, "{size}: {body}");
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn client_ips_are_distinct() {
        let ips: std::collections::HashSet<_> = (0..10_000).map(|i| client_ip(20, i)).collect();
        assert_eq!(ips.len(), 10_000);
    }
}
