//! Headless Chromium (Debian's `chromium`, which `cargo xtask test` installs as root, or Google
//! Chrome, which GitHub's Ubuntu runners carry and which takes the same flags) for the
//! tests that check pages the harness writes really draw: [`render_in_chromium`] loads a page,
//! lets its scripts run, and returns the DOM they left and a screenshot; [`Screenshot`] reads
//! the screenshot's pixels back.

use std::{
    fs::File,
    io::{BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// The browser's program names, in the order they are looked for on `PATH`: Debian's package,
/// then Google Chrome (the same list as `ensure_browser` in `xtask/src/setup.rs`).
const BROWSERS: [&str; 2] = ["chromium", "google-chrome"];
/// How long one Chromium run may take before it is killed: it loads a page with Mermaid
/// inlined (3.5 MB of script) on a machine shared with builds.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How much virtual time the page's scripts get: Chromium runs its timers as fast as it can
/// and stops once this much page time has passed or nothing is left to do.
const VIRTUAL_TIME_BUDGET_MS: u32 = 30_000;
/// The browser window, and so the screenshot.
pub const WINDOW: (u32, u32) = (1600, 1200);

/// Where a test's pages and screenshots go, for a person to look at:
/// `target/vpnsim/browser/`.
pub fn out_dir() -> PathBuf {
    let dir = scenarios::artifacts::vpnsim_dir().join("browser");
    std::fs::create_dir_all(&dir).expect("a directory for the browser's files");
    dir
}

/// The browser's program on `PATH`, or `None` after saying loudly that `test` is skipped.
/// Under CI (`CI=true`, or `RELAY_XDP_REQUIRE_BPF=1`, which `.ci/run` sets) a missing browser
/// fails the test instead.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = BROWSERS.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|program| program.is_file())
    });
    if found.is_none() {
        assert!(
            !relay_xdp::bpf_required(),
            "{test}: no browser on PATH ({BROWSERS:?}), and CI requires this test (`apt-get \
             install chromium`; `cargo xtask test` installs it as root)"
        );
        // Straight to the stderr handle: the test harness captures `eprintln!` of passing
        // tests, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED {test}: no browser on PATH ({BROWSERS:?}); `apt-get install \
             chromium` (as root `cargo xtask test` does it); set CI=true to make this a \
             failure.\n"
        );
    }
    found
}

/// What a page left behind in the browser.
#[derive(Debug)]
pub struct Rendered {
    /// The document after its scripts ran (`--dump-dom`).
    pub dom: String,
    /// A screenshot of the window ([`WINDOW`]), a PNG file beside the page.
    pub screenshot: PathBuf,
}

/// Loads the page at `html` in headless Chromium twice, once to dump its DOM and once to take a
/// screenshot (`<page>.png` beside it), each bounded by [`TIMEOUT`] and given
/// [`VIRTUAL_TIME_BUDGET_MS`] of page time for its scripts.
pub fn render_in_chromium(chromium: &Path, html: &Path) -> Result<Rendered> {
    let html = std::fs::canonicalize(html).with_context(|| format!("{}", html.display()))?;
    let url = format!("file://{}", html.display());
    let dom_file = html.with_extension("dom.html");
    run_chromium(chromium, &["--dump-dom".to_owned(), url.clone()], &dom_file)?;
    let dom = std::fs::read_to_string(&dom_file)
        .with_context(|| format!("reading {}", dom_file.display()))?;
    let screenshot = html.with_extension("png");
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(
        chromium,
        &[
            format!("--screenshot={}", screenshot.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            url,
        ],
        &html.with_extension("screenshot.log"),
    )?;
    if !screenshot.is_file() {
        bail!("Chromium wrote no screenshot at {}", screenshot.display());
    }
    Ok(Rendered { dom, screenshot })
}

/// One headless Chromium run with `args`, its stdout into `stdout`; fails on a non-zero exit
/// or after [`TIMEOUT`], when it is killed.
fn run_chromium(chromium: &Path, args: &[String], stdout: &Path) -> Result<()> {
    // Runs in one test binary may overlap: each gets a profile of its own.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let profile = std::env::temp_dir().join(format!(
        "vpnsim-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let stderr = stdout.with_extension("stderr.log");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            // Root (CI) cannot use Chromium's sandbox.
            "--no-sandbox",
            "--disable-gpu",
            // Containers have a small /dev/shm.
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout).with_context(|| format!("{}", stdout.display()))?)
        .stderr(File::create(&stderr).with_context(|| format!("{}", stderr.display()))?)
        .spawn()
        .with_context(|| format!("starting {}", chromium.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for Chromium")? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            bail!(
                "Chromium did not finish in {} s (killed); its stderr is in {}",
                TIMEOUT.as_secs(),
                stderr.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&profile);
    if !status.success() {
        bail!(
            "Chromium {args:?} failed ({status}); its stderr is in {}",
            stderr.display()
        );
    }
    Ok(())
}

/// A screenshot's pixels, 8-bit RGB.
#[derive(Debug)]
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Screenshot {
    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("{}", path.display()))?;
        let mut decoder = png::Decoder::new(BufReader::new(file));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().context("reading the PNG header")?;
        let mut buffer = vec![0; reader.output_buffer_size().context("a PNG too large")?];
        let frame = reader.next_frame(&mut buffer).context("decoding the PNG")?;
        let bytes = &buffer[..frame.buffer_size()];
        let rgb = match frame.color_type {
            png::ColorType::Rgb => bytes.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Rgba => bytes.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Grayscale => bytes.iter().map(|&g| [g, g, g]).collect(),
            png::ColorType::GrayscaleAlpha => {
                bytes.chunks_exact(2).map(|p| [p[0], p[0], p[0]]).collect()
            }
            other => bail!("a PNG of colour type {other:?}"),
        };
        Ok(Self {
            width: frame.width,
            height: frame.height,
            rgb,
        })
    }

    /// How many pixels are not white.
    pub fn inked(&self) -> usize {
        self.rgb.iter().filter(|&&p| p != [255, 255, 255]).count()
    }

    /// Asserts that what a person sees is drawn: at least one pixel in `ink_one_in` is not
    /// white, and at least so many pixels have each colour (`what` names it in a failure).
    pub fn assert_shows(&self, path: &Path, ink_one_in: usize, colours: &[(&str, [u8; 3], usize)]) {
        let pixels = (self.width * self.height) as usize;
        let inked = self.inked();
        assert!(
            inked * ink_one_in > pixels,
            "only {inked} of {pixels} pixels are not white in {}",
            path.display()
        );
        for (what, colour, at_least) in colours {
            let found = self.of_colour(*colour, 2);
            assert!(
                found >= *at_least,
                "only {found} pixels of {what} in {}",
                path.display()
            );
        }
    }

    /// How many pixels are `colour`, give or take `tolerance` in each channel.
    pub fn of_colour(&self, colour: [u8; 3], tolerance: u8) -> usize {
        self.rgb
            .iter()
            .filter(|p| (0..3).all(|c| p[c].abs_diff(colour[c]) <= tolerance))
            .count()
    }
}
