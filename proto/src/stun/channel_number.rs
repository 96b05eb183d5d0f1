//! The CHANNEL-NUMBER attribute (RFC 8656 §18.1) over RFC 5766's channel range.
//!
//! `stun_codec`'s own attribute refuses numbers above 0x4FFF (RFC 8656's range), so a ChannelBind
//! from an RFC 5766 client such as coturn's, which picks from 0x4000-0x7FFF, would not even
//! decode. This one takes every number of [`CHANNEL_RANGE`], the range the relay serves.

use bytecodec::{
    ByteCount, Decode, Encode, Eos, ErrorKind, Result, SizedEncode, TryTaggedDecode,
    fixnum::{U32beDecoder, U32beEncoder},
};
use stun_codec::{Attribute, AttributeType};

use crate::channel_data::CHANNEL_RANGE;

/// `CHANNEL-NUMBER`: a channel number of [`CHANNEL_RANGE`] and two bytes of RFFU (zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(u16);

impl ChannelNumber {
    /// The attribute's type.
    pub const CODEPOINT: u16 = 0x000C;

    /// The attribute for `number`; an error when `number` is outside [`CHANNEL_RANGE`].
    pub fn new(number: u16) -> Result<Self> {
        if CHANNEL_RANGE.contains(&number) {
            Ok(Self(number))
        } else {
            Err(ErrorKind::InvalidInput.into())
        }
    }

    /// The channel number.
    pub fn value(self) -> u16 {
        self.0
    }
}

impl Attribute for ChannelNumber {
    type Decoder = ChannelNumberDecoder;
    type Encoder = ChannelNumberEncoder;

    fn get_type(&self) -> AttributeType {
        AttributeType::new(Self::CODEPOINT)
    }
}

/// Decodes [`ChannelNumber`]: a number outside [`CHANNEL_RANGE`] is an error, so a request
/// carrying one is malformed (400).
#[derive(Debug, Default)]
pub struct ChannelNumberDecoder(U32beDecoder);

impl Decode for ChannelNumberDecoder {
    type Item = ChannelNumber;

    fn decode(&mut self, buf: &[u8], eos: Eos) -> Result<usize> {
        self.0.decode(buf, eos)
    }

    fn finish_decoding(&mut self) -> Result<Self::Item> {
        let value = self.0.finish_decoding()?;
        ChannelNumber::new((value >> 16) as u16)
    }

    fn requiring_bytes(&self) -> ByteCount {
        self.0.requiring_bytes()
    }

    fn is_idle(&self) -> bool {
        self.0.is_idle()
    }
}

impl TryTaggedDecode for ChannelNumberDecoder {
    type Tag = AttributeType;

    fn try_start_decoding(&mut self, attribute_type: Self::Tag) -> Result<bool> {
        Ok(attribute_type.as_u16() == ChannelNumber::CODEPOINT)
    }
}

/// Encodes [`ChannelNumber`].
#[derive(Debug, Default)]
pub struct ChannelNumberEncoder(U32beEncoder);

impl Encode for ChannelNumberEncoder {
    type Item = ChannelNumber;

    fn encode(&mut self, buf: &mut [u8], eos: Eos) -> Result<usize> {
        self.0.encode(buf, eos)
    }

    fn start_encoding(&mut self, item: Self::Item) -> Result<()> {
        self.0.start_encoding(u32::from(item.0) << 16)
    }

    fn requiring_bytes(&self) -> ByteCount {
        self.0.requiring_bytes()
    }

    fn is_idle(&self) -> bool {
        self.0.is_idle()
    }
}

impl SizedEncode for ChannelNumberEncoder {
    fn exact_requiring_bytes(&self) -> u64 {
        self.0.exact_requiring_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{self, DecodeError, Message, MessageClass, TransactionId, methods};

    fn channel_bind(number: ChannelNumber) -> Vec<u8> {
        let mut message = Message::new(
            MessageClass::Request,
            methods::CHANNEL_BIND,
            TransactionId::new([7; 12]),
        );
        message.add_attribute(number);
        stun::encode(message).expect("encodes")
    }

    #[test]
    fn every_number_of_rfc_5766s_range_is_a_channel_number() {
        for number in [0x4000, 0x4FFF, 0x5000, 0x7FFF] {
            let attribute = ChannelNumber::new(number).expect("in range");
            assert_eq!(attribute.value(), number);
            let decoded = stun::decode(&channel_bind(attribute)).expect("decodes");
            assert_eq!(decoded.get_attribute::<ChannelNumber>(), Some(&attribute));
        }
        for number in [0x0000, 0x3FFF, 0x8000, 0xFFFF] {
            assert!(ChannelNumber::new(number).is_err(), "{number:#06x}");
        }
    }

    #[test]
    fn a_number_outside_the_range_on_the_wire_makes_the_request_malformed() {
        let mut bytes = channel_bind(ChannelNumber::new(0x7FFF).expect("in range"));
        // The attribute's value follows the 20-byte header and its own 4-byte header.
        assert_eq!(bytes[24..26], [0x7F, 0xFF]);
        bytes[24] = 0x80;
        bytes[25] = 0x00;
        assert!(matches!(
            stun::decode(&bytes),
            Err(DecodeError::Broken {
                class: MessageClass::Request,
                ..
            })
        ));
    }
}
