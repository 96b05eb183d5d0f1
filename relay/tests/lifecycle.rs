//! The relay's whole lifecycle, driven in-process by TURN clients and a fake clock: every
//! request type, every error code, every expiry, and refreshes either side of a deadline.

mod support;

use std::time::Duration;

use proto::stun::{
    self, AdditionalAddressFamily, AddressFamily, ChannelNumber, Lifetime, RequestedAddressFamily,
    RequestedTransport, ReservationToken, XorRelayAddress, methods,
};
use relay::{ChannelBinding, Drop, Event, FreeReason};
use support::*;
use turn_client::{ClientEvent, Families};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn allocate_answers_the_challenge_then_gets_a_relayed_address() {
    let mut world = World::new(relay_config());
    let client = world.add_client(addr("198.51.100.10:40000"), server_v4(), Families::V4);
    let relayed = world.allocate(client);
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip(), RELAY_V4);
    assert!(relay::ALLOCATION_PORTS.contains(&relayed[0].port()));
    assert_eq!(
        world.error_codes_sent(),
        vec![401],
        "one challenge, then success"
    );
    assert_eq!(
        world.clients[client].turn.mapped_address(),
        Some(addr("198.51.100.10:40000"))
    );
    assert!(matches!(
        &world.relay_events[..],
        [Event::AllocationCreated { port, .. }] if *port == relayed[0].port()
    ));
}

#[test]
fn channel_data_flows_both_ways_and_send_indications_without_a_channel() {
    let mut world = World::new(relay_config());
    let peer = addr("198.51.100.77:9000");
    let (client, relayed, channel) = world.client_with_channel(addr("198.51.100.10:40000"), peer);
    let now = world.now;
    assert!(
        world.clients[client]
            .events
            .contains(&ClientEvent::ChannelBound { peer, channel })
    );

    world.client_sends(client, peer, b"ping").expect("relayed");
    let last = world.wire.last().expect("sent");
    assert_eq!(
        (last.src, last.dst, &last.payload[..]),
        (relayed, peer, &b"ping"[..])
    );

    world
        .send_to_relay(peer, relayed, b"pong")
        .expect("relayed back");
    let last = world.wire.last().expect("sent");
    assert_eq!(last.src, server_v4());
    assert_eq!(
        &last.payload[..4],
        &[(channel >> 8) as u8, channel as u8, 0, 4]
    );
    assert_eq!(
        world.clients[client].received,
        vec![(peer, b"pong".to_vec())]
    );

    // A second peer with only a permission: Send indication out, Data indication back.
    let other = addr("198.51.100.78:9001");
    world.clients[client]
        .turn
        .create_permission(other.ip(), now)
        .expect("permission");
    world.pump();
    world
        .client_sends(client, other, b"hello")
        .expect("send indication");
    let last = world.wire.last().expect("sent");
    assert_eq!(
        (last.src, last.dst, &last.payload[..]),
        (relayed, other, &b"hello"[..])
    );
    world
        .send_to_relay(other, relayed, b"data indication")
        .expect("delivered");
    assert_eq!(
        world.clients[client].received.last(),
        Some(&(other, b"data indication".to_vec()))
    );
}

#[test]
fn peers_without_permission_and_unknown_channels_are_dropped_without_change() {
    let mut world = World::new(relay_config());
    let client = world.add_client(addr("198.51.100.10:40000"), server_v4(), Families::V4);
    let relayed = world.allocate(client)[0];
    let stranger = addr("198.51.100.99:1234");
    let sent = world.wire.len();
    assert_eq!(
        world.send_to_relay(stranger, relayed, b"let me in"),
        Err(Drop::NoPermission)
    );
    let unbound = proto::channel_data::ChannelData {
        channel: 0x4321,
        data: b"x",
    }
    .to_vec();
    assert_eq!(
        world.send_to_relay(addr("198.51.100.10:40000"), server_v4(), &unbound),
        Err(Drop::UnboundChannel)
    );
    assert_eq!(
        world.send_to_relay(addr("198.51.100.11:40000"), server_v4(), &unbound),
        Err(Drop::NoAllocation)
    );
    assert_eq!(
        world.send_to_relay(stranger, addr("203.0.113.1:50000"), b"x"),
        Err(Drop::UnusedAllocationPort)
    );
    assert_eq!(
        world.send_to_relay(stranger, addr("203.0.113.2:3478"), b"x"),
        Err(Drop::NotForRelay)
    );
    assert_eq!(
        world.send_to_relay(stranger, server_v4(), &[0x40, 0x00, 0x00, 0x09, 1]),
        Err(Drop::MalformedChannelData)
    );
    assert_eq!(
        world.send_to_relay(stranger, server_v4(), b"\x00\x01garbage"),
        Err(Drop::NotStun)
    );
    assert_eq!(world.wire.len(), sent, "nothing sent for dropped input");
    assert_eq!(world.relay.drop_counts().values().sum::<u64>(), 7);
}

