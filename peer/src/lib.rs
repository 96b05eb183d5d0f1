//! The tunnel endpoint used by both the client and the gateway, as a sans-IO state machine:
//! TURN client allocations (answering the 401 challenge, refreshing before expiry, permissions
//! and channel bindings), path selection (direct or through a relay), and tunnel framing.
