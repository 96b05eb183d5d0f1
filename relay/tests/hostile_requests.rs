//! Hostile requests: each is refused with its error code, counted under that code, and changes
//! nothing it must not (docs/harness.md, "Attacks").

mod support;

use std::net::SocketAddr;

use proto::{credentials, stun::XorPeerAddress};
use relay::{ConfigError, Relay, RelayConfig};
use relay_test_support::hostile::{self, Answer};
use support::*;

/// An attacker with datagrams of its own: sends one and takes the relay's answer.
struct Attacker {
    credentials: credentials::Credentials,
    next_id: u64,
}

impl Attacker {
    fn new(name: &str) -> Self {
        Self {
            credentials: credentials::rest_api_credentials(
                SECRET,
                START_UNIX + CREDENTIALS_VALID_FOR_SECS,
                name,
            ),
            next_id: 1,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends `payload` from `from` and returns every datagram the relay sent back there.
    fn exchange(world: &mut World, from: SocketAddr, payload: &[u8]) -> Vec<Vec<u8>> {
        let sent_before = world.wire.len();
        let now = world.now;
        let relayed = world.relay.handle_input(from, server_v4(), payload, now);
        assert!(relayed.is_ok(), "a request is never dropped: {relayed:?}");
        world.pump();
        world.wire[sent_before..]
            .iter()
            .filter(|wire| wire.dst == from)
            .map(|wire| wire.payload.clone())
            .collect()
    }

    /// The one answer to one request.
    fn ask(world: &mut World, from: SocketAddr, payload: &[u8]) -> (Answer, Vec<u8>) {
        let answers = Self::exchange(world, from, payload);
        assert_eq!(answers.len(), 1, "one answer per request");
        (Answer::of(&answers[0]), answers[0].clone())
    }

    /// The nonce and realm of the challenge to an unsigned Allocate from `from`.
    fn challenge(&mut self, world: &mut World, from: SocketAddr) -> (String, String) {
        let id = self.id();
        let (answer, bytes) = Self::ask(
            world,
            from,
            &hostile::unsigned(hostile::allocate(id, false)),
        );
        assert_eq!(answer, Answer::Error(401));
        hostile::challenge_of(&bytes).expect("a challenge carries a nonce and a realm")
    }

    /// Allocates from `from`; returns the nonce to sign later requests with.
    fn allocate(&mut self, world: &mut World, from: SocketAddr) -> String {
        let (nonce, realm) = self.challenge(world, from);
        let request = self.signed_allocate(&realm, &nonce);
        assert_eq!(Self::ask(world, from, &request).0, Answer::Success);
        nonce
    }

    /// An Allocate signed with this attacker's credentials, `realm` and `nonce`.
    fn signed_allocate(&mut self, realm: &str, nonce: &str) -> Vec<u8> {
        let id = self.id();
        hostile::signed(
            hostile::allocate(id, false),
            &self.credentials,
            realm,
            nonce,
        )
    }

    fn signed(&self, message: proto::stun::Message, nonce: &str) -> Vec<u8> {
        hostile::signed(message, &self.credentials, REALM, nonce)
    }
}

fn rejections(world: &World, code: u16) -> u64 {
    world
        .relay
        .rejection_counts()
        .get(&code)
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_nonce_from_another_5_tuple_is_stale() {
    let mut world = World::new(relay_config());
    let mut attacker = Attacker::new("mallory");
    let sniffed_at = addr("198.51.100.66:40000");
    let (nonce, realm) = attacker.challenge(&mut world, sniffed_at);
    let elsewhere = addr("198.51.100.66:40001");
    let request = attacker.signed_allocate(&realm, &nonce);
    let before = rejections(&world, 438);
    let (answer, _) = Attacker::ask(&mut world, elsewhere, &request);
    assert_eq!(
        answer,
        Answer::Error(438),
        "a sniffed nonce is worth nothing elsewhere"
    );
    assert_eq!(rejections(&world, 438), before + 1);
    assert_eq!(world.relay.allocation_count(), 0);
    // From the 5-tuple it was issued to, the same request succeeds.
    assert_eq!(
        Attacker::ask(&mut world, sniffed_at, &request).0,
        Answer::Success
    );
}

#[test]
fn wrong_password_expired_username_and_forged_nonce_are_refused_and_counted() {
    let mut world = World::new(relay_config());
    let mut attacker = Attacker::new("mallory");
    let from = addr("198.51.100.66:40000");
    let (nonce, realm) = attacker.challenge(&mut world, from);
    let mut wrong = attacker.credentials.clone();
    wrong.password = "guess".to_owned();
    let expired = credentials::rest_api_credentials(SECRET, START_UNIX - 1, "mallory");
    let cases = [
        (
            hostile::signed(hostile::allocate(10, false), &wrong, &realm, &nonce),
            401,
        ),
        (
            hostile::signed(hostile::allocate(11, false), &expired, &realm, &nonce),
            401,
        ),
        (
            hostile::signed(
                hostile::allocate(12, false),
                &attacker.credentials,
                &realm,
                &hostile::forged(&nonce),
            ),
            438,
        ),
    ];
    for (request, code) in cases {
        let before = rejections(&world, code);
        assert_eq!(
            Attacker::ask(&mut world, from, &request).0,
            Answer::Error(code)
        );
        assert_eq!(rejections(&world, code), before + 1, "counted under {code}");
    }
    assert_eq!(world.relay.allocation_count(), 0);
}

#[test]
fn a_peer_appended_after_message_integrity_gets_no_permission() {
    let mut world = World::new(relay_config());
    let mut attacker = Attacker::new("mallory");
    let from = addr("198.51.100.66:40000");
    let nonce = attacker.allocate(&mut world, from);
    let relayed = world.relay.relayed_addresses(
        world
            .relay_events
            .iter()
            .find_map(|event| match event {
                relay::Event::AllocationCreated { port, .. } => Some(*port),
                _ => None,
            })
            .expect("allocated"),
    )[0];
    let signed_peer = addr("198.51.100.200:7");
    let smuggled = addr("192.0.2.99:5000");
    let id = attacker.id();
    let request = attacker.signed(hostile::create_permission(id, &[signed_peer]), &nonce);
    let tampered = hostile::with_appended(&request, [XorPeerAddress::new(smuggled).into()]);
    assert_eq!(
        Attacker::ask(&mut world, from, &tampered).0,
        Answer::Success
    );
    assert_eq!(
        world.send_to_relay(smuggled, relayed, b"in"),
        Err(relay::Drop::NoPermission),
        "the appended peer was ignored"
    );
    assert!(world.send_to_relay(signed_peer, relayed, b"in").is_ok());
}

#[test]
fn permissions_and_channels_stop_at_their_caps_with_508_and_nothing_changes() {
    let mut config = relay_config();
    config.max_permissions = 8;
    config.max_channels = 2;
    let mut world = World::new(config);
    let mut attacker = Attacker::new("mallory");
    let from = addr("198.51.100.66:40000");
    let nonce = attacker.allocate(&mut world, from);
    let peer = |n: u16| SocketAddr::from(([198, 51, 100, (n % 200) as u8 + 1], 1000 + n));
    let flood: Vec<SocketAddr> = (0..1000)
        .map(|n| SocketAddr::from(([10, (n >> 8) as u8, n as u8, 1], 1)))
        .collect();
    let id = attacker.id();
    let before = rejections(&world, 508);
    let request = attacker.signed(hostile::create_permission(id, &flood), &nonce);
    assert_eq!(
        Attacker::ask(&mut world, from, &request).0,
        Answer::Error(508)
    );
    assert_eq!(rejections(&world, 508), before + 1);
    // Refused whole: none of the flood got a permission, and room is left for real peers.
    let id = attacker.id();
    let few: Vec<SocketAddr> = (0..8).map(peer).collect();
    let request = attacker.signed(hostile::create_permission(id, &few), &nonce);
    assert_eq!(Attacker::ask(&mut world, from, &request).0, Answer::Success);
    let id = attacker.id();
    let request = attacker.signed(hostile::create_permission(id, &[peer(100)]), &nonce);
    assert_eq!(
        Attacker::ask(&mut world, from, &request).0,
        Answer::Error(508),
        "the ninth peer"
    );
    // Re-permitting a held peer is a refresh, not growth.
    let id = attacker.id();
    let request = attacker.signed(hostile::create_permission(id, &[peer(0)]), &nonce);
    assert_eq!(Attacker::ask(&mut world, from, &request).0, Answer::Success);
    for (number, expected) in [
        (0x4000, Answer::Success),
        (0x4001, Answer::Success),
        (0x4002, Answer::Error(508)),
    ] {
        let id = attacker.id();
        let request = attacker.signed(
            hostile::channel_bind(id, number, peer(number - 0x4000)),
            &nonce,
        );
        assert_eq!(
            Attacker::ask(&mut world, from, &request).0,
            expected,
            "channel {number:#x}"
        );
    }
    assert_eq!(world.relay.channel_bindings().len(), 2);
    let occupancy = world.relay.occupancy();
    assert_eq!(
        (occupancy.most_permissions, occupancy.most_channels),
        (8, 2),
        "full to the bounds"
    );
    assert_eq!(
        occupancy.breaches(world.relay.config()),
        Vec::<String>::new()
    );
    let mut tighter = world.relay.config().clone();
    tighter.max_permissions = 7;
    assert_eq!(
        occupancy.breaches(&tighter),
        vec!["8 permissions on one allocation, over the bound of 7".to_owned()]
    );
}

#[test]
fn peers_on_the_deny_list_are_refused_with_403() {
    let mut config = relay_config();
    config
        .peer_policy
        .denied
        .push("10.0.0.0/8".parse().unwrap());
    let mut world = World::new(config);
    let mut attacker = Attacker::new("mallory");
    let from = addr("198.51.100.66:40000");
    let nonce = attacker.allocate(&mut world, from);
    for denied in [
        "127.0.0.1:22",
        "169.254.169.254:80",
        "224.0.0.251:5353",
        "10.1.2.3:80",
    ] {
        let peer = addr(denied);
        let id = attacker.id();
        let permission = attacker.signed(hostile::create_permission(id, &[peer]), &nonce);
        assert_eq!(
            Attacker::ask(&mut world, from, &permission).0,
            Answer::Error(403),
            "{denied}"
        );
        let id = attacker.id();
        let bind = attacker.signed(hostile::channel_bind(id, 0x4000, peer), &nonce);
        assert_eq!(
            Attacker::ask(&mut world, from, &bind).0,
            Answer::Error(403),
            "{denied}"
        );
    }
    assert!(world.relay.channel_bindings().is_empty());
    assert_eq!(rejections(&world, 403), 8);
}

#[test]
fn a_short_or_empty_secret_is_refused_at_start() {
    for secret in [&b""[..], b"short"] {
        let mut config = RelayConfig::new(REALM, secret);
        config.public_v4 = relay_config().public_v4;
        let error = Relay::new(config, std::time::Instant::now()).expect_err("refused");
        assert_eq!(error, ConfigError::WeakSecret { len: secret.len() });
    }
}
