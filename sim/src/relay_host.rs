//! A relay: the sans-IO TURN relay on port 3478 and on a socket per allocation port, opened
//! and closed as the relay's events say, with its XDP program beside it (see [`crate::xdp`]).
//!
//! A turmoil host has one address, so a dual-stack relay is two hosts, its IPv4 side and its
//! IPv6 side, driving one relay. A datagram that leaves from the other family's side (a
//! cross-family relay path) crosses inside the relay and leaves there 1 ms later
//! (docs/harness.md).

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::Instant,
};

use observation::{AttackAnswer, FrameArrival, HostFate, XdpVerdict};
use proto::stun;
use relay::{Event, Relay, RelayConfig, TURN_PORT};

use crate::relay_timers::{self, RelayTimers};
use relay_xdp::{Verdict, reason};
use scenario_format::{
    plan::{self, HostAddresses, RELAY_HOST_DNS_PORT, RELAY_HOST_NTP_PORT},
    settings::{
        RELAY_ALLOCATION_QUOTA, RELAY_MAX_CHANNELS, RELAY_MAX_PERMISSIONS, RELAY_REALM,
        RELAY_SECRET,
    },
    timing::ORIGIN_UNIX_SECS,
};
use turmoil::net::UdpSocket;

use crate::{
    clock::{deadline_ms, end_turn, now_ms},
    commands::{Inbox, RelayFrame},
    endpoint_io::unspecified,
    state::Shared,
    wire,
    world::SimError,
    xdp::{Datagram, Datapath, XdpBeside, XdpRun, agree, warn_skipped},
};

/// A relay as the world sees it at the end of the run.
pub(crate) struct RelayAtEnd(Rc<RefCell<RelayCore>>);

impl RelayAtEnd {
    /// Runs of its XDP program per reason (empty when none ran beside it), and what is wrong
    /// with its counters: a run that raised more than its own reason, or error responses on
    /// the wire that the relay's rejection counters do not account for, code by code.
    pub(crate) fn finish(&self) -> (BTreeMap<u32, u64>, Vec<String>) {
        let core = self.0.borrow();
        let mut problems = Vec::new();
        if core.relay.rejection_counts() != &core.sent_rejections {
            problems.push(format!(
                "{}: the relay counted rejections {:?} but sent error responses {:?} (by code)",
                core.name,
                core.relay.rejection_counts(),
                core.sent_rejections
            ));
        }
        let Some(xdp) = core.xdp.as_ref() else {
            return (BTreeMap::new(), problems);
        };
        if let Err(error) = xdp.counters_agree() {
            problems.push(format!("{}: {error}", core.name));
        }
        (xdp.reasons.clone(), problems)
    }
}

/// One datagram the relay sends.
#[derive(Debug)]
struct Outgoing {
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
    kind: String,
}

/// The relay host's own sockets beside the relay's (docs/harness.md, "Hosts and addresses"):
/// its resolver and its NTP client. What arrives there is the host stack's.
const HOST_STACK_PORTS: [u16; 2] = [RELAY_HOST_DNS_PORT, RELAY_HOST_NTP_PORT];

/// The relay both sides drive.
struct RelayCore {
    name: String,
    /// The relay's index in the topology.
    index: u32,
    relay: Relay,
    datapath: Datapath,
    xdp: Option<XdpBeside>,
    /// Open allocation ports and their relayed addresses.
    ports: BTreeMap<u16, Vec<SocketAddr>>,
    /// Datagrams that leave from the other family's side: (due ms, sequence) -> datagram.
    crossing: BTreeMap<(u64, u64), Outgoing>,
    sequence: u64,
    /// The relay's timers, for the coverage of their deadlines.
    timers: RelayTimers,
    /// Error responses it put on the wire, by code.
    sent_rejections: BTreeMap<u16, u64>,
}

impl RelayCore {
    /// Tells the runner when the next crossing datagram leaves. It is the relay's, not a
    /// side's: the side that queued it may have run after the side that sends it.
    fn publish_crossing(&self, shared: &Rc<RefCell<Shared>>) {
        let next = self.crossing.keys().next().map(|(due, _)| *due);
        shared
            .borrow_mut()
            .timers
            .set_deadline(&format!("{}/crossing", self.name), next);
    }

