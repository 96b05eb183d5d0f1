//! The worlds the targets start from: a relay with authenticated TURN clients built by hand
//! (so a target can sign any message it likes), and a gateway with one client session, a CIDR
//! resource and a DNS resource, on the harness's address plan (so packets taken from its
//! captures land in flows).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use gateway::{
    ClientConfig, DomainPattern, Gateway, GatewayConfig, IpCidr, Resource, ResourceAddress,
};
use proto::flow::{ClientId, ResourceId, TimeOrigin, UtcTime};
use proto::stun::{
    self, Attribute, ChannelNumber, Lifetime, LongTermKey, Message, MessageClass, Method, Nonce,
    Realm, RequestedTransport, TransactionId, Username, XorPeerAddress, XorRelayAddress, methods,
};
use proto::tunnel::{self, FrameHeader, SessionKey};
use relay::{Relay, RelayConfig, Transmit};

// ------------------------------------------------------------------------------------ relay

pub const REALM: &str = "vpnsim.test";
pub const SECRET: &[u8] = b"a shared secret for the fuzz targets";
/// Unix time when every fixture relay starts.
pub const START_UNIX: u64 = 1_800_000_000;
pub const RELAY_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// A relay on [`RELAY_V4`] and [`RELAY_V6`].
pub fn relay(now: Instant) -> Relay {
    let mut config = RelayConfig::new(REALM, SECRET);
    config.public_v4 = Some(RELAY_V4);
    config.public_v6 = Some(RELAY_V6);
    config.unix_time_at_start = START_UNIX;
    config.seed = 7;
    Relay::new(config, now).expect("the fixture's relay config is valid")
}

/// The relay's TURN address of a family.
pub fn turn_server(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(RELAY_V6.into(), relay::TURN_PORT)
    } else {
        SocketAddr::new(RELAY_V4.into(), relay::TURN_PORT)
    }
}

/// A TURN client as a target drives it: its address, REST API credentials valid for a week,
/// the nonce the relay last gave it, and its transaction counter.
#[derive(Debug, Clone)]
pub struct TurnClient {
    pub addr: SocketAddr,
    pub server: SocketAddr,
    pub key: LongTermKey,
    pub nonce: Option<String>,
    /// The relayed address of its IPv4 or IPv6 allocation, once allocated.
    pub relayed: Option<SocketAddr>,
    next_transaction: u64,
}

impl TurnClient {
    pub fn new(id: u8, addr: SocketAddr) -> Self {
        let credentials = proto::credentials::rest_api_credentials(
            SECRET,
            START_UNIX + 7 * 86_400,
            &format!("fuzz{id}"),
        );
        Self {
            addr,
            server: turn_server(addr.is_ipv6()),
            key: LongTermKey::new(&credentials.username, REALM, &credentials.password)
                .expect("ASCII credentials"),
            nonce: None,
            relayed: None,
            next_transaction: u64::from(id) << 56,
        }
    }

    pub fn transaction_id(&mut self) -> TransactionId {
        self.next_transaction += 1;
        let mut id = [0u8; 12];
        id[4..].copy_from_slice(&self.next_transaction.to_be_bytes());
        TransactionId::new(id)
    }

    /// `message` with this client's USERNAME, REALM and NONCE (if it has one), signed with
    /// MESSAGE-INTEGRITY and FINGERPRINT.
    pub fn sign(&self, message: Message) -> Vec<u8> {
        self.try_sign(message)
            .expect("a message built here encodes")
    }

    /// [`TurnClient::sign`] for a message whose attributes may not encode.
    pub fn try_sign(&self, mut message: Message) -> Option<Vec<u8>> {
        if let Some(nonce) = &self.nonce {
            message.add_attribute(self.key.username.clone());
            message.add_attribute(self.key.realm.clone());
            message.add_attribute(Nonce::new(nonce.clone()).ok()?);
            stun::seal(message, Some(&self.key)).ok()
        } else {
            stun::seal(message, None).ok()
        }
    }

