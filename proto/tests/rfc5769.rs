//! The RFC 5769 STUN test vectors: each decodes, its MESSAGE-INTEGRITY and FINGERPRINT verify,
//! and it re-encodes byte for byte (padding included).

use std::net::SocketAddr;

use proto::stun::{
    self, Fingerprint, LongTermKey, MessageClass, MessageIntegrity, Software, Username,
    XorMappedAddress, methods,
};

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect()
}

/// RFC 5769 §2.1: Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME (padded
/// with spaces), short-term MESSAGE-INTEGRITY and FINGERPRINT.
const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// RFC 5769 §2.2: IPv4 Binding success response, mapped 192.0.2.1:32853.
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// RFC 5769 §2.3: IPv6 Binding success response, mapped [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

/// RFC 5769 §2.4: Binding request with long-term credentials, no FINGERPRINT.
const SAMPLE_LONG_TERM_REQUEST: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

fn decode_and_reencode(vector: &str) -> stun::Message {
    let bytes = hex(vector);
    let message = stun::decode(&bytes).expect("the vector decodes");
    let reencoded = stun::encode(message.clone()).expect("re-encodes");
    assert_eq!(reencoded, bytes, "re-encoded byte for byte");
    message
}

fn short_term_integrity_holds(message: &stun::Message, password: &str) -> bool {
    message
        .get_attribute::<MessageIntegrity>()
        .expect("MESSAGE-INTEGRITY present")
        .check_short_term_credential(password)
        .is_ok()
}

#[test]
fn sample_request() {
    let message = decode_and_reencode(SAMPLE_REQUEST);
    assert_eq!(message.class(), MessageClass::Request);
    assert_eq!(message.method(), methods::BINDING);
    assert_eq!(
        message
            .get_attribute::<Software>()
            .map(Software::description),
        Some("STUN test client")
    );
    assert_eq!(
        message.get_attribute::<Username>().map(Username::name),
        Some("evtj:h6vY")
    );
    assert!(short_term_integrity_holds(&message, SHORT_TERM_PASSWORD));
    assert!(!short_term_integrity_holds(&message, "wrong"));
    assert_eq!(
        message
            .get_attribute::<Fingerprint>()
            .map(Fingerprint::crc32),
        Some(0xe57a3bcf)
    );
}

#[test]
fn sample_ipv4_response() {
    let message = decode_and_reencode(SAMPLE_IPV4_RESPONSE);
    assert_eq!(message.class(), MessageClass::SuccessResponse);
    let mapped: SocketAddr = "192.0.2.1:32853".parse().expect("address");
    assert_eq!(
        message
            .get_attribute::<XorMappedAddress>()
            .map(XorMappedAddress::address),
        Some(mapped)
    );
    assert!(short_term_integrity_holds(&message, SHORT_TERM_PASSWORD));
    assert_eq!(
        message
            .get_attribute::<Fingerprint>()
            .map(Fingerprint::crc32),
        Some(0xc07d4c96)
    );
}

#[test]
fn sample_ipv6_response() {
    let message = decode_and_reencode(SAMPLE_IPV6_RESPONSE);
    let mapped: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("address");
    assert_eq!(
        message
            .get_attribute::<XorMappedAddress>()
            .map(XorMappedAddress::address),
        Some(mapped)
    );
    assert!(short_term_integrity_holds(&message, SHORT_TERM_PASSWORD));
    assert_eq!(
        message
            .get_attribute::<Fingerprint>()
            .map(Fingerprint::crc32),
        Some(0xc8fb0b4c)
    );
}

#[test]
fn sample_request_with_long_term_authentication() {
    let message = decode_and_reencode(SAMPLE_LONG_TERM_REQUEST);
    let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    assert_eq!(
        message.get_attribute::<Username>().map(Username::name),
        Some(username)
    );
    // The password after SASLprep ("TheMªtrⅨ" -> "TheMatrIX").
    let key = LongTermKey::new(username, "example.org", "TheMatrIX").expect("key");
    assert!(key.verifies(&message));
    let wrong = LongTermKey::new(username, "example.org", "TheMatrix").expect("key");
    assert!(!wrong.verifies(&message));
    // The same vector, checked over its bytes in constant time.
    let bytes = hex(SAMPLE_LONG_TERM_REQUEST);
    assert!(key.verifies_datagram(&bytes));
    assert!(!wrong.verifies_datagram(&bytes));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1; // inside the MAC
    assert!(!key.verifies_datagram(&flipped));
    assert!(message.get_attribute::<Fingerprint>().is_none());
}

#[test]
fn a_flipped_bit_fails_the_fingerprint() {
    let mut bytes = hex(SAMPLE_REQUEST);
    bytes[30] ^= 0x01; // inside SOFTWARE
    assert!(matches!(
        stun::decode(&bytes),
        Err(stun::DecodeError::Broken { .. })
    ));
}

#[test]
fn sealed_messages_verify_with_their_key_only() {
    let key = LongTermKey::new("1700000000:alice", "vpnsim", "password").expect("key");
    let mut request = stun::Message::new(
        MessageClass::Request,
        methods::ALLOCATE,
        stun::TransactionId::new([7; 12]),
    );
    request.add_attribute(key.username.clone());
    let bytes = stun::seal(request, Some(&key)).expect("seal");
    let decoded = stun::decode(&bytes).expect("decode");
    assert!(key.verifies(&decoded));
    let other = LongTermKey::new("1700000000:alice", "vpnsim", "other").expect("key");
    assert!(!other.verifies(&decoded));
}
