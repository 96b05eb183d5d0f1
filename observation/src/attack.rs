//! What an attack got back (an `attack` step's, `scenario_format::attack`): per round, the
//! answer to each of the attacker's datagrams. A relay answers (or relays); a gateway answers
//! nothing, so its answer is what it did with the datagram.

use std::fmt;

use proto::{
    flow::DropReason as GatewayDropReason,
    stun::{self, MessageClass, methods},
};
use serde::Serialize;

/// What came back to (or became of) one datagram of the attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackAnswer {
    /// A success response: the relay did what was asked.
    Success,
    /// An error response with this code.
    Error(u16),
    /// A Data indication: the relay relayed something to the attacker.
    DataIndication,
    /// Nothing (for data, which gets no answer).
    Nothing,
    /// Anything else.
    Other,
    /// A gateway dropped it, counting this reason.
    GatewayDropped(GatewayDropReason),
    /// A gateway took it: a forgery accepted.
    GatewayAccepted,
}

impl AttackAnswer {
    /// What `datagram`, sent by a relay, is.
    pub fn of(datagram: &[u8]) -> Self {
        let Ok(message) = stun::decode(datagram) else {
            return AttackAnswer::Other;
        };
        match message.class() {
            MessageClass::SuccessResponse => AttackAnswer::Success,
            MessageClass::ErrorResponse => {
                stun::error_code(&message).map_or(AttackAnswer::Other, AttackAnswer::Error)
            }
            MessageClass::Indication if message.method() == methods::DATA => {
                AttackAnswer::DataIndication
            }
            _ => AttackAnswer::Other,
        }
    }
}

impl fmt::Display for AttackAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttackAnswer::Success => f.write_str("success"),
            AttackAnswer::Error(code) => write!(f, "{code}"),
            AttackAnswer::DataIndication => f.write_str("data-indication"),
            AttackAnswer::Nothing => f.write_str("nothing"),
            AttackAnswer::Other => f.write_str("other"),
            AttackAnswer::GatewayDropped(reason) => write!(f, "dropped {reason}"),
            AttackAnswer::GatewayAccepted => f.write_str("accepted"),
        }
    }
}

/// One attack and its answers, round by round (each round's in the order of its datagrams).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AttackOutcome {
    pub step: usize,
    /// The target: `relay <name>` or `gateway <name>`.
    pub target: String,
    /// The attack kind as the scenario writes it.
    pub kind: String,
    pub rounds: Vec<Vec<AttackAnswer>>,
}

impl fmt::Display for AttackOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {} on {}:", self.step, self.kind, self.target)?;
        for (index, round) in self.rounds.iter().enumerate() {
            let answers: Vec<String> = round.iter().map(ToString::to_string).collect();
            write!(f, " round {} [{}]", index + 1, answers.join(", "))?;
        }
        Ok(())
    }
}
