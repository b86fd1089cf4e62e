//! The soak phase of `peerlink devnet --duration D`: a policy struct that is fed one sample of
//! every node per report interval (counters read from the registries, the process RSS) and
//! returns what to print and, at the end, the verdict. It owns the thresholds a long run must
//! meet, so that they are tested without running anything for 30 minutes.
//!
//! What a healthy soak looks like (the design's success metrics, measured): no connection is
//! registered, replaced or lost after the start (reconnects 0), every node holds exactly one
//! connection per peer IP and exactly its neighbours in the topology at every sample, pongs
//! answer at least [`MIN_PONG_RATE`] of the pings, and the process RSS stays flat (at most
//! [`MAX_RSS_GROWTH`] times the first sample plus [`RSS_SLACK_BYTES`]).
//!
//! RSS is per process: the devnet runs every node in one process, so the per-node figure is the
//! process RSS divided by the node count (shown beside the total).

use std::fmt::Write as _;
use std::time::Duration;

/// Lowest acceptable pong rate over the whole soak (pongs matched / answerable pings).
pub const MIN_PONG_RATE: f64 = 0.999;

/// Largest acceptable ratio of the last RSS sample to the first one. The chain grows during a
/// soak (one small block every [`SOAK_BLOCK_INTERVAL`]), so some growth is expected; a leak per
/// ping or per message shows as many times this over 30 minutes.
pub const MAX_RSS_GROWTH: f64 = 1.25;

/// Absolute slack on top of [`MAX_RSS_GROWTH`]: allocator and page-cache noise in a short run.
pub const RSS_SLACK_BYTES: u64 = 16 << 20;

/// Node 0 produces a block this often during the soak, so that announces and sync requests
/// keep flowing beside the pings.
pub const SOAK_BLOCK_INTERVAL: Duration = Duration::from_secs(2);

/// One node's counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSample {
    /// Registrations since the node started (`RegistryStats::connects`).
    pub connects: u64,
    /// Disconnects since the node started.
    pub disconnects: u64,
    /// Replacements since the node started.
    pub replaced: u64,
    /// Connections registered now.
    pub connections: usize,
    /// Distinct peer IPs among them.
    pub distinct_ips: usize,
    /// Connections its topology gives it.
    pub expected: usize,
    /// Pings sent over its current connections.
    pub pings_sent: u64,
    /// Pongs matched over its current connections.
    pub pongs_matched: u64,
    /// Chain height.
    pub height: u64,
}

/// Per-node totals since the start of the soak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeTotals {
    /// Registrations after the start.
    pub reconnects: u64,
    /// Disconnects after the start.
    pub disconnects: u64,
    /// Replacements after the start.
    pub replaced: u64,
    /// Samples where the node had two connections for one IP or not exactly its neighbours.
    pub violations: u64,
    /// Pings sent since the start.
    pub pings: u64,
    /// Pongs matched since the start.
    pub pongs: u64,
}

/// Feeds samples in, returns report lines and a verdict.
#[derive(Debug, Clone)]
pub struct SoakTracker {
    start: Vec<NodeSample>,
    last: Vec<NodeSample>,
    totals: Vec<NodeTotals>,
    rss_first: Option<u64>,
    rss_last: u64,
    rss_max: u64,
    samples: u64,
}

impl SoakTracker {
    /// Starts from the counters at the beginning of the soak.
    pub fn new(start: Vec<NodeSample>) -> Self {
        let n = start.len();
        Self {
            last: start.clone(),
            start,
            totals: vec![NodeTotals::default(); n],
            rss_first: None,
            rss_last: 0,
            rss_max: 0,
            samples: 0,
        }
    }

