//! What the namespace tests share: the namespaces (removed on drop), the test's files, the
//! gateway-server process, a UDP echo behind the gateway, a tunnel client, a TURN relay (the
//! sans-IO `relay` on plain sockets) for the gateway's own allocation, and a DNS server.
//!
//! ```text
//! client ns    10.203.1.2 --- 10.203.1.1:51820  gw ns (gateway-server; forwards)
//!                                                 tun0: 100.64.0.0/10 routed into it
//!                                                 10.203.2.1 --- 10.203.2.2, .3  resource ns
//!                                                 10.203.3.254 --- 10.203.3.1:3478  relay ns
//!                                                                  10.203.3.1:53    (and DNS)
//! ```

#![allow(dead_code)] // Each test uses its own part.

use std::{
    collections::BTreeMap,
    fs::File,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use etherparse::PacketBuilder;
use hickory_proto::{
    op::{Message, MessageType, OpCode},
    rr::{RData, Record, RecordType, rdata::A},
};
use netns_kit::{SubnetLink, TxChecksum, ip};
use proto::tunnel::{self, Direction, FrameHeader, SessionKey};
use relay::{Event, Relay, RelayConfig, TURN_PORT};

/// How long any one wait may take before the test fails.
pub const GIVE_UP: Duration = Duration::from_secs(10);

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 203, 1, 2);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 203, 1, 1);
pub const GATEWAY_PORT: u16 = 51_820;
/// The granted resource, and one without a grant.
pub const RESOURCE: Ipv4Addr = Ipv4Addr::new(10, 203, 2, 2);
pub const NOT_GRANTED: Ipv4Addr = Ipv4Addr::new(10, 203, 2, 3);
pub const ECHO_PORT: u16 = 7_000;
pub const RELAY: Ipv4Addr = Ipv4Addr::new(10, 203, 3, 1);
pub const RELAY_SECRET: &[u8] = b"netns shared secret for the relay";
/// The DNS server, beside the relay.
pub const DNS_PORT: u16 = 53;
/// The name the DNS server answers, with [`RESOURCE`].
pub const DOMAIN: &str = "api.example.com";
pub const TUNNEL_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
pub const SESSION_ID: u32 = 4_242;
pub const KEY: [u8; 32] = [7; 32];

/// The gateway's tunnel address.
pub fn gateway_addr() -> SocketAddr {
    SocketAddr::from((GATEWAY, GATEWAY_PORT))
}

/// A test's namespaces; dropping them deletes them (and with them every veth and the TUN
/// device), whatever happened.
pub struct Namespaces(netns_kit::Namespaces);

impl Namespaces {
    pub fn name(&self, role: &str) -> String {
        self.0.name(role)
    }

    /// Builds the topology above under a prefix of this process and `tag`. `Err` names the
    /// command that failed.
    pub fn create(tag: &str) -> Result<Self, String> {
        if !Path::new("/dev/net/tun").exists() {
            return Err("no /dev/net/tun".into());
        }
        Self::build(tag).map_err(|error| error.to_string())
    }

