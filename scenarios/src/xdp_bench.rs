//! `vpnsim bench`: the cost per packet of each of the XDP fast path's twelve rewriting paths,
//! beside a floor program (`floor_tx`, which only returns XDP_TX) measured the same way in the
//! same run.
//!
//! Every sample is one `BPF_PROG_TEST_RUN` call with `repeat = 1` (with `repeat > 1` the kernel
//! re-runs the program on the buffer the previous repetition rewrote, which would time a
//! different path after the first repetition), alternating call by call with the floor on the
//! same frame, the paths taking turns in short rounds over the whole run (`relay_xdp::bench`
//! explains the method and its statistics).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use relay_xdp::{Verdict, XdpRelay, bench, own_cost};
use xdp_fixtures::{path_fixtures, world};

/// The goal: every path within this factor of the floor.
pub const TARGET_RATIO: f64 = 2.0;
/// The goal for the program's own cost per packet (path minus floor, kernel statistics).
pub const TARGET_OWN_NS: f64 = 60.0;

pub fn run(calls: usize) -> Result<()> {
    let mut relay = XdpRelay::load().context("loading the XDP program")?;
    let setup = world::setup();
    relay
        .configure(setup.relay_v4, setup.relay_v6, &setup.bindings)
        .context("installing the fixtures' relay addresses and bindings")?;
    let verified = relay
        .verified_instruction_count()
        .map_or_else(|| "unknown".to_owned(), |count| count.to_string());
    let fixtures = path_fixtures();
    println!(
        "XDP relay program: {verified} instructions verified; {} paths.\n{}\n",
        fixtures.len(),
        bench::method(calls)
    );
    let started = Instant::now();
    let rows = bench::measure_all(
        &relay,
        fixtures.iter().map(|f| (f.name, f.frame.as_slice())),
        calls,
    )
    .context("measuring")?;
    let seconds = started.elapsed().as_secs_f64();
    print!("{}", bench::render(&rows));

    let not_tx: Vec<&str> = rows
        .iter()
        .filter(|row| row.verdict != Verdict::Tx)
        .map(|row| row.path.as_str())
        .collect();
    if !not_tx.is_empty() {
        bail!(
            "these paths did not rewrite (XDP_TX), so their time is not the path's: {}",
            not_tx.join(", ")
        );
    }
    let worst = rows.iter().map(|row| row.ratio).fold(0.0, f64::max);
    let above: Vec<&str> = rows
        .iter()
        .filter(|row| row.ratio > TARGET_RATIO)
        .map(|row| row.path.as_str())
        .collect();
    if above.is_empty() {
        println!("\nevery path within {TARGET_RATIO}x the floor (worst {worst:.2}x)");
    } else {
        println!(
            "\nabove the {TARGET_RATIO}x target (worst {worst:.2}x): {}",
            above.join(", ")
        );
    }
    let worst_round = rows.iter().map(|row| row.ratio_p75).fold(0.0, f64::max);
    println!(
        "highest per-round 75th percentile {worst_round:.2}x; measured in {seconds:.1} s ({} calls)",
        rows.iter().map(|row| 2 * row.calls).sum::<usize>()
    );

    println!(
        "\nThe program's own cost: the same calls again with the kernel's run-time statistics \
         on (BPF_ENABLE_STATS),\nwhich time each run around the program alone. program, \
         floor: mean ns per run; own: program - floor.\nspread: the farthest quarter of the \
         run from the whole, relative.\n"
    );
    let started = Instant::now();
    let own = own_cost::measure_all(
        &relay,
        fixtures.iter().map(|f| (f.name, f.frame.as_slice())),
        calls,
    )
    .context("measuring with the kernel's statistics")?;
    print!("{}", own_cost::render(&own));
    let worst_own = own.iter().map(|row| row.own_ns).fold(0.0, f64::max);
    let widest = own
        .iter()
        .map(own_cost::OwnCost::spread)
        .fold(0.0, f64::max);
    let verdict = if worst_own <= TARGET_OWN_NS {
        "within"
    } else {
        "above"
    };
    println!(
        "\nthe dearest path costs {worst_own:.1} ns of its own, {verdict} the {TARGET_OWN_NS} ns \
         goal; quarters within {:.1}% of their run; measured in {:.1} s",
        100.0 * widest,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
