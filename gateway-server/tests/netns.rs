//! gateway-server on a real TUN device, across network namespaces this test creates (and
//! removes, even when it fails):
//!
//! ```text
//! client ns  10.203.1.2 --- 10.203.1.1:51820  gw ns (gateway-server; forwards)
//!                                               tun0: 100.64.0.0/10 routed into it
//!                                               10.203.2.1 --- 10.203.2.2, 10.203.2.3  resource ns
//! ```
//!
//! The client seals UDP packets in tunnel frames: one to a granted resource, which a UDP echo
//! in the resource namespace answers through the gateway's TUN device; one to a resource
//! without a grant, which the gateway answers with ICMP administratively prohibited and reports
//! as a drop. On SIGTERM the gateway exits 0 and its flow log holds the one UDP flow, closed by
//! the shutdown, with the packets and bytes of both ways.
//!
//! Needs root, network namespaces, `ip` (iproute2) and /dev/net/tun; without them it skips
//! loudly, and with `CI=true` a skip fails.

use std::{
    fs::File,
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use nix::sched::{CloneFlags, setns};
use proto::{
    flow::{CloseReason, FlowRecord, Protocol},
    tunnel::{self, Direction, FrameHeader, SessionKey},
};

/// How long any one wait may take before the test fails.
const GIVE_UP: Duration = Duration::from_secs(10);

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 203, 1, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 203, 1, 1);
const GATEWAY_PORT: u16 = 51_820;
/// The granted resource, and one without a grant.
const RESOURCE: Ipv4Addr = Ipv4Addr::new(10, 203, 2, 2);
const NOT_GRANTED: Ipv4Addr = Ipv4Addr::new(10, 203, 2, 3);
const ECHO_PORT: u16 = 7_000;
const TUNNEL_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const SESSION_ID: u32 = 4_242;
const KEY: [u8; 32] = [7; 32];

/// The test's namespaces; dropping it deletes them (and with them every veth and the TUN
/// device), whatever happened.
struct Namespaces {
    prefix: String,
}

impl Namespaces {
    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Builds the topology above. `Err` names the command that failed.
    fn create() -> Result<Self, String> {
        if !Path::new("/dev/net/tun").exists() {
            return Err("no /dev/net/tun".into());
        }
        let namespaces = Self {
            prefix: format!("vpnsim-gws-{}", std::process::id()),
        };
        for role in ["client", "gw", "resource"] {
            ip(&["netns", "add", &namespaces.name(role)])?;
            ip(&["-n", &namespaces.name(role), "link", "set", "lo", "up"])?;
        }
        let (client, gw, resource) = (
            namespaces.name("client"),
            namespaces.name("gw"),
            namespaces.name("resource"),
        );
        for (ns, gw_side, subnet, addresses) in [
            (&client, "to-client", 1, &[CLIENT][..]),
            (&resource, "res0", 2, &[RESOURCE, NOT_GRANTED][..]),
        ] {
            ip(&[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", gw_side, "netns",
                &gw,
            ])?;
            for address in addresses {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    "eth0",
                ])?;
            }
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            let gw_address = format!("10.203.{subnet}.1");
            ip(&["-n", ns, "route", "add", "default", "via", &gw_address])?;
            ip(&[
                "-n",
                &gw,
                "addr",
                "add",
                &format!("{gw_address}/24"),
                "dev",
                gw_side,
            ])?;
            ip(&["-n", &gw, "link", "set", gw_side, "up"])?;
        }
        // The gateway's TUN device, persistent as a runner makes it; client tunnel IPs route
        // into it, and the namespace forwards between it and the resources.
        // No IPv6 link-local address on it, so the kernel sends no router solicitation into it
        // (which the gateway would drop as `unknown-destination`).
        ip(&["-n", &gw, "tuntap", "add", "dev", "tun0", "mode", "tun"])?;
        ip(&["-n", &gw, "link", "set", "tun0", "addrgenmode", "none"])?;
        ip(&["-n", &gw, "link", "set", "tun0", "up"])?;
        ip(&["-n", &gw, "route", "add", "100.64.0.0/10", "dev", "tun0"])?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            run(Command::new("ip").args(["netns", "exec", &gw, "sysctl", "-q", "-w", setting]))?;
        }
        Ok(namespaces)
    }

    /// Runs `f` with this thread inside namespace `role` (sockets it opens stay there), and
    /// comes back to the namespace the thread was in.
    fn inside<T>(&self, role: &str, f: impl FnOnce() -> T) -> T {
        let home = File::open("/proc/thread-self/ns/net").expect("this thread's namespace");
        let target = File::open(format!("/run/netns/{}", self.name(role))).expect("the namespace");
        setns(&target, CloneFlags::CLONE_NEWNET).expect("setns into the namespace");
        let result = f();
        setns(&home, CloneFlags::CLONE_NEWNET).expect("setns back");
        result
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for role in ["client", "resource", "gw"] {
            let _ = ip(&["netns", "del", &self.name(role)]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{shown}: {error}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Skips loudly, or fails where a skip is not allowed.
fn skip(why: &str) {
    let required = std::env::var("CI").is_ok_and(|value| value == "true");
    assert!(
        !required,
        "cannot run the gateway-server namespace test here: {why}"
    );
    eprintln!("SKIPPED: gateway-server namespace test: {why}");
}

/// The test's files: configuration, flow log, events, the gateway's stderr.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gateway-server-netns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the test's files");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The gateway-server process; killed (and reaped) when dropped.
struct GatewayProcess(Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A datagram as the echo received it: sender and payload.
type Received = (SocketAddr, Vec<u8>);

/// A UDP echo in the resource namespace: every datagram goes back to its sender, and is kept.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Received>>>,
}

impl Echo {
    fn start(socket: UdpSocket) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("a read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut buffer = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(&buffer[..len], from);
                    received.push((from, buffer[..len].to_vec()));
                }
            }
            received
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the echo and returns what it received.
    fn received(mut self) -> Vec<Received> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|thread| thread.join().expect("the echo thread"))
            .unwrap_or_default()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The client's side of the tunnel: sealed frames out, opened frames in.
struct TunnelClient {
    socket: UdpSocket,
    key: SessionKey,
    counter: u64,
}

impl TunnelClient {
    fn send(&mut self, inner: &[u8]) {
        self.counter += 1;
        let header = FrameHeader {
            session_id: SESSION_ID,
            counter: self.counter,
        };
        let frame = tunnel::seal(&self.key, Direction::ToGateway, header, inner);
        self.socket
            .send_to(&frame, (GATEWAY, GATEWAY_PORT))
            .expect("the frame is sent");
    }

    /// The inner packet of the next frame from the gateway.
    fn receive(&self) -> Vec<u8> {
        let mut buffer = [0u8; 2048];
        let (len, from) = self
            .socket
            .recv_from(&mut buffer)
            .expect("a frame from the gateway in time");
        assert_eq!(from, SocketAddr::from((GATEWAY, GATEWAY_PORT)));
        let (header, inner) = tunnel::open(&self.key, Direction::ToClient, &buffer[..len])
            .expect("a frame that opens under the client's key");
        assert_eq!(header.session_id, SESSION_ID);
        inner.to_vec()
    }
}

fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64).udp(src.1, dst.1);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut packet, payload)
        .expect("writing into a Vec");
    packet
}

