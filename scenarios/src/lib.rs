//! The harness around the simulator: checks against the model, coverage counters, proptest
//! strategies that generate scenarios, the explorer (shrinking, artifacts), the corpus with
//! its snapshots, the routing trace (as text and as a Mermaid diagram), HTML pages, the pcap
//! writer, and the `vpnsim` command line
//! (`explore`, `merge`, `replay`, `show`, `promote`, `real`, `bench`, `xdp-fixtures`).

pub mod artifacts;
pub mod check;
pub mod corpus;
pub mod coverage;
pub mod determinism;
pub mod explore;
pub mod heatmap;
pub mod html;
pub mod pcap;
pub mod promote;
pub mod real;
pub mod replay;
pub mod routing;
pub mod routing_diagram;
pub mod show;
pub mod strategy;
pub mod summary;
pub mod watchdog;
pub mod xdp_bench;
pub mod xdp_table;
