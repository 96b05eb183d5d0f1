//! Linux network namespaces for the harness's tests and runs (the real world, the namespace
//! tests of relay-server and gateway-server, `cargo xtask bench relay`), built one way:
//!
//! - [`Namespaces`]: namespaces created under a prefix unique to the process (and a tag of the
//!   caller's), each with its loopback up, and all removed when the guard drops, whatever
//!   happened (with them go every veth, TUN device, XDP attachment and socket inside);
//! - [`ip`] and [`run`]: a command to completion, `Err` naming it and what it printed;
//! - [`inside`]: a closure run with this thread inside a namespace, and back;
//! - [`veth`]: a veth pair across two namespaces, both ends up, the sender checksumming in
//!   software when asked; [`SubnetLink`]: a host on a subnet behind a router, by one;
//! - [`missing_support`]: why this machine cannot build namespaces, so a caller can skip loudly.
//!
//! A harness crate: no system under test depends on it, only tests and runners do.

use std::{
    fmt::Display,
    fs::File,
    io,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
};

use nix::sched::{CloneFlags, setns};

/// Why a namespace, a command in it or a closure inside it failed; the text names the command
/// or the namespace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command could not start or did not succeed: `tool args`, and its error or stderr.
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
    /// A namespace could not be opened, entered or left.
    #[error("{0}")]
    Namespace(String),
    /// The closure run inside a namespace failed.
    #[error("in {namespace}: {source}")]
    Inside {
        namespace: String,
        source: io::Error,
    },
}

/// Runs `ip ARGS`; `Err` names the command and what it printed.
pub fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", args)
}

/// Runs `tool ARGS` to completion (stdin empty); `Err` names the command and what it printed.
pub fn run(tool: &str, args: &[&str]) -> Result<(), Error> {
    let command = || format!("{tool} {}", args.join(" "));
    let output = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| Error::Command {
            command: command(),
            detail: error.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: command(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The namespaces of one test or run, named `<base>-<pid>[-<tag>]-<role>`; dropping the guard
/// deletes every one it created (last first), also while a panic unwinds.
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    created: Vec<String>,
}

impl Namespaces {
    /// A set with no namespace yet, under `<base>-<pid>`.
    pub fn new(base: &str) -> Self {
        Self {
            prefix: format!("{base}-{}", std::process::id()),
            created: Vec::new(),
        }
    }

    /// A set with no namespace yet, under `<base>-<pid>-<tag>`: for a process that builds
    /// several sets (one per test, one per run).
    pub fn tagged(base: &str, tag: impl Display) -> Self {
        Self {
            prefix: format!("{base}-{}-{tag}", std::process::id()),
            created: Vec::new(),
        }
    }

    /// The full name of the namespace of `role` (created or not).
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Creates the namespace of `role` with its loopback up; returns its name.
    pub fn add(&mut self, role: &str) -> Result<String, Error> {
        let name = self.name(role);
        ip(&["netns", "add", &name])?;
        self.created.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            let deleted = Command::new("ip")
                .args(["netns", "del", &name])
                .stdin(Stdio::null())
                .output();
            let failed = match deleted {
                Ok(output) if output.status.success() => None,
                Ok(output) => Some(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(why) = failed
                && Path::new("/run/netns").join(&name).exists()
            {
                eprintln!("cannot delete network namespace {name}: {why}");
            }
        }
    }
}

/// Runs `f` with this thread inside namespace `name` (sockets it opens stay there), and comes
/// back to the namespace the thread was in.
pub fn inside<T>(name: &str, f: impl FnOnce() -> io::Result<T>) -> Result<T, Error> {
    let home = File::open("/proc/thread-self/ns/net")
        .map_err(|error| Error::Namespace(format!("this thread's namespace: {error}")))?;
    let target = File::open(format!("/run/netns/{name}"))
        .map_err(|error| Error::Namespace(format!("namespace {name}: {error}")))?;
    setns(&target, CloneFlags::CLONE_NEWNET)
        .map_err(|error| Error::Namespace(format!("entering {name}: {error}")))?;
    let result = f();
    setns(&home, CloneFlags::CLONE_NEWNET)
        .map_err(|error| Error::Namespace(format!("leaving {name}: {error}")))?;
    result.map_err(|source| Error::Inside {
        namespace: name.to_owned(),
        source,
    })
}

/// Whether the sending end of a [`veth`] leaves its checksums to an offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxChecksum {
    /// As the kernel sets a veth up: checksum offload on.
    Offload,
    /// `ethtool -K <dev> tx off`: a datagram sent over a veth otherwise carries a partial UDP
    /// checksum (left to an offload that never runs), and the XDP program updates checksums
    /// incrementally, as for frames off a real NIC, which arrive complete. So a sender
    /// checksums in software, as a host behind a NIC does.
    Software,
}

/// A veth pair: `dev` in namespace `ns`, its peer `peer_dev` in `peer_ns`; with
/// [`TxChecksum::Software`], `dev` checksums in software; then both ends up. Addresses and
/// routes are the caller's.
pub fn veth(
    ns: &str,
    dev: &str,
    peer_ns: &str,
    peer_dev: &str,
    tx: TxChecksum,
) -> Result<(), Error> {
    ip(&[
        "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", peer_ns,
    ])?;
    if tx == TxChecksum::Software {
        run(
            "ip",
            &["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"],
        )?;
    }
    ip(&["-n", ns, "link", "set", dev, "up"])?;
    ip(&["-n", peer_ns, "link", "set", peer_dev, "up"])
}

/// A host on an IPv4 subnet behind a router namespace: `eth0` in `host_ns` and `router_side`
/// in `router_ns`, a [`veth`] pair; the host's `addresses` on `eth0`, the router's
/// `router_address` on its side (all `/prefix`), and the host's default route via the router.
#[derive(Debug, Clone, Copy)]
pub struct SubnetLink<'a> {
    pub host_ns: &'a str,
    pub addresses: &'a [Ipv4Addr],
    pub router_ns: &'a str,
    pub router_side: &'a str,
    pub router_address: Ipv4Addr,
    pub prefix: u8,
    pub tx: TxChecksum,
}

impl SubnetLink<'_> {
    /// Creates the link, its addresses and the host's default route.
    pub fn create(&self) -> Result<(), Error> {
        let Self {
            host_ns,
            addresses,
            router_ns,
            router_side,
            router_address,
            prefix,
            tx,
        } = *self;
        veth(host_ns, "eth0", router_ns, router_side, tx)?;
        for address in addresses {
            let address = format!("{address}/{prefix}");
            ip(&["-n", host_ns, "addr", "add", &address, "dev", "eth0"])?;
        }
        let via = router_address.to_string();
        ip(&["-n", host_ns, "route", "add", "default", "via", &via])?;
        let router_address = format!("{router_address}/{prefix}");
        ip(&[
            "-n",
            router_ns,
            "addr",
            "add",
            &router_address,
            "dev",
            router_side,
        ])
    }
}

/// Why this machine cannot build namespaces, or `None` if it can: root, `ip` and `ethtool`
/// (iproute2, ethtool) and network namespaces are needed. Callers add what else they need
/// (a TUN device, tcpdump).
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
    // One name per probe: threads of one process may probe at the same time.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let probe = format!(
        "vpnsim-probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    if let Err(error) = ip(&["netns", "add", &probe]) {
        return Some(format!("network namespaces: {error}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}
