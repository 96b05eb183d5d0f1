//! Ctrl-C (SIGINT) and SIGTERM during a run: instead of ending the process at once, which
//! would leave the run's namespaces and servers behind, they set a flag the run checks; it
//! then returns [`RealError::Interrupted`](crate::RealError::Interrupted) and its guards remove
//! everything it made.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Takes SIGINT and SIGTERM over for this process (once).
pub fn install() {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            if let Err(error) = signal_hook::flag::register(signal, flag.clone()) {
                eprintln!("real world: cannot take signal {signal} over: {error}");
            }
        }
        flag
    });
}

/// Whether SIGINT or SIGTERM has come since [`install`].
pub fn requested() -> bool {
    FLAG.get().is_some_and(|flag| flag.load(Ordering::Relaxed))
}
