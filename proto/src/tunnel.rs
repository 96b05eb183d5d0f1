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
//! ChannelData message (first byte `0x40..=0x7F`), so a socket shared with TURN can demultiplex
//! on the first byte. The counter is chosen by the sender, strictly increasing per session; the
//! receiver keeps the replay window.
//!
//! # The MAC
//!
//! The MAC is SipHash-2-4 with 128-bit output (the reference implementation's `siphash` with
//! `cROUNDS = 2`, `dROUNDS = 4`, 16 output bytes in its byte order) over every byte before the
//! MAC (header and inner packet). Each direction has its own 128-bit key, derived once per
//! session, when the [`SessionKey`] is made, from the session's 32-byte key with BLAKE3's
//! key-derivation mode: the first 16 bytes of `blake3::derive_key(context, session key)`, with
//! [`MAC_KEY_CONTEXT_TO_GATEWAY`] for frames a client sends and [`MAC_KEY_CONTEXT_TO_CLIENT`]
//! for frames the gateway sends. So a frame reflected back to its sender does not verify: the
//! receiver checks it under the other direction's key.
//!
//! Why SipHash and not BLAKE3's keyed mode (which the first version used): SipHash is a PRF
//! designed for authenticating short messages under a 128-bit secret key, and a typical frame
//! is ~100 bytes, where BLAKE3's fixed per-call cost (two 64-byte block compressions plus
//! finalization, however the keyed hasher is built) took about half of the gateway's
//! per-packet budget. Measured on the 2-core development machine over a 108-byte frame
//! (instructions under callgrind, time with criterion, noisy): BLAKE3 `keyed_hash` ~1,110
//! instructions, ~190 ns; a keyed `blake3::Hasher` built once and cloned per frame ~1,510
//! instructions (cloning copies a ~2 KB hasher), slower still; SipHash-2-4-128 ~665
//! instructions, ~85-105 ns. The designers claim 128-bit security for SipHash; the 128-bit
//! output variant is younger and less analysed than the 64-bit one. Tags are 16 bytes, the
//! comparison is constant-time, and accepted frames still go through the replay window.

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

/// BLAKE3 key-derivation context of the MAC key of frames from a client to its gateway.
pub const MAC_KEY_CONTEXT_TO_GATEWAY: &str =
    "vpnsim 2026-12-01 tunnel frame MAC key, client to gateway, SipHash-2-4-128";
/// BLAKE3 key-derivation context of the MAC key of frames from a gateway to a client.
pub const MAC_KEY_CONTEXT_TO_CLIENT: &str =
    "vpnsim 2026-12-01 tunnel frame MAC key, gateway to client, SipHash-2-4-128";

/// Which way a frame goes: each way has its own MAC key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client to its gateway.
    ToGateway,
    /// From the gateway to a client.
    ToClient,
}

/// A per-session key, handed to both ends by the control plane, with the MAC key derived from
/// it (once, here, so no packet pays for the derivation). Its `Debug` output never shows the
/// key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey {
    bytes: [u8; KEY_LEN],
    /// The SipHash keys as the two little-endian 64-bit words `k0`, `k1`: to the gateway, to
    /// the client.
    mac_keys: [(u64, u64); 2],
}

