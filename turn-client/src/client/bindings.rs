//! Permissions and channel bindings, per peer: asked for (requests made before the allocation
//! exists go out when it succeeds), confirmed or refused by the relay, and refreshed every
//! [`BINDING_REFRESH_INTERVAL`] while the allocation lasts.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use proto::channel_data::CLIENT_CHANNEL_RANGE;

use super::transactions::Request;
use super::{BINDING_REFRESH_INTERVAL, ClientError, ClientEvent, Families, TurnClient};

/// How long a permission lasts once the relay confirms it (a ChannelBind confirms one too).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refreshable {
    /// Confirmed by the relay until then (`None` while the first request is outstanding).
    expires_at: Option<Instant>,
    pub(super) refresh_at: Option<Instant>,
    pub(super) in_flight: bool,
}

impl Refreshable {
    const NEW: Self = Self {
        expires_at: None,
        refresh_at: None,
        in_flight: false,
    };

    /// Confirmed by the relay at `now`: live for [`PERMISSION_LIFETIME`], refreshed after
    /// [`BINDING_REFRESH_INTERVAL`].
    fn confirmed(now: Instant) -> Self {
        Self {
            expires_at: Some(now + PERMISSION_LIFETIME),
            refresh_at: Some(now + BINDING_REFRESH_INTERVAL),
            in_flight: false,
        }
    }

    pub(super) fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|expires_at| now < expires_at)
    }
}

impl TurnClient {
    /// Asks for (and then keeps alive) a permission for `peer`.
    pub fn create_permission(&mut self, peer: IpAddr, now: Instant) -> Result<(), ClientError> {
        self.check_family(SocketAddr::new(peer, 0))?;
        if self.permissions.contains_key(&peer) {
            return Ok(());
        }
        self.permissions.insert(peer, Refreshable::NEW);
        self.send_request(Request::CreatePermission { peers: vec![peer] }, now);
        Ok(())
    }

    /// Binds a channel to `peer` (and keeps it alive), returning its number. Binding an already
    /// bound peer returns its number.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<u16, ClientError> {
        self.check_family(peer)?;
        if let Some((number, _)) = self.channels.get(&peer) {
            return Ok(*number);
        }
        let number = CLIENT_CHANNEL_RANGE
            .clone()
            .find(|number| !self.peer_by_channel.contains_key(number))
            .ok_or(ClientError::NoChannelNumber)?;
        self.channels.insert(peer, (number, Refreshable::NEW));
        self.peer_by_channel.insert(number, peer);
        self.send_request(Request::ChannelBind { number, peer }, now);
        Ok(number)
    }

    /// The bound channel of `peer`, if the relay confirmed it and it is alive.
    pub fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|(_, state)| state.is_live(now))
            .map(|(number, _)| *number)
    }

    /// Every channel the relay confirmed and that is alive at `now`, as (peer, number).
    pub fn live_channels(&self, now: Instant) -> Vec<(SocketAddr, u16)> {
        self.channels
            .iter()
            .filter(|(_, (_, state))| state.is_live(now))
            .map(|(peer, (number, _))| (*peer, *number))
            .collect()
    }

    fn check_family(&self, peer: SocketAddr) -> Result<(), ClientError> {
        let ok = match self.config.families {
            Families::V4 => peer.is_ipv4(),
            Families::V6 => peer.is_ipv6(),
            Families::Dual => true,
        };
        if ok {
            Ok(())
        } else {
            Err(ClientError::FamilyMismatch(peer))
        }
    }

    /// Refreshes the permissions and channels whose refresh is due and not under way.
    pub(super) fn refresh_bindings_due(&mut self, now: Instant) {
        self.send_binding_requests(now, |state| state.refresh_at.is_some_and(|at| at <= now));
    }

    /// Sends the permission and channel requests made before the allocation existed.
    pub(super) fn send_waiting_requests(&mut self, now: Instant) {
        self.send_binding_requests(now, |state| state.expires_at.is_none());
    }

    /// Sends one CreatePermission for every permission, and one ChannelBind per channel, that
    /// is not waiting for an answer and satisfies `needs_request`.
    fn send_binding_requests(
        &mut self,
        now: Instant,
        needs_request: impl Fn(&Refreshable) -> bool,
    ) {
        let permissions: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, state)| !state.in_flight && needs_request(state))
            .map(|(peer, _)| *peer)
            .collect();
        if !permissions.is_empty() {
            self.send_request(Request::CreatePermission { peers: permissions }, now);
        }
        let channels: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, (_, state))| !state.in_flight && needs_request(state))
            .map(|(peer, (number, _))| (*peer, *number))
            .collect();
        for (peer, number) in channels {
            self.send_request(Request::ChannelBind { number, peer }, now);
        }
    }

    /// The relay confirmed the permissions for `peers` (reported the first time).
    pub(super) fn permissions_created(&mut self, peers: Vec<IpAddr>, now: Instant) {
        for peer in peers {
            if let Some(state) = self.permissions.get_mut(&peer) {
                let first = state.expires_at.is_none();
                *state = Refreshable::confirmed(now);
                if first {
                    self.events
                        .push_back(ClientEvent::PermissionCreated { peer });
                }
            }
        }
    }

    /// The relay refused the permissions for `peers`, or stopped answering: they are dropped.
    pub(super) fn permissions_refused(&mut self, peers: Vec<IpAddr>) {
        for peer in peers {
            self.permissions.remove(&peer);
        }
    }

    /// The relay confirmed channel `number` for `peer` (reported the first time).
    pub(super) fn channel_bound(&mut self, number: u16, peer: SocketAddr, now: Instant) {
        if let Some((bound, state)) = self.channels.get_mut(&peer)
            && *bound == number
        {
            let first = state.expires_at.is_none();
            // The ChannelBind also refreshed the permission (300 s), which is what
            // data needs; the binding itself would last 600 s.
            *state = Refreshable::confirmed(now);
            if first {
                self.events.push_back(ClientEvent::ChannelBound {
                    peer,
                    channel: number,
                });
            }
        }
    }

    /// A ChannelBind (new or refresh) failed: the channel is no longer used.
    pub(super) fn channel_failed(&mut self, number: u16, peer: SocketAddr, code: Option<u16>) {
        self.channels.remove(&peer);
        self.peer_by_channel.remove(&number);
        self.events.push_back(ClientEvent::ChannelFailed {
            peer,
            channel: number,
            code,
        });
    }
}
