//! Reads every slot of a per-CPU array of `u64` in one `BPF_MAP_LOOKUP_BATCH` call.
//!
//! aya reads a map one key per `bpf()` call. The reason counters have 64 slots, and the harness
//! reads them after every run of the program to learn which path the run took: one call instead
//! of 64 (or of a guess at the likely slots first) is what lets differential exploration keep up
//! with the userspace relay alone. aya has no batch operations, so this is the one raw `bpf()`
//! call of the loader.

#![allow(unsafe_code)]

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::MapData;

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`, the part this command reads and writes.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The sum over CPUs of each of the `slots` slots of the per-CPU `u64` array `map`, whose
/// per-CPU values the kernel lays out as `cpus` consecutive `u64`s per key.
pub(crate) fn per_cpu_sums(map: &MapData, slots: usize, cpus: usize) -> io::Result<Vec<u64>> {
    let mut keys = vec![0u32; slots];
    let mut values = vec![0u64; slots * cpus];
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        // in_batch 0 (NULL): start at the first key.
        out_batch: &raw mut out_batch as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: u32::try_from(slots).map_err(|_| io::Error::other("too many slots"))?,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for this command, its size passed alongside;
    // the kernel writes at most `count` keys of 4 bytes into `keys`, `count * cpus` values of 8
    // bytes into `values`, and one 4-byte array key into `out_batch`, all of which are that
    // large and outlive the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if result < 0 {
        let error = io::Error::last_os_error();
        // ENOENT: the walk reached the end of the map, having filled `count` entries.
        if error.raw_os_error() != Some(libc::ENOENT) {
            return Err(error);
        }
    }
    let read = attr.count as usize;
    if read != slots || keys.iter().enumerate().any(|(i, &key)| key as usize != i) {
        return Err(io::Error::other(format!(
            "a batch lookup of {slots} array slots returned {read}, keys {keys:?}"
        )));
    }
    Ok(values
        .chunks_exact(cpus)
        .map(|per_cpu| per_cpu.iter().sum())
        .collect())
}
