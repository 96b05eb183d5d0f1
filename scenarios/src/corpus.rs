//! The scenario corpus: hand-written stories in `scenarios/corpus/<name>.yaml`, each run with
//! one fixed seed, checked against the model, and snapshotted (`tests/corpus.rs`) into the
//! workspace's `snapshots/` directory as `<name>__flows.snap`.
//!
//! This module holds what the snapshot test, `vpnsim show` and `vpnsim promote` share: where
//! the corpus and the snapshots live, how a corpus name must look, and the readable view of a
//! flow record that the snapshots store.

use std::{
    io,
    path::{Path, PathBuf},
};

use proto::flow::{CloseReason, FlowRecord, Protocol, UtcTime};
use scenario_format::Scenario;
use serde::Serialize;

/// The seed every corpus scenario runs with, so its snapshots never change by chance.
pub const CORPUS_SEED: u64 = 1;

/// `scenarios/corpus` in the source tree.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The workspace's `snapshots/` directory.
pub fn snapshot_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("snapshots")
}

/// One scenario file of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name without `.yaml`; the scenario's `name:` must be the same.
    pub name: String,
    pub path: PathBuf,
}

/// Every `*.yaml` file in `dir`, sorted by name.
pub fn entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") || !path.is_file() {
            continue;
        }
        if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
            entries.push(Entry {
                name: name.to_owned(),
                path,
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// A corpus name: lowercase ASCII letters and digits in words joined by single dashes
/// (`same-relay-v4`), at most 64 characters. Snapshot and file names derive from it.
pub fn is_slug(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A flow record as a snapshot shows it: names instead of indices, addresses as `ip:port`,
/// outer contexts as `remote -> local`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowView {
    pub client: String,
    pub resource: String,
    pub protocol: Protocol,
    pub start: UtcTime,
    pub end: UtcTime,
    pub last_packet: UtcTime,
    pub inner_src: String,
    pub inner_dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub outer_contexts: Vec<String>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub close_reason: CloseReason,
}

/// The name of client `index` of the scenario (`client 7` if there is none).
pub fn client_name(scenario: &Scenario, index: u32) -> String {
    let names = scenario.topology.clients.iter().map(|c| c.name.as_str());
    nth_name(names, index, "client")
}

/// The name of resource `index` of the scenario (`resource 7` if there is none).
pub fn resource_name(scenario: &Scenario, index: u32) -> String {
    let names = scenario.topology.resources.iter().map(|r| r.name.as_str());
    nth_name(names, index, "resource")
}

/// The name of gateway `index` of the scenario (`gateway 7` if there is none).
pub fn gateway_name(scenario: &Scenario, index: u32) -> String {
    let names = scenario.topology.gateways.iter().map(|g| g.name.as_str());
    nth_name(names, index, "gateway")
}

/// The `index`-th of `names`, or `<kind> <index>` past their end.
fn nth_name<'a>(mut names: impl Iterator<Item = &'a str>, index: u32, kind: &str) -> String {
    names
        .nth(index as usize)
        .map_or_else(|| format!("{kind} {index}"), str::to_owned)
}

/// `ip:port`, with brackets around IPv6 addresses.
pub fn socket(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

impl FlowView {
    pub fn new(scenario: &Scenario, record: &FlowRecord) -> Self {
        Self {
            client: client_name(scenario, record.client.0),
            resource: resource_name(scenario, record.resource.0),
            protocol: record.protocol,
            start: record.start,
            end: record.end,
            last_packet: record.last_packet,
            inner_src: socket(record.inner_src_ip, record.inner_src_port),
            inner_dst: socket(record.inner_dst_ip, record.inner_dst_port),
            domain: record.inner_domain.clone(),
            outer_contexts: record
                .outer_contexts
                .iter()
                .map(|c| format!("{} -> {}", c.remote, c.local))
                .collect(),
            tx_packets: record.tx_packets,
            tx_bytes: record.tx_bytes,
            rx_packets: record.rx_packets,
            rx_bytes: record.rx_bytes,
            close_reason: record.close_reason,
        }
    }
}

/// The records in the model's canonical order ([`model::sort_flows`]), as snapshot views.
pub fn flow_views(scenario: &Scenario, records: &[FlowRecord]) -> Vec<FlowView> {
    let mut sorted = records.to_vec();
    model::sort_flows(&mut sorted);
    sorted.iter().map(|r| FlowView::new(scenario, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for good in ["a", "udp-idle", "same-relay-v4", "x1-2y"] {
            assert!(is_slug(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "Upper",
            "with space",
            "a_b",
            "../x",
            "a.yaml",
            "ü",
            &"a".repeat(65),
        ] {
            assert!(!is_slug(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_corpus_is_sorted_and_named_like_its_files() {
        let entries = entries(&corpus_dir()).expect("the corpus directory");
        assert!(entries.len() >= 15, "{} stories", entries.len());
        assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
        for entry in &entries {
            assert!(is_slug(&entry.name), "{}", entry.path.display());
            let scenario = Scenario::from_file(&entry.path).expect("a valid scenario");
            assert_eq!(scenario.name, entry.name, "{}", entry.path.display());
        }
    }
}
