//! The relay's XDP fast path. The program itself is this crate's binary of the same name, built
//! for `bpfel-unknown-none` by the loader's build script (`ebpf/loader/build.rs`) and embedded
//! in the loader. This library target is empty: it exists so that the loader can list this
//! crate as a build-dependency, which makes cargo rebuild the object when the program changes.
#![no_std]
