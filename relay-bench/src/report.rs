//! The runs' results, their medians per mode, and the tables: aligned text that is also
//! Markdown.

use std::{fmt::Write as _, time::Duration};

use super::{
    Mode, Rate,
    load::{Offered, Received},
    metrics::RelayedBy,
};

/// The goals the table is read against: packets per CPU-second, as a multiple of coturn's.
const USERSPACE_GOAL: f64 = 2.0;
const XDP_GOAL: f64 = 10.0;
/// Other work beyond this (in cores), while idle or under load, marks a run as sharing the
/// machine.
const BUSY_CORES: f64 = 0.2;

/// The CPU time a relay used in one run.
#[derive(Debug, Clone, Copy)]
pub struct RelayCpu {
    /// What is charged to the relay: its process's user + system time (userspace, coturn),
    /// or the machine's system + softirq time above the idle baseline (xdp).
    pub charged: Duration,
    /// The relay process's own user and system time (relay-server's, in the xdp mode too).
    pub process_user: Duration,
    pub process_system: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub mode: Mode,
    pub repetition: usize,
    /// How the XDP program was attached (`native`, `generic`), in the xdp mode.
    pub attachment: Option<&'static str>,
    pub offered: Offered,
    pub received: Received,
    /// `None` without a relay (direct).
    pub relay_cpu: Option<RelayCpu>,
    /// The CPU time of the run's processes: the sender and the receiver, the relay process,
    /// and the ksoftirqd threads (the router's forwarding and XDP run in their softirqs).
    pub run_cpu: Duration,
    /// The idle baseline's busy time, in cores (what else the machine was doing).
    pub baseline_busy_cores: f64,
    /// Busy time under load outside the run's processes, in cores (other work, or softirqs
    /// that ran while a core idled).
    pub other_work_cores: f64,
    /// Datagrams the relay namespace's UDP sockets dropped for a full receive buffer.
    pub relay_socket_overflows: u64,
    /// Datagrams the peer's socket dropped for a full receive buffer (the receiver fell behind).
    pub peer_socket_overflows: u64,
    /// relay-server's own account of who relayed (not for coturn).
    pub relayed_by: Option<RelayedBy>,
}

impl RunResult {
    pub fn delivered(&self) -> u64 {
        self.received.datagrams
    }

    pub fn loss_percent(&self) -> f64 {
        let offered = self.offered.datagrams.max(1) as f64;
        100.0 * (offered - self.delivered() as f64).max(0.0) / offered
    }

    /// Delivered datagrams per second of sending.
    pub fn delivered_pps(&self) -> f64 {
        self.delivered() as f64 / self.offered.elapsed.as_secs_f64().max(1e-9)
    }

    fn per_packet_us(&self, time: Duration) -> f64 {
        time.as_secs_f64() * 1e6 / self.delivered().max(1) as f64
    }

    pub fn cpu_us_per_packet(&self) -> Option<f64> {
        self.relay_cpu.map(|cpu| self.per_packet_us(cpu.charged))
    }

    /// Delivered datagrams per second of the relay's CPU time: what one core would relay.
    pub fn packets_per_cpu_second(&self) -> Option<f64> {
        self.relay_cpu
            .map(|cpu| self.delivered() as f64 / cpu.charged.as_secs_f64().max(1e-9))
    }

    pub fn run_us_per_packet(&self) -> f64 {
        self.per_packet_us(self.run_cpu)
    }

    /// Whether other work shared the machine, idle or under load.
    fn shared(&self) -> bool {
        self.baseline_busy_cores > BUSY_CORES || self.other_work_cores > BUSY_CORES
    }

    /// The whole run's cost per datagram above the direct run of the same round (adjacent in
    /// time, so the machine's drift cancels out best).
    fn run_above_direct(&self, results: &[RunResult]) -> Option<f64> {
        if self.mode == Mode::Direct {
            return None;
        }
        let direct = results
            .iter()
            .find(|run| run.mode == Mode::Direct && run.repetition == self.repetition)?;
        Some(self.run_us_per_packet() - direct.run_us_per_packet())
    }

    fn mode_label(&self) -> String {
        match self.attachment {
            Some(attachment) => format!("{} ({attachment})", self.mode.name()),
            None => self.mode.name().to_owned(),
        }
    }
}