#[test]
fn error_400_for_malformed_and_incomplete_requests() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    // A request whose FINGERPRINT does not match: decodes as a broken request.
    let id = stun::TransactionId::new([0xAB; 12]);
    let mut bytes = raw.encode(
        id,
        methods::ALLOCATE,
        vec![RequestedTransport::new(17).into()],
        true,
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    let answer = raw.send_raw(&mut world, &bytes, id).expect("answer");
    assert_eq!(code_of(&answer), 400);
    // Allocate without REQUESTED-TRANSPORT.
    let answer = raw
        .request(&mut world, methods::ALLOCATE, vec![], true)
        .expect("answer");
    assert_eq!(code_of(&answer), 400);
    // Both REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY.
    let answer = raw.allocate(
        &mut world,
        vec![
            RequestedAddressFamily::new(AddressFamily::V4).into(),
            AdditionalAddressFamily::new(AddressFamily::V6).into(),
        ],
    );
    assert_eq!(code_of(&answer), 400);
    // MESSAGE-INTEGRITY without USERNAME/REALM/NONCE.
    let key = stun::LongTermKey::new("x", "y", "z").expect("key");
    let mut message = stun::Message::new(stun::MessageClass::Request, methods::ALLOCATE, id);
    message.add_attribute(RequestedTransport::new(17));
    let bytes = stun::seal(message, Some(&key)).expect("seal");
    assert_eq!(
        code_of(&raw.send_raw(&mut world, &bytes, id).expect("answer")),
        400
    );
    assert_eq!(world.relay.allocation_count(), 0);
}

#[test]
fn error_401_for_missing_wrong_and_expired_credentials() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    let answer = raw
        .request(
            &mut world,
            methods::ALLOCATE,
            vec![RequestedTransport::new(17).into()],
            false,
        )
        .expect("answer");
    assert_eq!(code_of(&answer), 401);
    assert!(answer.get_attribute::<stun::Realm>().is_some());
    assert!(answer.get_attribute::<stun::Nonce>().is_some());

    let mut wrong = RawClient::with_credentials(
        addr("198.51.100.21:40000"),
        server_v4(),
        proto::credentials::Credentials {
            username: format!("{}:mallory", START_UNIX + 60),
            password: "guessed".to_owned(),
        },
    );
    wrong.get_challenge(&mut world);
    assert_eq!(code_of(&wrong.allocate(&mut world, vec![])), 401);

    let expired = proto::credentials::rest_api_credentials(SECRET, START_UNIX + 10, "late");
    let mut late = RawClient::with_credentials(addr("198.51.100.22:40000"), server_v4(), expired);
    world.advance(secs(10));
    late.get_challenge(&mut world);
    assert_eq!(
        code_of(&late.allocate(&mut world, vec![])),
        401,
        "expired username"
    );
    assert_eq!(world.relay.allocation_count(), 0);

    // A well-behaved client with a wrong password reports the failure.
    let bad = proto::credentials::Credentials {
        username: format!("{}:eve", START_UNIX + 86_400),
        password: "nope".to_owned(),
    };
    let client = world.add_client_with(addr("198.51.100.23:40000"), server_v4(), Families::V4, bad);
    world.allocate(client);
    assert!(
        world.clients[client]
            .events
            .contains(&ClientEvent::AllocationFailed { code: Some(401) })
    );
}

