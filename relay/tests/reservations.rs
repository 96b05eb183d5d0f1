//! EVEN-PORT and RESERVATION-TOKEN (RFC 8656 §7.2): even relayed ports, the next port kept for
//! 30 s for the Allocate that brings the token, and every way a token or a reservation is
//! refused.

mod support;

use std::{net::SocketAddr, time::Duration};

use proto::{
    credentials,
    stun::{
        self, AdditionalAddressFamily, AddressFamily, EvenPort, RequestedAddressFamily,
        ReservationToken, XorRelayAddress,
    },
};
use relay::RESERVATION_LIFETIME;
use support::*;

/// A raw client of `user` at `at`, with a nonce.
fn client(world: &mut World, at: &str, user: &str) -> RawClient {
    let credentials =
        credentials::rest_api_credentials(SECRET, START_UNIX + CREDENTIALS_VALID_FOR_SECS, user);
    let mut raw = RawClient::with_credentials(addr(at), server_v4(), credentials);
    raw.get_challenge(world);
    raw
}

/// What an Allocate got: its relayed addresses and token, or its error code.
#[derive(Debug, PartialEq, Eq)]
enum Allocated {
    Relayed {
        addresses: Vec<SocketAddr>,
        token: Option<u64>,
    },
    Refused(u16),
}

impl Allocated {
    fn port(&self) -> u16 {
        match self {
            Allocated::Relayed { addresses, .. } => addresses[0].port(),
            Allocated::Refused(code) => panic!("refused with {code}"),
        }
    }

    fn token(&self) -> u64 {
        match self {
            Allocated::Relayed {
                token: Some(token), ..
            } => *token,
            other => panic!("no reservation token: {other:?}"),
        }
    }
}

fn allocate(world: &mut World, raw: &mut RawClient, extra: Vec<stun::Attribute>) -> Allocated {
    let answer = raw.allocate(world, extra);
    match code_of(&answer) {
        0 => Allocated::Relayed {
            addresses: answer
                .attributes()
                .filter_map(|attribute| match attribute {
                    stun::Attribute::XorRelayAddress(relayed) => Some(relayed.address()),
                    _ => None,
                })
                .collect(),
            token: answer
                .get_attribute::<ReservationToken>()
                .map(ReservationToken::token),
        },
        code => Allocated::Refused(code),
    }
}

fn even_port(reserve_next: bool) -> stun::Attribute {
    EvenPort::new(reserve_next).into()
}

fn token(value: u64) -> stun::Attribute {
    ReservationToken::new(value).into()
}

#[test]
fn even_port_without_a_reservation_gets_an_even_port_and_no_token() {
    let mut config = relay_config();
    config.allocation_quota = 20;
    let mut world = World::new(config);
    for n in 0..20 {
        let mut raw = client(&mut world, &format!("198.51.100.20:{}", 40000 + n), "rtp");
        let allocated = allocate(&mut world, &mut raw, vec![even_port(false)]);
        assert_eq!(allocated.port() % 2, 0, "{allocated:?}");
        assert!(matches!(allocated, Allocated::Relayed { token: None, .. }));
    }
    assert_eq!(world.relay.occupancy().reservations, 0);
}

#[test]
fn a_reservation_keeps_the_next_port_for_its_token_from_another_5_tuple() {
    let mut config = relay_config();
    // Two ports: the reservation's pair and nothing else.
    config.port_range = 60000..=60001;
    let mut world = World::new(config);
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let allocated = allocate(&mut world, &mut rtp, vec![even_port(true)]);
    assert_eq!(allocated.port(), 60000);
    let reserved = allocated.token();
    assert_eq!(world.relay.occupancy().reservations, 1);

    // Nobody else gets the reserved port.
    let mut stranger = client(&mut world, "198.51.100.21:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut stranger, vec![]),
        Allocated::Refused(508)
    );
    // The token's Allocate gets it, from a 5-tuple of its own.
    let mut rtcp = client(&mut world, "198.51.100.22:40000", "alice");
    let allocated = allocate(&mut world, &mut rtcp, vec![token(reserved)]);
    assert_eq!(
        allocated,
        Allocated::Relayed {
            addresses: vec![SocketAddr::new(RELAY_V4.into(), 60001)],
            token: None,
        }
    );
    assert_eq!(world.relay.occupancy().reservations, 0);
    assert_eq!(world.relay.allocation_count(), 2);
    // A token serves once.
    let mut again = client(&mut world, "198.51.100.23:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut again, vec![token(reserved)]),
        Allocated::Refused(508)
    );
}

