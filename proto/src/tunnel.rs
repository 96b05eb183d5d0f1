//! The client <-> gateway tunnel frame.
//!
//! One UDP datagram carries exactly one frame:
//!
//! ```text
//!  0        1        2        3
//! +--------+--------+--------+--------+
//! |  0xF1  |   reserved, all zero     |   type byte + 3 reserved bytes
//! +--------+--------+--------+--------+
//! |            session id (u32 BE)    |
//! +--------+--------+--------+--------+
//! |                                   |
//! +         counter (u64 BE)          +
//! |                                   |
//! +--------+--------+--------+--------+
//! |   inner IP packet (any length) ...
//! +--------+--------+--------+--------+
//! |   MAC: 16 bytes                   |
//! +--------+--------+--------+--------+
//! ```
//!
//! The type byte 0xF1 cannot be confused with a STUN message (first two bits `00`) or a TURN
//! ChannelData message (first byte `0x40..=0x4F`), so a socket shared with TURN can demultiplex
//! on the first byte. The MAC is BLAKE3 in keyed mode under the session's 32-byte key, over
//! every byte before it (header and inner packet), truncated to 16 bytes. The counter is
//! chosen by the sender, strictly increasing per session; the receiver keeps the replay window.

use std::fmt;

/// The first byte of every tunnel frame.
pub const FRAME_TYPE: u8 = 0xF1;
/// Bytes before the inner packet: type, 3 reserved, session id, counter.
pub const HEADER_LEN: usize = 16;
/// Bytes of MAC after the inner packet.
pub const MAC_LEN: usize = 16;
/// Smallest possible frame (empty inner packet).
pub const MIN_FRAME_LEN: usize = HEADER_LEN + MAC_LEN;
/// Bytes in a session key.
pub const KEY_LEN: usize = 32;

/// A per-session MAC key, handed to both ends by the control plane. Its `Debug` output never
/// shows the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; KEY_LEN]);

impl SessionKey {
    /// Wraps 32 key bytes.
    pub const fn new(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let full = blake3::keyed_hash(&self.0, data);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
        mac
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// The fixed header of a tunnel frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Which session (and so which key) the frame belongs to.
    pub session_id: u32,
    /// The sender's per-session counter, for the replay window.
    pub counter: u64,
}

/// Why a datagram is not a valid tunnel frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelError {
    /// Shorter than header + MAC.
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The first byte is not [`FRAME_TYPE`].
    WrongType {
        /// The first byte received.
        found: u8,
    },
    /// One of the three reserved bytes is not zero.
    ReservedNotZero,
    /// The MAC does not match the frame under the session key.
    BadMac,
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::TooShort { len } => write!(
                f,
                "tunnel frame too short: {len} bytes, need at least {MIN_FRAME_LEN}"
            ),
            TunnelError::WrongType { found } => {
                write!(
                    f,
                    "not a tunnel frame: type byte {found:#04x}, expected 0xf1"
                )
            }
            TunnelError::ReservedNotZero => f.write_str("tunnel frame reserved bytes not zero"),
            TunnelError::BadMac => f.write_str("tunnel frame MAC does not verify"),
        }
    }
}

impl std::error::Error for TunnelError {}

/// Whether a datagram looks like a tunnel frame (by its first byte only).
pub fn is_tunnel_frame(datagram: &[u8]) -> bool {
    datagram.first() == Some(&FRAME_TYPE)
}

/// Reads and checks the header without checking the MAC (the receiver needs the session id to
/// find the key). Never trust anything but `session_id` before [`open`] succeeds.
pub fn peek_header(frame: &[u8]) -> Result<FrameHeader, TunnelError> {
    if frame.len() < MIN_FRAME_LEN {
        return Err(TunnelError::TooShort { len: frame.len() });
    }
    if frame[0] != FRAME_TYPE {
        return Err(TunnelError::WrongType { found: frame[0] });
    }
    if frame[1..4] != [0, 0, 0] {
        return Err(TunnelError::ReservedNotZero);
    }
    let session_id = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&frame[8..16]);
    Ok(FrameHeader {
        session_id,
        counter: u64::from_be_bytes(counter),
    })
}

