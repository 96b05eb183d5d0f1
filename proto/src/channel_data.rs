//! ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel number, data length) and
//! the application data, padded to a multiple of 4 bytes. Over UDP the padding is optional, so a
//! datagram may carry 0 to 3 bytes after the data; more than that is malformed.

/// The channel numbers the relay serves: RFC 5766's range, 0x4000-0x7FFF, as coturn serves it,
/// since RFC 5766 clients (coturn's among them) pick numbers from all of it. RFC 8656 §12 keeps
/// 0x4000-0x4FFF and reserves the rest for RFC 7983's demultiplexing of DTLS-SRTP beside TURN on
/// one socket, which is the client's concern (it chose the number), not the relay's: every
/// datagram to the TURN port whose first two bits are 0b01 is ChannelData either way.
pub const CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;
/// The channel numbers a client picks from: RFC 8656's range, which relays of either RFC
/// serve.
pub const CLIENT_CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;
/// Length of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// A parsed ChannelData message, borrowing its data from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    #[error("ChannelData shorter than its 4-byte header ({len} bytes)")]
    TooShort { len: usize },
    #[error(
        "channel number {channel:#06x} is outside {:#06x}-{:#06x}",
        CHANNEL_RANGE.start(),
        CHANNEL_RANGE.end()
    )]
    ChannelOutOfRange { channel: u16 },
    #[error("ChannelData length field {declared} does not fit the {available} bytes that follow")]
    LengthMismatch { declared: usize, available: usize },
}

/// Whether the first byte marks a ChannelData message (first two bits `01`) rather than STUN
/// (`00`): the two share port 3478 (RFC 8656 §12).
pub fn looks_like_channel_data(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(byte) if byte >> 6 == 0b01)
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData datagram, accepting 0-3 bytes of padding after the data.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, ChannelDataError> {
        let Some((header, rest)) = datagram.split_first_chunk::<HEADER_LEN>() else {
            return Err(ChannelDataError::TooShort {
                len: datagram.len(),
            });
        };
        let channel = u16::from_be_bytes([header[0], header[1]]);
        if !CHANNEL_RANGE.contains(&channel) {
            return Err(ChannelDataError::ChannelOutOfRange { channel });
        }
        let declared = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let available = rest.len();
        if declared > available || available - declared > 3 {
            return Err(ChannelDataError::LengthMismatch {
                declared,
                available,
            });
        }
        Ok(Self {
            channel,
            data: &rest[..declared],
        })
    }

    /// The message as bytes, without padding (optional over UDP).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.extend_from_slice(&header(self.channel, self.data.len()));
        out.extend_from_slice(self.data);
        out
    }
}

/// The 4-byte header for `len` bytes of data on `channel`. Data longer than 65,535 bytes cannot
/// be carried; callers relay UDP payloads, which never are.
pub fn header(channel: u16, len: usize) -> [u8; HEADER_LEN] {
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    [c0, c1, l0, l1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_with_and_without_padding() {
        let unpadded = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c'];
        let padded = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
        for datagram in [&unpadded[..], &padded[..]] {
            let message = ChannelData::parse(datagram).expect("valid");
            assert_eq!(message.channel, 0x4001);
            assert_eq!(message.data, b"abc");
        }
    }

    #[test]
    fn rejects_bad_lengths_and_channels() {
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0x00]),
            Err(ChannelDataError::TooShort { len: 3 })
        );
        assert_eq!(
            ChannelData::parse(&[0x80, 0x00, 0x00, 0x00]),
            Err(ChannelDataError::ChannelOutOfRange { channel: 0x8000 })
        );
        // RFC 5766's numbers past RFC 8656's range are channels like any other.
        let rfc5766 = ChannelData::parse(&[0x7F, 0xFF, 0x00, 0x01, 9]).expect("in range");
        assert_eq!((rfc5766.channel, rfc5766.data), (0x7FFF, &[9u8][..]));
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0x00, 0x05, 1, 2]),
            Err(ChannelDataError::LengthMismatch {
                declared: 5,
                available: 2
            })
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0x00, 0x00, 0, 0, 0, 0]),
            Err(ChannelDataError::LengthMismatch {
                declared: 0,
                available: 4
            })
        );
    }

    proptest! {
        #[test]
        fn round_trip(channel in CHANNEL_RANGE, data in prop::collection::vec(any::<u8>(), 0..600)) {
            let bytes = ChannelData { channel, data: &data }.to_vec();
            prop_assert!(looks_like_channel_data(&bytes));
            let parsed = ChannelData::parse(&bytes).expect("own encoding parses");
            prop_assert_eq!(parsed.channel, channel);
            prop_assert_eq!(parsed.data, &data[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(parsed) = ChannelData::parse(&bytes) {
                prop_assert!(CHANNEL_RANGE.contains(&parsed.channel));
                prop_assert!(parsed.data.len() + HEADER_LEN <= bytes.len());
            }
        }
    }
}