#[test]
fn a_reservation_expires_on_its_deadline_and_frees_its_port() {
    let mut config = relay_config();
    config.port_range = 60000..=60001;
    let mut world = World::new(config);
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let reserved = allocate(&mut world, &mut rtp, vec![even_port(true)]).token();
    let made_at = world.elapsed();
    assert_eq!(
        world.relay.poll_timeout(),
        Some(world.start + made_at + RESERVATION_LIFETIME),
        "the reservation's deadline is the relay's next"
    );

    // 1 ms before the deadline the token still works.
    world.advance_to(made_at + RESERVATION_LIFETIME - Duration::from_millis(1));
    assert_eq!(world.relay.occupancy().reservations, 1);
    let mut rtcp = client(&mut world, "198.51.100.22:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut rtcp, vec![token(reserved)]).port(),
        60001
    );

    // Another reservation, let run out: on its deadline it is gone and its port is free.
    let mut world = World::new({
        let mut config = relay_config();
        config.port_range = 60000..=60001;
        config
    });
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let reserved = allocate(&mut world, &mut rtp, vec![even_port(true)]).token();
    let made_at = world.elapsed();
    world.advance_to(made_at + RESERVATION_LIFETIME);
    assert_eq!(world.relay.occupancy().reservations, 0);
    let mut late = client(&mut world, "198.51.100.22:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut late, vec![token(reserved)]),
        Allocated::Refused(508),
        "an expired token"
    );
    let mut plain = client(&mut world, "198.51.100.23:40000", "alice");
    assert_eq!(allocate(&mut world, &mut plain, vec![]).port(), 60001);
}

#[test]
fn a_token_used_on_its_deadline_before_the_timer_ran_is_refused() {
    let mut world = World::new(relay_config());
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let reserved = allocate(&mut world, &mut rtp, vec![even_port(true)]).token();
    // The host has not called handle_timeout yet: the reservation is stored, and dead.
    world.now += RESERVATION_LIFETIME;
    assert_eq!(world.relay.occupancy().reservations, 1);
    let mut rtcp = client(&mut world, "198.51.100.22:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut rtcp, vec![token(reserved)]),
        Allocated::Refused(508)
    );
    world.relay.handle_timeout(world.now);
    assert_eq!(world.relay.occupancy().reservations, 0);
    assert!(world.relay.poll_timeout() > Some(world.now));
}

#[test]
fn reservations_are_bounded_and_the_bound_is_refused_with_508_and_counted() {
    let mut config = relay_config();
    config.max_reservations = 2;
    let mut world = World::new(config.clone());
    for n in 0..2 {
        let mut raw = client(&mut world, &format!("198.51.100.20:{}", 40000 + n), "alice");
        allocate(&mut world, &mut raw, vec![even_port(true)]).token();
    }
    let refusals_before = world.relay.rejection_counts().get(&508).copied();
    let mut third = client(&mut world, "198.51.100.20:40002", "alice");
    assert_eq!(
        allocate(&mut world, &mut third, vec![even_port(true)]),
        Allocated::Refused(508)
    );
    assert_eq!(
        world.relay.rejection_counts().get(&508).copied(),
        Some(refusals_before.unwrap_or(0) + 1)
    );
    let occupancy = world.relay.occupancy();
    assert_eq!(occupancy.reservations, 2);
    assert!(occupancy.breaches(&config).is_empty());
    assert_eq!(
        world.relay.allocation_count(),
        2,
        "the refused one made nothing"
    );
    // An even port without a reservation is still served.
    assert_eq!(
        allocate(&mut world, &mut third, vec![even_port(false)]).port() % 2,
        0
    );
}

