//! Requests and their transactions: a request is built (with the long-term credentials once the
//! relay has challenged us), sent, and retransmitted on the RFC 8489 schedule until it is
//! answered or given up on. A response is matched to its request; a 401 challenge (or a 438
//! with a fresh nonce) is answered by sending the request again with the credentials, and any
//! other outcome is handed to the allocation or the bindings it concerns.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use proto::stun::{
    self, AdditionalAddressFamily, AddressFamily, ChannelNumber, Lifetime, LongTermKey, Message,
    MessageClass, Method, Nonce, Realm, RequestedAddressFamily, RequestedTransport, TransactionId,
    Username, XorPeerAddress, codes, methods,
};

use super::{ClientError, Families, TurnClient, TurnTransmit};

/// RFC 8489 §6.2.1: initial RTO 500 ms, doubled each time, 7 transmissions, then 16 RTOs.
const INITIAL_RTO: Duration = Duration::from_millis(500);
const MAX_TRANSMISSIONS: u32 = 7;
const FINAL_WAIT_RTOS: u32 = 16;

/// How long a transaction waits after its `transmissions`-th transmission: the RTO, doubled at
/// each retransmission, and 16 initial RTOs after the last before it gives up.
fn wait_after(transmissions: u32) -> Duration {
    if transmissions >= MAX_TRANSMISSIONS {
        INITIAL_RTO * FINAL_WAIT_RTOS
    } else {
        INITIAL_RTO * (1 << (transmissions - 1))
    }
}

/// How many instants [`transaction_schedule`] gives.
pub const TRANSACTION_INSTANTS: usize = MAX_TRANSMISSIONS as usize;

/// When a request's transaction acts, counted from its first transmission: its six
/// retransmissions, then the give-up (the request fails). For tools that aim traffic at these
/// instants.
pub fn transaction_schedule() -> [Duration; TRANSACTION_INSTANTS] {
    let mut schedule = [Duration::ZERO; TRANSACTION_INSTANTS];
    let mut at = Duration::ZERO;
    for (transmissions, slot) in (1..).zip(schedule.iter_mut()) {
        at += wait_after(transmissions);
        *slot = at;
    }
    schedule
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    Allocate,
    Refresh { lifetime: Option<Duration> },
    CreatePermission { peers: Vec<IpAddr> },
    ChannelBind { number: u16, peer: SocketAddr },
}

#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) request: Request,
    payload: Vec<u8>,
    transmissions: u32,
    pub(super) next_retransmit: Instant,
    /// A 438 answer was retried once with the fresh nonce.
    retried_stale_nonce: bool,
}

