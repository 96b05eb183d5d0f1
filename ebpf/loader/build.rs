//! Builds the XDP program (`relay-xdp-ebpf`, binary of the same name) for `bpfel-unknown-none` and
//! leaves the object in `OUT_DIR`, where `src/lib.rs` embeds it.
//!
//! The BPF target has no prebuilt `core`, so the program is built with `-Z build-std=core`. That
//! flag needs `RUSTC_BOOTSTRAP=1`, which is set here, in this build script's own environment, so
//! only the nested eBPF build sees it and the rest of the workspace stays on plain stable.

fn main() -> anyhow::Result<()> {
    // SAFETY: a build script is single-threaded until `build_ebpf` spawns its reader thread,
    // which happens after these calls; nothing else reads the environment concurrently.
    // The nested build's progress lines would each show up as a build-script warning; errors
    // still come through.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("RUSTC_BOOTSTRAP", "1");
        std::env::set_var("CARGO_TERM_QUIET", "true");
    };

    // `Toolchain::default()` would mean `rustup run nightly`, and the nightly on these machines
    // has no rust-src. Build with the toolchain that is building us.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());

    let program_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../program");
    // aya-build reruns this script when the program's directory changes; the program is built
    // from the common crate too. (A build-dependency on the program crate would do the same,
    // but its host build takes the common crate's features from whichever packages a cargo
    // run selects, so a build of some tests first and the whole suite after would build the
    // object, and everything above it, twice.)
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../common")
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "relay-xdp-ebpf",
            root_dir: program_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
