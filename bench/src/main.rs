//! `peerlink-bench`: every scenario run twice in the same process run, once through peerlink
//! and once through a minimal raw tokio baseline doing the same work with the same framing, and
//! one table of medians and ratios. Ratios matter more than absolutes: the machine has two
//! shared cores.
//!
//! Layout: `common` (message, tally, measurements), `peer` (peerlink side of a-d), `raw`
//! (baseline side of a-d), `conns` (e and f, server in a child process), `sim` (g, the
//! discovery simulator: virtual time, no baseline), `sync` (h: block sync of the node with
//! signature verification, its "baseline" the same sync without it), `flood` (i, sync under
//! flood: the same sync unflooded and flooded in one run), `propagation` (j, a block flooded
//! over 100 in-process nodes connected by discovery; baseline: the same graph in raw tokio).
//!
//! Every run measures each scenario over the plaintext transport, then (a), (b), (d) idle, (e)
//! and (f) again over Noise (rows tagged `[noise]`), whose baseline is the raw tokio code
//! running the same Noise handshake and record layer (`peerlink_actors::secure`).
//!
//! Usage: `peerlink-bench [--runs N] [--smoke] [--only a,b,c,d,e,f,g,h,i,j]`. `--smoke` uses tiny
//! sizes and exits non-zero if any scenario fails to complete (never because of a slow figure).

mod ciphers;
mod common;
mod conns;
mod flood;
mod peer;
mod propagation;
mod raw;
mod sim;
mod sync;

use std::collections::BTreeMap;
use std::process::ExitCode;

use common::{median, CpuUse};
use conns::Server;
use peer::{Path, Rtt};

/// Sizes of every scenario; `--smoke` shrinks them.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// (a) messages per timed run.
    pub a_msgs: u64,
    /// (a) messages through `Network::send`.
    pub a_registry_msgs: u64,
    /// (b) 64 KiB messages per timed run.
    pub b_msgs: u64,
    /// (c) peers.
    pub c_peers: usize,
    /// (c) broadcasts per timed run.
    pub c_msgs: u64,
    /// (d) pings per measurement.
    pub d_pings: u64,
    /// (d) broadcasts that run while pinging under load.
    pub d_load_msgs: u64,
    /// (e) idle session counts.
    pub e_counts: [usize; 2],
    /// (f) connections.
    pub f_conns: usize,
    /// (g) simulated nodes.
    pub g_nodes: usize,
    /// (h) blocks of 1 KiB synced.
    pub h_blocks: u64,
    /// (i) blocks synced under flood.
    pub i_blocks: u64,
    /// (j) nodes connected by discovery.
    pub j_nodes: usize,
    /// (j) blocks flooded over them.
    pub j_blocks: u64,
}

const FULL: Sizes = Sizes {
    a_msgs: 1_000_000,
    a_registry_msgs: 1_000_000,
    b_msgs: 20_000,
    c_peers: 32,
    c_msgs: 30_000,
    d_pings: 2_000,
    d_load_msgs: 20_000,
    e_counts: [1_000, 10_000],
    f_conns: 5_000,
    g_nodes: 1_000,
    h_blocks: 50_000,
    i_blocks: 100_000,
    j_nodes: 100,
    j_blocks: 20,
};

const SMOKE: Sizes = Sizes {
    a_msgs: 2_000,
    a_registry_msgs: 2_000,
    b_msgs: 50,
    c_peers: 4,
    c_msgs: 500,
    d_pings: 40,
    d_load_msgs: 500,
    e_counts: [100, 300],
    f_conns: 200,
    g_nodes: 100,
    h_blocks: 500,
    i_blocks: 2_000,
    j_nodes: 20,
    j_blocks: 5,
};

const SMALL_BYTES: usize = 256;
const LARGE_BYTES: usize = 64 * 1024;

