//! One seed, one run: the comparison of two runs of the same case. Explore runs a case twice (on
//! two threads, so the second run costs little wall time on a machine with two cores) and a
//! difference in the trace, the hops, the XDP verdicts, the flow records, the deliveries or the
//! drops is a failure like any other. The report says which part differed first, and where.

use std::{
    fmt::Debug,
    sync::mpsc::{Receiver, Sender, channel},
    thread::JoinHandle,
};

use scenario_format::Scenario;
use sim::{Outcome, RunOptions, SimError};

/// How often explore runs a case a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Determinism {
    /// Every case.
    Every,
    /// Every n-th case (the first included).
    EveryNth(u64),
    Off,
}

impl Determinism {
    /// Whether case `index` of an exploration runs twice.
    pub fn checks(self, index: u64) -> bool {
        match self {
            Determinism::Every => true,
            Determinism::EveryNth(n) => n > 0 && index.is_multiple_of(n),
            Determinism::Off => false,
        }
    }
}

impl std::str::FromStr for Determinism {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "every" => Ok(Determinism::Every),
            "off" => Ok(Determinism::Off),
            number => match number.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Determinism::EveryNth(n)),
                _ => Err(format!(
                    "`{text}`: want `every`, `off` or a number N > 0 (every N-th case)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Determinism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Determinism::Every => f.write_str("every case run twice"),
            Determinism::EveryNth(n) => write!(f, "every {n}th case run twice"),
            Determinism::Off => f.write_str("off"),
        }
    }
}

/// Where two runs of one case first differ, in words; `None` if they are the same run.
pub fn first_difference(first: &Outcome, second: &Outcome) -> Option<String> {
    // In the order a reader would look: the host events say what each host did; the hops carry
    // every byte and XDP verdict; the rest follows from those.
    first_in("trace line", &first.trace, &second.trace, |line| {
        line.to_string()
    })
    .or_else(|| {
        first_in("hop", &first.hops, &second.hops, |hop| {
            format!(
                "{} ms {} {:?} {} > {} {} bytes, XDP {:?}",
                hop.at_ms,
                hop.host,
                hop.direction,
                hop.src,
                hop.dst,
                hop.payload.len(),
                hop.xdp.as_ref().map(|note| (&note.verdict, &note.reason))
            )
        })
    })
    .or_else(|| {
        first_in("non-UDP frame", &first.frames, &second.frames, |f| {
            format!("{f:?}")
        })
    })
    .or_else(|| {
        first_in("flow record", &first.flows, &second.flows, |r| {
            format!("{r:?}")
        })
    })
    .or_else(|| {
        first_in("delivery", &first.deliveries, &second.deliveries, |d| {
            format!("{d:?}")
        })
    })
    .or_else(|| first_in("drop", &first.drops, &second.drops, |d| format!("{d:?}")))
    .or_else(|| {
        (first.xdp_reasons != second.xdp_reasons).then(|| {
            format!(
                "the XDP reason counters differ: first run {:?}, second run {:?}",
                first.xdp_reasons, second.xdp_reasons
            )
        })
    })
    .or_else(|| {
        first_in("invariant error", &first.errors, &second.errors, |e| {
            e.clone()
        })
    })
}

/// The first index where two lists differ, with both items (or the missing one) in words.
fn first_in<T: PartialEq>(
    what: &str,
    first: &[T],
    second: &[T],
    show: impl Fn(&T) -> String,
) -> Option<String> {
    let index = (0..first.len().max(second.len())).find(|&i| first.get(i) != second.get(i))?;
    let side = |list: &[T]| {
        list.get(index)
            .map_or_else(|| "(nothing: the list ends here)".to_owned(), &show)
    };
    Some(format!(
        "the two runs of this seed differ first at {what} {index} (of {} and {}):\n  first run:  \
         {}\n  second run: {}",
        first.len(),
        second.len(),
        side(first),
        side(second)
    ))
}

