//! Attacks on a relay (docs/harness.md, "Attacks"): what the attacker host gets back, round
//! by round, from a relay that holds. Every hostile request is refused with its error code and
//! changes nothing; the requests of the attacker's own allocation succeed; the allocation is
//! deleted at the end, so nothing outlives the step.

use observation::{AttackAnswer, AttackOutcome, GatewayDropReason};
use scenario_format::{
    AttackKind, GatewayAttackKind,
    attack::permission_flood_batches,
    settings::{RELAY_ALLOCATION_QUOTA, RELAY_MAX_PERMISSIONS},
};

use super::{Engine, Result};

const UNAUTHORIZED: AttackAnswer = AttackAnswer::Error(401);
const OK: AttackAnswer = AttackAnswer::Success;

/// The answers to an attack of `kind`, round by round.
pub(crate) fn answers(kind: AttackKind) -> Vec<Vec<AttackAnswer>> {
    use AttackKind as K;
    let one = |answer| vec![answer];
    match kind {
        K::NoCredentials => vec![one(UNAUTHORIZED)],
        // The challenge, then: the password or the username is wrong (401 again).
        K::WrongPassword | K::ExpiredUsername => vec![one(UNAUTHORIZED), one(UNAUTHORIZED)],
        // A nonce the relay did not issue to this 5-tuple is stale (438).
        K::ForgedNonce | K::SniffedNonce => vec![one(UNAUTHORIZED), one(AttackAnswer::Error(438))],
        // The appended peer is ignored: the permission is the signed peer's alone, so the
        // appended peer's data is dropped and nothing reaches the attacker.
        K::SmuggledPeer => vec![
            one(UNAUTHORIZED),
            one(OK),
            one(OK),
            one(AttackAnswer::Nothing),
            one(OK),
        ],
        // Loopback and link-local peers are refused (403).
        K::DeniedPeer => vec![
            one(UNAUTHORIZED),
            one(OK),
            one(AttackAnswer::Error(403)),
            one(AttackAnswer::Error(403)),
            one(OK),
        ],
        // Batches fit until one would pass the cap (508), refused whole; one more peer fits.
        K::PermissionFlood => {
            let batches = permission_flood_batches(RELAY_MAX_PERMISSIONS);
            let mut flood = vec![OK; batches - 1];
            flood.push(AttackAnswer::Error(508));
            vec![one(UNAUTHORIZED), one(OK), flood, one(OK), one(OK)]
        }
        // A bound channel keeps its peer, a bound peer its channel (400 each).
        K::ChannelHijack => vec![
            one(UNAUTHORIZED),
            one(OK),
            one(OK),
            one(AttackAnswer::Error(400)),
            one(AttackAnswer::Error(400)),
            one(OK),
        ],
        // The allocation belongs to the user who made it: another user's valid credentials from
        // its 5-tuple are refused (441) and change nothing; its owner deletes it.
        K::ForeignCredentials => vec![
            one(UNAUTHORIZED),
            one(OK),
            one(AttackAnswer::Error(441)),
            one(AttackAnswer::Error(441)),
            one(OK),
        ],
        // Every port is challenged; the quota's worth of Allocates succeed in the order they
        // arrive and the one past it gets 486; each allocation is deleted.
        K::AllocationFlood => {
            let mut allocations = vec![OK; RELAY_ALLOCATION_QUOTA];
            allocations.push(AttackAnswer::Error(486));
            vec![
                vec![UNAUTHORIZED; RELAY_ALLOCATION_QUOTA + 1],
                allocations,
                vec![OK; RELAY_ALLOCATION_QUOTA],
            ]
        }
    }
}

impl Engine<'_> {
    /// Step `k`: the attacker host attacks `relay`.
    pub(super) fn attack(&mut self, relay: &str, kind: AttackKind, k: usize) -> Result<()> {
        if !self
            .scenario
            .topology
            .relays
            .iter()
            .any(|spec| spec.name == relay)
        {
            return self.fail(format!("no relay {relay}"));
        }
        self.out.attacks.push(AttackOutcome {
            step: k,
            target: format!("relay {relay}"),
            kind: kind.as_str().to_owned(),
            rounds: answers(kind),
        });
        Ok(())
    }

    /// Step `k`: the attacker host sends `gateway` a hostile datagram about `client`'s
    /// session. The gateway drops it before it opens anything, counting the reason; nothing
    /// else changes (the client's replay window and outer context included).
    pub(super) fn gateway_attack(
        &mut self,
        gateway: &str,
        client: &str,
        kind: GatewayAttackKind,
        k: usize,
    ) -> Result<()> {
        let g = self.gateway_index(gateway)?;
        let Some(c) = self
            .scenario
            .topology
            .clients
            .iter()
            .position(|spec| spec.name == client)
        else {
            return self.fail(format!("no client {client}"));
        };
        if kind == GatewayAttackKind::ReplayFromFormerAddress && self.link_faulted(client, gateway)
        {
            // The spoofed datagram leaves from the client's host in the simulation, so the
            // fault would take it, and with it the fault's budget for the client's traffic.
            return self.fail(format!(
                "a datagram spoofed from {client}'s address while its link to {gateway} is faulted"
            ));
        }
        let reason = match kind {
            // Without the key, or under the other direction's key.
            GatewayAttackKind::ForgedMac | GatewayAttackKind::ReflectedFrame => {
                GatewayDropReason::BadMac
            }
            GatewayAttackKind::UnknownSession => GatewayDropReason::UnknownSession,
            // Its counter is in the window already.
            GatewayAttackKind::ReplayedFrame | GatewayAttackKind::ReplayFromFormerAddress
                if self.gateways[g].took_frame_of(c) =>
            {
                GatewayDropReason::Replay
            }
            // However close the forgery, one of id, name, port or source is not the query's.
            GatewayAttackKind::DnsWrongId
            | GatewayAttackKind::DnsWrongName
            | GatewayAttackKind::DnsWrongPort
            | GatewayAttackKind::DnsWrongSource => GatewayDropReason::DnsUnexpectedAnswer,
            GatewayAttackKind::ReplayedFrame | GatewayAttackKind::ReplayFromFormerAddress => {
                return self.fail(format!(
                    "a replay to {gateway} before it took any frame of {client} since it \
                     started (the attacker has none to replay, or one from before a restart)"
                ));
            }
        };
        self.out.attacks.push(AttackOutcome {
            step: k,
            target: format!("gateway {gateway}"),
            kind: kind.as_str().to_owned(),
            rounds: vec![vec![AttackAnswer::GatewayDropped(reason)]],
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_has_an_answer_for_each_of_its_rounds_and_ends_refused() {
        for kind in AttackKind::ALL {
            let rounds = answers(kind);
            assert_eq!(rounds.len(), kind.rounds(), "{kind:?}");
            let refused = rounds
                .iter()
                .flatten()
                .filter(|answer| matches!(answer, AttackAnswer::Error(_) | AttackAnswer::Nothing))
                .count();
            assert!(refused > 0, "{kind:?} is refused somewhere");
        }
    }
}
