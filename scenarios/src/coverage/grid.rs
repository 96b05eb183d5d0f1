//! The coverage grid as data: titled sections of rows by columns of counts, and the
//! requirements a run (or a merge of shards) must meet. One grid is what the terminal table,
//! `summary.json` and the `coverage.html` heat map all show, and grids from shards add up
//! cell by cell, so a merged report has the same shape as one run's.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Every counter of the coverage, zero or not, by section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub sections: Vec<Section>,
    /// What must be non-zero; [`Grid::missing`] names what is not.
    pub requirements: Vec<Requirement>,
}

/// One table of the grid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// Rows sorted by their total, largest first, and only the first this many printed in the
    /// terminal (every row is in `summary.json` and the heat map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    /// A sentence printed under the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One row: its label, the group it belongs to (rows of one kind with different outcomes),
/// and one count per column of its section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub counts: Vec<u64>,
}

/// A requirement: at least `at_least` non-zero cells among those of `section` that match the
/// row label, the group and the column given (each when given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// What is missing when it fails, in words.
    pub name: String,
    pub section: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub at_least: u64,
}

impl Requirement {
    /// One cell of `section`, which must be non-zero.
    pub fn cell(name: String, section: &str, row: &str, column: &str) -> Self {
        Self {
            name,
            section: section.to_owned(),
            row: Some(row.to_owned()),
            group: None,
            column: Some(column.to_owned()),
            at_least: 1,
        }
    }

    /// Some row of `group` in `section` non-zero.
    pub fn group(name: String, section: &str, group: &str) -> Self {
        Self {
            name,
            section: section.to_owned(),
            row: None,
            group: Some(group.to_owned()),
            column: None,
            at_least: 1,
        }
    }

    /// At least `at_least` non-zero rows anywhere in `section`.
    pub fn distinct_rows(name: String, section: &str, at_least: u64) -> Self {
        Self {
            name,
            section: section.to_owned(),
            row: None,
            group: None,
            column: None,
            at_least,
        }
    }

    /// Whether this requirement counts the cell at `row` and `column` of `section`.
    pub fn selects(&self, section: &Section, row: &Row, column: &str) -> bool {
        self.section == section.title
            && self.row.as_ref().is_none_or(|label| *label == row.label)
            && (self.group.is_none() || self.group == row.group)
            && self.column.as_ref().is_none_or(|c| c == column)
    }

    /// Whether the grid meets this requirement.
    fn met_by(&self, grid: &Grid) -> bool {
        let Some(section) = grid.section(&self.section) else {
            return false;
        };
        let nonzero = section
            .rows
            .iter()
            .flat_map(|row| {
                section
                    .columns
                    .iter()
                    .zip(&row.counts)
                    .filter(move |(column, count)| {
                        **count > 0 && self.selects(section, row, column)
                    })
            })
            .count() as u64;
        nonzero >= self.at_least
    }
}