/// The same for two runs that ended with an error, or one with an error and one without.
pub fn first_difference_of_results(
    first: &Result<Outcome, SimError>,
    second: &Result<Outcome, SimError>,
) -> Option<String> {
    match (first, second) {
        (Ok(first), Ok(second)) => first_difference(first, second),
        (Err(first), Err(second)) => (first.to_string() != second.to_string()).then(|| {
            format!("the two runs of this seed failed differently:\n  first run:  {first}\n  second run: {second}")
        }),
        (Ok(_), Err(error)) => Some(format!(
            "the first run of this seed completed, the second failed: {error}"
        )),
        (Err(error), Ok(_)) => Some(format!(
            "the first run of this seed failed ({error}), the second completed"
        )),
    }
}

/// A thread that runs the second run of a case while the caller runs the first. It keeps the
/// thread (and the XDP programs loaded on it) for the whole exploration.
#[derive(Debug)]
pub struct TwinRunner {
    jobs: Option<Sender<(Scenario, RunOptions)>>,
    results: Receiver<Result<Outcome, SimError>>,
    thread: Option<JoinHandle<()>>,
}

impl TwinRunner {
    pub fn start() -> Self {
        let (jobs, job_queue) = channel::<(Scenario, RunOptions)>();
        let (result_sender, results) = channel();
        let thread = std::thread::Builder::new()
            .name("determinism twin".to_owned())
            .spawn(move || {
                for (scenario, options) in job_queue {
                    if result_sender.send(sim::run(&scenario, &options)).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Self {
            jobs: Some(jobs),
            results,
            thread,
        }
    }

    /// Hands `scenario` to the twin thread, which runs it while the caller runs and checks its
    /// own run; [`TwinRunner::difference_from`] then compares the two.
    pub fn start_second_run(&self, scenario: &Scenario, options: &RunOptions) -> SecondRun {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send((scenario.clone(), options.clone())).is_ok());
        if sent {
            SecondRun::OnTwin
        } else {
            // Without a twin thread (it could not start) both runs happen here.
            SecondRun::Here(Box::new((scenario.clone(), options.clone())))
        }
    }

    /// The difference between `first` and the second run started by
    /// [`TwinRunner::start_second_run`], if any (waits for the second run).
    pub fn difference_from(
        &self,
        second: SecondRun,
        first: &Result<Outcome, SimError>,
    ) -> Option<String> {
        let second = match second {
            SecondRun::OnTwin => self.results.recv().unwrap_or_else(|_| {
                Err(SimError::Turmoil(
                    "the determinism twin thread stopped".to_owned(),
                ))
            }),
            SecondRun::Here(run) => sim::run(&run.0, &run.1),
        };
        first_difference_of_results(first, &second)
    }
}

/// A second run of a case, under way (`OnTwin`) or still to run here.
#[derive(Debug)]
#[must_use = "a second run started must be compared, or the next one gets its result"]
pub enum SecondRun {
    OnTwin,
    Here(Box<(Scenario, RunOptions)>),
}

impl Drop for TwinRunner {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_reads_every_off_and_a_number() {
        assert_eq!("every".parse(), Ok(Determinism::Every));
        assert_eq!("off".parse(), Ok(Determinism::Off));
        assert_eq!("4".parse(), Ok(Determinism::EveryNth(4)));
        assert!("0".parse::<Determinism>().is_err());
        assert!("sometimes".parse::<Determinism>().is_err());
        assert!(Determinism::EveryNth(4).checks(0));
        assert!(!Determinism::EveryNth(4).checks(3));
        assert!(Determinism::EveryNth(4).checks(8));
        assert!(!Determinism::Off.checks(0));
    }

    #[test]
    fn the_first_difference_names_the_list_the_index_and_both_items() {
        let first = ["a", "b", "c"];
        let second = ["a", "x", "c"];
        let text = first_in("trace line", &first, &second, |s| (*s).to_owned()).expect("differ");
        assert!(text.contains("trace line 1 (of 3 and 3)"), "{text}");
        assert!(text.contains("first run:  b"), "{text}");
        assert!(text.contains("second run: x"), "{text}");
        let shorter = ["a", "b"];
        let text = first_in("hop", &first, &shorter, |s| (*s).to_owned()).expect("differ");
        assert!(text.contains("hop 2 (of 3 and 2)"), "{text}");
        assert!(
            text.contains("second run: (nothing: the list ends here)"),
            "{text}"
        );
        assert_eq!(first_in("hop", &first, &first, |s| (*s).to_owned()), None);
    }
}
