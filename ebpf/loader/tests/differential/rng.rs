//! The test's random numbers: a seeded SplitMix64 and the draws made from it.

use proto::rng::SplitMix64;

pub(crate) struct Rng(pub(crate) SplitMix64);

impl Rng {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }

    /// `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub(crate) fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    pub(crate) fn bool(&mut self) -> bool {
        self.0.next_u64() & 1 == 1
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.0.fill(&mut out);
        out
    }

    /// An index into `weights`, chosen with those weights.
    pub(crate) fn weighted(&mut self, weights: &[usize]) -> usize {
        let mut pick = self.below(weights.iter().sum());
        for (index, &weight) in weights.iter().enumerate() {
            if pick < weight {
                return index;
            }
            pick -= weight;
        }
        weights.len() - 1
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }

    /// Mostly small, sometimes up to a full 1500-byte MTU, rarely up to ~3,300 bytes (the
    /// largest linear frame BPF_PROG_TEST_RUN takes is about 3,500).
    pub(crate) fn data_len(&mut self) -> usize {
        match self.weighted(&[70, 20, 8, 2]) {
            0 => self.range(0, 64),
            1 => self.range(65, 600),
            2 => self.range(601, 1400),
            _ => self.range(1401, 3300),
        }
    }
}