impl Section {
    pub fn new(title: &str, columns: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Appends a row.
    pub fn row(&mut self, label: impl Into<String>, counts: Vec<u64>) -> &mut Self {
        self.rows.push(Row {
            label: label.into(),
            group: None,
            counts,
        });
        self
    }

    /// Appends a row of `group`.
    pub fn grouped_row(&mut self, group: &str, label: impl Into<String>, count: u64) -> &mut Self {
        self.rows.push(Row {
            label: label.into(),
            group: Some(group.to_owned()),
            counts: vec![count],
        });
        self
    }

    /// The count at a row label and column, 0 when either is absent.
    pub fn count(&self, row: &str, column: &str) -> u64 {
        let Some(i) = self.columns.iter().position(|c| c == column) else {
            return 0;
        };
        self.rows
            .iter()
            .find(|r| r.label == row)
            .and_then(|r| r.counts.get(i).copied())
            .unwrap_or(0)
    }

    /// Adds `other`'s counts, cell by cell; its new columns and rows are appended.
    fn add(&mut self, other: &Section) {
        for column in &other.columns {
            if !self.columns.contains(column) {
                self.columns.push(column.clone());
            }
        }
        let width = self.columns.len();
        for row in &mut self.rows {
            row.counts.resize(width, 0);
        }
        for theirs in &other.rows {
            let index = match self
                .rows
                .iter()
                .position(|r| r.label == theirs.label && r.group == theirs.group)
            {
                Some(index) => index,
                None => {
                    self.rows.push(Row {
                        label: theirs.label.clone(),
                        group: theirs.group.clone(),
                        counts: vec![0; width],
                    });
                    self.rows.len() - 1
                }
            };
            for (column, count) in other.columns.iter().zip(&theirs.counts) {
                if let Some(i) = self.columns.iter().position(|c| c == column) {
                    self.rows[index].counts[i] += count;
                }
            }
        }
        // A row of a group that has now been seen replaces the group's empty placeholder.
        let seen: Vec<Option<String>> = self
            .rows
            .iter()
            .filter(|r| r.group.is_some() && r.counts.iter().any(|&c| c > 0))
            .map(|r| r.group.clone())
            .collect();
        self.rows.retain(|r| {
            r.group.is_none() || r.counts.iter().any(|&c| c > 0) || !seen.contains(&r.group)
        });
        self.order();
        if self.note.is_none() {
            self.note.clone_from(&other.note);
        }
        self.top = self.top.or(other.top);
    }

    /// Sorts the rows of a `top` section by total, largest first (ties by label).
    pub fn order(&mut self) {
        if self.top.is_some() {
            self.rows.sort_by(|a, b| {
                let total = |r: &Row| r.counts.iter().sum::<u64>();
                total(b).cmp(&total(a)).then_with(|| a.label.cmp(&b.label))
            });
        }
    }

    /// The largest count in the section (for the heat map's scale).
    pub fn max(&self) -> u64 {
        self.rows
            .iter()
            .flat_map(|r| r.counts.iter().copied())
            .max()
            .unwrap_or(0)
    }
}

impl Grid {
    pub fn section(&self, title: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.title == title)
    }

    /// Adds another grid (a shard's) cell by cell.
    pub fn add(&mut self, other: &Grid) {
        for theirs in &other.sections {
            match self.sections.iter_mut().find(|s| s.title == theirs.title) {
                Some(ours) => ours.add(theirs),
                None => self.sections.push(theirs.clone()),
            }
        }
        for requirement in &other.requirements {
            if !self.requirements.iter().any(|r| r.name == requirement.name) {
                self.requirements.push(requirement.clone());
            }
        }
    }

    /// Requirements the grid does not meet, by name, in their order.
    pub fn missing(&self) -> Vec<String> {
        self.requirements
            .iter()
            .filter(|r| !r.met_by(self))
            .map(|r| r.name.clone())
            .collect()
    }