#[test]
fn error_437_allocation_mismatch_and_retransmitted_allocate_is_answered_again() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    // Refresh with no allocation.
    let answer = raw
        .request(&mut world, methods::REFRESH, vec![], true)
        .expect("answer");
    assert_eq!(code_of(&answer), 437);
    // Allocate, then the same bytes again (a retransmission): the same success.
    let id = stun::TransactionId::new([0x77; 12]);
    let bytes = raw.encode(
        id,
        methods::ALLOCATE,
        vec![RequestedTransport::new(17).into()],
        true,
    );
    let first = raw.send_raw(&mut world, &bytes, id).expect("answer");
    assert_eq!(code_of(&first), 0);
    let again = raw.send_raw(&mut world, &bytes, id).expect("answer");
    assert_eq!(
        stun::encode(again).expect("e"),
        stun::encode(first).expect("e")
    );
    assert_eq!(world.relay.allocation_count(), 1);
    // A new Allocate on the same 5-tuple.
    assert_eq!(code_of(&raw.allocate(&mut world, vec![])), 437);
}

#[test]
fn error_438_stale_nonce_and_the_client_recovers() {
    let mut config = relay_config();
    config.nonce_lifetime = secs(120);
    let mut world = World::new(config);
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    world.advance(secs(120));
    let answer = raw.allocate(&mut world, vec![]);
    assert_eq!(code_of(&answer), 438);
    assert_eq!(
        code_of(&raw.allocate(&mut world, vec![])),
        0,
        "the fresh nonce works"
    );

    // A TurnClient whose nonce goes stale refreshes with the new one by itself.
    let client = world.add_client(addr("198.51.100.30:40000"), server_v4(), Families::V4);
    world.allocate(client);
    world.advance(secs(600 - 60));
    assert!(world.error_codes_sent().contains(&438));
    assert!(matches!(
        world.clients[client].events.last(),
        Some(ClientEvent::AllocationRefreshed { .. })
    ));
}

#[test]
fn error_440_442_486_508() {
    let mut config = relay_config();
    config.public_v6 = None;
    config.allocation_quota = 1;
    config.port_range = 60000..=60001;
    let mut world = World::new(config);

    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    let answer = raw.allocate(
        &mut world,
        vec![RequestedAddressFamily::new(AddressFamily::V6).into()],
    );
    assert_eq!(code_of(&answer), 440, "no IPv6 on this relay");
    let answer = raw
        .request(
            &mut world,
            methods::ALLOCATE,
            vec![RequestedTransport::new(6).into()],
            true,
        )
        .expect("answer");
    assert_eq!(code_of(&answer), 442, "TCP relaying is not offered");
    let answer = raw.allocate(&mut world, vec![ReservationToken::new(7).into()]);
    assert_eq!(code_of(&answer), 508, "a token no reservation holds");
    assert_eq!(code_of(&raw.allocate(&mut world, vec![])), 0);

    let mut same_user = RawClient::new(addr("198.51.100.21:40000"), server_v4());
    same_user.get_challenge(&mut world);
    assert_eq!(
        code_of(&same_user.allocate(&mut world, vec![])),
        486,
        "quota of one"
    );

    let a = world.add_client(addr("198.51.100.30:40000"), server_v4(), Families::V4);
    world.allocate(a);
    let b = world.add_client(addr("198.51.100.31:40000"), server_v4(), Families::V4);
    world.allocate(b);
    assert!(
        world.clients[b]
            .events
            .contains(&ClientEvent::AllocationFailed { code: Some(508) })
    );
    assert_eq!(world.relay.allocation_count(), 2);
}

#[test]
fn error_443_peer_family_mismatch_and_channel_rules() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    assert_eq!(code_of(&raw.allocate(&mut world, vec![])), 0);
    let v6_peer = addr("[2001:db8:100::5]:9000");
    assert_eq!(raw.create_permission(&mut world, &[v6_peer]), 443);
    assert_eq!(raw.channel_bind(&mut world, 0x4000, v6_peer), 443);
    let peer = addr("198.51.100.50:9000");
    let other = addr("198.51.100.51:9000");
    // Channel numbers outside 0x4000-0x7FFF do not even decode (`ChannelNumber` holds RFC
    // 5766's range), so such a request is malformed: 400 through the broken-request path
    // (`rfc_5766_channel_numbers_are_served_and_numbers_past_them_are_malformed`).
    assert!(ChannelNumber::new(0x8000).is_err() && ChannelNumber::new(0x3FFF).is_err());
    assert_eq!(raw.channel_bind(&mut world, 0x4000, peer), 0);
    // Rebinding the same pair refreshes; a different peer on the number, or another number for
    // the peer, is refused.
    assert_eq!(raw.channel_bind(&mut world, 0x4000, peer), 0);
    assert_eq!(raw.channel_bind(&mut world, 0x4000, other), 400);
    assert_eq!(raw.channel_bind(&mut world, 0x4001, peer), 400);
    // CreatePermission with no peer.
    assert_eq!(raw.create_permission(&mut world, &[]), 400);
    // Another username on this 5-tuple.
    let mut intruder = RawClient::with_credentials(
        raw.addr,
        server_v4(),
        proto::credentials::rest_api_credentials(SECRET, START_UNIX + 86_400, "intruder"),
    );
    intruder.get_challenge(&mut world);
    assert_eq!(intruder.channel_bind(&mut world, 0x4002, other), 441);
    let bindings = world.relay.channel_bindings();
    assert_eq!(bindings.len(), 1);
    assert_eq!((bindings[0].channel, bindings[0].peer), (0x4000, peer));
}

