//! Attacks on a relay: what an `attack` step's attacker host does (docs/harness.md,
//! "Attacks"). The attacker is a host on no TURN path with credentials of its own (a paying
//! customer gone bad, or a stolen account). Each attack is a fixed exchange of rounds: the
//! attacker sends every request of a round, waits a round trip, and builds the next round from
//! the answers (a nonce from a challenge, a relayed address from a success). The model predicts
//! every answer from the kind and the relay settings (`crate::settings`); the simulator
//! records what came back.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::plan::{ATTACKER_V4, ATTACKER_V6};

/// What an attack tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    /// An Allocate with no credentials at all: challenged (401).
    NoCredentials,
    /// After the challenge, an Allocate signed with a wrong password (401).
    WrongPassword,
    /// After the challenge, an Allocate signed with a REST username that expired, under the
    /// right password for it (401).
    ExpiredUsername,
    /// After the challenge, an Allocate with the right credentials and a nonce whose tag was
    /// changed (438).
    ForgedNonce,
    /// A nonce the relay issued to one 5-tuple, used from another (438).
    SniffedNonce,
    /// A CreatePermission signed for one peer, with a second peer appended after
    /// MESSAGE-INTEGRITY; the appended peer (the attacker's own second port) then sends to the
    /// allocation and must get nothing through.
    SmuggledPeer,
    /// A permission for a loopback peer and a channel to a link-local one (403 each).
    DeniedPeer,
    /// CreatePermissions of [`PERMISSION_FLOOD_BATCH`] peers each, until one would pass the
    /// allocation's cap (508 for that one), then one more peer, which still fits.
    PermissionFlood,
    /// A channel rebound to another peer, and a bound peer bound to another channel (400 each).
    ChannelHijack,
    /// One more Allocate than the username's quota, from as many ports (486 for the last).
    AllocationFlood,
    /// From the 5-tuple of an allocation (the attacker's own: from the relay's side the same as
    /// a victim's 5-tuple spoofed), a CreatePermission and a deleting Refresh signed with another
    /// user's valid credentials (a stolen account, [`crate::settings::STOLEN_ID`]): 441 each,
    /// and the allocation is untouched (its owner's delete succeeds).
    ForeignCredentials,
}

/// Peers per CreatePermission of a [`AttackKind::PermissionFlood`]: a request stays inside
/// one 1500-byte frame in either family, as a real attacker's must unless it sends IP
/// fragments.
pub const PERMISSION_FLOOD_BATCH: usize = 50;

/// How many CreatePermissions a flood sends against a cap of `max_permissions`: the last one
/// is the first that would pass it.
pub fn permission_flood_batches(max_permissions: usize) -> usize {
    max_permissions / PERMISSION_FLOOD_BATCH + 1
}
/// The attacker's first source port; an attack uses consecutive ports from here.
pub const ATTACKER_PORT: u16 = 41000;

impl AttackKind {
    pub const ALL: [AttackKind; 11] = [
        AttackKind::NoCredentials,
        AttackKind::WrongPassword,
        AttackKind::ExpiredUsername,
        AttackKind::ForgedNonce,
        AttackKind::SniffedNonce,
        AttackKind::SmuggledPeer,
        AttackKind::DeniedPeer,
        AttackKind::PermissionFlood,
        AttackKind::ChannelHijack,
        AttackKind::AllocationFlood,
        AttackKind::ForeignCredentials,
    ];

    /// The kind as the scenario file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttackKind::NoCredentials => "no-credentials",
            AttackKind::WrongPassword => "wrong-password",
            AttackKind::ExpiredUsername => "expired-username",
            AttackKind::ForgedNonce => "forged-nonce",
            AttackKind::SniffedNonce => "sniffed-nonce",
            AttackKind::SmuggledPeer => "smuggled-peer",
            AttackKind::DeniedPeer => "denied-peer",
            AttackKind::PermissionFlood => "permission-flood",
            AttackKind::ChannelHijack => "channel-hijack",
            AttackKind::AllocationFlood => "allocation-flood",
            AttackKind::ForeignCredentials => "foreign-credentials",
        }
    }

    /// How many rounds the exchange has.
    pub fn rounds(self) -> usize {
        match self {
            AttackKind::NoCredentials => 1,
            AttackKind::WrongPassword
            | AttackKind::ExpiredUsername
            | AttackKind::ForgedNonce
            | AttackKind::SniffedNonce => 2,
            AttackKind::AllocationFlood => 3,
            AttackKind::SmuggledPeer
            | AttackKind::DeniedPeer
            | AttackKind::PermissionFlood
            | AttackKind::ForeignCredentials => 5,
            AttackKind::ChannelHijack => 6,
        }
    }

    /// How long one round lasts: a round trip at the default latency `latency_ms`, and a
    /// millisecond each way for the hosts' turns.
    pub fn round_ms(latency_ms: u32) -> u64 {
        2 * u64::from(latency_ms) + 2
    }
}

