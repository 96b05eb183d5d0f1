//! The relay tests' support: the shared in-process world (`relay_test_support`) and a
//! hand-driven client for the error cases.
#![allow(dead_code)]

use std::net::SocketAddr;

use proto::{credentials, stun};
pub use relay_test_support::*;

/// A hand-driven client that sends exactly the requests a test writes, for error cases that a
/// well-behaved `TurnClient` never produces.
pub struct RawClient {
    pub addr: SocketAddr,
    pub server: SocketAddr,
    pub credentials: credentials::Credentials,
    /// Realm and nonce from the last challenge.
    pub challenge: Option<(String, String)>,
    next_id: u8,
}

impl RawClient {
    pub fn new(addr: SocketAddr, server: SocketAddr) -> Self {
        Self::with_credentials(
            addr,
            server,
            credentials::rest_api_credentials(
                SECRET,
                START_UNIX + CREDENTIALS_VALID_FOR_SECS,
                "raw",
            ),
        )
    }

    pub fn with_credentials(
        addr: SocketAddr,
        server: SocketAddr,
        credentials: credentials::Credentials,
    ) -> Self {
        Self {
            addr,
            server,
            credentials,
            challenge: None,
            next_id: 1,
        }
    }

    /// Sends a request and returns the relay's answer (None if it sent none).
    pub fn request(
        &mut self,
        world: &mut World,
        method: stun::Method,
        attributes: Vec<stun::Attribute>,
        sign: bool,
    ) -> Option<stun::Message> {
        let id = stun::TransactionId::new([self.next_id; 12]);
        self.next_id += 1;
        let bytes = self.encode(id, method, attributes, sign);
        self.send_raw(world, &bytes, id)
    }

    pub fn encode(
        &self,
        id: stun::TransactionId,
        method: stun::Method,
        attributes: Vec<stun::Attribute>,
        sign: bool,
    ) -> Vec<u8> {
        let mut message = stun::Message::new(stun::MessageClass::Request, method, id);
        for attribute in attributes {
            message.add_attribute(attribute);
        }
        let key = match (&self.challenge, sign) {
            (Some((realm, nonce)), true) => {
                let key = stun::LongTermKey::new(
                    &self.credentials.username,
                    realm,
                    &self.credentials.password,
                )
                .expect("key");
                message.add_attribute(key.username.clone());
                message.add_attribute(key.realm.clone());
                message.add_attribute(stun::Nonce::new(nonce.clone()).expect("nonce"));
                Some(key)
            }
            _ => None,
        };
        stun::seal(message, key.as_ref()).expect("encode")
    }

    /// Sends prepared bytes and returns the answer to transaction `id`.
    pub fn send_raw(
        &mut self,
        world: &mut World,
        bytes: &[u8],
        id: stun::TransactionId,
    ) -> Option<stun::Message> {
        let sent_before = world.wire.len();
        let _ = world.send_to_relay(self.addr, self.server, bytes);
        let answer = world.wire[sent_before..]
            .iter()
            .filter(|wire| wire.dst == self.addr)
            .filter_map(|wire| stun::decode(&wire.payload).ok())
            .find(|message| message.transaction_id() == id)?;
        if let (Some(realm), Some(nonce)) = (
            answer.get_attribute::<stun::Realm>(),
            answer.get_attribute::<stun::Nonce>(),
        ) {
            self.challenge = Some((realm.text().to_owned(), nonce.value().to_owned()));
        }
        Some(answer)
    }

    /// Gets a realm and nonce (a 401 to an unauthenticated Refresh).
    pub fn get_challenge(&mut self, world: &mut World) {
        let answer = self
            .request(world, stun::methods::REFRESH, vec![], false)
            .expect("a 401 challenge");
        assert_eq!(stun::error_code(&answer), Some(401));
    }

    /// A signed Allocate for UDP with extra attributes; returns the answer.
    pub fn allocate(&mut self, world: &mut World, extra: Vec<stun::Attribute>) -> stun::Message {
        let mut attributes = vec![stun::RequestedTransport::new(stun::TRANSPORT_UDP).into()];
        attributes.extend(extra);
        self.request(world, stun::methods::ALLOCATE, attributes, true)
            .expect("an answer")
    }
}

impl RawClient {
    /// A signed ChannelBind; returns the error code (0 for success).
    pub fn channel_bind(&mut self, world: &mut World, number: u16, peer: SocketAddr) -> u16 {
        let attributes = vec![
            stun::ChannelNumber::new(number)
                .expect("channel in range")
                .into(),
            stun::XorPeerAddress::new(peer).into(),
        ];
        let answer = self.request(world, stun::methods::CHANNEL_BIND, attributes, true);
        code_of(&answer.expect("an answer"))
    }

    /// A signed CreatePermission for `peers`; returns the error code (0 for success).
    pub fn create_permission(&mut self, world: &mut World, peers: &[SocketAddr]) -> u16 {
        let attributes = peers
            .iter()
            .map(|&peer| stun::XorPeerAddress::new(peer).into())
            .collect();
        let answer = self.request(world, stun::methods::CREATE_PERMISSION, attributes, true);
        code_of(&answer.expect("an answer"))
    }
}

/// The error code of an answer, or 0 for a success.
pub fn code_of(answer: &stun::Message) -> u16 {
    stun::error_code(answer).unwrap_or(0)
}
