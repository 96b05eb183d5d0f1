//! `relay-bench`, which `cargo xtask bench relay` runs (after installing what it needs): relay
//! throughput on real sockets in network namespaces, for
//! relay-server in userspace, relay-server with its XDP program, and coturn, on the same load,
//! beside a reference run without a relay.
//!
//! Each run starts one relay in the relay namespace, sets up the clients (allocation and
//! channel each), measures an idle baseline, then sends ChannelData for the set time while the
//! peer counts what arrives, and charges the CPU the relay used to the datagrams delivered.
//! The modes take turns run by run (userspace, xdp, coturn, direct, userspace, ...) so that
//! whatever else the machine does spreads over all of them. The table goes to stdout and to
//! `target/bench/relay.md`; each run's logs (and coturn's configuration) to
//! `target/bench/relay-runs/`.
//!
//! - `netns`: the namespaces and veths (removed on drop);
//! - `servers`: relay-server and coturn, built or installed, configured and started;
//! - `load`: the TURN clients, the sender and the peer's receiver;
//! - `cpu`: CPU times from `/proc`;
//! - `metrics`: relay-server's account of who relayed (XDP_TX or its sockets);
//! - `process`: bounded commands, server guards and Ctrl-C;
//! - `report`: medians and the table.

mod cpu;
mod load;
mod metrics;
mod netns;
mod process;
mod report;
mod servers;

use std::{
    cell::{Cell, RefCell},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;

use self::{
    cpu::{MachineTicks, ProcessTicks},
    load::PeerReceiver,
    netns::{Role, Topology},
    report::{RelayCpu, RunResult, Setting},
    servers::{Server, XdpAttach},
};

/// How long the peer must hear nothing after the sender stops before a run's counts are taken.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
/// The most a run waits for in-flight datagrams after the sender stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Datagrams per client of the probe that tells whether native XDP relays.
const NATIVE_PROBE_ROUNDS: usize = 16;

/// What carries the load in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Mode {
    /// relay-server, every datagram through its sockets.
    Userspace,
    /// relay-server with its XDP program attached to the relay's eth0.
    Xdp,
    /// coturn's turnserver.
    Coturn,
    /// no relay: the clients send the payload as plain UDP straight to the peer through the
    /// router (what a datagram costs outside any relay).
    Direct,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Userspace => "userspace",
            Self::Xdp => "xdp",
            Self::Coturn => "coturn",
            Self::Direct => "direct",
        }
    }
}

/// `--rate`: datagrams per second offered in all, or as many as the sender can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Max,
    PerSecond(u64),
}

impl Rate {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "max" {
            return Ok(Self::Max);
        }
        match text.replace('_', "").parse::<u64>() {
            Ok(0) | Err(_) => Err(format!("`{text}` is neither `max` nor a positive number")),
            Ok(rate) => Ok(Self::PerSecond(rate)),
        }
    }

    /// The pace for the sender: `None` is as fast as it goes.
    pub fn per_second(self) -> Option<u64> {
        match self {
            Self::Max => None,
            Self::PerSecond(rate) => Some(rate),
        }
    }
}

/// Relay throughput in network namespaces: relay-server in userspace, relay-server with its
/// XDP program attached, and coturn's turnserver, on the same load, beside a direct path
/// without a relay.
///
/// Needs root (namespaces, XDP, and apt-get to install coturn when it is missing). Builds
/// relay-server in release first. Nothing is sent outside the namespaces the bench creates;
/// they, and every process it started, are removed at the end, on failure and on Ctrl-C.
/// Writes the table to target/bench/relay.md.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask bench relay")]
struct Options {
    /// Seconds of load per run (each run also idles this long first, for the CPU baseline).
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    duration_s: u64,
    /// TURN clients, each with its own allocation and a channel to the peer.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    clients: u16,
    /// Payload bytes per ChannelData datagram.
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=1400))]
    payload: u16,
    /// What carries the load, comma-separated; `direct` (no relay) is what the `above direct`
    /// column subtracts.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "userspace,xdp,coturn,direct"
    )]
    modes: Vec<Mode>,
    /// Runs of each mode; the table shows their medians.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=20))]
    runs: u16,
    /// Datagrams per second offered in all, paced every millisecond, the same in every run; or
    /// `max`: as fast as one sending thread goes (the offered load then depends on how much
    /// CPU the relay leaves the sender).
    #[arg(long, value_name = "PPS|max", default_value = "100000", value_parser = Rate::parse)]
    rate: Rate,
    /// How relay-server attaches its XDP program in the xdp mode (`auto`: native if a probe of
    /// a few datagrams per client all arrive that way, else generic).
    #[arg(long, value_enum, default_value_t = XdpAttach::Auto)]
    xdp_mode: XdpAttach,
}

