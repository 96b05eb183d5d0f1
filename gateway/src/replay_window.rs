//! The anti-replay sliding window for tunnel counters (as in IPsec, RFC 4303 §3.4.3, and
//! WireGuard): the highest counter accepted so far and a bitmap of the [`WINDOW`] counters at
//! and below it. A counter is fresh if it is above the highest, or inside the window and not
//! yet seen.

/// How many counters, ending at the highest seen, the window remembers.
pub const WINDOW: u64 = 128;

/// Sliding replay window. Checking and committing are separate so a frame that is dropped for
/// another reason after the check leaves the window unchanged.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayWindow {
    /// `None` until the first counter is committed.
    highest: Option<u64>,
    /// Bit `i` set = counter `highest - i` was seen.
    seen: u128,
}

/// Why a counter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayError {
    /// The counter was already accepted.
    Duplicate,
    /// The counter is below the window.
    TooOld,
}

impl ReplayWindow {
    /// Whether `counter` would be accepted. Changes nothing.
    pub(crate) fn check(&self, counter: u64) -> Result<(), ReplayError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if counter > highest {
            return Ok(());
        }
        let age = highest - counter;
        if age >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        if self.seen & (1u128 << age) != 0 {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    /// Records `counter` as seen (call only after [`ReplayWindow::check`] accepted it).
    #[inline]
    pub(crate) fn commit(&mut self, counter: u64) {
        match self.highest {
            None => {
                self.highest = Some(counter);
                self.seen = 1;
            }
            Some(highest) if counter > highest => {
                let shift = counter - highest;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(counter);
            }
            Some(highest) => {
                let age = highest - counter;
                if age < WINDOW {
                    self.seen |= 1u128 << age;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, c: u64) -> Result<(), ReplayError> {
        w.check(c)?;
        w.commit(c);
        Ok(())
    }

    #[test]
    fn in_order_and_reordered_counters_pass_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(accept(&mut w, 5), Ok(()));
        assert_eq!(accept(&mut w, 5), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, 3), Ok(()));
        assert_eq!(accept(&mut w, 3), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, 6), Ok(()));
        assert_eq!(accept(&mut w, 4), Ok(()));
    }

    #[test]
    fn window_edge_is_exact() {
        let mut w = ReplayWindow::default();
        accept(&mut w, 1000).unwrap();
        assert_eq!(w.check(1000 - WINDOW + 1), Ok(()));
        assert_eq!(w.check(1000 - WINDOW), Err(ReplayError::TooOld));
        // A jump larger than the window forgets everything below.
        accept(&mut w, 1000 + 2 * WINDOW).unwrap();
        assert_eq!(w.check(1000), Err(ReplayError::TooOld));
        assert_eq!(w.check(1000 + WINDOW + 1), Ok(()));
    }

    #[test]
    fn check_alone_changes_nothing() {
        let mut w = ReplayWindow::default();
        accept(&mut w, 7).unwrap();
        w.check(9).unwrap();
        w.check(9).unwrap();
        assert_eq!(accept(&mut w, 9), Ok(()));
    }

    #[test]
    fn counter_zero_and_max_are_ordinary() {
        let mut w = ReplayWindow::default();
        assert_eq!(accept(&mut w, 0), Ok(()));
        assert_eq!(accept(&mut w, 0), Err(ReplayError::Duplicate));
        assert_eq!(accept(&mut w, u64::MAX), Ok(()));
        assert_eq!(accept(&mut w, u64::MAX), Err(ReplayError::Duplicate));
    }
}