    /// A signed request of `method` with `attributes`.
    pub fn request(&mut self, method: Method, attributes: Vec<Attribute>) -> Vec<u8> {
        let mut message = Message::new(MessageClass::Request, method, self.transaction_id());
        for attribute in attributes {
            message.add_attribute(attribute);
        }
        self.sign(message)
    }

    /// Takes the nonce of a 401 or 438 response, if `transmit` is one for this client.
    pub fn learn_nonce(&mut self, transmit: &Transmit) {
        if transmit.dst != self.addr {
            return;
        }
        if let Ok(message) = stun::decode(&transmit.payload)
            && let Some(nonce) = message.get_attribute::<Nonce>()
        {
            self.nonce = Some(nonce.value().to_owned());
        }
    }

    /// Sends `payload` to the relay and returns what the relay sent back (its transmits), after
    /// learning any nonce in them.
    pub fn exchange(&mut self, relay: &mut Relay, payload: &[u8], now: Instant) -> Vec<Transmit> {
        let _ = relay.handle_input(self.addr, self.server, payload, now);
        let replies: Vec<Transmit> = std::iter::from_fn(|| relay.poll_transmit()).collect();
        for reply in &replies {
            self.learn_nonce(reply);
        }
        replies
    }

    /// Allocates (challenge, then the authenticated request); returns whether it succeeded.
    pub fn allocate(&mut self, relay: &mut Relay, now: Instant) -> bool {
        for _ in 0..2 {
            let request = self.request(
                methods::ALLOCATE,
                vec![RequestedTransport::new(stun::TRANSPORT_UDP).into()],
            );
            let replies = self.exchange(relay, &request, now);
            let relayed = replies.iter().find_map(|reply| {
                let message = stun::decode(&reply.payload).ok()?;
                (message.class() == MessageClass::SuccessResponse).then(|| {
                    message
                        .get_attribute::<XorRelayAddress>()
                        .map(|a| a.address())
                })?
            });
            if relayed.is_some() {
                self.relayed = relayed;
                return true;
            }
        }
        false
    }

    pub fn create_permission(&mut self, relay: &mut Relay, peer: IpAddr, now: Instant) -> bool {
        let request = self.request(
            methods::CREATE_PERMISSION,
            vec![XorPeerAddress::new(SocketAddr::new(peer, 0)).into()],
        );
        let replies = self.exchange(relay, &request, now);
        replies.iter().any(|reply| is_success(&reply.payload))
    }

    pub fn channel_bind(
        &mut self,
        relay: &mut Relay,
        channel: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> bool {
        let Ok(number) = ChannelNumber::new(channel) else {
            return false;
        };
        let request = self.request(
            methods::CHANNEL_BIND,
            vec![number.into(), XorPeerAddress::new(peer).into()],
        );
        let replies = self.exchange(relay, &request, now);
        replies.iter().any(|reply| is_success(&reply.payload))
    }

    pub fn refresh(&mut self, relay: &mut Relay, lifetime: Duration, now: Instant) -> bool {
        let Ok(lifetime) = Lifetime::new(lifetime) else {
            return false;
        };
        let request = self.request(methods::REFRESH, vec![lifetime.into()]);
        let replies = self.exchange(relay, &request, now);
        replies.iter().any(|reply| is_success(&reply.payload))
    }
}

/// Whether `payload` is a STUN success response.
pub fn is_success(payload: &[u8]) -> bool {
    stun::decode(payload).is_ok_and(|message| message.class() == MessageClass::SuccessResponse)
}

/// A STUN message's USERNAME, if any (for checks that need to know whose a request was).
pub fn username(message: &Message) -> Option<&Username> {
    message.get_attribute::<Username>()
}

/// A realm attribute for hand-built messages.
pub fn realm() -> Realm {
    Realm::new(REALM.to_owned()).expect("ASCII realm")
}

/// A relay with one client allocated over IPv4, holding a permission for [`PEER`]'s IP and
/// channel [`CHANNEL`] bound to [`PEER`]; returns the relay, the client and the allocation's
/// port.
pub fn relay_with_channel(now: Instant) -> (Relay, TurnClient, u16) {
    let mut relay = relay(now);
    let mut client = TurnClient::new(1, CLIENT_V4);
    assert!(client.allocate(&mut relay, now), "fixture allocate");
    assert!(
        client.channel_bind(&mut relay, CHANNEL, PEER, now),
        "fixture channel bind"
    );
    while relay.poll_event().is_some() {}
    let port = client.relayed.expect("allocated").port();
    (relay, client, port)
}

/// The fixture's client, over IPv4.
pub const CLIENT_V4: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100)), 51820);
/// The peer of the fixture's channel.
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000);
/// The fixture's channel number.
pub const CHANNEL: u16 = 0x4000;

