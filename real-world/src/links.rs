//! The links of the real world, emulated in userspace: the router namespace sends every
//! datagram it forwards through a TUN device (`links0`) that the run holds, and the run puts
//! it back after the story's latency for that pair of hosts, or acts on it as the story's
//! faults say (docs/harness.md, "Faults"): a partition drops it, a hold keeps it until the
//! release, `drop-next` drops the next tunnel frames, `drop-binding-requests` drops
//! CreatePermission and ChannelBind requests. It plays the part netem would, on a kernel without
//! netem, and unlike netem it knows the story's hosts, so faults act on exactly the datagrams
//! the simulation's do.
//!
//! The router sends a datagram to `links0` when it came in on one of the hosts' links (a
//! policy rule per link, table 100), and forwards it by its main table when it comes back out
//! of `links0`; an XDP_TX'd datagram comes back into the router like any other, so the
//! relay's fast path gets its latency too.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use observation::{DropPlace, DropReason, PacketDrop};
use scenario_format::{Fault, Latency, Scenario, plan};
use sim::faults::{FaultState, LinkVerdict};
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::{
    RealError,
    netns::{inside, ip, run},
    punctuality::GapMeter,
};

/// The TUN device the router's forwarded datagrams go through.
const DEVICE: &str = "links0";
/// The routing table that sends them there.
const TABLE: &str = "100";

/// The faults on one link between two named hosts (judged as the simulation judges them), and
/// what a hold keeps: the datagrams, in order of sending.
#[derive(Debug, Default)]
struct LinkFaults {
    state: FaultState,
    held: Vec<Vec<u8>>,
}

/// The emulated links of one run: a thread moves the datagrams (from before the first host
/// starts to the end of the run); the runner applies faults and reads the drops.
#[derive(Debug)]
pub struct Links {
    state: Arc<Mutex<LinkState>>,
    stop: Arc<AtomicBool>,
    mover: Option<std::thread::JoinHandle<()>>,
}

/// What the links hold and have done.
struct LinkState {
    device: SyncDevice,
    hosts: BTreeMap<IpAddr, String>,
    latency: Latency,
    faults: BTreeMap<[String; 2], LinkFaults>,
    /// Datagrams on their way, by the time they arrive and the order they were sent.
    in_flight: BTreeMap<(Instant, u64), Vec<u8>>,
    sent: u64,
    /// Tunnel frames a fault took, in the model's vocabulary.
    drops: Vec<PacketDrop>,
    /// Datagrams the router forwarded that belong to no two hosts of the story (dropped).
    strangers: u64,
    /// Run time 0, for the drops' times.
    origin: Instant,
    /// How long the mover went without looking, from run time 0 on.
    gaps: GapMeter,
}

impl std::fmt::Debug for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkState")
            .field("faults", &self.faults)
            .field("in_flight", &self.in_flight.len())
            .field("drops", &self.drops.len())
            .finish_non_exhaustive()
    }
}

fn link_key(a: &str, b: &str) -> [String; 2] {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    [a.to_owned(), b.to_owned()]
}

