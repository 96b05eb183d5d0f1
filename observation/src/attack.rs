//! What an attack on a relay got back (an `attack` step's, `scenario_format::attack`): per
//! round, the answer to each of the attacker's datagrams.

use std::fmt;

use proto::stun::{self, MessageClass, methods};
use serde::Serialize;

/// What came back to one datagram of the attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TurnAnswer {
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
}

impl TurnAnswer {
    /// What `datagram`, sent by a relay, is.
    pub fn of(datagram: &[u8]) -> Self {
        let Ok(message) = stun::decode(datagram) else {
            return TurnAnswer::Other;
        };
        match message.class() {
            MessageClass::SuccessResponse => TurnAnswer::Success,
            MessageClass::ErrorResponse => {
                stun::error_code(&message).map_or(TurnAnswer::Other, TurnAnswer::Error)
            }
            MessageClass::Indication if message.method() == methods::DATA => {
                TurnAnswer::DataIndication
            }
            _ => TurnAnswer::Other,
        }
    }
}

impl fmt::Display for TurnAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TurnAnswer::Success => f.write_str("success"),
            TurnAnswer::Error(code) => write!(f, "{code}"),
            TurnAnswer::DataIndication => f.write_str("data-indication"),
            TurnAnswer::Nothing => f.write_str("nothing"),
            TurnAnswer::Other => f.write_str("other"),
        }
    }
}

/// One attack and its answers, round by round (each round's in the order of its datagrams).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AttackOutcome {
    pub step: usize,
    /// The relay's index in `topology.relays`.
    pub relay: u32,
    /// The attack kind as the scenario writes it.
    pub kind: String,
    pub rounds: Vec<Vec<TurnAnswer>>,
}

impl fmt::Display for AttackOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {}: {} on relay {}:",
            self.step, self.kind, self.relay
        )?;
        for (index, round) in self.rounds.iter().enumerate() {
            let answers: Vec<String> = round.iter().map(ToString::to_string).collect();
            write!(f, " round {} [{}]", index + 1, answers.join(", "))?;
        }
        Ok(())
    }
}
