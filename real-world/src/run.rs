//! One real run: set the world up, play the steps on the scenario's timeline in real time,
//! shut the gateways down at its end, and judge what happened against the model.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use model::Prediction;
use proto::flow::FlowRecord;
use scenario_format::{
    Scenario, Side, Step, plan::AddressPlan, settings::TCP_MSS, timing::Timeline,
};

use crate::{
    RealError,
    captures::{
        resource_deliveries, start_resource_capture, start_router_capture, tcpdump_installed,
    },
    client::Seen,
    compare::{self, Finding},
    fast_path::{FastPath, fast_path_against_the_simulation},
    interrupt,
    links::{Links, hosts_by_address},
    netns::{Namespaces, remove_leftovers},
    processes::Binaries,
    punctuality::{Punctuality, disturbed},
    topology::{Topology, resource_ips},
    world::World,
};

/// How a real run is made and judged.
#[derive(Debug, Clone)]
pub struct RealOptions {
    pub binaries: Binaries,
    /// Where the run writes its artifacts (configs, logs, flow logs, the pcap).
    pub dir: PathBuf,
    /// How far a real time may be from the model's, in ms.
    pub tolerance_ms: u64,
    /// Seeds the relays' and gateways' generators and the TURN clients.
    pub seed: u64,
}

/// What a real run did, and how it compares with the model.
#[derive(Debug)]
pub struct RealRun {
    /// The scenario as the real world played it.
    pub played: Scenario,
    pub prediction: Prediction,
    /// The gateways' flow records, on the scenario's clock.
    pub flows: Vec<FlowRecord>,
    /// Inner packets the clients received, and the packets that reached the resources.
    pub deliveries: Vec<Seen>,
    /// Drops the gateways reported: (gateway, client, reason).
    pub drops: Vec<(u32, Option<u32>, String)>,
    /// Each relay's XDP verdicts by reason (`relay_xdp_runs_total`) and datagrams its sockets
    /// relayed, scraped at the end.
    pub relay_metrics: Vec<BTreeMap<String, f64>>,
    /// The XDP program's `tx/*` and `drop/*` verdicts, in the simulation of the same story and
    /// on the real relays (they must be equal).
    pub fast_path: FastPath,
    /// The capture in the router namespace.
    pub pcap: Option<PathBuf>,
    /// Differences from the model; empty when the worlds agree.
    pub findings: Vec<Finding>,
    /// The largest difference, in ms, between a time the real world took (a flow record's, a
    /// delivery's, a link drop's) and the model's: how close to the tolerance the run came.
    pub worst_offset_ms: u64,
    /// The tolerance the run was judged by ([`RealOptions::tolerance_ms`]).
    pub tolerance_ms: u64,
    /// How late the world's own machinery ran while the story played.
    pub punctuality: Punctuality,
    /// Earlier plays of the same story that measured a stalled machine rather than the
    /// systems under test ([`RealRun::disturbed`]), described; see [`run_until_undisturbed`].
    pub disturbed_runs: Vec<String>,
}

impl RealRun {
    /// Why this run's findings measure the machine rather than the systems under test
    /// ([`crate::punctuality::disturbed`]); `None` when they stand, or there are none.
    pub fn disturbed(&self) -> Option<String> {
        disturbed(
            &self.findings,
            self.worst_offset_ms,
            &self.punctuality,
            self.tolerance_ms,
        )
    }

    /// How close the run's times came to the model's, for a run that agrees: its largest
    /// difference may pass the tolerance only by a late step's allowance
    /// ([`compare::Timing`]).
    pub fn how_close(&self) -> String {
        let beyond = if self.worst_offset_ms > self.tolerance_ms {
            ", and as much more as its step was late"
        } else {
            ""
        };
        format!(
            "times within {} ms of the model's (tolerance {} ms{beyond})",
            self.worst_offset_ms, self.tolerance_ms
        )
    }
}

