//! Attacks on a relay (docs/harness.md, "Attacks"): what the attacker host gets back, round
//! by round, from a relay that holds. Every hostile request is refused with its error code and
//! changes nothing; the requests of the attacker's own allocation succeed; the allocation is
//! deleted at the end, so nothing outlives the step.

use observation::{AttackOutcome, TurnAnswer};
use scenario_format::{
    AttackKind,
    attack::permission_flood_batches,
    settings::{RELAY_ALLOCATION_QUOTA, RELAY_MAX_PERMISSIONS},
};

use super::{Engine, Result};

const UNAUTHORIZED: TurnAnswer = TurnAnswer::Error(401);
const OK: TurnAnswer = TurnAnswer::Success;

/// The answers to an attack of `kind`, round by round.
pub(crate) fn answers(kind: AttackKind) -> Vec<Vec<TurnAnswer>> {
    use AttackKind as K;
    let one = |answer| vec![answer];
    match kind {
        K::NoCredentials => vec![one(UNAUTHORIZED)],
        // The challenge, then: the password or the username is wrong (401 again).
        K::WrongPassword | K::ExpiredUsername => vec![one(UNAUTHORIZED), one(UNAUTHORIZED)],
        // A nonce the relay did not issue to this 5-tuple is stale (438).
        K::ForgedNonce | K::SniffedNonce => vec![one(UNAUTHORIZED), one(TurnAnswer::Error(438))],
        // The appended peer is ignored: the permission is the signed peer's alone, so the
        // appended peer's data is dropped and nothing reaches the attacker.
        K::SmuggledPeer => vec![
            one(UNAUTHORIZED),
            one(OK),
            one(OK),
            one(TurnAnswer::Nothing),
            one(OK),
        ],
        // Loopback and link-local peers are refused (403).
        K::DeniedPeer => vec![
            one(UNAUTHORIZED),
            one(OK),
            one(TurnAnswer::Error(403)),
            one(TurnAnswer::Error(403)),
            one(OK),
        ],
        // Batches fit until one would pass the cap (508), refused whole; one more peer fits.
        K::PermissionFlood => {
            let batches = permission_flood_batches(RELAY_MAX_PERMISSIONS);
            let mut flood = vec![OK; batches - 1];
            flood.push(TurnAnswer::Error(508));
            vec![one(UNAUTHORIZED), one(OK), flood, one(OK), one(OK)]
        }
        // A bound channel keeps its peer, a bound peer its channel (400 each).
        K::ChannelHijack => vec![
            one(UNAUTHORIZED),
            one(OK),
            one(OK),
            one(TurnAnswer::Error(400)),
            one(TurnAnswer::Error(400)),
            one(OK),
        ],
        // Every port is challenged; the quota's worth of Allocates succeed in the order they
        // arrive and the one past it gets 486; each allocation is deleted.
        K::AllocationFlood => {
            let mut allocations = vec![OK; RELAY_ALLOCATION_QUOTA];
            allocations.push(TurnAnswer::Error(486));
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
        let Some(r) = self
            .scenario
            .topology
            .relays
            .iter()
            .position(|spec| spec.name == relay)
        else {
            return self.fail(format!("no relay {relay}"));
        };
        self.out.attacks.push(AttackOutcome {
            step: k,
            relay: r as u32,
            kind: kind.as_str().to_owned(),
            rounds: answers(kind),
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
                .filter(|answer| matches!(answer, TurnAnswer::Error(_) | TurnAnswer::Nothing))
                .count();
            assert!(refused > 0, "{kind:?} is refused somewhere");
        }
    }
}