/// A mode's runs, summarised by medians.
#[derive(Debug)]
struct ModeSummary {
    label: String,
    mode: Mode,
    runs: usize,
    offered: f64,
    delivered: f64,
    loss_percent: f64,
    delivered_pps: f64,
    cpu_us_per_packet: Option<f64>,
    per_cpu_second: Option<f64>,
    /// The lowest and highest packets per CPU-second of the runs.
    per_cpu_second_range: Option<(f64, f64)>,
    run_us_per_packet: f64,
    /// The median of the runs' cost above the direct run of their round.
    run_above_direct: Option<f64>,
}

impl ModeSummary {
    fn of(mode: Mode, runs: &[&RunResult], results: &[RunResult]) -> Self {
        let median_of =
            |value: fn(&RunResult) -> f64| median(runs.iter().map(|run| value(run)).collect());
        let per_core: Option<Vec<f64>> = runs
            .iter()
            .map(|run| run.packets_per_cpu_second())
            .collect();
        let cpu_us: Option<Vec<f64>> = runs.iter().map(|run| run.cpu_us_per_packet()).collect();
        let mut labels: Vec<String> = runs.iter().map(|run| run.mode_label()).collect();
        labels.dedup();
        Self {
            label: labels.join(", "),
            mode,
            runs: runs.len(),
            offered: median_of(|run| run.offered.datagrams as f64),
            delivered: median_of(|run| run.delivered() as f64),
            loss_percent: median_of(RunResult::loss_percent),
            delivered_pps: median_of(RunResult::delivered_pps),
            cpu_us_per_packet: cpu_us.map(median),
            per_cpu_second_range: per_core.as_ref().map(|values| {
                let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = values.iter().copied().fold(0.0, f64::max);
                (low, high)
            }),
            per_cpu_second: per_core.map(median),
            run_us_per_packet: median_of(RunResult::run_us_per_packet),
            run_above_direct: runs
                .iter()
                .map(|run| run.run_above_direct(results))
                .collect::<Option<Vec<f64>>>()
                .filter(|values| !values.is_empty())
                .map(median),
        }
    }
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// How the bench was run, for the report's header.
#[derive(Debug)]
pub struct Setting {
    pub date: String,
    pub machine: String,
    pub clients: usize,
    pub payload: usize,
    pub duration_s: u64,
    pub rate: Rate,
    /// Why the xdp mode did not attach as asked, if it did not.
    pub xdp_note: Option<String>,
}

/// The summary table, the goals, the notes on how CPU is counted, and every run.
pub fn render(setting: &Setting, results: &[RunResult]) -> String {
    let mut modes: Vec<Mode> = results.iter().map(|run| run.mode).collect();
    modes.sort();
    modes.dedup();
    let summaries: Vec<ModeSummary> = modes
        .iter()
        .map(|&mode| {
            let runs: Vec<&RunResult> = results.iter().filter(|run| run.mode == mode).collect();
            ModeSummary::of(mode, &runs, results)
        })
        .collect();
    let find = |mode: Mode| summaries.iter().find(|summary| summary.mode == mode);
    let coturn = find(Mode::Coturn);
    // Per core: the relay's packets per CPU-second over coturn's.
    let per_core_ratio =
        |summary: &ModeSummary| Some(summary.per_cpu_second? / coturn?.per_cpu_second?);
    let mut out = String::new();
    let rate = match setting.rate {
        Rate::Max => "as fast as one sending thread goes".to_owned(),
        Rate::PerSecond(rate) => format!("{} datagrams/s offered", thousands(rate as f64)),
    };
    let _ = writeln!(
        out,
        "{}, {}: {} TURN clients, {}-byte payloads (ChannelData), {rate}, {} s per run; \
         medians of {} run(s) per mode.\n",
        setting.date,
        setting.machine,
        setting.clients,
        setting.payload,
        setting.duration_s,
        summaries
            .iter()
            .map(|summary| summary.runs)
            .max()
            .unwrap_or(0),
    );
    let header = [
        "mode",
        "offered",
        "delivered",
        "loss %",
        "delivered pps",
        "CPU µs/pkt",
        "pkts per CPU-s",
        "vs coturn",
        "per CPU-s, min-max",
        "whole run µs/pkt",
        "above direct",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|summary| {
            vec![
                summary.label.clone(),
                thousands(summary.offered),
                thousands(summary.delivered),
                format!("{:.1}", summary.loss_percent),
                thousands(summary.delivered_pps),
                summary
                    .cpu_us_per_packet
                    .map_or_else(dash, |us| format!("{us:.2}")),
                summary.per_cpu_second.map_or_else(dash, thousands),
                per_core_ratio(summary).map_or_else(dash, |ratio| format!("{ratio:.2}x")),
                summary
                    .per_cpu_second_range
                    .map_or_else(dash, |(low, high)| {
                        format!("{}-{}", thousands(low), thousands(high))
                    }),
                format!("{:.2}", summary.run_us_per_packet),
                summary
                    .run_above_direct
                    .map_or_else(dash, |us| format!("{us:.2}")),
            ]
        })
        .collect();
    out.push_str(&table(&header, &rows, 1));
    out.push('\n');

    for (mode, goal) in [(Mode::Userspace, USERSPACE_GOAL), (Mode::Xdp, XDP_GOAL)] {
        let Some(summary) = find(mode) else {
            continue;
        };
        let _ = match per_core_ratio(summary) {
            Some(ratio) => {
                let verdict = if ratio >= goal { "met" } else { "NOT met" };
                writeln!(
                    out,
                    "Goal: {} at >= {goal}x coturn's packets per CPU-second: {ratio:.2}x, \
                     {verdict}.",
                    mode.name()
                )
            }
            None => writeln!(
                out,
                "Goal: {} at >= {goal}x coturn (no coturn run to compare).",
                mode.name()
            ),
        };
    }
    out.push_str(NOTES);
    if let Some(note) = &setting.xdp_note {
        let _ = writeln!(out, "- xdp: {note}.");
    }
    let shared = results.iter().filter(|run| run.shared()).count();
    if shared > 0 {
        let _ = writeln!(
            out,
            "- {shared} of {} runs (marked `shared` below) had other work on the machine, over \
             {BUSY_CORES} cores idle or under load: their xdp CPU figure (machine-wide) is \
             unreliable, and the others may be slowed. The medians include them.",
            results.len()
        );
    }
    out.push_str("\nEvery run:\n\n");
    out.push_str(&runs_table(results));
    out
}

/// How to read the columns.
const NOTES: &str = "
- `CPU µs/pkt` is the CPU time charged to the relay per delivered datagram, and `pkts per
  CPU-s` its inverse: the datagrams one core would relay. `vs coturn` divides it by coturn's.
  - userspace and coturn: the relay process's user + system time (`/proc/PID/stat`, every
    thread). Receiving into its sockets runs in the sender's softirqs and is not in it; its
    sends are, and on a veth a send carries the datagram through the router to the peer's
    socket in the same system call.
  - xdp: the program runs in the softirq of the relay's veth, in no process: the machine's
    system + softirq time (`/proc/stat`) over the run minus an idle baseline measured the same
    way for the same duration just before. That includes the sender's system calls, the
    router's forwarding both ways and the receiver's system calls, so it is an upper bound on
    the relay's share.