/// Plays `scenario` as [`run`] does, and again, up to `attempts` plays in all, while a play is
/// [`RealRun::disturbed`]: a stalled machine is measured again rather than blamed on the
/// systems under test. A finding about what happened is never played again, nor is a time
/// finding from a machine that kept its times, so a real drift fails on its first play. The
/// last play is returned, with the disturbed ones before it described.
pub fn run_until_undisturbed(
    scenario: &Scenario,
    options: &RealOptions,
    attempts: u32,
) -> Result<RealRun, RealError> {
    let mut disturbed_runs = Vec::new();
    loop {
        let mut run = run(scenario, options)?;
        match run.disturbed() {
            Some(why) if (disturbed_runs.len() as u32) + 1 < attempts => {
                disturbed_runs.push(format!("play {}: {why}", disturbed_runs.len() + 1));
            }
            _ => {
                run.disturbed_runs = disturbed_runs;
                return Ok(run);
            }
        }
    }
}

/// The longest story the real world plays: it runs on the wall clock.
pub const MAX_REAL_SECONDS: u64 = 60;

/// Steps the real world plays; others make the run [`RealError::Unsupported`], as does a
/// story longer than [`MAX_REAL_SECONDS`] or a resource segment the client's MSS would split.
fn check_supported(scenario: &Scenario) -> Result<(), RealError> {
    let t_end = Timeline::of(scenario).t_end;
    if t_end > MAX_REAL_SECONDS * 1000 {
        return Err(RealError::Unsupported(format!(
            "the story lasts {} s, and the real world plays at most {MAX_REAL_SECONDS} s on the wall clock",
            t_end / 1000
        )));
    }
    for (k, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::TcpData {
                from: Side::Resource,
                bytes,
                ..
            } if *bytes > TCP_MSS => {
                return Err(RealError::Unsupported(format!(
                    "step {k}: {bytes} bytes from the resource, beyond the client's MSS of \
                     {TCP_MSS}: Linux would split them into several segments"
                )));
            }
            Step::Path { .. }
            | Step::Udp { .. }
            | Step::TcpOpen { .. }
            | Step::TcpRetransmitSyn { .. }
            | Step::TcpLateAck { .. }
            | Step::TcpData { .. }
            | Step::TcpClose { .. }
            | Step::TcpSimultaneousClose { .. }
            | Step::TcpReset { .. }
            | Step::DnsQuery { .. }
            | Step::DnsChange { .. }
            | Step::Grant(_)
            | Step::Revoke { .. }
            | Step::Roam { .. }
            | Step::Fault { .. }
            | Step::Idle { .. } => {}
            Step::GatewayRestart { gateway }
                if scenario
                    .topology
                    .gateway_index(gateway)
                    .is_some_and(|g| scenario.topology.gateways[g].relay.is_some()) =>
            {
                return Err(RealError::Unsupported(format!(
                    "step {k}: a restarted gateway-server allocates on its relay again, where \
                     the simulation's restarted gateway keeps its allocation"
                )));
            }
            Step::GatewayRestart { .. } => {}
            other => {
                // Externally tagged: the one key is the step's kind.
                let value = serde_json::to_value(other).unwrap_or_default();
                let kind = value
                    .as_object()
                    .and_then(|object| object.keys().next().cloned())
                    .or_else(|| value.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(RealError::Unsupported(format!(
                    "step {k} (`{kind}`) is not played in the real world yet"
                )));
            }
        }
    }
    Ok(())
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// Plays `scenario` in the real world and judges it. `Err` only when the run could not be
/// made; differences from the model are [`RealRun::findings`].
pub fn run(scenario: &Scenario, options: &RealOptions) -> Result<RealRun, RealError> {
    check_supported(scenario)?;
    interrupt::install();
    remove_leftovers();
    scenario
        .validate()
        .map_err(|error| RealError::Unsupported(format!("invalid scenario: {error:?}")))?;
    let played = scenario.clone();
    model::predict(&played).map_err(|e| RealError::Unpredictable(format!("{e:?}")))?;
    // A fresh directory: the flow logs are appended to.
    let _ = std::fs::remove_dir_all(&options.dir);
    std::fs::create_dir_all(&options.dir)
        .map_err(|error| RealError::Setup(format!("{}: {error}", options.dir.display())))?;
    let mut namespaces = Namespaces::new(RUNS.fetch_add(1, Ordering::Relaxed));
    let plan = AddressPlan::new(&played);
    let topology = Topology::build(&mut namespaces, &played, &plan)?;
    let _peer_programs = native_xdp_peers(&topology)?;
    let links = Links::attach(
        &topology.router,
        &topology.router_links,
        &played,
        hosts_by_address(&played, &plan),
    )?;
    if !tcpdump_installed() {
        return Err(RealError::Setup(
            "tcpdump is not installed (it captures what reaches the resources)".into(),
        ));
    }
    let router_capture = start_router_capture(&topology.router, &options.dir);
    let resource_captures = topology
        .resources
        .iter()
        .enumerate()
        .map(|(index, ns)| {
            let ips = resource_ips(&played, &played.topology.gateways[index].name);
            start_resource_capture(ns, index, &ips, &options.dir)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // tcpdump needs a moment before it sees the first packet.
    std::thread::sleep(Duration::from_millis(500));
    let mut world = World::start(&played, &plan, &topology, &namespaces, links, options)?;
    let timeline = Timeline::of(&played);
    world.play(&played, &plan, &timeline)?;
    let punctuality = world.punctuality();
    world.shut_down_gateways()?;
    let relay_metrics = world.scrape_relays(&namespaces, &plan);
    world.shut_down_relays()?;
    world.links.finish(timeline.t_end);
    let pcap = router_capture.and_then(|mut capture| {
        capture.child.stop(Duration::from_secs(3)).ok()?;
        Some(capture.path)
    });
    let mut resource_seen = Vec::new();
    for (gateway, mut capture) in resource_captures.into_iter().enumerate() {
        capture.child.stop(Duration::from_secs(3))?;
        resource_seen.extend(resource_deliveries(
            &capture.path,
            gateway,
            world.origin_wall,
        )?);
    }
    let flows = world.flow_records()?;
    let allocations = world.allocations(&played);
    let prediction = model::predict_with(&played, &allocations)
        .map_err(|e| RealError::Unpredictable(format!("{e:?}")))?;
    let mut deliveries: Vec<Seen> = world
        .clients
        .iter()
        .flat_map(|client| client.seen.iter().cloned())
        .collect();
    deliveries.extend(resource_seen);
    let drops = world.drops();
    let timing = compare::Timing::with_steps_late(options.tolerance_ms, world.steps_late.clone());
    let mut findings = compare::flows(&prediction.flows, &flows, &timing);
    findings.extend(compare::deliveries(
        &prediction.deliveries,
        &deliveries,
        &timing,
    ));
    findings.extend(compare::gateway_drops(&prediction.drops, &drops));
    findings.extend(compare::link_drops(
        &prediction.drops,
        &world.links.drops(),
        &timing,
    ));
    if world.links.strangers() > 0 {
        findings.push(Finding::content(format!(
            "the router forwarded {} datagrams between addresses that are no two hosts of the story",
            world.links.strangers()
        )));
    }
    let fast_path = fast_path_against_the_simulation(&played, options.seed, &relay_metrics);
    findings.extend(fast_path.finding.clone());
    for (index, client) in world.clients.iter().enumerate() {
        for error in &client.errors {
            findings.push(Finding::content(format!("client {index}: {error}")));
        }
    }
    for (index, resources) in world.resources.iter().enumerate() {
        for error in &resources.errors {
            findings.push(Finding::content(format!(
                "resources of gateway {index}: {error}"
            )));
        }
    }
    Ok(RealRun {
        played,
        prediction,
        flows,
        deliveries,
        drops,
        relay_metrics,
        fast_path,
        pcap,
        findings,
        worst_offset_ms: timing.worst_ms(),
        tolerance_ms: options.tolerance_ms,
        punctuality,
        disturbed_runs: Vec::new(),
    })
}

/// veth hands an `XDP_TX` frame of a native-mode program on to its peer only if the peer runs
/// an XDP program too (it needs the peer's NAPI). So the router's end of each relay's link gets
/// one: the relay program itself, with no relay address configured, which passes every frame.
/// The returned programs stay attached until dropped.
fn native_xdp_peers(topology: &Topology) -> Result<Vec<relay_xdp::XdpRelay>, RealError> {
    let mut peers = Vec::new();
    for r in 0..topology.relays.len() {
        let link = format!("to-r{r}");
        let mut program = relay_xdp::XdpRelay::load()
            .map_err(|error| RealError::Setup(format!("the XDP program for {link}: {error}")))?;
        crate::netns::inside(&topology.router, || {
            program
                .attach(&link, relay_xdp::AttachMode::Native)
                .map_err(std::io::Error::other)
        })?;
        peers.push(program);
    }
    Ok(peers)
}
