//! Each target on a few thousand pseudo-random inputs: a quick stand-in for a fuzzing run that
//! catches a broken target or invariant before the corpus exists.

/// SplitMix64: a fixed sequence of bytes for every run.
fn bytes(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

#[test]
fn targets_survive_random_inputs() {
    let mut state = 1;
    for &(name, run) in fuzz_targets::TARGETS {
        for n in 0..300 {
            let len = n % 200;
            let input = bytes(&mut state, len);
            eprintln!("{name}: {input:02x?}");
            run(&input);
        }
    }
}
