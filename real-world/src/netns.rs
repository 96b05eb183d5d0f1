//! Network namespaces of one run, by `netns-kit`: created under a prefix unique to the process
//! and the run (`vpnsim-real-<pid>-<run>`), and all removed when the [`Namespaces`] guard drops,
//! whatever happened (with them go every veth, TUN device and XDP attachment inside). Its
//! errors are setup errors here.

pub use netns_kit::{TxChecksum, ip, run, veth};

use crate::RealError;

/// The namespaces of one run.
#[derive(Debug)]
pub struct Namespaces(netns_kit::Namespaces);

impl Namespaces {
    /// A set with no namespace yet, named after this process (`vpnsim-real-<pid>-<run>`).
    pub fn new(run: u32) -> Self {
        Self(netns_kit::Namespaces::tagged("vpnsim-real", run))
    }

    /// The full name of the namespace of `role`.
    pub fn name(&self, role: &str) -> String {
        self.0.name(role)
    }

    /// Creates the namespace of `role` with its loopback up; returns its name.
    pub fn add(&mut self, role: &str) -> Result<String, RealError> {
        Ok(self.0.add(role)?)
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
    Ok(netns_kit::inside(name, f)?)
}

/// Why this machine cannot run the real world, or `None` if it can: root, `ip`, `ethtool`,
/// network namespaces and a TUN device are needed.
pub fn missing_support() -> Option<String> {
    netns_kit::missing_support().or_else(|| {
        (!std::path::Path::new("/dev/net/tun").exists()).then(|| "no /dev/net/tun".into())
    })
}

/// Namespaces of earlier runs whose process is gone (killed before its guards could run), and
/// the servers still running in them, are removed before a run starts.
pub fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("vpnsim-real-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(output) = std::process::Command::new("ip")
            .args(["netns", "pids", &name])
            .output()
        {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = ip(&["netns", "del", &name]);
        eprintln!("real world: removed {name}, left behind by a run that was killed");
    }
}
