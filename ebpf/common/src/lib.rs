//! Types shared by the relay's XDP program (`relay-xdp-ebpf`) and its userspace loader
//! (`relay-xdp`).
//!
//! Everything here is `no_std` and `#[repr(C)]` so the kernel program and the loader agree on
//! every byte. Verdict reasons are plain integers, not enums with data: the program indexes a
//! per-CPU counter array with them, and the verifier only ever sees a bounded integer.
#![no_std]

/// The XDP actions, as the kernel numbers them (`enum xdp_action`).
pub mod action {
    /// The program failed; the kernel drops the frame and fires a trace point.
    pub const ABORTED: u32 = 0;
    /// Drop the frame.
    pub const DROP: u32 = 1;
    /// Hand the frame to the kernel's network stack (and so to the userspace relay).
    pub const PASS: u32 = 2;
    /// Send the (rewritten) frame back out of the interface it arrived on.
    pub const TX: u32 = 3;
    /// Redirect the frame to another interface or CPU.
    pub const REDIRECT: u32 = 4;
}

/// Why the program returned its verdict. Every run increments exactly one of these counters.
pub mod reason {
    /// The frame is not IPv4 or IPv6 (ARP, VLAN-tagged, anything else).
    pub const PASS_NOT_IP: u32 = 0;
    /// A header is truncated or inconsistent (lengths, version, IHL below 5).
    pub const PASS_MALFORMED: u32 = 1;
    /// An IPv4 header carries options.
    pub const PASS_IPV4_OPTIONS: u32 = 2;
    /// An IPv6 header is followed by an extension header.
    pub const PASS_IPV6_EXTENSION: u32 = 3;
    /// An IPv4 fragment (more-fragments set or a non-zero offset).
    pub const PASS_FRAGMENT: u32 = 4;
    /// The transport is not UDP (TCP, ICMP, ...).
    pub const PASS_NOT_UDP: u32 = 5;
    /// A well-formed UDP datagram that the fast path does not handle.
    pub const PASS_UDP_NOT_OWNED: u32 = 6;

    /// Number of reason slots in the counter map. Reasons added later take free slots below it.
    pub const COUNT: u32 = 64;

    /// Human-readable names, indexed by reason; `None` for unused slots.
    pub const NAMES: [Option<&str>; COUNT as usize] = {
        let mut names = [None; COUNT as usize];
        names[PASS_NOT_IP as usize] = Some("pass/not-ip");
        names[PASS_MALFORMED as usize] = Some("pass/malformed");
        names[PASS_IPV4_OPTIONS as usize] = Some("pass/ipv4-options");
        names[PASS_IPV6_EXTENSION as usize] = Some("pass/ipv6-extension-header");
        names[PASS_FRAGMENT as usize] = Some("pass/fragment");
        names[PASS_NOT_UDP as usize] = Some("pass/not-udp");
        names[PASS_UDP_NOT_OWNED as usize] = Some("pass/udp-not-owned");
        names
    };

    /// The name of a reason, or `"unknown"` for a slot that is not assigned.
    pub fn name(reason: u32) -> &'static str {
        match NAMES.get(reason as usize) {
            Some(Some(name)) => name,
            _ => "unknown",
        }
    }
}

/// Names of the maps in the object file, shared so the loader cannot drift from the program.
pub mod maps {
    /// `PerCpuArray<u64>` with [`crate::reason::COUNT`] slots: runs per verdict reason.
    pub const REASON_COUNTERS: &str = "REASON_COUNTERS";
}

/// The name of the XDP program's entry point in the object file.
pub const PROGRAM_NAME: &str = "relay_xdp";