/// What a row's ratio (peerlink / baseline) or absolute figure must meet.
#[derive(Debug, Clone, Copy)]
enum Target {
    RatioAtLeast(f64),
    RatioAtMost(f64),
    AbsAtMost(f64),
    AbsAtLeast(f64),
    Info,
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast(r) => format!("ratio >= {r}"),
            Target::RatioAtMost(r) => format!("ratio <= {r}"),
            Target::AbsAtMost(v) => format!("<= {} {unit}", fmt(v)),
            Target::AbsAtLeast(v) => format!(">= {} {unit}", fmt(v)),
            Target::Info => "-".into(),
        }
    }

    fn met(self, peerlink: f64, ratio: f64) -> Option<bool> {
        match self {
            Target::RatioAtLeast(r) => Some(ratio >= r),
            Target::RatioAtMost(r) => Some(ratio <= r),
            Target::AbsAtMost(v) => Some(peerlink <= v),
            Target::AbsAtLeast(v) => Some(peerlink >= v),
            Target::Info => None,
        }
    }
}

/// One measured line of one run.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    unit: &'static str,
    peerlink: f64,
    baseline: f64,
    target: Target,
}

/// Everything one run produced.
#[derive(Default)]
struct RunOutput {
    rows: Vec<Row>,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl RunOutput {
    fn row(&mut self, name: &str, unit: &'static str, pair: (f64, f64), target: Target) {
        self.rows.push(Row {
            name: name.to_string(),
            unit,
            peerlink: pair.0,
            baseline: pair.1,
            target,
        });
    }

    /// Records a scenario's outcome; a failure is kept and reported, the run goes on.
    fn check<T>(&mut self, scenario: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("scenario {scenario} FAILED: {e}");
                self.failures.push(format!("{scenario}: {e}"));
                None
            }
        }
    }
}

fn both<T>(p: Result<T, String>, b: Result<T, String>) -> Result<(T, T), String> {
    Ok((
        p.map_err(|e| format!("peerlink: {e}"))?,
        b.map_err(|e| format!("baseline: {e}"))?,
    ))
}

fn cpu_note(what: &str, p: CpuUse, b: CpuUse) -> String {
    format!(
        "{what}: peerlink {:.2} cores ({} threads busy >25%), baseline {:.2} cores ({} threads busy >25%)",
        p.cores, p.busy_threads, b.cores, b.busy_threads
    )
}

fn run_once(sizes: Sizes, only: &str) -> RunOutput {
    common::set_noise(false);
    let mut out = run_transport(sizes, only);
    // The encrypted rows: peerlink over Noise against the raw baseline with the same cipher
    // and record layer; (c) stays plaintext-only, (d) is measured idle.
    common::set_noise(true);
    let noise_only: String = if only.is_empty() {
        "abdef".into()
    } else {
        only.replace(['c', 'g', 'h', 'i', 'j'], "")
    };
    if !noise_only.is_empty() {
        let noise = run_transport(sizes, &noise_only);
        out.rows.extend(noise.rows);
        out.notes.extend(noise.notes);
        out.failures.extend(noise.failures);
    }
    common::set_noise(false);
    out
}

/// Raw baseline of (a) and (b) for the current transport.
fn raw_one_connection(count: u64, size: usize) -> Result<f64, String> {
    if common::noise() {
        raw::one_connection_noise(count, size)
    } else {
        raw::one_connection(count, size)
    }
}

