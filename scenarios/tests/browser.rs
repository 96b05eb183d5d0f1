//! The pages a run writes, drawn by a real browser: headless Chromium loads them with the
//! vendored Mermaid, and the test checks what the scripts drew (the DOM) and what a person
//! would see (a screenshot), not only that the page loaded. The pages and screenshots stay in
//! `target/vpnsim/browser/` to be looked at.

mod chromium;

use scenario_format::Scenario;
use scenarios::{corpus, html, replay};
use sim::Datapath;

/// Mermaid's default theme fills a participant's box with this colour (`#ECECFF`)...
const PARTICIPANT_FILL: [u8; 3] = [0xEC, 0xEC, 0xFF];
/// ... and a note with this one (`#FFF5AD`).
const NOTE_FILL: [u8; 3] = [0xFF, 0xF5, 0xAD];

/// The ```` ```mermaid ```` block of a Markdown file.
fn mermaid_block(markdown: &str) -> &str {
    let start = markdown.find("```mermaid\n").expect("a mermaid block") + "```mermaid\n".len();
    let length = markdown[start..].find("```").expect("the block's end");
    &markdown[start..start + length]
}

/// The first `<svg>` element of a document, as Chromium serialised it.
fn first_svg(dom: &str) -> &str {
    let start = dom
        .find("<svg")
        .expect("an <svg> in the DOM: Mermaid drew nothing");
    let length = dom[start..].find("</svg>").expect("the <svg> closes") + "</svg>".len();
    &dom[start..start + length]
}

/// A corpus story with both peers on one relay, replayed: its `routing.md` diagram, inlined in
/// a page with Mermaid, draws in Chromium with every lane and every arrow, the labels escaped
/// for Mermaid reading back as they were, and the screenshot shows it.
#[test]
fn a_replayed_story_draws_its_routing_diagram_in_chromium() {
    let test = "a_replayed_story_draws_its_routing_diagram_in_chromium";
    let Some(chromium) = chromium::chromium_or_skip(test) else {
        return;
    };
    let name = "same-relay-v4";
    let scenario = Scenario::from_file(&corpus::corpus_dir().join(format!("{name}.yaml")))
        .expect("a corpus story");
    let out = chromium::out_dir();
    let mut printed = Vec::new();
    let written = replay::replay_into(
        &scenario,
        corpus::CORPUS_SEED,
        Datapath::Differential,
        &out.join(name),
        &mut printed,
    )
    .expect("the story passes");
    let markdown = std::fs::read_to_string(written.routing_diagram.expect("routing.md written"))
        .expect("routing.md reads");
    let diagram = mermaid_block(&markdown);
    let page = out.join(format!("{name}.routing.html"));
    std::fs::write(
        &page,
        html::page_with_mermaid(&format!("{name}: routing"), diagram),
    )
    .expect("the page is written");

    let started = std::time::Instant::now();
    let rendered = chromium::render_in_chromium(&chromium, &page).expect("Chromium renders");
    eprintln!(
        "{test}: Chromium took {:.1} s for the DOM and the screenshot",
        started.elapsed().as_secs_f64()
    );

    // The page's script says Mermaid finished without an error.
    assert!(
        rendered
            .dom
            .contains(&format!("{}=\"rendered\"", html::RENDER_STATE_ATTRIBUTE)),
        "Mermaid did not finish: {}",
        rendered
            .dom
            .split_once(html::RENDER_STATE_ATTRIBUTE)
            .map_or("no state at all", |(_, state)| &state
                [..state.len().min(300)])
    );
    let svg = first_svg(&rendered.dom);
    assert!(!svg.contains("Syntax error"), "{svg}");
    // Every lane, by its title.
    for participant in [
        "alice (client)",
        "r1 (relay)",
        "gw (gateway)",
        "resources behind gw",
    ] {
        assert!(
            svg.contains(participant),
            "no lane {participant:?} in the drawing"
        );
    }
    // Every arrow: one line drawn per arrow in the text.
    let arrows = diagram
        .lines()
        .filter(|line| line.contains("->>") || line.contains("--x"))
        .count();
    assert_eq!(
        svg.matches("class=\"messageLine").count(),
        arrows,
        "arrows drawn against arrows in routing.md"
    );
    assert!(arrows >= 20, "{arrows} arrows");
    // The labels, as Mermaid drew them: `>` went in as `#gt;` and comes out as the character
    // (`&gt;` in the serialised DOM).
    for label in [
        "0 ms STUN Allocate request",
        "3000 ms ChannelData 0x4000 (128 bytes)",
        "tunnel alice: UDP 100.64.0.2:45000 &gt; 198.51.100.10:5000 len 64",
        "step 1 at 3000 ms: udp: { client: alice, resource: web, port: 5000, bytes: 64 }",
    ] {
        assert!(svg.contains(label), "no label {label:?} in the drawing");
    }
    let xdp_ran = std::fs::read_to_string(written.routing.expect("routing.txt"))
        .expect("reads")
        .contains("XDP_");
    if xdp_ran {
        assert!(svg.contains("[r1 XDP_TX tx/chan4-to-chan4]"));
        assert!(svg.contains("[r1 XDP_PASS pass/stun]"));
    }

    // What a person sees: not a blank page, and the participants' boxes and the steps' notes
    // among what is drawn (the window shows the diagram's top left: three lanes, the setup
    // and the first steps).
    let screenshot = chromium::Screenshot::read(&rendered.screenshot).expect("a PNG");
    assert_eq!((screenshot.width, screenshot.height), chromium::WINDOW);
    screenshot.assert_shows(
        &rendered.screenshot,
        10,
        &[
            ("the participants' boxes", PARTICIPANT_FILL, 3 * 5_000),
            ("the steps' notes", NOTE_FILL, 3 * 20_000),
        ],
    );
    eprintln!(
        "{test}: the screenshot is {}",
        scenarios::artifacts::shown(&rendered.screenshot).display()
    );
}