fn main() -> std::process::ExitCode {
    match relay() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `cargo xtask bench relay [options]`: xtask has installed iproute2, ethtool, tcpdump and
/// coturn, and the eBPF toolchain, before it runs this.
fn relay() -> Result<()> {
    let options = Options::parse_from(
        std::iter::once("cargo xtask bench relay".to_owned()).chain(std::env::args().skip(1)),
    );
    let mut modes = Vec::new();
    for mode in &options.modes {
        if !modes.contains(mode) {
            modes.push(*mode);
        }
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "`cargo xtask bench relay` needs root: it creates network namespaces, attaches an XDP \
             program and installs coturn when it is missing (try `sudo -E cargo xtask bench relay`)"
        );
    }
    process::catch_interrupts()?;
    let workspace = workspace_root()?;
    let relay_server = if modes
        .iter()
        .any(|mode| matches!(mode, Mode::Userspace | Mode::Xdp))
    {
        Some(servers::build_relay_server(&workspace)?)
    } else {
        None
    };
    let turnserver = if modes.contains(&Mode::Coturn) {
        Some(servers::ensure_coturn()?)
    } else {
        None
    };
    let runs_dir = workspace.join("target/bench/relay-runs");
    if runs_dir.exists() {
        std::fs::remove_dir_all(&runs_dir)
            .with_context(|| format!("cannot empty {}", runs_dir.display()))?;
    }
    let bench = Bench {
        topology: Topology::create()?,
        options: &options,
        ticks_per_second: cpu::ticks_per_second()?,
        relay_server,
        turnserver,
        runs_dir,
        xdp_attach: Cell::new(options.xdp_mode),
        xdp_note: RefCell::new(None),
    };
    let total = usize::from(options.runs) * modes.len();
    let mut results = Vec::with_capacity(total);
    for repetition in 1..=usize::from(options.runs) {
        for &mode in &modes {
            process::check_interrupt()?;
            eprintln!(
                "relay-bench: run {}/{total}: {} ({} s idle, then {} s of load)",
                results.len() + 1,
                mode.name(),
                options.duration_s,
                options.duration_s
            );
            let result = bench
                .run(mode, repetition)
                .with_context(|| format!("run {repetition} of {}", mode.name()))?;
            eprintln!(
                "relay-bench:   offered {}, delivered {}, {:.0} pps, {} µs relay CPU and {:.2} µs \
                 CPU of the whole run per packet",
                result.offered.datagrams,
                result.delivered(),
                result.delivered_pps(),
                result
                    .cpu_us_per_packet()
                    .map_or_else(|| "no".to_owned(), |us| format!("{us:.2}")),
                result.run_us_per_packet()
            );
            results.push(result);
        }
    }
    let xdp_note = bench.xdp_note.take();
    drop(bench);

    let setting = Setting {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?,
        machine: machine_description(),
        clients: usize::from(options.clients),
        payload: usize::from(options.payload),
        duration_s: options.duration_s,
        rate: options.rate,
        xdp_note,
    };
    let report = report::render(&setting, &results);
    println!("{report}");
    let path = workspace.join("target/bench/relay.md");
    let document = format!(
        "# Relay throughput (`cargo xtask bench relay`)\n\n{report}\nLogs of each run: \
         target/bench/relay-runs/.\n"
    );
    std::fs::write(&path, document).with_context(|| format!("cannot write {}", path.display()))?;
    // xtask says where the table went, relative to where the user ran it.
    Ok(())
}

/// What every run shares: the namespaces, the relays' binaries, the options.
struct Bench<'a> {
    topology: Topology,
    options: &'a Options,
    ticks_per_second: u64,
    relay_server: Option<PathBuf>,
    turnserver: Option<PathBuf>,
    runs_dir: PathBuf,
    /// How the xdp mode attaches; `auto` until the first xdp run settles it.
    xdp_attach: Cell<XdpAttach>,
    /// Why the xdp mode does not run as asked, for the report.
    xdp_note: RefCell<Option<String>>,
}

