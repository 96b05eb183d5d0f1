//! Decoding the frame XDP put out (XDP_TX) with etherparse.

use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::packet::hex;

/// What a datagram came out as (XDP_TX), decoded with etherparse.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) payload: Vec<u8>,
}

impl Decoded {
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} -> {} {} bytes {}",
            self.src,
            self.dst,
            self.payload.len(),
            hex(&self.payload[..self.payload.len().min(24)])
        )
    }
}

/// A rewritten frame: the datagram, and the header fields the program sets.
pub(crate) struct Output {
    pub(crate) datagram: Decoded,
    pub(crate) tos: u8,
    pub(crate) ttl: u8,
    pub(crate) src_mac: [u8; 6],
    pub(crate) dst_mac: [u8; 6],
}

pub(crate) fn decode(frame_out: &[u8]) -> Result<Output, String> {
    let packet =
        SlicedPacket::from_ethernet(frame_out).map_err(|error| format!("unparsable: {error}"))?;
    let Some(etherparse::LinkSlice::Ethernet2(ethernet)) = &packet.link else {
        return Err("no Ethernet header".to_owned());
    };
    let (src_mac, dst_mac) = (ethernet.source(), ethernet.destination());
    let (src_ip, dst_ip, tos, ttl): (IpAddr, IpAddr, u8, u8) = match &packet.net {
        Some(NetSlice::Ipv4(ipv4)) => {
            let header = ipv4.header();
            (
                header.source_addr().into(),
                header.destination_addr().into(),
                (header.dcp().value() << 2) | header.ecn().value(),
                header.ttl(),
            )
        }
        Some(NetSlice::Ipv6(ipv6)) => {
            let header = ipv6.header();
            (
                header.source_addr().into(),
                header.destination_addr().into(),
                header.traffic_class(),
                header.hop_limit(),
            )
        }
        _ => return Err("not IPv4 or IPv6".to_owned()),
    };
    let Some(TransportSlice::Udp(udp)) = &packet.transport else {
        return Err("not UDP".to_owned());
    };
    Ok(Output {
        datagram: Decoded {
            src: SocketAddr::new(src_ip, udp.source_port()),
            dst: SocketAddr::new(dst_ip, udp.destination_port()),
            payload: udp.payload().to_vec(),
        },
        tos,
        ttl,
        src_mac,
        dst_mac,
    })
}
