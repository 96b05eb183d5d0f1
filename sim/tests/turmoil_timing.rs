//! The timing contract of docs/harness.md rests on how turmoil schedules: a command the runner
//! queues before stepping to time E is seen by hosts at sim time E, and a datagram sent at E
//! over a link of L ms is received at E + L.

use std::{
    cell::RefCell,
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::Duration,
};

use turmoil::net::UdpSocket;

fn ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

#[test]
fn commands_and_datagrams_land_on_exact_milliseconds() {
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(10))
        .max_message_latency(Duration::from_millis(10))
        .simulation_duration(Duration::from_secs(5))
        .rng_seed(1)
        .build();
    let commands: Rc<RefCell<VecDeque<u64>>> = Rc::default();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let a: IpAddr = "203.0.113.100".parse().unwrap();
    let b: IpAddr = "203.0.113.10".parse().unwrap();
    {
        let log = log.clone();
        sim.host(b, move || {
            let log = log.clone();
            async move {
                let socket = UdpSocket::bind("0.0.0.0:51820").await?;
                let mut buf = [0u8; 64];
                loop {
                    let (len, from) = socket.recv_from(&mut buf).await?;
                    log.borrow_mut()
                        .push(format!("b got {len} from {from} at {}", ms()));
                }
            }
        });
    }
    {
        let log = log.clone();
        let commands = commands.clone();
        sim.host(a, move || {
            let log = log.clone();
            let commands = commands.clone();
            async move {
                let socket = UdpSocket::bind("0.0.0.0:51820").await?;
                loop {
                    let next = commands.borrow_mut().pop_front();
                    if let Some(command) = next {
                        log.borrow_mut()
                            .push(format!("a saw command {command} at {}", ms()));
                        socket.send_to(b"x", SocketAddr::new(b, 51820)).await?;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
    }
    while sim.elapsed() < Duration::from_millis(2000) {
        sim.step().unwrap();
    }
    assert_eq!(sim.elapsed().as_millis(), 2000);
    commands.borrow_mut().push_back(7);
    while sim.elapsed() < Duration::from_millis(2100) {
        sim.step().unwrap();
    }
    assert_eq!(
        *log.borrow(),
        vec![
            "a saw command 7 at 2000".to_owned(),
            "b got 1 from 203.0.113.100:51820 at 2010".to_owned()
        ]
    );
}
