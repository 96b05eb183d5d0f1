//! Swarm testing (Groce et al., "Swarm Testing", ISSTA 2012): before a case is generated, a
//! profile is drawn from its seed, and the profile shapes the case. Each action kind is left
//! out of some profiles altogether, so that a case can be all TCP, or paths and faults with no
//! idles, or nothing but traffic and timers; a generator that always mixes everything in one
//! proportion never gets deep into any one of them.
//!
//! The profile is not part of proptest's value tree: it comes from the case seed alone, so
//! shrinking keeps it and `replay --case SEED` draws it again.

use std::fmt;

use proto::rng::SplitMix64;

/// The address families of a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    V4,
    V6,
    /// Dual-stack relays; clients and gateways of any stack (cross-family relay paths).
    Mixed,
}

/// What an action can be; a profile weighs each (0 leaves it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActionKind {
    Udp,
    Tcp,
    Path,
    Roam,
    Revoke,
    Grant,
    DnsChange,
    Fault,
    Restart,
    LateResourceData,
    Idle,
    /// Traffic that lands on a gateway timer's deadline (`Action::TimerBoundary`).
    TimerBoundary,
    /// A datagram at a relay that is not TURN (`Action::Stray`).
    Stray,
    /// Traffic that lands on a relay timer's deadline (`Action::RelayTimerBoundary`).
    RelayTimerBoundary,
    /// The attacker host attacks a relay (`Action::Attack`).
    Attack,
}

impl ActionKind {
    pub const ALL: [ActionKind; 15] = [
        ActionKind::Udp,
        ActionKind::Tcp,
        ActionKind::Path,
        ActionKind::Roam,
        ActionKind::Revoke,
        ActionKind::Grant,
        ActionKind::DnsChange,
        ActionKind::Fault,
        ActionKind::Restart,
        ActionKind::LateResourceData,
        ActionKind::Idle,
        ActionKind::TimerBoundary,
        ActionKind::Stray,
        ActionKind::RelayTimerBoundary,
        ActionKind::Attack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Udp => "udp",
            ActionKind::Tcp => "tcp",
            ActionKind::Path => "path",
            ActionKind::Roam => "roam",
            ActionKind::Revoke => "revoke",
            ActionKind::Grant => "grant",
            ActionKind::DnsChange => "dns-change",
            ActionKind::Fault => "fault",
            ActionKind::Restart => "restart",
            ActionKind::LateResourceData => "late-data",
            ActionKind::Idle => "idle",
            ActionKind::TimerBoundary => "timer",
            ActionKind::Stray => "stray",
            ActionKind::RelayTimerBoundary => "relay-timer",
            ActionKind::Attack => "attack",
        }
    }

    /// The weight of a kind when a profile turns it on at the base rate: traffic and paths are
    /// common, control-plane changes rarer.
    fn base_weight(self) -> u32 {
        match self {
            ActionKind::Udp => 6,
            ActionKind::Tcp => 5,
            ActionKind::Path => 4,
            ActionKind::Idle | ActionKind::LateResourceData | ActionKind::TimerBoundary => 3,
            // Sixteen kinds share the attack arm.
            ActionKind::Fault | ActionKind::Attack => 2,
            ActionKind::Roam
            | ActionKind::Revoke
            | ActionKind::Grant
            | ActionKind::DnsChange
            | ActionKind::Restart
            | ActionKind::Stray
            | ActionKind::RelayTimerBoundary => 1,
        }
    }
}

/// How long idles are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdleLengths {
    /// Seconds: nothing expires.
    Short,
    /// Up to the TURN lifetimes and past them.
    Long,
    /// Both.
    Any,
}

/// How often traffic reuses a 5-tuple or a port another action used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reuse {
    Rare,
    Often,
}

/// The profile of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Per [`ActionKind::ALL`]: its weight (0 = left out).
    pub weights: [u32; ActionKind::ALL.len()],
    /// Weights of the fault kinds: partition, hold, drop-next.
    pub faults: [u32; 3],
    pub idles: IdleLengths,
    /// Forced address families, or `None` for the generator's own mix.
    pub families: Option<Families>,
    pub reuse: Reuse,
    /// Most clients, gateways and relays the shape may have.
    pub max_hosts: (usize, usize, usize),
}

impl Profile {
    /// Everything on at its base weight, any families, any idles, up to the most hosts.
    pub fn everything() -> Self {
        Self {
            weights: ActionKind::ALL.map(ActionKind::base_weight),
            faults: [2, 1, 1],
            idles: IdleLengths::Any,
            families: None,
            reuse: Reuse::Rare,
            max_hosts: (3, 2, 3),
        }
    }

