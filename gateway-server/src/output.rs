//! What the server writes for its runner: flow records (`--flow-log`) and events (`--events`),
//! one JSON object per line, each line flushed as soon as it is written.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
};

use proto::flow::FlowRecord;
use serde::Serialize;

/// Where a stream of JSON lines goes: `-` is stdout, anything else a file (appended to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The process's standard output.
    Stdout,
    /// A file, created if missing, appended to otherwise.
    File(PathBuf),
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" => Err("an empty path".into()),
            "-" => Ok(Self::Stdout),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// One line per value, written whole and flushed.
#[derive(Debug)]
pub struct JsonLines {
    /// What the lines go to, for messages.
    name: String,
    writer: Writer,
    /// A line could not be written; reported once, then counted.
    failures: u64,
    line: Vec<u8>,
}

#[derive(Debug)]
enum Writer {
    Stdout(io::Stdout),
    File(File),
}

impl JsonLines {
    /// Opens `destination` (`what` names the stream in messages: "flow log", "events").
    pub fn open(destination: &Destination, what: &str) -> io::Result<Self> {
        let (name, writer) = match destination {
            Destination::Stdout => (format!("{what} (stdout)"), Writer::Stdout(io::stdout())),
            Destination::File(path) => (
                format!("{what} ({})", path.display()),
                Writer::File(OpenOptions::new().create(true).append(true).open(path)?),
            ),
        };
        Ok(Self {
            name,
            writer,
            failures: 0,
            line: Vec::with_capacity(1024),
        })
    }

    /// Writes `value` as one line and flushes it. A failure is logged (the first one at ERROR)
    /// and counted; the server goes on.
    pub fn write<T: Serialize>(&mut self, value: &T) {
        self.line.clear();
        if let Err(error) = serde_json::to_writer(&mut self.line, value) {
            tracing::error!(stream = %self.name, %error, "cannot serialise a line");
            return;
        }
        self.line.push(b'\n');
        let written = match &mut self.writer {
            Writer::Stdout(stdout) => {
                let mut stdout = stdout.lock();
                stdout.write_all(&self.line).and_then(|()| stdout.flush())
            }
            Writer::File(file) => file.write_all(&self.line).and_then(|()| file.flush()),
        };
        if let Err(error) = written {
            if self.failures == 0 {
                tracing::error!(stream = %self.name, %error, "cannot write; lines are being lost");
            }
            self.failures += 1;
        }
    }

    /// Lines that could not be written.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// An event for the runner (`--events`), one JSON line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerEvent {
    /// The tunnel sockets are bound (and the DNS port sockets, and the TUN device is open).
    Listening(Vec<SocketAddr>),
    /// The gateway's own allocation succeeded: its relayed addresses.
    Relayed(Vec<SocketAddr>),
    /// The relay refused the allocation (`code`) or did not answer (`null`).
    AllocationFailed { code: Option<u16> },
    /// A channel to this peer is bound: data to it goes through the relay.
    ChannelBound(SocketAddr),
    /// The channel to this peer could not be bound or refreshed.
    ChannelFailed(SocketAddr),
    /// The gateway dropped a packet.
    Drop {
        /// The kebab-case drop reason (`not-granted`, `bad-mac`, ...).
        reason: &'static str,
        /// The client it came from or was for, if the packet names one.
        client: Option<u32>,
    },
    /// A control line was applied: its command's name (`map_dns`, `grant`, ...). What the
    /// gateway receives after this event sees the command's effect.
    ControlApplied(&'static str),
    /// A control line was refused (it did not parse, or the gateway refused the call).
    ControlError(String),
    /// The last event: the gateway shut down, flushing the records of `flows` open flows.
    ShutDown { flows: usize },
}

/// The flow log and the optional event stream.
#[derive(Debug)]
pub struct Outputs {
    flow_log: JsonLines,
    events: Option<JsonLines>,
    /// Records written so far.
    records: u64,
}

impl Outputs {
    /// Opens both streams.
    pub fn open(flow_log: &Destination, events: Option<&Destination>) -> io::Result<Self> {
        Ok(Self {
            flow_log: JsonLines::open(flow_log, "flow log")?,
            events: events
                .map(|destination| JsonLines::open(destination, "events"))
                .transpose()?,
            records: 0,
        })
    }

    /// Writes one flow record.
    pub fn record(&mut self, record: &FlowRecord) {
        self.records += 1;
        self.flow_log.write(record);
    }

    /// Writes one event, if events are wanted.
    pub fn event(&mut self, event: &RunnerEvent) {
        if let Some(events) = &mut self.events {
            events.write(event);
        }
    }

    /// Flow records written (or attempted) so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Lines lost to write errors, over both streams.
    pub fn write_failures(&self) -> u64 {
        self.flow_log.failures() + self.events.as_ref().map_or(0, JsonLines::failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_the_runner_reads_them() {
        let json = |event: RunnerEvent| serde_json::to_string(&event).unwrap();
        assert_eq!(
            json(RunnerEvent::Listening(vec![
                "203.0.113.10:51820".parse().unwrap(),
                "[2001:db8::10]:51820".parse().unwrap()
            ])),
            r#"{"listening":["203.0.113.10:51820","[2001:db8::10]:51820"]}"#
        );
        assert_eq!(
            json(RunnerEvent::Relayed(vec![
                "203.0.113.1:54990".parse().unwrap()
            ])),
            r#"{"relayed":["203.0.113.1:54990"]}"#
        );
        assert_eq!(
            json(RunnerEvent::ControlApplied("map_dns")),
            r#"{"control_applied":"map_dns"}"#
        );
        assert_eq!(
            json(RunnerEvent::ChannelBound(
                "203.0.113.1:56898".parse().unwrap()
            )),
            r#"{"channel_bound":"203.0.113.1:56898"}"#
        );
        assert_eq!(
            json(RunnerEvent::Drop {
                reason: "not-granted",
                client: Some(0)
            }),
            r#"{"drop":{"reason":"not-granted","client":0}}"#
        );
        assert_eq!(
            json(RunnerEvent::Drop {
                reason: "not-tunnel-frame",
                client: None
            }),
            r#"{"drop":{"reason":"not-tunnel-frame","client":null}}"#
        );
        assert_eq!(
            json(RunnerEvent::ControlError("no client 3".into())),
            r#"{"control_error":"no client 3"}"#
        );
        assert_eq!(
            json(RunnerEvent::ShutDown { flows: 2 }),
            r#"{"shut_down":{"flows":2}}"#
        );
        assert_eq!(
            json(RunnerEvent::AllocationFailed { code: None }),
            r#"{"allocation_failed":{"code":null}}"#
        );
    }

    #[test]
    fn destinations_parse() {
        assert_eq!("-".parse(), Ok(Destination::Stdout));
        assert_eq!(
            "flows.jsonl".parse(),
            Ok(Destination::File(PathBuf::from("flows.jsonl")))
        );
        assert!("".parse::<Destination>().is_err());
    }

    #[test]
    fn a_file_gets_one_flushed_line_per_value_appended() {
        let path =
            std::env::temp_dir().join(format!("gateway-server-lines-{}.jsonl", std::process::id()));
        std::fs::write(&path, "earlier\n").unwrap();
        let mut lines = JsonLines::open(&Destination::File(path.clone()), "test").unwrap();
        lines.write(&RunnerEvent::ShutDown { flows: 1 });
        lines.write(&RunnerEvent::ControlError("x".into()));
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            text,
            "earlier\n{\"shut_down\":{\"flows\":1}}\n{\"control_error\":\"x\"}\n"
        );
        assert_eq!(lines.failures(), 0);
    }
}
