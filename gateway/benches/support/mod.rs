//! What both gateway benchmarks share: a gateway with one client, a CIDR and a DNS resource,
//! the DNS answer that maps the proxy IP, and the client's sealed frames.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use gateway::{ClientConfig, Gateway, GatewayConfig, Resource, ResourceAddress, Transmit};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use proto::flow::{ClientId, OuterContext, ResourceId, TimeOrigin, UtcTime};
use proto::tunnel::{self, FrameHeader, SessionKey};

pub const SESSION: u32 = 7;
pub const TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
pub const PROXY: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 5);
pub const REAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 42);
pub const PAYLOAD: usize = 64;

pub fn key() -> SessionKey {
    SessionKey::new([0x42; 32])
}

pub fn dns_server() -> SocketAddr {
    "203.0.113.53:53".parse().unwrap()
}

pub fn outer() -> OuterContext {
    OuterContext {
        remote: "203.0.113.10:40000".parse().unwrap(),
        local: "203.0.113.1:51820".parse().unwrap(),
    }
}

pub fn setup(t0: Instant) -> Gateway {
    setup_with(t0, |_| {})
}

pub fn setup_with(t0: Instant, tweak: impl FnOnce(&mut GatewayConfig)) -> Gateway {
    let origin = TimeOrigin {
        instant: t0,
        unix: UtcTime::from_unix_secs(1_735_689_600),
    };
    let mut config = GatewayConfig::new(origin, dns_server(), "203.0.113.1:5300".parse().unwrap());
    tweak(&mut config);
    let mut gw = Gateway::new(config);
    gw.add_client(ClientConfig {
        id: ClientId(1),
        session_id: SESSION,
        key: key(),
        tunnel_v4: TUNNEL,
        tunnel_v6: "fd00:2021:1111::2".parse().unwrap(),
    })
    .unwrap();
    gw.add_resource(Resource {
        id: ResourceId(1),
        address: ResourceAddress::Cidr("198.51.100.0/24".parse().unwrap()),
    })
    .unwrap();
    gw.add_resource(Resource {
        id: ResourceId(2),
        address: ResourceAddress::Dns("*.example.com".parse().unwrap()),
    })
    .unwrap();
    gw.grant(ClientId(1), ResourceId(1), vec![]).unwrap();
    gw.grant(ClientId(1), ResourceId(2), vec![]).unwrap();
    gw
}

/// Maps the proxy IP and answers the gateway's DNS query.
pub fn resolve(gw: &mut Gateway, now: Instant) {
    gw.map_dns(ClientId(1), IpAddr::V4(PROXY), "app.example.com", now)
        .unwrap();
    let Some(Transmit::Udp { payload, .. }) = gw.poll_transmit() else {
        panic!("no DNS query")
    };
    let q = Message::from_vec(&payload).unwrap();
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    let name = q.queries[0].name().clone();
    r.add_query(q.queries[0].clone());
    r.add_answer(Record::from_rdata(name, 3600, RData::A(A(REAL))));
    gw.handle_input(
        dns_server(),
        "203.0.113.1:5300".parse().unwrap(),
        &r.to_vec().unwrap(),
        now,
    )
    .unwrap();
}

pub fn udp_packet(dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4(TUNNEL.octets(), dst.octets(), 64)
        .udp(sport, 443)
        .write(&mut out, &[0xAB; PAYLOAD])
        .unwrap();
    out
}

/// The client's frame with `counter` carrying `inner`.
pub fn client_frame(counter: u64, inner: &[u8]) -> Vec<u8> {
    tunnel::seal(
        &key(),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: SESSION,
            counter,
        },
        inner,
    )
}