    /// Takes one sample of every node (same order as at the start) and the process RSS
    /// (bytes); returns the lines to print for this interval.
    pub fn observe(&mut self, elapsed: Duration, now: &[NodeSample], rss: u64) -> String {
        self.samples += 1;
        self.rss_first.get_or_insert(rss);
        self.rss_last = rss;
        self.rss_max = self.rss_max.max(rss);
        let mut lines = String::new();
        let (mut pings_i, mut pongs_i) = (0u64, 0u64);
        for (i, s) in now.iter().enumerate() {
            let (Some(prev), Some(start), Some(t)) =
                (self.last.get(i), self.start.get(i), self.totals.get_mut(i))
            else {
                continue;
            };
            t.reconnects = s.connects.saturating_sub(start.connects);
            t.disconnects = s.disconnects.saturating_sub(start.disconnects);
            t.replaced = s.replaced.saturating_sub(start.replaced);
            let violation = s.connections != s.distinct_ips || s.connections != s.expected;
            t.violations += u64::from(violation);
            // Per-connection counters restart with a new connection: a drop counts as zero
            // progress (the reconnect itself is what the verdict catches).
            let dp = s.pings_sent.saturating_sub(prev.pings_sent);
            let dq = s.pongs_matched.saturating_sub(prev.pongs_matched);
            t.pings += dp;
            t.pongs += dq;
            pings_i += dp;
            pongs_i += dq;
            let _ = writeln!(
                lines,
                "  node {i:>3}: conns {}/{} (want {}) reconnects {} replaced {} violations {} \
                 pongs {}/{} height {}",
                s.connections,
                s.distinct_ips,
                s.expected,
                t.reconnects,
                t.replaced,
                t.violations,
                dq,
                dp,
                s.height
            );
        }
        self.last = now.to_vec();
        let n = now.len().max(1) as u64;
        let head = format!(
            "soak {:>6.0} s: rss {:.1} MiB ({:.2} MiB/node), reconnects {}, violations {}, \
             pong rate this interval {} ({}/{}), overall {}\n",
            elapsed.as_secs_f64(),
            mib(rss),
            mib(rss / n),
            self.totals.iter().map(|t| t.reconnects).sum::<u64>(),
            self.totals.iter().map(|t| t.violations).sum::<u64>(),
            percent(rate(pongs_i, pings_i, 0)),
            pongs_i,
            pings_i,
            percent(self.pong_rate()),
        );
        let heap = match heap_stats() {
            Some(h) => format!(
                "  heap: in use {:.1} MiB (of which mmapped {:.1} MiB), free in malloc's arenas \
                 {:.1} MiB, arenas {:.1} MiB\n",
                mib(h.in_use),
                mib(h.mmapped),
                mib(h.free_in_arenas),
                mib(h.arenas)
            ),
            None => String::new(),
        };
        head + &heap + &lines
    }

    /// Pongs per answerable ping since the start: one ping per connection may be in flight
    /// when the last sample is taken, so it is not counted as missing.
    pub fn pong_rate(&self) -> Option<f64> {
        let pings = self.totals.iter().map(|t| t.pings).sum();
        let pongs = self.totals.iter().map(|t| t.pongs).sum();
        let in_flight = self.last.iter().map(|s| s.connections as u64).sum();
        rate(pongs, pings, in_flight)
    }

    /// Per-node totals.
    pub fn totals(&self) -> &[NodeTotals] {
        &self.totals
    }

