//! `stun_message`: STUN/TURN decoding, and what the relay does with the message.
//!
//! The bytes go to `proto::stun::decode`; a message that decodes must encode again to bytes that
//! decode to a message that encodes to the same bytes. Then the relay gets the bytes as they
//! are, from a client with an allocation and from a stranger, and, when they decode, the same
//! message re-signed by the allocated client (its USERNAME, REALM, NONCE, MESSAGE-INTEGRITY and
//! FINGERPRINT in place of whatever it had), so the relay's request handlers see every
//! attribute the fuzzer invents behind valid credentials. Every datagram must be accounted for
//! (see [`super::relay_input`]) and the relay's state must stay within its bounds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use proto::stun::{self, Attribute, Message};

use super::relay_input;
use crate::fixtures::{self, CLIENT_V4, TurnClient};

/// A client of the relay that has never talked to it.
const STRANGER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), 40000);

pub fn stun_message(data: &[u8]) {
    let decoded = stun::decode(data);
    if let Ok(message) = &decoded {
        assert!(
            stun::looks_like_stun(data),
            "decoded without the STUN header"
        );
        // stun_codec 0.4 writes the method bits above the lowest four to the wrong places of the
        // message type (`Type::as_u16` shifts them by 5 and 9 instead of 1 and 2), so a method
        // of 0x010 or more does not survive encoding; every method the relay serves is below.
        if message.method().as_u16() < 0x010
            && let Ok(bytes) = stun::encode(message.clone())
        {
            let again = stun::decode(&bytes).expect("a re-encoded message decodes");
            assert_eq!(
                (again.class(), again.method(), again.transaction_id()),
                (message.class(), message.method(), message.transaction_id())
            );
            assert_eq!(
                stun::encode(again).ok().as_deref(),
                Some(bytes.as_slice()),
                "encoding is stable"
            );
        }
    }

    let now = Instant::now();
    let mut relay = fixtures::relay(now);
    let mut client = TurnClient::new(1, CLIENT_V4);
    assert!(client.allocate(&mut relay, now), "fixture allocate");
    let server = client.server;
    relay_input(&mut relay, CLIENT_V4, server, data, now);
    relay_input(&mut relay, STRANGER, server, data, now);
    if let Ok(message) = decoded
        && let Some(signed) = resign(&client, &message)
    {
        relay_input(&mut relay, CLIENT_V4, server, &signed, now);
    }
    assert!(relay.allocation_count() <= relay.config().allocation_quota);
    if let Some(deadline) = relay.poll_timeout() {
        assert!(deadline >= now, "the relay's next deadline is in the past");
    }
}

/// `message` with `client`'s credentials in place of its own, signed; `None` if the fuzzer's
/// attributes do not encode.
fn resign(client: &TurnClient, message: &Message) -> Option<Vec<u8>> {
    let mut resigned = Message::new(message.class(), message.method(), message.transaction_id());
    for attribute in message.attributes() {
        if !matches!(
            attribute,
            Attribute::MessageIntegrity(_)
                | Attribute::Fingerprint(_)
                | Attribute::Username(_)
                | Attribute::Realm(_)
                | Attribute::Nonce(_)
        ) {
            resigned.add_attribute(attribute.clone());
        }
    }
    client.try_sign(resigned)
}