    fn build(tag: &str) -> Result<Self, netns_kit::Error> {
        let mut namespaces = netns_kit::Namespaces::tagged("vpnsim-gws", tag);
        for role in ["client", "gw", "resource", "relay"] {
            namespaces.add(role)?;
        }
        let gw = namespaces.name("gw");
        for (role, gw_side, subnet, host, addresses) in [
            ("client", "to-client", 1, 1, &[CLIENT][..]),
            ("resource", "res0", 2, 1, &[RESOURCE, NOT_GRANTED][..]),
            ("relay", "to-relay", 3, 254, &[RELAY][..]),
        ] {
            SubnetLink {
                host_ns: &namespaces.name(role),
                addresses,
                router_ns: &gw,
                router_side: gw_side,
                router_address: Ipv4Addr::new(10, 203, subnet, host),
                prefix: 24,
                tx: TxChecksum::Offload,
            }
            .create()?;
        }
        // The gateway's TUN device, persistent as a runner makes it; client tunnel IPs route
        // into it, and the namespace forwards between it and the resources. No IPv6 link-local
        // address on it, so the kernel sends no router solicitation into it (which the gateway
        // would drop as `unknown-destination`).
        ip(&["-n", &gw, "tuntap", "add", "dev", "tun0", "mode", "tun"])?;
        ip(&["-n", &gw, "link", "set", "tun0", "addrgenmode", "none"])?;
        ip(&["-n", &gw, "link", "set", "tun0", "up"])?;
        ip(&["-n", &gw, "route", "add", "100.64.0.0/10", "dev", "tun0"])?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            netns_kit::run("ip", &["netns", "exec", &gw, "sysctl", "-q", "-w", setting])?;
        }
        Ok(Self(namespaces))
    }

    /// Runs `f` with this thread inside namespace `role` (sockets it opens stay there), and
    /// comes back to the namespace the thread was in.
    pub fn inside<T>(&self, role: &str, f: impl FnOnce() -> T) -> T {
        netns_kit::inside(&self.name(role), || Ok(f())).expect("inside the namespace")
    }
}

/// Skips loudly, or fails where a skip is not allowed.
pub fn skip(why: &str) {
    let required = std::env::var("CI").is_ok_and(|value| value == "true");
    assert!(
        !required,
        "cannot run the gateway-server namespace test here: {why}"
    );
    eprintln!("SKIPPED: gateway-server namespace test: {why}");
}

/// A test's files: configuration, flow log, events, the gateway's stderr. Removed on drop
/// unless the test failed.
pub struct Files {
    dir: PathBuf,
}