impl Links {
    /// Routes everything the router forwards from the hosts' links (`to-*`) through the
    /// `links0` device, and opens it.
    pub fn attach(
        router: &str,
        host_links: &[String],
        scenario: &Scenario,
        hosts: BTreeMap<IpAddr, String>,
    ) -> Result<Self, RealError> {
        // Without the router role on it from its creation, the kernel joins no all-routers
        // group there (an MLD report into the device).
        let sysctl =
            |setting: &str| run("ip", &["netns", "exec", router, "sysctl", "-qw", setting]);
        sysctl("net.ipv6.conf.default.forwarding=0")?;
        ip(&["-n", router, "tuntap", "add", "dev", DEVICE, "mode", "tun"])?;
        sysctl("net.ipv6.conf.default.forwarding=1")?;
        ip(&["-n", router, "link", "set", DEVICE, "addrgenmode", "none"])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                router,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{DEVICE}.rp_filter=0"),
            ],
        )?;
        ip(&["-n", router, "link", "set", DEVICE, "up"])?;
        for family in ["-4", "-6"] {
            ip(&[
                "-n", router, family, "route", "add", "default", "dev", DEVICE, "table", TABLE,
            ])?;
            for link in host_links {
                ip(&[
                    "-n", router, family, "rule", "add", "iif", link, "lookup", TABLE,
                ])?;
            }
        }
        let device = inside(router, || {
            let device = DeviceBuilder::new()
                .name(DEVICE)
                .packet_information(false)
                .build_sync()?;
            device.set_nonblocking(true)?;
            Ok(device)
        })?;
        let state = Arc::new(Mutex::new(LinkState {
            device,
            hosts,
            latency: scenario.topology.latency.clone(),
            faults: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            sent: 0,
            drops: Vec::new(),
            strangers: 0,
            origin: Instant::now(),
            gaps: GapMeter::default(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mover = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut state) = state.lock() {
                        state.poll(Instant::now());
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        Ok(Self {
            state,
            stop,
            mover: Some(mover),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on, drops are stamped with run time counted from `origin`.
    pub fn set_origin(&self, origin: Instant) {
        let mut state = self.state();
        state.origin = origin;
        state.gaps.restart();
    }

    /// The longest the links went without moving datagrams since run time 0, in ms.
    pub fn longest_gap_ms(&self) -> u64 {
        self.state().gaps.longest_ms()
    }

    /// A `fault` step on the link between two hosts.
    pub fn fault(&self, between: &[String; 2], fault: &Fault, now: Instant) {
        self.state().fault(between, fault, now);
    }

    /// At the end of the run (`t_end`): stops moving datagrams; every tunnel frame still held
    /// is a drop (`still-held`).
    pub fn finish(&mut self, t_end: u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mover) = self.mover.take() {
            let _ = mover.join();
        }
        self.state().finish(t_end);
    }

    /// Tunnel frames a fault took.
    pub fn drops(&self) -> Vec<PacketDrop> {
        self.state().drops.clone()
    }

    /// Datagrams between addresses that are no two hosts of the story.
    pub fn strangers(&self) -> u64 {
        self.state().strangers
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mover) = self.mover.take() {
            let _ = mover.join();
        }
    }
}

impl LinkState {
    fn fault(&mut self, between: &[String; 2], fault: &Fault, now: Instant) {
        let faults = self
            .faults
            .entry(link_key(&between[0], &between[1]))
            .or_default();
        faults.state.apply(fault);
        if *fault == Fault::Release {
            // Put at the far end at the release.
            for datagram in std::mem::take(&mut faults.held) {
                self.sent += 1;
                self.in_flight.insert((now, self.sent), datagram);
            }
        }
    }

    /// Takes what the router forwarded, and puts back what has arrived.
    fn poll(&mut self, now: Instant) {
        self.gaps.look(now);
        let at_ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        let mut buffer = [0u8; 65_536];
        while let Ok(len) = self.device.recv(&mut buffer) {
            self.forwarded(&buffer[..len], now, at_ms);
        }
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let datagram = entry.remove();
            let _ = self.device.send(&datagram);
        }
    }

    /// A datagram the router forwarded, sent now by one host to another.
    fn forwarded(&mut self, packet: &[u8], now: Instant, at_ms: u64) {
        let Some((src, dst, udp)) = addresses_of(packet) else {
            self.strangers += 1;
            return;
        };
        let (Some(from), Some(to)) = (self.hosts.get(&src), self.hosts.get(&dst)) else {
            // The router's own kernel talks on the device (an MLD report from ::): not traffic.
            if !src.is_unspecified() && !dst.is_multicast() {
                self.strangers += 1;
            }
            return;
        };
        let payload = udp.unwrap_or_default();
        let between = link_key(from, to);
        let delay = Duration::from_millis(self.latency.between(from, to));
        if let Some(faults) = self.faults.get_mut(&between) {
            match faults.state.judge(payload) {
                LinkVerdict::Pass => {}
                LinkVerdict::Held { .. } => {
                    faults.held.push(packet.to_vec());
                    return;
                }
                LinkVerdict::Lost { reason, frame } => {
                    if let (Some(reason), Some(frame)) = (reason, frame) {
                        self.drops.push(PacketDrop {
                            at_ms,
                            place: DropPlace::Link { between },
                            reason,
                            packet: frame,
                            step: 0,
                        });
                    }
                    return;
                }
            }
        }
        self.sent += 1;
        self.in_flight
            .insert((now + delay, self.sent), packet.to_vec());
    }

    fn finish(&mut self, t_end: u64) {
        for (between, faults) in &mut self.faults {
            for datagram in faults.held.drain(..) {
                if let Some(frame) = addresses_of(&datagram)
                    .and_then(|(_, _, payload)| sim::wire::tunnel_packet_in(payload?))
                {
                    self.drops.push(PacketDrop {
                        at_ms: t_end,
                        place: DropPlace::Link {
                            between: between.clone(),
                        },
                        reason: DropReason::StillHeld,
                        packet: frame,
                        step: 0,
                    });
                }
            }
        }
    }
}

/// The addresses of an IP packet, and its payload if it is a UDP datagram.
fn addresses_of(packet: &[u8]) -> Option<(IpAddr, IpAddr, Option<&[u8]>)> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let (src, dst) = match &sliced.net? {
        NetSlice::Ipv4(v4) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
        ),
        NetSlice::Ipv6(v6) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
        ),
        NetSlice::Arp(_) => return None,
    };
    let udp = match sliced.transport {
        Some(TransportSlice::Udp(udp)) => Some(udp.payload()),
        _ => None,
    };
    Some((src, dst, udp))
}

/// Every address of the story's hosts, by the host's name as the story's latencies and faults
/// name it (the DNS server is `dns`).
pub fn hosts_by_address(scenario: &Scenario, plan: &plan::AddressPlan) -> BTreeMap<IpAddr, String> {
    let topology = &scenario.topology;
    let mut hosts = BTreeMap::new();
    let named = [
        (
            &plan.clients,
            topology.clients.iter().map(|c| &c.name).collect::<Vec<_>>(),
        ),
        (
            &plan.gateways,
            topology.gateways.iter().map(|g| &g.name).collect(),
        ),
        (
            &plan.relays,
            topology.relays.iter().map(|r| &r.name).collect(),
        ),
    ];
    for (addresses, names) in named {
        for (address, name) in addresses.iter().zip(names) {
            for ip in [address.v4.map(IpAddr::V4), address.v6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                hosts.insert(ip, name.clone());
            }
        }
    }
    hosts.insert(IpAddr::V4(plan::DNS_SERVER_V4), "dns".to_owned());
    hosts.insert(IpAddr::V6(plan::DNS_SERVER_V6), "dns".to_owned());
    hosts
}
