//! CPU time from `/proc`: one process's (`/proc/PID/stat`, user + system, all its threads) and
//! the whole machine's by kind (`/proc/stat`, the `cpu` line).
//!
//! Both are counted in clock ticks (`USER_HZ`, 100 per second here); the kernel charges each
//! scheduler tick to whatever was running, so a few seconds at one busy core are thousands of
//! ticks, precise to a fraction of a percent.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::unistd::{SysconfVar, sysconf};

/// Clock ticks per second of the times in `/proc`.
pub fn ticks_per_second() -> Result<u64> {
    let ticks = sysconf(SysconfVar::CLK_TCK)
        .context("sysconf(_SC_CLK_TCK)")?
        .context("no _SC_CLK_TCK")?;
    u64::try_from(ticks).context("a negative clock tick")
}

/// A process's CPU time so far (every thread of it), in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessTicks {
    /// In its own code.
    pub user: u64,
    /// In the kernel on its behalf: its system calls, and the softirqs that ran while it was
    /// on the CPU (a send over a veth carries the datagram on to the next host's socket there).
    pub system: u64,
}

impl ProcessTicks {
    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    pub fn total(&self) -> u64 {
        self.user + self.system
    }
}

/// The CPU time of process `pid` so far.
pub fn process_ticks(pid: u32) -> Result<ProcessTicks> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_process_ticks(&stat).with_context(|| format!("{path}: `{}`", stat.trim()))
}

/// The CPU time of every process in `pids` so far, summed.
pub fn processes_ticks(pids: &[u32]) -> Result<ProcessTicks> {
    pids.iter().try_fold(ProcessTicks::default(), |sum, &pid| {
        let ticks = process_ticks(pid)?;
        Ok(ProcessTicks {
            user: sum.user + ticks.user,
            system: sum.system + ticks.system,
        })
    })
}

/// The kernel threads that run softirqs the interrupted context left over
/// (`ksoftirqd/<cpu>`): under load, part of the network stack's work lands on them.
pub fn ksoftirqd_pids() -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.starts_with("ksoftirqd/") {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// utime and stime of a `/proc/PID/stat` line: fields 14 and 15, counted after the command
/// name, which is in parentheses and may itself hold spaces and parentheses.
fn parse_process_ticks(stat: &str) -> Result<ProcessTicks> {
    let (_, after_name) = stat.rsplit_once(") ").context("no `) ` after the name")?;
    // `after_name` starts at field 3 (the state).
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let mut next = |name: &str| -> Result<u64> {
        fields
            .next()
            .with_context(|| format!("no {name}"))?
            .parse::<u64>()
            .with_context(|| format!("{name} is not a number"))
    };
    Ok(ProcessTicks {
        user: next("utime")?,
        system: next("stime")?,
    })
}

/// The machine's CPU time so far by kind, in ticks summed over every core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl MachineTicks {
    pub fn now() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        Self::parse(&stat)
    }

    fn parse(stat: &str) -> Result<Self> {
        let line = stat
            .lines()
            .find(|line| line.starts_with("cpu "))
            .context("no `cpu` line in /proc/stat")?;
        let values = line
            .split_whitespace()
            .skip(1)
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("/proc/stat: `{line}`"))?;
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = values[..] else {
            bail!("/proc/stat: fewer than 8 numbers in `{line}`");
        };
        Ok(Self {
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
        })
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    /// Time in the kernel: system calls and softirqs (where XDP and the network stack run).
    pub fn kernel(&self) -> u64 {
        self.system + self.softirq
    }

    /// Time doing anything: user, kernel and interrupts (not idle, I/O wait or steal).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }
}

/// `ticks` as a duration.
pub fn ticks_to_duration(ticks: f64, ticks_per_second: u64) -> Duration {
    Duration::from_secs_f64((ticks / ticks_per_second as f64).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_times_are_read_after_the_name() {
        let stat = "4242 (turn server) (x) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    1250 375 0 0 20 0 3 0 1000 123456 789";
        assert_eq!(
            parse_process_ticks(stat).expect("parsed"),
            ProcessTicks {
                user: 1250,
                system: 375
            }
        );
        assert!(parse_process_ticks("4242 (short) S 1").is_err());
    }

    #[test]
    fn machine_times_are_read_from_the_cpu_line() {
        let stat = "cpu  100 5 40 1000 3 1 9 2 0 0\ncpu0 50 2 20 500 1 0 4 1 0 0\n";
        let ticks = MachineTicks::parse(stat).expect("parsed");
        assert_eq!(ticks.kernel(), 49);
        assert_eq!(ticks.busy(), 155);
        let later = MachineTicks {
            system: 60,
            softirq: 19,
            ..ticks
        };
        assert_eq!(later.since(&ticks).kernel(), 30);
    }
}
