//! Everything the gateway takes in arrives on one channel: datagrams from the UDP sockets and
//! packets from the TUN device, each read by a task of its own.

use std::{io, net::SocketAddr, sync::Arc};

use crate::tun_device::TunDevice;
use tokio::{net::UdpSocket, sync::mpsc};

/// The largest UDP payload or IP packet read; every receive buffer holds this much.
pub const MAX_PACKET: usize = 65_536;
/// Inputs read but not yet handled. Beyond this, readers wait and the kernel's buffers take
/// the overflow (and drop it when full).
pub const INPUT_QUEUE: usize = 256;

/// One thing read.
#[derive(Debug)]
pub enum Input {
    /// A UDP datagram from `from`, read from the socket bound to `to`.
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        payload: Vec<u8>,
    },
    /// An IP packet read from the TUN device.
    Tun(Vec<u8>),
}

/// Reads `socket` (bound to `local`) until the channel closes.
pub async fn read_datagrams(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    inputs: mpsc::Sender<Input>,
) {
    let mut buffer = vec![0; MAX_PACKET];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((len, from)) => {
                let input = Input::Datagram {
                    from,
                    to: local,
                    payload: buffer[..len].to_vec(),
                };
                if inputs.send(input).await.is_err() {
                    return;
                }
            }
            // UDP receive errors are transient (an ICMP error reported on the socket); it
            // stays usable.
            Err(error) => {
                tracing::debug!(%local, %error, "receive failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Reads the TUN device until the channel closes or the device fails.
pub async fn read_tun(tun: Arc<TunDevice>, inputs: mpsc::Sender<Input>) {
    let mut buffer = vec![0; MAX_PACKET];
    loop {
        match tun.recv(&mut buffer).await {
            Ok(len) => {
                if inputs
                    .send(Input::Tun(buffer[..len].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) if is_transient(&error) => {
                tracing::debug!(%error, "TUN read failed");
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::error!(%error, "the TUN device failed; no longer reading it");
                return;
            }
        }
    }
}

/// Errors after which a read may succeed again.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}
