//! Checking fills against configured bounds, for the systems' `occupancy` reports.

/// Each `(what, held, bound)` whose `held` is over its `bound`, in words; empty when every
/// bound holds.
pub fn breaches<'a>(fills: impl IntoIterator<Item = (&'a str, usize, usize)>) -> Vec<String> {
    fills
        .into_iter()
        .filter(|(_, held, bound)| held > bound)
        .map(|(what, held, bound)| format!("{held} {what}, over the bound of {bound}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_fills_over_their_bound_are_breaches() {
        let found = super::breaches([("a", 3, 3), ("b", 4, 3), ("c", 0, 0)]);
        assert_eq!(found, vec!["4 b, over the bound of 3".to_owned()]);
    }
}