impl Bench<'_> {
    /// One run of `mode`: start the relay, set up the clients, idle for the baseline, load,
    /// count; the relay is stopped when this returns, whatever happened.
    fn run(&self, mode: Mode, repetition: usize) -> Result<RunResult> {
        let options = self.options;
        let duration = Duration::from_secs(options.duration_s);
        let run_dir = self.runs_dir.join(format!("{repetition}-{}", mode.name()));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let Started {
            mut server,
            clients,
            attachment,
        } = self.start(mode, &run_dir)?;
        let receiver = PeerReceiver::start(&self.topology, usize::from(options.payload))?;

        // The idle baseline: the same measure over the same duration, with nothing sent.
        let baseline_start = MachineTicks::now()?;
        let baseline_clock = Instant::now();
        process::sleep_unless_interrupted(duration)?;
        let baseline = MachineTicks::now()?.since(&baseline_start);
        let baseline_length = baseline_clock.elapsed();

        let relay_udp_before = self.topology.udp_counters(Role::Relay)?;
        let peer_udp_before = self.topology.udp_counters(Role::Peer)?;
        let pid = server.as_ref().map(|server| server.process.pid());
        // The run's own processes: this one (the sender and the receiver), the relay, and the
        // threads that take over softirqs under load.
        let mut run_pids = vec![std::process::id()];
        run_pids.extend(pid);
        run_pids.extend(cpu::ksoftirqd_pids()?);
        let process_before = pid.map(cpu::process_ticks).transpose()?;
        let run_before = cpu::processes_ticks(&run_pids)?;
        let machine_before = MachineTicks::now()?;
        let window_clock = Instant::now();
        let offered = load::blast(&clients, duration, options.rate.per_second());
        receiver.wait_until_quiet(DRAIN_QUIET, DRAIN_LIMIT);
        let process_used = match (pid, process_before) {
            (Some(pid), Some(before)) => Some(cpu::process_ticks(pid)?.since(&before)),
            _ => None,
        };
        let run_used = cpu::processes_ticks(&run_pids)?.since(&run_before);
        let machine_used = MachineTicks::now()?.since(&machine_before);
        let window_length = window_clock.elapsed();
        process::check_interrupt()?;
        let received = receiver.stop()?;
        if let Some(server) = server.as_mut() {
            server.check_running()?;
        }
        let relay_udp = counter_delta(&relay_udp_before, &self.topology.udp_counters(Role::Relay)?);
        let peer_udp = counter_delta(&peer_udp_before, &self.topology.udp_counters(Role::Peer)?);
        let relayed_by = match mode {
            Mode::Userspace | Mode::Xdp => Some(metrics::relayed_by(&self.topology)?),
            Mode::Coturn | Mode::Direct => None,
        };
        drop(clients);
        drop(server);

        // The baseline, scaled to the window's length.
        let scale = window_length.as_secs_f64() / baseline_length.as_secs_f64();
        let above_baseline = |used: u64, idle: u64| used as f64 - idle as f64 * scale;
        let ticks = self.ticks_per_second;
        let relay_cpu = process_used.map(|process: ProcessTicks| {
            let charged = match mode {
                Mode::Xdp => above_baseline(machine_used.kernel(), baseline.kernel()),
                Mode::Userspace | Mode::Coturn | Mode::Direct => process.total() as f64,
            };
            RelayCpu {
                charged: cpu::ticks_to_duration(charged, ticks),
                process_user: cpu::ticks_to_duration(process.user as f64, ticks),
                process_system: cpu::ticks_to_duration(process.system as f64, ticks),
            }
        });
        let in_cores = |ticks: f64, length: Duration| {
            ticks / self.ticks_per_second as f64 / length.as_secs_f64()
        };
        Ok(RunResult {
            mode,
            repetition,
            attachment,
            offered,
            received,
            relay_cpu,
            run_cpu: cpu::ticks_to_duration(run_used.total() as f64, ticks),
            baseline_busy_cores: in_cores(baseline.busy() as f64, baseline_length),
            other_work_cores: in_cores(
                machine_used.busy() as f64 - run_used.total() as f64,
                window_length,
            )
            .max(0.0),
            relay_socket_overflows: relay_udp.get("RcvbufErrors").copied().unwrap_or(0),
            peer_socket_overflows: peer_udp.get("RcvbufErrors").copied().unwrap_or(0),
            relayed_by,
        })
    }

    /// Starts `mode`'s relay and sets up the clients. In the xdp mode with `--xdp-mode auto`,
    /// the first run tries native first and keeps it only if a probe's datagrams all arrive;
    /// later runs attach as the first one settled.
    fn start(&self, mode: Mode, run_dir: &Path) -> Result<Started> {
        match mode {
            Mode::Xdp => {}
            Mode::Userspace | Mode::Coturn => return self.start_with(mode, None, run_dir),
            Mode::Direct => {
                let clients = load::set_up_direct_senders(
                    &self.topology,
                    usize::from(self.options.clients),
                    usize::from(self.options.payload),
                )?;
                return Ok(Started {
                    server: None,
                    clients,
                    attachment: None,
                });
            }
        }
        if self.xdp_attach.get() == XdpAttach::Auto {
            let settled = match self.try_native(&run_dir.join("native-probe"))? {
                Ok(started) => {
                    self.xdp_attach.set(XdpAttach::Native);
                    return Ok(started);
                }
                Err(why) => why,
            };
            eprintln!("relay-bench: native XDP {settled}; attaching in generic mode instead");
            *self.xdp_note.borrow_mut() = Some(format!(
                "`--xdp-mode auto` tried native XDP first: {settled}, so the program runs in \
                 generic mode"
            ));
            self.xdp_attach.set(XdpAttach::Generic);
        }
        self.start_with(mode, Some(self.xdp_attach.get()), run_dir)
    }

    /// Native XDP, if it relays: `Ok(Err(why not))` when it does not attach or a probe of a few
    /// datagrams per client does not arrive whole.
    fn try_native(&self, run_dir: &Path) -> Result<Result<Started, String>> {
        std::fs::create_dir_all(run_dir)?;
        let started = match self.start_with(Mode::Xdp, Some(XdpAttach::Native), run_dir) {
            Ok(started) => started,
            Err(error) => {
                process::check_interrupt()?;
                return Ok(Err(format!("did not start ({error:#})")));
            }
        };
        let receiver = PeerReceiver::start(&self.topology, usize::from(self.options.payload))?;
        let sent = load::probe(&started.clients, NATIVE_PROBE_ROUNDS);
        receiver.wait_until_quiet(DRAIN_QUIET, DRAIN_LIMIT);
        let arrived = receiver.stop()?.datagrams;
        if arrived == sent {
            return Ok(Ok(started));
        }
        let tx_errors = self.topology.relay_xdp_tx_errors().unwrap_or(0);
        Ok(Err(format!(
            "delivered {arrived} of {sent} probe datagrams ({tx_errors} XDP_TX errors on the \
             relay's eth0: a veth takes XDP_TX frames only if its other end runs an XDP \
             program too, and the router's does not)"
        )))
    }

    /// Starts `mode`'s relay (attaching XDP as `xdp` says) and sets up the clients.
    fn start_with(&self, mode: Mode, xdp: Option<XdpAttach>, run_dir: &Path) -> Result<Started> {
        if let Some(left) = self.topology.relay_xdp_attachment()? {
            bail!("an XDP program ({left}) is still attached to the relay's eth0");
        }
        let mut server = match mode {
            Mode::Userspace | Mode::Xdp => {
                let binary = self
                    .relay_server
                    .as_deref()
                    .context("relay-server was not built")?;
                Server::relay_server(&self.topology, binary, xdp, run_dir)?
            }
            Mode::Coturn => {
                let turnserver = self
                    .turnserver
                    .as_deref()
                    .context("coturn is not installed")?;
                Server::coturn(&self.topology, turnserver, run_dir)?
            }
            Mode::Direct => bail!("the direct mode has no relay to start"),
        };
        let clients = load::set_up_clients(
            &self.topology,
            usize::from(self.options.clients),
            usize::from(self.options.payload),
        );
        // If the relay died, that is the reason the clients got nowhere.
        server.check_running()?;
        let clients = clients?;
        let attachment = match xdp {
            Some(_) => Some(
                self.topology
                    .relay_xdp_attachment()?
                    .context("relay-server runs but no XDP program is attached to eth0")?,
            ),
            None => None,
        };
        Ok(Started {
            server: Some(server),
            clients,
            attachment,
        })
    }
}

/// A relay running (none in the direct mode) with its clients set up.
struct Started {
    server: Option<Server>,
    clients: load::ReadyClients,
    /// How the XDP program is attached, if it is (`native`, `generic`).
    attachment: Option<&'static str>,
}

fn counter_delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, value)| {
            let earlier = before.get(name).copied().unwrap_or(0);
            (name.clone(), value.saturating_sub(earlier))
        })
        .collect()
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("relay-bench has no parent directory")
}

/// E.g. `2 cores (Intel Xeon ...), Linux 6.18.44`.
fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = command_output("uname", &["-r"]).unwrap_or_else(|_| "?".to_owned());
    format!("{cores} cores ({model}), Linux {kernel}")
}

fn command_output(program: &str, args: &[&str]) -> Result<String> {
    let output = process::output_within(Command::new(program).args(args), Duration::from_secs(5))?;
    Ok(output.stdout.trim().to_owned())
}
