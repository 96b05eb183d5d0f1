//! Port reservations (RFC 8656 §7.2): an Allocate with EVEN-PORT's R bit set gets an even port
//! N, and N+1 is kept for [`RESERVATION_LIFETIME`] for a later Allocate that carries the
//! RESERVATION-TOKEN of the first one's success response (an RTP allocation and its RTCP
//! neighbour). A reservation is server-wide, not tied to a 5-tuple, so the second Allocate may
//! come from anywhere; it must come from the username that made the reservation, so a token
//! seen or guessed by someone else is worth nothing.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::allocation::Families;

/// How long a reserved port is kept: the 30 s RFC 8656 asks for at least.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// One reserved port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// What RESERVATION-TOKEN carries.
    pub token: u64,
    /// The families of the allocation that made it, which the allocation on this port relays.
    pub families: Families,
    /// The username of the allocation that made it: only that username may use it.
    pub username: String,
    /// The port of the allocation that made it (N, for this reservation's N+1).
    pub made_by: u16,
    /// Kept until then (exclusive).
    pub expires_at: Instant,
}

impl Reservation {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// Why a RESERVATION-TOKEN is refused (508 either way: the reserved address is not available).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No reservation holds the token, or it expired.
    Unknown,
    /// The reservation belongs to another username.
    OtherUsername,
}

/// The reserved ports, by port.
#[derive(Debug, Default)]
pub struct Reservations {
    by_port: BTreeMap<u16, Reservation>,
}

impl Reservations {
    /// Reservations held, expired ones not yet forgotten included.
    pub fn len(&self) -> usize {
        self.by_port.len()
    }

    /// Whether `port` is reserved: no other allocation may take it.
    pub fn holds(&self, port: u16) -> bool {
        self.by_port.contains_key(&port)
    }

    /// Whether a reservation holds `token`.
    pub fn has_token(&self, token: u64) -> bool {
        self.by_port
            .values()
            .any(|reservation| reservation.token == token)
    }

    pub fn insert(&mut self, port: u16, reservation: Reservation) {
        self.by_port.insert(port, reservation);
    }

    /// The port and families `token` reserved for `username`, if the reservation lives at
    /// `now`. Nothing changes: [`Reservations::take`] removes it once the allocation is made.
    pub fn find(
        &self,
        token: u64,
        username: &str,
        now: Instant,
    ) -> Result<(u16, Families), TokenRefusal> {
        let (&port, reservation) = self
            .by_port
            .iter()
            .find(|(_, reservation)| reservation.token == token && reservation.is_live(now))
            .ok_or(TokenRefusal::Unknown)?;
        if reservation.username != username {
            return Err(TokenRefusal::OtherUsername);
        }
        Ok((port, reservation.families))
    }

    /// Removes the reservation of `port` (its allocation now exists).
    pub fn take(&mut self, port: u16) -> Option<Reservation> {
        self.by_port.remove(&port)
    }

    /// Removes the reservations the allocation on `port` made (it was never announced).
    pub fn cancel_made_by(&mut self, port: u16) {
        self.by_port
            .retain(|_, reservation| reservation.made_by != port);
    }

    /// Forgets the reservations that expired at or before `now`.
    pub fn forget_expired(&mut self, now: Instant) {
        self.by_port
            .retain(|_, reservation| reservation.is_live(now));
    }

    /// The earliest expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_port
            .values()
            .map(|reservation| reservation.expires_at)
            .min()
    }
}
