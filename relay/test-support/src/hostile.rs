//! Raw TURN requests as an attacker writes them: unsigned, signed with any credentials and any
//! nonce, with attributes appended after MESSAGE-INTEGRITY; and what an answer says. The relay's
//! tests and the simulator's attacker host build their requests here.

use std::net::SocketAddr;

use proto::{
    credentials::Credentials,
    stun::{
        self, AddressFamily, Attribute, ChannelNumber, Lifetime, LongTermKey, Message,
        MessageClass, Method, Nonce, Realm, RequestedAddressFamily, RequestedTransport,
        TransactionId, Username, XorPeerAddress, XorRelayAddress, methods,
    },
};

pub use observation::AttackAnswer as Answer;

/// The NONCE and REALM of a challenge (401 or 438).
pub fn challenge_of(datagram: &[u8]) -> Option<(String, String)> {
    let message = stun::decode(datagram).ok()?;
    let nonce = message.get_attribute::<Nonce>()?.value().to_owned();
    let realm = message.get_attribute::<Realm>()?.text().to_owned();
    Some((nonce, realm))
}

/// The XOR-RELAYED-ADDRESS of an Allocate's success response (the first, if dual-stack).
pub fn relayed_address_of(datagram: &[u8]) -> Option<SocketAddr> {
    let message = stun::decode(datagram).ok()?;
    message
        .get_attribute::<XorRelayAddress>()
        .map(XorRelayAddress::address)
}

/// A request of `method` with a transaction id made from `id`.
pub fn request(method: Method, id: u64) -> Message {
    let mut transaction = [0u8; 12];
    transaction[4..].copy_from_slice(&id.to_be_bytes());
    Message::new(
        MessageClass::Request,
        method,
        TransactionId::new(transaction),
    )
}

/// An Allocate for a UDP relayed address of the family of `ipv6`.
pub fn allocate(id: u64, ipv6: bool) -> Message {
    let mut message = request(methods::ALLOCATE, id);
    message.add_attribute(RequestedTransport::new(stun::TRANSPORT_UDP));
    if ipv6 {
        message.add_attribute(RequestedAddressFamily::new(AddressFamily::V6));
    }
    message
}

/// A CreatePermission for every peer of `peers`.
pub fn create_permission(id: u64, peers: &[SocketAddr]) -> Message {
    let mut message = request(methods::CREATE_PERMISSION, id);
    for peer in peers {
        message.add_attribute(XorPeerAddress::new(*peer));
    }
    message
}

/// A ChannelBind of `number` to `peer`.
pub fn channel_bind(id: u64, number: u16, peer: SocketAddr) -> Message {
    let mut message = request(methods::CHANNEL_BIND, id);
    if let Ok(number) = ChannelNumber::new(number) {
        message.add_attribute(number);
    }
    message.add_attribute(XorPeerAddress::new(peer));
    message
}

/// A Refresh with LIFETIME 0: deletes the allocation.
pub fn delete(id: u64) -> Message {
    let mut message = request(methods::REFRESH, id);
    if let Ok(zero) = Lifetime::new(std::time::Duration::ZERO) {
        message.add_attribute(zero);
    }
    message
}

/// The request encoded with FINGERPRINT and no credentials.
pub fn unsigned(message: Message) -> Vec<u8> {
    stun::seal(message, None).unwrap_or_default()
}

/// The request with USERNAME, REALM and NONCE, signed with `credentials`' password.
pub fn signed(message: Message, credentials: &Credentials, realm: &str, nonce: &str) -> Vec<u8> {
    let mut message = message;
    let (Ok(username), Ok(realm), Ok(nonce)) = (
        Username::new(credentials.username.clone()),
        Realm::new(realm.to_owned()),
        Nonce::new(nonce.to_owned()),
    ) else {
        return Vec::new();
    };
    let key = LongTermKey {
        username: username.clone(),
        realm: realm.clone(),
        password: credentials.password.clone(),
    };
    message.add_attribute(username);
    message.add_attribute(realm);
    message.add_attribute(nonce);
    stun::seal(message, Some(&key)).unwrap_or_default()
}

/// `signed` with `extra`'s attributes appended after its MESSAGE-INTEGRITY and FINGERPRINT.
pub fn with_appended(signed: &[u8], extra: impl IntoIterator<Item = Attribute>) -> Vec<u8> {
    let mut carrier = request(methods::BINDING, 0);
    for attribute in extra {
        carrier.add_attribute(attribute);
    }
    stun::append_attributes(signed, carrier).unwrap_or_default()
}

/// `nonce` with its last character changed: the relay's own format, a tag that does not match.
pub fn forged(nonce: &str) -> String {
    let mut bytes = nonce.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last = if *last == b'0' { b'1' } else { b'0' };
    }
    String::from_utf8(bytes).unwrap_or_default()
}
