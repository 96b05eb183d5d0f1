//! The comparison of a real run with the model's prediction: times within the tolerance and
//! not beyond, content exact, deliveries in order without TCP sequence numbers.

use std::net::SocketAddr;

use observation::{ClientId, Delivery, OuterContext, Packet, PacketKind, Receiver, TcpFlags};
use proto::flow::{CloseReason, FlowRecord, Protocol, ResourceId};
use real_world::{
    Seen,
    compare::{Timing, deliveries, flows},
};

fn record(start_ms: u64, end_ms: u64, tx_packets: u64) -> FlowRecord {
    FlowRecord {
        client: ClientId(0),
        resource: ResourceId(0),
        protocol: Protocol::Udp,
        start: model::utc(start_ms),
        end: model::utc(end_ms),
        last_packet: model::utc(start_ms),
        inner_src_ip: "100.64.0.2".parse().unwrap(),
        inner_src_port: 45000,
        inner_dst_ip: "198.51.100.10".parse().unwrap(),
        inner_dst_port: 5000,
        inner_domain: None,
        outer_contexts: Vec::new(),
        tx_packets,
        tx_bytes: 64,
        rx_packets: 1,
        rx_bytes: 64,
        close_reason: CloseReason::Shutdown,
    }
}

#[test]
fn records_agree_within_the_tolerance_and_not_beyond() {
    let model = [record(3035, 6000, 1)];
    let timing = Timing::new(50);
    assert!(flows(&model, &[record(3036, 6004, 1)], &timing).is_empty());
    assert_eq!(timing.worst_ms(), 4, "the end came 4 ms late");
    let late = flows(&model, &[record(3100, 6000, 1)], &Timing::new(50));
    assert_eq!(late.len(), 2, "start and last_packet are late: {late:?}");
    assert!(
        late[0]
            .what
            .contains("start at 3100 ms, the model says 3035 ms")
    );
}

#[test]
fn a_record_that_differs_in_content_is_a_finding_whatever_its_times() {
    let findings = flows(
        &[record(3035, 6000, 1)],
        &[record(3035, 6000, 2)],
        &Timing::new(50),
    );
    assert_eq!(findings.len(), 1);
    assert!(findings[0].what.starts_with("flow record differs"));
    let missing = flows(&[record(3035, 6000, 1)], &[], &Timing::new(50));
    assert!(
        missing
            .iter()
            .any(|f| f.what.starts_with("flow record missing"))
    );
}

fn tcp(flags: TcpFlags, seq: u32) -> Packet {
    Packet {
        src: "198.51.100.10:80".parse().unwrap(),
        dst: "100.64.0.2:30002".parse().unwrap(),
        kind: PacketKind::Tcp {
            flags,
            seq,
            ack: 1001,
            payload: 0,
        },
    }
}

#[test]
fn deliveries_compare_in_order_without_sequence_numbers() {
    let outer = OuterContext {
        remote: "203.0.113.100:51820".parse::<SocketAddr>().unwrap(),
        local: "203.0.113.10:51820".parse::<SocketAddr>().unwrap(),
    };
    let to = Receiver::Client {
        client: ClientId(0),
        gateway: 0,
        outer,
    };
    let predicted = [Delivery {
        at_ms: 4047,
        to: to.clone(),
        packet: tcp(TcpFlags::SYN_ACK, 5000),
        step: 2,
    }];
    let real = |flags, at_ms| Seen {
        at_ms,
        to: to.clone(),
        packet: tcp(flags, 123_456_789),
    };
    let timing = Timing::new(50);
    assert!(deliveries(&predicted, &[real(TcpFlags::SYN_ACK, 4010)], &timing).is_empty());
    assert_eq!(timing.worst_ms(), 37, "delivered 37 ms early");
    let wrong = deliveries(
        &predicted,
        &[real(TcpFlags::RST_ACK, 4010)],
        &Timing::new(50),
    );
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    let extra = deliveries(
        &predicted,
        &[real(TcpFlags::SYN_ACK, 4010), real(TcpFlags::ACK, 4020)],
        &Timing::new(50),
    );
    assert!(extra[0].what.contains("not predicted"), "{extra:?}");
}

#[test]
fn a_step_done_late_excuses_as_much_lateness_in_its_own_window_and_nothing_else() {
    // Step 0 at 2000 ms was done 10 ms late; step 1 at 3000 ms on time.
    let timing = || Timing::with_steps_late(25, vec![(2000, 10), (3000, 0)]);
    let model = [record(2020, 3500, 1)];
    let late_start = |start_ms| {
        let mut real = record(start_ms, 3500, 1);
        real.last_packet = model::utc(start_ms);
        real
    };
    assert!(
        flows(&model, &[late_start(2055)], &timing()).is_empty(),
        "35 ms late after a step done 10 ms late"
    );
    let beyond = flows(&model, &[late_start(2056)], &timing());
    assert_eq!(beyond.len(), 2, "start and last_packet: {beyond:?}");
    assert!(
        beyond[0].what.contains("which the run did 10 ms late"),
        "{beyond:?}"
    );
    assert_eq!(
        flows(&model, &[late_start(2010)], &timing()).len(),
        0,
        "10 ms early is within the tolerance itself"
    );
    assert_eq!(
        flows(&model, &[late_start(1994)], &timing()).len(),
        2,
        "26 ms early is never excused by a late step"
    );
    let next_window = [record(3020, 3500, 1)];
    let mut real = record(3050, 3500, 1);
    real.last_packet = model::utc(3050);
    assert_eq!(
        flows(&next_window, &[real], &timing()).len(),
        2,
        "the step in effect at 3020 ms was on time"
    );
}
