//! Interop with a standard TURN client: coturn's `turnutils_uclient` (Debian package coturn)
//! against the relay server on loopback, in each of its modes, every datagram accounted for.
//!
//! - `channel`: uclient's default. Each client relays through a channel to a UDP echo peer
//!   (coturn's `turnutils_peer`) and, beside it, an RTCP allocation: the first allocation asks
//!   for EVEN-PORT with the R bit set, the second brings the RESERVATION-TOKEN and gets the port
//!   after it. uclient picks channel numbers from RFC 5766's 0x4000-0x7FFF.
//! - `send-indication` (`-s`): Send indications out, Data indications back.
//! - `client-to-client` (`-y`): the clients talk to each other's relayed addresses through
//!   channels: relay-to-self.
//! - `client-to-client-send` (`-y -s`): the same through Send indications.
//! - `padding` (`-D`): ChannelData padded to a multiple of 4 bytes, as pjnath sends it.
//!
//! Each mode runs its own relay (in-process, on 127.0.0.1, an OS-chosen TURN port and a port
//! range of its own) and sends [`MESSAGES`] datagrams from each of [`CLIENTS`] clients; uclient
//! must exit successfully and report every one sent and received back (0 lost, none dropped on
//! send), and the relay must have refused nothing but the credential challenges, dropped
//! nothing and failed no send or bind. A uclient run is killed after [`RUN_LIMIT`].
//!
//! The echo peer listens on 127.0.0.2: the relay's public address is 127.0.0.1, and a peer on
//! it would be the relay itself (relay-to-self). Peers on loopback are refused unless an
//! operator allows them, as here.
//!
//! Without `turnutils_uclient` or `turnutils_peer` the tests skip loudly, and with `CI=true`
//! (or `RELAY_XDP_REQUIRE_BPF=1`) a skip fails; `cargo xtask test` installs coturn.

mod support;

use std::{
    fs::File,
    net::{Ipv4Addr, UdpSocket as StdUdpSocket},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use proto::credentials;
use relay_server::RelayConfig;
use support::{KilledOnDrop, LoopbackRelay, http_get, skip};

const SECRET: &[u8] = b"uclient interop shared secret";
const REALM: &str = "uclient.test";
const RELAY_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Where the echo peer listens (and its RTCP twin, one port up).
const PEER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Datagrams each client sends.
const MESSAGES: u64 = 50;
/// Clients (uclient's `-m`).
const CLIENTS: u64 = 4;
/// Bytes per datagram (uclient's `-l`).
const LENGTH: u64 = 100;
/// The longest a uclient run may take: it waits 1 to 6 s before sending, then sends one
/// datagram per client every 20 ms.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// One of uclient's modes.
struct Mode {
    /// The mode's name, in logs and failures.
    name: &'static str,
    flags: &'static [&'static str],
    /// The clients talk to an echo peer (otherwise to each other).
    needs_peer: bool,
    /// The relay's allocation ports, one range per mode so that modes run side by side.
    ports: RangeInclusive<u16>,
}

/// uclient's modes, each with a port range of its own so that they run side by side.
const MODES: [Mode; 5] = [
    Mode {
        name: "channel",
        flags: &[],
        needs_peer: true,
        ports: 62_000..=62_099,
    },
    Mode {
        name: "send-indication",
        flags: &["-s"],
        needs_peer: true,
        ports: 62_100..=62_199,
    },
    Mode {
        name: "client-to-client",
        flags: &["-y"],
        needs_peer: false,
        ports: 62_200..=62_299,
    },
    Mode {
        name: "client-to-client-send",
        flags: &["-y", "-s"],
        needs_peer: false,
        ports: 62_300..=62_399,
    },
    Mode {
        name: "padding",
        flags: &["-D"],
        needs_peer: true,
        ports: 62_400..=62_499,
    },
];