    /// The grid as text tables for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            let shown = section.top.unwrap_or(usize::MAX).min(section.rows.len());
            let label_width = section.rows[..shown]
                .iter()
                .map(|r| r.label.chars().count() + 2)
                .chain([section.title.chars().count()])
                .max()
                .unwrap_or(0);
            let widths: Vec<usize> = section
                .columns
                .iter()
                .enumerate()
                .map(|(i, column)| {
                    section
                        .rows
                        .iter()
                        .map(|r| r.counts.get(i).copied().unwrap_or(0).to_string().len())
                        .chain([column.chars().count(), 6])
                        .max()
                        .unwrap_or(6)
                })
                .collect();
            let _ = write!(out, "{:<label_width$}", section.title);
            for (column, width) in section.columns.iter().zip(&widths) {
                let _ = write!(out, "  {column:>width$}");
            }
            out.push('\n');
            for row in &section.rows[..shown] {
                let _ = write!(out, "{:<label_width$}", format!("  {}", row.label));
                for (i, width) in widths.iter().enumerate() {
                    let count = row.counts.get(i).copied().unwrap_or(0);
                    let _ = write!(out, "  {count:>width$}");
                }
                out.push('\n');
            }
            if shown < section.rows.len() {
                let _ = writeln!(
                    out,
                    "  ... {} more rows (every row is in summary.json and coverage.html)",
                    section.rows.len() - shown
                );
            }
            if let Some(note) = &section.note {
                let _ = writeln!(out, "  ({note})");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(strays: &[(&str, &str, u64)], timers: [u64; 3]) -> Grid {
        let mut timer = Section::new("timer deadlines", &["-1 ms", "on", "+1 ms"]);
        timer.row("dns ttl", timers.to_vec());
        let mut stray = Section::new("strays", &["datagrams"]);
        for (group, label, count) in strays {
            stray.grouped_row(group, *label, *count);
        }
        Grid {
            sections: vec![timer, stray],
            requirements: vec![
                Requirement::cell("dns ttl on time".into(), "timer deadlines", "dns ttl", "on"),
                Requirement::group("stray ntp".into(), "strays", "ntp"),
                Requirement::group("stray dns".into(), "strays", "dns"),
            ],
        }
    }

    #[test]
    fn shards_add_up_cell_by_cell_and_meet_requirements_together() {
        let one = shard(&[("ntp", "ntp: pass", 2), ("dns", "dns", 0)], [1, 0, 0]);
        let two = shard(&[("ntp", "ntp", 0), ("dns", "dns: pass", 3)], [0, 4, 1]);
        assert_eq!(one.missing(), ["dns ttl on time", "stray dns"]);
        assert_eq!(two.missing(), ["stray ntp"]);
        let mut merged = one.clone();
        merged.add(&two);
        assert!(merged.missing().is_empty(), "{merged:?}");
        let timers = merged.section("timer deadlines").expect("kept");
        assert_eq!(timers.rows[0].counts, [1, 4, 1]);
        // The empty placeholders of seen groups are gone, the seen rows stay.
        let strays = merged.section("strays").expect("kept");
        let labels: Vec<&str> = strays.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["ntp: pass", "dns: pass"]);
    }

    #[test]
    fn new_columns_and_sections_are_appended_and_distinct_rows_counted() {
        let mut a = Grid::default();
        let mut profiles = Section::new("profiles", &["cases"]);
        profiles.top = Some(1);
        profiles.row("p1", vec![1]);
        a.sections.push(profiles.clone());
        a.requirements.push(Requirement::distinct_rows(
            "two profiles".into(),
            "profiles",
            2,
        ));
        assert_eq!(a.missing(), ["two profiles"]);
        let mut b = Grid::default();
        let mut other = Section::new("profiles", &["cases", "failed"]);
        other.row("p2", vec![5, 1]);
        b.sections.push(other);
        b.sections.push(Section::new("new", &["x"]));
        a.add(&b);
        assert!(a.missing().is_empty());
        let profiles = a.section("profiles").expect("kept");
        assert_eq!(profiles.columns, ["cases", "failed"]);
        // Sorted by total, the largest first; `top` keeps the terminal short.
        assert_eq!(profiles.rows[0].label, "p2");
        assert_eq!(profiles.rows[1].counts, [1, 0]);
        assert!(a.section("new").is_some());
        let text = a.text();
        assert!(
            text.lines()
                .any(|line| line.split_whitespace().eq(["p2", "5", "1"])),
            "{text}"
        );
        assert!(text.contains("... 1 more rows"), "{text}");
    }

    #[test]
    fn a_requirement_on_a_missing_section_is_missing() {
        let grid = Grid {
            sections: vec![],
            requirements: vec![Requirement::cell("x".into(), "nowhere", "r", "c")],
        };
        assert_eq!(grid.missing(), ["x"]);
    }
}
