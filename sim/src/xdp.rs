//! The relay's real XDP program beside the userspace relay (docs/architecture.md, "Data flow
//! of one scenario run"): every datagram a
//! relay receives is framed (Ethernet + IP + UDP), run through the program with
//! `BPF_PROG_TEST_RUN`, and its verdict and output compared with what the userspace relay does.
//!
//! Loading and verifying the program costs milliseconds, so loaded programs are kept per thread
//! and handed to the next run with their maps emptied and reconfigured.

use std::{cell::RefCell, collections::BTreeSet, io::Write as _, net::SocketAddr};

use etherparse::{SlicedPacket, TransportSlice};
use relay_xdp::{
    AllocationPeer, ChannelBinding, ChannelRoute, ClientChannel, ReasonCounters, Verdict, XdpRelay,
    reason,
};

/// How relay hosts move data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Datapath {
    /// Only the userspace relay.
    Userspace,
    /// The XDP program first; what it passes goes to the userspace relay (production's shape).
    XdpFirst,
    /// Both on every datagram, compared; the userspace relay's output goes on the wire.
    #[default]
    Differential,
}

impl Datapath {
    pub fn runs_xdp(self) -> bool {
        self != Self::Userspace
    }
}

impl std::str::FromStr for Datapath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "userspace" => Ok(Self::Userspace),
            "xdp-first" => Ok(Self::XdpFirst),
            "differential" => Ok(Self::Differential),
            other => Err(format!(
                "unknown datapath `{other}` (userspace, xdp-first or differential)"
            )),
        }
    }
}

thread_local! {
    /// Programs loaded by earlier runs on this thread, ready for the next one.
    static POOL: RefCell<Vec<XdpRelay>> = const { RefCell::new(Vec::new()) };
}

/// A datagram as the XDP program sent it back out (`XDP_TX`), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) payload: Vec<u8>,
}

/// What the program did with one frame.
#[derive(Debug)]
pub(crate) struct XdpRun {
    pub(crate) verdict: Verdict,
    /// The one reason counter the run incremented.
    pub(crate) reason: u32,
    /// The rewritten datagram on `XDP_TX`.
    pub(crate) output: Option<Datagram>,
    /// Whether a non-TX verdict left the frame changed (it must not).
    pub(crate) frame_changed: bool,
    /// On `XDP_TX`: what is wrong with the rewritten frame's IPv4 header or UDP checksum,
    /// recomputed from scratch (the input always carries a UDP checksum, so the output must).
    pub(crate) checksum_error: Option<String>,
}

/// A loaded program, mirroring one relay; returned to the thread's pool when dropped.
pub(crate) struct XdpBeside {
    program: Option<XdpRelay>,
    counters: ReasonCounters,
    /// Runs per reason in this simulation.
    pub(crate) reasons: std::collections::BTreeMap<u32, u64>,
    /// Every binding an event of this run named: the loader writes the maps at these keys
    /// only, so checking them checks every entry the maps can hold, with two lookups each
    /// (a walk of a map visits all of its 65,536 buckets).
    touched: BTreeSet<ChannelBinding>,
}

impl std::fmt::Debug for XdpBeside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpBeside")
            .field("reasons", &self.reasons)
            .finish_non_exhaustive()
    }
}

/// The first failure to load the program, kept for the rest of the process: the same object
/// fails the same way on the same kernel, and a refusal costs the verifier's whole walk (with
/// its log) each time, which over every case of an exploration and its shrinking would turn a
/// failure found in a second into a run that seems to hang.
static LOAD_FAILURE: std::sync::OnceLock<AcquireError> = std::sync::OnceLock::new();

/// Why a relay has no XDP program beside it.
#[derive(Debug, Clone)]
pub(crate) struct AcquireError {
    /// The machine cannot run BPF (a skip, outside CI); otherwise the program or its maps
    /// failed, which is a failure everywhere.
    pub(crate) bpf_unavailable: bool,
    pub(crate) message: String,
}

