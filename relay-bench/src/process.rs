//! Processes the bench starts, and the bench's own Ctrl-C: every command runs within a time
//! limit, every server is stopped when its guard drops, and SIGINT or SIGTERM only raise a flag
//! that the bench's loops check, so that they unwind through the guards (namespaces deleted,
//! servers stopped) instead of dying with everything left behind.

use std::{
    fs::File,
    io::Read,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};

/// Raised by the first SIGINT or SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a bounded wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// Takes over SIGINT and SIGTERM for the rest of the process: from now on they raise the flag
/// [`check_interrupt`] reads. Returns once the handlers are in place.
pub fn catch_interrupts() -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    thread::Builder::new()
        .name("interrupts".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready_tx.send(Err(error).context("cannot start a runtime"));
                    return;
                }
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let handlers = signal(SignalKind::interrupt())
                    .and_then(|interrupt| Ok((interrupt, signal(SignalKind::terminate())?)));
                let (mut interrupt, mut terminate) = match handlers {
                    Ok(handlers) => handlers,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error).context("cannot handle SIGINT/SIGTERM"));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                    if !INTERRUPTED.swap(true, Ordering::SeqCst) {
                        eprintln!("relay-bench: interrupted; stopping the servers and removing the namespaces");
                    }
                }
            });
        })
        .context("cannot start the signal thread")?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the signal thread did not start")?
}

/// `Err` once the bench has been interrupted.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Whether the bench has been interrupted.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps `duration` in small steps, returning early with `Err` when interrupted.
pub fn sleep_unless_interrupted(duration: Duration) -> Result<()> {
    let until = Instant::now() + duration;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// What a command printed, once it succeeded.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
}

/// Runs `command` to the end, within `limit` (killed past it, or when the bench is
/// interrupted), and fails unless it succeeds. Its output is captured (and shown in the error
/// when it fails).
pub fn output_within(command: &mut Command, limit: Duration) -> Result<Output> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let stdout = child.stdout.take().map(read_on_a_thread);
    let stderr = child.stderr.take().map(read_on_a_thread);
    let status = wait_within(&mut child, limit).with_context(|| shown.clone())?;
    let collect = |reader: Option<thread::JoinHandle<String>>| {
        reader
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default()
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    if !status.success() {
        bail!("{shown} failed ({status}): {}", stderr.trim());
    }
    Ok(Output { stdout })
}

/// Runs `command` with the terminal's output, within `limit` (killed past it), and fails
/// unless it succeeds.
pub fn status_within(command: &mut Command, limit: Duration) -> Result<()> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let status = wait_within(&mut child, limit).with_context(|| shown.clone())?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn read_on_a_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Waits for `child` to exit, killing it past `limit` or when the bench is interrupted.
fn wait_within(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let give_up = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for it")? {
            return Ok(status);
        }
        let stop_now = interrupted();
        if stop_now || Instant::now() >= give_up {
            let _ = child.kill();
            let _ = child.wait();
            if stop_now {
                check_interrupt()?;
            }
            bail!("still running after {} s; killed", limit.as_secs());
        }
        thread::sleep(POLL);
    }
}

/// A server the bench started; stopped with SIGTERM (then killed, past a grace period) and
/// reaped when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    name: &'static str,
    child: Child,
}

impl ServerProcess {
    /// Starts `command` in a process group of its own (so a Ctrl-C at the terminal reaches the
    /// bench, which stops it in order), its stdout and stderr appended to `log`.
    pub fn start(name: &'static str, command: &mut Command, log: &Path) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Self { name, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` if the server has already exited, with where to read why.
    pub fn check_running(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let give_up = Instant::now() + STOP_GRACE;
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        eprintln!("relay-bench: {} ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
