//! How full the relay's bounded tables are, so that a host or a test can check after any call
//! that every configured bound holds (and a metrics endpoint can export them).

use std::collections::BTreeMap;

use crate::{Relay, RelayConfig};

/// The fill of every table the relay bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub allocations: usize,
    /// The most allocations one username holds (bound: `allocation_quota`).
    pub most_allocations_of_one_user: usize,
    /// The most permissions one allocation stores, expired ones not yet forgotten included
    /// (bound: `max_permissions`).
    pub most_permissions: usize,
    /// The most channels one allocation stores, cooling-down ones included (bound:
    /// `max_channels`).
    pub most_channels: usize,
    /// Ports reserved for a RESERVATION-TOKEN, expired ones not yet forgotten included (bound:
    /// `max_reservations`).
    pub reservations: usize,
}

impl Occupancy {
    /// Every bound of `config` this occupancy is over, in words (empty when all hold).
    pub fn breaches(&self, config: &RelayConfig) -> Vec<String> {
        proto::bounds::breaches([
            (
                "allocations of one username",
                self.most_allocations_of_one_user,
                config.allocation_quota,
            ),
            (
                "permissions on one allocation",
                self.most_permissions,
                config.max_permissions,
            ),
            (
                "channels on one allocation",
                self.most_channels,
                config.max_channels,
            ),
            (
                "port reservations",
                self.reservations,
                config.max_reservations,
            ),
        ])
    }
}

impl Relay {
    /// How full the relay's bounded tables are.
    pub fn occupancy(&self) -> Occupancy {
        let mut by_user: BTreeMap<&str, usize> = BTreeMap::new();
        let mut occupancy = Occupancy {
            allocations: self.allocations.len(),
            reservations: self.reservations.len(),
            ..Occupancy::default()
        };
        for allocation in self.allocations.values() {
            *by_user.entry(allocation.key.username.name()).or_default() += 1;
            occupancy.most_permissions = occupancy
                .most_permissions
                .max(allocation.stored_permissions());
            occupancy.most_channels = occupancy.most_channels.max(allocation.stored_channels());
        }
        occupancy.most_allocations_of_one_user = by_user.values().copied().max().unwrap_or(0);
        occupancy
    }
}
