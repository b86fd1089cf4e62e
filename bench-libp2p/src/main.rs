//! `bench-libp2p`: peerlink-bench's scenarios (a)-(f) run over rust-libp2p, so that a table can
//! put peerlink, raw tokio and libp2p side by side from one session. Kept outside the peerlink
//! workspace (its own `[workspace]`): the repository's tests and CI never build libp2p.
//!
//! Stack: `SwarmBuilder` + TCP (nodelay) + Noise or plaintext + yamux, all defaults, and
//! `libp2p-stream` (one raw stream per peer, as a Rust developer would write a custom protocol;
//! request-response would add a stream per request). Every run measures both security
//! upgrades. Layout: `common` (tally, frames, measurements), `node` (swarm setup and driver),
//! `flows` (a-d), `conns` (e and f, server in a child process).
//!
//! Usage: `bench-libp2p [--runs N] [--smoke] [--only a,b,c,d,e,f] [--sec noise,plaintext]`.

mod common;
mod conns;
mod flows;
mod node;

use std::collections::BTreeMap;
use std::process::ExitCode;

use common::median;
use node::Sec;

/// Sizes of every scenario, the same as peerlink-bench's; `--smoke` shrinks them.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// (a) messages per timed run.
    pub a_msgs: u64,
    /// (b) 64 KiB messages per timed run.
    pub b_msgs: u64,
    /// (c) peers.
    pub c_peers: usize,
    /// (c) broadcasts per timed run.
    pub c_msgs: u64,
    /// (d) pings per measurement.
    pub d_pings: u64,
    /// (e) idle connection counts.
    pub e_counts: [usize; 2],
    /// (f) connections.
    pub f_conns: usize,
}

const FULL: Sizes = Sizes {
    a_msgs: 1_000_000,
    b_msgs: 20_000,
    c_peers: 32,
    c_msgs: 30_000,
    d_pings: 2_000,
    e_counts: [1_000, 10_000],
    f_conns: 5_000,
};

const SMOKE: Sizes = Sizes {
    a_msgs: 2_000,
    b_msgs: 50,
    c_peers: 4,
    c_msgs: 500,
    d_pings: 40,
    e_counts: [100, 300],
    f_conns: 200,
};

const SMALL_BYTES: usize = 256;
const LARGE_BYTES: usize = 64 * 1024;

/// One measured line of one run, for one security upgrade.
struct Row {
    name: String,
    unit: &'static str,
    sec: Sec,
    value: f64,
}

#[derive(Default)]
struct RunOutput {
    rows: Vec<Row>,
    failures: Vec<String>,
}

impl RunOutput {
    fn record(&mut self, sec: Sec, name: &str, unit: &'static str, r: Result<f64, String>) {
        match r {
            Ok(value) => self.rows.push(Row {
                name: name.to_string(),
                unit,
                sec,
                value,
            }),
            Err(e) => {
                eprintln!("{} {name} FAILED: {e}", sec.as_str());
                self.failures.push(format!("{} {name}: {e}", sec.as_str()));
            }
        }
    }
}

fn run_once(sizes: Sizes, only: &str, secs: &[Sec]) -> RunOutput {
    let mut out = RunOutput::default();
    let want = |s: char| only.is_empty() || only.contains(s);
    for &sec in secs {
        if want('a') {
            let r = flows::one_connection(sec, sizes.a_msgs, SMALL_BYTES);
            out.record(sec, "a. 256 B msgs, 1 conn", "msg/s", r);
        }
        if want('b') {
            let r = flows::one_connection(sec, sizes.b_msgs, LARGE_BYTES)
                .map(|m| m * LARGE_BYTES as f64 / 1e6);
            out.record(sec, "b. 64 KiB msgs, 1 conn", "MB/s", r);
        }
        if want('c') {
            let r = flows::broadcast(sec, sizes.c_peers, sizes.c_msgs, SMALL_BYTES);
            let name = format!("c. broadcast 256 B to {} peers", sizes.c_peers);
            out.record(sec, &name, "deliveries/s", r);
        }
        if want('d') {
            match flows::ping(sec, sizes.d_pings) {
                Ok((p50, p99)) => {
                    out.record(sec, "d. RTT stream echo (back to back) p50", "us", Ok(p50));
                    out.record(sec, "d. RTT stream echo (back to back) p99", "us", Ok(p99));
                }
                Err(e) => out.record(sec, "d. RTT stream echo", "us", Err(e)),
            }
        }
        if want('e') {
            for n in sizes.e_counts {
                let r = conns::measure(sec, n).map(|r| r.bytes_per_conn);
                let name = format!("e. RSS per idle connection, {n} connections");
                out.record(sec, &name, "B", r);
            }
        }
        if want('f') {
            let r = conns::measure(sec, sizes.f_conns).map(|r| r.handshakes_per_sec);
            let name = format!("f. handshakes/s, {} conns", sizes.f_conns);
            out.record(sec, &name, "conn/s", r);
        }
    }
    out
}