/// Every mode at once, each against a relay of its own. A uclient run mostly waits (1 to 6 s
/// before it sends, then one datagram per client every 20 ms), so together the five take as
/// long as the slowest, about 7 s, where one after the other they took about 19.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode() {
    let runs: Vec<_> = MODES
        .into_iter()
        .map(|mode| (mode.name, tokio::spawn(interop(mode))))
        .collect();
    let mut failed = Vec::new();
    for (name, run) in runs {
        if let Err(error) = run.await {
            failed.push(format!("{name} mode: {error}"));
        }
    }
    assert!(
        failed.is_empty(),
        "uclient interop failed (each failure's message is above):\n{}",
        failed.join("\n")
    );
}

/// Runs uclient in `mode` against a relay of its own and checks both sides' accounts.
async fn interop(mode: Mode) {
    let test = format!("uclient interop ({} mode)", mode.name);
    let (Some(uclient), Some(peer_tool)) = (
        find_program("turnutils_uclient"),
        find_program("turnutils_peer"),
    ) else {
        return skip(
            &test,
            "coturn's turnutils_uclient and turnutils_peer are not installed \
             (apt-get install coturn)",
        );
    };
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("uclient");
    std::fs::create_dir_all(&logs).expect("a log directory");

    let relay = start_relay(mode.ports.clone()).await;
    // Killed when the test ends, passed or not.
    let peer = if mode.needs_peer {
        let port = free_port_pair(PEER_IP);
        let (stdout, stderr) = log_files(&logs.join(format!("{}-peer.log", mode.name)));
        let child = Command::new(&peer_tool)
            .args(["-L", &PEER_IP.to_string(), "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("turnutils_peer starts");
        Some((KilledOnDrop(child), port))
    } else {
        None
    };

    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    let credentials = credentials::rest_api_credentials(SECRET, expires, "uclient");
    let mut command = Command::new(&uclient);
    command.args(mode.flags).args([
        "-n",
        &MESSAGES.to_string(),
        "-m",
        &CLIENTS.to_string(),
        "-l",
        &LENGTH.to_string(),
        "-u",
        &credentials.username,
        "-w",
        &credentials.password,
        "-p",
        &relay.turn.port().to_string(),
    ]);
    if let Some((_, port)) = &peer {
        command.args(["-e", &PEER_IP.to_string(), "-r", &port.to_string()]);
    }
    command.arg(RELAY_IP.to_string());
    let log = logs.join(format!("{}-uclient.log", mode.name));
    let run = tokio::task::spawn_blocking(move || run_bounded(command, &log))
        .await
        .expect("the uclient thread");

    let metrics = http_get(relay.metrics, "/metrics").await.1;
    let summary = relay.stop().await;
    let output = run.unwrap_or_else(|failure| panic!("{test}: {failure}\n--- relay: {summary}"));
    let context = format!("{test}\n--- uclient:\n{output}\n--- relay: {summary}\n{metrics}");
    let counts = UclientCounts::read(&output)
        .unwrap_or_else(|| panic!("no totals in uclient's output: {context}"));
    let expected = CLIENTS * MESSAGES;
    assert_eq!(
        counts,
        UclientCounts {
            sent: expected,
            received: expected,
            lost: 0,
            send_dropped: 0,
        },
        "{context}"
    );
    let refusals: Vec<(u16, u64)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("relay_rejections_total{code=\"")?;
            let (code, count) = rest.split_once("\"} ")?;
            Some((code.parse().ok()?, count.parse().ok()?))
        })
        .collect();
    assert!(
        refusals.iter().any(|&(code, _)| code == 401),
        "the metrics list refusals by code: {context}"
    );
    assert!(
        refusals.iter().all(|&(code, _)| code == 401 || code == 438),
        "refused more than credential challenges: {refusals:?}\n{context}"
    );
    assert!(summary.drops.is_empty(), "{context}");
    assert_eq!(
        (summary.send_failures, summary.bind_failures),
        (0, 0),
        "{context}"
    );
    assert!(summary.allocations_created > 0, "{context}");
}

/// What uclient reports at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UclientCounts {
    sent: u64,
    received: u64,
    lost: u64,
    send_dropped: u64,
}

