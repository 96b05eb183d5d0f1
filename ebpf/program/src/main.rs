//! The relay's XDP program. See `program.rs`; on the host this binary is an empty stub, so that
//! `cargo build --workspace` works without the BPF toolchain.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "relay-xdp-ebpf is an eBPF object: it is built for bpfel-unknown-none by the relay-xdp loader's \
         build script and cannot run on the host"
    );
    std::process::exit(2);
}
