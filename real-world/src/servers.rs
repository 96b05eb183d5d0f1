//! The real servers of a run: the resources behind each gateway (kernel UDP echo sockets and
//! TCP listeners, so the TCP a client talks to is Linux's own) and the DNS server (the
//! simulation's answers, on a real socket).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
};

use socket2::SockRef;

/// The resources behind one gateway.
#[derive(Debug, Default)]
pub struct Resources {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    /// Accepted connections, by the client's inner address (what the resource sees).
    streams: BTreeMap<SocketAddr, TcpStream>,
    /// Connections the client closed or reset, kept open until the run ends.
    closed: Vec<TcpStream>,
    pub errors: Vec<String>,
}

impl Resources {
    /// Binds an echo socket and a listener at every `(ip, port)` (called inside the resource
    /// namespace).
    pub fn bind(ips: &[IpAddr], udp_ports: &[u16], tcp_ports: &[u16]) -> std::io::Result<Self> {
        let mut resources = Self::default();
        for ip in ips {
            for port in udp_ports {
                let socket = UdpSocket::bind(SocketAddr::new(*ip, *port))?;
                socket.set_nonblocking(true)?;
                resources.udp.push(socket);
            }
            for port in tcp_ports {
                let listener = TcpListener::bind(SocketAddr::new(*ip, *port))?;
                listener.set_nonblocking(true)?;
                resources.tcp.push(listener);
            }
        }
        Ok(resources)
    }

    /// Echoes every datagram, accepts every connection, reads what arrived.
    pub fn poll(&mut self) {
        let mut buffer = [0u8; 65_536];
        for socket in &self.udp {
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                if let Err(error) = socket.send_to(&buffer[..len], from) {
                    self.errors.push(format!("echo to {from}: {error}"));
                }
            }
        }
        for listener in &self.tcp {
            while let Ok((stream, peer)) = listener.accept() {
                let _ = stream.set_nonblocking(true);
                let _ = stream.set_nodelay(true);
                self.streams.insert(peer, stream);
            }
        }
        let mut gone = Vec::new();
        for (client, stream) in &mut self.streams {
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => {
                        // The client closed: a server closes too, and Linux, which delays the
                        // ACK of a FIN for this, sends one FIN-ACK.
                        let _ = stream.shutdown(std::net::Shutdown::Write);
                        gone.push(*client);
                        break;
                    }
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone.push(*client);
                        break;
                    }
                }
            }
        }
        for client in gone {
            // Kept until the kernel is done with it: dropping the socket is a close.
            if let Some(stream) = self.streams.remove(&client) {
                self.closed.push(stream);
            }
        }
    }

    /// The connection from `client`, if the resource has seen it: as in the simulation, a
    /// resource acts only on a connection whose SYN reached it (a denied or lost one it never
    /// knew of), and the model predicts accordingly.
    fn stream(&mut self, client: SocketAddr) -> Option<&mut TcpStream> {
        self.poll();
        self.streams.get_mut(&client)
    }

    /// The resource sends `bytes` on the connection from `client`.
    pub fn send(&mut self, client: SocketAddr, bytes: u16) {
        let data = vec![0x5E; usize::from(bytes)];
        if let Some(stream) = self.stream(client)
            && let Err(error) = stream.write_all(&data)
        {
            self.errors.push(format!("data to {client}: {error}"));
        }
    }

    /// The resource closes its side (FIN).
    pub fn close(&mut self, client: SocketAddr) {
        if let Some(stream) = self.stream(client)
            && let Err(error) = stream.shutdown(std::net::Shutdown::Write)
        {
            self.errors.push(format!("close to {client}: {error}"));
        }
    }

    /// The resource resets the connection (RST: a zero linger time, then close).
    pub fn reset(&mut self, client: SocketAddr) {
        if self.stream(client).is_some()
            && let Some(stream) = self.streams.remove(&client)
        {
            let _ = SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

/// The DNS server: the scenario's records, answered as the simulation answers them.
#[derive(Debug)]
pub struct DnsServer {
    sockets: Vec<UdpSocket>,
    records: BTreeMap<String, (Vec<IpAddr>, u32)>,
}

impl DnsServer {
    /// Binds port 53 at `addresses` (inside the DNS namespace).
    pub fn bind(
        addresses: &[IpAddr],
        records: BTreeMap<String, (Vec<IpAddr>, u32)>,
    ) -> std::io::Result<Self> {
        let sockets = addresses
            .iter()
            .map(|ip| {
                let socket = UdpSocket::bind(SocketAddr::new(*ip, 53))?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self { sockets, records })
    }

    /// From now on `name` is answered with `addresses` (its TTL unchanged; 300 s for a new
    /// name), as the simulation's `dns-change` does.
    pub fn change(&mut self, name: &str, addresses: &[IpAddr]) {
        let name = name.to_ascii_lowercase();
        let ttl = self.records.get(&name).map_or(300, |(_, ttl)| *ttl);
        self.records.insert(name, (addresses.to_vec(), ttl));
    }

    /// Answers every query waiting.
    pub fn poll(&mut self) {
        let mut buffer = [0u8; 2048];
        for socket in &self.sockets {
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                if let Some(answer) = sim::dns_server::answer_from(&buffer[..len], &self.records) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        }
    }
}
