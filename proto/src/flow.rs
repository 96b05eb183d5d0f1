//! Flow-log vocabulary shared by the gateway (which writes flow records) and the reference
//! model (which predicts them): ids, protocol, close reason, outer context, UTC timestamps and
//! the [`FlowRecord`] itself. Plain data with serde, so records snapshot as YAML.
//!
//! The rules that decide *when* a record starts, what it counts and how it closes are in
//! `docs/flows.md`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::drop_reason::DropReason;
use time::macros::format_description;

/// At most this many distinct outer contexts are kept per record, in first-seen order; later
/// new ones are not recorded (the packets are still counted).
pub const MAX_OUTER_CONTEXTS: usize = 8;

/// A client (a user's device), as named by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub u32);

/// A resource (a CIDR range or a DNS name pattern), as named by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceId(pub u32);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Transport protocol of a flow. `Icmp` covers ICMPv4 and ICMPv6 echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP / ICMPv6 echo (ports are the echo identifier and 0).
    Icmp,
}

impl Protocol {
    /// Lowercase name, as in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a flow record was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseReason {
    /// TCP: both sides sent FIN and both FINs were acknowledged.
    Fin,
    /// TCP: either side sent RST.
    Rst,
    /// No packet for the idle timeout; `end == last_packet`.
    Idle,
    /// The gateway shut down while the flow was open.
    Shutdown,
    /// The control plane withdrew access (grant revoked, client or resource removed) while the
    /// flow was open.
    Revoked,
}

impl CloseReason {
    /// Lowercase name, as in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Fin => "fin",
            CloseReason::Rst => "rst",
            CloseReason::Idle => "idle",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Revoked => "revoked",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outer 4-tuple a tunnel frame travelled on, seen from the gateway: `remote` is where the
/// frame came from (the client, or the relay that forwarded it), `local` is the gateway's own
/// address it arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OuterContext {
    /// The far end: client or relay address.
    pub remote: SocketAddr,
    /// The gateway's local address.
    pub local: SocketAddr,
}

impl fmt::Display for OuterContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.remote, self.local)
    }
}

/// A UTC instant with nanosecond resolution, counted from the Unix epoch.
///
/// It prints (and serialises) as RFC 3339 with exactly nine fractional digits and a `Z`, e.g.
/// `2025-01-01T00:00:01.500000000Z`, so a simulation prints byte-identical records every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime {
    unix_nanos: u64,
}

/// The UTC time could not be parsed from a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtcTimeParseError(String);

impl fmt::Display for UtcTimeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not an RFC 3339 UTC time with 9 fractional digits: {}",
            self.0
        )
    }
}

impl std::error::Error for UtcTimeParseError {}

const RFC3339_NANOS: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

impl UtcTime {
    /// The Unix epoch.
    pub const UNIX_EPOCH: UtcTime = UtcTime { unix_nanos: 0 };

    /// From nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(unix_nanos: u64) -> Self {
        Self { unix_nanos }
    }

    /// From whole seconds since the Unix epoch.
    pub const fn from_unix_secs(secs: u64) -> Self {
        Self {
            unix_nanos: secs.saturating_mul(1_000_000_000),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> u64 {
        self.unix_nanos
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            unix_nanos: self.unix_nanos.saturating_add(d),
        }
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.unix_nanos))
            .ok()
            .and_then(|t| t.format(RFC3339_NANOS).ok())
        {
            Some(s) => f.write_str(&s),
            // Past year 9999: not representable in RFC 3339; print the raw count instead.
            None => write!(f, "unix-nanos:{}", self.unix_nanos),
        }
    }
}

impl FromStr for UtcTime {
    type Err = UtcTimeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = time::PrimitiveDateTime::parse(s, RFC3339_NANOS)
            .map_err(|_| UtcTimeParseError(s.to_owned()))?
            .assume_utc();
        let nanos =
            u64::try_from(t.unix_timestamp_nanos()).map_err(|_| UtcTimeParseError(s.to_owned()))?;
        Ok(Self::from_unix_nanos(nanos))
    }
}

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Pairs a monotonic `Instant` with the UTC time it stands for, so `now` arguments turn into
/// reproducible UTC timestamps: `utc(now) = unix + (now - instant)`. Instants before `instant`
/// map to `unix` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOrigin {
    /// The monotonic reference point.
    pub instant: Instant,
    /// The UTC time at `instant`.
    pub unix: UtcTime,
}

impl TimeOrigin {
    /// The UTC time of `now`.
    pub fn utc(&self, now: Instant) -> UtcTime {
        self.unix.plus(now.saturating_duration_since(self.instant))
    }
}