- `whole run µs/pkt`: the CPU time of the run's processes per delivered datagram, one
  measure for every mode: this process (the sender and the receiver, with the softirqs that
  ran in their system calls: the router's forwarding, and XDP), the relay process, and the
  ksoftirqd threads. `above direct` subtracts the direct run's of the same round (the same
  senders and receiver, no relay): what relaying adds, a second pass through the router
  included.
- `delivered` counts datagrams of the right size at the peer's socket; `loss %` is the share of
  the offered ones that did not arrive. The runs below say where they were lost (a relay
  socket's full receive buffer, or the peer's). `other work` is the machine's busy time
  outside the run's processes, idle (the baseline) and under load.
";

fn runs_table(results: &[RunResult]) -> String {
    let header = [
        "run",
        "mode",
        "offered",
        "delivered",
        "loss %",
        "delivered pps",
        "CPU µs/pkt",
        "process user+sys µs/pkt",
        "whole run µs/pkt",
        "above direct",
        "other work, idle / load",
        "relay rcvbuf drops",
        "peer rcvbuf drops",
        "relayed by",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|run| {
            vec![
                run.repetition.to_string(),
                run.mode_label(),
                thousands(run.offered.datagrams as f64),
                thousands(run.delivered() as f64),
                format!("{:.1}", run.loss_percent()),
                thousands(run.delivered_pps()),
                run.cpu_us_per_packet()
                    .map_or_else(dash, |us| format!("{us:.2}")),
                run.relay_cpu.map_or_else(dash, |cpu| {
                    format!(
                        "{:.2}+{:.2}",
                        run.per_packet_us(cpu.process_user),
                        run.per_packet_us(cpu.process_system)
                    )
                }),
                format!("{:.2}", run.run_us_per_packet()),
                run.run_above_direct(results)
                    .map_or_else(dash, |us| format!("{us:.2}")),
                format!(
                    "{:.2} / {:.2} cores{}",
                    run.baseline_busy_cores,
                    run.other_work_cores,
                    if run.shared() { ", shared" } else { "" }
                ),
                thousands(run.relay_socket_overflows as f64),
                thousands(run.peer_socket_overflows as f64),
                run.relayed_by.map_or_else(dash, |by| {
                    format!(
                        "XDP_TX {}, sockets {}",
                        thousands(by.xdp as f64),
                        thousands(by.sockets as f64)
                    )
                }),
            ]
        })
        .collect();
    table(&header, &rows, 2)
}