/// The heat map an exploration writes, `coverage.html`, drawn in Chromium: the runs, one table
/// per section of the coverage grid with one shaded cell per count, and the required counters
/// a short run leaves at zero in red; the screenshot shows the shades.
#[test]
fn an_explorations_coverage_heat_map_draws_in_chromium() {
    let test = "an_explorations_coverage_heat_map_draws_in_chromium";
    let Some(chromium) = chromium::chromium_or_skip(test) else {
        return;
    };
    let out = chromium::out_dir().join("explore");
    let mut options = scenarios::explore::ExploreOptions::new(40, 3);
    options.determinism = scenarios::determinism::Determinism::Off;
    options.out = out.clone();
    let report = scenarios::explore::explore(&options).expect("explores");
    assert!(report.failure.is_none(), "{:?}", report.failure);
    let summary = scenarios::summary::Summary::of_report(&report, None, &out);
    let (_, page) = summary
        .write(&out)
        .expect("writes summary.json and coverage.html");
    let rendered = chromium::render_in_chromium(&chromium, &page).expect("Chromium renders");

    let dom = &rendered.dom;
    assert!(dom.contains("<table id=\"runs\">"), "no table of runs");
    assert_eq!(
        dom.matches("<table class=\"section\">").count(),
        summary.coverage.sections.len(),
        "one table per section of the grid"
    );
    let cells: usize = summary
        .coverage
        .sections
        .iter()
        .map(|section| section.rows.len() * section.columns.len())
        .sum();
    assert_eq!(
        dom.matches("data-count=\"").count(),
        cells,
        "one cell per count"
    );
    let checked = format!("data-count=\"{}\"", summary.checked);
    assert!(dom.contains(&checked), "the checked cases' cell");
    // 40 cases reach only part of what CI's 1000 must: the missing are listed, and their
    // cells marked.
    assert!(!summary.missing.is_empty());
    for name in &summary.missing {
        let item = format!(
            "<li class=\"missing\">{}</li>",
            scenarios::heatmap::escape(name)
        );
        assert!(dom.contains(&item), "{name} not listed as missing");
    }
    assert!(dom.contains("class=\"cell zero required\""));

    // What a person sees: the largest count of each section in deep blue, required zeros in
    // red, as the style sheet says.
    let screenshot = chromium::Screenshot::read(&rendered.screenshot).expect("a PNG");
    screenshot.assert_shows(
        &rendered.screenshot,
        20,
        &[
            ("the sections' largest counts", [0x08, 0x45, 0x94], 500),
            ("required counters at zero", [0xC6, 0x28, 0x28], 500),
        ],
    );
    eprintln!(
        "{test}: the screenshot is {}",
        scenarios::artifacts::shown(&rendered.screenshot).display()
    );
}
