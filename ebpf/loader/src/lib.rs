//! Userspace side of the relay's XDP fast path.
//!
//! [`XdpRelay::load`] loads the embedded XDP program into the kernel (it passes the verifier
//! there or fails with the verifier's log), and [`XdpRelay::run`] runs one Ethernet frame
//! through it with `BPF_PROG_TEST_RUN`: no interface, no attach, no network namespace. That is
//! how the harness puts every relay-bound packet through the real program and compares the
//! result with the userspace relay.
//!
//! The relay's state reaches the program through maps: [`XdpRelay::set_relay_addresses`] and
//! [`XdpRelay::install_channel`] / [`XdpRelay::remove_channel`] (module `bindings`, which also
//! keeps every channel's relay-to-self destination resolved, so that the program looks up one
//! map per packet), read back with [`XdpRelay::channel_bindings`]. [`XdpRelay::apply`] mirrors
//! the userspace relay's channel-binding events into the maps, so that they hold
//! [`relay::Relay::channel_bindings`] ([`relay_table`]). [`bench`](mod@bench) times the rewriting paths
//! against a floor program from the same object.

mod batch;
pub mod bench;
mod bindings;
pub mod own_cost;
mod table;

use std::{io::Write as _, time::Duration};

use aya::{
    Ebpf, EbpfError,
    maps::{Array, HashMap, IterableMap as _, MapData, MapError, PerCpuArray},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode},
};
pub use bindings::{BindingError, binding_from_relay, relay_table};
pub use relay_xdp_common::{
    AllocationPeer, ChannelBinding, ChannelRoute, ClientChannel, action, channel, ports, reason,
};
use relay_xdp_common::{FLOOR_PROGRAM_NAME, PROGRAM_NAME, RelayConfig, maps};

/// The compiled XDP object, built by `build.rs` for `bpfel-unknown-none`.
static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay-xdp-ebpf"));

/// The kernel refuses `BPF_PROG_TEST_RUN` input shorter than an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
/// Room the program may gain with `bpf_xdp_adjust_head` (the kernel's XDP headroom).
const HEADROOM: usize = 256;

/// What the kernel did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    /// A return value that is not an XDP action; the kernel treats it as `XDP_ABORTED`.
    Invalid(u32),
}