// ---------------------------------------------------------------------------------- gateway

pub const GATEWAY_CLIENT: ClientId = ClientId(1);
pub const SESSION_ID: u32 = 0x0a0b_0c0d;
pub const CIDR_RESOURCE: ResourceId = ResourceId(10);
pub const DNS_RESOURCE: ResourceId = ResourceId(20);
/// The client's tunnel addresses (the harness's first client).
pub const TUNNEL_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
pub const TUNNEL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x2021, 0x1111, 0, 0, 0, 0, 2);
/// A host inside the CIDR resource, of each family.
pub const RESOURCE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const RESOURCE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 10);
/// The DNS proxy IPs mapped to [`DNS_NAME`].
pub const PROXY_V4: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
pub const PROXY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x2021, 0x1111, 0x8000, 0, 0, 0, 1);
pub const DNS_NAME: &str = "api.example.com";
pub const DNS_PATTERN: &str = "*.example.com";
pub const GATEWAY_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)), 51820);
pub const CLIENT_OUTER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100)), 51820);
pub const DNS_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 53)), 53);
pub const DNS_LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)), 5353);

pub fn session_key() -> SessionKey {
    SessionKey::new([0x42; tunnel::KEY_LEN])
}

pub fn gateway_config(now: Instant) -> GatewayConfig {
    let origin = TimeOrigin {
        instant: now,
        unix: UtcTime::from_unix_secs(START_UNIX),
    };
    GatewayConfig::new(origin, DNS_SERVER, DNS_LOCAL)
}

/// A gateway with one client granted (without filters) a CIDR resource of both families and a
/// DNS resource, whose proxy IPs of both families are mapped to [`DNS_NAME`].
pub fn gateway(now: Instant) -> Gateway {
    gateway_with(gateway_config(now))
}

/// [`gateway`] with a configuration of the caller's (from [`gateway_config`]).
pub fn gateway_with(config: GatewayConfig) -> Gateway {
    let now = config.time_origin.instant;
    let mut gateway = Gateway::new(config);
    gateway
        .add_client(ClientConfig {
            id: GATEWAY_CLIENT,
            session_id: SESSION_ID,
            key: session_key(),
            tunnel_v4: TUNNEL_V4,
            tunnel_v6: TUNNEL_V6,
        })
        .expect("fixture client");
    for (id, address) in [
        (
            CIDR_RESOURCE,
            ResourceAddress::Cidr(IpCidr::new(RESOURCE_V4.into(), 24).expect("cidr")),
        ),
        (
            ResourceId(11),
            ResourceAddress::Cidr(IpCidr::new(RESOURCE_V6.into(), 48).expect("cidr")),
        ),
        (
            DNS_RESOURCE,
            ResourceAddress::Dns(DNS_PATTERN.parse::<DomainPattern>().expect("pattern")),
        ),
    ] {
        gateway
            .add_resource(Resource { id, address })
            .expect("fixture resource");
        gateway
            .grant(GATEWAY_CLIENT, id, Vec::new())
            .expect("fixture grant");
    }
    for proxy in [IpAddr::V4(PROXY_V4), IpAddr::V6(PROXY_V6)] {
        gateway
            .map_dns(GATEWAY_CLIENT, proxy, DNS_NAME, now)
            .expect("fixture mapping");
    }
    gateway
}

/// A tunnel frame from the fixture's client carrying `inner`.
pub fn client_frame(counter: u64, inner: &[u8]) -> Vec<u8> {
    tunnel::seal(
        &session_key(),
        tunnel::Direction::ToGateway,
        FrameHeader {
            session_id: SESSION_ID,
            counter,
        },
        inner,
    )
}
