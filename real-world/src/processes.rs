//! The systems under test as real processes: relay-server (XDP attached to its `eth0`) and
//! gateway-server (on the `tun0` the topology made), each inside its host's namespace. A
//! [`Child`] guard stops its process on drop (SIGTERM, then SIGKILL), whatever happened.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::RealError;

/// Where the two binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub relay_server: PathBuf,
    pub gateway_server: PathBuf,
}

impl Binaries {
    /// `$VPNSIM_RELAY_SERVER` / `$VPNSIM_GATEWAY_SERVER`, else next to the running executable
    /// (a test binary in `target/<profile>/deps` or `vpnsim` in `target/<profile>`).
    pub fn find() -> Result<Self, RealError> {
        let exe = std::env::current_exe().map_err(|e| RealError::Setup(e.to_string()))?;
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let candidates = [
            dir.clone(),
            dir.parent().map(Path::to_path_buf).unwrap_or(dir),
        ];
        let locate = |variable: &str, name: &str| -> Result<PathBuf, RealError> {
            if let Some(path) = std::env::var_os(variable) {
                return Ok(PathBuf::from(path));
            }
            candidates
                .iter()
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
                .ok_or_else(|| {
                    RealError::Setup(format!(
                        "no `{name}` binary next to {} (build it with `cargo build -p {name}`, \
                         or set {variable})",
                        exe.display()
                    ))
                })
        };
        Ok(Self {
            relay_server: locate("VPNSIM_RELAY_SERVER", "relay-server")?,
            gateway_server: locate("VPNSIM_GATEWAY_SERVER", "gateway-server")?,
        })
    }
}

/// A process the run started, stopped when dropped.
#[derive(Debug)]
pub struct Child {
    pub name: String,
    child: std::process::Child,
}

impl Child {
    /// Starts `program ARGS` inside namespace `ns`, its stderr (and stdout unless `piped`)
    /// going to `log`.
    pub fn spawn(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        piped: bool,
    ) -> Result<Self, RealError> {
        let log_file = File::create(log)
            .map_err(|error| RealError::Setup(format!("{}: {error}", log.display())))?;
        let stdout = if piped {
            Stdio::piped()
        } else {
            Stdio::from(
                log_file
                    .try_clone()
                    .map_err(|error| RealError::Setup(error.to_string()))?,
            )
        };
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(if piped { Stdio::piped() } else { Stdio::null() })
            .stdout(stdout)
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|error| RealError::Setup(format!("{}: {error}", program.display())))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// Asks the process to stop (SIGTERM) and waits up to `within` for it; `Err` if it did not
    /// exit, or exited with a failure.
    pub fn stop(&mut self, within: Duration) -> Result<(), RealError> {
        self.terminate();
        self.wait_for_exit(within)
    }

    /// Asks the process to stop (SIGTERM), and does not wait.
    pub fn terminate(&self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
    }

    /// Waits up to `within` for the process to exit; `Err` if it did not, or exited with a
    /// failure.
    pub fn wait_for_exit(&mut self, within: Duration) -> Result<(), RealError> {
        let give_up = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(RealError::Process(format!("{} {status}", self.name)));
                }
                Ok(None) if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    return Err(RealError::Process(format!(
                        "{} did not stop within {within:?}",
                        self.name
                    )));
                }
            }
        }
    }

    /// Whether the process has exited already (it should not have, during a run).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn take_stdio(&mut self) -> (Option<ChildStdin>, Option<std::process::ChildStdout>) {
        (self.child.stdin.take(), self.child.stdout.take())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let give_up = Instant::now() + Duration::from_secs(2);
            while Instant::now() < give_up {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One gateway-server: its process, its control stdin, and the events it reports.
#[derive(Debug)]
pub struct GatewayProcess {
    pub child: Child,
    control: ChildStdin,
    events: mpsc::Receiver<serde_json::Value>,
    /// Every event so far, in order.
    pub seen: Vec<serde_json::Value>,
    pub flow_log: PathBuf,
}

impl GatewayProcess {
    /// Starts gateway-server in `ns` with `config` (written to the run's directory).
    pub fn start(
        index: usize,
        ns: &str,
        binary: &Path,
        config: &str,
        dir: &Path,
    ) -> Result<Self, RealError> {
        let config_path = dir.join(format!("gateway-{index}.yaml"));
        let flow_log = dir.join(format!("gateway-{index}.flows.jsonl"));
        std::fs::write(&config_path, config)
            .map_err(|error| RealError::Setup(format!("{}: {error}", config_path.display())))?;
        let args = vec![
            "--config".to_owned(),
            config_path.display().to_string(),
            "--flow-log".to_owned(),
            flow_log.display().to_string(),
            "--control-stdin".to_owned(),
            "--events".to_owned(),
            "-".to_owned(),
        ];
        // A restarted gateway's log goes beside its predecessor's.
        let log = (0..)
            .map(|n| match n {
                0 => dir.join(format!("gateway-{index}.log")),
                n => dir.join(format!("gateway-{index}.restart-{n}.log")),
            })
            .find(|path| !path.exists())
            .unwrap_or_else(|| dir.join(format!("gateway-{index}.log")));
        let mut child = Child::spawn(
            &format!("gateway-server {index}"),
            ns,
            binary,
            &args,
            &log,
            true,
        )?;
        let (control, stdout) = child.take_stdio();
        let (Some(control), Some(stdout)) = (control, stdout) else {
            return Err(RealError::Setup("gateway-server without its pipes".into()));
        };
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str(&line)
                    && sender.send(event).is_err()
                {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            control,
            events,
            seen: Vec::new(),
            flow_log,
        })
    }

    /// Sends one control command (a JSON line).
    pub fn control(&mut self, command: &serde_json::Value) -> Result<(), RealError> {
        writeln!(self.control, "{command}")
            .and_then(|()| self.control.flush())
            .map_err(|error| RealError::Process(format!("{}: control: {error}", self.child.name)))
    }

    /// Takes the events reported since the last call into `seen`.
    pub fn poll_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
    }

    /// Waits up to `within` for an event named `key`; returns its value.
    pub fn wait_for(
        &mut self,
        key: &str,
        within: Duration,
    ) -> Result<serde_json::Value, RealError> {
        let give_up = Instant::now() + within;
        loop {
            self.poll_events();
            if let Some(value) = self.seen.iter().find_map(|event| event.get(key)) {
                return Ok(value.clone());
            }
            if crate::interrupt::requested() {
                return Err(RealError::Interrupted);
            }
            if let Some(status) = self.child.exited() {
                return Err(RealError::Process(format!(
                    "{} exited ({status}) before `{key}`",
                    self.child.name
                )));
            }
            if Instant::now() >= give_up {
                return Err(RealError::Process(format!(
                    "{}: no `{key}` event within {within:?}",
                    self.child.name
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The relayed addresses the gateway reported, if it has an allocation.
    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.seen
            .iter()
            .rev()
            .find_map(|event| event.get("relayed"))
            .and_then(|value| serde_json::from_value(value.clone()).ok())
            .unwrap_or_default()
    }
}

/// The metrics port every relay-server serves on, at its first address.
pub const METRICS_PORT: u16 = 9100;

/// A plain GET of `/metrics` from a relay-server, from inside its own namespace (the caller
/// runs this inside it): the sample lines, `name{labels} value`.
pub fn scrape(address: IpAddr) -> std::io::Result<BTreeMap<String, f64>> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::new(address, METRICS_PORT),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}