    /// The profile of a case, drawn from its seed. One case in four keeps everything on; the
    /// others turn each action kind on with probability 1/2, at one, two or four times its base
    /// weight; at least one kind of traffic is always on, and paths always are (they are what
    /// the relays carry: without them most cases would never leave the direct path).
    pub fn of_case(case_seed: u64) -> Self {
        let mut rng = SplitMix64::new(case_seed ^ 0x5157_4152_4d50_524f);
        let mut pick = |n: u64| rng.next_u64() % n;
        if pick(4) == 0 {
            return Self::everything();
        }
        let mut weights = [0; ActionKind::ALL.len()];
        for (weight, kind) in weights.iter_mut().zip(ActionKind::ALL) {
            if kind == ActionKind::Path || pick(2) == 0 {
                *weight = kind.base_weight() << pick(3);
            }
        }
        if weights[0] == 0 && weights[1] == 0 {
            let traffic = pick(2) as usize;
            weights[traffic] = ActionKind::ALL[traffic].base_weight();
        }
        let mut faults = [0; 3];
        for weight in &mut faults {
            *weight = if pick(2) == 0 { 1 + pick(3) as u32 } else { 0 };
        }
        if faults == [0; 3] {
            faults[pick(3) as usize] = 1;
        }
        let idles = [IdleLengths::Short, IdleLengths::Long, IdleLengths::Any][pick(3) as usize];
        let families = [
            None,
            None,
            Some(Families::V4),
            Some(Families::V6),
            Some(Families::Mixed),
        ][pick(5) as usize];
        let reuse = if pick(2) == 0 {
            Reuse::Rare
        } else {
            Reuse::Often
        };
        let max_hosts = (
            1 + pick(3) as usize,
            1 + pick(2) as usize,
            1 + pick(3) as usize,
        );
        Self {
            weights,
            faults,
            idles,
            families,
            reuse,
            max_hosts,
        }
    }

    pub fn weight(&self, kind: ActionKind) -> u32 {
        ActionKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |index| self.weights[index])
    }

    /// The action kinds this profile turns on.
    pub fn enabled(&self) -> impl Iterator<Item = ActionKind> + '_ {
        ActionKind::ALL
            .into_iter()
            .filter(|kind| self.weight(*kind) > 0)
    }

    /// The families part of the label.
    pub fn families_name(&self) -> &'static str {
        match self.families {
            None => "any-family",
            Some(Families::V4) => "v4",
            Some(Families::V6) => "v6",
            Some(Families::Mixed) => "mixed",
        }
    }

    pub fn idles_name(&self) -> &'static str {
        match self.idles {
            IdleLengths::Short => "short-idles",
            IdleLengths::Long => "long-idles",
            IdleLengths::Any => "any-idles",
        }
    }

    pub fn reuse_name(&self) -> &'static str {
        match self.reuse {
            Reuse::Rare => "reuse-rare",
            Reuse::Often => "reuse-often",
        }
    }
}

/// One line: the kinds turned on (with their weight when it is not the base), the faults, the
/// idles, the families, the reuse and the most hosts, e.g.
/// `udp tcp*2 path fault[partition,drop-next] timer; short-idles v6 reuse-often hosts 2/1/3`.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::everything() {
            return f.write_str("everything");
        }
        let mut kinds = Vec::new();
        for kind in self.enabled() {
            let times = self.weight(kind) / kind.base_weight().max(1);
            let mut word = kind.name().to_owned();
            if times > 1 {
                word.push_str(&format!("*{times}"));
            }
            if kind == ActionKind::Fault {
                let names = ["partition", "hold", "drop-next"];
                let on: Vec<&str> = names
                    .iter()
                    .zip(self.faults)
                    .filter(|(_, weight)| *weight > 0)
                    .map(|(name, _)| *name)
                    .collect();
                word.push_str(&format!("[{}]", on.join(",")));
            }
            kinds.push(word);
        }
        let (clients, gateways, relays) = self.max_hosts;
        write!(
            f,
            "{}; {} {} {} hosts {clients}/{gateways}/{relays}",
            kinds.join(" "),
            self.idles_name(),
            self.families_name(),
            self.reuse_name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_vary_with_the_seed_and_repeat_with_it() {
        let profiles: Vec<Profile> = (0..200).map(Profile::of_case).collect();
        assert_eq!(profiles[17], Profile::of_case(17));
        let everything = profiles
            .iter()
            .filter(|p| **p == Profile::everything())
            .count();
        assert!((20..=80).contains(&everything), "{everything} of 200");
        for kind in ActionKind::ALL {
            let without = profiles.iter().filter(|p| p.weight(kind) == 0).count();
            if kind == ActionKind::Path {
                assert_eq!(without, 0, "paths are always on");
            } else {
                assert!(
                    without >= 50,
                    "{kind:?} is left out of only {without} of 200"
                );
            }
        }
        for profile in &profiles {
            assert!(profile.weight(ActionKind::Udp) + profile.weight(ActionKind::Tcp) > 0);
            assert!(profile.faults.iter().any(|w| *w > 0));
            let (c, g, r) = profile.max_hosts;
            assert!((1..=3).contains(&c) && (1..=2).contains(&g) && (1..=3).contains(&r));
        }
    }

    #[test]
    fn the_label_names_what_is_on() {
        let mut profile = Profile::everything();
        assert_eq!(profile.to_string(), "everything");
        profile.weights = [0; ActionKind::ALL.len()];
        profile.weights[1] = 10;
        profile.weights[7] = 2;
        profile.faults = [1, 0, 2];
        profile.families = Some(Families::V6);
        profile.reuse = Reuse::Often;
        profile.idles = IdleLengths::Short;
        profile.max_hosts = (2, 1, 3);
        assert_eq!(
            profile.to_string(),
            "tcp*2 fault[partition,drop-next]; short-idles v6 reuse-often hosts 2/1/3"
        );
    }
}
