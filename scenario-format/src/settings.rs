//! The settings every simulated host runs with, beyond what a scenario file says: the
//! gateway's defaults, the TCP initial sequence numbers, the relays' credentials. The
//! simulator configures its hosts with these values and the model predicts with them, so
//! each is defined once, here.

/// A flow's idle timeout when the topology does not set one (`idle_timeout_s`).
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 120;
/// A DNS answer is kept at least this long (the gateway's `dns_min_ttl`): five seconds in the
/// simulation (a gateway's default is one), so that a run with a TTL at the floor refreshes
/// every few seconds rather than every second, which would cost as much as ten other runs.
pub const DNS_MIN_TTL_S: u64 = 5;
/// A DNS answer is kept at most this long (the gateway's `dns_max_ttl`): five minutes in the
/// simulation, so that runs cross the cap (a gateway's default is a day).
pub const DNS_MAX_TTL_S: u64 = 300;
/// Open flows one client may hold at a gateway (`flow-table-full` beyond): small enough that
/// a `udp-flood` step reaches it.
pub const GATEWAY_MAX_FLOWS_PER_CLIENT: usize = 48;
/// Payload bytes of each datagram of a `udp-flood` step.
pub const FLOOD_DATAGRAM_BYTES: u16 = 16;
/// Client packets a gateway queues per proxy IP while its domain resolves.
pub const DNS_QUEUE_LIMIT: usize = 32;
/// Client TCP initial sequence number of connection 1 (the SYN's `seq`); see [`client_isn`].
pub const CLIENT_ISN: u32 = 1000;
/// How far apart the client's initial sequence numbers of consecutive connections are.
pub const CLIENT_ISN_STEP: u32 = 100_000;

/// The client's initial sequence number of connection `conn`: [`CLIENT_ISN`] for connection
/// 1, then [`CLIENT_ISN_STEP`] higher for each connection number. A real client picks a new
/// one for every connection (RFC 6528), and Linux accepts a SYN that reuses the 5-tuple of a
/// connection in TIME_WAIT only if its sequence number is past the old connection's: the real
/// world showed a reused 5-tuple refused with the same ISN (docs/harness.md, "Real
/// networking").
pub fn client_isn(conn: u32) -> u32 {
    CLIENT_ISN.wrapping_add(conn.saturating_sub(1).wrapping_mul(CLIENT_ISN_STEP))
}
/// Resource TCP initial sequence number (the SYN-ACK's `seq`).
pub const RESOURCE_ISN: u32 = 5000;
/// The maximum segment size both scripted TCP sides announce in their SYN, as every real TCP
/// stack does: a tunnel MTU of 1420 less the IPv6 and TCP headers. Without the option, a
/// Linux peer falls back to 536 bytes and splits what the scripts send as one segment (the
/// real world found this: docs/harness.md, "Real networking").
pub const TCP_MSS: u16 = 1360;
/// The TURN REST API shared secret every relay of the simulation uses.
pub const RELAY_SECRET: &[u8] = b"vpnsim relay secret";
/// The realm every relay of the simulation uses.
pub const RELAY_REALM: &str = "vpnsim";
/// Allocations one username may hold on a relay at once (486 beyond).
pub const RELAY_ALLOCATION_QUOTA: usize = 10;
/// Peers one allocation may hold permissions for at once (508 beyond).
pub const RELAY_MAX_PERMISSIONS: usize = 128;
/// Channels one allocation may hold at once (508 beyond).
pub const RELAY_MAX_CHANNELS: usize = 64;
/// The id in the attacker's TURN REST username: credentials of its own, valid all run.
pub const ATTACKER_ID: &str = "mallory";
/// The TURN REST user id whose credentials the attacker stole (`foreign-credentials`).
pub const STOLEN_ID: &str = "eve";