impl SessionKey {
    /// Wraps 32 key bytes and derives the MAC keys from them.
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        let derive = |context: &str| {
            let derived = blake3::derive_key(context, &bytes);
            let mut mac_key = [0u8; 16];
            mac_key.copy_from_slice(&derived[..16]);
            sip_key_words(&mac_key)
        };
        Self {
            bytes,
            mac_keys: [
                derive(MAC_KEY_CONTEXT_TO_GATEWAY),
                derive(MAC_KEY_CONTEXT_TO_CLIENT),
            ],
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    fn mac(&self, direction: Direction, data: &[u8]) -> [u8; MAC_LEN] {
        siphash24_128(self.mac_keys[direction as usize], data)
    }
}

/// A 16-byte SipHash key as its two little-endian words.
fn sip_key_words(key: &[u8; 16]) -> (u64, u64) {
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    k0.copy_from_slice(&key[..8]);
    k1.copy_from_slice(&key[8..]);
    (u64::from_le_bytes(k0), u64::from_le_bytes(k1))
}

/// SipHash-2-4 with 128-bit output, bytes in the reference implementation's order.
fn siphash24_128((k0, k1): (u64, u64), data: &[u8]) -> [u8; MAC_LEN] {
    use siphasher::sip128::{Hasher128, SipHasher24};
    use std::hash::Hasher;
    let mut h = SipHasher24::new_with_keys(k0, k1);
    h.write(data);
    h.finish128().as_bytes()
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
#[inline]
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

/// Checks the header and the MAC under `key` for a frame going `direction`, and returns the
/// header and the inner packet.
pub fn open<'a>(
    key: &SessionKey,
    direction: Direction,
    frame: &'a [u8],
) -> Result<(FrameHeader, &'a [u8]), TunnelError> {
    let header = peek_header(frame)?;
    Ok((header, verify(key, direction, frame)?))
}

/// Checks the MAC under `key` of a frame whose header [`peek_header`] already accepted (so the
/// header is not parsed twice), and returns the inner packet. A frame shorter than
/// [`MIN_FRAME_LEN`] is refused here too.
pub fn verify<'a>(
    key: &SessionKey,
    direction: Direction,
    frame: &'a [u8],
) -> Result<&'a [u8], TunnelError> {
    if frame.len() < MIN_FRAME_LEN {
        return Err(TunnelError::TooShort { len: frame.len() });
    }
    let (authenticated, mac) = frame.split_at(frame.len() - MAC_LEN);
    let expected = key.mac(direction, authenticated);
    // Constant-time comparison: fold the differences instead of returning at the first one.
    let diff = expected
        .iter()
        .zip(mac)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(TunnelError::BadMac);
    }
    Ok(&authenticated[HEADER_LEN..])
}

/// Appends a complete frame carrying `inner`, going `direction`, to `out`.
pub fn seal_into(
    key: &SessionKey,
    direction: Direction,
    header: FrameHeader,
    inner: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.reserve(HEADER_LEN + inner.len() + MAC_LEN);
    out.extend_from_slice(&[FRAME_TYPE, 0, 0, 0]);
    out.extend_from_slice(&header.session_id.to_be_bytes());
    out.extend_from_slice(&header.counter.to_be_bytes());
    out.extend_from_slice(inner);
    let mac = key.mac(direction, &out[start..]);
    out.extend_from_slice(&mac);
}

/// Turns `frame`, which holds [`HEADER_LEN`] bytes of room followed by the inner packet (as
/// the caller wrote it, e.g. rewritten in place), into a complete frame: writes the header over
/// the room and appends the MAC. Saves copying the inner packet into a second buffer.
///
/// # Panics
///
/// If `frame` is shorter than [`HEADER_LEN`].
pub fn seal_in_place(
    key: &SessionKey,
    direction: Direction,
    header: FrameHeader,
    frame: &mut Vec<u8>,
) {
    frame[..4].copy_from_slice(&[FRAME_TYPE, 0, 0, 0]);
    frame[4..8].copy_from_slice(&header.session_id.to_be_bytes());
    frame[8..HEADER_LEN].copy_from_slice(&header.counter.to_be_bytes());
    let mac = key.mac(direction, frame);
    frame.extend_from_slice(&mac);
}

