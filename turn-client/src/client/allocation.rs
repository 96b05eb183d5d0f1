//! The allocation: Allocate (answered with the relayed addresses and the client's mapped
//! address), its refresh before it expires, its release (Refresh with LIFETIME 0), and what the
//! relay's answers do to it. Without an allocation there are no permissions or channels:
//! forgetting it forgets them too.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use proto::stun::{self, Message, XorMappedAddress};

use super::transactions::Request;
use super::{ALLOCATION_REFRESH_MARGIN, ClientEvent, TurnClient};

/// The relay's allocation lifetime when its answer names none (RFC 8656 default, 600 s).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AllocationState {
    Idle,
    Allocating,
    Allocated {
        relayed: Vec<SocketAddr>,
        expires_at: Instant,
    },
    Failed,
}

impl TurnClient {
    /// Starts allocating (no-op while allocating or allocated).
    pub fn allocate(&mut self, now: Instant) {
        if matches!(
            self.allocation,
            AllocationState::Allocating | AllocationState::Allocated { .. }
        ) {
            return;
        }
        self.allocation = AllocationState::Allocating;
        self.send_request(Request::Allocate, now);
    }

    /// The relayed addresses, once allocated.
    pub fn relayed_addresses(&self) -> &[SocketAddr] {
        match &self.allocation {
            AllocationState::Allocated { relayed, .. } => relayed,
            _ => &[],
        }
    }

    /// The relayed address of `peer`'s family, the address the peer sees data come from.
    pub fn relayed_address_for(&self, peer: SocketAddr) -> Option<SocketAddr> {
        self.relayed_addresses()
            .iter()
            .copied()
            .find(|relayed| relayed.is_ipv4() == peer.is_ipv4())
    }

    /// The client's address as the relay saw it (XOR-MAPPED-ADDRESS).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped
    }

    pub fn is_allocated(&self) -> bool {
        matches!(self.allocation, AllocationState::Allocated { .. })
    }

    /// Frees the allocation (Refresh with LIFETIME 0) and forgets every binding.
    pub fn release(&mut self, now: Instant) {
        if self.is_allocated() {
            self.send_request(
                Request::Refresh {
                    lifetime: Some(Duration::ZERO),
                },
                now,
            );
        }
        self.forget_allocation();
    }

    /// Refreshes the allocation when it expires within [`ALLOCATION_REFRESH_MARGIN`], unless
    /// a refresh is under way.
    pub(super) fn refresh_allocation_if_due(&mut self, now: Instant) {
        if let AllocationState::Allocated { expires_at, .. } = &self.allocation
            && now + ALLOCATION_REFRESH_MARGIN >= *expires_at
            && !self.has_pending(|request| matches!(request, Request::Refresh { .. }))
        {
            self.send_request(
                Request::Refresh {
                    lifetime: self.config.lifetime,
                },
                now,
            );
        }
    }

    /// The relay allocated: its relayed addresses and our mapped address are recorded, and the
    /// permission and channel requests made before the allocation existed go out.
    pub(super) fn allocation_succeeded(
        &mut self,
        response: &Message,
        lifetime: Option<Duration>,
        now: Instant,
    ) {
        let relayed: Vec<SocketAddr> = response
            .attributes()
            .filter_map(|attribute| match attribute {
                stun::Attribute::XorRelayAddress(address) => Some(address.address()),
                _ => None,
            })
            .collect();
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
        self.mapped = response
            .get_attribute::<XorMappedAddress>()
            .map(XorMappedAddress::address);
        self.allocation = AllocationState::Allocated {
            relayed: relayed.clone(),
            expires_at: now + lifetime,
        };
        self.events.push_back(ClientEvent::Allocated {
            relayed,
            mapped: self.mapped,
            lifetime,
        });
        self.send_waiting_requests(now);
    }

    /// A refresh (other than the release) succeeded: the allocation lasts `lifetime` more.
    pub(super) fn allocation_refreshed(&mut self, lifetime: Option<Duration>, now: Instant) {
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
        if let AllocationState::Allocated { expires_at, .. } = &mut self.allocation {
            *expires_at = now + lifetime;
        }
        self.events
            .push_back(ClientEvent::AllocationRefreshed { lifetime });
    }

    /// The relay refused the allocation (`code`), or stopped answering (`None`).
    pub(super) fn allocation_failed(&mut self, code: Option<u16>) {
        self.allocation = AllocationState::Failed;
        self.events
            .push_back(ClientEvent::AllocationFailed { code });
    }

    /// A refresh (other than the release) failed: the allocation is gone.
    pub(super) fn allocation_lost(&mut self) {
        self.forget_allocation();
        self.events.push_back(ClientEvent::AllocationLost);
    }

    fn forget_allocation(&mut self) {
        self.allocation = AllocationState::Idle;
        self.permissions.clear();
        self.channels.clear();
        self.peer_by_channel.clear();
        self.pending
            .retain(|_, pending| matches!(pending.request, Request::Refresh { .. }));
    }
}
