//! STUN (RFC 8489) and TURN (RFC 8656) messages, through the `stun_codec` crate.
//!
//! `stun_codec` decodes losslessly (attribute padding is kept), verifies FINGERPRINT while
//! decoding, and computes MESSAGE-INTEGRITY over the exact preceding bytes, which is what lets
//! the RFC 5769 test vectors re-encode byte for byte. This module gathers the attributes TURN
//! needs into one attribute set and adds the few helpers every user repeats: decode with a clear
//! error, encode, seal with MESSAGE-INTEGRITY and FINGERPRINT, and build error responses. Its
//! CHANNEL-NUMBER is its own ([`ChannelNumber`]), over RFC 5766's channel range.

use bytecodec::{DecodeExt as _, EncodeExt as _};
/// The codec's attribute trait (`get_type`), for raw attributes the set does not know.
pub use stun_codec::Attribute as AttributeTrait;
pub use stun_codec::{
    MessageClass, Method, TransactionId,
    rfc5389::attributes::{
        AlternateServer, ErrorCode, Fingerprint, MappedAddress, MessageIntegrity, Nonce, Realm,
        Software, UnknownAttributes, Username, XorMappedAddress, XorMappedAddress2,
    },
    rfc5766::attributes::{
        Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken,
        XorPeerAddress, XorRelayAddress,
    },
    rfc8656::attributes::{AdditionalAddressFamily, AddressFamily, RequestedAddressFamily},
};
use stun_codec::{MessageDecoder, MessageEncoder};

mod channel_number;
pub use channel_number::{ChannelNumber, ChannelNumberDecoder, ChannelNumberEncoder};

stun_codec::define_attribute_enums!(
    Attribute,
    AttributeDecoder,
    AttributeEncoder,
    [
        MappedAddress,
        Username,
        MessageIntegrity,
        ErrorCode,
        UnknownAttributes,
        Realm,
        Nonce,
        XorMappedAddress,
        XorMappedAddress2,
        Software,
        AlternateServer,
        Fingerprint,
        ChannelNumber,
        Lifetime,
        XorPeerAddress,
        Data,
        XorRelayAddress,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        RequestedAddressFamily,
        AdditionalAddressFamily
    ]
);

/// A STUN/TURN message with every attribute TURN uses.
pub type Message = stun_codec::Message<Attribute>;

/// STUN and TURN methods.
pub mod methods {
    pub use stun_codec::rfc5389::methods::BINDING;
    pub use stun_codec::rfc5766::methods::{
        ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND,
    };
}

/// The UDP protocol number, the only REQUESTED-TRANSPORT a UDP relay serves.
pub const TRANSPORT_UDP: u8 = 17;

