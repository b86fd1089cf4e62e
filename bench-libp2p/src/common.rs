//! What every scenario shares: the delivery tally, percentiles, raw frames (4-byte big-endian
//! length + bytes, the framing peerlink-bench's raw baseline uses, without MessagePack), and
//! the process measurements (RSS, the monotonic clock, the file descriptor limit). Small copies
//! of peerlink-bench's `common` module, which is a binary crate and cannot be depended on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

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

/// Appends one frame of `size` payload bytes (the first 8 carry `seq`) to `buf`.
pub fn put_frame(buf: &mut Vec<u8>, seq: u64, size: usize) {
    buf.extend_from_slice(&(size as u32).to_be_bytes());
    let at = buf.len();
    buf.resize(at + size, 0xa5);
    let n = size.min(8);
    buf[at..at + n].copy_from_slice(&seq.to_be_bytes()[..n]);
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

/// Runs `f` on a fresh 2-worker tokio runtime (as peerlink-bench's baseline does) and shuts it
/// down.
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
        .map_err(|e| format!("task failed: {e}"))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}

/// Any error as a string.
pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_length_and_sequence() {
        let mut buf = Vec::new();
        put_frame(&mut buf, 7, 256);
        assert_eq!(buf.len(), 260);
        assert_eq!(&buf[..4], &256u32.to_be_bytes());
        assert_eq!(&buf[4..12], &7u64.to_be_bytes());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert!(median(&[]).is_nan());
    }
}