/// A Markdown table with its columns padded to one width each; the first `left` columns are
/// aligned left, the rest right.
fn table(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain([header[column].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(column, cell)| {
                let pad = " ".repeat(widths[column] - cell.chars().count());
                if column < left {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(header.iter().map(|cell| (*cell).to_owned()).collect());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(column, &width)| {
            if column < left {
                "-".repeat(width)
            } else {
                format!("{}:", "-".repeat(width - 1))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// `value` rounded, with thousands separated by commas: 1234567.8 -> `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    /// A run that delivered 1,000,000 of 1,000,000 datagrams in 10 s, charging `relay_s`
    /// seconds to the relay and `run_s` to the whole run.
    fn run(mode: Mode, relay_s: Option<f64>, run_s: f64) -> RunResult {
        RunResult {
            mode,
            repetition: 1,
            attachment: None,
            offered: Offered {
                datagrams: 1_000_000,
                send_errors: 0,
                elapsed: Duration::from_secs(10),
            },
            received: Received {
                datagrams: 1_000_000,
                bytes: 100_000_000,
                wrong_size: 0,
            },
            relay_cpu: relay_s.map(|seconds| RelayCpu {
                charged: Duration::from_secs_f64(seconds),
                process_user: Duration::from_secs_f64(seconds / 4.0),
                process_system: Duration::from_secs_f64(seconds * 3.0 / 4.0),
            }),
            run_cpu: Duration::from_secs_f64(run_s),
            baseline_busy_cores: 0.01,
            other_work_cores: 0.02,
            relay_socket_overflows: 0,
            peer_socket_overflows: 0,
            relayed_by: None,
        }
    }

    #[test]
    fn the_report_compares_with_coturn_and_the_direct_run() {
        let setting = Setting {
            date: "2026-01-01".to_owned(),
            machine: "2 cores".to_owned(),
            clients: 8,
            payload: 100,
            duration_s: 10,
            rate: Rate::PerSecond(100_000),
            xdp_note: None,
        };
        let results = [
            run(Mode::Userspace, Some(2.5), 8.0),
            run(Mode::Coturn, Some(5.0), 10.0),
            run(Mode::Direct, None, 4.0),
        ];
        let report = render(&setting, &results);
        // userspace: 2.5 µs per datagram, 400,000 per CPU-second, twice coturn's; 8 - 4 µs of
        // the whole run's CPU above the direct run.
        let userspace: Vec<&str> = report
            .lines()
            .find(|line| line.starts_with("| userspace"))
            .expect("a userspace row")
            .split('|')
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .collect();
        assert_eq!(
            userspace,
            [
                "userspace",
                "1,000,000",
                "1,000,000",
                "0.0",
                "100,000",
                "2.50",
                "400,000",
                "2.00x",
                "400,000-400,000",
                "8.00",
                "4.00"
            ]
        );
        assert!(report.contains("2.00x, met."), "{report}");
        assert!(report.contains("| direct    "), "{report}");
        assert!(!report.contains("shared"), "{report}");
    }

    #[test]
    fn columns_are_aligned() {
        let rows = vec![
            vec!["xdp".to_owned(), "1".to_owned()],
            vec!["coturn".to_owned(), "1,000".to_owned()],
        ];
        let text = table(&["mode", "pps"], &rows, 1);
        assert_eq!(
            text,
            "| mode   |   pps |\n| ------ | ----: |\n| xdp    |     1 |\n| coturn | 1,000 |\n"
        );
    }
}
