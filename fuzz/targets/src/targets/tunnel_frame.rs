//! `tunnel_frame`: the tunnel frame's header and MAC (`proto::tunnel`).
//!
//! The bytes as a frame: `peek_header` accepts exactly the frames with the type byte, zero
//! reserved bytes and room for the MAC, and reads the fields where the layout puts them;
//! `open` under the fixture's key succeeds only for a frame that `seal` would write
//! byte for byte. The bytes as a frame's contents: the first 12 are a session id and counter,
//! the rest the inner packet; the sealed frame opens to them again, and with any one byte
//! changed (chosen by the input) it does not open.

use proto::tunnel::{self, FrameHeader, TunnelError};

/// Frames the target opens go from a client to its gateway.
const UP: tunnel::Direction = tunnel::Direction::ToGateway;

use crate::fixtures;

pub fn tunnel_frame(data: &[u8]) {
    let key = fixtures::session_key();

    let peeked = tunnel::peek_header(data);
    match peeked {
        Ok(header) => {
            assert!(data.len() >= tunnel::MIN_FRAME_LEN);
            assert_eq!(data[..4], [tunnel::FRAME_TYPE, 0, 0, 0]);
            assert_eq!(header.session_id.to_be_bytes(), data[4..8]);
            assert_eq!(header.counter.to_be_bytes(), data[8..16]);
        }
        Err(TunnelError::TooShort { len }) => assert!(len < tunnel::MIN_FRAME_LEN),
        Err(TunnelError::WrongType { found }) => assert_ne!(found, tunnel::FRAME_TYPE),
        Err(TunnelError::ReservedNotZero) => assert_ne!(data[1..4], [0, 0, 0]),
        Err(TunnelError::BadMac) => panic!("peek_header checked a MAC"),
    }
    match tunnel::open(&key, UP, data) {
        Ok((header, inner)) => {
            assert_eq!(peeked, Ok(header));
            assert_eq!(
                inner,
                &data[tunnel::HEADER_LEN..data.len() - tunnel::MAC_LEN]
            );
            assert_eq!(
                tunnel::seal(&key, UP, header, inner),
                data,
                "opened but not sealed so"
            );
        }
        Err(error) => {
            if peeked.is_ok() {
                assert_eq!(error, TunnelError::BadMac);
            }
        }
    }

    let Some((fields, inner)) = data.split_first_chunk::<12>() else {
        return;
    };
    let header = FrameHeader {
        session_id: u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]),
        counter: u64::from_be_bytes([
            fields[4], fields[5], fields[6], fields[7], fields[8], fields[9], fields[10],
            fields[11],
        ]),
    };
    let mut frame = tunnel::seal(&key, UP, header, inner);
    assert_eq!(frame.len(), inner.len() + tunnel::MIN_FRAME_LEN);
    assert_eq!(tunnel::open(&key, UP, &frame), Ok((header, inner)));
    assert_eq!(
        tunnel::open(&key, tunnel::Direction::ToClient, &frame),
        Err(TunnelError::BadMac),
        "a frame verifies in the other direction"
    );
    assert_eq!(tunnel::peek_header(&frame), Ok(header));
    let mut in_place = vec![0; tunnel::HEADER_LEN];
    in_place.extend_from_slice(inner);
    tunnel::seal_in_place(&key, UP, header, &mut in_place);
    assert_eq!(in_place, frame, "seal_in_place and seal differ");

    let at = usize::from(fields[11]) * 257 % frame.len();
    frame[at] ^= fields[10] | 1;
    assert!(
        tunnel::open(&key, UP, &frame).is_err(),
        "a frame with byte {at} changed still opens"
    );
}
