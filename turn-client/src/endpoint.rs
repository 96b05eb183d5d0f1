//! Path selection for one tunnel endpoint (a client or a gateway): which remote addresses are
//! reached directly and which through this endpoint's own TURN allocation, and the unwrapping of
//! what arrives through it.
//!
//! The endpoint owns no socket: [`Endpoint::send`] says which address to send which bytes to,
//! and [`Endpoint::receive`] turns a datagram into the tunnel payload and the outer addresses it
//! travelled between (for a relayed datagram: the peer and this endpoint's relayed address).

use std::{borrow::Cow, collections::BTreeSet, net::SocketAddr, time::Instant};

use crate::{ClientError, TurnClient, TurnTransmit};

/// Where a datagram arrived from and at, as the tunnel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival<'p> {
    /// The remote end: the sender's address, or for relayed data the peer the relay names.
    pub remote: SocketAddr,
    /// Our end: our socket, or our relayed address for data that came through our relay.
    pub local: SocketAddr,
    pub payload: Cow<'p, [u8]>,
}

#[derive(Debug)]
pub struct Endpoint {
    /// Our own socket address (what peers reach directly).
    socket: SocketAddr,
    turn: Option<TurnClient>,
    /// Remote addresses we reach through our relay (a channel is bound to each).
    via_relay: BTreeSet<SocketAddr>,
}

impl Endpoint {
    pub fn new(socket: SocketAddr, turn: Option<TurnClient>) -> Self {
        Self {
            socket,
            turn,
            via_relay: BTreeSet::new(),
        }
    }

    pub fn socket(&self) -> SocketAddr {
        self.socket
    }

    /// Our socket moved (roaming); allocations stay with the old one at the relay.
    pub fn set_socket(&mut self, socket: SocketAddr) {
        self.socket = socket;
    }

    pub fn turn(&self) -> Option<&TurnClient> {
        self.turn.as_ref()
    }

    pub fn turn_mut(&mut self) -> Option<&mut TurnClient> {
        self.turn.as_mut()
    }

    /// Reach `remote` through our relay from now on (binding a channel to it), or directly.
    pub fn route_via_relay(
        &mut self,
        remote: SocketAddr,
        via_relay: bool,
        now: Instant,
    ) -> Result<(), ClientError> {
        if !via_relay {
            self.via_relay.remove(&remote);
            return Ok(());
        }
        let turn = self.turn.as_mut().ok_or(ClientError::NotAllocated)?;
        turn.bind_channel(remote, now)?;
        self.via_relay.insert(remote);
        Ok(())
    }

    /// The datagram that carries `payload` to `remote`: directly, or as ChannelData to our
    /// relay.
    pub fn send(
        &mut self,
        remote: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<TurnTransmit, ClientError> {
        if self.via_relay.contains(&remote) {
            let turn = self.turn.as_mut().ok_or(ClientError::NotAllocated)?;
            return turn.send_to(remote, payload, now);
        }
        Ok(TurnTransmit {
            dst: remote,
            payload: payload.to_vec(),
        })
    }

    /// Takes a datagram from `from`. TURN control traffic from our relay is consumed (`None`);
    /// relayed data and direct datagrams come back as an [`Arrival`].
    pub fn receive<'p>(
        &mut self,
        from: SocketAddr,
        payload: &'p [u8],
        now: Instant,
    ) -> Result<Option<Arrival<'p>>, ClientError> {
        if let Some(turn) = self.turn.as_mut()
            && from == turn.server()
        {
            let Some(data) = turn.handle_input(from, payload, now)? else {
                return Ok(None);
            };
            let local = turn.relayed_address_for(data.peer).unwrap_or(self.socket);
            return Ok(Some(Arrival {
                remote: data.peer,
                local,
                payload: data.data,
            }));
        }
        Ok(Some(Arrival {
            remote: from,
            local: self.socket,
            payload: Cow::Borrowed(payload),
        }))
    }
}