impl AcquireError {
    fn fault(message: String) -> Self {
        Self {
            bpf_unavailable: false,
            message,
        }
    }
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl XdpBeside {
    /// A program from the pool (or freshly loaded) with maps that mirror a new relay of
    /// `config`: its addresses, no binding.
    pub(crate) fn acquire(config: &relay::RelayConfig) -> Result<Self, AcquireError> {
        let pooled = POOL.with(|pool| pool.borrow_mut().pop());
        // Pooled programs come back with empty binding maps (see `Drop`), as fresh ones load.
        let mut program = match pooled {
            Some(program) => program,
            None => {
                if let Some(failure) = LOAD_FAILURE.get() {
                    return Err(failure.clone());
                }
                XdpRelay::load().map_err(|error| {
                    LOAD_FAILURE
                        .get_or_init(|| AcquireError {
                            bpf_unavailable: error.bpf_unavailable(),
                            message: error.to_string(),
                        })
                        .clone()
                })?
            }
        };
        program
            .set_relay_addresses(config.public_v4, config.public_v6)
            .map_err(|error| AcquireError::fault(format!("configuring the XDP maps: {error}")))?;
        let counters = program
            .reason_counters()
            .map_err(|error| AcquireError::fault(error.to_string()))?;
        Ok(Self {
            program: Some(program),
            counters,
            reasons: std::collections::BTreeMap::new(),
            touched: BTreeSet::new(),
        })
    }

    fn program(&self) -> &XdpRelay {
        self.program.as_ref().expect("held until drop")
    }

    /// Mirrors one of the relay's events into the maps.
    pub(crate) fn apply(&mut self, event: &relay::Event) -> Result<(), String> {
        if let relay::Event::ChannelBound(binding)
        | relay::Event::ChannelRefreshed(binding)
        | relay::Event::ChannelUnbound(binding) = event
        {
            self.touched.insert(relay_xdp::binding_from_relay(binding));
        }
        self.program
            .as_mut()
            .expect("held until drop")
            .apply(event)
            .map_err(|error| error.to_string())
    }

    /// Whether the maps hold exactly the relay's channel table, relay-to-self routes included;
    /// the differences if not. Reads every key an event named and every key of the table.
    pub(crate) fn maps_match(&self, relay: &relay::Relay) -> Result<(), String> {
        let table = relay_xdp::relay_table(relay);
        let keys: BTreeSet<&ChannelBinding> = self.touched.iter().chain(&table).collect();
        let mut differences = Vec::new();
        for binding in keys {
            let (route, allocation) = self
                .program()
                .entries_at(binding)
                .map_err(|error| error.to_string())?;
            let (expected_route, expected_allocation) = expected_entries(&table, binding);
            if route != expected_route {
                differences.push(format!(
                    "CHANNELS at the (client, channel) of {binding:?} holds {route:?}, the table says {expected_route:?}"
                ));
            }
            if allocation != expected_allocation {
                differences.push(format!(
                    "ALLOCATIONS at the (allocation, peer) of {binding:?} holds {allocation:?}, the table says {expected_allocation:?}"
                ));
            }
        }
        if differences.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the XDP maps differ from the relay's channel table: {}",
            differences.join("; ")
        ))
    }

    /// Runs one Ethernet frame through the program.
    pub(crate) fn run_frame(&mut self, frame: &[u8]) -> Result<XdpRun, String> {
        let outcome = self
            .program()
            .run(frame)
            .map_err(|error| error.to_string())?;
        let why = self.counted_reason(outcome.verdict)?;
        let (output, checksum_error) = match outcome.verdict {
            Verdict::Tx => {
                let checksum = match xdp_fixtures::frame::verify_checksums(&outcome.frame_out) {
                    Ok(xdp_fixtures::frame::UdpChecksum::Valid) => None,
                    Ok(xdp_fixtures::frame::UdpChecksum::Absent) => {
                        Some("the UDP checksum went missing".to_owned())
                    }
                    Err(error) => Some(error),
                };
                (Some(decode(&outcome.frame_out)?), checksum)
            }
            _ => (None, None),
        };
        Ok(XdpRun {
            verdict: outcome.verdict,
            reason: why,
            output,
            frame_changed: outcome.verdict != Verdict::Tx && outcome.frame_out != *frame,
            checksum_error,
        })
    }
}

