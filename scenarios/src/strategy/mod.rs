//! proptest strategies that generate whole scenarios, weighted so that the interesting cases are
//! common: both peers on one relay, DNS-resource traffic, IPv6 outside and inside the tunnel,
//! cross-family relay paths, path switches mid-flow, faults, and idle times that cross the 120 s
//! UDP timeout and the 600 s TURN lifetimes. Shrinking drops steps first (a scenario that no
//! longer validates, e.g. a TCP step whose connection was dropped, is rejected), then simplifies
//! what is left: fewer hosts, IPv4 only, shorter idles.
//!
//! The generator only writes paths the contract can carry (docs/harness.md): a `direct` path
//! needs both ends in one family, a path through the client's relay is not used after that
//! client roamed, and in mixed-family topologies every host has a (dual-stack) relay.
//!
//! The draws live in `shape` (hosts, families, relays, latencies) and `action` (what happens);
//! `layout` and `topology` turn a shape into hosts and a topology with the names of `names`,
//! and `step_writer` turns actions into steps.

mod action;
mod layout;
mod names;
pub mod profile;
mod relay_timer_boundary;
mod shape;
mod step_writer;
mod timer_boundary;
mod topology;

use proptest::prelude::*;
use scenario_format::Scenario;

use action::{Action, action};
use layout::layout;
use profile::Profile;
use shape::{Shape, shape};
use step_writer::StepWriter;
use topology::topology;

/// A generated scenario under a swarm profile; `prop_filter` drops the few that do not
/// validate.
pub fn scenario(profile: &Profile) -> impl Strategy<Value = Scenario> + use<> {
    (
        shape(profile),
        prop::collection::vec(action(profile), 1..12),
    )
        .prop_map(|(shape, actions)| build(&shape, &actions))
        .prop_filter("the scenario must validate", |scenario| {
            scenario.validate().is_ok()
        })
}

fn build(shape: &Shape, actions: &[Action]) -> Scenario {
    let (layout, relays) = layout(shape);
    let topology = topology(shape, &layout, relays);
    let mut writer = StepWriter::new(&layout, &topology);
    for action in actions {
        writer.write(action.clone());
    }
    Scenario {
        name: "generated".to_owned(),
        description: String::new(),
        steps: writer.steps,
        topology,
    }
}