fn run_transport(sizes: Sizes, only: &str) -> RunOutput {
    let mut out = RunOutput::default();
    let want = |s: char| only.is_empty() || only.contains(s);
    let tag = if common::noise() { "[noise] " } else { "" };
    if want('a') {
        let base = raw_one_connection(sizes.a_msgs, SMALL_BYTES);
        // Every sender path, with the one (burst) delivery to the receiving application.
        let variants = [
            (Path::Handle, "PeerHandle::send"),
            (Path::HandleMany, "PeerHandle::send_many(64)"),
            (Path::Registry, "Network::send"),
        ];
        for (path, label) in variants {
            let count = match path {
                Path::Registry => sizes.a_registry_msgs,
                _ => sizes.a_msgs,
            };
            let p = peer::one_connection(path, count, SMALL_BYTES);
            if let Some((p, b)) = out.check(&format!("a ({label})"), both(p, base.clone())) {
                out.row(
                    &format!("{tag}a. 256 B msgs, 1 conn, {label}"),
                    "msg/s",
                    (p, b),
                    Target::RatioAtLeast(0.8),
                );
            }
        }
    }
    if want('b') {
        let mb = |r: Result<f64, String>| r.map(|m| m * LARGE_BYTES as f64 / 1e6);
        let b = mb(raw_one_connection(sizes.b_msgs, LARGE_BYTES));
        let p = mb(peer::one_connection(
            Path::Handle,
            sizes.b_msgs,
            LARGE_BYTES,
        ));
        if let Some((p, b)) = out.check("b", both(p, b)) {
            out.row(
                &format!("{tag}b. 64 KiB msgs, 1 conn, PeerHandle"),
                "MB/s",
                (p, b),
                // Over Noise: twice rust-libp2p's Noise figure on this machine (902 MB/s).
                if common::noise() {
                    Target::AbsAtLeast(1800.0)
                } else {
                    Target::RatioAtLeast(0.95)
                },
            );
        }
    }
    if want('c') {
        let b = raw::broadcast(sizes.c_peers, sizes.c_msgs, SMALL_BYTES);
        let p = peer::broadcast(sizes.c_peers, sizes.c_msgs, SMALL_BYTES);
        if let Some(((p, pc), (b, bc))) = out.check("c", both(p, b)) {
            let name = format!("c. broadcast 256 B to {} peers", sizes.c_peers);
            out.row(&name, "deliveries/s", (p, b), Target::RatioAtLeast(0.8));
            out.notes.push(cpu_note("c", pc, bc));
        }
    }
    if want('d') {
        // The load (scenario c) is plaintext: the encrypted rows are idle only.
        let loads: &[(bool, &str)] = if common::noise() {
            &[(false, "idle")]
        } else {
            &[(false, "idle"), (true, "during c")]
        };
        for &(load, label) in loads {
            if let Some((s50, s99)) = out.check(
                &format!("d (raw same-thread, {label})"),
                raw::ping(sizes, load, false, false),
            ) {
                out.notes.push(format!(
                    "{tag}d: raw echo, client and server on one runtime, back to back, {label}: p50 {s50:.1} us, p99 {s99:.1} us"
                ));
            }
            for (kind, what, paced) in [
                (Rtt::SessionPing, "session ping (1 ms cadence)", true),
                (Rtt::AppEcho, "app echo (back to back)", false),
                (
                    Rtt::AppEchoOneThread,
                    "app echo, node on one thread (back to back)",
                    false,
                ),
            ] {
                let b = raw::ping(sizes, load, true, paced);
                let p = peer::ping(sizes, load, kind);
                let scenario = format!("d ({what}, {label})");
                if let Some(((p50, p99), (b50, b99))) = out.check(&scenario, both(p, b)) {
                    let name = format!("{tag}d. RTT {what}");
                    out.row(
                        &format!("{name} p50, {label}"),
                        "us",
                        (p50, b50),
                        Target::Info,
                    );
                    out.row(
                        &format!("{name} p99, {label}"),
                        "us",
                        (p99, b99),
                        Target::RatioAtMost(2.0),
                    );
                }
            }
        }
    }
    if want('e') {
        for (i, n) in sizes.e_counts.into_iter().enumerate() {
            let p = conns::measure(Server::Peerlink, n, 20 + i as u8);
            let b = conns::measure(Server::Baseline, n, 30 + i as u8);
            if let Some((p, b)) = out.check(&format!("e ({n})"), both(p, b)) {
                out.row(
                    &format!("{tag}e. RSS per idle session, {n} sessions"),
                    "B",
                    (p.bytes_per_session, b.bytes_per_session),
                    Target::AbsAtMost(8192.0),
                );
                out.notes.push(format!(
                    "{tag}e ({n}): heap in use per session (mallinfo2) peerlink {:.0} B, baseline {:.0} B",
                    p.heap_per_session, b.heap_per_session
                ));
            }
        }
    }
    if want('f') {
        let p = conns::measure(Server::Peerlink, sizes.f_conns, 40);
        let b = conns::measure(Server::Baseline, sizes.f_conns, 41);
        if let Some((p, b)) = out.check("f", both(p, b)) {
            out.row(
                &format!("{tag}f. handshakes/s, {} conns", sizes.f_conns),
                "conn/s",
                (p.handshakes_per_sec, b.handshakes_per_sec),
                // Over Noise: twice rust-libp2p's Noise figure on this machine (2.4 k/s).
                Target::AbsAtLeast(if common::noise() { 4_800.0 } else { 10_000.0 }),
            );
            out.notes.push(format!(
                "{tag}f: server process peerlink {:.2} cores ({} threads busy >25%), baseline {:.2} cores; client process {:.2} / {:.2} cores",
                p.server_cores, p.busy_threads, b.server_cores, p.client_cores, b.client_cores
            ));
        }
    }
    if want('g') {
        sim::run(sizes.g_nodes, &mut out);
    }
    if want('h') {
        let b = sync::rate(sizes.h_blocks, false, 2);
        let p = sync::rate(sizes.h_blocks, true, 4);
        if let Some((p, b)) = out.check("h", both(p, b)) {
            out.row(
                &format!(
                    "h. block sync, {} blocks of 1 KiB, verified (baseline: not verified)",
                    sizes.h_blocks
                ),
                "blocks/s",
                (p, b),
                Target::AbsAtLeast(30_000.0),
            );
        }
        let (one, two) = (
            sync::verify_rate(1, sizes.h_blocks.min(20_000)),
            sync::verify_rate(2, sizes.h_blocks.min(20_000)),
        );
        out.notes.push(format!(
            "h: the producer rule alone (batches of 128, no network, no storage): {} blocks/s on 1 thread, {} on 2",
            fmt(one),
            fmt(two)
        ));
    }
    if want('i') {
        const FLOODERS: usize = 4;
        let base = flood::measure(sizes.i_blocks, 0, 7);
        let flooded = flood::measure(sizes.i_blocks, FLOODERS, 6);
        if let Some((f, b)) = out.check("i", both(flooded, base)) {
            out.row(
                &format!(
                    "i. sync {} blocks under flood ({FLOODERS} flooders) vs unflooded",
                    sizes.i_blocks
                ),
                "s",
                (f.sync_s, b.sync_s),
                Target::RatioAtMost(5.0),
            );
            out.row(
                "i. GET /status p99 during flood vs unflooded",
                "ms",
                (f.status_p99_ms, b.status_p99_ms),
                Target::AbsAtMost(50.0),
            );
            out.row(
                "i. new handshake p99 during flood vs unflooded",
                "ms",
                (f.handshake_p99_ms, b.handshake_p99_ms),
                Target::AbsAtMost(50.0),
            );
            out.notes.push(format!(
                "i: flooders received {} answers during the honest sync",
                f.flood_answers
            ));
        }
    }
    if want('j') {
        let n = sizes.j_nodes;
        if let Some((p, graph)) = out.check("j", propagation::peerlink(n, sizes.j_blocks)) {
            let b = propagation::baseline(n, graph.edges.clone(), sizes.j_blocks);
            if let Some(b) = out.check("j (baseline)", b) {
                let ((p50, p99), (b50, b99)) = (p.all_p50_p99(), b.all_p50_p99());
                let name = format!("j. block of 1 KiB to all {n} discovery-connected nodes");
                out.row(&format!("{name}, p50"), "ms", (p50, b50), Target::Info);
                out.row(
                    &format!("{name}, p99"),
                    "ms",
                    (p99, b99),
                    Target::AbsAtMost(100.0),
                );
                out.row(
                    &format!("j. block to half of the {n} nodes, p50"),
                    "ms",
                    (common::median(&p.to_half_ms), common::median(&b.to_half_ms)),
                    Target::Info,
                );
            }
            out.notes.push(format!(
                "j: {n} nodes converged (every node >= target outbound, connected) after {:.2} s; \
                 degree min/median/max {}/{}/{}, outbound min {}, {} connections; {} blocks",
                graph.converged_s,
                graph.degree.0,
                graph.degree.1,
                graph.degree.2,
                graph.outbound_min,
                graph.edges.len(),
                sizes.j_blocks
            ));
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

fn print_table(runs: &[RunOutput]) {
    // Keep the first run's row order.
    let mut order: Vec<String> = Vec::new();
    let mut by_name: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for row in runs.iter().flat_map(|r| &r.rows) {
        if !by_name.contains_key(&row.name) {
            order.push(row.name.clone());
        }
        by_name.entry(row.name.clone()).or_default().push(row);
    }
    println!();
    println!("| scenario | unit | peerlink | baseline | ratio | target | met | met per run |");
    println!("|---|---|---:|---:|---:|---|---|---:|");
    for name in order {
        let rows = &by_name[&name];
        let p = median(&rows.iter().map(|r| r.peerlink).collect::<Vec<_>>());
        let b = median(&rows.iter().map(|r| r.baseline).collect::<Vec<_>>());
        let ratio = median(
            &rows
                .iter()
                .map(|r| r.peerlink / r.baseline)
                .collect::<Vec<_>>(),
        );
        let target = rows[0].target;
        let met = match target.met(p, ratio) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        // How many runs met the target on their own figures (a target such as "in at least 4
        // of 5 runs" is read here; the `met` column judges the medians).
        let per_run = rows
            .iter()
            .filter(|r| target.met(r.peerlink, r.peerlink / r.baseline) == Some(true))
            .count();
        let per_run = match target {
            Target::Info => format!("{} runs", rows.len()),
            _ => format!("{per_run} of {}", rows.len()),
        };
        println!(
            "| {name} | {} | {} | {} | {:.2} | {} | {met} | {per_run} |",
            rows[0].unit,
            fmt(p),
            fmt(b),
            ratio,
            target.describe(rows[0].unit),
        );
    }
    println!();
    for (i, r) in runs.iter().enumerate() {
        for note in &r.notes {
            println!("run {}: {note}", i + 1);
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: peerlink-bench [--runs N] [--smoke] [--only a,b,c,d,e,f,g,h,i,j]\n(every run measures plaintext rows, then [noise] rows of a, b, d (idle), e, f)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 1usize;
    let mut smoke = false;
    let mut only = String::new();
    let mut child: Option<String> = None;
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
            "--child" => child = Some(value),
            "--transport" => match value.as_str() {
                "noise" => common::set_noise(true),
                "plaintext" => common::set_noise(false),
                _ => return usage(),
            },
            "--n" => match value.parse() {
                Ok(v) => n = v,
                Err(_) => return usage(),
            },
            "--ciphers" => {
                return match ciphers::compare() {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::FAILURE
                    }
                };
            }
            "--smoke" => {
                smoke = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => return usage(),
            _ => return usage(),
        }
        i += 2;
    }
    if let Some(server) = child {
        let server = match server.as_str() {
            "peerlink" => Server::Peerlink,
            "baseline" => Server::Baseline,
            _ => return usage(),
        };
        return match conns::child_main(server, n) {
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
        outputs.push(run_once(sizes, &only));
    }
    print_table(&outputs);
    let failures: Vec<&String> = outputs.iter().flat_map(|o| &o.failures).collect();
    println!(
        "\n{} run(s) in {:.1} s{}",
        runs,
        started.elapsed().as_secs_f64(),
        if smoke { " (smoke sizes)" } else { "" }
    );
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
