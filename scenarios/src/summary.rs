//! The table an exploration ends with: seed, counts, determinism, speed, the failing case's
//! profile, the coverage grid and the skips by reason.

use crate::determinism::Determinism;
use crate::explore::Report;
use sim::Datapath;

/// The summary table an exploration ends with.
pub fn summary_table(report: &Report) -> String {
    let coverage = &report.coverage;
    let mut out = String::new();
    let mut row = |name: &str, value: String| {
        out.push_str(&format!("{name:<26} {value:>12}\n"));
    };
    row("exploration seed", report.seed.to_string());
    if report.shard != (1, 1) {
        row("shard", format!("{}/{}", report.shard.0, report.shard.1));
    }
    row("scenarios checked", coverage.scenarios.to_string());
    row(
        "skipped (unpredictable)",
        report.skipped_total().to_string(),
    );
    row(
        "  checked up to that step",
        report.skipped_checked_before.to_string(),
    );
    row("steps", report.steps.to_string());
    row("datagrams (all hops)", coverage.datagrams.to_string());
    row("flow records compared", coverage.flows.to_string());
    row(
        "datapath",
        match report.datapath {
            Some(Datapath::Differential) => "differential",
            Some(Datapath::XdpFirst) => "xdp-first",
            Some(Datapath::Userspace) => "userspace",
            None => "-",
        }
        .to_owned(),
    );
    row(
        "determinism",
        match report.determinism {
            Some(Determinism::Off) | None => "off".to_owned(),
            Some(_) => format!("{} cases twice", report.determinism_checked),
        },
    );
    row("seconds", format!("{:.1}", report.seconds));
    if report.seconds > 0.0 {
        row(
            "scenarios per second",
            format!("{:.1}", coverage.scenarios as f64 / report.seconds),
        );
        row(
            "datagrams per second",
            format!("{:.0}", coverage.datagrams as f64 / report.seconds),
        );
    }
    if let Some(failure) = &report.failure {
        out.push_str(&format!(
            "\nfailed: case {} of swarm profile {}\n",
            failure.case_seed, failure.profile
        ));
    }
    out.push_str("\ncoverage\n");
    out.push_str(&coverage.grid());
    if !report.skipped.is_empty() {
        out.push_str("\nskipped, by what the model cannot predict\n");
        let mut skipped: Vec<(&String, &u64)> = report.skipped.iter().collect();
        skipped.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (reason, count) in skipped.iter().take(8) {
            out.push_str(&format!("  {count:>6}  {reason}\n"));
        }
    }
    out
}