    /// Whether `ip` is one of the relay's own addresses.
    fn owns(&self, ip: IpAddr) -> bool {
        let config = self.relay.config();
        [
            config.public_v4.map(IpAddr::V4),
            config.public_v6.map(IpAddr::V6),
        ]
        .contains(&Some(ip))
    }
}

fn relay_config(addresses: &HostAddresses, seed: u64) -> RelayConfig {
    let mut config = RelayConfig::new(RELAY_REALM, RELAY_SECRET);
    config.public_v4 = addresses.v4;
    config.public_v6 = addresses.v6;
    config.unix_time_at_start = ORIGIN_UNIX_SECS;
    config.seed = seed;
    config.allocation_quota = RELAY_ALLOCATION_QUOTA;
    config.max_permissions = RELAY_MAX_PERMISSIONS;
    config.max_channels = RELAY_MAX_CHANNELS;
    config
}

/// Adds the relay's hosts (one per address family it has) to the simulation, with its XDP
/// program beside it unless `datapath` is userspace only. Returns the runs per XDP reason of
/// this relay (filled in as the simulation runs) and the datapath it really runs.
pub(crate) fn add_relay(
    sim: &mut turmoil::Sim<'_>,
    shared: &Rc<RefCell<Shared>>,
    (index, name): (u32, String),
    addresses: &HostAddresses,
    seed: u64,
    datapath: Datapath,
    frames: &Inbox<RelayFrame>,
) -> Result<(RelayAtEnd, Datapath), SimError> {
    let config = relay_config(addresses, seed);
    let origin = shared.borrow().origin;
    let relay = Relay::new(config.clone(), origin)
        .map_err(|error| SimError::Unsupported(format!("relay {name}: {error}")))?;
    let (xdp, datapath) = if datapath.runs_xdp() {
        match XdpBeside::acquire(&config) {
            Ok(xdp) => (Some(xdp), datapath),
            Err(error) if !error.bpf_unavailable => {
                return Err(SimError::Xdp(format!("relay {name}: {error}")));
            }
            Err(error) if relay_xdp::bpf_required() => {
                return Err(SimError::Xdp(format!(
                    "relay {name}: BPF is required here ({} or CI is set) but: {error}",
                    relay_xdp::REQUIRE_BPF_ENV
                )));
            }
            Err(error) => {
                warn_skipped(&error.message);
                (None, Datapath::Userspace)
            }
        }
    } else {
        (None, Datapath::Userspace)
    };
    let core = Rc::new(RefCell::new(RelayCore {
        name,
        index,
        relay,
        datapath,
        xdp,
        ports: BTreeMap::new(),
        crossing: BTreeMap::new(),
        sequence: 0,
        timers: RelayTimers::default(),
        sent_rejections: BTreeMap::new(),
    }));
    for ip in [addresses.v4.map(IpAddr::V4), addresses.v6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
    {
        let shared = shared.clone();
        let core = core.clone();
        let frames = frames.clone();
        sim.host(ip, move || {
            let side = Side {
                ip,
                origin,
                shared: shared.clone(),
                core: core.clone(),
                frames: frames.clone(),
                sockets: BTreeMap::new(),
                host_sockets: BTreeMap::new(),
            };
            async move { side.run().await.map_err(Into::into) }
        });
    }
    Ok((RelayAtEnd(core), datapath))
}

/// One address family's side of a relay: its sockets.
struct Side {
    ip: IpAddr,
    origin: Instant,
    shared: Rc<RefCell<Shared>>,
    core: Rc<RefCell<RelayCore>>,
    /// Frames that are not UDP, for the side of their address once they are due.
    frames: Inbox<RelayFrame>,
    /// The relay's: the TURN port and the open allocation ports.
    sockets: BTreeMap<u16, UdpSocket>,
    /// The host's own (`HOST_STACK_PORTS`).
    host_sockets: BTreeMap<u16, UdpSocket>,
}

impl Side {
    async fn run(mut self) -> std::io::Result<()> {
        let name = self.core.borrow().name.clone();
        self.sockets.insert(
            TURN_PORT,
            UdpSocket::bind(SocketAddr::new(unspecified(self.ip), TURN_PORT)).await?,
        );
        for port in HOST_STACK_PORTS {
            self.host_sockets.insert(
                port,
                UdpSocket::bind(SocketAddr::new(unspecified(self.ip), port)).await?,
            );
        }
        let mut buf = vec![0u8; 65536];
        loop {
            let now_ms = now_ms();
            let now = self.origin + std::time::Duration::from_millis(now_ms);
            {
                let mut core = self.core.borrow_mut();
                if core
                    .relay
                    .poll_timeout()
                    .is_some_and(|deadline| deadline <= now)
                {
                    core.relay.handle_timeout(now);
                }
            }
            self.drain_events(&name);
            self.sync_sockets().await?;
            self.send_crossing(&name, now_ms);
            let ports: Vec<u16> = self.sockets.keys().copied().collect();
            for port in ports {
                while let Some(Ok((len, from))) = self
                    .sockets
                    .get(&port)
                    .map(|socket| socket.try_recv_from(&mut buf))
                {
                    let to = SocketAddr::new(self.ip, port);
                    self.handle_datagram(&name, from, to, &buf[..len], now, now_ms);
                }
            }
            for port in HOST_STACK_PORTS {
                while let Some(Ok((len, from))) = self
                    .host_sockets
                    .get(&port)
                    .map(|socket| socket.try_recv_from(&mut buf))
                {
                    let to = SocketAddr::new(self.ip, port);
                    self.handle_host_datagram(&name, from, to, &buf[..len]);
                }
            }
            let due = self
                .frames
                .take_where(|frame| frame.to == self.ip && frame.at_ms <= now_ms);
            for frame in due {
                self.handle_frame(&name, &frame);
            }
            loop {
                let transmit = self.core.borrow_mut().relay.poll_transmit();
                let Some(transmit) = transmit else { break };
                let outgoing = Outgoing {
                    src: transmit.src,
                    dst: transmit.dst,
                    payload: transmit.payload.to_vec(),
                    kind: "STUN".to_owned(),
                };
                self.emit(&name, outgoing, now_ms);
            }
            self.drain_events(&name);
            self.sync_sockets().await?;
            self.send_crossing(&name, now_ms);
            self.check_bounds(&name);
            let deadline = self
                .core
                .borrow()
                .relay
                .poll_timeout()
                .map(|deadline| deadline_ms(self.origin, deadline));
            end_turn(&self.shared, &format!("{name}@{}", self.ip), deadline).await;
        }
    }

    /// Every table the relay bounds is within its bound after every turn (a breach fails the
    /// run like any other invariant).
    fn check_bounds(&self, name: &str) {
        let core = self.core.borrow();
        let breaches = core.relay.occupancy().breaches(core.relay.config());
        if !breaches.is_empty() {
            self.shared.borrow_mut().journal.errors.push(format!(
                "{} ms: {name} holds {}",
                now_ms(),
                breaches.join("; ")
            ));
        }
    }

    /// One datagram that arrived at `to`: through the XDP program and the userspace relay as
    /// the datapath says, then onto the wire.
    fn handle_datagram(
        &mut self,
        name: &str,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
        now: Instant,
        now_ms: u64,
    ) {
        let datapath = {
            let core = self.core.borrow();
            let mut shared = self.shared.borrow_mut();
            let counts = &mut shared.journal.turn_timer_boundaries;
            core.timers.note_arrival(from, to.port(), now_ms, counts);
            core.datapath
        };
        let Ok(xdp_run) = self.run_xdp(name, from, to, payload) else {
            return;
        };
        // XDP first: what the program sends never reaches userspace.
        if datapath == Datapath::XdpFirst
            && let Some(run) = &xdp_run
            && run.verdict == Verdict::Tx
        {
            match &run.output {
                Some(output) => {
                    let outgoing = Outgoing {
                        src: output.src,
                        dst: output.dst,
                        payload: output.payload.clone(),
                        kind: format!("{} (XDP)", tx_kind(run.reason, &output.payload)),
                    };
                    self.emit(name, outgoing, now_ms);
                }
                None => self.error(format!("{name}: XDP_TX without an output")),
            }
            self.note_stray((from, to), xdp_run.as_ref(), HostFate::XdpTook);
            return;
        }
        let permission = self
            .core
            .borrow()
            .timers
            .permission_live(to.port(), from.ip(), now_ms);
        let (outgoing, fate) = self.relay_in_userspace(name, from, to, payload, now);
        if let Err(wrong) = relay_timers::permission_kept(permission, &fate) {
            self.error(format!(
                "{name}: data from {from} to port {}: {wrong}",
                to.port()
            ));
        }
        if datapath == Datapath::Differential
            && let Some(run) = &xdp_run
        {
            let relayed = outgoing.as_ref().map(|outgoing| Datagram {
                src: outgoing.src,
                dst: outgoing.dst,
                payload: outgoing.payload.clone(),
            });
            if let Err(disagreement) = agree(run, relayed.as_ref()) {
                self.error(format!(
                    "{name}: XDP and userspace disagree on {from} -> {to} ({} bytes): \
                     {disagreement}",
                    payload.len()
                ));
            }
        }
        self.note_stray((from, to), xdp_run.as_ref(), fate);
        if let Some(outgoing) = outgoing {
            self.emit(name, outgoing, now_ms);
        }
    }

    /// A datagram for one of the host's own sockets: the XDP program runs on it (it sees every
    /// frame the host receives) and must pass it, unchanged, to the host stack, which takes it.
    /// The relay never sees it.
    fn handle_host_datagram(
        &mut self,
        name: &str,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) {
        let datapath = self.core.borrow().datapath;
        let Ok(xdp_run) = self.run_xdp(name, from, to, payload) else {
            return;
        };
        let fate = self.host_stack_fate(xdp_run.as_ref(), datapath, || {
            format!(
                "{name}: XDP and the host stack disagree on {from} -> {to} ({} bytes)",
                payload.len()
            )
        });
        if fate == HostFate::HostStack {
            self.shared.borrow_mut().journal.trace(
                name,
                format!(
                    "host stack took {} bytes from {from} on {to}",
                    payload.len()
                ),
            );
        }
        self.note_stray((from, to), xdp_run.as_ref(), fate);
    }

    /// What becomes of something for the host stack after the XDP program ran on it (`run`):
    /// the host stack takes it unless the program sent it back out in `xdp-first` mode. In
    /// differential mode the program must have passed it unchanged; `what` names it in the
    /// broken invariant.
    fn host_stack_fate(
        &self,
        run: Option<&XdpRun>,
        datapath: Datapath,
        what: impl FnOnce() -> String,
    ) -> HostFate {
        let Some(run) = run else {
            return HostFate::HostStack;
        };
        if datapath == Datapath::Differential
            && let Err(disagreement) = agree(run, None)
        {
            self.error(format!("{}: {disagreement}", what()));
        }
        if datapath == Datapath::XdpFirst && run.verdict == Verdict::Tx {
            HostFate::XdpTook
        } else {
            HostFate::HostStack
        }
    }

    /// A frame that is not UDP (an ICMP error about `frame.about`): the XDP program must pass
    /// it unchanged to the host stack, which takes it; the relay's UDP sockets never see it.
    fn handle_frame(&mut self, name: &str, frame: &RelayFrame) {
        let what = || format!("a {} frame", frame.kind);
        let Ok(run) = self.run_xdp_frame(name, what, &frame.frame) else {
            return;
        };
        let datapath = self.core.borrow().datapath;
        let fate = self.host_stack_fate(run.as_ref(), datapath, || {
            format!(
                "{name}: XDP and the host stack disagree on a {} frame about {} -> {}",
                frame.kind, frame.about.0, frame.about.1
            )
        });
        let (about, to) = frame.about;
        {
            let mut shared = self.shared.borrow_mut();
            shared.journal.frames.push(FrameArrival {
                sent_ms: frame.sent_ms,
                at_ms: now_ms(),
                host: name.to_owned(),
                kind: frame.kind.to_owned(),
                about: frame.about,
                len: frame.frame.len(),
                xdp: run.as_ref().map(XdpRun::note),
            });
            if fate == HostFate::HostStack {
                shared.journal.trace(
                    name,
                    format!(
                        "host stack took an ICMP {} about {about} -> {to}",
                        frame.kind
                    ),
                );
            }
        }
        // A stray from the internet host, about the datagram relay -> internet host.
        self.note_stray((to, about), run.as_ref(), fate);
    }

    /// Records what became of a datagram from the internet host (a stray); others are not
    /// strays and are not recorded here.
    fn note_stray(
        &self,
        (from, to): (SocketAddr, SocketAddr),
        run: Option<&XdpRun>,
        fate: HostFate,
    ) {
        if from.ip() != plan::internet_host(from.ip()) {
            return;
        }
        let xdp = run.map(|run| match run.verdict {
            Verdict::Pass => XdpVerdict::Pass,
            Verdict::Tx => XdpVerdict::Tx,
            Verdict::Drop => XdpVerdict::Drop,
            _ => XdpVerdict::Aborted,
        });
        let relay = self.core.borrow().index;
        self.shared
            .borrow_mut()
            .journal
            .stray(relay, (from, to), xdp, fate);
    }

    /// Runs the XDP program on the datagram (when it runs beside this relay), counts the
    /// reason, and records the datagram as received with the verdict. `Err` when the run
    /// itself failed (said as a broken invariant).
    fn run_xdp(
        &mut self,
        name: &str,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Result<Option<XdpRun>, ()> {
        let frame = xdp_fixtures::frame::udp(from, to, payload);
        let run = self.run_xdp_frame(name, || format!("{from} -> {to}"), &frame)?;
        let note = run.as_ref().map(XdpRun::note);
        wire::received(&self.shared, name, from, to, payload, note);
        Ok(run)
    }

    /// Runs one Ethernet frame through the XDP program (when it runs beside this relay) and
    /// counts the reason. `Err` when the run itself failed (said as a broken invariant about
    /// `what`, worded only then).
    fn run_xdp_frame(
        &mut self,
        name: &str,
        what: impl FnOnce() -> String,
        frame: &[u8],
    ) -> Result<Option<XdpRun>, ()> {
        let run = {
            let mut core = self.core.borrow_mut();
            core.xdp.as_mut().map(|xdp| xdp.run_frame(frame))
        };
        match run {
            Some(Ok(run)) => Ok(Some(run)),
            Some(Err(error)) => {
                self.error(format!("{name}: XDP run of {} failed: {error}", what()));
                Err(())
            }
            None => Ok(None),
        }
    }

    /// What the userspace relay sends for the datagram, if anything (a refusal is traced), and
    /// what became of the datagram. A drop must raise the drop counter of its reason by one
    /// and no other counter; anything else is a broken invariant (an uncounted drop).
    fn relay_in_userspace(
        &mut self,
        name: &str,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> (Option<Outgoing>, HostFate) {
        let (user, miscounted) = {
            let mut core = self.core.borrow_mut();
            let before = core.relay.drop_counts().clone();
            let user = core
                .relay
                .handle_input(from, to, payload, now)
                .map(|relayed| {
                    relayed.map(|relayed| Outgoing {
                        src: relayed.src,
                        dst: relayed.dst,
                        payload: relayed.to_vec(),
                        kind: match relayed.channel {
                            Some(channel) => format!("ChannelData {channel:#06x}"),
                            None => "UDP".to_owned(),
                        },
                    })
                });
            let miscounted =
                counted_drop(&before, core.relay.drop_counts(), user.as_ref().err()).err();
            (user, miscounted)
        };
        if let Some(problem) = miscounted {
            self.error(format!(
                "{name}: the relay's drop counters for {from} -> {to} ({} bytes): {problem}",
                payload.len()
            ));
        }
        match user {
            Ok(Some(outgoing)) => (Some(outgoing), HostFate::Relayed),
            Ok(None) => (None, HostFate::RelayTook),
            Err(reason) => {
                self.shared.borrow_mut().journal.trace(
                    name,
                    format!(
                        "dropped {} bytes from {from} to {to}: {reason}",
                        payload.len()
                    ),
                );
                (None, HostFate::RelayDropped(reason))
            }
        }
    }

    /// Sends from this side, or hands the datagram to the other family's side.
    fn emit(&mut self, name: &str, outgoing: Outgoing, now_ms: u64) {
        if outgoing.src.ip() == self.ip {
            self.send(name, &outgoing);
            return;
        }
        if !self.core.borrow().owns(outgoing.src.ip()) {
            self.error(format!(
                "{name} tried to send from {}, not one of its addresses",
                outgoing.src
            ));
            return;
        }
        let mut core = self.core.borrow_mut();
        core.sequence += 1;
        let key = (now_ms + 1, core.sequence);
        core.crossing.insert(key, outgoing);
        core.publish_crossing(&self.shared);
    }

    /// Sends the datagrams that cross to this side and are due.
    fn send_crossing(&mut self, name: &str, now_ms: u64) {
        let due: Vec<Outgoing> = {
            let mut core = self.core.borrow_mut();
            let keys: Vec<(u64, u64)> = core
                .crossing
                .iter()
                .filter(|((due, _), outgoing)| *due <= now_ms && outgoing.src.ip() == self.ip)
                .map(|(key, _)| *key)
                .collect();
            let due = keys
                .into_iter()
                .filter_map(|key| core.crossing.remove(&key))
                .collect();
            core.publish_crossing(&self.shared);
            due
        };
        for outgoing in due {
            self.send(name, &outgoing);
        }
    }

    /// Puts a datagram on the wire from the socket on its source port; a relay must never
    /// address itself.
    fn send(&mut self, name: &str, outgoing: &Outgoing) {
        let Outgoing {
            src,
            dst,
            payload,
            kind,
        } = outgoing;
        if self.core.borrow().owns(dst.ip()) {
            self.error(format!(
                "{name} tried to send a datagram to itself: {src} -> {dst}"
            ));
            return;
        }
        let Some(socket) = self.sockets.get(&src.port()) else {
            self.error(format!(
                "{name} has no socket on {src} for a datagram to {dst}"
            ));
            return;
        };
        self.shared.borrow_mut().journal.trace(
            name,
            format!("{kind} {src} -> {dst} ({} bytes)", payload.len()),
        );
        // Only STUN error responses (class bits 0b11 in the message type) are decoded.
        let error_class =
            stun::looks_like_stun(payload) && payload[0] & 0x01 == 1 && payload[1] & 0x10 != 0;
        if error_class && let AttackAnswer::Error(code) = AttackAnswer::of(payload) {
            *self
                .core
                .borrow_mut()
                .sent_rejections
                .entry(code)
                .or_default() += 1;
        }
        wire::send(socket, &self.shared, name, *src, *dst, payload);
    }

    /// Applies the relay's events: allocation ports for both sides, bindings to the XDP maps,
    /// and then checks that the maps equal the relay's channel table.
    fn drain_events(&mut self, name: &str) {
        let mut core = self.core.borrow_mut();
        let mut channels_changed = false;
        let mut problems = Vec::new();
        let now_ms = now_ms();
        while let Some(event) = core.relay.poll_event() {
            if let Err(wrong) = core.timers.allocation_kept(&event, now_ms) {
                problems.push(format!("{name}: {wrong}"));
            }
            core.timers.follow(&event, self.origin, now_ms);
            match &event {
                Event::AllocationCreated { port, relayed, .. } => {
                    core.ports.insert(*port, relayed.clone());
                    self.shared
                        .borrow_mut()
                        .journal
                        .trace(name, format!("allocation port {port} opened"));
                }
                Event::AllocationFreed { port, .. } => {
                    core.ports.remove(port);
                    self.shared
                        .borrow_mut()
                        .journal
                        .trace(name, format!("allocation port {port} closed"));
                }
                Event::AllocationRefreshed { .. } => {}
                Event::ChannelBound(_) | Event::ChannelRefreshed(_) | Event::ChannelUnbound(_) => {
                    channels_changed = true;
                }
            }
            if let Some(xdp) = core.xdp.as_mut()
                && let Err(error) = xdp.apply(&event)
            {
                problems.push(format!(
                    "{name}: mirroring {event:?} into the XDP maps: {error}"
                ));
            }
        }
        if channels_changed
            && let Some(xdp) = core.xdp.as_ref()
            && let Err(difference) = xdp.maps_match(&core.relay)
        {
            problems.push(format!("{name}: {difference}"));
        }
        drop(core);
        for problem in problems {
            self.error(problem);
        }
    }

    /// Opens a socket for every allocation port with a relayed address on this side, and
    /// closes those of freed allocations.
    async fn sync_sockets(&mut self) -> std::io::Result<()> {
        let wanted: Vec<u16> = self
            .core
            .borrow()
            .ports
            .iter()
            .filter(|(_, relayed)| relayed.iter().any(|address| address.ip() == self.ip))
            .map(|(port, _)| *port)
            .collect();
        self.sockets
            .retain(|port, _| *port == TURN_PORT || wanted.contains(port));
        for port in wanted {
            if !self.sockets.contains_key(&port) {
                let socket = UdpSocket::bind(SocketAddr::new(unspecified(self.ip), port)).await?;
                self.sockets.insert(port, socket);
            }
        }
        Ok(())
    }

    fn error(&self, message: String) {
        self.shared.borrow_mut().journal.errors.push(message);
    }
}

/// A short name for a datagram the XDP program sent, from the path its reason names.
fn tx_kind(why: u32, payload: &[u8]) -> String {
    let to_udp = (reason::TX_CHAN_TO_UDP_BASE..reason::TX_CHAN_TO_UDP_BASE + 4).contains(&why);
    match payload {
        [high, low, ..] if !to_udp => {
            format!("ChannelData {:#06x}", u16::from_be_bytes([*high, *low]))
        }
        _ => "UDP".to_owned(),
    }
}

/// Whether the relay's drop counters moved as one input's result says: by one for the reason
/// of a drop (`dropped`), not at all otherwise. `Err` says how they moved instead.
fn counted_drop(
    before: &BTreeMap<relay::Drop, u64>,
    after: &BTreeMap<relay::Drop, u64>,
    dropped: Option<&relay::Drop>,
) -> Result<(), String> {
    let moved: Vec<(relay::Drop, i128)> = relay::Drop::ALL
        .iter()
        .map(|reason| {
            let count = |counts: &BTreeMap<relay::Drop, u64>| {
                i128::from(counts.get(reason).copied().unwrap_or(0))
            };
            (*reason, count(after) - count(before))
        })
        .filter(|(_, delta)| *delta != 0)
        .collect();
    let expected: Vec<(relay::Drop, i128)> =
        dropped.map(|reason| (*reason, 1)).into_iter().collect();
    if moved == expected {
        return Ok(());
    }
    let said = dropped.map_or("relayed or took it".to_owned(), |reason| {
        format!("dropped it ({})", reason.as_str())
    });
    let moved: Vec<String> = moved
        .iter()
        .map(|(reason, delta)| format!("{} {delta:+}", reason.as_str()))
        .collect();
    Err(format!(
        "the relay {said}, but its counters moved by [{}]",
        moved.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_must_be_counted_once_under_its_reason() {
        let none = BTreeMap::new();
        let one = BTreeMap::from([(relay::Drop::NotStun, 1)]);
        assert_eq!(counted_drop(&none, &none, None), Ok(()));
        assert_eq!(
            counted_drop(&none, &one, Some(&relay::Drop::NotStun)),
            Ok(())
        );
        let uncounted = counted_drop(&none, &none, Some(&relay::Drop::NotStun)).unwrap_err();
        assert!(uncounted.contains("dropped it (not-stun)"), "{uncounted}");
        let wrong = counted_drop(&none, &one, Some(&relay::Drop::NoPermission)).unwrap_err();
        assert!(wrong.contains("not-stun +1"), "{wrong}");
        assert!(counted_drop(&none, &one, None).is_err());
    }
}