impl UclientCounts {
    /// Reads the totals uclient prints last:
    /// `start_mclient: tot_send_msgs=200, tot_recv_msgs=200` and
    /// `Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)`.
    fn read(output: &str) -> Option<Self> {
        let number_after = |line: &str, key: &str| -> Option<u64> {
            let rest = &line[line.find(key)? + key.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        // The progress lines carry the same keys after `msz=`; the totals come last.
        let totals = output
            .lines()
            .rfind(|line| line.contains("tot_send_msgs=") && !line.contains("msz="))?;
        let losses = output
            .lines()
            .rfind(|line| line.contains("Total lost packets "))?;
        Some(Self {
            sent: number_after(totals, "tot_send_msgs=")?,
            received: number_after(totals, "tot_recv_msgs=")?,
            lost: number_after(losses, "Total lost packets ")?,
            send_dropped: number_after(losses, "total send dropped ")?,
        })
    }
}

/// Runs `command` with its output in `log`, killed after [`RUN_LIMIT`]: its output after a
/// successful exit, or what went wrong.
fn run_bounded(mut command: Command, log: &Path) -> Result<String, String> {
    let (stdout, stderr) = log_files(log);
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|error| format!("turnutils_uclient does not start: {error}"))?;
    let mut child = KilledOnDrop(child);
    let give_up = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child
            .0
            .try_wait()
            .map_err(|error| format!("no status of turnutils_uclient: {error}"))?
        {
            break Some(status);
        }
        if Instant::now() >= give_up {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    let output = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(output),
        Some(status) => Err(format!("turnutils_uclient failed ({status}):\n{output}")),
        None => Err(format!(
            "turnutils_uclient ran past {RUN_LIMIT:?} and was killed:\n{output}"
        )),
    }
}

/// A child's stdout and stderr, both into a fresh file at `path`.
fn log_files(path: &Path) -> (Stdio, Stdio) {
    let file = File::create(path).expect("a log file");
    let twin = file.try_clone().expect("a second handle of the log file");
    (Stdio::from(file), Stdio::from(twin))
}

/// `name` on the `PATH`, if it is there.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// A port `p` of `ip` such that `p` and `p + 1` are free now (turnutils_peer listens on both).
fn free_port_pair(ip: Ipv4Addr) -> u16 {
    for _ in 0..100 {
        let first = StdUdpSocket::bind((ip, 0)).expect("a port of the peer's address");
        let port = first.local_addr().expect("its address").port();
        if port < u16::MAX && StdUdpSocket::bind((ip, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free neighbouring ports on {ip}");
}

/// A relay on 127.0.0.1 that allocates from `ports`, with room for every uclient allocation.
async fn start_relay(ports: RangeInclusive<u16>) -> LoopbackRelay {
    let mut relay = RelayConfig::new(REALM, SECRET);
    relay.public_v4 = Some(RELAY_IP);
    relay.port_range = ports;
    relay.unix_time_at_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    relay.seed = 5766;
    // Every uclient allocation uses one username: a probe, then an allocation and its RTCP
    // twin per client, more than the default quota of 10.
    relay.allocation_quota = 100;
    LoopbackRelay::start(RELAY_IP, relay).await
}

#[test]
fn uclients_totals_are_read_from_its_last_lines() {
    let output = "\
1: : start_mclient: msz=4, tot_send_msgs=41, tot_recv_msgs=40, tot_send_bytes ~ 4100
7: : start_mclient: tot_send_msgs=200, tot_recv_msgs=199
7: : start_mclient: tot_send_bytes ~ 20000, tot_recv_bytes ~ 19900
7: : Total lost packets 1 (0.500000%), total send dropped 2 (0.990099%)
";
    assert_eq!(
        UclientCounts::read(output),
        Some(UclientCounts {
            sent: 200,
            received: 199,
            lost: 1,
            send_dropped: 2,
        })
    );
    assert_eq!(UclientCounts::read("0: : error 508\n"), None);
}