/// RFC 5766 clients (coturn's among them) pick channel numbers from 0x4000-0x7FFF, past RFC
/// 8656's 0x4FFF: the relay binds them and relays on them both ways like any other.
#[test]
fn rfc_5766_channel_numbers_are_served_and_numbers_past_them_are_malformed() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    let relayed = raw
        .allocate(&mut world, vec![])
        .get_attribute::<XorRelayAddress>()
        .map(XorRelayAddress::address)
        .expect("a relayed address");
    let (peer, other) = (addr("198.51.100.50:9000"), addr("198.51.100.51:9000"));
    assert_eq!(raw.channel_bind(&mut world, 0x7FFF, peer), 0);
    assert_eq!(raw.channel_bind(&mut world, 0x5000, other), 0);
    let bound: Vec<(u16, _)> = world
        .relay
        .channel_bindings()
        .iter()
        .map(|binding| (binding.channel, binding.peer))
        .collect();
    assert_eq!(bound, vec![(0x5000, other), (0x7FFF, peer)]);

    world
        .send_to_relay(raw.addr, server_v4(), &[0x7F, 0xFF, 0x00, 0x02, 0xAB, 0xCD])
        .expect("relayed to the peer");
    let last = world.wire.last().expect("sent");
    assert_eq!(
        (last.src, last.dst, &last.payload[..]),
        (relayed, peer, &[0xAB, 0xCD][..])
    );
    world
        .send_to_relay(other, relayed, b"back")
        .expect("relayed to the client");
    let last = world.wire.last().expect("sent");
    assert_eq!(
        (last.src, last.dst, &last.payload[..]),
        (
            server_v4(),
            raw.addr,
            &[0x50, 0x00, 0x00, 0x04, b'b', b'a', b'c', b'k'][..]
        )
    );

    // Past 0x7FFF the request is malformed: 400 before any credentials are looked at, where
    // the same request with a number in range is challenged (401).
    let unsigned_bind = |first_byte: u8, id: u8| {
        let mut message = stun::Message::new(
            stun::MessageClass::Request,
            methods::CHANNEL_BIND,
            stun::TransactionId::new([id; 12]),
        );
        message.add_attribute(ChannelNumber::new(0x7FFF).expect("in range"));
        message.add_attribute(stun::XorPeerAddress::new(peer));
        let mut bytes = stun::encode(message).expect("encodes");
        // CHANNEL-NUMBER's value follows the 20-byte header and its own 4-byte header.
        bytes[24] = first_byte;
        (bytes, stun::TransactionId::new([id; 12]))
    };
    let (in_range, id) = unsigned_bind(0x7F, 0xA1);
    let answer = raw.send_raw(&mut world, &in_range, id).expect("an answer");
    assert_eq!(code_of(&answer), 401);
    let (past_range, id) = unsigned_bind(0x80, 0xA2);
    let answer = raw
        .send_raw(&mut world, &past_range, id)
        .expect("an answer");
    assert_eq!(code_of(&answer), 400);
    assert_eq!(world.relay.channel_bindings().len(), 2, "nothing changed");
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    // Hand-build an Allocate carrying attribute 0x0031 (comprehension-required, unknown).
    let id = stun::TransactionId::new([0x31; 12]);
    let mut bytes = raw.encode(
        id,
        methods::ALLOCATE,
        vec![RequestedTransport::new(17).into()],
        false,
    );
    bytes.truncate(bytes.len() - 8); // drop FINGERPRINT
    bytes.extend_from_slice(&[0x00, 0x31, 0x00, 0x04, 1, 2, 3, 4]);
    let length = (bytes.len() - 20) as u16;
    bytes[2..4].copy_from_slice(&length.to_be_bytes());
    let answer = raw.send_raw(&mut world, &bytes, id).expect("answer");
    assert_eq!(code_of(&answer), 420);
    assert_eq!(world.relay.allocation_count(), 0);
}

