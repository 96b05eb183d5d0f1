//! Control commands, one JSON object per line on stdin (`--control-stdin`), in place of a
//! portal:
//!
//! ```text
//! {"map_dns":{"client":0,"proxy_ip":"100.96.0.1","domain":"api.example.com"}}
//! {"unmap_dns":{"client":0,"proxy_ip":"100.96.0.1"}}
//! {"grant":{"client":0,"resource":0,"filters":["tcp/443"]}}
//! {"revoke":{"client":0,"resource":0}}
//! {"via_relay":"203.0.113.1:56898"}
//! {"direct":"203.0.113.100:51820"}
//! {"shutdown":null}
//! ```
//!
//! A line that does not parse is refused whole; the gateway never sees it.

use std::{
    io::BufRead,
    net::{IpAddr, SocketAddr},
};

use gateway::Filter;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::filter_text::parse_filter;

/// One control command, as the gateway applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// For `client`, `proxy_ip` stands for `domain` (resolved at once).
    MapDns {
        client: u32,
        proxy_ip: IpAddr,
        domain: String,
    },
    /// Forget `client`'s mapping of `proxy_ip`.
    UnmapDns { client: u32, proxy_ip: IpAddr },
    /// Grant `resource` to `client` with `filters` (empty: everything).
    Grant {
        client: u32,
        resource: u32,
        filters: Vec<Filter>,
    },
    /// Withdraw the grant; its open flows close (`revoked`).
    Revoke { client: u32, resource: u32 },
    /// Reach this remote address through the gateway's own allocation (binds a channel).
    ViaRelay(SocketAddr),
    /// Reach this remote address directly again.
    Direct(SocketAddr),
    /// Shut down as on SIGTERM.
    Shutdown,
}

impl Command {
    /// The command's name, as a control line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MapDns { .. } => "map_dns",
            Self::UnmapDns { .. } => "unmap_dns",
            Self::Grant { .. } => "grant",
            Self::Revoke { .. } => "revoke",
            Self::ViaRelay(_) => "via_relay",
            Self::Direct(_) => "direct",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The JSON shape of a command line.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum CommandLine {
    MapDns {
        client: u32,
        proxy_ip: IpAddr,
        domain: String,
    },
    UnmapDns {
        client: u32,
        proxy_ip: IpAddr,
        /// Accepted and ignored: a mapping is named by client and proxy IP.
        #[serde(default)]
        #[allow(dead_code)]
        domain: Option<String>,
    },
    Grant {
        client: u32,
        resource: u32,
        #[serde(default)]
        filters: Vec<String>,
    },
    Revoke {
        client: u32,
        resource: u32,
    },
    ViaRelay(SocketAddr),
    Direct(SocketAddr),
    Shutdown,
}

/// Parses one line; `Err` says why it is refused.
pub fn parse_command(line: &str) -> Result<Command, String> {
    let parsed: CommandLine = serde_json::from_str(line).map_err(|error| error.to_string())?;
    Ok(match parsed {
        CommandLine::MapDns {
            client,
            proxy_ip,
            domain,
        } => Command::MapDns {
            client,
            proxy_ip,
            domain,
        },
        CommandLine::UnmapDns {
            client, proxy_ip, ..
        } => Command::UnmapDns { client, proxy_ip },
        CommandLine::Grant {
            client,
            resource,
            filters,
        } => Command::Grant {
            client,
            resource,
            filters: filters
                .iter()
                .map(|text| parse_filter(text))
                .collect::<Result<_, _>>()?,
        },
        CommandLine::Revoke { client, resource } => Command::Revoke { client, resource },
        CommandLine::ViaRelay(remote) => Command::ViaRelay(remote),
        CommandLine::Direct(remote) => Command::Direct(remote),
        CommandLine::Shutdown => Command::Shutdown,
    })
}

/// A line read from stdin: a command, or why the line was refused.
pub type ControlLine = Result<Command, String>;

/// Reads stdin line by line on a thread of its own and sends each parsed line; blank lines are
/// skipped. The channel closes at EOF or on a read error (reported first), which stops nothing
/// else.
pub fn read_stdin() -> mpsc::Receiver<ControlLine> {
    let (sender, receiver) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    let _ = sender.blocking_send(Err(format!(
                        "cannot read stdin ({error}); no more commands are read"
                    )));
                    return;
                }
            }
            let parsed = match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_command(text.trim()),
                Err(error) => Err(format!("not UTF-8: {error}")),
            };
            if sender.blocking_send(parsed).is_err() {
                return;
            }
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use gateway::PortRange;

    use super::*;

    #[test]
    fn every_command_parses() {
        assert_eq!(
            parse_command(
                r#"{"map_dns":{"client":0,"proxy_ip":"100.96.0.1","domain":"api.example.com"}}"#
            ),
            Ok(Command::MapDns {
                client: 0,
                proxy_ip: "100.96.0.1".parse().unwrap(),
                domain: "api.example.com".into()
            })
        );
        assert_eq!(
            parse_command(
                r#"{"unmap_dns":{"client":1,"proxy_ip":"100.96.0.1","domain":"api.example.com"}}"#
            ),
            Ok(Command::UnmapDns {
                client: 1,
                proxy_ip: "100.96.0.1".parse().unwrap()
            })
        );
        assert_eq!(
            parse_command(r#"{"grant":{"client":0,"resource":2,"filters":["udp/53"]}}"#),
            Ok(Command::Grant {
                client: 0,
                resource: 2,
                filters: vec![Filter::Udp(PortRange::single(53))]
            })
        );
        assert_eq!(
            parse_command(r#"{"grant":{"client":0,"resource":2}}"#),
            Ok(Command::Grant {
                client: 0,
                resource: 2,
                filters: vec![]
            })
        );
        assert_eq!(
            parse_command(r#"{"revoke":{"client":0,"resource":2}}"#),
            Ok(Command::Revoke {
                client: 0,
                resource: 2
            })
        );
        assert_eq!(
            parse_command(r#"{"via_relay":"203.0.113.1:56898"}"#),
            Ok(Command::ViaRelay("203.0.113.1:56898".parse().unwrap()))
        );
        assert_eq!(
            parse_command(r#"{"direct":"[2001:db8::100]:51820"}"#),
            Ok(Command::Direct("[2001:db8::100]:51820".parse().unwrap()))
        );
        assert_eq!(parse_command(r#"{"shutdown":null}"#), Ok(Command::Shutdown));
        assert_eq!(parse_command(r#""shutdown""#), Ok(Command::Shutdown));
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"reboot":null}"#,
            r#"{"grant":{"client":0}}"#,
            r#"{"grant":{"client":0,"resource":0,"filters":["tcp/0"]}}"#,
            r#"{"revoke":{"client":0,"resource":0,"extra":1}}"#,
            r#"{"via_relay":"not an address"}"#,
            r#"{"map_dns":{"client":-1,"proxy_ip":"100.96.0.1","domain":"a"}}"#,
        ] {
            assert!(parse_command(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_command(r#"{"grant":{"client":0,"resource":0,"filters":["sctp"]}}"#),
            Err("`sctp` is not a filter (tcp, udp or icmp, with /port or /low-high)".into())
        );
    }
}
