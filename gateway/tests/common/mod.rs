//! Test helpers: addresses per IP family, packets built with etherparse, an independent
//! checksum check, and a `Harness` that drives one gateway with one client.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use gateway::{
    ClientConfig, DropReason, Filter, Gateway, GatewayConfig, Resource, ResourceAddress, Transmit,
};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record};
use proto::flow::{ClientId, FlowRecord, OuterContext, ResourceId, TimeOrigin, UtcTime};
use proto::tunnel::{self, FrameHeader, SessionKey};

pub const CLIENT: ClientId = ClientId(1);
pub const SESSION: u32 = 0x0a0b_0c0d;
pub const CIDR_RESOURCE: ResourceId = ResourceId(10);
pub const DNS_RESOURCE: ResourceId = ResourceId(20);
pub const EPOCH_SECS: u64 = 1_735_689_600; // 2025-01-01T00:00:00Z

pub fn key() -> SessionKey {
    SessionKey::new([0x42; 32])
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn dns_server() -> SocketAddr {
    sa("203.0.113.53:53")
}

pub fn gateway_addr() -> SocketAddr {
    sa("203.0.113.1:51820")
}

pub fn client_outer() -> OuterContext {
    OuterContext {
        remote: sa("203.0.113.10:40000"),
        local: gateway_addr(),
    }
}

pub fn roamed_outer() -> OuterContext {
    OuterContext {
        remote: sa("[2001:db8::10]:41000"),
        local: sa("[2001:db8::1]:51820"),
    }
}

/// IP family of the inner traffic under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub fn tunnel_ip(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)),
            Fam::V6 => "fd00:2021:1111::2".parse().unwrap(),
        }
    }

    /// The n-th address of the CIDR resource.
    pub fn resource_ip(self, n: u8) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)),
            Fam::V6 => IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0x100,
                0,
                0,
                0,
                0,
                u16::from(n),
            )),
        }
    }

    pub fn cidr(self) -> &'static str {
        match self {
            Fam::V4 => "198.51.100.0/24",
            Fam::V6 => "2001:db8:100::/48",
        }
    }

    /// An address outside every resource.
    pub fn outside_ip(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
            Fam::V6 => "2001:db8:200::9".parse().unwrap(),
        }
    }

    /// The n-th DNS proxy IP.
    pub fn proxy_ip(self, n: u8) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(100, 96, 0, n)),
            Fam::V6 => IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x2021,
                0x1111,
                0x8000,
                0,
                0,
                0,
                u16::from(n),
            )),
        }
    }
}

// ------------------------------------------------------------------------------ packets

fn builder(src: IpAddr, dst: IpAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
}

/// TCP flags for [`tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const SYN_ACK: Flags = Flags {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    flags: Flags,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = builder(src, dst).tcp(sport, dport, seq, 65535);
    if flags.syn {
        b = b.syn();
    }
    if flags.ack {
        b = b.ack(ack);
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    builder(src, dst)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn echo(src: IpAddr, dst: IpAddr, request: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let b = builder(src, dst);
    let mut out = Vec::new();
    match (src.is_ipv4(), request) {
        (true, true) => b.icmpv4_echo_request(id, seq).write(&mut out, payload),
        (true, false) => b.icmpv4_echo_reply(id, seq).write(&mut out, payload),
        (false, true) => b.icmpv6_echo_request(id, seq).write(&mut out, payload),
        (false, false) => b.icmpv6_echo_reply(id, seq).write(&mut out, payload),
    }
    .unwrap();
    out
}

/// A "port unreachable" ICMP error from `src` to `dst` quoting `quoted`.
pub fn port_unreachable(src: IpAddr, dst: IpAddr, quoted: &[u8]) -> Vec<u8> {
    let b = builder(src, dst);
    let mut out = Vec::new();
    if src.is_ipv4() {
        b.icmpv4_raw(3, 3, [0; 4]).write(&mut out, quoted).unwrap();
    } else {
        b.icmpv6_raw(1, 4, [0; 4]).write(&mut out, quoted).unwrap();
    }
    out
}

fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    sum
}

