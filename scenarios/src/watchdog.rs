//! A case that never ends is a failure too: a system under test that loops (a timer that fires
//! without ever being spent, say) stops the simulation inside one call, where nothing can
//! interrupt it. The watchdog is a thread that looks at the case under way once a second; when
//! one case has run for [`CASE_TIME_LIMIT`], it writes the case where a person can replay it,
//! says so, and ends the process with a failure. Such a case is not shrunk: shrinking would
//! need to run it again.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use scenario_format::Scenario;

/// The longest one case may take. A generated case takes milliseconds (an hour of simulated
/// time is a few hundred steps), so this is a hang, never a slow case.
pub const CASE_TIME_LIMIT: Duration = Duration::from_secs(60);

/// The exit code of a process the watchdog ends.
pub const HUNG_EXIT_CODE: i32 = 3;

/// The case under way: its seed, its scenario and when it started.
type Current = Arc<Mutex<Option<(u64, Scenario, Instant)>>>;

/// Watches the cases of one exploration (the thread ends with it).
#[derive(Debug)]
pub struct Watchdog {
    current: Current,
    stop: Arc<Mutex<bool>>,
}

impl Watchdog {
    /// Starts watching; `on_hang` writes the hung case's artifacts and returns what to print.
    pub fn start(on_hang: impl Fn(u64, &Scenario) -> String + Send + 'static) -> Self {
        let current: Current = Arc::new(Mutex::new(None));
        let stop = Arc::new(Mutex::new(false));
        let (watched, stopped) = (current.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("case watchdog".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    if stopped.lock().map_or(true, |stop| *stop) {
                        return;
                    }
                    let hung = watched.lock().ok().and_then(|case| {
                        case.as_ref()
                            .filter(|(_, _, started)| started.elapsed() >= CASE_TIME_LIMIT)
                            .map(|(seed, scenario, _)| (*seed, scenario.clone()))
                    });
                    if let Some((seed, scenario)) = hung {
                        eprintln!(
                            "\ncase {seed} has run for {} s without ending: a system under test \
                             hangs\n{}",
                            CASE_TIME_LIMIT.as_secs(),
                            on_hang(seed, &scenario)
                        );
                        std::process::exit(HUNG_EXIT_CODE);
                    }
                }
            });
        if spawned.is_err() {
            eprintln!("!!! the case watchdog could not start: a hung case will not be reported");
        }
        Self { current, stop }
    }

    /// A case starts (or a shrinking candidate).
    pub fn case(&self, seed: u64, scenario: &Scenario) {
        if let Ok(mut current) = self.current.lock() {
            *current = Some((seed, scenario.clone(), Instant::now()));
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.stop.lock() {
            *stop = true;
        }
    }
}
