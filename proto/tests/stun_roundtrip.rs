//! Codec round trip: any TURN message built from the attributes TURN uses, sealed with
//! MESSAGE-INTEGRITY and FINGERPRINT, decodes to the same attributes, verifies with its key,
//! and re-encodes to the same bytes.

use std::{net::SocketAddr, time::Duration};

use proptest::prelude::*;
use proto::channel_data::CHANNEL_RANGE;
use proto::stun::{
    self, Attribute, ChannelNumber, Data, EvenPort, Lifetime, LongTermKey, Message, MessageClass,
    RequestedTransport, ReservationToken, TransactionId, XorPeerAddress, XorRelayAddress, methods,
};

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        socket_addr().prop_map(|a| XorPeerAddress::new(a).into()),
        socket_addr().prop_map(|a| XorRelayAddress::new(a).into()),
        CHANNEL_RANGE.prop_map(|n| ChannelNumber::new(n).expect("in range").into()),
        (0u64..100_000).prop_map(|s| Lifetime::new(Duration::from_secs(s)).expect("fits").into()),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|d| Data::new(d).expect("fits").into()),
        any::<u8>().prop_map(|p| RequestedTransport::new(p).into()),
        any::<bool>().prop_map(|r| EvenPort::new(r).into()),
        any::<u64>().prop_map(|t| ReservationToken::new(t).into()),
    ]
}

proptest! {
    #[test]
    fn sealed_messages_round_trip(
        id in any::<[u8; 12]>(),
        method in prop_oneof![Just(methods::ALLOCATE), Just(methods::REFRESH), Just(methods::CHANNEL_BIND), Just(methods::CREATE_PERMISSION)],
        class in prop_oneof![Just(MessageClass::Request), Just(MessageClass::SuccessResponse), Just(MessageClass::ErrorResponse)],
        attributes in prop::collection::vec(attribute(), 0..6),
    ) {
        let key = LongTermKey::new("1800000000:client", "vpnsim.test", "secret").expect("key");
        let mut message = Message::new(class, method, TransactionId::new(id));
        for attribute in &attributes {
            message.add_attribute(attribute.clone());
        }
        let bytes = stun::seal(message, Some(&key)).expect("seal");
        let decoded = stun::decode(&bytes).expect("own encoding decodes");
        prop_assert_eq!(decoded.class(), class);
        prop_assert_eq!(decoded.method(), method);
        prop_assert_eq!(decoded.transaction_id(), TransactionId::new(id));
        let decoded_attributes: Vec<&Attribute> = decoded.attributes().collect();
        // Decoded = what we put in, then MESSAGE-INTEGRITY and FINGERPRINT.
        prop_assert_eq!(decoded_attributes.len(), attributes.len() + 2);
        for (ours, theirs) in attributes.iter().zip(&decoded_attributes) {
            prop_assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        }
        prop_assert!(key.verifies(&decoded));
        prop_assert!(key.verifies_datagram(&bytes), "the byte-level check agrees");
        let wrong = LongTermKey::new("1800000000:client", "vpnsim.test", "secreT").expect("key");
        prop_assert!(!wrong.verifies_datagram(&bytes));
        prop_assert_eq!(stun::encode(decoded).expect("re-encode"), bytes);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = stun::decode(&bytes);
    }
}

/// RFC 8489 §14.5: what follows MESSAGE-INTEGRITY (FINGERPRINT aside) is not covered by the
/// MAC, so decoding ignores it: a peer appended to a signed CreatePermission is not seen.
#[test]
fn attributes_appended_after_message_integrity_are_ignored() {
    let key = LongTermKey::new("1800000000:client", "vpnsim.test", "secret").expect("key");
    let signed_peer: SocketAddr = "198.51.100.7:1".parse().unwrap();
    let appended_peer: SocketAddr = "127.0.0.1:22".parse().unwrap();
    let mut request = Message::new(
        MessageClass::Request,
        methods::CREATE_PERMISSION,
        TransactionId::new([7; 12]),
    );
    request.add_attribute(XorPeerAddress::new(signed_peer));
    let sealed = stun::seal(request, Some(&key)).expect("seals");
    // Without FINGERPRINT: cut it off (the last 8 bytes), then append.
    let mut without_fingerprint = sealed[..sealed.len() - 8].to_vec();
    let length = u16::try_from(without_fingerprint.len() - 20).unwrap();
    without_fingerprint[2..4].copy_from_slice(&length.to_be_bytes());
    let mut extra = Message::new(
        MessageClass::Request,
        methods::CREATE_PERMISSION,
        TransactionId::new([7; 12]),
    );
    extra.add_attribute(XorPeerAddress::new(appended_peer));
    for base in [sealed.clone(), without_fingerprint] {
        let tampered = stun::append_attributes(&base, extra.clone()).expect("appends");
        assert!(tampered.len() > base.len());
        let decoded = stun::decode(&tampered).expect("still decodes");
        let peers: Vec<SocketAddr> = decoded
            .attributes()
            .filter_map(|attribute| match attribute {
                Attribute::XorPeerAddress(peer) => Some(peer.address()),
                _ => None,
            })
            .collect();
        assert_eq!(peers, vec![signed_peer], "the appended peer is ignored");
        assert!(key.verifies(&decoded), "what is left still verifies");
    }
    let untouched = stun::decode(&sealed).expect("decodes");
    assert!(key.verifies(&untouched));
}