impl Verdict {
    pub fn from_action(value: u32) -> Self {
        match value {
            action::ABORTED => Self::Aborted,
            action::DROP => Self::Drop,
            action::PASS => Self::Pass,
            action::TX => Self::Tx,
            action::REDIRECT => Self::Redirect,
            other => Self::Invalid(other),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Aborted => "XDP_ABORTED",
            Self::Drop => "XDP_DROP",
            Self::Pass => "XDP_PASS",
            Self::Tx => "XDP_TX",
            Self::Redirect => "XDP_REDIRECT",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(value) => write!(f, "invalid action {value}"),
            other => f.write_str(other.name()),
        }
    }
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub verdict: Verdict,
    /// The frame as the program left it (rewritten on `XDP_TX`).
    pub frame_out: Vec<u8>,
    /// The kernel's measurement of the run, timer overhead included.
    pub duration_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load the XDP object (is this process root with CAP_BPF?): {0}")]
    Object(#[from] EbpfError),
    #[error("the XDP object has no program named `{0}`")]
    MissingProgram(&'static str),
    #[error("the XDP object has no map named `{0}`")]
    MissingMap(&'static str),
    #[error("the kernel refused the XDP program (verifier or permissions): {0}")]
    Program(#[from] ProgramError),
    #[error("a map has the wrong type: {0}")]
    Map(#[from] MapError),
}

impl LoadError {
    /// Whether this machine cannot run BPF at all: the kernel lacks it, or the process may not
    /// create maps or load programs (`EPERM`). A test may skip for that. Anything else (the
    /// verifier refusing the program, a map or program missing from the object) is the program's
    /// own fault, which no machine excuses: it fails wherever it happens.
    pub fn bpf_unavailable(&self) -> bool {
        match self {
            LoadError::Object(_) => true,
            LoadError::Program(ProgramError::LoadError { io_error, .. }) => {
                io_error.raw_os_error() == Some(libc::EPERM)
            }
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("frame of {len} bytes is shorter than an Ethernet header ({MIN_FRAME_LEN} bytes)")]
    FrameTooShort { len: usize },
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[from] ProgramError),
    #[error("reading the reason counters in one batch failed: {0}")]
    Counters(std::io::Error),
    #[error("the loaded object has no XDP program named `{0}`")]
    MissingProgram(&'static str),
    #[error("enabling the kernel's BPF run-time statistics failed: {0}")]
    Stats(aya::sys::SyscallError),
    #[error("reading a program's run-time statistics failed: {0}")]
    StatsRead(ProgramError),
}

/// How to attach the program to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native where the driver has it, generic otherwise.
    Auto,
    /// In the driver only.
    Native,
    /// In the kernel's stack (any interface).
    Generic,
}

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the loaded object has no XDP program named `{0}`")]
    MissingProgram(&'static str),
    #[error("the kernel refused to attach the program: {0}")]
    Program(#[from] ProgramError),
}

/// The loaded XDP program and its maps.
pub struct XdpRelay {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    config: Array<MapData, RelayConfig>,
    channels: table::BindingTable<ClientChannel, ChannelRoute>,
    allocations: table::BindingTable<AllocationPeer, ClientChannel>,
    /// The channel keys that hold each binding (module `bindings`): when `ALLOCATIONS`
    /// changes at a key, the channels whose binding is its reverse get a new relay-to-self
    /// destination. The maps change only through this struct, so this stays exact.
    channels_by_binding: std::collections::HashMap<AllocationPeer, Vec<ClientChannel>>,
}

impl std::fmt::Debug for XdpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpRelay").finish_non_exhaustive()
    }
}

impl XdpRelay {
    /// Loads the embedded program (and the benchmark's floor program) into the kernel, with no
    /// relay address and no binding: until [`Self::set_relay_addresses`], every frame passes.
    /// Needs root (CAP_BPF and CAP_SYS_ADMIN).
    pub fn load() -> Result<Self, LoadError> {
        let mut ebpf = Ebpf::load(PROGRAM_OBJECT)?;
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
        let counters = PerCpuArray::try_from(take(maps::REASON_COUNTERS)?)?;
        let config = Array::try_from(take(maps::CONFIG)?)?;
        let channels = table::BindingTable::new(
            Array::try_from(take(maps::CHANNEL_BUCKETS)?)?,
            HashMap::try_from(take(maps::CHANNELS)?)?,
        );
        let allocations = table::BindingTable::new(
            Array::try_from(take(maps::ALLOCATION_BUCKETS)?)?,
            HashMap::try_from(take(maps::ALLOCATIONS)?)?,
        );
        for name in [PROGRAM_NAME, FLOOR_PROGRAM_NAME] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()?;
            program.load()?;
        }
        Ok(Self {
            ebpf,
            counters,
            config,
            channels,
            allocations,
            channels_by_binding: std::collections::HashMap::new(),
        })
    }

    /// Attaches the relay program to `interface`, where it then sees every frame the
    /// interface receives, until this is dropped (which detaches it). `Auto` takes native
    /// mode (in the driver) where the driver has it and generic mode (in the kernel's stack,
    /// slower, same verdicts) otherwise.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<Attached, AttachError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(AttachError::MissingProgram(PROGRAM_NAME))?
            .try_into()?;
        let attached = match mode {
            AttachMode::Native => program
                .attach(interface, XdpMode::Driver)
                .map(|_| Attached::Native)?,
            AttachMode::Generic => program
                .attach(interface, XdpMode::Skb)
                .map(|_| Attached::Generic)?,
            AttachMode::Auto => match program.attach(interface, XdpMode::Driver) {
                Ok(_) => Attached::Native,
                Err(_) => program
                    .attach(interface, XdpMode::Skb)
                    .map(|_| Attached::Generic)?,
            },
        };
        Ok(attached)
    }

    fn xdp(&self, name: &'static str) -> Result<&Xdp, RunError> {
        self.ebpf
            .program(name)
            .and_then(|program| <&Xdp>::try_from(program).ok())
            .ok_or(RunError::MissingProgram(name))
    }

    /// Instructions the verifier walked when it accepted the program, if the kernel reports it.
    pub fn verified_instruction_count(&self) -> Option<u32> {
        self.xdp(PROGRAM_NAME)
            .ok()?
            .info()
            .ok()?
            .verified_instruction_count()
    }

    /// Runs one Ethernet frame through the program once.
    pub fn run(&self, frame: &[u8]) -> Result<RunOutcome, RunError> {
        if frame.len() < MIN_FRAME_LEN {
            return Err(RunError::FrameTooShort { len: frame.len() });
        }
        let mut frame_out = vec![0; frame.len() + HEADROOM];
        let result = self.xdp(PROGRAM_NAME)?.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut frame_out),
            repeat: 1,
            ..TestRunOptions::new()
        })?;
        frame_out.truncate(result.data_size_out as usize);
        Ok(RunOutcome {
            verdict: Verdict::from_action(result.return_value),
            frame_out,
            duration_ns: duration_ns(result.duration),
        })
    }

    /// Runs per verdict reason since load, summed over CPUs, indexed by `reason::*`: every
    /// slot in one batch lookup.
    pub fn reason_counters(&self) -> Result<ReasonCounters, RunError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, error)| RunError::Counters(error))?;
        let sums = batch::per_cpu_sums(self.counters.map(), reason::COUNT as usize, cpus)
            .map_err(RunError::Counters)?;
        let mut counts = [0u64; reason::COUNT as usize];
        counts.copy_from_slice(&sums);
        Ok(ReasonCounters(counts))
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs per verdict reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCounters(pub [u64; reason::COUNT as usize]);