#[test]
fn lifetimes_default_clamp_refresh_and_delete() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    let lifetime_of =
        |answer: &stun::Message| answer.get_attribute::<Lifetime>().map(Lifetime::lifetime);
    let short = raw.allocate(&mut world, vec![Lifetime::new(secs(30)).expect("l").into()]);
    assert_eq!(
        lifetime_of(&short),
        Some(secs(600)),
        "never below the default"
    );
    let long = raw
        .request(
            &mut world,
            methods::REFRESH,
            vec![Lifetime::new(secs(7200)).expect("l").into()],
            true,
        )
        .expect("answer");
    assert_eq!(
        lifetime_of(&long),
        Some(secs(3600)),
        "capped at the maximum"
    );
    world.advance(secs(3599));
    assert_eq!(world.relay.allocation_count(), 1);
    let delete = raw
        .request(
            &mut world,
            methods::REFRESH,
            vec![Lifetime::new(secs(0)).expect("l").into()],
            true,
        )
        .expect("answer");
    assert_eq!((code_of(&delete), lifetime_of(&delete)), (0, Some(secs(0))));
    assert_eq!(world.relay.allocation_count(), 0);
    assert!(world.relay_events.iter().any(|event| matches!(
        event,
        Event::AllocationFreed {
            reason: FreeReason::Deleted,
            ..
        }
    )));
}

#[test]
fn allocation_expires_at_exactly_its_lifetime_and_refresh_either_side_of_it() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    assert_eq!(code_of(&raw.allocate(&mut world, vec![])), 0);
    let just_before = secs(600) - Duration::from_millis(1);
    world.advance_to(just_before);
    assert_eq!(
        world.relay.allocation_count(),
        1,
        "alive 1 ms before the deadline"
    );
    let refresh = raw
        .request(&mut world, methods::REFRESH, vec![], true)
        .expect("answer");
    assert_eq!(
        code_of(&refresh),
        0,
        "a refresh just before the deadline works"
    );
    world.advance_to(just_before + secs(600) - Duration::from_millis(1));
    assert_eq!(world.relay.allocation_count(), 1);
    world.advance_to(just_before + secs(600));
    assert_eq!(
        world.relay.allocation_count(),
        0,
        "gone exactly at the deadline"
    );
    let late = raw
        .request(&mut world, methods::REFRESH, vec![], true)
        .expect("answer");
    assert_eq!(
        code_of(&late),
        437,
        "a refresh just after the deadline finds nothing"
    );
    assert!(world.relay_events.iter().any(|event| matches!(
        event,
        Event::AllocationFreed {
            reason: FreeReason::Expired,
            ..
        }
    )));
}

