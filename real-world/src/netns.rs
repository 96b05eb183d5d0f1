//! Network namespaces of one run: created under a prefix unique to the process, and all
//! removed when the [`Namespaces`] guard drops, whatever happened (with them go every veth,
//! TUN device and XDP attachment inside).

use std::{
    fs::File,
    process::{Command, Stdio},
};

use nix::sched::{CloneFlags, setns};

use crate::RealError;

/// Runs `ip ARGS`; `Err` names the command and what it printed.
pub fn ip(args: &[&str]) -> Result<(), RealError> {
    run("ip", args)
}

/// Runs `tool ARGS` to completion; `Err` names the command and what it printed.
pub fn run(tool: &str, args: &[&str]) -> Result<(), RealError> {
    let output = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| RealError::Setup(format!("{tool} {}: {error}", args.join(" "))))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(RealError::Setup(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The namespaces of one run.
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    created: Vec<String>,
}

impl Namespaces {
    /// A set with no namespace yet, named after this process (`vpnsim-real-<pid>-<run>`).
    pub fn new(run: u32) -> Self {
        Self {
            prefix: format!("vpnsim-real-{}-{run}", std::process::id()),
            created: Vec::new(),
        }
    }

    /// The full name of the namespace of `role`.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Creates the namespace of `role` with its loopback up; returns its name.
    pub fn add(&mut self, role: &str) -> Result<String, RealError> {
        let name = self.name(role);
        ip(&["netns", "add", &name])?;
        self.created.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Runs `f` with this thread inside namespace `name` (see [`inside`]).
    pub fn inside<T>(
        &self,
        name: &str,
        f: impl FnOnce() -> std::io::Result<T>,
    ) -> Result<T, RealError> {
        inside(name, f)
    }
}

/// Runs `f` with this thread inside namespace `name` (sockets it opens stay there), and comes
/// back to the namespace the thread was in.
pub fn inside<T>(name: &str, f: impl FnOnce() -> std::io::Result<T>) -> Result<T, RealError> {
    let home = File::open("/proc/thread-self/ns/net")
        .map_err(|error| RealError::Setup(format!("this thread's namespace: {error}")))?;
    let target = File::open(format!("/run/netns/{name}"))
        .map_err(|error| RealError::Setup(format!("namespace {name}: {error}")))?;
    setns(&target, CloneFlags::CLONE_NEWNET)
        .map_err(|error| RealError::Setup(format!("entering {name}: {error}")))?;
    let result = f();
    setns(&home, CloneFlags::CLONE_NEWNET)
        .map_err(|error| RealError::Setup(format!("leaving {name}: {error}")))?;
    result.map_err(|error| RealError::Setup(format!("in {name}: {error}")))
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Why this machine cannot run the real world, or `None` if it can: root, `ip`, `ethtool`,
/// network namespaces and a TUN device are needed.
pub fn missing_support() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    for tool in ["ip", "ethtool"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    let probe = format!("vpnsim-probe-{}", std::process::id());
    if let Err(error) = ip(&["netns", "add", &probe]) {
        return Some(format!("network namespaces: {error}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}