/// What an attack on a gateway sends it: one datagram, about client `client`'s session to the
/// gateway's outer socket, or a forged DNS answer to the gateway's DNS socket (the port its
/// last query left from). It comes from the attacker's own address, or (`dns-wrong-id`,
/// `dns-wrong-name`, `dns-wrong-port`) spoofed from the DNS server's. A gateway answers
/// nothing; what counts is that it drops the datagram and which counter rises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayAttackKind {
    /// A frame of the client's session whose MAC was made without the key (bad-mac).
    ForgedMac,
    /// A frame of a session nobody has (unknown-session).
    UnknownSession,
    /// A frame the gateway sent the client, sent back to it (bad-mac: the MAC is bound to the
    /// direction). The attacker seals it as the gateway would: what an on-path attacker
    /// captures.
    ReflectedFrame,
    /// The last frame of the client's session the gateway took, sent again from the
    /// attacker's address (replay).
    ReplayedFrame,
    /// The last frame of the client's session the gateway took, spoofed from the address the
    /// client last left (its current one if it never roamed): replay, and the client's outer
    /// context stays where it is.
    ReplayFromFormerAddress,
    /// An answer to the gateway's last DNS query, spoofed from the server, with an id the
    /// gateway never used (dns-unexpected-answer).
    DnsWrongId,
    /// Spoofed from the server, with the last query's id but another name
    /// (dns-unexpected-answer).
    DnsWrongName,
    /// Spoofed from the server, right id and name, to a DNS port the query did not leave
    /// from: an off-path guess of the id alone (dns-unexpected-answer).
    DnsWrongPort,
    /// Right id, name and port, from the attacker's own address (dns-unexpected-answer).
    DnsWrongSource,
}

impl GatewayAttackKind {
    /// Whether it is a forged DNS answer (to a DNS socket, not the tunnel's).
    pub fn is_dns(self) -> bool {
        matches!(
            self,
            GatewayAttackKind::DnsWrongId
                | GatewayAttackKind::DnsWrongName
                | GatewayAttackKind::DnsWrongPort
                | GatewayAttackKind::DnsWrongSource
        )
    }

    pub const ALL: [GatewayAttackKind; 9] = [
        GatewayAttackKind::ForgedMac,
        GatewayAttackKind::UnknownSession,
        GatewayAttackKind::ReflectedFrame,
        GatewayAttackKind::ReplayedFrame,
        GatewayAttackKind::ReplayFromFormerAddress,
        GatewayAttackKind::DnsWrongId,
        GatewayAttackKind::DnsWrongName,
        GatewayAttackKind::DnsWrongPort,
        GatewayAttackKind::DnsWrongSource,
    ];

    /// The kind as the scenario file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayAttackKind::ForgedMac => "forged-mac",
            GatewayAttackKind::UnknownSession => "unknown-session",
            GatewayAttackKind::ReflectedFrame => "reflected-frame",
            GatewayAttackKind::ReplayedFrame => "replayed-frame",
            GatewayAttackKind::ReplayFromFormerAddress => "replay-from-former-address",
            GatewayAttackKind::DnsWrongId => "dns-wrong-id",
            GatewayAttackKind::DnsWrongName => "dns-wrong-name",
            GatewayAttackKind::DnsWrongPort => "dns-wrong-port",
            GatewayAttackKind::DnsWrongSource => "dns-wrong-source",
        }
    }
}

/// When a `dns-wrong-*` attack of step `k` stops waiting for a DNS query of the gateway to
/// race and forges against the gateway's last query instead: 200 ms before the step after
/// the next one starts (or the run ends), so that a query the next step causes, or a refresh
/// during it, is raced, and the round still ends before the gateway could shut down.
pub fn dns_race_deadline(timeline: &crate::timing::Timeline, k: usize) -> u64 {
    let start = timeline
        .step_start
        .get(k)
        .copied()
        .unwrap_or(timeline.t_end);
    timeline.next_start(k + 1).saturating_sub(200).max(start)
}

/// A session id no client of a scenario has.
pub const UNKNOWN_SESSION: u32 = 0x5eed_dead;

/// The attacker's address in the family of `other`, at port `ATTACKER_PORT + offset`.
pub fn attacker(other: IpAddr, offset: u16) -> SocketAddr {
    let ip = match other {
        IpAddr::V4(_) => IpAddr::V4(ATTACKER_V4),
        IpAddr::V6(_) => IpAddr::V6(ATTACKER_V6),
    };
    SocketAddr::new(ip, ATTACKER_PORT + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_attack_fits_a_step_at_the_generated_latencies() {
        for kind in AttackKind::ALL {
            let yaml = serde_yaml_ng::to_string(&kind).expect("prints");
            assert_eq!(yaml.trim(), kind.as_str());
            let needed = kind.rounds() as u64 * AttackKind::round_ms(80);
            assert!(needed < crate::timing::STEP_MS, "{kind:?}: {needed} ms");
        }
    }
}