/// Formats a figure with three significant digits and thousands separators.
fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn print_table(runs: &[RunOutput], secs: &[Sec]) {
    let mut order: Vec<(String, &'static str)> = Vec::new();
    let mut by_key: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
    for row in runs.iter().flat_map(|r| &r.rows) {
        if !order.iter().any(|(n, _)| *n == row.name) {
            order.push((row.name.clone(), row.unit));
        }
        by_key
            .entry((row.name.clone(), row.sec.as_str()))
            .or_default()
            .push(row.value);
    }
    let heads: Vec<String> = secs
        .iter()
        .map(|s| format!("libp2p {}", s.as_str()))
        .collect();
    println!();
    println!("| scenario | unit | {} | runs |", heads.join(" | "));
    println!("|---|---|{}---:|", "---:|".repeat(secs.len()));
    for (name, unit) in order {
        let mut runs_seen = 0;
        let cells: Vec<String> = secs
            .iter()
            .map(|s| match by_key.get(&(name.clone(), s.as_str())) {
                Some(v) => {
                    runs_seen = runs_seen.max(v.len());
                    fmt(median(v))
                }
                None => "-".into(),
            })
            .collect();
        println!("| {name} | {unit} | {} | {runs_seen} |", cells.join(" | "));
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: bench-libp2p [--runs N] [--smoke] [--only a,b,c,d,e,f] [--sec noise,plaintext]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 1usize;
    let mut smoke = false;
    let mut only = String::new();
    let mut secs = vec![Sec::Noise, Sec::Plaintext];
    let mut child: Option<Sec> = None;
    let mut n = 0usize;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--runs" => match value.parse() {
                Ok(v) if v > 0 => runs = v,
                _ => return usage(),
            },
            "--only" => only = value,
            "--sec" => match value.split(',').map(Sec::parse).collect::<Option<Vec<_>>>() {
                Some(v) if !v.is_empty() => secs = v,
                _ => return usage(),
            },
            "--child" => match Sec::parse(&value) {
                Some(s) => child = Some(s),
                None => return usage(),
            },
            "--n" => match value.parse() {
                Ok(v) => n = v,
                Err(_) => return usage(),
            },
            "--smoke" => {
                smoke = true;
                i += 1;
                continue;
            }
            _ => return usage(),
        }
        i += 2;
    }
    if let Some(sec) = child {
        return match conns::child_main(sec, n) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("error {e}");
                ExitCode::FAILURE
            }
        };
    }
    let sizes = if smoke { SMOKE } else { FULL };
    let started = std::time::Instant::now();
    let mut outputs = Vec::new();
    for run in 1..=runs {
        eprintln!("run {run} of {runs}...");
        outputs.push(run_once(sizes, &only, &secs));
    }
    print_table(&outputs, &secs);
    println!(
        "\n{} run(s) in {:.1} s{}; libp2p-stream over TCP + yamux (versions in Cargo.lock)",
        runs,
        started.elapsed().as_secs_f64(),
        if smoke { " (smoke sizes)" } else { "" },
    );
    let failures: Vec<&String> = outputs.iter().flat_map(|o| &o.failures).collect();
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{} scenario(s) failed:", failures.len());
        for f in failures {
            eprintln!("  {f}");
        }
        ExitCode::FAILURE
    }
}
