//! tcpdump in the run's namespaces: the router's capture for the person reading the run, and
//! what reaches each resource namespace, read back as deliveries.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{RealError, client::Seen, processes::Child};

pub(crate) struct Capture {
    pub(crate) child: Child,
    pub(crate) path: PathBuf,
}

pub(crate) fn tcpdump_installed() -> bool {
    std::process::Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// tcpdump in namespace `ns` with `filter` (interface, direction, expression) into `path`.
fn capture(ns: &str, filter: &[String], path: PathBuf, dir: &Path) -> Result<Capture, RealError> {
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut args: Vec<String> = ["-n", "-U", "-s", "0", "-w"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(path.display().to_string());
    args.extend(filter.iter().cloned());
    let child = Child::spawn(
        &format!("tcpdump {name}"),
        ns,
        Path::new("tcpdump"),
        &args,
        &dir.join(format!("tcpdump-{name}.log")),
        false,
    )?;
    Ok(Capture { child, path })
}

/// Every datagram on every interface of the router namespace, for the person reading the run.
pub(crate) fn start_router_capture(router: &str, dir: &Path) -> Option<Capture> {
    if !tcpdump_installed() {
        return None;
    }
    capture(
        router,
        &["-i".into(), "any".into()],
        dir.join("router.pcap"),
        dir,
    )
    .ok()
}

/// What reaches the resources behind gateway `index`: IP packets in on their `eth0` for one
/// of their addresses (ARP and neighbour discovery left out). These are the deliveries to the
/// resource the model predicts.
pub(crate) fn start_resource_capture(
    ns: &str,
    index: usize,
    ips: &[IpAddr],
    dir: &Path,
) -> Result<Capture, RealError> {
    let hosts: Vec<String> = ips.iter().map(|ip| format!("dst host {ip}")).collect();
    let expression = format!(
        "(ip or ip6) and ({}) and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)",
        hosts.join(" or ")
    );
    capture(
        ns,
        &[
            "-i".into(),
            "eth0".into(),
            "-Q".into(),
            "in".into(),
            expression,
        ],
        dir.join(format!("resources-{index}.pcap")),
        dir,
    )
}

/// The packets of a resource capture, as deliveries on the run's clock.
pub(crate) fn resource_deliveries(
    path: &Path,
    gateway: usize,
    origin_wall: SystemTime,
) -> Result<Vec<Seen>, RealError> {
    let bytes = std::fs::read(path)
        .map_err(|error| RealError::Setup(format!("{}: {error}", path.display())))?;
    let mut reader = pcap_file::pcap::PcapReader::new(&bytes[..])
        .map_err(|error| RealError::Setup(format!("{}: {error}", path.display())))?;
    let origin = origin_wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut seen = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet =
            packet.map_err(|error| RealError::Setup(format!("{}: {error}", path.display())))?;
        // Ethernet: the IP packet starts after 14 bytes.
        let Some(ip) = packet.data.get(14..) else {
            continue;
        };
        seen.push(Seen {
            at_ms: packet.timestamp.saturating_sub(origin).as_millis() as u64,
            to: observation::Receiver::Resource {
                gateway: gateway as u32,
            },
            packet: observation::Packet::parse(ip),
        });
    }
    Ok(seen)
}