/// A complete frame carrying `inner`, going `direction`, in a new buffer.
pub fn seal(key: &SessionKey, direction: Direction, header: FrameHeader, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + inner.len() + MAC_LEN);
    seal_into(key, direction, header, inner, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::new([b; KEY_LEN])
    }

    const UP: Direction = Direction::ToGateway;

    const HDR: FrameHeader = FrameHeader {
        session_id: 0x0102_0304,
        counter: 0x0506_0708_090a_0b0c,
    };

    #[test]
    fn seal_then_open_round_trips() {
        let frame = seal(&key(7), UP, HDR, b"inner packet");
        assert_eq!(frame.len(), HEADER_LEN + 12 + MAC_LEN);
        assert_eq!(&frame[..4], &[0xF1, 0, 0, 0]);
        assert_eq!(&frame[4..8], &[1, 2, 3, 4]);
        assert_eq!(&frame[8..16], &[5, 6, 7, 8, 9, 10, 11, 12]);
        let (header, inner) = open(&key(7), UP, &frame).unwrap();
        assert_eq!(header, HDR);
        assert_eq!(inner, b"inner packet");
    }

    #[test]
    fn seal_in_place_equals_seal() {
        let mut frame = vec![0xEE; HEADER_LEN];
        frame.extend_from_slice(b"inner packet");
        seal_in_place(&key(3), UP, HDR, &mut frame);
        assert_eq!(frame, seal(&key(3), UP, HDR, b"inner packet"));
    }

    #[test]
    fn a_frame_reflected_back_to_its_sender_fails_the_mac() {
        let to_gateway = seal(&key(7), Direction::ToGateway, HDR, b"inner packet");
        let to_client = seal(&key(7), Direction::ToClient, HDR, b"inner packet");
        assert_ne!(to_gateway, to_client, "each direction has its own key");
        assert_eq!(
            open(&key(7), Direction::ToClient, &to_gateway),
            Err(TunnelError::BadMac)
        );
        assert_eq!(
            open(&key(7), Direction::ToGateway, &to_client),
            Err(TunnelError::BadMac)
        );
        assert!(open(&key(7), Direction::ToClient, &to_client).is_ok());
    }

    #[test]
    fn wrong_key_fails_the_mac() {
        let frame = seal(&key(7), UP, HDR, b"x");
        assert_eq!(open(&key(8), UP, &frame), Err(TunnelError::BadMac));
    }

    #[test]
    fn every_flipped_bit_fails() {
        let frame = seal(&key(1), UP, HDR, b"abc");
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut f = frame.clone();
                f[i] ^= 1 << bit;
                assert!(open(&key(1), UP, &f).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn header_errors_are_typed() {
        assert_eq!(
            peek_header(&[0xF1; 31]),
            Err(TunnelError::TooShort { len: 31 })
        );
        let mut frame = seal(&key(1), UP, HDR, b"");
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
        let [first, _] = crate::channel_data::CHANNEL_RANGE.start().to_be_bytes();
        let [last, _] = crate::channel_data::CHANNEL_RANGE.end().to_be_bytes();
        assert!(!(first..=last).contains(&FRAME_TYPE));
        assert!(is_tunnel_frame(&[0xF1]));
        assert!(!is_tunnel_frame(&[0x00, 0x01]));
        assert!(!is_tunnel_frame(&[]));
    }

    #[test]
    fn siphash_matches_the_reference_vectors() {
        // vectors_sip128 of the SipHash reference implementation: key 00..0f, messages
        // [] and [00].
        let k = sip_key_words(&core::array::from_fn(|i| i as u8));
        assert_eq!(
            siphash24_128(k, &[]),
            [
                0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55,
                0x02, 0x93
            ]
        );
        assert_eq!(
            siphash24_128(k, &[0]),
            [
                0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22,
                0xfc, 0x45
            ]
        );
    }

    #[test]
    fn mac_is_siphash_under_the_key_derived_for_its_direction() {
        for (direction, context) in [
            (Direction::ToGateway, MAC_KEY_CONTEXT_TO_GATEWAY),
            (Direction::ToClient, MAC_KEY_CONTEXT_TO_CLIENT),
        ] {
            let frame = seal(&key(9), direction, HDR, b"payload");
            let derived = blake3::derive_key(context, &[9; KEY_LEN]);
            let mut k = [0u8; 16];
            k.copy_from_slice(&derived[..16]);
            let (body, mac) = frame.split_at(frame.len() - MAC_LEN);
            assert_eq!(mac, siphash24_128(sip_key_words(&k), body));
        }
    }

    #[test]
    fn verify_refuses_short_frames_and_returns_the_inner_packet() {
        assert_eq!(
            verify(&key(1), UP, &[0xF1; 31]),
            Err(TunnelError::TooShort { len: 31 })
        );
        let frame = seal(&key(1), UP, HDR, b"abc");
        assert_eq!(verify(&key(1), UP, &frame), Ok(&b"abc"[..]));
    }

    #[test]
    fn key_debug_hides_bytes() {
        assert_eq!(format!("{:?}", key(0xAB)), "SessionKey(..)");
    }
}
