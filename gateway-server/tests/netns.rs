//! gateway-server on a real TUN device, across network namespaces these tests create (and
//! remove, even when they fail); the topology is in `support`.
//!
//! The client seals UDP packets in tunnel frames: one to a granted resource, which a UDP echo
//! in the resource namespace answers through the gateway's TUN device; one to a resource
//! without a grant, which the gateway answers with ICMP administratively prohibited and reports
//! as a drop. On SIGTERM the gateway exits 0 and its flow log holds the one UDP flow, closed by
//! the shutdown, with the packets and bytes of both ways. The second test reaches the gateway
//! through its own TURN allocation, as a runner asks with `via_relay`, and stops it with the
//! `shutdown` command. The third maps a DNS proxy IP with `map_dns`: the gateway resolves the
//! name from a DNS source port of its own and forwards the client's packet to the answer.
//!
//! Needs root, network namespaces, `ip` (iproute2) and /dev/net/tun; without them it skips
//! loudly, and with `CI=true` a skip fails.

mod support;

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proto::{
    credentials,
    flow::{CloseReason, FlowRecord, Protocol},
};
use support::{
    DOMAIN, ECHO_PORT, Files, GIVE_UP, GatewayProcess, NOT_GRANTED, Namespaces, RELAY,
    RELAY_SECRET, RESOURCE, TUNNEL_IP, TunnelClient, config, dns_server, echo, gateway_addr, relay,
    skip, udp_packet, unix_now,
};

/// Checks that `inner` is the echo of `payload` from the resource (as the client addressed it,
/// `from`) to the client's port 40000.
fn assert_echo(inner: &[u8], payload: &[u8], from: Ipv4Addr) {
    let reply = SlicedPacket::from_ip(inner).expect("an IP packet in the frame");
    let Some(NetSlice::Ipv4(ipv4)) = &reply.net else {
        panic!("not IPv4: {reply:?}");
    };
    assert_eq!(ipv4.header().source_addr(), from);
    assert_eq!(ipv4.header().destination_addr(), TUNNEL_IP);
    let Some(TransportSlice::Udp(udp)) = &reply.transport else {
        panic!("not UDP: {reply:?}");
    };
    assert_eq!(
        (udp.source_port(), udp.destination_port()),
        (ECHO_PORT, 40_000)
    );
    assert_eq!(udp.payload(), payload);
}

/// The one record of the flow's log: UDP from the client's port 40000 to the echo (at
/// `domain`, for a DNS resource), one packet of `payload` each way, closed by the shutdown,
/// over `outer` (remote, local).
fn assert_one_udp_record(
    files: &Files,
    payload: &[u8],
    outer: (SocketAddr, SocketAddr),
    domain: Option<&str>,
) {
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
    assert_eq!(record.inner_domain.as_deref(), domain, "{flows}");
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
    assert_eq!(
        (
            record.outer_contexts[0].remote,
            record.outer_contexts[0].local
        ),
        outer,
        "{flows}"
    );
    // The records are on the configured clock: time_origin_unix_ms is 2026-01-01T00:00:00Z.
    assert!(
        record.start.to_string().starts_with("2026-01-01T00:00:"),
        "{flows}"
    );
    assert!(record.start <= record.last_packet && record.last_packet <= record.end);
}

#[test]
fn a_client_reaches_a_granted_resource_through_the_tun_and_its_flow_is_logged_at_shutdown() {
    let namespaces = match Namespaces::create("direct") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip(&format!("no network namespaces with a TUN device ({why})")),
    };
    let files = Files::new("direct");
    let mut gateway = GatewayProcess::start(&namespaces, &files, &config(""));
    gateway.wait_for_event(&files, "listening", |event| {
        event["listening"] == serde_json::json!([gateway_addr().to_string()])
    });
    let echo = echo(namespaces.inside("resource", || {
        UdpSocket::bind((RESOURCE, ECHO_PORT)).expect("the echo socket")
    }));
    let mut client = TunnelClient::open(&namespaces, gateway_addr());

    // 1. UDP to the granted resource and its echo back, through the TUN device both ways.
    let payload = b"through the gateway and back";
    client.send(&udp_packet(
        (TUNNEL_IP, 40_000),
        (RESOURCE, ECHO_PORT),
        payload,
    ));
    assert_echo(&client.receive(), payload, RESOURCE);

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
    gateway.wait_for_event(&files, "the drop event", |event| {
        event["drop"] == serde_json::json!({"reason": "not-granted", "client": 0})
    });

    // A control line that does not parse is refused and changes nothing; EOF on stdin does
    // not stop the gateway.
    let mut stdin = gateway.0.stdin.take().expect("the gateway's stdin");
    writeln!(stdin, "{{\"grant\":{{\"client\":0}}}}").expect("a control line");
    drop(stdin);
    gateway.wait_for_event(&files, "the control error", |event| {
        event.get("control_error").is_some()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        gateway.0.try_wait().expect("status").is_none(),
        "gateway-server stopped at EOF on stdin; stderr:\n{}",
        files.read("stderr.log")
    );

    // 3. SIGTERM: exit 0, the open flow's record written, the shut_down event last.
    gateway.terminate(&files);
    assert_one_udp_record(&files, payload, (client.addr(), gateway_addr()), None);
    let events = files.events();
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
    assert_eq!(
        echo.stop(),
        vec![(SocketAddr::from((TUNNEL_IP, 40_000)), payload.to_vec())],
        "the resource saw the client's tunnel address and payload"
    );
}

