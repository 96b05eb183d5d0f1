//! `channel_data`: the ChannelData parser, and a relay with one bound channel relaying the
//! bytes.
//!
//! `proto::channel_data::ChannelData::parse` must accept exactly a header with a channel number
//! in 0x4000-0x7FFF (`CHANNEL_RANGE`) and a length that the rest covers with at most 3 bytes of
//! padding, and a parsed message must write back to its unpadded bytes. Then the relay of
//! [`fixtures::relay_with_channel`] gets the bytes from its client on the TURN port (relayed
//! only on the bound channel, to the bound peer, with exactly the parsed data) and from the
//! bound peer on the allocation port (relayed to the client as ChannelData on the bound channel
//! with all the bytes). Neither changes the relay's state, so one relay serves every input.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Instant;

use proto::channel_data::{self, ChannelData, ChannelDataError};
use relay::{Drop, Relay};

use super::relay_input;
use crate::fixtures::{self, CHANNEL, PEER, TurnClient};

struct World {
    relay: Relay,
    client: TurnClient,
    relayed: SocketAddr,
    now: Instant,
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

pub fn channel_data(data: &[u8]) {
    let parsed = ChannelData::parse(data);
    check_parse(data, parsed);
    WORLD.with(|world| {
        let mut world = world.borrow_mut();
        let world = world.get_or_insert_with(|| {
            let now = Instant::now();
            let (relay, client, port) = fixtures::relay_with_channel(now);
            World {
                relay,
                relayed: SocketAddr::new(fixtures::RELAY_V4.into(), port),
                client,
                now,
            }
        });
        let bindings = world.relay.channel_bindings();

        // From the client: ChannelData (or STUN, or neither) on the TURN port.
        let from_client = relay_input(
            &mut world.relay,
            world.client.addr,
            world.client.server,
            data,
            world.now,
        );
        match (&from_client.result, parsed) {
            (Ok(Some(out)), Ok(message)) => {
                assert_eq!(message.channel, CHANNEL, "relayed on an unbound channel");
                assert_eq!((out.src, out.dst), (world.relayed, PEER));
                assert_eq!(
                    out.payload, message.data,
                    "relayed data differs from the parsed"
                );
            }
            (Ok(Some(out)), Err(_)) => panic!("relayed unparsable ChannelData to {}", out.dst),
            (Err(Drop::MalformedChannelData), parsed) => assert!(
                parsed.is_err() && channel_data::looks_like_channel_data(data),
                "dropped parsable ChannelData as malformed"
            ),
            (Err(Drop::UnboundChannel), Ok(message)) => {
                assert_ne!(message.channel, CHANNEL, "dropped the bound channel's data");
            }
            _ => {}
        }

        // From the peer: any bytes on the allocation port go to the client on the channel.
        let from_peer = relay_input(&mut world.relay, PEER, world.relayed, data, world.now);
        let out = from_peer
            .result
            .expect("data from a peer with a channel is relayed")
            .expect("relayed at once");
        assert_eq!((out.src, out.dst), (world.client.server, world.client.addr));
        let back = ChannelData::parse(&out.payload).expect("the relay's ChannelData parses");
        assert_eq!((back.channel, back.data), (CHANNEL, data));

        assert_eq!(
            world.relay.channel_bindings(),
            bindings,
            "data changed the bindings"
        );
        assert!(world.relay.poll_event().is_none(), "data produced an event");
    });
}

fn check_parse(data: &[u8], parsed: Result<ChannelData<'_>, ChannelDataError>) {
    match parsed {
        Ok(message) => {
            assert!(data.len() >= channel_data::HEADER_LEN);
            assert!(channel_data::CHANNEL_RANGE.contains(&message.channel));
            assert_eq!(
                usize::from(u16::from_be_bytes([data[2], data[3]])),
                message.data.len()
            );
            let padding = data.len() - channel_data::HEADER_LEN - message.data.len();
            assert!(padding <= 3, "{padding} bytes of padding accepted");
            let written = message.to_vec();
            assert_eq!(written, data[..written.len()]);
            assert_eq!(ChannelData::parse(&written), Ok(message));
        }
        Err(ChannelDataError::TooShort { len }) => assert!(len < channel_data::HEADER_LEN),
        Err(ChannelDataError::ChannelOutOfRange { channel }) => {
            assert!(!channel_data::CHANNEL_RANGE.contains(&channel));
        }
        Err(ChannelDataError::LengthMismatch {
            declared,
            available,
        }) => assert!(declared > available || available - declared > 3),
    }
}
