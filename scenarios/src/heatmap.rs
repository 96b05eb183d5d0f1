//! `coverage.html`: an exploration's (or a merge's) summary as one self-contained page: the
//! runs, the failures with their replay commands, what required coverage is missing, and every
//! section of the coverage grid as a heat map. No script and no outside file: it opens from a
//! CI artifact as it is.

use std::fmt::Write as _;

use crate::{
    coverage::{Grid, Section},
    summary::Summary,
};

/// The page for a summary.
pub fn page(summary: &Summary) -> String {
    let mut out = String::new();
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>vpnsim coverage</title>\n<style>\n",
    );
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<h1>vpnsim coverage</h1>\n");
    runs(&mut out, summary);
    failures(&mut out, summary);
    missing(&mut out, summary);
    out.push_str("<div id=\"grid\">\n");
    for section in &summary.coverage.sections {
        heat_table(&mut out, &summary.coverage, section);
    }
    out.push_str("</div>\n</body>\n</html>\n");
    out
}

const STYLE: &str = "\
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
table { border-collapse: collapse; margin: 0.4em 0 1.4em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; }
th { background: #f3f3f3; font-weight: 600; text-align: left; }
td.cell { text-align: right; font-variant-numeric: tabular-nums; min-width: 4em; }
td.zero { color: #8a8a8a; background: #fafafa; }
td.required.zero { color: #fff; background: #c62828; font-weight: 700; }
td.label { white-space: nowrap; }
.missing { color: #c62828; }
.ok { color: #2e7d32; }
code { background: #f3f3f3; padding: 1px 4px; }
ul#missing { columns: 3 22em; font-size: 13px; }
#grid { display: flex; flex-wrap: wrap; gap: 0 2.5em; align-items: flex-start; }
#grid h2 { font-size: 15px; margin: 0.6em 0 0; }
#grid section { max-width: 100%; overflow-x: auto; }
#grid section p { max-width: 36em; font-size: 13px; }
";

fn runs(out: &mut String, summary: &Summary) {
    let _ = writeln!(
        out,
        "<p id=\"counts\">{} cases: {} checked, {} skipped as unpredictable ({} checked up to \
         that step), {} failed; {} datagrams, {} flow records compared; {:.1} scenarios per \
         second over {:.1} s.</p>",
        summary.cases,
        summary.checked,
        summary.skipped,
        summary.skipped_checked_before,
        summary.failures.len(),
        summary.datagrams,
        summary.flow_records,
        summary.scenarios_per_second,
        summary.seconds
    );
    out.push_str(
        "<table id=\"runs\"><tr><th>seed</th><th>shard</th><th>datapath</th>\
         <th>determinism</th><th>cases</th><th>checked</th><th>seconds</th><th>result</th></tr>\n",
    );
    for run in &summary.runs {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.1}</td><td class=\"{}\">{}</td></tr>",
            run.seed,
            escape(&run.shard),
            escape(&run.datapath),
            escape(&run.determinism),
            run.cases,
            run.checked,
            run.seconds,
            if run.failed { "missing" } else { "ok" },
            if run.failed { "failed" } else { "passed" }
        );
    }
    out.push_str("</table>\n");
}

fn failures(out: &mut String, summary: &Summary) {
    if summary.failures.is_empty() {
        return;
    }
    out.push_str("<h2 class=\"missing\">Failures</h2>\n<ul id=\"failures\">\n");
    for failure in &summary.failures {
        let _ = writeln!(
            out,
            "<li>case {} (seed {}, shard {}), swarm profile <i>{}</i>, {} steps shrunk to {}: \
             <pre>{}</pre>replay: <code>{}</code></li>",
            failure.case_seed,
            failure.exploration_seed,
            escape(&failure.shard),
            escape(&failure.profile),
            failure.steps_generated,
            failure.steps_shrunk,
            escape(&failure.error),
            escape(&failure.replay)
        );
    }
    out.push_str("</ul>\n");
}

fn missing(out: &mut String, summary: &Summary) {
    if summary.missing.is_empty() {
        out.push_str("<p class=\"ok\" id=\"missing\">Every required counter is above zero.</p>\n");
        return;
    }
    out.push_str(
        "<p class=\"missing\">Required coverage never reached:</p>\n<ul id=\"missing\">\n",
    );
    for name in &summary.missing {
        let _ = writeln!(out, "<li class=\"missing\">{}</li>", escape(name));
    }
    out.push_str("</ul>\n");
}

/// One section as a table whose cells are shaded by their count, on a log scale up to the
/// section's largest; a required cell at zero is red.
fn heat_table(out: &mut String, grid: &Grid, section: &Section) {
    let max = section.max();
    let _ = writeln!(out, "<section>\n<h2>{}</h2>", escape(&section.title));
    let _ = write!(out, "<table class=\"section\"><tr><th></th>");
    for column in &section.columns {
        let _ = write!(out, "<th>{}</th>", escape(column));
    }
    out.push_str("</tr>\n");
    for row in &section.rows {
        let _ = write!(out, "<tr><td class=\"label\">{}</td>", escape(&row.label));
        for (index, column) in section.columns.iter().enumerate() {
            let count = row.counts.get(index).copied().unwrap_or(0);
            let required = grid
                .requirements
                .iter()
                .any(|requirement| requirement.selects(section, row, column));
            let class = match (count, required) {
                (0, true) => "cell zero required",
                (0, false) => "cell zero",
                (_, true) => "cell required",
                _ => "cell",
            };
            let style = if count == 0 {
                String::new()
            } else {
                let (background, text) = shade(count, max);
                format!(" style=\"background:{background};color:{text}\"")
            };
            let _ = write!(
                out,
                "<td class=\"{class}\" data-count=\"{count}\"{style}>{count}</td>"
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    if let Some(note) = &section.note {
        let _ = writeln!(out, "<p>{}</p>", escape(note));
    }
    out.push_str("</section>\n");
}

/// A background from pale yellow to deep blue by `ln(count + 1) / ln(max + 1)`, and a text
/// colour that stays readable on it.
fn shade(count: u64, max: u64) -> (String, &'static str) {
    let level = ((count as f64 + 1.0).ln() / (max.max(1) as f64 + 1.0).ln()).clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * level).round() as u8;
    let color = format!(
        "#{:02x}{:02x}{:02x}",
        mix(255.0, 8.0),
        mix(247.0, 69.0),
        mix(188.0, 148.0)
    );
    (color, if level > 0.55 { "#ffffff" } else { "#1b1b1b" })
}

/// Text for HTML: the five characters with a meaning there, escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coverage::Requirement;

    #[test]
    fn cells_are_shaded_and_required_zeros_stand_out() {
        let mut summary = Summary::empty();
        let mut section = Section::new("timers <ms>", &["on"]);
        section.row("dns ttl", vec![0]).row("udp idle", vec![40]);
        summary.coverage.sections.push(section);
        summary.coverage.requirements.push(Requirement::cell(
            "dns ttl on".into(),
            "timers <ms>",
            "dns ttl",
            "on",
        ));
        summary.missing = summary.coverage.missing();
        let html = page(&summary);
        assert!(html.contains("<h2>timers &lt;ms&gt;</h2>"), "{html}");
        assert!(
            html.contains("<td class=\"cell zero required\" data-count=\"0\">0</td>"),
            "{html}"
        );
        assert!(
            html.contains("data-count=\"40\" style=\"background:#084594;color:#ffffff\">40<"),
            "{html}"
        );
        assert!(
            html.contains("<li class=\"missing\">dns ttl on</li>"),
            "{html}"
        );
        assert!(!html.contains("<script"), "self-contained and static");
    }

    #[test]
    fn the_shade_grows_with_the_count() {
        assert_eq!(shade(1000, 1000).0, "#084594");
        assert_eq!(shade(0, 1000).0, "#fff7bc");
        let middle = shade(30, 1000).0;
        assert!(middle != "#fff7bc" && middle != "#084594", "{middle}");
    }
}
