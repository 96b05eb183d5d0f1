//! Data to and from peers through the relay: ChannelData on a live channel, Send and Data
//! indications otherwise. A datagram from the relay that is not data is a response, for the
//! transactions.

use std::{borrow::Cow, net::SocketAddr, time::Instant};

use proto::{
    channel_data::{self, ChannelData},
    stun::{self, Data, Message, MessageClass, XorPeerAddress, methods},
};

use super::{ClientError, PeerData, TurnClient, TurnTransmit};

impl TurnClient {
    /// Wraps `data` for `peer`: ChannelData on a live channel, otherwise a Send indication if
    /// the peer has a live permission.
    pub fn send_to(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<TurnTransmit, ClientError> {
        if !self.is_allocated() {
            return Err(ClientError::NotAllocated);
        }
        if let Some(channel) = self.channel_of(peer, now) {
            return Ok(TurnTransmit {
                dst: self.config.server,
                payload: ChannelData { channel, data }.to_vec(),
            });
        }
        let permitted = self
            .permissions
            .get(&peer.ip())
            .is_some_and(|state| state.is_live(now))
            || self
                .channels
                .get(&peer)
                .is_some_and(|(_, state)| state.is_live(now));
        if !permitted {
            return Err(ClientError::NoPathToPeer(peer));
        }
        let mut indication = Message::new(
            MessageClass::Indication,
            methods::SEND,
            stun::transaction_id(&mut self.rng),
        );
        indication.add_attribute(XorPeerAddress::new(peer));
        let data = Data::new(data.to_vec()).map_err(|_| ClientError::Malformed)?;
        indication.add_attribute(data);
        let payload = stun::encode(indication).map_err(|_| ClientError::Malformed)?;
        Ok(TurnTransmit {
            dst: self.config.server,
            payload,
        })
    }

    /// Takes a datagram from the relay: a response (handled here) or data from a peer.
    pub fn handle_input<'p>(
        &mut self,
        from: SocketAddr,
        payload: &'p [u8],
        now: Instant,
    ) -> Result<Option<PeerData<'p>>, ClientError> {
        if from != self.config.server {
            return Err(ClientError::NotFromRelay(from));
        }
        if channel_data::looks_like_channel_data(payload) {
            let message = ChannelData::parse(payload).map_err(|_| ClientError::Malformed)?;
            let peer = *self
                .peer_by_channel
                .get(&message.channel)
                .ok_or(ClientError::UnknownChannel(message.channel))?;
            return Ok(Some(PeerData {
                peer,
                data: Cow::Borrowed(message.data),
            }));
        }
        let message = stun::decode(payload).map_err(|_| ClientError::Malformed)?;
        match message.class() {
            MessageClass::Indication if message.method() == methods::DATA => {
                let (Some(peer), Some(data)) = (
                    message.get_attribute::<XorPeerAddress>(),
                    message.get_attribute::<Data>(),
                ) else {
                    return Err(ClientError::Malformed);
                };
                Ok(Some(PeerData {
                    peer: peer.address(),
                    data: Cow::Owned(data.data().to_vec()),
                }))
            }
            MessageClass::SuccessResponse | MessageClass::ErrorResponse => {
                self.handle_response(message, now)?;
                Ok(None)
            }
            _ => Err(ClientError::Malformed),
        }
    }
}
