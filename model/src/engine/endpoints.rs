//! The endpoints: the scripted clients (their tunnel addresses, roaming, the traffic their
//! steps send) and the resource responder behind each gateway's TUN side (it echoes UDP and
//! answers TCP), with the TCP conversations between them.

use std::net::{IpAddr, SocketAddr};

use scenario_format::plan::{AddressPlan, TUNNEL_PORT};
use scenario_format::settings::{RESOURCE_ISN, client_isn};
use scenario_format::timing::TUN_LATENCY_MS;
use scenario_format::{PathMode, ResourceAddress, Side, Target};

use super::network::{Frame, LEFT_CONTEXT};
use super::{Engine, Event, Result, Traffic};
use crate::rules::seq_ge;
use crate::{ClientId, Delivery, Packet, PacketKind, Receiver, TcpFlags};

#[derive(Debug)]
pub(super) struct ClientState {
    /// The client's socket index (its port is the tunnel port plus this): up one per roam,
    /// down one per roam back.
    pub(super) roams: u16,
    /// It roamed at least once (its first allocation is left behind, even after a roam back).
    pub(super) moved: bool,
    /// Path mode per gateway.
    pub(super) paths: Vec<PathMode>,
    /// Names the stub resolver handed proxy IPs for, lowercase, in order (index `n`).
    pub(super) domains: Vec<String>,
}

impl ClientState {
    /// A client at its first port, reaching each of `gateways` directly.
    pub(super) fn new(gateways: usize) -> Self {
        ClientState {
            roams: 0,
            moved: false,
            paths: vec![PathMode::Direct; gateways],
            domains: Vec::new(),
        }
    }
}

/// One side of a scripted TCP connection.
#[derive(Debug, Default, Clone)]
struct TcpEnd {
    snd_nxt: u32,
    rcv_nxt: Option<u32>,
    fin_sent: bool,
    /// The other end half-closes: its FIN gets a bare ACK.
    keeps_open: bool,
    /// An ACK arrived after this end's SYN-ACK: the handshake is complete, and a SYN from
    /// now on gets a challenge ACK (RFC 5961, section 4), not another SYN-ACK.
    established: bool,
}

#[derive(Debug)]
pub(super) struct Conn {
    client: usize,
    gateway: usize,
    /// Client tunnel IP and port.
    src: SocketAddr,
    /// What the client sends to (proxy IP for DNS resources).
    dst: SocketAddr,
    client_end: TcpEnd,
    resource_end: TcpEnd,
    /// The address the resource responder saw the SYN at (set when it first arrives).
    resource_addr: Option<SocketAddr>,
    /// A segment carrying sequence space (data, FIN, SYN-ACK) was lost or held.
    disturbed: bool,
}

fn tcp_segment(
    src: SocketAddr,
    dst: SocketAddr,
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    payload: u16,
) -> Packet {
    Packet {
        src,
        dst,
        kind: PacketKind::Tcp {
            flags,
            seq,
            ack,
            payload,
        },
    }
}