#[test]
fn unknown_and_foreign_tokens_are_refused_with_508() {
    let mut world = World::new(relay_config());
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let allocated = allocate(&mut world, &mut rtp, vec![even_port(true)]);
    let (port, reserved) = (allocated.port(), allocated.token());
    let mut mallory = client(&mut world, "198.51.100.66:40000", "mallory");
    assert_eq!(
        allocate(&mut world, &mut mallory, vec![token(reserved)]),
        Allocated::Refused(508),
        "another username's token"
    );
    assert_eq!(
        allocate(&mut world, &mut mallory, vec![token(reserved ^ 1)]),
        Allocated::Refused(508),
        "a token nobody holds"
    );
    assert_eq!(world.relay.occupancy().reservations, 1, "still alice's");
    let mut rtcp = client(&mut world, "198.51.100.22:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut rtcp, vec![token(reserved)]).port(),
        port + 1
    );
}

#[test]
fn a_token_beside_even_port_or_an_address_family_and_a_reservation_beside_two_families_are_400() {
    let mut world = World::new(relay_config());
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let reserved = allocate(&mut world, &mut rtp, vec![even_port(true)]).token();
    let mut other = client(&mut world, "198.51.100.21:40000", "alice");
    for beside in [
        even_port(false),
        even_port(true),
        RequestedAddressFamily::new(AddressFamily::V4).into(),
        AdditionalAddressFamily::new(AddressFamily::V6).into(),
    ] {
        assert_eq!(
            allocate(
                &mut world,
                &mut other,
                vec![token(reserved), beside.clone()]
            ),
            Allocated::Refused(400),
            "token with {beside:?}"
        );
    }
    assert_eq!(
        allocate(
            &mut world,
            &mut other,
            vec![
                even_port(true),
                AdditionalAddressFamily::new(AddressFamily::V6).into()
            ]
        ),
        Allocated::Refused(400),
        "a reservation for a dual-stack allocation"
    );
    assert_eq!(world.relay.occupancy().reservations, 1, "nothing changed");
    assert_eq!(world.relay.allocation_count(), 1);
}

#[test]
fn even_port_with_a_reservation_needs_an_even_port_whose_next_is_free() {
    let mut config = relay_config();
    // 60001 is odd and 60002 has no next port in the range.
    config.port_range = 60001..=60002;
    let mut world = World::new(config);
    let mut raw = client(&mut world, "198.51.100.20:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut raw, vec![even_port(true)]),
        Allocated::Refused(508)
    );
    assert_eq!(world.relay.occupancy().reservations, 0);
    assert_eq!(
        allocate(&mut world, &mut raw, vec![even_port(false)]).port(),
        60002
    );
    let mut odd = client(&mut world, "198.51.100.21:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut odd, vec![even_port(false)]),
        Allocated::Refused(508),
        "no even port left"
    );
    assert_eq!(allocate(&mut world, &mut odd, vec![]).port(), 60001);
}

#[test]
fn the_reserved_port_relays_the_family_of_the_allocation_that_reserved_it() {
    let mut world = World::new(relay_config());
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let allocated = allocate(
        &mut world,
        &mut rtp,
        vec![
            RequestedAddressFamily::new(AddressFamily::V6).into(),
            even_port(true),
        ],
    );
    let Allocated::Relayed {
        addresses,
        token: Some(reserved),
    } = allocated
    else {
        panic!("{allocated:?}");
    };
    assert_eq!(addresses.len(), 1);
    assert_eq!(addresses[0].ip(), RELAY_V6);
    let mut rtcp = client(&mut world, "198.51.100.22:40000", "alice");
    assert_eq!(
        allocate(&mut world, &mut rtcp, vec![token(reserved)]),
        Allocated::Relayed {
            addresses: vec![SocketAddr::new(RELAY_V6.into(), addresses[0].port() + 1)],
            token: None,
        }
    );
}

#[test]
fn an_allocation_whose_socket_cannot_be_bound_takes_its_reservation_with_it() {
    let mut world = World::new(relay_config());
    let mut rtp = client(&mut world, "198.51.100.20:40000", "alice");
    let answer = rtp.allocate(&mut world, vec![even_port(true)]);
    let port = answer
        .get_attribute::<XorRelayAddress>()
        .expect("relayed")
        .address()
        .port();
    assert_eq!(world.relay.occupancy().reservations, 1);
    // The host fails to bind the allocation's socket after the success was sent (the test's
    // world delivers at once): the allocation goes, and so does its reservation.
    assert!(world.relay.handle_bind_failure(port, world.now));
    assert_eq!(world.relay.occupancy().reservations, 0);
    assert_eq!(world.relay.allocation_count(), 0);
}
