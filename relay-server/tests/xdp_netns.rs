//! relay-server with its XDP program attached to a real interface: a TURN client and a plain
//! UDP peer talk through it across network namespaces this test creates (and removes, even
//! when it fails), and the data on their channel is relayed in the kernel, by XDP_TX, never by
//! the relay's sockets.
//!
//! ```text
//! client ns  10.201.1.2 --- 10.201.1.254 \
//!                                         router ns (forwarding) --- 10.201.0.254 --- 10.201.0.1  relay ns (XDP on eth0)
//! peer ns    10.201.2.2 --- 10.201.2.254 /
//! ```
//!
//! Needs root, network namespaces, `ip` (iproute2) and BPF; without them it skips loudly, and
//! with `CI=true` (or `RELAY_XDP_REQUIRE_BPF`) a skip fails.

mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use netns_kit::{SubnetLink, TxChecksum};
use proto::credentials;
use support::{Client, GIVE_UP, KilledOnDrop, http_get, receive_within};

const SECRET: &str = "netns shared secret";
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 2);
const METRICS_PORT: u16 = 9100;

/// The test's namespaces; dropping them deletes them (and with them every veth and the
/// relay's attachment), whatever happened.
struct Namespaces(netns_kit::Namespaces);

impl Namespaces {
    fn name(&self, role: &str) -> String {
        self.0.name(role)
    }

    /// Builds the topology above. `Err` names the command that failed.
    fn create() -> Result<Self, netns_kit::Error> {
        let mut namespaces = netns_kit::Namespaces::new("vpnsim-xdp");
        for role in ["router", "relay", "client", "peer"] {
            namespaces.add(role)?;
        }
        let router = namespaces.name("router");
        for (role, subnet, host) in [("relay", 0, 1), ("client", 1, 2), ("peer", 2, 2)] {
            // The hosts checksum in software, as a host behind a NIC does: the program updates
            // checksums incrementally, as for frames off a real NIC, which arrive complete.
            SubnetLink {
                host_ns: &namespaces.name(role),
                addresses: &[Ipv4Addr::new(10, 201, subnet, host)],
                router_ns: &router,
                router_side: &format!("to-{role}"),
                router_address: Ipv4Addr::new(10, 201, subnet, 254),
                prefix: 24,
                tx: TxChecksum::Software,
            }
            .create()?;
        }
        netns_kit::run(
            "ip",
            &[
                "netns",
                "exec",
                &router,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        Ok(Self(namespaces))
    }

    /// Runs `f` on a thread of its own inside namespace `role`: sockets it opens live there.
    fn inside<T: Send + 'static>(&self, role: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name(role);
        std::thread::spawn(move || netns_kit::inside(&name, || Ok(f())))
            .join()
            .expect("the namespace thread")
            .expect("inside the namespace")
    }
}

/// Skips this test loudly, or fails where a skip is not allowed.
fn skip(why: &str) {
    support::skip("relay-server XDP namespace test", why);
}

#[tokio::test(flavor = "current_thread")]
async fn channel_data_is_relayed_in_the_kernel_with_xdp_attached() {
    let namespaces = match Namespaces::create() {
        Ok(namespaces) => namespaces,
        Err(why) => return skip(&format!("no network namespaces ({why})")),
    };
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespaces.name("relay"),
            env!("CARGO_BIN_EXE_relay-server"),
        ])
        .args(["--public-v4", &RELAY.to_string(), "--realm", "netns.test"])
        .args(["--port-range", "61000-61099", "--seed", "7"])
        .args(["--xdp", "eth0", "--xdp-mode", "generic"])
        .args(["--metrics", &format!("{RELAY}:{METRICS_PORT}")])
        .env("RELAY_SHARED_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let mut relay = KilledOnDrop(child);

    // The client's and the peer's sockets, opened inside their namespaces.
    let client_socket = namespaces.inside("client", || {
        std::net::UdpSocket::bind((CLIENT, 0)).expect("a client socket")
    });
    let peer_socket = namespaces.inside("peer", || {
        std::net::UdpSocket::bind((PEER, 9000)).expect("a peer socket")
    });
    for socket in [&client_socket, &peer_socket] {
        socket.set_nonblocking(true).expect("non-blocking");
    }
    let client_socket = tokio::net::UdpSocket::from_std(client_socket).expect("tokio socket");
    let peer = tokio::net::UdpSocket::from_std(peer_socket).expect("tokio socket");
    let peer_addr = SocketAddr::from((PEER, 9000));

    // The relay may still be loading its program: the first Allocate is retransmitted until
    // it answers, within the client's own timers.
    let credentials =
        credentials::rest_api_credentials(SECRET.as_bytes(), now_unix + 3600, "alice");
    let server = SocketAddr::from((RELAY, relay_server::TURN_PORT));
    let mut client = Client::on(client_socket, server, credentials, 1);
    if let Some(status) = relay.0.try_wait().expect("relay-server status") {
        let mut stderr = String::new();
        if let Some(mut pipe) = relay.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        if stderr.contains("cannot load the XDP program") {
            return skip(&format!("no BPF here: {stderr}"));
        }
        panic!("relay-server exited at once ({status}): {stderr}");
    }
    let relayed = client.allocate().await;
    assert_eq!(relayed.ip(), RELAY);
    client.bind_channel(peer_addr).await;

    // Client -> peer: ChannelData in, plain UDP out of the allocation's port.
    client.send(peer_addr, b"through the kernel").await;
    let (from, data) = receive_within(&peer).await;
    assert_eq!((from, &data[..]), (relayed, &b"through the kernel"[..]));
    // Peer -> client: plain UDP in, ChannelData out.
    peer.send_to(b"and back", relayed)
        .await
        .expect("peer sends");
    let (from, data) = client.receive().await;
    assert_eq!((from, &data[..]), (peer_addr, &b"and back"[..]));

    // The metrics say who carried them: the program, not the sockets.
    let metrics_addr = SocketAddr::from((RELAY, METRICS_PORT));
    let metrics = namespaces.inside("client", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(http_get(metrics_addr, "/metrics")).1
    });
    let counter = |prefix: &str| -> u64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    for path in ["tx/chan4-to-udp4", "tx/udp4-to-chan4"] {
        assert_eq!(
            counter(&format!("relay_xdp_runs_total{{reason=\"{path}\"}}")),
            1,
            "one datagram each way relayed by XDP_TX ({path}):\n{metrics}"
        );
    }
    assert_eq!(
        counter("relay_datagrams_relayed_total"),
        0,
        "the sockets relayed nothing:\n{metrics}"
    );
    assert_eq!(counter("relay_xdp_map_errors_total"), 0, "{metrics}");
    for table in ["channel", "allocation"] {
        let gauge = format!("relay_xdp_overflow_entries{{table=\"{table}\"}} 0");
        assert!(
            metrics.lines().any(|line| line == gauge),
            "{gauge}:\n{metrics}"
        );
    }

    // relay-server stops on SIGTERM and detaches: the interface carries no program after it.
    let pid = nix::unistd::Pid::from_raw(relay.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let give_up = Instant::now() + GIVE_UP;
    while relay.0.try_wait().expect("status").is_none() {
        assert!(Instant::now() < give_up, "relay-server stops on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let link = Command::new("ip")
        .args(["-n", &namespaces.name("relay"), "link", "show", "eth0"])
        .output()
        .expect("ip link show");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("xdpgeneric") && !link.contains("prog/xdp"),
        "still attached after exit: {link}"
    );
}
