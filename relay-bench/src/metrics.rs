//! Who carried a run's datagrams, as relay-server's own metrics say: its XDP program (XDP_TX)
//! or its sockets.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{
    netns::{RELAY, Role, Topology},
    servers::METRICS_PORT,
};

/// How long the scrape may take, per step.
const SCRAPE_LIMIT: Duration = Duration::from_secs(5);

/// Datagrams relayed from the clients to the peer, by who relayed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayedBy {
    /// The XDP program's `XDP_TX` verdicts on the channel path (ChannelData in, UDP out).
    pub xdp: u64,
    /// The relay-server's sockets (`relay_datagrams_relayed_total{to="peer"}`).
    pub sockets: u64,
}

/// Scrapes relay-server's metrics from inside the client namespace.
pub fn relayed_by(topology: &Topology) -> Result<RelayedBy> {
    let text = topology.inside(Role::Client, || {
        let server = SocketAddr::from((RELAY, METRICS_PORT));
        let mut stream = TcpStream::connect_timeout(&server, SCRAPE_LIMIT)
            .with_context(|| format!("cannot reach the metrics at {server}"))?;
        stream.set_read_timeout(Some(SCRAPE_LIMIT))?;
        stream.set_write_timeout(Some(SCRAPE_LIMIT))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .context("reading the metrics")?;
        Ok(response)
    })?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP response: {text}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the metrics endpoint answered {}",
            head.lines().next().unwrap_or(head)
        );
    }
    Ok(parse(body))
}

fn parse(body: &str) -> RelayedBy {
    let sum = |prefix: &str| -> u64 {
        body.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    RelayedBy {
        xdp: sum("relay_xdp_runs_total{reason=\"tx/chan4-to-udp4\"}"),
        sockets: sum("relay_datagrams_relayed_total{to=\"peer\"}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_path_counters_are_read() {
        let body = "# TYPE relay_datagrams_relayed_total counter\n\
                    relay_datagrams_relayed_total{to=\"peer\"} 12\n\
                    relay_datagrams_relayed_total{to=\"client\"} 3\n\
                    relay_xdp_runs_total{reason=\"tx/chan4-to-udp4\"} 4000\n\
                    relay_xdp_runs_total{reason=\"pass/stun\"} 9\n# EOF\n";
        assert_eq!(
            parse(body),
            RelayedBy {
                xdp: 4000,
                sockets: 12
            }
        );
    }
}