impl TurnClient {
    /// Retransmits the requests whose retransmission is due, and gives up on those that got
    /// no answer.
    pub(super) fn retransmit_due(&mut self, now: Instant) {
        let due: Vec<TransactionId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.next_retransmit <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            if pending.transmissions >= MAX_TRANSMISSIONS {
                let pending = self.pending.remove(&id).map(|pending| pending.request);
                if let Some(request) = pending {
                    self.request_failed(request, None);
                }
                continue;
            }
            pending.transmissions += 1;
            pending.next_retransmit = now + wait_after(pending.transmissions);
            self.transmits.push_back(TurnTransmit {
                dst: self.config.server,
                payload: pending.payload.clone(),
            });
        }
    }

    pub(super) fn has_pending(&self, matches: impl Fn(&Request) -> bool) -> bool {
        self.pending
            .values()
            .any(|pending| matches(&pending.request))
    }

    fn method_of(request: &Request) -> Method {
        match request {
            Request::Allocate => methods::ALLOCATE,
            Request::Refresh { .. } => methods::REFRESH,
            Request::CreatePermission { .. } => methods::CREATE_PERMISSION,
            Request::ChannelBind { .. } => methods::CHANNEL_BIND,
        }
    }

    fn build(&mut self, request: &Request) -> (TransactionId, Vec<u8>) {
        let id = stun::transaction_id(&mut self.rng);
        let mut message = Message::new(MessageClass::Request, Self::method_of(request), id);
        match request {
            Request::Allocate => {
                message.add_attribute(RequestedTransport::new(stun::TRANSPORT_UDP));
                match self.config.families {
                    Families::V4 => {}
                    Families::V6 => {
                        message.add_attribute(RequestedAddressFamily::new(AddressFamily::V6));
                    }
                    Families::Dual => {
                        message.add_attribute(AdditionalAddressFamily::new(AddressFamily::V6));
                    }
                }
                if let Some(lifetime) = self.config.lifetime.and_then(|l| Lifetime::new(l).ok()) {
                    message.add_attribute(lifetime);
                }
            }
            Request::Refresh { lifetime } => {
                if let Some(lifetime) = lifetime.and_then(|l| Lifetime::new(l).ok()) {
                    message.add_attribute(lifetime);
                }
            }
            Request::CreatePermission { peers } => {
                for peer in peers {
                    message.add_attribute(XorPeerAddress::new(SocketAddr::new(*peer, 0)));
                }
            }
            Request::ChannelBind { number, peer } => {
                if let Ok(number) = ChannelNumber::new(*number) {
                    message.add_attribute(number);
                }
                message.add_attribute(XorPeerAddress::new(*peer));
            }
        }
        let key = self.key.as_ref().map(|(key, nonce)| {
            message.add_attribute(key.username.clone());
            message.add_attribute(key.realm.clone());
            message.add_attribute(nonce.clone());
            key
        });
        let payload = stun::seal(message, key).unwrap_or_default();
        (id, payload)
    }

    pub(super) fn send_request(&mut self, request: Request, now: Instant) {
        // Requests other than Allocate wait for the allocation; they are sent when it succeeds.
        if !matches!(request, Request::Allocate) && !self.is_allocated() {
            return;
        }
        self.set_in_flight(&request, true);
        self.transmit_request(request, now, false);
    }

    /// Builds, sends and remembers a request, to retransmit it until it is answered.
    fn transmit_request(&mut self, request: Request, now: Instant, retried_stale_nonce: bool) {
        let (id, payload) = self.build(&request);
        self.transmits.push_back(TurnTransmit {
            dst: self.config.server,
            payload: payload.clone(),
        });
        self.pending.insert(
            id,
            Pending {
                request,
                payload,
                transmissions: 1,
                next_retransmit: now + wait_after(1),
                retried_stale_nonce,
            },
        );
    }

    /// Marks the permissions or channel a request refreshes as (not) waiting for an answer.
    fn set_in_flight(&mut self, request: &Request, in_flight: bool) {
        match request {
            Request::CreatePermission { peers } => {
                for peer in peers {
                    if let Some(state) = self.permissions.get_mut(peer) {
                        state.in_flight = in_flight;
                    }
                }
            }
            Request::ChannelBind { peer, .. } => {
                if let Some((_, state)) = self.channels.get_mut(peer) {
                    state.in_flight = in_flight;
                }
            }
            Request::Allocate | Request::Refresh { .. } => {}
        }
    }

    pub(super) fn handle_response(
        &mut self,
        response: Message,
        now: Instant,
    ) -> Result<(), ClientError> {
        let id = response.transaction_id();
        if !self.pending.contains_key(&id) {
            return Err(ClientError::UnexpectedResponse);
        }
        if response.class() == MessageClass::SuccessResponse {
            let authentic = self
                .key
                .as_ref()
                .is_some_and(|(key, _)| key.verifies(&response));
            if !authentic {
                return Err(ClientError::BadIntegrity);
            }
        }
        let Some(pending) = self.pending.remove(&id) else {
            return Err(ClientError::UnexpectedResponse);
        };
        if response.class() == MessageClass::ErrorResponse {
            let code = stun::error_code(&response);
            let challenge = matches!(code, Some(codes::UNAUTHORIZED) if self.key.is_none())
                || (code == Some(codes::STALE_NONCE) && !pending.retried_stale_nonce);
            if challenge && self.learn_challenge(&response) {
                let stale = code == Some(codes::STALE_NONCE);
                self.transmit_request(pending.request, now, stale);
                return Ok(());
            }
            self.request_failed(pending.request, code);
            return Ok(());
        }
        self.request_succeeded(pending.request, &response, now);
        Ok(())
    }

    /// Takes realm and nonce from a 401/438; false if they are missing.
    fn learn_challenge(&mut self, response: &Message) -> bool {
        let (Some(realm), Some(nonce)) = (
            response.get_attribute::<Realm>(),
            response.get_attribute::<Nonce>(),
        ) else {
            return false;
        };
        let Ok(username) = Username::new(self.config.credentials.username.clone()) else {
            return false;
        };
        let key = LongTermKey {
            username,
            realm: realm.clone(),
            password: self.config.credentials.password.clone(),
        };
        self.key = Some((key, nonce.clone()));
        true
    }

    fn request_succeeded(&mut self, request: Request, response: &Message, now: Instant) {
        let lifetime = response.get_attribute::<Lifetime>().map(Lifetime::lifetime);
        match request {
            Request::Allocate => self.allocation_succeeded(response, lifetime, now),
            Request::Refresh {
                lifetime: Some(zero),
            } if zero.is_zero() => {}
            Request::Refresh { .. } => self.allocation_refreshed(lifetime, now),
            Request::CreatePermission { peers } => self.permissions_created(peers, now),
            Request::ChannelBind { number, peer } => self.channel_bound(number, peer, now),
        }
    }

    fn request_failed(&mut self, request: Request, code: Option<u16>) {
        match request {
            Request::Allocate => self.allocation_failed(code),
            Request::Refresh {
                lifetime: Some(zero),
            } if zero.is_zero() => {}
            Request::Refresh { .. } => self.allocation_lost(),
            Request::CreatePermission { peers } => self.permissions_refused(peers),
            Request::ChannelBind { number, peer } => self.channel_failed(number, peer, code),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proto::credentials::Credentials;

    use super::transaction_schedule;
    use crate::{ClientEvent, Families, TurnClient, TurnClientConfig};

    /// A request nobody answers is sent again at each instant of the schedule but the last,
    /// and fails at the last.
    #[test]
    fn an_unanswered_request_follows_the_published_schedule() {
        let mut client = TurnClient::new(TurnClientConfig {
            server: "192.0.2.1:3478".parse().unwrap(),
            credentials: Credentials {
                username: "alice".to_owned(),
                password: "secret".to_owned(),
            },
            families: Families::V4,
            lifetime: None,
            seed: 1,
        });
        let start = Instant::now();
        client.allocate(start);
        assert!(client.poll_transmit().is_some(), "the first Allocate");
        assert_eq!(
            client.transaction_deadlines(),
            vec![start + Duration::from_millis(500)]
        );
        let schedule = transaction_schedule();
        let mut sent = Vec::new();
        let mut failed = None;
        while let Some(at) = client.poll_timeout() {
            client.handle_timeout(at);
            while client.poll_transmit().is_some() {
                sent.push(at - start);
            }
            while let Some(event) = client.poll_event() {
                if event == (ClientEvent::AllocationFailed { code: None }) {
                    failed = Some(at - start);
                }
            }
        }
        // RFC 8489 §6.2.1 with an RTO of 500 ms: Rc = 7, Rm = 16.
        let rfc = [500, 1_500, 3_500, 7_500, 15_500, 31_500, 39_500].map(Duration::from_millis);
        assert_eq!(schedule, rfc);
        assert_eq!(sent, schedule[..6]);
        assert_eq!(failed, Some(schedule[6]));
        assert!(client.transaction_deadlines().is_empty());
    }
}