impl Files {
    pub fn new(tag: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gateway-server-netns-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the test's files");
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The events so far, one JSON value each.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.read("events.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).expect("an event per line"))
            .collect()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The gateway-server process, started in the gateway's namespace with `config`, its flow
/// log, events and stderr in `files`, and stdin piped; killed (and reaped) when dropped.
pub struct GatewayProcess(pub Child);

impl GatewayProcess {
    pub fn start(namespaces: &Namespaces, files: &Files, config: &str) -> Self {
        std::fs::write(files.path("gateway.yaml"), config).expect("the configuration");
        let stderr = File::create(files.path("stderr.log")).expect("a stderr file");
        let child = Command::new("ip")
            .args(["netns", "exec", &namespaces.name("gw")])
            .arg(env!("CARGO_BIN_EXE_gateway-server"))
            .arg("--config")
            .arg(files.path("gateway.yaml"))
            .arg("--flow-log")
            .arg(files.path("flows.jsonl"))
            .arg("--events")
            .arg(files.path("events.jsonl"))
            .arg("--control-stdin")
            .env("RUST_LOG", "info,gateway_server=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("gateway-server starts");
        Self(child)
    }

    /// Waits until an event satisfies `found` and returns it; fails after [`GIVE_UP`], or when
    /// the gateway exits first.
    pub fn wait_for_event(
        &mut self,
        files: &Files,
        what: &str,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let give_up = Instant::now() + GIVE_UP;
        loop {
            if let Some(event) = files.events().into_iter().find(|event| found(event)) {
                return event;
            }
            if let Some(status) = self.0.try_wait().expect("gateway-server status") {
                panic!(
                    "gateway-server exited ({status}) before {what}; stderr:\n{}",
                    files.read("stderr.log")
                );
            }
            assert!(
                Instant::now() < give_up,
                "gave up waiting for {what}; events: {:?}\nstderr:\n{}",
                files.events(),
                files.read("stderr.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit, which must be 0.
    pub fn terminate(&mut self, files: &Files) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.wait_for_clean_exit(files);
    }

    /// Waits for the exit, which must be 0.
    pub fn wait_for_clean_exit(&mut self, files: &Files) {
        let give_up = Instant::now() + GIVE_UP;
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("status") {
                break status;
            }
            assert!(Instant::now() < give_up, "gateway-server stops");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "gateway-server exits 0 ({status}); stderr:\n{}",
            files.read("stderr.log")
        );
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A datagram as a host received it: sender and payload.
pub type Received = (SocketAddr, Vec<u8>);

/// Runs `serve` on a thread of its own until stopped, and hands back what it returns.
pub struct Host<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Host<T> {
    fn spawn(serve: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        Self {
            stop,
            thread: Some(std::thread::spawn(move || serve(&stopped))),
        }
    }

    /// Like [`Host::spawn`], with the host's thread inside namespace `ns` (its name).
    fn spawn_in(ns: String, serve: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Self {
        Self::spawn(move |stop| {
            netns_kit::inside(&ns, || Ok(serve(stop))).expect("inside the host's namespace")
        })
    }

    /// Stops the host and returns what it served.
    pub fn stop(mut self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("a running host")
            .join()
            .expect("the host's thread")
    }
}

impl<T> Drop for Host<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP echo on `socket`: every datagram goes back to its sender, and is kept.
pub fn echo(socket: UdpSocket) -> Host<Vec<Received>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("a read timeout");
    Host::spawn(move |stop| {
        let mut received = Vec::new();
        let mut buffer = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(&buffer[..len], from);
                received.push((from, buffer[..len].to_vec()));
            }
        }
        received
    })
}

/// A TURN relay at [`RELAY`]:3478 in the namespace `ns` (its name): the sans-IO relay with a
/// socket for its TURN port and one per allocation, polled. `allocations` follows how many it
/// holds.
pub fn relay(ns: String, allocations: Arc<AtomicUsize>) -> Host<()> {
    Host::spawn_in(ns, move |stop| {
        let mut config = RelayConfig::new("netns.test", RELAY_SECRET);
        config.public_v4 = Some(RELAY);
        config.port_range = 61_000..=61_099;
        config.unix_time_at_start = unix_now();
        config.seed = 3;
        let mut relay = Relay::new(config, Instant::now()).expect("a relay");
        let mut sockets = BTreeMap::from([(TURN_PORT, nonblocking((RELAY, TURN_PORT)))]);
        let mut buffer = [0u8; 2048];
        let mut datagram = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut idle = true;
            for (&port, socket) in &sockets {
                while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                    idle = false;
                    let to = SocketAddr::from((RELAY, port));
                    if let Ok(Some(relayed)) = relay.handle_input(from, to, &buffer[..len], now) {
                        datagram.clear();
                        datagram.extend(relayed.header().iter().flatten());
                        datagram.extend_from_slice(relayed.data);
                        let _ = sockets[&relayed.src.port()].send_to(&datagram, relayed.dst);
                    }
                }
            }
            while let Some(transmit) = relay.poll_transmit() {
                let _ = sockets[&transmit.src.port()].send_to(&transmit.payload, transmit.dst);
            }
            while let Some(event) = relay.poll_event() {
                match event {
                    Event::AllocationCreated { port, .. } => {
                        sockets.insert(port, nonblocking((RELAY, port)));
                    }
                    Event::AllocationFreed { port, .. } => {
                        sockets.remove(&port);
                    }
                    _ => {}
                }
            }
            if relay.poll_timeout().is_some_and(|deadline| deadline <= now) {
                relay.handle_timeout(now);
            }
            allocations.store(relay.allocation_count(), Ordering::Relaxed);
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
}

/// A DNS server at [`RELAY`]:53 in the namespace `ns` (its name): A queries for [`DOMAIN`]
/// are answered with [`RESOURCE`] (TTL 60 s), others with no answer. Returns the source ports
/// the queries came from.
pub fn dns_server(ns: String) -> Host<Vec<u16>> {
    Host::spawn_in(ns, move |stop| {
        let socket = UdpSocket::bind((RELAY, DNS_PORT)).expect("the DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("a read timeout");
        let mut ports = Vec::new();
        let mut buffer = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, from)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            ports.push(from.port());
            if let Some(answer) = dns_answer(&buffer[..len]) {
                let _ = socket.send_to(&answer, from);
            }
        }
        ports
    })
}

fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    let name = question.name().to_ascii();
    if question.query_type() == RecordType::A && name.trim_end_matches('.') == DOMAIN {
        let data = RData::A(A::from(RESOURCE));
        response.add_answer(Record::from_rdata(question.name().clone(), 60, data));
    }
    response.to_vec().ok()
}

fn nonblocking(addr: (Ipv4Addr, u16)) -> UdpSocket {
    let socket = UdpSocket::bind(addr).expect("a relay socket");
    socket.set_nonblocking(true).expect("non-blocking");
    socket
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The client's side of the tunnel: sealed frames out to `gateway` (its address, or its
/// relayed address), opened frames in from there.
pub struct TunnelClient {
    pub socket: UdpSocket,
    pub gateway: SocketAddr,
    key: SessionKey,
    counter: u64,
}

impl TunnelClient {
    /// A client socket in the client's namespace, talking to `gateway`.
    pub fn open(namespaces: &Namespaces, gateway: SocketAddr) -> Self {
        let socket = namespaces.inside("client", || {
            UdpSocket::bind((CLIENT, 0)).expect("the client's socket")
        });
        socket
            .set_read_timeout(Some(GIVE_UP))
            .expect("a read timeout");
        Self {
            socket,
            gateway,
            key: SessionKey::new(KEY),
            counter: 0,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("the client's address")
    }

    pub fn send(&mut self, inner: &[u8]) {
        self.counter += 1;
        let header = FrameHeader {
            session_id: SESSION_ID,
            counter: self.counter,
        };
        let frame = tunnel::seal(&self.key, Direction::ToGateway, header, inner);
        self.socket
            .send_to(&frame, self.gateway)
            .expect("the frame is sent");
    }

    /// The inner packet of the next frame from the gateway.
    pub fn receive(&self) -> Vec<u8> {
        let mut buffer = [0u8; 2048];
        let (len, from) = self
            .socket
            .recv_from(&mut buffer)
            .expect("a frame from the gateway in time");
        assert_eq!(from, self.gateway, "the frame's sender");
        let (header, inner) = tunnel::open(&self.key, Direction::ToClient, &buffer[..len])
            .expect("a frame that opens under the client's key");
        assert_eq!(header.session_id, SESSION_ID);
        inner.to_vec()
    }
}

/// An IPv4 UDP packet with its checksums.
pub fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64).udp(src.1, dst.1);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut packet, payload)
        .expect("writing into a Vec");
    packet
}

/// The gateway's configuration: one client, the granted resource (UDP to the echo port), the
/// one without a grant, the DNS resource [`DOMAIN`] (granted as the first), and `extra` lines
/// (a relay, DNS source ports).
pub fn config(extra: &str) -> String {
    let key: String = KEY.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        r#"tun: tun0
listen: ["{GATEWAY}:{GATEWAY_PORT}"]
dns_server: "{RELAY}:{DNS_PORT}"
seed: 1
time_origin_unix_ms: 1767225600000
clients:
  - {{ id: 0, session_id: {SESSION_ID}, key: "{key}", tunnel_v4: "{TUNNEL_IP}", tunnel_v6: "fd00:2021:1111::2" }}
resources:
  - {{ id: 0, cidr: "{RESOURCE}/32" }}
  - {{ id: 1, cidr: "{NOT_GRANTED}/32" }}
  - {{ id: 2, dns: "{DOMAIN}" }}
grants:
  - {{ client: 0, resource: 0, filters: ["udp/{ECHO_PORT}"] }}
  - {{ client: 0, resource: 2, filters: ["udp/{ECHO_PORT}"] }}
{extra}"#
    )
}