impl Engine<'_> {
    // ---------------------------------------------------------------- clients

    fn tunnel_ip(&self, client: usize, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.plan.tunnel_v6[client])
        } else {
            IpAddr::V4(self.plan.tunnel_v4[client])
        }
    }

    /// The client whose tunnel IP `ip` is.
    pub(super) fn client_of_tunnel_ip(&self, ip: IpAddr) -> Option<usize> {
        self.plan
            .tunnel_v4
            .iter()
            .position(|v4| IpAddr::V4(*v4) == ip)
            .or_else(|| {
                self.plan
                    .tunnel_v6
                    .iter()
                    .position(|v6| IpAddr::V6(*v6) == ip)
            })
    }

    /// Where a traffic step goes: client, gateway, destination as the client sends it.
    fn target(&mut self, target: &Target, t: u64) -> Result<(usize, usize, SocketAddr)> {
        let scenario = self.scenario;
        let c = self.client_index(&target.client)?;
        let r = self.resource_index(&target.resource)?;
        let spec = &scenario.topology.resources[r];
        let g = self.gateway_index(&spec.gateway)?;
        let ip = match (&spec.address, &target.domain) {
            (ResourceAddress::Cidr(text), _) => {
                match scenario_format::plan::parse_resource_cidr(text) {
                    Ok((ip, _)) => ip,
                    Err(e) => return self.fail(e),
                }
            }
            (ResourceAddress::Dns(_), Some(domain)) => {
                let domain = domain.clone();
                self.stub_query(c, &domain, t);
                let lower = domain.to_ascii_lowercase();
                let Some(n) = self.clients[c].domains.iter().position(|d| *d == lower) else {
                    return self.fail(format!("`{domain}` matches no DNS resource"));
                };
                AddressPlan::proxy_ip(n, target.ipv6)
            }
            (ResourceAddress::Dns(_), None) => return self.fail("a DNS target needs a domain"),
        };
        Ok((c, g, SocketAddr::new(ip, target.port)))
    }

    /// A `udp` step: one datagram of `bytes` from the client.
    pub(super) fn send_udp(&mut self, target: &Target, bytes: u16, k: usize, t: u64) -> Result<()> {
        let src_port = AddressPlan::udp_source_port(target.port);
        self.send_udp_from(target, (None, src_port), bytes, k, t)
    }

    /// One UDP datagram of the target's client from `src_port` and the inner source IP given
    /// (its tunnel IP if none).
    pub(super) fn send_udp_from(
        &mut self,
        target: &Target,
        (src_ip, src_port): (Option<IpAddr>, u16),
        bytes: u16,
        k: usize,
        t: u64,
    ) -> Result<()> {
        let (c, g, dst) = self.target(target, t)?;
        let src_ip = src_ip.unwrap_or_else(|| self.tunnel_ip(c, target.ipv6));
        let packet = Packet {
            src: SocketAddr::new(src_ip, src_port),
            dst,
            kind: PacketKind::Udp { payload: bytes },
        };
        let traffic = Traffic {
            packet,
            conn: None,
            step: k,
        };
        self.send_from_client(c, g, traffic, t)
    }

    /// A `roam` step: the client moves to its next port, or `back` to the one below.
    pub(super) fn roam(&mut self, client: &str, back: bool) -> Result<()> {
        let c = self.client_index(client)?;
        let state = &mut self.clients[c];
        state.moved = true;
        if back {
            if state.roams == 0 {
                return self.fail("a roam back from the client's first address");
            }
            state.roams -= 1;
            return Ok(());
        }
        let roams = state.roams + 1;
        if u32::from(TUNNEL_PORT) + u32::from(roams) > u32::from(u16::MAX) {
            return self.fail("the client ran out of ports to roam to");
        }
        self.clients[c].roams = roams;
        Ok(())
    }

    /// A frame from gateway `frame.gateway` reaches the client: its packet is delivered, and
    /// the client's end of a TCP connection answers it.
    pub(super) fn client_receive(&mut self, frame: Frame, t: u64) -> Result<()> {
        let (c, g) = (frame.client, frame.gateway);
        let traffic = frame.traffic;
        self.ensure_on_path(c, g, frame.context, LEFT_CONTEXT)?;
        self.out.deliveries.push(Delivery {
            at_ms: t,
            to: Receiver::Client {
                client: ClientId(c as u32),
                gateway: g as u32,
                outer: frame.context,
            },
            packet: traffic.packet,
            step: traffic.step,
        });
        let Some(conn) = traffic.conn else {
            return Ok(());
        };
        let Some(state) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(reply) = respond(&mut state.client_end, &traffic.packet, None) else {
            return Ok(());
        };
        let reply = Traffic {
            packet: reply,
            ..traffic
        };
        self.send_from_client(c, g, reply, t)
    }

    // ---------------------------------------------------------------- the resource responder

    /// The responder sends `traffic`: it reaches the gateway's TUN side `TUN_LATENCY_MS` later.
    fn send_from_resource(&mut self, g: usize, traffic: Traffic, t: u64) {
        self.schedule(
            t + TUN_LATENCY_MS,
            Event::FromResource {
                gateway: g,
                traffic,
            },
        );
    }

    /// A packet the gateway forwarded reaches the resource responder: delivered, then UDP is
    /// echoed and TCP answered.
    pub(super) fn resource_receive(&mut self, g: usize, traffic: Traffic, t: u64) -> Result<()> {
        let Traffic { packet, conn, step } = traffic;
        self.out.deliveries.push(Delivery {
            at_ms: t,
            to: Receiver::Resource { gateway: g as u32 },
            packet,
            step,
        });
        let reply = match packet.kind {
            PacketKind::Udp { payload } => Some(Packet {
                src: packet.dst,
                dst: packet.src,
                kind: PacketKind::Udp { payload },
            }),
            PacketKind::Tcp { flags, .. } => {
                let Some(state) = conn.and_then(|conn| self.conns.get_mut(&conn)) else {
                    return self.fail("a TCP segment of no connection");
                };
                if flags.syn && !flags.ack && state.resource_addr.is_none() {
                    state.resource_addr = Some(packet.dst);
                    state.resource_end.snd_nxt = RESOURCE_ISN.wrapping_add(1);
                }
                respond(&mut state.resource_end, &packet, Some(RESOURCE_ISN))
            }
            // The responder answers no ICMP message; the model sends it nothing else.
            _ => None,
        };
        if let Some(reply) = reply {
            let reply = Traffic {
                packet: reply,
                ..traffic
            };
            self.send_from_resource(g, reply, t);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- TCP conversations

    fn never_opened<T>(&self, conn: u32) -> Result<T> {
        self.fail(format!("connection {conn} was never opened"))
    }

    /// A `tcp-open` step: the client opens connection `conn` (from the step's source port, by
    /// default 30000 + conn) with a SYN.
    pub(super) fn tcp_open(
        &mut self,
        conn: u32,
        target: &Target,
        chosen_port: Option<u16>,
        k: usize,
        t: u64,
    ) -> Result<()> {
        let (c, g, dst) = self.target(target, t)?;
        let Some(src_port) = AddressPlan::tcp_source_port(conn, chosen_port) else {
            return self.fail(format!("connection {conn} has no source port"));
        };
        let src = SocketAddr::new(self.tunnel_ip(c, target.ipv6), src_port);
        self.conns.insert(
            conn,
            Conn {
                client: c,
                gateway: g,
                src,
                dst,
                client_end: TcpEnd {
                    snd_nxt: client_isn(conn).wrapping_add(1),
                    ..TcpEnd::default()
                },
                // Before its SYN arrives the resource answers from its initial sequence number
                // (docs/harness.md).
                resource_end: TcpEnd {
                    snd_nxt: RESOURCE_ISN,
                    ..TcpEnd::default()
                },
                resource_addr: None,
                disturbed: false,
            },
        );
        self.client_syn(conn, k, t)
    }

    /// The client's SYN of connection `conn` (on `tcp-open` and `tcp-retransmit-syn`).
    pub(super) fn client_syn(&mut self, conn: u32, k: usize, t: u64) -> Result<()> {
        let Some(state) = self.conns.get(&conn) else {
            return self.never_opened(conn);
        };
        let (c, g) = (state.client, state.gateway);
        let packet = tcp_segment(state.src, state.dst, TcpFlags::SYN, client_isn(conn), 0, 0);
        let traffic = Traffic {
            packet,
            conn: Some(conn),
            step: k,
        };
        self.send_from_client(c, g, traffic, t)
    }

    /// A `tcp-data` step: `bytes` of data from `from`.
    pub(super) fn tcp_data(
        &mut self,
        conn: u32,
        from: Side,
        bytes: u16,
        k: usize,
        t: u64,
    ) -> Result<()> {
        self.initiate(conn, from, TcpFlags::PSH_ACK, bytes, k, t, |end, bytes| {
            end.snd_nxt = end.snd_nxt.wrapping_add(u32::from(bytes))
        })
    }

    /// A `tcp-close` step: a FIN from `by`.
    pub(super) fn tcp_close(&mut self, conn: u32, by: Side, k: usize, t: u64) -> Result<()> {
        self.initiate(conn, by, TcpFlags::FIN_ACK, 0, k, t, |end, _| {
            end.snd_nxt = end.snd_nxt.wrapping_add(1);
            end.fin_sent = true;
        })
    }

    /// A `tcp-half-close` step: the other end will answer with a bare ACK, then a FIN from
    /// `by`.
    pub(super) fn tcp_half_close(&mut self, conn: u32, by: Side, k: usize, t: u64) -> Result<()> {
        let Some(state) = self.conns.get_mut(&conn) else {
            return self.never_opened(conn);
        };
        match by {
            Side::Client => state.resource_end.keeps_open = true,
            Side::Resource => state.client_end.keeps_open = true,
        }
        self.tcp_close(conn, by, k, t)
    }

    /// A `tcp-reset` step: an RST from `by`.
    pub(super) fn tcp_reset(&mut self, conn: u32, by: Side, k: usize, t: u64) -> Result<()> {
        self.initiate(conn, by, TcpFlags::RST_ACK, 0, k, t, |_, _| {})
    }

    /// A `tcp-late-ack` step: a bare ACK from the client.
    pub(super) fn tcp_late_ack(&mut self, conn: u32, k: usize, t: u64) -> Result<()> {
        self.initiate(conn, Side::Client, TcpFlags::ACK, 0, k, t, |_, _| {})
    }

    /// A TCP segment a side sends on its own (data, FIN, RST, late ACK): `seq` is the side's
    /// next sequence number, `ack` what it has received; `advance` then moves its state.
    #[allow(clippy::too_many_arguments)]
    fn initiate(
        &mut self,
        conn: u32,
        side: Side,
        flags: TcpFlags,
        payload: u16,
        k: usize,
        t: u64,
        advance: impl FnOnce(&mut TcpEnd, u16),
    ) -> Result<()> {
        let Some(state) = self.conns.get_mut(&conn) else {
            return self.never_opened(conn);
        };
        let (c, g) = (state.client, state.gateway);
        let (end, src, dst) = match side {
            Side::Client => (&mut state.client_end, state.src, state.dst),
            Side::Resource => {
                // The responder acts only on a connection it has seen (its SYN arrived).
                let Some(from) = state.resource_addr else {
                    return Ok(());
                };
                (&mut state.resource_end, from, state.src)
            }
        };
        let ack = end.rcv_nxt.unwrap_or(0);
        let packet = tcp_segment(src, dst, flags, end.snd_nxt, ack, payload);
        advance(end, payload);
        let traffic = Traffic {
            packet,
            conn: Some(conn),
            step: k,
        };
        match side {
            Side::Client => self.send_from_client(c, g, traffic, t),
            Side::Resource => {
                self.send_from_resource(g, traffic, t);
                Ok(())
            }
        }
    }

    /// Marks a TCP connection disturbed when a segment carrying sequence space is lost or held
    /// (the scripted acknowledgement numbers are then not pinned down by the contract).
    pub(super) fn lost(&mut self, traffic: &Traffic) {
        if let (Some(conn), PacketKind::Tcp { flags, payload, .. }) =
            (traffic.conn, traffic.packet.kind)
            && (payload > 0 || flags.fin || (flags.syn && flags.ack))
            && let Some(state) = self.conns.get_mut(&conn)
        {
            state.disturbed = true;
        }
    }

    /// Whether connection `conn` (if any) lost or held a segment carrying sequence space.
    pub(super) fn disturbed(&self, conn: Option<u32>) -> bool {
        conn.and_then(|conn| self.conns.get(&conn))
            .is_some_and(|state| state.disturbed)
    }
}

/// A scripted TCP end's answer to a segment that arrived: SYN -> SYN-ACK (responder; once the
/// handshake is complete, a challenge ACK), SYN-ACK -> ACK, data -> ACK, FIN -> FIN-ACK (or the
/// final ACK if this end already sent its FIN), RST / pure ACK -> nothing. `isn` is the
/// responder's initial sequence number.
fn respond(end: &mut TcpEnd, segment: &Packet, isn: Option<u32>) -> Option<Packet> {
    let PacketKind::Tcp {
        flags,
        seq,
        payload,
        ..
    } = segment.kind
    else {
        return None;
    };
    if flags.rst {
        return None;
    }
    let covers = seq
        .wrapping_add(u32::from(payload))
        .wrapping_add(u32::from(flags.syn))
        .wrapping_add(u32::from(flags.fin));
    end.rcv_nxt = Some(match end.rcv_nxt {
        Some(r) if seq_ge(r, covers) => r,
        _ => covers,
    });
    let ack = end.rcv_nxt.unwrap_or(0);
    let reply = |flags, seq| Some(tcp_segment(segment.dst, segment.src, flags, seq, ack, 0));
    if flags.syn && !flags.ack {
        if end.established {
            return reply(TcpFlags::ACK, end.snd_nxt);
        }
        return reply(TcpFlags::SYN_ACK, isn?);
    }
    if flags.ack && !flags.syn {
        end.established = true;
    }
    if flags.syn && flags.ack {
        return reply(TcpFlags::ACK, end.snd_nxt);
    }
    if flags.fin {
        if end.fin_sent || end.keeps_open {
            return reply(TcpFlags::ACK, end.snd_nxt);
        }
        let seq = end.snd_nxt;
        end.snd_nxt = end.snd_nxt.wrapping_add(1);
        end.fin_sent = true;
        return reply(TcpFlags::FIN_ACK, seq);
    }
    if payload > 0 {
        return reply(TcpFlags::ACK, end.snd_nxt);
    }
    None
}
