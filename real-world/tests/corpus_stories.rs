//! Corpus stories in the real world: relay-to-self in IPv4, in IPv6 and across families with
//! the relay's XDP program attached, a TCP flow to a DNS resource, and a path switch mid-flow.
//! Each is played on real Linux networking and must agree with the model that judges the
//! simulation: flow records, deliveries and drops, with times within the tolerance.
//!
//! Needs root, network namespaces, iproute2, ethtool, `/dev/net/tun` and BPF, and the
//! `relay-server` and `gateway-server` binaries (built by `cargo test --workspace`); without
//! them the tests skip loudly, and with `CI=true` (or `RELAY_XDP_REQUIRE_BPF`) a skip fails.

use std::{
    path::PathBuf,
    sync::{Condvar, Mutex},
};

use real_world::{Binaries, RealOptions, RealRun};
use scenario_format::Scenario;

/// Two stories at a time. Each runs on the wall clock and keeps about a sixth of one core busy,
/// mostly waiting for its next step, so two side by side keep their times (each run reports
/// its largest difference from the model's); more would start to blur them on 2 cores.
static TURNS: Turns = Turns::new(2);

/// A counting semaphore: at most `free` stories play at once.
struct Turns {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One story's turn, given back when dropped.
struct Turn<'a>(&'a Turns);

