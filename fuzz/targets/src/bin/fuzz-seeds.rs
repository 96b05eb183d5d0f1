//! `fuzz-seeds OUT_DIR [PCAP...]`: writes seed inputs for every target into
//! `OUT_DIR/<target>/`, one file per input named by a hash of its bytes (so writing twice adds
//! nothing): the datagrams of the given pcap captures sorted by kind, and inputs built on the
//! targets' fixtures. Prints how many new inputs each target got.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use fuzz_targets::seeds;

/// Inputs from captures kept per target (the fuzzer finds the rest).
const MAX_PER_TARGET: usize = 200;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds OUT_DIR [PCAP...]");
        return ExitCode::FAILURE;
    };
    let mut all = seeds::from_fixtures();
    for pcap in args {
        let pcap = PathBuf::from(pcap);
        let datagrams = match std::fs::read(&pcap)
            .map_err(|e| e.to_string())
            .and_then(|bytes| seeds::udp_payloads(&bytes))
        {
            Ok(datagrams) => datagrams,
            Err(error) => {
                eprintln!("fuzz-seeds: {}: {error}", pcap.display());
                return ExitCode::FAILURE;
            }
        };
        seeds::from_capture(&datagrams, &mut all);
    }
    let mut written = BTreeMap::new();
    for (target, inputs) in all {
        let dir = out.join(target);
        if let Err(error) = std::fs::create_dir_all(&dir) {
            eprintln!("fuzz-seeds: cannot create {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
        let count = written.entry(target).or_insert(0);
        for input in inputs.iter().take(MAX_PER_TARGET) {
            let path = dir.join(format!("seed-{:016x}", fnv1a(input)));
            if path.exists() {
                continue;
            }
            if let Err(error) = std::fs::write(&path, input) {
                eprintln!("fuzz-seeds: cannot write {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
            *count += 1;
        }
    }
    for (target, count) in written {
        println!("{target}: {count} new seed inputs");
    }
    ExitCode::SUCCESS
}

/// FNV-1a, 64 bits: a name that stays the same for the same bytes on every toolchain.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
