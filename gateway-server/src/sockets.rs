//! The gateway's UDP sockets: one tunnel socket per listen address (client frames, the TURN
//! client's traffic, and DNS without source ports of its own) and, with `dns_source_ports`, one
//! socket per port on every listen IP. Each has a reader task; each is found by its local
//! address, which is what the gateway names as a transmit's source.

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    sync::Arc,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::{net::UdpSocket, sync::mpsc, task::JoinHandle};

use crate::input::{Input, read_datagrams};

/// A socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: io::Error,
}

/// Every socket of the gateway, by local address.
#[derive(Debug)]
pub struct Sockets {
    by_local: BTreeMap<SocketAddr, Arc<UdpSocket>>,
    /// The tunnel sockets' addresses, in the configuration's order.
    tunnel: Vec<SocketAddr>,
    readers: Vec<JoinHandle<()>>,
}

impl Sockets {
    /// Binds a tunnel socket on each of `listen` and the DNS port sockets on each listen IP,
    /// and starts their readers. Must be called within a tokio runtime.
    pub fn bind(
        listen: &[SocketAddr],
        dns_source_ports: Option<&RangeInclusive<u16>>,
        inputs: &mpsc::Sender<Input>,
    ) -> Result<Self, BindError> {
        let mut sockets = Self {
            by_local: BTreeMap::new(),
            tunnel: Vec::new(),
            readers: Vec::new(),
        };
        for &addr in listen {
            let local = sockets.bind_one(addr, inputs)?;
            sockets.tunnel.push(local);
        }
        for &addr in listen {
            for port in dns_source_ports.into_iter().flat_map(Clone::clone) {
                sockets.bind_one(SocketAddr::new(addr.ip(), port), inputs)?;
            }
        }
        Ok(sockets)
    }

    fn bind_one(
        &mut self,
        addr: SocketAddr,
        inputs: &mpsc::Sender<Input>,
    ) -> Result<SocketAddr, BindError> {
        let socket = bind_udp(addr).map_err(|source| BindError { addr, source })?;
        let local = socket.local_addr().unwrap_or(addr);
        let socket = Arc::new(socket);
        self.readers.push(tokio::spawn(read_datagrams(
            Arc::clone(&socket),
            local,
            inputs.clone(),
        )));
        self.by_local.insert(local, socket);
        Ok(local)
    }

    /// The tunnel sockets' local addresses.
    pub fn tunnel_addrs(&self) -> &[SocketAddr] {
        &self.tunnel
    }

    /// The socket bound to `local`, if there is one.
    pub fn bound_to(&self, local: SocketAddr) -> Option<&UdpSocket> {
        self.by_local.get(&local).map(|socket| &**socket)
    }

    /// The tunnel socket of `ip`'s family, if there is one.
    pub fn tunnel_of_family(&self, ip: IpAddr) -> Option<(SocketAddr, &UdpSocket)> {
        let local = self
            .tunnel
            .iter()
            .copied()
            .find(|local| local.is_ipv4() == ip.is_ipv4())?;
        Some((local, self.bound_to(local)?))
    }

    /// How many sockets are bound.
    pub fn count(&self) -> usize {
        self.by_local.len()
    }
}

/// Stops the readers, which closes the sockets once the last handle is gone.
impl Drop for Sockets {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// A non-blocking UDP socket on `addr`; IPv6 sockets are IPv6-only, so that `::` and `0.0.0.0`
/// can hold the same port.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
