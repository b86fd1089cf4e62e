//! Scenario g: the discovery simulator (`peerlink_actors::sim`) over N nodes, each told one of
//! three seeds: once without an attacker (convergence, degrees, block propagation over the
//! graph) and once with an attacker holding 2,000 addresses in 4 network groups (eclipse share).
//! Virtual time, so the figures do not depend on the machine; there is no baseline column.

use peerlink_actors::sim::{self, SimConfig, SimReport};

use crate::{RunOutput, Target};

fn rows(out: &mut RunOutput, label: &str, r: &SimReport) {
    let conv = r.converged_ms.map_or(f64::NAN, |ms| ms as f64 / 1000.0);
    out.row(
        &format!("g. {label}: convergence"),
        "s virtual",
        (conv, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: degree median"),
        "peers",
        (r.degree[1] as f64, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: degree p99"),
        "peers",
        (r.degree[2] as f64, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: degree min"),
        "peers",
        (r.degree[0] as f64, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: outbound min"),
        "peers",
        (r.outbound_min as f64, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: book median"),
        "addrs",
        (r.book[1] as f64, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: eclipse share"),
        "%",
        (r.eclipse_share * 100.0, f64::NAN),
        Target::AbsAtMost(1.0),
    );
    out.row(
        &format!("g. {label}: attacker share of outbound"),
        "%",
        (r.attacker_outbound_share * 100.0, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: block p50"),
        "ms virtual",
        (r.propagation_ms[0] as f64, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: block p99"),
        "ms virtual",
        (r.propagation_ms[1] as f64, f64::NAN),
        Target::Info,
    );
    out.row(
        &format!("g. {label}: block reached"),
        "%",
        (100.0 * r.reached as f64 / r.honest.max(1) as f64, f64::NAN),
        Target::AbsAtLeast(100.0),
    );
}

/// Runs both simulations and adds their rows.
pub fn run(nodes: usize, out: &mut RunOutput) {
    let base = SimConfig {
        seed: 42,
        nodes,
        duration_ms: 120_000,
        ..SimConfig::default()
    };
    let started = std::time::Instant::now();
    let honest = sim::run(&base);
    let attacked = sim::run(&SimConfig {
        attacker_addrs: 2_000,
        attacker_groups: 4,
        ..base
    });
    for (label, r) in [
        (format!("{nodes} nodes"), &honest),
        (
            format!("{nodes} nodes, attacker 2,000 addrs in 4 groups"),
            &attacked,
        ),
    ] {
        if r.converged_ms.is_none() {
            out.failures
                .push(format!("g ({label}): did not converge: {r:?}"));
        }
        rows(out, &label, r);
    }
    out.notes.push(format!(
        "g: two simulations of {nodes} nodes, 120 s virtual each, in {:.1} s wall; events {} / {}, evictions {} / {}",
        started.elapsed().as_secs_f64(),
        honest.events,
        attacked.events,
        honest.evictions,
        attacked.evictions
    ));
}