    /// The verdict: `Ok(summary)` when every threshold holds, else every problem found.
    pub fn verdict(&self) -> Result<String, String> {
        let mut problems = Vec::new();
        let sum = |f: fn(&NodeTotals) -> u64| self.totals.iter().map(f).sum::<u64>();
        let (reconnects, disconnects, replaced, violations) = (
            sum(|t| t.reconnects),
            sum(|t| t.disconnects),
            sum(|t| t.replaced),
            sum(|t| t.violations),
        );
        if self.samples == 0 {
            problems.push("no sample was taken".to_string());
        }
        if reconnects + disconnects + replaced > 0 {
            let who: Vec<String> = self
                .totals
                .iter()
                .enumerate()
                .filter(|(_, t)| t.reconnects + t.disconnects + t.replaced > 0)
                .map(|(i, t)| {
                    format!(
                        "node {i}: {} reconnects, {} disconnects, {} replaced",
                        t.reconnects, t.disconnects, t.replaced
                    )
                })
                .collect();
            problems.push(format!("connections changed: {}", who.join(", ")));
        }
        if violations > 0 {
            problems.push(format!(
                "{violations} samples with a node not holding exactly one connection per \
                 neighbour IP"
            ));
        }
        let pong_rate = self.pong_rate();
        match pong_rate {
            Some(r) if r >= MIN_PONG_RATE => {}
            Some(r) => problems.push(format!(
                "pong rate {} below {}",
                percent(Some(r)),
                percent(Some(MIN_PONG_RATE))
            )),
            None => problems.push("no ping was sent".to_string()),
        }
        let first = self.rss_first.unwrap_or(0);
        let limit = (first as f64 * MAX_RSS_GROWTH) as u64 + RSS_SLACK_BYTES;
        if self.rss_last > limit {
            problems.push(format!(
                "RSS grew from {:.1} MiB to {:.1} MiB (limit {:.1} MiB)",
                mib(first),
                mib(self.rss_last),
                mib(limit)
            ));
        }
        let summary = format!(
            "soak verdict: {} samples; reconnects {reconnects}, disconnects {disconnects}, \
             replaced {replaced}, one-entry-per-IP violations {violations}; pong rate {} \
             ({} / {} pings); RSS first {:.1} MiB, last {:.1} MiB, max {:.1} MiB",
            self.samples,
            percent(pong_rate),
            sum(|t| t.pongs),
            sum(|t| t.pings),
            mib(first),
            mib(self.rss_last),
            mib(self.rss_max),
        );
        if problems.is_empty() {
            Ok(summary)
        } else {
            Err(format!("{summary}; FAILED: {}", problems.join("; ")))
        }
    }
}

fn rate(pongs: u64, pings: u64, in_flight: u64) -> Option<f64> {
    let answerable = pings.saturating_sub(in_flight).max(pongs);
    (answerable > 0).then(|| pongs as f64 / answerable as f64)
}

fn percent(r: Option<f64>) -> String {
    r.map_or("-".to_string(), |r| format!("{:.3} %", r * 100.0))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The C allocator's view of this process's heap (glibc `mallinfo2`, summed over all arenas):
/// what tells a live-memory growth (`in_use` grows) from allocator retention (`in_use` flat,
/// `free_in_arenas` and the RSS grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes allocated and not freed: live objects (`uordblks + hblkhd`).
    pub in_use: u64,
    /// Of `in_use`, bytes in chunks served by their own `mmap` (large allocations).
    pub mmapped: u64,
    /// Bytes freed but kept in the arenas (`fordblks`): RSS as far as they were touched.
    pub free_in_arenas: u64,
    /// Bytes the arenas hold from the system, used and free (`arena`).
    pub arenas: u64,
}

/// This process's [`HeapStats`]; `None` off glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_stats() -> Option<HeapStats> {
    // SAFETY: mallinfo2 takes no argument and returns a plain struct; it only reads (under
    // each arena's lock) the allocator's own counters.
    let m = unsafe { libc::mallinfo2() };
    let b = |v: usize| v as u64;
    Some(HeapStats {
        in_use: b(m.uordblks) + b(m.hblkhd),
        mmapped: b(m.hblkhd),
        free_in_arenas: b(m.fordblks),
        arenas: b(m.arena),
    })
}

/// This process's [`HeapStats`]; `None` off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_stats() -> Option<HeapStats> {
    None
}