impl ReasonCounters {
    pub fn get(&self, reason: u32) -> u64 {
        self.0.get(reason as usize).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Per-reason difference `self - earlier`.
    pub fn since(&self, earlier: &ReasonCounters) -> ReasonCounters {
        let mut diff = [0u64; reason::COUNT as usize];
        for (index, slot) in diff.iter_mut().enumerate() {
            *slot = self.0[index].saturating_sub(earlier.0[index]);
        }
        ReasonCounters(diff)
    }

    /// Non-zero counters as (reason name, count), in reason order.
    pub fn non_zero(&self) -> Vec<(&'static str, u64)> {
        (0..reason::COUNT)
            .filter(|&why| self.get(why) > 0)
            .map(|why| (reason::name(why), self.get(why)))
            .collect()
    }
}

/// The environment variable that turns a skipped BPF test into a failure. `CI=true` does too.
pub const REQUIRE_BPF_ENV: &str = "RELAY_XDP_REQUIRE_BPF";

/// Whether a failure to load BPF must fail the run instead of skipping.
pub fn bpf_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .map(|value| value == "1" || value.eq_ignore_ascii_case("true"))
            .unwrap_or(false)
    };
    set(REQUIRE_BPF_ENV) || set("CI")
}

/// Loads the program for a test. When the kernel's BPF is unavailable, says so loudly on stderr
/// and returns `None` (the caller returns early), unless [`bpf_required`], which panics instead:
/// in CI a skipped BPF test is a failure. A program the kernel refuses (the verifier's log
/// follows) panics everywhere: that is never the machine's fault.
pub fn load_or_skip(test: &str) -> Option<XdpRelay> {
    match XdpRelay::load() {
        Ok(relay) => Some(relay),
        Err(error) if !error.bpf_unavailable() => panic!("{test}: {error}"),
        Err(error) if bpf_required() => {
            panic!("{test}: BPF is required here ({REQUIRE_BPF_ENV} or CI is set) but: {error}")
        }
        Err(error) => {
            // Straight to the stderr handle: the test harness captures `eprintln!` of passing
            // tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED {test}: the kernel's BPF is unavailable: {error}\n!!! Run as root \
                 on Linux with CAP_BPF; set {REQUIRE_BPF_ENV}=1 to make this a failure.\n"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(errno: i32) -> LoadError {
        LoadError::Program(ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(errno),
            verifier_log: aya_obj::VerifierLog::new("R1 invalid mem access 'scalar'".to_owned()),
        })
    }

    /// A refusal by the verifier (EACCES, EINVAL) is the program's fault and must fail a test
    /// on any machine; only a missing privilege (EPERM) lets it skip.
    #[test]
    fn only_a_missing_privilege_excuses_a_refused_program() {
        assert!(!refused(libc::EACCES).bpf_unavailable());
        assert!(!refused(libc::EINVAL).bpf_unavailable());
        assert!(refused(libc::EPERM).bpf_unavailable());
        assert!(!LoadError::MissingMap(maps::CONFIG).bpf_unavailable());
        assert!(!LoadError::MissingProgram(PROGRAM_NAME).bpf_unavailable());
    }
}