impl XdpBeside {
    /// The reason counter the last run raised: all slots are read in one batch lookup, and
    /// exactly one of them, of a reason that returns `verdict`, must have moved, by one.
    fn counted_reason(&mut self, verdict: Verdict) -> Result<u32, String> {
        let now = self.read_counters()?;
        let moved = now.since(&self.counters);
        self.counters = now;
        let raised: Vec<u32> = (0..reason::COUNT)
            .filter(|&why| moved.get(why) > 0)
            .collect();
        match raised.as_slice() {
            &[why] if moved.get(why) == 1 => {
                if Verdict::from_action(reason::action(why)) != verdict {
                    return Err(format!(
                        "a run with verdict {} counted {}, a reason of another verdict",
                        verdict.name(),
                        reason::name(why)
                    ));
                }
                *self.reasons.entry(why).or_default() += 1;
                Ok(why)
            }
            _ => Err(format!(
                "a run with verdict {} counted {:?}, not exactly one reason once",
                verdict.name(),
                moved.non_zero()
            )),
        }
    }

    fn read_counters(&self) -> Result<ReasonCounters, String> {
        self.program()
            .reason_counters()
            .map_err(|error| error.to_string())
    }

    /// Whether no reason slot moved since the last run was read: nothing but the attributed
    /// runs raised a counter. Checked once per simulation, at its end.
    pub(crate) fn counters_agree(&self) -> Result<(), String> {
        let unattributed = self.read_counters()?.since(&self.counters);
        if unattributed.total() == 0 {
            return Ok(());
        }
        Err(format!(
            "XDP reason counters moved beyond the one reason of each run: {:?}",
            unattributed.non_zero()
        ))
    }
}

impl XdpRun {
    /// The verdict and reason, as hops and frames record them.
    pub(crate) fn note(&self) -> observation::XdpNote {
        observation::XdpNote {
            verdict: self.verdict.name().to_owned(),
            reason: reason::name(self.reason).to_owned(),
        }
    }
}

impl Drop for XdpBeside {
    fn drop(&mut self) {
        // Only a program whose maps are empty again goes back to the pool. Removing the keys of
        // every binding an event named empties them (the loader writes no other key); debug
        // builds, which the test suite runs, also read back every bucket written since the maps
        // were last empty, and walk the overflow maps, to be sure.
        if let Some(mut program) = self.program.take()
            && program.clear_channels_of(&self.touched).is_ok()
            && (!cfg!(debug_assertions) || program.bindings_are_empty().unwrap_or(false))
        {
            // At thread exit the pool may be gone already: then the program is just unloaded.
            let _ = POOL.try_with(|pool| pool.borrow_mut().push(program));
        }
    }
}

/// The entries the maps must hold at the keys of `binding` when they mirror `table`: the
/// route of the table's binding on the same (client, channel), with its relay-to-self
/// destination resolved, and the (client, channel) of the table's binding on the same
/// (allocation, peer).
fn expected_entries(
    table: &[ChannelBinding],
    binding: &ChannelBinding,
) -> (Option<ChannelRoute>, Option<ClientChannel>) {
    let client_channel_at = |key: AllocationPeer| {
        table
            .iter()
            .find(|bound| bound.allocation_peer() == key)
            .map(ChannelBinding::client_channel)
    };
    let route = table
        .iter()
        .find(|bound| bound.client_channel() == binding.client_channel())
        .map(|bound| ChannelRoute {
            binding: bound.allocation_peer(),
            relay_to_self: client_channel_at(bound.allocation_peer().reverse()).unwrap_or_default(),
        });
    (route, client_channel_at(binding.allocation_peer()))
}

/// The source, destination and payload of a frame the program sent back out.
fn decode(frame: &[u8]) -> Result<Datagram, String> {
    let packet = SlicedPacket::from_ethernet(frame)
        .map_err(|error| format!("XDP_TX frame does not parse: {error}"))?;
    let Some((src, dst)) = observation::ip_addresses(&packet.net) else {
        return Err("XDP_TX frame is not IPv4 or IPv6".to_owned());
    };
    let Some(TransportSlice::Udp(udp)) = &packet.transport else {
        return Err("XDP_TX frame is not UDP".to_owned());
    };
    Ok(Datagram {
        src: SocketAddr::new(src, udp.source_port()),
        dst: SocketAddr::new(dst, udp.destination_port()),
        payload: udp.payload().to_vec(),
    })
}