impl Turns {
    const fn new(at_once: usize) -> Self {
        Self {
            free: Mutex::new(at_once),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Turn<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Times within this many ms of the model's count as on time (`vpnsim real`'s default too).
/// Runs here land within 1-14 ms; a 2-core machine busy with other work once put one ACK 11 ms
/// late, and this VM's host takes its CPU away for several ms at a time even when idle.
const TOLERANCE_MS: u64 = 25;

/// Plays of a story at most: it is played again only while all its findings are about time and
/// the run's own machinery ran late meanwhile (`RealRun::disturbed`). A finding about what
/// happened, or a drift on a punctual machine, fails on the first play.
const ATTEMPTS: u32 = 3;

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("RELAY_XDP_REQUIRE_BPF").is_some()
}

/// The five stories the real world must play, each a test of its own below.
const NAMED: [&str; 5] = [
    "same-relay-v4",
    "same-relay-v6",
    "same-relay-cross-family",
    "dns-resource-v4",
    "path-switch-mid-flow",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether this machine can play the real world; if not, says so loudly (and fails under
/// CI).
fn can_run(what: &str) -> bool {
    match real_world::missing_support() {
        None => true,
        Some(missing) => {
            assert!(
                !required(),
                "real-world test `{what}` cannot run here ({missing}), and CI requires it"
            );
            eprintln!("SKIPPED real-world test `{what}`: {missing}");
            false
        }
    }
}

/// Plays corpus story `name` in the real world.
fn real_run(name: &str) -> Result<RealRun, real_world::RealError> {
    let scenario = Scenario::from_file(&root().join(format!("scenarios/corpus/{name}.yaml")))
        .map_err(|error| real_world::RealError::Setup(format!("the story: {error}")))?;
    let options = RealOptions {
        binaries: Binaries::find()?,
        dir: root().join(format!("target/vpnsim/real/{name}")),
        tolerance_ms: TOLERANCE_MS,
        seed: 7,
    };
    real_world::run_until_undisturbed(&scenario, &options, ATTEMPTS)
}

/// Plays corpus story `name` in the real world and requires it to agree with the model;
/// `None` when the machine cannot (skipped loudly, or failed under CI).
fn play(name: &str) -> Option<RealRun> {
    let _turn = TURNS.take();
    if !can_run(name) {
        return None;
    }
    let run = real_run(name).expect("the real run is made");
    agrees(name, &run);
    Some(run)
}

fn agrees(name: &str, run: &RealRun) {
    // How close to the tolerance the run came, and how punctual the machine was, for whoever
    // reads the log.
    for disturbed in &run.disturbed_runs {
        eprintln!("`{name}`: played again after {disturbed}");
    }
    eprintln!("`{name}`: {}; {}", run.how_close(), run.punctuality);
    let findings: Vec<String> = run.findings.iter().map(ToString::to_string).collect();
    assert!(
        findings.is_empty(),
        "`{name}`: the real world and the model disagree:\n{}\nartifacts in target/vpnsim/real/{name}",
        findings.join("\n"),
    );
    assert!(
        !run.flows.is_empty(),
        "`{name}`: the story has flows, and the real gateway wrote none"
    );
}

/// The relay's XDP verdicts of one reason, from its metrics.
fn xdp_runs(run: &RealRun, relay: usize, reason: &str) -> f64 {
    run.relay_metrics[relay]
        .iter()
        .filter(|(sample, _)| {
            sample.starts_with("relay_xdp_runs_total") && sample.contains(&format!("\"{reason}\""))
        })
        .map(|(_, value)| value)
        .sum()
}

/// Relay-to-self stories: after the first step every inner packet crosses the one relay
/// between the two allocations, so each delivery (to the client or to the resource) is one
/// ChannelData the kernel's fast path relayed, and no other.
fn assert_relayed_by_xdp(run: &RealRun, reason: &str) {
    let crossings = run.prediction.deliveries.len() as f64;
    let fast = xdp_runs(run, 0, reason);
    assert!(
        crossings > 0.0 && fast == crossings,
        "XDP `{reason}` ran {fast} times for {crossings} datagrams across the relay; \
         metrics: {:?}",
        run.relay_metrics[0]
    );
}

#[test]
fn same_relay_v4() {
    if let Some(run) = play("same-relay-v4") {
        assert_relayed_by_xdp(&run, "tx/chan4-to-chan4");
    }
}

#[test]
fn same_relay_v6() {
    if let Some(run) = play("same-relay-v6") {
        assert_relayed_by_xdp(&run, "tx/chan6-to-chan6");
    }
}

#[test]
fn same_relay_cross_family() {
    play("same-relay-cross-family");
}

#[test]
fn dns_resource_v4() {
    play("dns-resource-v4");
}

#[test]
fn path_switch_mid_flow() {
    play("path-switch-mid-flow");
}

/// Every other corpus story the real world can play must agree with the model too; the ones
/// it cannot play yet are listed (steps it does not drive, stories too long for the wall
/// clock), so a new story is played here the day it is written.
#[test]
fn every_other_playable_story_agrees() {
    if !can_run("every_other_playable_story_agrees") {
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(root().join("scenarios/corpus"))
        .expect("the corpus")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            Some(name.strip_suffix(".yaml")?.to_owned())
        })
        .filter(|name| !NAMED.contains(&name.as_str()))
        .collect();
    names.sort();
    // Two players take the next story in turn (each on a turn of its own, as the named tests);
    // the results are read in the stories' order.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(&String, _)> = std::thread::scope(|scope| {
        let players: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut runs = Vec::new();
                    while let Some(name) =
                        names.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        let _turn = TURNS.take();
                        runs.push((name, real_run(name)));
                    }
                    runs
                })
            })
            .collect();
        players
            .into_iter()
            .flat_map(|player| player.join().expect("a player finishes"))
            .collect()
    });
    results.sort_by(|a, b| a.0.cmp(b.0));
    let (mut played, mut not_played) = (Vec::new(), Vec::new());
    for (name, run) in results {
        match run {
            Ok(run) => {
                agrees(name, &run);
                played.push(name.clone());
            }
            Err(real_world::RealError::Unsupported(why)) => {
                not_played.push(format!("{name}: {why}"));
            }
            Err(error) => panic!("`{name}`: the real run failed: {error}"),
        }
    }
    eprintln!(
        "played in the real world and in agreement: {}\nnot played in the real world yet:\n  {}",
        played.join(", "),
        not_played.join("\n  ")
    );
    assert!(
        played.len() >= 5,
        "the real world should play more of the corpus than the named stories: {played:?}"
    );
}