/// This process's resident set size in bytes (Linux `/proc/self/status` `VmRSS`); 0 where
/// that file does not exist.
pub fn process_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(connects: u64, pings: u64, pongs: u64) -> NodeSample {
        NodeSample {
            connects,
            connections: 2,
            distinct_ips: 2,
            expected: 2,
            pings_sent: pings,
            pongs_matched: pongs,
            ..NodeSample::default()
        }
    }

    #[test]
    fn a_quiet_soak_passes() {
        let mut t = SoakTracker::new(vec![sample(2, 10, 10), sample(2, 10, 9)]);
        let lines = t.observe(
            Duration::from_secs(10),
            &[sample(2, 1010, 1010), sample(2, 1010, 1008)],
            50 << 20,
        );
        assert!(lines.contains("node   1"), "{lines}");
        t.observe(
            Duration::from_secs(20),
            &[sample(2, 2010, 2010), sample(2, 2010, 2009)],
            52 << 20,
        );
        let v = t.verdict().unwrap();
        assert!(v.contains("reconnects 0"), "{v}");
        assert!(t.pong_rate().unwrap() >= MIN_PONG_RATE);
    }

    #[test]
    fn a_reconnect_fails_the_verdict() {
        let mut t = SoakTracker::new(vec![sample(2, 10, 10)]);
        // The connection was replaced: counters restarted, connects went up.
        t.observe(Duration::from_secs(10), &[sample(3, 5, 5)], 50 << 20);
        let err = t.verdict().unwrap_err();
        assert!(err.contains("node 0: 1 reconnects"), "{err}");
    }

    #[test]
    fn missed_pongs_fail_the_verdict() {
        let mut t = SoakTracker::new(vec![sample(2, 0, 0)]);
        t.observe(Duration::from_secs(10), &[sample(2, 1000, 990)], 50 << 20);
        assert!(t.verdict().unwrap_err().contains("pong rate"));
    }

    #[test]
    fn duplicate_ip_or_missing_neighbour_is_a_violation() {
        let mut t = SoakTracker::new(vec![sample(2, 0, 0)]);
        let mut dup = sample(2, 100, 100);
        dup.distinct_ips = 1;
        t.observe(Duration::from_secs(1), &[dup], 50 << 20);
        let mut missing = sample(2, 200, 200);
        missing.connections = 1;
        missing.distinct_ips = 1;
        t.observe(Duration::from_secs(2), &[missing], 50 << 20);
        assert_eq!(t.totals()[0].violations, 2);
        assert!(t.verdict().unwrap_err().contains("2 samples"));
    }

    #[test]
    fn growing_rss_fails_flat_rss_passes() {
        let mut t = SoakTracker::new(vec![sample(2, 0, 0)]);
        t.observe(Duration::from_secs(1), &[sample(2, 100, 100)], 100 << 20);
        t.observe(Duration::from_secs(2), &[sample(2, 200, 200)], 130 << 20);
        t.verdict().unwrap();
        t.observe(Duration::from_secs(3), &[sample(2, 300, 300)], 200 << 20);
        assert!(t.verdict().unwrap_err().contains("RSS grew"));
    }

    #[test]
    fn heap_stats_see_a_live_allocation() {
        // Other tests allocate concurrently: the block is far larger than they ever hold, and
        // zeroed (mmapped by calloc, never touched), so it costs no RSS.
        const BLOCK: u64 = 256 << 20;
        const SLACK: u64 = 32 << 20;
        let Some(before) = heap_stats() else {
            return;
        };
        let block = std::hint::black_box(vec![0u8; BLOCK as usize]);
        let during = heap_stats().unwrap_or_default();
        assert!(
            during.in_use + SLACK >= before.in_use + BLOCK,
            "{before:?} -> {during:?}"
        );
        drop(block);
        let after = heap_stats().unwrap_or_default();
        assert!(
            after.in_use + BLOCK <= during.in_use + SLACK,
            "{during:?} -> {after:?}"
        );
    }

    #[test]
    fn rss_is_read_on_linux() {
        assert!(process_rss_bytes() > 0);
    }
}