/// The invariant "XDP and userspace agree on every relay packet", for one datagram: what the
/// program did against what the userspace relay did (`relayed`: the datagram it sends on, if
/// it relays data). `Err` describes a disagreement.
pub(crate) fn agree(run: &XdpRun, relayed: Option<&Datagram>) -> Result<(), String> {
    let name = reason::name(run.reason);
    if let Some(error) = &run.checksum_error {
        return Err(format!(
            "XDP_TX ({name}) sent a frame with a bad checksum: {error}"
        ));
    }
    match (run.verdict, relayed) {
        (Verdict::Tx, Some(expected)) => match &run.output {
            Some(output) if output == expected => Ok(()),
            Some(output) => Err(format!(
                "XDP_TX ({name}) sent {} -> {} ({} bytes), userspace {} -> {} ({} bytes){}",
                output.src,
                output.dst,
                output.payload.len(),
                expected.src,
                expected.dst,
                expected.payload.len(),
                if output.payload == expected.payload {
                    ""
                } else {
                    ", payloads differ"
                }
            )),
            None => Err(format!("XDP_TX ({name}) without an output")),
        },
        (Verdict::Tx, None) => Err(format!(
            "XDP_TX ({name}) relayed a datagram the userspace relay does not relay"
        )),
        (Verdict::Pass, _) if run.frame_changed => {
            Err(format!("XDP_PASS ({name}) changed the frame"))
        }
        (Verdict::Pass, None) => Ok(()),
        // The program leaves STUN (Send indications) and DNS replies to userspace by design;
        // any other pass of a datagram userspace relays is a missing or stale map entry.
        (Verdict::Pass, Some(expected)) => match run.reason {
            reason::PASS_STUN | reason::PASS_DNS_REPLY => Ok(()),
            _ => Err(format!(
                "XDP_PASS ({name}) of a datagram the userspace relay sends to {}",
                expected.dst
            )),
        },
        (other, _) => Err(format!(
            "{other} ({name}): the program never drops or aborts"
        )),
    }
}

/// Says once per process, on stderr and loudly, that relays run without their XDP program.
pub(crate) fn warn_skipped(error: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! XDP SKIPPED: relays run userspace only, the kernel's BPF is unavailable: \
             {error}\n!!! Run as root on Linux with CAP_BPF; set {}=1 (or CI=true) to make \
             this a failure.\n",
            relay_xdp::REQUIRE_BPF_ENV
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-run read stops at the first slot that moved; the end-of-run check must still
    /// see a slot that moved without a run the harness attributed.
    #[test]
    fn a_count_beside_the_attributed_runs_is_found_at_the_end() {
        // Loading once says loudly when BPF is missing (and fails in CI).
        if relay_xdp::load_or_skip("a_count_beside_the_attributed_runs_is_found_at_the_end")
            .is_none()
        {
            return;
        }
        let mut config = relay::RelayConfig::new("example.test", b"secret");
        config.public_v4 = Some("203.0.113.1".parse().unwrap());
        let mut xdp = XdpBeside::acquire(&config).expect("the program loads");
        let elsewhere = xdp_fixtures::frame::udp(
            "198.51.100.7:5000".parse().unwrap(),
            "192.0.2.99:3478".parse().unwrap(),
            b"not for this relay",
        );
        for _ in 0..3 {
            let run = xdp.run_frame(&elsewhere).expect("the run is counted");
            assert_eq!(run.reason, reason::PASS_NOT_RELAY_ADDRESS);
        }
        assert_eq!(xdp.reasons.get(&reason::PASS_NOT_RELAY_ADDRESS), Some(&3));
        xdp.counters_agree().expect("every count attributed");

        xdp.program()
            .run(&elsewhere)
            .expect("a run behind the harness's back");
        let error = xdp.counters_agree().expect_err("the stray count is seen");
        assert!(
            error.contains("pass/not-relay-address"),
            "the message names the slot: {error}"
        );

        // The next attributed run sees two counts where one run made one.
        let error = xdp
            .run_frame(&elsewhere)
            .expect_err("two counts for one run");
        assert!(
            error.contains("not exactly one reason once") && error.contains("2)"),
            "the message says what moved: {error}"
        );
    }
}