fn config() -> String {
    let key: String = KEY.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        r#"tun: tun0
listen: ["{GATEWAY}:{GATEWAY_PORT}"]
dns_server: "10.203.1.53:53"
seed: 1
time_origin_unix_ms: 1767225600000
clients:
  - {{ id: 0, session_id: {SESSION_ID}, key: "{key}", tunnel_v4: "{TUNNEL_IP}", tunnel_v6: "fd00:2021:1111::2" }}
resources:
  - {{ id: 0, cidr: "{RESOURCE}/32" }}
  - {{ id: 1, cidr: "{NOT_GRANTED}/32" }}
grants:
  - {{ client: 0, resource: 0, filters: ["udp/{ECHO_PORT}"] }}
"#
    )
}

/// Waits until a line of the events file satisfies `found`; fails after [`GIVE_UP`], or when
/// the gateway exits.
fn wait_for_event(
    files: &Files,
    gateway: &mut GatewayProcess,
    what: &str,
    found: impl Fn(&serde_json::Value) -> bool,
) {
    let give_up = Instant::now() + GIVE_UP;
    loop {
        let events = files.read("events.jsonl");
        if events
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .any(|event| found(&event))
        {
            return;
        }
        if let Some(status) = gateway.0.try_wait().expect("gateway-server status") {
            panic!(
                "gateway-server exited ({status}) before {what}; stderr:\n{}",
                files.read("stderr.log")
            );
        }
        assert!(
            Instant::now() < give_up,
            "gave up waiting for {what}; events:\n{events}\nstderr:\n{}",
            files.read("stderr.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_reaches_a_granted_resource_through_the_tun_and_its_flow_is_logged_at_shutdown() {
    let namespaces = match Namespaces::create() {
        Ok(namespaces) => namespaces,
        Err(why) => return skip(&format!("no network namespaces with a TUN device ({why})")),
    };
    let files = Files::new();
    std::fs::write(files.path("gateway.yaml"), config()).expect("the configuration");
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
    let mut gateway = GatewayProcess(child);
    wait_for_event(&files, &mut gateway, "listening", |event| {
        event["listening"] == serde_json::json!([format!("{GATEWAY}:{GATEWAY_PORT}")])
    });

    let echo = Echo::start(namespaces.inside("resource", || {
        UdpSocket::bind((RESOURCE, ECHO_PORT)).expect("the echo socket")
    }));
    let socket = namespaces.inside("client", || {
        UdpSocket::bind((CLIENT, 0)).expect("the client's socket")
    });
    socket
        .set_read_timeout(Some(GIVE_UP))
        .expect("a read timeout");
    let client_addr = socket.local_addr().expect("the client's address");
    let mut client = TunnelClient {
        socket,
        key: SessionKey::new(KEY),
        counter: 0,
    };

    // 1. UDP to the granted resource and its echo back, through the TUN device both ways.
    let payload = b"through the gateway and back";
    client.send(&udp_packet(
        (TUNNEL_IP, 40_000),
        (RESOURCE, ECHO_PORT),
        payload,
    ));
    let reply = client.receive();
    let reply = SlicedPacket::from_ip(&reply).expect("an IP packet in the frame");
    let Some(NetSlice::Ipv4(ipv4)) = &reply.net else {
        panic!("not IPv4: {reply:?}");
    };
    assert_eq!(ipv4.header().source_addr(), RESOURCE);
    assert_eq!(ipv4.header().destination_addr(), TUNNEL_IP);
    let Some(TransportSlice::Udp(udp)) = &reply.transport else {
        panic!("not UDP: {reply:?}");
    };
    assert_eq!(
        (udp.source_port(), udp.destination_port()),
        (ECHO_PORT, 40_000)
    );
    assert_eq!(udp.payload(), payload);

    // 2. UDP to a resource without a grant: ICMP administratively prohibited, and a drop.
    client.send(&udp_packet(
        (TUNNEL_IP, 40_001),
        (NOT_GRANTED, ECHO_PORT),
        b"denied",
    ));
    let answer = client.receive();
    let answer = SlicedPacket::from_ip(&answer).expect("an IP packet in the frame");
    let Some(TransportSlice::Icmpv4(icmp)) = &answer.transport else {
        panic!("not ICMP: {answer:?}");
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 13), "{icmp:?}");
    wait_for_event(&files, &mut gateway, "the drop event", |event| {
        event["drop"] == serde_json::json!({"reason": "not-granted", "client": 0})
    });

    // A control line that does not parse is refused and changes nothing; EOF on stdin does
    // not stop the gateway.
    let mut stdin = gateway.0.stdin.take().expect("the gateway's stdin");
    writeln!(stdin, "{{\"grant\":{{\"client\":0}}}}").expect("a control line");
    drop(stdin);
    wait_for_event(&files, &mut gateway, "the control error", |event| {
        event.get("control_error").is_some()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        gateway.0.try_wait().expect("status").is_none(),
        "gateway-server stopped at EOF on stdin; stderr:\n{}",
        files.read("stderr.log")
    );

    // 3. SIGTERM: exit 0, the open flow's record written, the shut_down event last.
    let pid = nix::unistd::Pid::from_raw(gateway.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let give_up = Instant::now() + GIVE_UP;
    let status = loop {
        if let Some(status) = gateway.0.try_wait().expect("status") {
            break status;
        }
        assert!(Instant::now() < give_up, "gateway-server stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "gateway-server exits 0 on SIGTERM ({status}); stderr:\n{}",
        files.read("stderr.log")
    );

    let flows = files.read("flows.jsonl");
    let records: Vec<FlowRecord> = flows
        .lines()
        .map(|line| serde_json::from_str(line).expect("a flow record per line"))
        .collect();
    assert_eq!(records.len(), 1, "one flow:\n{flows}");
    let record = &records[0];
    assert_eq!(record.protocol, Protocol::Udp);
    assert_eq!(record.close_reason, CloseReason::Shutdown);
    assert_eq!(
        (record.inner_src_ip, record.inner_src_port),
        (TUNNEL_IP.into(), 40_000)
    );
    assert_eq!(
        (record.inner_dst_ip, record.inner_dst_port),
        (RESOURCE.into(), ECHO_PORT)
    );
    let bytes = payload.len() as u64;
    assert_eq!(
        (
            record.tx_packets,
            record.tx_bytes,
            record.rx_packets,
            record.rx_bytes
        ),
        (1, bytes, 1, bytes),
        "{flows}"
    );
    assert_eq!(record.outer_contexts.len(), 1, "{flows}");
    assert_eq!(record.outer_contexts[0].remote, client_addr);
    assert_eq!(
        record.outer_contexts[0].local,
        SocketAddr::from((GATEWAY, GATEWAY_PORT))
    );
    // The records are on the configured clock: time_origin_unix_ms is 2026-01-01T00:00:00Z.
    assert!(
        record.start.to_string().starts_with("2026-01-01T00:00:"),
        "{flows}"
    );
    assert!(record.start <= record.last_packet && record.last_packet <= record.end);

    let events = files.read("events.jsonl");
    let events: Vec<serde_json::Value> = events
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event per line"))
        .collect();
    let drops: Vec<_> = events
        .iter()
        .filter_map(|event| event.get("drop"))
        .collect();
    assert_eq!(
        drops,
        [&serde_json::json!({"reason": "not-granted", "client": 0})],
        "the one packet denied is the one drop: {events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&serde_json::json!({"shut_down": {"flows": 1}})),
        "{events:?}"
    );

    let received = echo.received();
    assert_eq!(
        received,
        vec![(SocketAddr::from((TUNNEL_IP, 40_000)), payload.to_vec())],
        "the resource saw the client's tunnel address and payload"
    );
}
