//! The TURN relay (RFC 8656 over UDP), as a sans-IO state machine.
//!
//! `handle_input(from, to, payload, now)`, `handle_timeout(now)`, `poll_transmit()`,
//! `poll_event()` and `poll_timeout()`: the relay owns no socket, clock or thread. Besides the
//! datagrams it sends, it emits channel-binding events that tell an XDP fast path exactly what to
//! install and remove. Relay-to-self: when a peer address is one of this relay's own relayed
//! addresses, the relay delivers to that allocation itself and never puts a datagram addressed to
//! itself on the wire.