/// Checks the header and the MAC under `key`, and returns the header and the inner packet.
pub fn open<'a>(key: &SessionKey, frame: &'a [u8]) -> Result<(FrameHeader, &'a [u8]), TunnelError> {
    let header = peek_header(frame)?;
    let (authenticated, mac) = frame.split_at(frame.len() - MAC_LEN);
    let expected = key.mac(authenticated);
    // Constant-time comparison: fold the differences instead of returning at the first one.
    let diff = expected
        .iter()
        .zip(mac)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(TunnelError::BadMac);
    }
    Ok((header, &authenticated[HEADER_LEN..]))
}

/// Appends a complete frame carrying `inner` to `out`.
pub fn seal_into(key: &SessionKey, header: FrameHeader, inner: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(HEADER_LEN + inner.len() + MAC_LEN);
    out.extend_from_slice(&[FRAME_TYPE, 0, 0, 0]);
    out.extend_from_slice(&header.session_id.to_be_bytes());
    out.extend_from_slice(&header.counter.to_be_bytes());
    out.extend_from_slice(inner);
    let mac = key.mac(&out[start..]);
    out.extend_from_slice(&mac);
}

/// A complete frame carrying `inner`, in a new buffer.
pub fn seal(key: &SessionKey, header: FrameHeader, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + inner.len() + MAC_LEN);
    seal_into(key, header, inner, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::new([b; KEY_LEN])
    }

    const HDR: FrameHeader = FrameHeader {
        session_id: 0x0102_0304,
        counter: 0x0506_0708_090a_0b0c,
    };

    #[test]
    fn seal_then_open_round_trips() {
        let frame = seal(&key(7), HDR, b"inner packet");
        assert_eq!(frame.len(), HEADER_LEN + 12 + MAC_LEN);
        assert_eq!(&frame[..4], &[0xF1, 0, 0, 0]);
        assert_eq!(&frame[4..8], &[1, 2, 3, 4]);
        assert_eq!(&frame[8..16], &[5, 6, 7, 8, 9, 10, 11, 12]);
        let (header, inner) = open(&key(7), &frame).unwrap();
        assert_eq!(header, HDR);
        assert_eq!(inner, b"inner packet");
    }

    #[test]
    fn wrong_key_fails_the_mac() {
        let frame = seal(&key(7), HDR, b"x");
        assert_eq!(open(&key(8), &frame), Err(TunnelError::BadMac));
    }

    #[test]
    fn every_flipped_bit_fails() {
        let frame = seal(&key(1), HDR, b"abc");
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut f = frame.clone();
                f[i] ^= 1 << bit;
                assert!(open(&key(1), &f).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn header_errors_are_typed() {
        assert_eq!(
            peek_header(&[0xF1; 31]),
            Err(TunnelError::TooShort { len: 31 })
        );
        let mut frame = seal(&key(1), HDR, b"");
        frame[0] = 0x40;
        assert_eq!(
            peek_header(&frame),
            Err(TunnelError::WrongType { found: 0x40 })
        );
        frame[0] = 0xF1;
        frame[2] = 1;
        assert_eq!(peek_header(&frame), Err(TunnelError::ReservedNotZero));
    }

    #[test]
    fn type_byte_is_neither_stun_nor_channel_data() {
        assert_ne!(FRAME_TYPE >> 6, 0);
        assert!(!(0x40..=0x4F).contains(&FRAME_TYPE));
        assert!(is_tunnel_frame(&[0xF1]));
        assert!(!is_tunnel_frame(&[0x00, 0x01]));
        assert!(!is_tunnel_frame(&[]));
    }

    #[test]
    fn key_debug_hides_bytes() {
        assert_eq!(format!("{:?}", key(0xAB)), "SessionKey(..)");
    }
}