/// Error codes used by TURN, with their RFC reason phrases.
pub mod codes {
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const FORBIDDEN: u16 = 403;
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    pub const ALLOCATION_MISMATCH: u16 = 437;
    pub const STALE_NONCE: u16 = 438;
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    pub const WRONG_CREDENTIALS: u16 = 441;
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    pub const SERVER_ERROR: u16 = 500;
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    pub fn reason_phrase(code: u16) -> &'static str {
        match code {
            BAD_REQUEST => "Bad Request",
            UNAUTHORIZED => "Unauthorized",
            FORBIDDEN => "Forbidden",
            UNKNOWN_ATTRIBUTE => "Unknown Attribute",
            ALLOCATION_MISMATCH => "Allocation Mismatch",
            STALE_NONCE => "Stale Nonce",
            ADDRESS_FAMILY_NOT_SUPPORTED => "Address Family not Supported",
            WRONG_CREDENTIALS => "Wrong Credentials",
            UNSUPPORTED_TRANSPORT_PROTOCOL => "Unsupported Transport Protocol",
            PEER_ADDRESS_FAMILY_MISMATCH => "Peer Address Family Mismatch",
            ALLOCATION_QUOTA_REACHED => "Allocation Quota Reached",
            INSUFFICIENT_CAPACITY => "Insufficient Capacity",
            _ => "Server Error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a STUN message at all (bad header, magic cookie, length).
    #[error("not a STUN message: {0}")]
    NotStun(String),
    /// A STUN header that parsed, with an attribute that did not (or a failed FINGERPRINT).
    /// Requests like this get a 400 response.
    #[error("malformed {class:?} {method:?} message: {reason}")]
    Broken {
        class: MessageClass,
        method: Method,
        transaction_id: TransactionId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode STUN message: {0}")]
pub struct EncodeError(String);

/// Whether the datagram starts like a STUN message (first two bits `00`, magic cookie).
pub fn looks_like_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] >> 6 == 0 && datagram[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

/// Decodes a datagram into a message; FINGERPRINT, when present, is verified.
pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
    if !looks_like_stun(datagram) {
        return Err(DecodeError::NotStun(
            "too short, or no magic cookie".to_owned(),
        ));
    }
    match MessageDecoder::<Attribute>::new().decode_from_bytes(datagram) {
        Ok(Ok(message)) => match integrity_end(datagram) {
            // RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY are ignored, FINGERPRINT
            // aside (already verified above). They are outside what the MAC covers, so an
            // on-path attacker could append them to a signed request.
            Some(end) if !only_fingerprint_follows(&datagram[end..]) => {
                let mut signed = datagram[..end].to_vec();
                let length = u16::try_from(end - HEADER_LEN).unwrap_or(u16::MAX);
                signed[2..4].copy_from_slice(&length.to_be_bytes());
                decode(&signed)
            }
            _ => Ok(message),
        },
        Ok(Err(broken)) => Err(DecodeError::Broken {
            class: broken.class(),
            method: broken.method(),
            transaction_id: broken.transaction_id(),
            reason: broken.error().to_string(),
        }),
        Err(error) => Err(DecodeError::NotStun(error.to_string())),
    }
}

const HEADER_LEN: usize = 20;
const MESSAGE_INTEGRITY_TYPE: u16 = 0x0008;
const FINGERPRINT_TYPE: u16 = 0x8028;

/// The raw attributes of a decoded message: (type, start, end including padding).
fn raw_attributes(datagram: &[u8]) -> impl Iterator<Item = (u16, usize, usize)> + '_ {
    let mut offset = HEADER_LEN;
    std::iter::from_fn(move || {
        let header = datagram.get(offset..offset + 4)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let start = offset;
        offset += 4 + len.div_ceil(4) * 4;
        (offset <= datagram.len()).then_some((kind, start, offset))
    })
}

/// Where the first MESSAGE-INTEGRITY attribute ends, if there is one.
fn integrity_end(datagram: &[u8]) -> Option<usize> {
    raw_attributes(datagram)
        .find(|(kind, _, _)| *kind == MESSAGE_INTEGRITY_TYPE)
        .map(|(_, _, end)| end)
}

/// Whether `rest` (what follows MESSAGE-INTEGRITY) is empty or one FINGERPRINT attribute.
fn only_fingerprint_follows(rest: &[u8]) -> bool {
    rest.is_empty()
        || (rest.len() == 8 && u16::from_be_bytes([rest[0], rest[1]]) == FINGERPRINT_TYPE)
}

/// `datagram` (an encoded message) with the attributes of `extra` appended at its end and the
/// header's length fixed: what an on-path attacker makes of a signed request. For tests and
/// the simulator's attacker; [`decode`] ignores what follows MESSAGE-INTEGRITY.
pub fn append_attributes(datagram: &[u8], extra: Message) -> Result<Vec<u8>, EncodeError> {
    let encoded = encode(extra)?;
    let mut out = datagram.to_vec();
    out.extend_from_slice(encoded.get(HEADER_LEN..).unwrap_or_default());
    let length = u16::try_from(out.len() - HEADER_LEN)
        .map_err(|_| EncodeError("the message grew past 64 KiB".to_owned()))?;
    out[2..4].copy_from_slice(&length.to_be_bytes());
    Ok(out)
}

/// Encodes a message.
pub fn encode(message: Message) -> Result<Vec<u8>, EncodeError> {
    MessageEncoder::new()
        .encode_into_bytes(message)
        .map_err(|error| EncodeError(error.to_string()))
}

/// The long-term credential key material (RFC 8489 §9.2): MESSAGE-INTEGRITY is keyed with
/// MD5(username ":" realm ":" password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongTermKey {
    pub username: Username,
    pub realm: Realm,
    pub password: String,
}