/// One flow (a TCP connection, a UDP conversation or an ICMP echo conversation) that the
/// gateway forwarded for a client; the unit of the flow log. See `docs/flows.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Who started the flow.
    pub client: ClientId,
    /// Which granted resource it went to.
    pub resource: ResourceId,
    /// TCP, UDP or ICMP.
    pub protocol: Protocol,
    /// Time of the first packet.
    pub start: UtcTime,
    /// Time the flow closed (see [`CloseReason`] and `docs/flows.md`).
    pub end: UtcTime,
    /// Time of the last packet counted in the flow.
    pub last_packet: UtcTime,
    /// The client's tunnel IP.
    pub inner_src_ip: IpAddr,
    /// The client's port (ICMP: the echo identifier).
    pub inner_src_port: u16,
    /// The resource's IP, after DNS NAT (the real IP, never a proxy IP).
    pub inner_dst_ip: IpAddr,
    /// The resource's port (ICMP: 0).
    pub inner_dst_port: u16,
    /// The domain, for flows to DNS resources.
    pub inner_domain: Option<String>,
    /// Distinct outer 4-tuples the flow's packets used, first-seen order, at most
    /// [`MAX_OUTER_CONTEXTS`].
    pub outer_contexts: Vec<OuterContext>,
    /// Packets client -> resource.
    pub tx_packets: u64,
    /// Payload bytes client -> resource.
    pub tx_bytes: u64,
    /// Packets resource -> client.
    pub rx_packets: u64,
    /// Payload bytes resource -> client.
    pub rx_bytes: u64,
    /// Why the flow closed.
    pub close_reason: CloseReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_prints_rfc3339_with_nanoseconds() {
        let t = UtcTime::from_unix_secs(1_735_689_600).plus(Duration::from_millis(1500));
        assert_eq!(t.to_string(), "2025-01-01T00:00:01.500000000Z");
        assert_eq!(
            UtcTime::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn utc_time_parses_what_it_prints() {
        let t = UtcTime::from_unix_nanos(1_735_689_600_123_456_789);
        assert_eq!(t.to_string().parse::<UtcTime>(), Ok(t));
        assert!("2025-01-01T00:00:01Z".parse::<UtcTime>().is_err());
        assert!("yesterday".parse::<UtcTime>().is_err());
    }

    #[test]
    fn time_origin_adds_elapsed_time() {
        let instant = Instant::now();
        let origin = TimeOrigin {
            instant,
            unix: UtcTime::from_unix_secs(100),
        };
        assert_eq!(origin.utc(instant), UtcTime::from_unix_secs(100));
        assert_eq!(
            origin.utc(instant + Duration::from_nanos(7)),
            UtcTime::from_unix_nanos(100_000_000_007)
        );
    }

    #[test]
    fn enums_print_lowercase() {
        assert_eq!(Protocol::Icmp.to_string(), "icmp");
        assert_eq!(CloseReason::Revoked.to_string(), "revoked");
    }

    #[test]
    fn flow_record_serialises_with_rfc3339_times_and_lowercase_names() {
        let outer = OuterContext {
            remote: "203.0.113.10:40000".parse().unwrap(),
            local: "203.0.113.1:51820".parse().unwrap(),
        };
        let r = FlowRecord {
            client: ClientId(1),
            resource: ResourceId(20),
            protocol: Protocol::Tcp,
            start: UtcTime::from_unix_secs(1_735_689_600),
            end: UtcTime::from_unix_nanos(1_735_689_601_500_000_000),
            last_packet: UtcTime::from_unix_nanos(1_735_689_601_500_000_000),
            inner_src_ip: "100.64.0.2".parse().unwrap(),
            inner_src_port: 40001,
            inner_dst_ip: "198.51.100.42".parse().unwrap(),
            inner_dst_port: 443,
            inner_domain: Some("app.example.com".into()),
            outer_contexts: vec![outer],
            tx_packets: 5,
            tx_bytes: 5,
            rx_packets: 3,
            rx_bytes: 6,
            close_reason: CloseReason::Fin,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#""start":"2025-01-01T00:00:00.000000000Z""#),
            "{json}"
        );
        assert!(
            json.contains(r#""end":"2025-01-01T00:00:01.500000000Z""#),
            "{json}"
        );
        assert!(json.contains(r#""protocol":"tcp""#), "{json}");
        assert!(json.contains(r#""close_reason":"fin""#), "{json}");
        assert!(json.contains(r#""client":1"#), "{json}");
        let back: FlowRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
