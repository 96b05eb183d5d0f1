//! The simulated network: a turmoil world built from a scenario, with hosts that drive the
//! sans-IO relay, gateway and clients, resource hosts that answer by script, a DNS server, links
//! with fixed latencies and explicit faults, the relay's datapath modes (userspace, XDP first,
//! differential), a hop-by-hop trace and a pcap writer.
