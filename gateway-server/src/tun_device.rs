//! The TUN device: an existing one of that name (a persistent device, as `ip tuntap add mode
//! tun` makes) or a new one, in layer 3 mode without packet information (`IFF_NO_PI`), single
//! queue, no offloads, brought up. Its addresses and routes are the operator's.

use std::{fmt, io};

use tun_rs::{AsyncDevice, DeviceBuilder};

/// An open TUN device: one IP packet per read or write.
pub struct TunDevice {
    name: String,
    device: AsyncDevice,
}

impl TunDevice {
    /// Opens (attaching to or creating) the TUN device `name`.
    pub fn open(name: &str) -> io::Result<Self> {
        let device = DeviceBuilder::new()
            .name(name)
            .packet_information(false)
            .build_async()?;
        Ok(Self {
            name: name.to_owned(),
            device,
        })
    }

    /// Reads one packet into `buffer`; its length.
    pub async fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buffer).await
    }

    /// Writes one packet.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.send(packet).await
    }
}

impl fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .finish()
    }
}