impl LongTermKey {
    pub fn new(username: &str, realm: &str, password: &str) -> Result<Self, EncodeError> {
        Ok(Self {
            username: Username::new(username.to_owned())
                .map_err(|error| EncodeError(error.to_string()))?,
            realm: Realm::new(realm.to_owned()).map_err(|error| EncodeError(error.to_string()))?,
            password: password.to_owned(),
        })
    }

    /// Whether `message` carries a MESSAGE-INTEGRITY that this key produced.
    pub fn verifies(&self, message: &Message) -> bool {
        message
            .get_attribute::<MessageIntegrity>()
            .is_some_and(|integrity| {
                integrity
                    .check_long_term_credential(&self.username, &self.realm, &self.password)
                    .is_ok()
            })
    }
}

impl LongTermKey {
    /// Whether `datagram` carries a MESSAGE-INTEGRITY this key produced, checked over the
    /// received bytes (RFC 8489 §14.5: the header with its length set to end at
    /// MESSAGE-INTEGRITY, and every attribute before it) and compared in constant time, so the
    /// time a refusal takes says nothing about how much of a forged MAC was right.
    pub fn verifies_datagram(&self, datagram: &[u8]) -> bool {
        use hmac::{Hmac, Mac};
        let Some((start, end)) = raw_attributes(datagram)
            .find(|(kind, _, _)| *kind == MESSAGE_INTEGRITY_TYPE)
            .map(|(_, start, end)| (start, end))
        else {
            return false;
        };
        if end - start != 4 + 20 {
            return false;
        }
        let Ok(length) = u16::try_from(end - HEADER_LEN) else {
            return false;
        };
        let key = md5::compute(format!(
            "{}:{}:{}",
            self.username.name(),
            self.realm.text(),
            self.password
        ));
        let Ok(mut mac) = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&key.0) else {
            return false;
        };
        mac.update(&datagram[..2]);
        mac.update(&length.to_be_bytes());
        mac.update(&datagram[4..start]);
        mac.verify_slice(&datagram[start + 4..end]).is_ok()
    }
}

/// Adds MESSAGE-INTEGRITY (when a key is given) and then FINGERPRINT, and encodes.
pub fn seal(mut message: Message, key: Option<&LongTermKey>) -> Result<Vec<u8>, EncodeError> {
    let to_error = |error: bytecodec::Error| EncodeError(error.to_string());
    if let Some(key) = key {
        let integrity = MessageIntegrity::new_long_term_credential(
            &message,
            &key.username,
            &key.realm,
            &key.password,
        )
        .map_err(to_error)?;
        message.add_attribute(integrity);
    }
    let fingerprint = Fingerprint::new(&message).map_err(to_error)?;
    message.add_attribute(fingerprint);
    encode(message)
}

/// An error response to a request with `method` and `transaction_id`.
pub fn error_response(method: Method, transaction_id: TransactionId, code: u16) -> Message {
    let mut response = Message::new(MessageClass::ErrorResponse, method, transaction_id);
    // `ErrorCode::new` only fails for codes outside 300-699; every code here is inside.
    if let Ok(error) = ErrorCode::new(code, codes::reason_phrase(code).to_owned()) {
        response.add_attribute(error);
    }
    response
}

/// The error code of an error response, if it carries one.
pub fn error_code(message: &Message) -> Option<u16> {
    message.get_attribute::<ErrorCode>().map(ErrorCode::code)
}

/// A transaction id drawn from the caller's seeded generator.
pub fn transaction_id(rng: &mut crate::rng::SplitMix64) -> TransactionId {
    let mut id = [0u8; 12];
    rng.fill(&mut id);
    TransactionId::new(id)
}
