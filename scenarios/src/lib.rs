//! Scenarios and the harness around them: the scenario type (a YAML file a person can read),
//! proptest strategies that generate scenarios, the invariants checked after every step, the
//! corpus with its snapshots, and the `vpnsim` command line (`explore`, `replay`, `show`,
//! `promote`).

pub mod artifacts;
pub mod check;
pub mod corpus;
pub mod coverage;
pub mod explore;
pub mod pcap;
pub mod promote;
pub mod replay;
pub mod routing;
pub mod show;
pub mod strategy;
pub mod xdp_bench;
pub mod xdp_table;
