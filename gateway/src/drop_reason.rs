//! Why the gateway dropped something: one counter per reason. The reasons themselves are
//! vocabulary (`proto::flow::DropReason`), shared with the model that predicts them.

pub use proto::flow::DropReason;

/// A counter per [`DropReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl Default for DropCounters {
    fn default() -> Self {
        Self([0; DropReason::ALL.len()])
    }
}

impl DropCounters {
    /// Counts one drop. Only `Gateway::record_drop` calls this, which also reports the drop.
    pub(crate) fn bump(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// How many drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Every reason with its count, in declaration order (zeros included).
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    /// Total drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_reason() {
        let mut c = DropCounters::default();
        c.bump(DropReason::BadMac);
        c.bump(DropReason::BadMac);
        c.bump(DropReason::ShutDown);
        assert_eq!(c.get(DropReason::BadMac), 2);
        assert_eq!(c.get(DropReason::ShutDown), 1);
        assert_eq!(c.get(DropReason::Replay), 0);
        assert_eq!(c.total(), 3);
        assert_eq!(c.iter().count(), DropReason::ALL.len());
    }
}