#[test]
fn permission_and_channel_expiry_and_the_channel_cooldown() {
    let mut world = World::new(relay_config());
    let mut raw = RawClient::new(addr("198.51.100.20:40000"), server_v4());
    raw.get_challenge(&mut world);
    let answer = raw.allocate(
        &mut world,
        vec![Lifetime::new(secs(3600)).expect("l").into()],
    );
    let relayed = answer
        .get_attribute::<XorRelayAddress>()
        .expect("relayed")
        .address();
    let peer = addr("198.51.100.50:9000");
    let other = addr("198.51.100.51:9000");
    assert_eq!(raw.channel_bind(&mut world, 0x4000, peer), 0);
    let binding = ChannelBinding {
        client: raw.addr,
        channel: 0x4000,
        allocation_port: relayed.port(),
        peer,
    };
    assert!(world.relay_events.contains(&Event::ChannelBound(binding)));

    // The permission (300 s) lapses first: the channel stops carrying data at 300 s exactly.
    world.advance_to(secs(300) - Duration::from_millis(1));
    assert_eq!(world.send_to_relay(peer, relayed, b"still ok"), Ok(()));
    world.advance_to(secs(300));
    assert_eq!(
        world.send_to_relay(peer, relayed, b"late"),
        Err(Drop::NoPermission)
    );
    assert!(world.relay_events.contains(&Event::ChannelUnbound(binding)));
    assert!(world.relay.channel_bindings().is_empty());

    // Renewing the permission revives the still-bound channel until the binding's 600 s.
    assert_eq!(raw.create_permission(&mut world, &[peer]), 0);
    assert_eq!(world.relay.channel_bindings(), vec![binding]);
    world.advance_to(secs(600));
    assert!(
        world.relay.channel_bindings().is_empty(),
        "binding expired at 600 s"
    );

    // During the 300 s cooldown the number may not go to another peer, nor the peer to
    // another number; afterwards both may.
    world.advance_to(secs(899));
    assert_eq!(raw.channel_bind(&mut world, 0x4000, other), 400);
    assert_eq!(raw.channel_bind(&mut world, 0x4001, peer), 400);
    world.advance_to(secs(900));
    assert_eq!(raw.channel_bind(&mut world, 0x4000, other), 0);
    assert_eq!(raw.channel_bind(&mut world, 0x4001, peer), 0);
    assert_eq!(world.relay.channel_bindings().len(), 2);
    assert_eq!(world.bindings_from_events(), world.relay.channel_bindings());
}

#[test]
fn a_turn_client_keeps_everything_alive_for_an_hour() {
    let mut world = World::new(relay_config());
    let peer = addr("198.51.100.77:9000");
    let (client, relayed, channel) = world.client_with_channel(addr("198.51.100.10:40000"), peer);
    for minute in 1..=60 {
        world.advance_to(secs(minute * 60));
        world
            .send_to_relay(peer, relayed, b"tick")
            .expect("channel still active");
    }
    assert_eq!(world.relay.allocation_count(), 1);
    assert_eq!(world.relay.channel_bindings().len(), 1);
    assert_eq!(world.relay.channel_bindings()[0].channel, channel);
    assert_eq!(world.clients[client].received.len(), 60);
    assert!(
        world
            .error_codes_sent()
            .iter()
            .all(|&code| code == 401 || code == 438)
    );
    assert_eq!(world.bindings_from_events(), world.relay.channel_bindings());
}

#[test]
fn release_frees_the_allocation_and_unbinds_its_channels() {
    let mut world = World::new(relay_config());
    let client = world.add_client(addr("198.51.100.10:40000"), server_v4(), Families::V4);
    world.allocate(client);
    let now = world.now;
    world.clients[client]
        .turn
        .bind_channel(addr("198.51.100.77:9000"), now)
        .expect("bind");
    world.pump();
    assert_eq!(world.relay.channel_bindings().len(), 1);
    world.clients[client].turn.release(now);
    world.pump();
    assert_eq!(world.relay.allocation_count(), 0);
    assert!(world.relay.channel_bindings().is_empty());
    assert!(world.bindings_from_events().is_empty());
}

#[test]
fn retransmissions_follow_rfc_8489_and_give_up() {
    let mut world = World::new(relay_config());
    // A client whose relay never answers: the requests are lost.
    let mut lonely = turn_client::TurnClient::new(turn_client::TurnClientConfig {
        server: addr("203.0.113.9:3478"),
        credentials: proto::credentials::rest_api_credentials(SECRET, START_UNIX + 86_400, "x"),
        families: Families::V4,
        lifetime: None,
        seed: 9,
    });
    let start = world.now;
    lonely.allocate(start);
    let mut sent_at = Vec::new();
    let mut now = start;
    while lonely.poll_transmit().is_some() {
        sent_at.push(now - start);
    }
    while let Some(deadline) = lonely.poll_timeout() {
        now = deadline;
        lonely.handle_timeout(now);
        while lonely.poll_transmit().is_some() {
            sent_at.push(now - start);
        }
        if let Some(event) = lonely.poll_event() {
            assert_eq!(event, ClientEvent::AllocationFailed { code: None });
            break;
        }
    }
    let ms: Vec<u128> = sent_at.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(
        (now - start).as_millis(),
        39500,
        "gives up 16 RTOs after the last send"
    );
    world.pump();
}
