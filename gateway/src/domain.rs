//! DNS resource name patterns: an exact name, `*.suffix` (exactly one more label) or
//! `**.suffix` (one or more labels). Names compare case-insensitively, without a trailing dot.

use std::fmt;
use std::str::FromStr;

/// A DNS resource's name pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DomainPattern {
    /// Exactly this name.
    Exact(String),
    /// `*.suffix`: the suffix with exactly one label in front.
    OneLabel(String),
    /// `**.suffix`: the suffix with one or more labels in front (not the suffix itself).
    AnyDepth(String),
}

/// A name or pattern is not a valid DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid domain {0:?}: expected dot-separated labels of 1-63 letters, digits, '-' or '_' \
     (at most 253 characters), optionally starting with '*.' or '**.'"
)]
pub struct DomainError(pub String);

/// Lowercases and checks a DNS name (a trailing dot is removed).
pub fn normalize(name: &str) -> Result<String, DomainError> {
    let err = || DomainError(name.to_owned());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(err());
    }
    for label in trimmed.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(err());
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

impl DomainPattern {
    /// Whether a normalised `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            DomainPattern::Exact(exact) => name == exact,
            DomainPattern::OneLabel(suffix) => match strip_label_suffix(name, suffix) {
                Some(front) => !front.contains('.'),
                None => false,
            },
            DomainPattern::AnyDepth(suffix) => strip_label_suffix(name, suffix).is_some(),
        }
    }

    /// Specificity rank for choosing between matching resources: exact (2) over `*.` (1) over
    /// `**.` (0); then the longer suffix.
    pub(crate) fn specificity(&self) -> (u8, usize) {
        match self {
            DomainPattern::Exact(s) => (2, s.len()),
            DomainPattern::OneLabel(s) => (1, s.len()),
            DomainPattern::AnyDepth(s) => (0, s.len()),
        }
    }
}

/// `name` minus `.suffix`, if `name` is at least one label longer than `suffix`.
fn strip_label_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let front = name.strip_suffix(suffix)?.strip_suffix('.')?;
    (!front.is_empty()).then_some(front)
}

impl FromStr for DomainPattern {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wrap = |e: DomainError| DomainError(format!("{s} ({})", e.0));
        if let Some(rest) = s.strip_prefix("**.") {
            Ok(DomainPattern::AnyDepth(normalize(rest).map_err(wrap)?))
        } else if let Some(rest) = s.strip_prefix("*.") {
            Ok(DomainPattern::OneLabel(normalize(rest).map_err(wrap)?))
        } else {
            Ok(DomainPattern::Exact(normalize(s)?))
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(s) => f.write_str(s),
            DomainPattern::OneLabel(s) => write!(f, "*.{s}"),
            DomainPattern::AnyDepth(s) => write!(f, "**.{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DomainPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_is_case_insensitive_and_ignores_trailing_dot() {
        let pat = p("App.Example.com.");
        assert!(pat.matches(&normalize("app.example.COM").unwrap()));
        assert!(!pat.matches("x.app.example.com"));
    }

    #[test]
    fn one_label_wildcard_matches_exactly_one_label() {
        let pat = p("*.example.com");
        assert!(pat.matches("a.example.com"));
        assert!(!pat.matches("example.com"));
        assert!(!pat.matches("a.b.example.com"));
        assert!(!pat.matches("aexample.com"));
    }

    #[test]
    fn any_depth_wildcard_matches_one_or_more_labels() {
        let pat = p("**.example.com");
        assert!(pat.matches("a.example.com"));
        assert!(pat.matches("a.b.c.example.com"));
        assert!(!pat.matches("example.com"));
        assert!(!pat.matches("badexample.com"));
    }

    #[test]
    fn invalid_names_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "*.",
            "**.",
            "a b.com",
            "x.*.com",
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<DomainPattern>().is_err(), "{bad:?}");
        }
    }
}