#[test]
fn a_client_reaches_the_gateway_through_its_own_relay_allocation() {
    let namespaces = match Namespaces::create("relayed") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip(&format!("no network namespaces with a TUN device ({why})")),
    };
    let files = Files::new("relayed");
    let allocations = Arc::new(AtomicUsize::new(0));
    let relay = relay(namespaces.name("relay"), Arc::clone(&allocations));
    let credentials =
        credentials::rest_api_credentials(RELAY_SECRET, unix_now() + 3_600, "gateway");
    let mut gateway = GatewayProcess::start(
        &namespaces,
        &files,
        &config(&format!(
            "relay: {{ server: \"{RELAY}:3478\", username: \"{}\", password: \"{}\", families: v4 }}\n",
            credentials.username, credentials.password
        )),
    );
    let relayed = gateway.wait_for_event(&files, "the allocation", |event| {
        event.get("relayed").is_some()
    });
    let relayed: Vec<SocketAddr> =
        serde_json::from_value(relayed["relayed"].clone()).expect("relayed addresses");
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    assert_eq!(relayed[0].ip(), RELAY);
    let echo = echo(namespaces.inside("resource", || {
        UdpSocket::bind((RESOURCE, ECHO_PORT)).expect("the echo socket")
    }));

    // The runner puts the client on the relay: a channel to it from the gateway's allocation.
    let mut client = TunnelClient::open(&namespaces, relayed[0]);
    let mut stdin = gateway.0.stdin.take().expect("the gateway's stdin");
    writeln!(stdin, "{{\"via_relay\":\"{}\"}}", client.addr()).expect("a control line");
    gateway.wait_for_event(&files, "the channel", |event| {
        event["channel_bound"] == serde_json::json!(client.addr().to_string())
    });

    // The frame goes to the relayed address, reaches the gateway as ChannelData, and the echo
    // comes back the same way, from the relayed address.
    let payload = b"through the gateway's relay";
    client.send(&udp_packet(
        (TUNNEL_IP, 40_000),
        (RESOURCE, ECHO_PORT),
        payload,
    ));
    assert_echo(&client.receive(), payload, RESOURCE);

    // The shutdown command stops it as SIGTERM does.
    writeln!(stdin, "{{\"shutdown\":null}}").expect("a control line");
    gateway.wait_for_clean_exit(&files);
    // The outer context is the one the relay gives: the client as its peer, at the relayed
    // address.
    assert_one_udp_record(&files, payload, (client.addr(), relayed[0]), None);
    assert_eq!(
        files.events().last(),
        Some(&serde_json::json!({"shut_down": {"flows": 1}}))
    );
    // The allocation was released on the way out.
    let give_up = Instant::now() + GIVE_UP;
    while allocations.load(Ordering::Relaxed) != 0 {
        assert!(Instant::now() < give_up, "the allocation is released");
        std::thread::sleep(Duration::from_millis(10));
    }
    relay.stop();
    assert_eq!(echo.stop().len(), 1);
}

#[test]
fn a_dns_resource_is_reached_through_its_proxy_ip_once_the_gateway_resolves_it() {
    let namespaces = match Namespaces::create("dns") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip(&format!("no network namespaces with a TUN device ({why})")),
    };
    let files = Files::new("dns");
    let dns = dns_server(namespaces.name("relay"));
    let mut gateway = GatewayProcess::start(
        &namespaces,
        &files,
        &config("dns_source_ports: \"34000-34003\"\n"),
    );
    gateway.wait_for_event(&files, "listening", |event| {
        event.get("listening").is_some()
    });
    let echo = echo(namespaces.inside("resource", || {
        UdpSocket::bind((RESOURCE, ECHO_PORT)).expect("the echo socket")
    }));
    let mut client = TunnelClient::open(&namespaces, gateway_addr());

    // The mapping starts the resolution; the client's packet to the proxy IP waits for the
    // answer if it comes first, then goes to the resource's real IP.
    let proxy_ip = Ipv4Addr::new(100, 96, 0, 1);
    let mut stdin = gateway.0.stdin.take().expect("the gateway's stdin");
    writeln!(
        stdin,
        "{{\"map_dns\":{{\"client\":0,\"proxy_ip\":\"{proxy_ip}\",\"domain\":\"{DOMAIN}\"}}}}"
    )
    .expect("a control line");
    // The gateway reads its control lines and its tunnel socket in one loop, in whichever
    // order they come: the packet waits for the mapping to be applied, or it would meet an
    // unmapped proxy IP.
    gateway.wait_for_event(&files, "the mapping", |event| {
        event.get("control_applied").and_then(|name| name.as_str()) == Some("map_dns")
    });
    let payload = b"to a name";
    client.send(&udp_packet(
        (TUNNEL_IP, 40_000),
        (proxy_ip, ECHO_PORT),
        payload,
    ));
    // The echo comes back from the proxy IP the client used.
    assert_echo(&client.receive(), payload, proxy_ip);

    gateway.terminate(&files);
    assert_one_udp_record(
        &files,
        payload,
        (client.addr(), gateway_addr()),
        Some(DOMAIN),
    );
    let ports = dns.stop();
    assert_eq!(ports.len(), 1, "one query: {ports:?}");
    assert!(
        (34_000..=34_003).contains(&ports[0]),
        "the query left from a DNS source port: {ports:?}"
    );
    assert_eq!(
        echo.stop(),
        vec![(SocketAddr::from((TUNNEL_IP, 40_000)), payload.to_vec())],
        "the resource saw the client's tunnel address"
    );
    assert!(
        !files
            .events()
            .iter()
            .any(|event| event.get("drop").is_some()),
        "nothing dropped: {:?}",
        files.events()
    );
}