fn folds_to_zero(mut sum: u32) -> bool {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum == 0xFFFF
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// Checks the IPv4 header checksum and the TCP/UDP/ICMP checksum of a whole packet,
/// independently of the gateway's checksum code.
pub fn assert_checksums_valid(p: &[u8]) {
    let (src, dst, hl, proto, total) = if p[0] >> 4 == 4 {
        let hl = usize::from(p[0] & 0xF) * 4;
        assert!(
            folds_to_zero(sum16(0, &p[..hl])),
            "bad IPv4 header checksum"
        );
        let src = IpAddr::from([p[12], p[13], p[14], p[15]]);
        let dst = IpAddr::from([p[16], p[17], p[18], p[19]]);
        (
            src,
            dst,
            hl,
            p[9],
            usize::from(u16::from_be_bytes([p[2], p[3]])),
        )
    } else {
        let s: [u8; 16] = p[8..24].try_into().unwrap();
        let d: [u8; 16] = p[24..40].try_into().unwrap();
        (
            IpAddr::from(s),
            IpAddr::from(d),
            40,
            p[6],
            40 + usize::from(u16::from_be_bytes([p[4], p[5]])),
        )
    };
    let seg = &p[hl..total];
    let pseudo = |proto: u8| {
        let mut s = sum16(0, &ip_bytes(src));
        s = sum16(s, &ip_bytes(dst));
        s + u32::from(proto) + seg.len() as u32
    };
    let ok = match proto {
        1 => folds_to_zero(sum16(0, seg)),
        6 | 17 | 58 => folds_to_zero(sum16(pseudo(proto), seg)),
        _ => true,
    };
    assert!(ok, "bad transport checksum (protocol {proto})");
}

pub fn src_of(p: &[u8]) -> IpAddr {
    if p[0] >> 4 == 4 {
        IpAddr::from([p[12], p[13], p[14], p[15]])
    } else {
        let s: [u8; 16] = p[8..24].try_into().unwrap();
        IpAddr::from(s)
    }
}

pub fn dst_of(p: &[u8]) -> IpAddr {
    if p[0] >> 4 == 4 {
        IpAddr::from([p[16], p[17], p[18], p[19]])
    } else {
        let s: [u8; 16] = p[24..40].try_into().unwrap();
        IpAddr::from(s)
    }
}

// ------------------------------------------------------------------------------ harness

/// The harness's client (id 1) with both tunnel IPs.
pub fn client_config() -> ClientConfig {
    let IpAddr::V4(v4) = Fam::V4.tunnel_ip() else {
        unreachable!()
    };
    let IpAddr::V6(v6) = Fam::V6.tunnel_ip() else {
        unreachable!()
    };
    ClientConfig {
        id: CLIENT,
        session_id: SESSION,
        key: key(),
        tunnel_v4: v4,
        tunnel_v6: v6,
    }
}

/// What came out of the gateway since the last drain.
#[derive(Debug, Default)]
pub struct Output {
    /// Packets written to the TUN side.
    pub tun: Vec<Vec<u8>>,
    /// Inner packets sent to the client (frames opened with the session key), with the
    /// datagram's (src, dst).
    pub to_client: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// DNS queries to the DNS server.
    pub dns: Vec<Vec<u8>>,
    /// Where each of them was sent from.
    pub dns_from: Vec<SocketAddr>,
}

/// One gateway, one client (id 1) with a session, a CIDR resource (10) and a DNS resource
/// (20, `*.example.com`), both granted without filters unless a test changes that.
pub struct Harness {
    pub gw: Gateway,
    pub fam: Fam,
    pub t0: Instant,
    pub now: Instant,
    pub counter: u64,
    pub outer: OuterContext,
    pub last_tx_counter: Option<u64>,
}

impl Harness {
    pub fn new(fam: Fam) -> Self {
        Self::with_config(fam, |_| {})
    }

    pub fn with_config(fam: Fam, tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let t0 = Instant::now();
        let origin = TimeOrigin {
            instant: t0,
            unix: UtcTime::from_unix_secs(EPOCH_SECS),
        };
        let mut config = GatewayConfig::new(origin, dns_server(), sa("203.0.113.1:5300"));
        tweak(&mut config);
        let mut gw = Gateway::new(config);
        gw.add_client(client_config()).unwrap();
        for cidr in [Fam::V4.cidr(), Fam::V6.cidr()] {
            let id = if cidr.contains('.') {
                CIDR_RESOURCE
            } else {
                ResourceId(11)
            };
            gw.add_resource(Resource {
                id,
                address: ResourceAddress::Cidr(cidr.parse().unwrap()),
            })
            .unwrap();
            gw.grant(CLIENT, id, vec![]).unwrap();
        }
        gw.add_resource(Resource {
            id: DNS_RESOURCE,
            address: ResourceAddress::Dns("*.example.com".parse().unwrap()),
        })
        .unwrap();
        gw.grant(CLIENT, DNS_RESOURCE, vec![]).unwrap();
        Self {
            gw,
            fam,
            t0,
            now: t0,
            counter: 0,
            outer: client_outer(),
            last_tx_counter: None,
        }
    }

    pub fn cidr_resource(&self) -> ResourceId {
        if self.fam == Fam::V4 {
            CIDR_RESOURCE
        } else {
            ResourceId(11)
        }
    }

    pub fn grant(&mut self, resource: ResourceId, filters: Vec<Filter>) {
        self.gw.grant(CLIENT, resource, filters).unwrap();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.gw.handle_timeout(self.now);
    }

    /// Moves the clock without telling the gateway.
    pub fn set_time(&mut self, d: Duration) {
        self.now = self.t0 + d;
    }

    pub fn utc(&self, since_t0: Duration) -> UtcTime {
        UtcTime::from_unix_secs(EPOCH_SECS).plus(since_t0)
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// A frame carrying `inner` with the next counter.
    pub fn frame(&mut self, inner: &[u8]) -> Vec<u8> {
        let f = tunnel::seal(
            &key(),
            tunnel::Direction::ToGateway,
            FrameHeader {
                session_id: SESSION,
                counter: self.counter,
            },
            inner,
        );
        self.counter += 1;
        f
    }

    pub fn send_frame(&mut self, frame: &[u8]) -> Result<(), DropReason> {
        self.gw
            .handle_input(self.outer.remote, self.outer.local, frame, self.now)
    }

    /// Sends `inner` from the client in a valid frame over the current outer context.
    pub fn send(&mut self, inner: &[u8]) -> Result<(), DropReason> {
        let f = self.frame(inner);
        self.send_frame(&f)
    }

    pub fn resource_sends(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        self.gw.handle_tun_packet(packet, self.now)
    }

    /// Drains every transmit; client frames are opened (and their counters checked to
    /// increase).
    pub fn drain(&mut self) -> Output {
        let mut out = Output::default();
        while let Some(t) = self.gw.poll_transmit() {
            match t {
                Transmit::Tun(p) => out.tun.push(p),
                Transmit::Udp { src, dst, payload } if dst == dns_server() => {
                    let ports = self.gw.config().dns_source_ports.clone();
                    match ports {
                        Some(ports) => assert!(ports.contains(&src.port()), "{src}"),
                        None => assert_eq!(src, sa("203.0.113.1:5300")),
                    }
                    assert_eq!(src.ip(), sa("203.0.113.1:5300").ip());
                    out.dns.push(payload);
                    out.dns_from.push(src);
                }
                Transmit::Udp { src, dst, payload } => {
                    let (h, inner) = tunnel::open(&key(), tunnel::Direction::ToClient, &payload)
                        .expect("frame to client verifies");
                    assert_eq!(h.session_id, SESSION);
                    assert!(self.last_tx_counter.is_none_or(|c| h.counter > c));
                    self.last_tx_counter = Some(h.counter);
                    out.to_client.push((src, dst, inner.to_vec()));
                }
            }
        }
        out
    }

    pub fn records(&mut self) -> Vec<FlowRecord> {
        std::iter::from_fn(|| self.gw.poll_flow_record()).collect()
    }

    /// Answers one DNS query with `addrs` (empty = an answer without records) and `ttl`.
    pub fn answer_dns(
        &mut self,
        query: &[u8],
        addrs: &[IpAddr],
        ttl: u32,
    ) -> Result<(), DropReason> {
        let bytes = dns_response(query, addrs, ttl);
        self.gw
            .handle_input(dns_server(), sa("203.0.113.1:5300"), &bytes, self.now)
    }

    /// Maps proxy IP n to `domain`, answers the query with `addr` and `ttl`.
    pub fn map_and_resolve(&mut self, n: u8, domain: &str, addr: IpAddr, ttl: u32) {
        let proxy = self.fam.proxy_ip(n);
        self.gw.map_dns(CLIENT, proxy, domain, self.now).unwrap();
        let out = self.drain();
        assert_eq!(out.dns.len(), 1, "one query per mapping");
        self.answer_dns(&out.dns[0], &[addr], ttl).unwrap();
    }
}

/// A DNS response to `query` with `addrs` and `ttl`, built with hickory-proto.
pub fn dns_response(query: &[u8], addrs: &[IpAddr], ttl: u32) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    let name = q.queries[0].name().clone();
    r.add_query(q.queries[0].clone());
    for ip in addrs {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(*v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
        };
        r.add_answer(Record::from_rdata(name.clone(), ttl, data));
    }
    r.to_vec().unwrap()
}

/// Runs a test body for IPv4 and for IPv6 as two test functions.
#[macro_export]
macro_rules! both_families {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn v4() {
                    super::$name(super::common::Fam::V4);
                }
                #[test]
                fn v6() {
                    super::$name(super::common::Fam::V6);
                }
            }
        )*
    };
}
